"""JSNet training step and inference speed at S3DIS sizes: compiled kernels vs their pure-TF twins.

    .venv/bin/python benchmarks/model.py                        # batch 8 x 4096, < 10 minutes on 2 cores
    .venv/bin/python benchmarks/model.py --quick                # smoke run: batch 2 x 4096, 1 repetition
    .venv/bin/python benchmarks/model.py --json=/tmp/model.json # also write the numbers as JSON
    .venv/bin/python benchmarks/model.py --batch=4 --points=2048 --noxla

(build the kernels first with `.venv/bin/python tf_ops/build.py`; without them only the twins run.)

What is measured, for the S3DIS network (`JSNet()`: 13 classes, 9 input channels, 5-dim
embeddings) on blocks of --points points (N >= 1024 for the default layer table), all on /CPU:0:

  * training step: one tf.function holding GradientTape(forward with training=True, the JSNet
    loss) + gradients + keras.optimizers.Adam(1e-3).apply, at batch --batch. Reported: the
    median seconds per step over --repeats steps (min and max beside it), after the first call
    (tracing, or XLA compilation; its time is the "first call" column) and --warmup more calls.
  * inference: the forward pass with training=False in a tf.function, at batch --batch and at
    batch 1: blocks per second (batch / median seconds per call; each repetition runs calls back
    to back for at least --min_time seconds). The original's batch norm starts its moving mean and
    variance at 0, so a fresh model's inference outputs overflow to inf/NaN; before inference (and
    the check below) the moving statistics are set from one training-mode pass over 2 seeded
    blocks (BN decay 0 for that pass), as a trained model would have them. Non-finite logits are
    counted and reported.
  * peak memory of each measurement: the process's peak resident set size (getrusage ru_maxrss),
    its growth over the RSS once TensorFlow is imported and the model and optimizer are built
    ("RSS over build"), and the peak of TensorFlow's CPU allocator during the timed calls
    (tf.config.experimental.get_memory_info('CPU:0'), reset before the first call; "-" where
    this TensorFlow does not track it).

for each implementation of the point ops:
  * custom:   the compiled kernels (`use_implementation("custom")`), tf.function(jit_compile=False);
  * twin:     the pure-TF twins (`use_implementation("reference")`), tf.function(jit_compile=False);
  * twin+XLA: the twins in tf.function(jit_compile=True) (the whole step: model, loss, gradients,
    Adam); skipped with --noxla. A first call (the XLA compilation) that takes longer than
    --compile_limit seconds is abandoned and reported as such.

Every (implementation, training|inference) measurement runs in its own subprocess of this script,
so that the monotonic ru_maxrss peak belongs to that measurement alone (inference measures
batch 1 before batch --batch, so each batch's RSS peak is read off in increasing order); the
parent collects their JSON. Each process seeds Keras (keras.utils.set_random_seed(--seed)), so
all of them start from the same weights. The machine being shared, the implementations do not
run side by side: compare medians with the min-max spread in mind.

The "x twin" column says how many times faster custom is than the twin (twin seconds / custom
seconds); the target is a training step >= 2x faster with the custom kernels. As the separate
processes run minutes apart on a shared machine, one more process (--paired) builds both
training steps and alternates them (custom, twin; then twin, custom; ...) for --repeats pairs;
the median of the per-pair ratios is the side-by-side speedup (its memory is not reported). Before timing, a
check process builds one model per implementation, copies the weights across
(`set_weights(get_weights())`), and compares at batch --check_batch the forward outputs
(training=False) and the loss gradients w.r.t. all trainable weights (training=False, so no
dropout and fixed batch-norm statistics); "same" says whether they agree (outputs allclose with
rtol = atol = 1e-4, every gradient within 1e-3 of its variable's largest gradient entry, nothing
non-finite).

Inputs are fixed (np.random.default_rng(--seed)): all 9 channels uniform in [0, 1] (xyz in the
unit cube, rgb, normalised xyz), semantic labels uniform int32 in [0, 13), instance ids uniform
int32 in [0, 20). The loss is `jsnet_tf.losses.jsnet_loss(...)["total"]` (with max_instances=20
under XLA).
"""

import datetime
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402  (benchmarks/common.py)
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from common import log  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 8, "blocks per training step and per inference call (S3DIS training uses 8)")
flags.DEFINE_integer("points", 4096, "points per block (S3DIS uses 4096; the default layer table needs >= 1024)")
flags.DEFINE_integer("repeats", 3, "timed training steps / inference repetitions per implementation; the median is reported")
flags.DEFINE_integer("warmup", 1, "untimed calls after the first (tracing / compiling) call")
flags.DEFINE_float(
    "min_time", 2.0, "seconds each timed inference repetition runs at least (calls back to back, mean per call)"
)
flags.DEFINE_bool("quick", False, "smoke run: batch 2 (unless --batch is given), 1 repetition, shorter repetitions")
flags.DEFINE_bool("xla", True, "also time the twins under tf.function(jit_compile=True)")
flags.DEFINE_bool("train", True, "time the training step")
flags.DEFINE_bool("infer", True, "time the forward-only inference")
flags.DEFINE_bool(
    "paired", True, "also time custom and twin training steps alternately in one process (the side-by-side ratio)"
)
flags.DEFINE_bool("check", True, "compare custom and twin outputs and gradients (same weights) before timing")
flags.DEFINE_integer("check_batch", 2, "batch of the custom vs twin comparison")
flags.DEFINE_float(
    "compile_limit", 180.0, "seconds after which a first call under XLA (the compilation) is abandoned and reported"
)
flags.DEFINE_float("child_timeout", 900.0, "seconds after which a measurement subprocess is killed")
flags.DEFINE_integer(
    "threads", os.cpu_count(), "TensorFlow intra-op threads (the CPU kernels shard over them); default os.cpu_count()"
)
flags.DEFINE_integer("seed", 0, "seed of the inputs, the labels and the model's initial weights")
flags.DEFINE_string("json", None, "also write all numbers to this JSON file")
flags.DEFINE_string(
    "child", None, "internal: run one measurement (check, pair, or train|infer:custom|twin|twin+XLA)"
)
flags.DEFINE_string("child_out", None, "internal: where a measurement subprocess writes its JSON")

NUM_CLASSES = 13
NUM_INSTANCES = 20  # instance ids are drawn from [0, NUM_INSTANCES)
TARGET = 2.0  # custom training step at least this many times faster than the twin
IMPLS = {"custom": ("custom", False), "twin": ("reference", False), "twin+XLA": ("reference", True)}
MIB = 1024.0 * 1024.0
CALIBRATION_BATCH = 2  # blocks of the batch-norm calibration pass (inference and check)


# ----------------------------------------------------------------------------- the loss


def load_loss():
    """(loss_fn(logits, embeddings, semantic, instance, xla) -> scalar, description)."""
    from jsnet_tf.losses import jsnet_loss

    def loss(logits, embeddings, semantic, instance, xla):
        kwargs = {"max_instances": NUM_INSTANCES} if xla else {}  # XLA needs a static instance count
        return jsnet_loss(logits, embeddings, semantic, instance, **kwargs)["total"]

    return loss, "jsnet_tf.losses.jsnet_loss (total = semantic cross entropy + discriminative loss)"


# ----------------------------------------------------------------------------- one measurement (subprocess)


def max_rss_mib():
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MIB if platform.system() == "Darwin" else rss / 1024.0


def tf_memory(tf, reset=False):
    """Peak bytes of TensorFlow's CPU allocator (None where not tracked); optionally resets it."""
    try:
        if reset:
            tf.config.experimental.reset_memory_stats("CPU:0")
            return None
        return tf.config.experimental.get_memory_info("CPU:0")["peak"] / MIB
    except Exception:  # noqa: BLE001 - not every TF build tracks CPU memory
        return None


def make_inputs(batch, points, seed):
    rng = np.random.default_rng(seed)
    cloud = rng.random((batch, points, 9), dtype=np.float32)
    semantic = rng.integers(0, NUM_CLASSES, (batch, points)).astype(np.int32)
    instance = rng.integers(0, NUM_INSTANCES, (batch, points)).astype(np.int32)
    return cloud, semantic, instance


def build_model(tf, keras, ops, impl_name, seed, points=None, calibrate=False):
    """A JSNet with the seeded initial weights, built (and, with `calibrate`, with usable BN statistics).

    The original's batch norm starts its moving mean and variance at 0, so a fresh model in
    inference mode divides by sqrt(epsilon) at every batch norm and its outputs overflow to
    inf / NaN. `calibrate` sets every moving statistic to the statistics of one training-mode
    forward pass over CALIBRATION_BATCH seeded blocks (BN decay 0 for that call, then back to 0.9),
    as a trained model would have them.
    """
    from jsnet_tf.model import JSNet

    keras.utils.set_random_seed(seed)  # the same initial weights in every process
    model = JSNet()
    with ops.use_implementation(impl_name):
        model(tf.zeros([1, 1024, 9]), training=False)  # builds the weights
        if calibrate:
            cloud = tf.constant(make_inputs(CALIBRATION_BATCH, points, seed + 2)[0])
            model.set_bn_decay(0.0)
            model(cloud, training=True)
            model.set_bn_decay(0.9)
    return model


def non_finite(arrays):
    return int(sum(np.count_nonzero(~np.isfinite(np.asarray(a))) for a in arrays))


class Watchdog:
    """Ends the process (with a JSON report) when a first call runs past `limit` seconds."""

    def __init__(self, limit, out_path, result, what):
        self.timer = None
        if limit and limit > 0:

            def fire():
                result["error"] = f"{what}: first call (XLA compilation) still running after {limit:g} s, abandoned"
                result["timed_out"] = True
                write_json(out_path, result)
                os._exit(3)

            self.timer = threading.Timer(limit, fire)
            self.timer.daemon = True
            self.timer.start()

    def cancel(self):
        if self.timer is not None:
            self.timer.cancel()


def write_json(path, data):
    pathlib.Path(path).write_text(json.dumps(data, indent=2) + "\n")



def time_calls(call, repeats, min_time):
    """Median, min and max seconds per call over `repeats` repetitions of >= min_time seconds each."""
    samples = []
    for _ in range(repeats):
        count, start = 0, time.perf_counter()
        while True:
            call()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        samples.append(elapsed / count)
    return statistics.median(samples), min(samples), max(samples), samples


def make_train_step(tf, keras, ops, impl, loss_fn, inputs):
    """call() -> loss: one training step of a fresh seeded JSNet + Adam, traced under `impl`."""
    impl_name, xla = IMPLS[impl]
    cloud, semantic, instance = inputs
    model = build_model(tf, keras, ops, impl_name, FLAGS.seed)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    variables = model.trainable_variables

    def step(points_, semantic_, instance_):
        with tf.GradientTape() as tape:
            out = model(points_, training=True)
            loss = loss_fn(out["semantic_logits"], out["embeddings"], semantic_, instance_, xla)
        grads = tape.gradient(loss, variables)
        optimizer.apply(grads, variables)
        return loss

    step = tf.function(step, jit_compile=xla)

    def call():
        # The implementation is picked when the function is traced: always call inside the block.
        with ops.use_implementation(impl_name):
            return float(step(cloud, semantic, instance))

    return call, model


def child_train(tf, keras, ops, impl, result, batch, points):
    xla = IMPLS[impl][1]
    loss_fn, result["loss"] = load_loss()
    inputs = tuple(tf.constant(x) for x in make_inputs(batch, points, FLAGS.seed))
    call, _ = make_train_step(tf, keras, ops, impl, loss_fn, inputs)
    result["rss_build_mib"] = max_rss_mib()
    tf_memory(tf, reset=True)

    watchdog = Watchdog(FLAGS.compile_limit if xla else 0, FLAGS.child_out, result, f"train {impl}")
    start = time.perf_counter()
    loss = call()
    result["first_call_s"] = time.perf_counter() - start
    watchdog.cancel()
    result["first_loss"] = loss
    log(f"  train {impl}: first call {result['first_call_s']:.1f} s, loss {loss:.4g}")
    for _ in range(FLAGS.warmup):
        start = time.perf_counter()
        call()
        log(f"  train {impl}: warm-up step {time.perf_counter() - start:.2f} s")
    median, low, high, samples = time_calls(call, FLAGS.repeats, 0.0)
    log(f"  train {impl}: steps {', '.join(f'{s:.2f}' for s in samples)} s")
    result.update(
        step_s=median, step_min_s=low, step_max_s=high, step_samples_s=samples,
        rss_peak_mib=max_rss_mib(), tf_peak_mib=tf_memory(tf),
    )
    result["rss_over_build_mib"] = result["rss_peak_mib"] - result["rss_build_mib"]


def child_pair(tf, keras, ops, result, batch, points):
    """custom and twin training steps in one process, alternating: the ratio of side-by-side steps."""
    loss_fn, result["loss"] = load_loss()
    inputs = tuple(tf.constant(x) for x in make_inputs(batch, points, FLAGS.seed))
    calls = {impl: make_train_step(tf, keras, ops, impl, loss_fn, inputs)[0] for impl in ("custom", "twin")}
    for call in calls.values():
        call()
        for _ in range(FLAGS.warmup):
            call()
    samples = {impl: [] for impl in calls}
    for rep in range(FLAGS.repeats):
        for impl in (("custom", "twin") if rep % 2 == 0 else ("twin", "custom")):
            start = time.perf_counter()
            calls[impl]()
            samples[impl].append(time.perf_counter() - start)
    ratios = [t / c for t, c in zip(samples["twin"], samples["custom"])]
    result.update(
        samples_s=samples, step_s={impl: statistics.median(v) for impl, v in samples.items()},
        ratios=ratios, ratio=statistics.median(ratios),
    )
    log(
        "  paired: custom " + ", ".join(f"{v:.2f}" for v in samples["custom"]) + " s; twin "
        + ", ".join(f"{v:.2f}" for v in samples["twin"]) + " s; twin/custom " + ", ".join(f"{r:.2f}" for r in ratios)
    )


def child_infer(tf, keras, ops, impl, result, batch, points):
    impl_name, xla = IMPLS[impl]
    model = build_model(tf, keras, ops, impl_name, FLAGS.seed, points, calibrate=True)
    forward = tf.function(lambda p: model(p, training=False), jit_compile=xla)
    result["rss_build_mib"] = max_rss_mib()
    result["batches"] = {}
    # Increasing batch: the monotonic ru_maxrss after each batch is that batch's peak.
    for size in sorted({1, batch}):
        cloud = tf.constant(make_inputs(size, points, FLAGS.seed)[0])

        def call(cloud=cloud):
            with ops.use_implementation(impl_name):
                return forward(cloud)["semantic_logits"].numpy()

        tf_memory(tf, reset=True)
        entry = result["batches"][str(size)] = {}
        watchdog = Watchdog(FLAGS.compile_limit if xla else 0, FLAGS.child_out, result, f"infer {impl} batch {size}")
        start = time.perf_counter()
        logits = call()
        entry["first_call_s"] = time.perf_counter() - start
        watchdog.cancel()
        entry["non_finite_logits"] = non_finite([logits])
        for _ in range(FLAGS.warmup):
            call()
        median, low, high, samples = time_calls(call, FLAGS.repeats, FLAGS.min_time)
        entry.update(
            call_s=median, call_min_s=low, call_max_s=high, blocks_per_s=size / median,
            rss_peak_mib=max_rss_mib(), tf_peak_mib=tf_memory(tf),
        )
        entry["rss_over_build_mib"] = entry["rss_peak_mib"] - result["rss_build_mib"]
        log(
            f"  infer {impl} batch {size}: first call {entry['first_call_s']:.1f} s, "
            f"{median * 1e3:.1f} ms/call, {size / median:.2f} blocks/s"
        )


def child_check(tf, keras, ops, result, batch, points):
    """Same weights in both implementations: forward outputs and loss gradients agree?"""
    loss_fn, result["loss"] = load_loss()
    cloud, semantic, instance = (tf.constant(x) for x in make_inputs(batch, points, FLAGS.seed + 1))
    models = {
        "custom": build_model(tf, keras, ops, "custom", FLAGS.seed, points, calibrate=True),
        "twin": build_model(tf, keras, ops, "reference", FLAGS.seed),
    }
    models["twin"].set_weights(models["custom"].get_weights())  # weights and batch-norm statistics
    outputs, grads, losses = {}, {}, {}
    for impl, model in models.items():
        with ops.use_implementation(IMPLS[impl][0]):
            with tf.GradientTape() as tape:
                out = model(cloud, training=False)
                loss = loss_fn(out["semantic_logits"], out["embeddings"], semantic, instance, False)
            grads[impl] = [
                np.zeros(v.shape, np.float32) if g is None else np.asarray(tf.convert_to_tensor(g))
                for g, v in zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
            ]
        outputs[impl] = {k: np.asarray(v) for k, v in out.items()}
        losses[impl] = float(loss)
    diffs = {k: float(np.max(np.abs(outputs["custom"][k] - outputs["twin"][k]))) for k in outputs["custom"]}
    bad = {impl: non_finite(list(outputs[impl].values()) + grads[impl]) for impl in outputs}
    close = not any(bad.values()) and all(
        np.allclose(outputs["custom"][k], outputs["twin"][k], rtol=1e-4, atol=1e-4) for k in diffs
    )
    # Per variable: max |difference| relative to the largest gradient entry of that variable.
    rel = [
        float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))
        for a, b in zip(grads["custom"], grads["twin"])
    ]
    result.update(
        check_batch=batch, non_finite=bad, max_abs_diff=diffs, loss_custom=losses["custom"], loss_twin=losses["twin"],
        grad_max_rel_diff=max(rel), grad_vars=len(rel), outputs_close=bool(close),
        grads_close=bool(max(rel) < 1e-3), same=bool(close and max(rel) < 1e-3 and not any(bad.values())),
    )
    log(f"  check: outputs max |diff| {diffs}, losses {losses}, gradients max rel diff {max(rel):.3g}")


def run_child():
    kind, _, impl = FLAGS.child.partition(":")
    result = {"child": FLAGS.child, "kind": kind, "impl": impl or None}
    try:
        import keras
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        result["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        result["inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
        from jsnet_tf import ops

        with tf.device("/CPU:0"):  # the CPU kernels, also where a GPU is visible
            if kind == "train":
                child_train(tf, keras, ops, impl, result, FLAGS.batch, FLAGS.points)
            elif kind == "infer":
                child_infer(tf, keras, ops, impl, result, FLAGS.batch, FLAGS.points)
            elif kind == "pair":
                child_pair(tf, keras, ops, result, FLAGS.batch, FLAGS.points)
            elif kind == "check":
                child_check(tf, keras, ops, result, FLAGS.check_batch, FLAGS.points)
            else:
                raise ValueError(f"--child: unknown measurement {FLAGS.child!r}")
    except Exception as error:  # noqa: BLE001 - report to the parent, with the whole traceback
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        result["error"] = f"{type(error).__name__}: {(lines[-1] if lines else '')[:400]}"
        result["traceback"] = traceback.format_exc()
    write_json(FLAGS.child_out, result)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip TF's slow teardown


# ----------------------------------------------------------------------------- the parent


def spawn(child, args, workdir):
    """Runs one measurement subprocess, streams its stderr, returns its JSON (or an error)."""
    out = pathlib.Path(workdir) / (child.replace(":", "_").replace("+", "_") + ".json")
    cmd = [sys.executable, os.fspath(pathlib.Path(__file__).resolve()), f"--child={child}", f"--child_out={out}", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    killer = threading.Timer(FLAGS.child_timeout, proc.kill)  # only this child, by its handle
    killer.daemon = True
    killer.start()
    tail = []
    for line in proc.stderr:
        line = line.rstrip("\n")
        # TensorFlow's start-up banners (oneDNN, cpu_feature_guard) pass TF_CPP_MIN_LOG_LEVEL: skip them.
        if line.startswith(("WARNING: All log messages before absl", "I0000 ", "To enable the following")):
            continue
        tail = (tail + [line])[-40:]
        log(line)
    code = proc.wait()
    killer.cancel()
    wall = time.perf_counter() - start
    if out.exists():
        result = json.loads(out.read_text())
    else:
        result = {"child": child, "error": f"subprocess exited with {code} without a report"
                  + (f" (killed after --child_timeout={FLAGS.child_timeout:g} s)" if code == -9 else ""),
                  "traceback": "\n".join(tail)}
    result["wall_s"] = wall
    return result


def child_args(batch, repeats, warmup, min_time):
    return [
        f"--batch={batch}", f"--points={FLAGS.points}", f"--repeats={repeats}", f"--warmup={warmup}",
        f"--min_time={min_time}", f"--check_batch={FLAGS.check_batch}", f"--compile_limit={FLAGS.compile_limit}",
        f"--threads={FLAGS.threads}", f"--seed={FLAGS.seed}",
    ]


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_mib(value):
    return "-" if value is None else f"{value:.0f}"


def fmt_x(value):
    return "-" if value is None else f"{value:.2f}x"


def print_table(headers, body, out, left=(0,)):
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out.write(line(headers) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for b in body:
        out.write(line(b) + "\n")


def ok(result):
    return result is not None and "error" not in result


def main(argv):
    del argv
    if FLAGS.child:
        run_child()
        return
    started = time.perf_counter()
    batch = 2 if FLAGS.quick and not FLAGS["batch"].present else FLAGS.batch
    repeats = 1 if FLAGS.quick and not FLAGS["repeats"].present else FLAGS.repeats
    min_time = 0.5 if FLAGS.quick and not FLAGS["min_time"].present else FLAGS.min_time
    warmup = FLAGS.warmup
    if FLAGS.points < 1024:
        raise app.UsageError("--points: the default JSNet layer table samples 1024 centres, so N must be >= 1024")
    if batch < 1 or repeats < 1:
        raise app.UsageError("--batch and --repeats must be positive")

    import tensorflow as tf  # the parent only reads versions and the library's state

    from jsnet_tf.ops import library

    problem = library.problem()
    have_custom = problem is None and library.available()
    if not have_custom:
        log(f"WARNING: no custom kernels, timing the twins only: {problem or 'the library does not load'}")
    impls = (["custom"] if have_custom else []) + ["twin"] + (["twin+XLA"] if FLAGS.xla else [])
    args = child_args(batch, repeats, warmup, min_time)

    results = {"check": None, "train": {}, "pair": None, "infer": {}}
    with tempfile.TemporaryDirectory(prefix="jsnet_model_bench_") as workdir:
        if FLAGS.check and have_custom:
            log(f"check: custom vs twin, same weights, batch {FLAGS.check_batch}  ({time.perf_counter() - started:.0f} s)")
            results["check"] = spawn("check", args, workdir)
        for kind, wanted in (("train", FLAGS.train), ("infer", FLAGS.infer)):
            if not wanted:
                continue
            for impl in impls:
                log(f"{kind} {impl}  ({time.perf_counter() - started:.0f} s)")
                results[kind][impl] = spawn(f"{kind}:{impl}", args, workdir)
            if kind == "train" and FLAGS.paired and have_custom:
                log(f"train custom and twin alternately in one process  ({time.perf_counter() - started:.0f} s)")
                results["pair"] = spawn("pair", args, workdir)

    everything = [results["check"], *results["train"].values(), results["pair"], *results["infer"].values()]
    loss_names = sorted({r["loss"] for r in everything if r and r.get("loss")})
    threads = next((r["intra_op_threads"] for r in everything if r and "intra_op_threads" in r), FLAGS.threads)
    inter = next((r["inter_op_threads"] for r in everything if r and "inter_op_threads" in r), None)
    date = datetime.datetime.now(datetime.UTC)

    out = sys.stdout
    out.write(
        f"JSNet (S3DIS: 13 classes, 9 channels, 5-dim embeddings), batch {batch} x {FLAGS.points} points; "
        f"TensorFlow {tf.__version__}, {platform.machine()}, os.cpu_count()={os.cpu_count()}, intra-op threads "
        f"{threads}, inter-op threads {inter if inter else 'default'}, all on /CPU:0; "
        f"{date.strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"loss: {'; '.join(loss_names) if loss_names else '(not reached)'}\n"
        f"custom: {'compiled kernels' if have_custom else 'NOT AVAILABLE (' + str(problem) + ')'}; "
        f"twin: pure-TF reference ops; twin+XLA: the twins in tf.function(jit_compile=True)\n"
        f"training: median of {repeats} step(s) after the first call and {warmup} warm-up call(s); "
        f"inference: median of {repeats} repetition(s) of >= {min_time:g} s; one subprocess per row\n"
        f"x twin / x XLA: how many times faster custom is; memory in MiB (RSS peak of the process, its growth "
        f"over the built model, TF CPU allocator peak)\n"
    )
    check = results["check"]
    if check is not None:
        if ok(check):
            out.write(
                f"same weights, batch {check['check_batch']}: custom vs twin outputs max |diff| "
                + ", ".join(f"{k} {v:.2g}" for k, v in check["max_abs_diff"].items())
                + f"; loss {check['loss_custom']:.6g} vs {check['loss_twin']:.6g}; gradients max rel diff "
                f"{check['grad_max_rel_diff']:.2g} over {check['grad_vars']} variables"
                + (f"; NON-FINITE values {check['non_finite']}" if any(check["non_finite"].values()) else "")
                + " -> "
                f"{'same' if check['same'] else 'DIFFERENT'}\n"
            )
        else:
            out.write(f"custom vs twin check FAILED: {check['error']}\n")

    train = results["train"]

    def step_of(impl):
        r = train.get(impl)
        return r["step_s"] if ok(r) else None

    speedup = {
        other: (step_of(other) / step_of("custom") if step_of(other) and step_of("custom") else None)
        for other in ("twin", "twin+XLA")
    }
    if train:
        out.write(f"\ntraining step (forward training=True + loss + gradients + Adam), batch {batch}:\n")
        body = []
        for impl, r in train.items():
            if not ok(r):
                body.append([impl, "error"] + ["-"] * 10)
                continue
            x_twin = step_of("twin") / r["step_s"] if step_of("twin") else None
            x_xla = step_of("twin+XLA") / r["step_s"] if step_of("twin+XLA") else None
            target = ""
            if impl == "custom" and x_twin is not None:
                target = f">={TARGET:g}x {'ok' if x_twin >= TARGET else 'MISS'}"
            body.append([
                impl, fmt(r["first_call_s"], 1), fmt(r["step_s"]), f"{r['step_min_s']:.2f}-{r['step_max_s']:.2f}",
                fmt(batch / r["step_s"]), fmt_x(x_twin) if impl == "custom" else "-",
                fmt_x(x_xla) if impl == "custom" else "-", target,
                fmt_mib(r["rss_peak_mib"]), fmt_mib(r["rss_over_build_mib"]), fmt_mib(r.get("tf_peak_mib")),
            ])
        print_table(
            ["impl", "first call s", "step s", "min-max s", "blocks/s", "x twin", "x XLA", "target",
             "RSS peak", "RSS over build", "TF alloc peak"],
            body, out, left=(0, 7),
        )
    pair = results["pair"]
    if ok(pair):
        met = "ok" if pair["ratio"] >= TARGET else "MISS"
        out.write(
            f"alternating in one process: custom {', '.join(f'{v:.2f}' for v in pair['samples_s']['custom'])} s, "
            f"twin {', '.join(f'{v:.2f}' for v in pair['samples_s']['twin'])} s; twin/custom per pair "
            f"{', '.join(f'{r:.2f}' for r in pair['ratios'])}: median {pair['ratio']:.2f}x (>={TARGET:g}x {met})\n"
        )

    infer = results["infer"]
    if infer:
        out.write("\nforward only (training=False):\n")
        body = []
        sizes = sorted({1, batch}, reverse=True)

        def per_call(impl, size):
            r = infer.get(impl)
            if not ok(r):
                return None
            return r["batches"].get(str(size), {}).get("call_s")

        for size in sizes:
            for impl, r in infer.items():
                entry = r["batches"].get(str(size)) if ok(r) else None
                if entry is None:
                    body.append([impl, str(size), "error" if not ok(r) else "-"] + ["-"] * 8)
                    continue
                twin, xla = per_call("twin", size), per_call("twin+XLA", size)
                body.append([
                    impl, str(size), fmt(entry["first_call_s"], 1), fmt(entry["call_s"] * 1e3, 1),
                    f"{entry['call_min_s'] * 1e3:.1f}-{entry['call_max_s'] * 1e3:.1f}", fmt(entry["blocks_per_s"]),
                    fmt_x(twin / entry["call_s"]) if impl == "custom" and twin else "-",
                    fmt_x(xla / entry["call_s"]) if impl == "custom" and xla else "-",
                    fmt_mib(entry["rss_peak_mib"]), fmt_mib(entry["rss_over_build_mib"]),
                    fmt_mib(entry.get("tf_peak_mib")),
                ])
        print_table(
            ["impl", "batch", "first call s", "ms/call", "min-max ms", "blocks/s", "x twin", "x XLA",
             "RSS peak", "RSS over build", "TF alloc peak"],
            body, out,
        )

    out.write("\n")
    for impl, r in infer.items():
        for size, entry in (r.get("batches") or {}).items():
            if entry.get("non_finite_logits"):
                out.write(f"infer {impl} batch {size}: {entry['non_finite_logits']} NON-FINITE logits\n")
    if speedup["twin"] is not None:
        verdict = "met" if speedup["twin"] >= TARGET else "MISSED"
        out.write(
            f"training step, custom vs twin: {speedup['twin']:.2f}x faster in separate processes (target >= "
            f"{TARGET:g}x: {verdict})"
            + (f", {pair['ratio']:.2f}x alternating in one process ({'met' if pair['ratio'] >= TARGET else 'MISSED'})"
               if ok(pair) else "")
            + (f"; custom vs twin+XLA {speedup['twin+XLA']:.2f}x" if speedup["twin+XLA"] is not None else "")
            + "\n"
        )
    failures = [r for r in everything if r is not None and not ok(r)]
    for r in failures:
        out.write(f"\n{r['child']} FAILED: {r['error']}\n")
        if r.get("traceback"):
            out.write("".join(f"    {line}\n" for line in r["traceback"].rstrip().splitlines()))
    out.write(f"total benchmark time {time.perf_counter() - started:.0f} s\n")
    out.flush()

    if FLAGS.json:
        report = {
            **common.machine(tf, date),
            "intra_op_threads": threads,
            "inter_op_threads": inter,
            "batch": batch,
            "points": FLAGS.points,
            "repeats": repeats,
            "warmup": warmup,
            "min_time_s": min_time,
            "quick": FLAGS.quick,
            "loss": loss_names,
            "custom_available": have_custom,
            "custom_problem": problem,
            "library_build": library.read_build_info() if have_custom else None,
            "target_speedup": TARGET,
            "train_speedup_vs_twin": speedup["twin"],
            "train_speedup_vs_twin_xla": speedup["twin+XLA"],
            "check": check,
            "train": train,
            "pair": pair,
            "train_speedup_vs_twin_alternating": pair["ratio"] if ok(pair) else None,
            "infer": infer,
        }
        common.write_report(FLAGS.json, report)


if __name__ == "__main__":
    app.run(main)
