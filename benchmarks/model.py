"""JSNet training step and inference speed at S3DIS sizes: compiled kernels vs their pure-TF twins,
the FLOP rate against the CPU's fp32 peak, where the time goes, and bfloat16 inference.

    .venv/bin/python benchmarks/model.py                        # batch 8 x 4096, ~14 minutes on 2 cores
    .venv/bin/python benchmarks/model.py --quick                # smoke run: batch 2 x 4096, 1 repetition
    .venv/bin/python benchmarks/model.py --json=/tmp/model.json # also write the numbers as JSON
    .venv/bin/python benchmarks/model.py --batch=4 --points=2048 --noxla
    .venv/bin/python benchmarks/model.py --bf16 --run_dir=outputs/demo/train/area5   # + bfloat16 vs float32
    .venv/bin/python benchmarks/model.py --bf16 --notrain --noinfer --noprofile --nocheck   # bfloat16 only
    .venv/bin/python benchmarks/model.py --notrain --noinfer --nocheck --nopaired --noxla --noprofile  # fast vs plain only
    .venv/bin/python benchmarks/model.py --memory --noarith --notrain --noinfer --noprofile --nocheck --nopaired --noxla

(build the kernels first with `.venv/bin/python tf_ops/build.py`; without them only the twins run.)

The layers' two arithmetics (jsnet_tf.layers.arithmetic; --arithmetic picks the one of every
measurement below but these two):

  * fast vs plain (--arith, default on): one process builds one seeded, BN-calibrated model and,
    around it, a training step and an inference function per arithmetic (traced under it), and
    alternates them (fast, plain; then plain, fast; ...) for --repeats pairs: the median and range
    of the per-pair ratios plain / fast, each arithmetic's GFLOP and GFLOP/s, and the largest
    |fast - plain| of the inference outputs;
  * peak memory of training (--memory, default off: it needs several GiB): one process per
    arithmetic, one after the other, runs two training steps at --memory_batch (24, the paper's)
    and reports its RSS peak, the RSS growth over the built model and TF's CPU allocator peak.

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

Achieved FLOP rate: every training and inference process also counts the FLOPs of its traced
function (`get_concrete_function(...).graph`) with TensorFlow's profiler
(tf.compat.v1.profiler.profile(graph, options=ProfileOptionBuilder.float_operation())): the ops
with a registered flop statistic and known shapes (MatMul 2*M*K*N, elementwise ops one per
element, ...); the compiled point ops, the fused batch norms and the discriminative loss's ops of
data-dependent shape count 0, and the twins count their own pure-TF neighbour searches. Printed:
GFLOP per call, seconds (the median above), GFLOP/s and the fraction of the fp32 peak of the cores
used: physical cores in os.sched_getaffinity (at most --threads) x fp32 lanes from the
/proc/cpuinfo flags (avx512f 16, avx/avx2 8) x 2 flops per FMA x --fma_units (2, assumed) x the
clock (lscpu "CPU max MHz", else the largest /proc/cpuinfo "cpu MHz"; turbo and AVX-512 clock
offsets unknown); --peak_gflops overrides it.

Where the time goes (--profile, one more process, the custom ops or the twins without them): the
training step and the inference at --batch are traced (after the first call and --warmup calls)
with tf.profiler.experimental.start/stop for --profile_calls calls each; the executor's op events
in the .xplane.pb (one per op run: "name:type") are summed per call and grouped by the top-level
JSNet layer whose name scope holds the op (gradient_tape/ ops are the backward share; "jsnet,
outside the layers": the input split, 3-NN weights and decoder kNN of JSNet.call; the optimizer;
the loss) and by op class (dense MatMul / BatchMatMul / Conv, the compiled point ops, batch norm,
data movement, reductions, elementwise, variables), beside the profiler's FLOPs of the same ops.
Ops of the two inter-op threads overlap, so the op time can exceed the wall time; an op fused by
grappler or oneDNN counts under the name (layer) and type of the fused op. The table ends with
the dense ops' share of the op time and their rate: the rest of the time runs ops that do almost
no counted FLOPs.

bfloat16 inference (--bf16): one process per variant times the forward pass (training=False) of the
seeded, BN-calibrated model at --batch x --points (median and range of --repeats repetitions of >=
--min_time s; the processes stay alive after their warm-up and take turns, one repetition each in
rotating order, so that the load of the shared machine hits all alike): fp32; "grappler":
tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True}) before
tracing (oneDNN bf16 MatMuls, casts around them; the point ops stay float32); "grappler-noAMX": the
same with ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16; "keras":
keras.mixed_precision.set_global_policy("mixed_bfloat16") before the model is built (reported with
the repository line where it fails when it does). Agreement with fp32: the share of points whose
argmax of the semantic logits is the same, the largest |difference| of the logits and of the
embeddings (beside the largest |embedding|). With --run_dir (a trained run folder;
checkpoints.load_run(run_dir, "latest")) the same agreement, and each variant's accuracy against the
labels, on the prepared test blocks of --area (default: the run's test area) in --data_dir (default:
the run's data.data_dir), at most --bf16_blocks of them. --onednn_verbose (default on) runs one fp32
and one grappler call more with ONEDNN_VERBOSE=1 and lists the oneDNN primitives of that call (kind,
implementation (ISA), source data type, executions, ms) and, from a TF profiler trace of the same
call, its op time per op class (where bf16 gains and loses).
"""

import contextlib
import datetime
import json
import os
import pathlib
import platform
import re
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


def define_flags():
    """The command line (defined when this file runs as a script, so that tests can import its helpers)."""
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
    flags.DEFINE_enum(
        "arithmetic", "fast", list(ARITHMETICS),
        "the layers' arithmetic (jsnet_tf.layers.arithmetic) of the train, infer, pair, check and profile measurements",
    )
    flags.DEFINE_bool(
        "arith", True, "also time the fast and the plain arithmetic alternately in one process (training step and inference)"
    )
    flags.DEFINE_bool(
        "memory", False, "also measure the peak memory of training steps at --memory_batch, fast and plain (lots of RAM)"
    )
    flags.DEFINE_integer("memory_batch", 24, "batch of the --memory measurement (the paper trains at 24)")
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
        "child", None, "internal: run one measurement (check, pair, train|infer|profile:custom|twin|twin+XLA, bf16|onednn:<variant>)"
    )
    flags.DEFINE_string("child_out", None, "internal: where a measurement subprocess writes its JSON")
    flags.DEFINE_bool("profile", True, "per-layer and per-op-class profile of the training step and inference (TF profiler trace)")
    flags.DEFINE_integer("profile_calls", 2, "traced calls of each function in the profile (their mean is reported)")
    flags.DEFINE_float("peak_gflops", None, "fp32 peak GFLOP/s of the cores used (default: computed from /proc/cpuinfo)")
    flags.DEFINE_integer("fma_units", 2, "FMA units per core assumed for the computed fp32 peak")
    flags.DEFINE_bool("bf16", False, "also measure bfloat16 inference against float32 (speed and agreement)")
    flags.DEFINE_bool("onednn_verbose", True, "with --bf16: list the oneDNN primitives of one float32 and one bfloat16 call")
    flags.DEFINE_string("run_dir", None, "with --bf16: a trained run folder whose model is compared on real blocks")
    flags.DEFINE_string("data_dir", None, "with --run_dir: the prepared S3DIS folder (default: the run's data.data_dir)")
    flags.DEFINE_integer("area", None, "with --run_dir: the area whose test blocks are used (default: the run's test area)")
    flags.DEFINE_integer("bf16_blocks", 0, "with --run_dir: at most this many blocks of the area (0: all)")
    flags.DEFINE_enum("point_ops", "custom", ["custom", "twin"], "internal: the point ops of the bf16 measurements")


NUM_CLASSES = 13
NUM_INSTANCES = 20  # instance ids are drawn from [0, NUM_INSTANCES)
TARGET = 2.0  # custom training step at least this many times faster than the twin
IMPLS = {"custom": ("custom", False), "twin": ("reference", False), "twin+XLA": ("reference", True)}
MIB = 1024.0 * 1024.0
ARITHMETICS = ("fast", "plain")  # jsnet_tf.layers.arithmetic: the rewritten layers, the original composition
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


# ----------------------------------------------------------------------------- FLOPs, the fp32 peak, the op profile


def graph_flops(tf, graph):
    """{node name: FLOPs} of a graph as TensorFlow's profiler counts them (ProfileOptionBuilder.float_operation:
    the nodes with a registered "flops" statistic and known shapes; 0 for the rest, the compiled point ops
    included). The sum is the profiler's total."""
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph, cmd="scope", options=options)
    flops, stack = {}, list(profile.children)
    while stack:
        node = stack.pop()
        if node.float_ops:
            flops[node.name] = flops.get(node.name, 0) + node.float_ops
        stack.extend(node.children)
    return flops


def fp32_peak(cpuinfo, cores, max_mhz=None, fma_units=2):
    """(GFLOP/s, how it was computed) of `cores` cores of the CPU that the /proc/cpuinfo text describes:
    cores x fp32 lanes (avx512f 16, avx/avx2 8, else 4) x 2 flops per lane and cycle with FMA (1 without)
    x `fma_units` x the clock (`max_mhz`, else the largest "cpu MHz"). (None, why) without a clock."""
    info = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip(), []).append(value.strip())
    have = set(info.get("flags", [""])[0].split())
    lanes, isa = (16, "avx512f") if "avx512f" in have else (8, "avx2" if "avx2" in have else "avx") if "avx" in have else (4, "sse")
    per_lane = 2 if "fma" in have else 1
    if max_mhz:
        mhz, source = float(max_mhz), "lscpu CPU max MHz"
    elif info.get("cpu MHz"):
        mhz, source = max(float(v) for v in info["cpu MHz"]), "/proc/cpuinfo cpu MHz"
    else:
        return None, "no clock in /proc/cpuinfo or lscpu: give --peak_gflops"
    gflops = cores * lanes * per_lane * fma_units * mhz / 1e3
    how = (
        f"{cores} core(s) x {lanes} fp32 lanes ({isa}) x {per_lane} flops/lane/cycle ({'FMA' if per_lane == 2 else 'no FMA'}) "
        f"x {fma_units} FMA units (assumed) x {mhz:.0f} MHz ({source})"
    )
    return gflops, how


def machine_peak(threads, fma_units):
    """fp32_peak of this machine: the physical cores this process may run on (os.sched_getaffinity over
    the hyper-threads per core of /proc/cpuinfo), at most `threads` (TensorFlow's intra-op threads)."""
    try:
        cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "no /proc/cpuinfo: give --peak_gflops"
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    first = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    per_core = max(1, int(first.get("siblings") or 1) // max(1, int(first.get("cpu cores") or 1)))
    cores = max(1, min(logical // per_core, threads or logical))
    max_mhz = None
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        max_mhz = next((line.split(":")[1].strip() for line in lscpu.splitlines() if line.startswith("CPU max MHz")), None)
    except (OSError, subprocess.SubprocessError):
        pass
    gflops, how = fp32_peak(cpuinfo, cores, max_mhz, fma_units)
    return gflops, f"{how}; {logical} logical CPU(s) in the affinity mask, {per_core} thread(s) per core"


def trace_op_times(tf, call, calls, logdir):
    """Runs call() `calls` times under TensorFlow's profiler; returns ({(op name, op type): picoseconds summed
    over the calls}, wall seconds per call). The op events are the executor's, one per op run, on the
    inter-op threads (ops running side by side overlap, so the sum can exceed the wall time)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(os.fspath(logdir))
    try:
        start = time.perf_counter()
        for _ in range(calls):
            call()
        wall = (time.perf_counter() - start) / calls
    finally:
        tf.profiler.experimental.stop()
    times = {}
    for path in pathlib.Path(logdir).rglob("*.xplane.pb"):
        for plane in xplane_pb2.XSpace.FromString(path.read_bytes()).planes:
            for line in plane.lines:
                for event in line.events:
                    meta = plane.event_metadata[event.metadata_id]
                    name, sep, kind = meta.name.rpartition(":")
                    if sep and kind and kind == meta.display_name:  # an op event: "name:type", shown as its type
                        times[(name, kind)] = times.get((name, kind), 0) + event.duration_ps
    return times, wall


MOVEMENT_OPS = {
    "GatherV2", "GatherNd", "ResourceGather", "ConcatV2", "Pack", "Unpack", "Slice", "StridedSlice", "StridedSliceGrad",
    "Reshape", "Transpose", "_MklTranspose", "Tile", "Identity", "IdentityN", "ExpandDims", "Squeeze", "Pad", "BroadcastTo",
    "ScatterNd", "TensorScatterAdd", "UnsortedSegmentSum", "DynamicStitch", "Fill", "ZerosLike", "OnesLike", "Split",
    "SplitV", "Cast", "Const",
}
REDUCTION_OPS = {"Sum", "Max", "Min", "Mean", "Prod", "ArgMax", "ArgMin", "All", "Any", "TopKV2", "UnsortedSegmentMax",
                 "UnsortedSegmentMin"}
OP_CLASSES = (  # (class, test of an op type), first match wins
    ("dense: MatMul, BatchMatMul, Conv", lambda t: "MatMul" in t or "Conv" in t or t.startswith("Einsum")),
    ("point ops (compiled kernels)", lambda t: t.startswith("Jsnet")),
    ("batch norm (fused kernels)", lambda t: "BatchNorm" in t),
    ("data movement: gather, concat, slice, tile, cast", lambda t: t in MOVEMENT_OPS),
    ("reductions, top-k", lambda t: t in REDUCTION_OPS),
    ("variables, optimizer kernels", lambda t: "Variable" in t or t.startswith("ResourceApply")),
    ("elementwise and other", lambda t: True),
)


def op_class(op_type):
    return next(name for name, test in OP_CLASSES if test(op_type))


def op_group(op_name, layers):
    """(group, backward) of an op of a JSNet graph: the top-level layer whose name scope holds it
    (`layers`: {layer name: label}), "jsnet, outside the layers" for the model's own ops (input split,
    interpolation weights, decoder kNN), "optimizer (Adam)", else "loss, unscoped ops" (the loss, gradient sums);
    backward for gradient_tape/ ops."""
    backward = op_name.startswith("gradient_tape/")
    found = re.search(r"(?:^|/|_)jsnet(?:_\d+)?/([^/]+)/", op_name)
    if found:
        return layers.get(re.sub(r"_\d+$", "", found.group(1)), "jsnet, outside the layers"), backward
    if re.search(r"(?:^|/|_)jsnet(?:_\d+)?/", op_name):
        return "jsnet, outside the layers", backward
    if re.search(r"(?:^|/)adam(?:_\d+)?/", op_name, re.IGNORECASE):
        return "optimizer (Adam)", backward
    return "loss, unscoped ops", backward


def summarise_profile(times, calls, flops, graph_types, layers):
    """Per group and per op class: ms per call (summed over the ops), backward ms, FLOPs per call, and the
    op types that take the most time."""
    groups, classes = {}, {}

    def entry(table, key):
        return table.setdefault(key, {"ms": 0.0, "backward_ms": 0.0, "flops": 0, "types": {}})

    for (name, kind), ps in times.items():
        ms = ps / 1e9 / calls
        group, backward = op_group(name, layers)
        for e in (entry(groups, group), entry(classes, op_class(kind))):
            e["ms"] += ms
            e["backward_ms"] += ms if backward else 0.0
            e["types"][kind] = e["types"].get(kind, 0.0) + ms
    for name, count in flops.items():
        entry(groups, op_group(name, layers)[0])["flops"] += count
        entry(classes, op_class(graph_types.get(name, "")))["flops"] += count
    for table in (groups, classes):
        for e in table.values():
            e["types"] = dict(sorted(e["types"].items(), key=lambda kv: -kv[1])[:3])
    return groups, classes


def innermost_frame(error):
    """file:line (function): code of the innermost frame of this repository in the error's traceback."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        path = pathlib.Path(frame.filename)
        if path.is_relative_to(REPO_ROOT) and not path.relative_to(REPO_ROOT).parts[0].startswith("."):  # not .venv
            return f"{path.relative_to(REPO_ROOT)}:{frame.lineno} ({frame.name}): {(frame.line or '').strip()}"
    return None


def make_train_step(tf, keras, ops, impl, loss_fn, inputs, model=None, optimizer=None, arithmetic=None):
    """(call() -> loss, model, graph() -> the traced step's graph): one training step of `model` (else a
    fresh seeded JSNet) with `optimizer` (else a fresh Adam(1e-3)), traced under `impl` and under
    `arithmetic` (else the one in force where it is called)."""
    from jsnet_tf.layers.arithmetic import use_arithmetic

    impl_name, xla = IMPLS[impl]
    cloud, semantic, instance = inputs
    if model is None:
        model = build_model(tf, keras, ops, impl_name, FLAGS.seed)
    if optimizer is None:
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

    def traced_under():
        # The implementation and the arithmetic are picked when the function is traced: always call
        # inside their blocks.
        scope = contextlib.ExitStack()
        scope.enter_context(ops.use_implementation(impl_name))
        if arithmetic is not None:
            scope.enter_context(use_arithmetic(arithmetic))
        return scope

    def call():
        with traced_under():
            return float(step(cloud, semantic, instance))

    def graph():
        with traced_under():
            return step.get_concrete_function(cloud, semantic, instance).graph

    return call, model, graph


def child_train(tf, keras, ops, impl, result, batch, points):
    xla = IMPLS[impl][1]
    loss_fn, result["loss"] = load_loss()
    inputs = tuple(tf.constant(x) for x in make_inputs(batch, points, FLAGS.seed))
    call, _, graph = make_train_step(tf, keras, ops, impl, loss_fn, inputs)
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
    result["flops"] = sum(graph_flops(tf, graph()).values())


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


def child_arith(tf, keras, ops, result, batch, points):
    """The rewritten ("fast") and the plain arithmetic side by side in one process, alternating: the
    training step and the inference at `batch`, each a function traced under its arithmetic around one
    seeded, BN-calibrated model (the compiled point ops where built). Also their agreement on the
    inference outputs (same weights)."""
    from jsnet_tf.layers.arithmetic import use_arithmetic

    impl_name = ops.implementation()  # the compiled kernels where built
    impl = "custom" if impl_name == "custom" else "twin"
    loss_fn, result["loss"] = load_loss()
    cloud, semantic, instance = (tf.constant(x) for x in make_inputs(batch, points, FLAGS.seed))
    model = build_model(tf, keras, ops, impl_name, FLAGS.seed, points, calibrate=True)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    steps = {  # (call, model, graph) of each arithmetic's training step, one model and optimizer
        name: make_train_step(tf, keras, ops, impl, loss_fn, (cloud, semantic, instance), model, optimizer, name)
        for name in ARITHMETICS
    }
    forwards = {name: tf.function(lambda p: model(p, training=False)) for name in ARITHMETICS}

    def call(kind, name):
        if kind == "train":
            return steps[name][0]()
        with ops.use_implementation(impl_name), use_arithmetic(name):
            return forwards[name](cloud)

    outputs = {name: {k: v.numpy() for k, v in call("infer", name).items()} for name in ARITHMETICS}
    result["infer_max_abs_diff"] = {
        k: float(np.max(np.abs(outputs["fast"][k] - outputs["plain"][k]))) for k in outputs["fast"]
    }
    result["infer_max_abs"] = {k: float(np.max(np.abs(v))) for k, v in outputs["plain"].items()}
    result["impl"] = impl_name
    for kind in ("train", "infer"):
        for name in ARITHMETICS:
            for _ in range(1 + FLAGS.warmup):
                call(kind, name)
        samples = {name: [] for name in ARITHMETICS}
        for rep in range(FLAGS.repeats):
            for name in (ARITHMETICS if rep % 2 == 0 else ARITHMETICS[::-1]):
                count, start = 0, time.perf_counter()
                while True:  # inference: calls back to back for >= --min_time s; training: one step
                    out = call(kind, name)
                    if kind == "infer":
                        out["semantic_logits"].numpy()
                    count += 1
                    elapsed = time.perf_counter() - start
                    if kind == "train" or elapsed >= FLAGS.min_time:
                        break
                samples[name].append(elapsed / count)
        ratios = [p / f for p, f in zip(samples["plain"], samples["fast"])]
        result[kind] = {
            "samples_s": samples, "s": {name: statistics.median(v) for name, v in samples.items()},
            "ratios": ratios, "ratio": statistics.median(ratios),
        }
        log(
            f"  arithmetic {kind}: fast " + ", ".join(f"{v:.3f}" for v in samples["fast"]) + " s; plain "
            + ", ".join(f"{v:.3f}" for v in samples["plain"]) + " s; plain/fast " + ", ".join(f"{r:.2f}" for r in ratios)
        )
    for name in ARITHMETICS:
        with ops.use_implementation(impl_name), use_arithmetic(name):
            infer_graph = forwards[name].get_concrete_function(cloud).graph
        result.setdefault("flops", {})[name] = {
            "train": sum(graph_flops(tf, steps[name][2]()).values()),
            "infer": sum(graph_flops(tf, infer_graph).values()),
        }


def child_memory(tf, keras, ops, name, result, batch, points):
    """Peak memory of training steps at `batch` under arithmetic `name`, alone in this process: the RSS
    peak, its growth over the built model and optimizer, and TF's CPU allocator peak."""
    impl = "custom" if ops.implementation() == "custom" else "twin"
    loss_fn, result["loss"] = load_loss()
    inputs = tuple(tf.constant(x) for x in make_inputs(batch, points, FLAGS.seed))
    call, _, _ = make_train_step(tf, keras, ops, impl, loss_fn, inputs, arithmetic=name)
    result["rss_build_mib"] = max_rss_mib()
    tf_memory(tf, reset=True)
    start = time.perf_counter()
    for _ in range(2):  # the first call traces; the second is a plain step
        call()
    result["two_steps_s"] = time.perf_counter() - start
    result.update(rss_peak_mib=max_rss_mib(), tf_peak_mib=tf_memory(tf), impl=impl)
    result["rss_over_build_mib"] = result["rss_peak_mib"] - result["rss_build_mib"]
    log(f"  memory {name} batch {batch}: RSS peak {result['rss_peak_mib']:.0f} MiB, over build {result['rss_over_build_mib']:.0f} MiB")


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
        with ops.use_implementation(impl_name):
            entry["flops"] = sum(graph_flops(tf, forward.get_concrete_function(cloud).graph).values())
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


def layer_labels(model):
    """{top-level layer name: "name (Class)"} of a JSNet, the groups of the profile."""
    return {layer.name: f"{layer.name} ({type(layer).__name__})" for layer in model.layers}


def child_profile(tf, keras, ops, impl, result, batch, points):
    """Where the time goes: the training step and the inference of `impl` traced with TF's profiler,
    op times grouped by layer and by op class beside the FLOPs of the same ops."""
    impl_name = IMPLS[impl][0]
    loss_fn, result["loss"] = load_loss()
    cloud, semantic, instance = (tf.constant(x) for x in make_inputs(batch, points, FLAGS.seed))
    train_call, train_model, train_graph = make_train_step(tf, keras, ops, impl, loss_fn, (cloud, semantic, instance))
    model = build_model(tf, keras, ops, impl_name, FLAGS.seed, points, calibrate=True)
    forward = tf.function(lambda p: model(p, training=False))

    def infer_call():
        with ops.use_implementation(impl_name):
            return forward(cloud)["semantic_logits"].numpy()

    def infer_graph():
        with ops.use_implementation(impl_name):
            return forward.get_concrete_function(cloud).graph

    calls = max(1, FLAGS.profile_calls)
    with tempfile.TemporaryDirectory(prefix="jsnet_profile_") as logdir:
        for kind, call, graph, labels in (
            ("train", train_call, train_graph, layer_labels(train_model)),
            ("infer", infer_call, infer_graph, layer_labels(model)),
        ):
            for _ in range(1 + FLAGS.warmup):  # tracing, then warm-up
                call()
            untraced = []
            for _ in range(calls):
                start = time.perf_counter()
                call()
                untraced.append(time.perf_counter() - start)
            times, wall = trace_op_times(tf, call, calls, pathlib.Path(logdir) / kind)
            g = graph()
            flops = graph_flops(tf, g)
            groups, classes = summarise_profile(times, calls, flops, {op.name: op.type for op in g.get_operations()}, labels)
            result[kind] = {
                "untraced_s": statistics.median(untraced), "traced_s": wall, "op_ms": sum(times.values()) / 1e9 / calls,
                "flops": sum(flops.values()), "groups": groups, "classes": classes, "calls": calls,
            }
            log(f"  profile {kind} {impl}: {wall * 1e3:.0f} ms per traced call, {len(times)} ops")


BF16_VARIANTS = {  # name: (what, extra environment of its subprocess)
    "fp32": ("float32 (the reference)", {}),
    "grappler": ("TF grappler auto_mixed_precision_onednn_bfloat16", {}),
    "grappler-noAMX": ("the same, ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 (no AMX)", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}),
    "keras": ("keras.mixed_precision mixed_bfloat16 policy, set before the model is built", {}),
}
ONEDNN_MARK = "@@ jsnet benchmark: the oneDNN calls of one inference call follow"
SERVE_READY, SERVE_SAMPLE = "@@ready", "@@sample"  # a served bf16 process's lines on its stdout
ONEDNN_END = "@@ jsnet benchmark: end of the call"


def trained_blocks(run_dir, data_dir, area, limit, num_points):
    """(points (B, N, 9), semantic labels (B, N)) of the prepared test blocks of `area`, at most `limit` (0: all)."""
    from jsnet_tf.data import pipeline, s3dis
    from jsnet_tf.errors import DataError

    data, labels = [], []
    for path in pipeline.area_files(data_dir, area, "test", "blocks"):
        blocks = s3dis.read_blocks_h5(path)
        if blocks.data.shape[1] != num_points:
            raise DataError(f"{path}: blocks of {blocks.data.shape[1]} points, the run {run_dir} takes {num_points}")
        data.append(blocks.data)
        labels.append(blocks.semantic)
    data, labels = np.concatenate(data), np.concatenate(labels)
    return (data[:limit], labels[:limit]) if limit else (data, labels)


def child_bf16(tf, keras, ops, variant, result, batch, points, verbose=False):
    """Inference of the seeded (BN-calibrated) JSNet at batch x points under one precision `variant`
    (BF16_VARIANTS): seconds per call, and its outputs in <child_out>.npz; with --run_dir also the outputs
    of the trained model on the area's blocks. `verbose`: one call between ONEDNN_MARK lines on stdout
    (the subprocess runs with ONEDNN_VERBOSE=1), nothing timed."""
    impl_name = IMPLS[FLAGS.point_ops][0]  # chosen by the parent: a library gone stale meanwhile fails, never switches
    result.update(impl=FLAGS.point_ops, what=BF16_VARIANTS[variant][0], onednn_max_cpu_isa=os.environ.get("ONEDNN_MAX_CPU_ISA"))
    if variant.startswith("grappler"):
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    elif variant == "keras":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_model(tf, keras, ops, impl_name, FLAGS.seed, points, calibrate=True)
    forward = tf.function(lambda p: model(p, training=False))
    cloud = tf.constant(make_inputs(batch, points, FLAGS.seed)[0])

    def call(net=forward, x=cloud):
        with ops.use_implementation(impl_name):
            out = net(x)
            return {k: np.asarray(tf.cast(v, tf.float32)) for k, v in out.items()}

    start = time.perf_counter()
    out = call()
    result["first_call_s"] = time.perf_counter() - start
    for _ in range(FLAGS.warmup):
        call()
    if verbose:  # one call, also traced by TF's profiler: its time per op class
        with tempfile.TemporaryDirectory(prefix="jsnet_profile_") as logdir:
            print(ONEDNN_MARK, flush=True)
            times, result["call_s"] = trace_op_times(tf, call, 1, logdir)
            print(ONEDNN_END, flush=True)
        result["op_classes"] = summarise_profile(times, 1, {}, {}, layer_labels(model))[1]
        return
    # Served: one timed repetition per "time" line from the parent, which rotates over the variants'
    # processes, so that a change of load on the shared machine hits every variant alike.
    print(SERVE_READY, flush=True)
    samples = []
    for line in sys.stdin:
        if line.strip() != "time":
            break
        samples.append(time_calls(call, 1, FLAGS.min_time)[0])
        print(f"{SERVE_SAMPLE} {samples[-1]!r}", flush=True)
    if samples:
        result.update(call_s=statistics.median(samples), call_min_s=min(samples), call_max_s=max(samples), call_samples_s=samples)
        log(f"  bf16 {variant}: {result['call_s'] * 1e3:.0f} ms per call (batch {batch} x {points})")
    result["non_finite"] = non_finite(out.values())
    arrays = {"logits": out["semantic_logits"], "embeddings": out["embeddings"]}
    if FLAGS.run_dir:
        from jsnet_tf import checkpoints

        trained, cfg, result["checkpoint"] = checkpoints.load_run(FLAGS.run_dir, "latest", {}, False)
        data, truth = trained_blocks(FLAGS.run_dir, FLAGS.data_dir, FLAGS.area, FLAGS.bf16_blocks, cfg["data"]["num_points"])
        net = tf.function(lambda p: trained(p, training=False))
        parts = [call(net, tf.constant(data[i : i + batch])) for i in range(0, len(data), batch)]
        arrays.update(
            trained_logits=np.concatenate([p["semantic_logits"] for p in parts]),
            trained_embeddings=np.concatenate([p["embeddings"] for p in parts]), truth=truth,
        )
        result.update(trained_blocks=len(data), trained_points=int(data.shape[1]))
    np.savez(pathlib.Path(FLAGS.child_out).with_suffix(".npz"), **arrays)


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
        from jsnet_tf.layers import arithmetic

        arithmetic.set_arithmetic(FLAGS.arithmetic)  # of every measurement but arith and memory
        with tf.device("/CPU:0"):  # the CPU kernels, also where a GPU is visible
            if kind == "train":
                child_train(tf, keras, ops, impl, result, FLAGS.batch, FLAGS.points)
            elif kind == "infer":
                child_infer(tf, keras, ops, impl, result, FLAGS.batch, FLAGS.points)
            elif kind == "pair":
                child_pair(tf, keras, ops, result, FLAGS.batch, FLAGS.points)
            elif kind == "arith":
                child_arith(tf, keras, ops, result, FLAGS.batch, FLAGS.points)
            elif kind == "memory":
                child_memory(tf, keras, ops, impl, result, FLAGS.memory_batch, FLAGS.points)
            elif kind == "check":
                child_check(tf, keras, ops, result, FLAGS.check_batch, FLAGS.points)
            elif kind == "profile":
                child_profile(tf, keras, ops, impl, result, FLAGS.batch, FLAGS.points)
            elif kind in ("bf16", "onednn"):
                child_bf16(tf, keras, ops, impl, result, FLAGS.batch, FLAGS.points, verbose=kind == "onednn")
            else:
                raise ValueError(f"--child: unknown measurement {FLAGS.child!r}")
    except Exception as error:  # noqa: BLE001 - report to the parent, with the whole traceback
        # Keras wraps a layer's error in "Exception encountered when calling ..." + the call's arguments.
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split("Arguments received by")[0]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        result["error"] = f"{type(error).__name__}: {(lines[-1] if lines else '')[:400]}"
        result["traceback"] = traceback.format_exc()
        result["where"] = innermost_frame(error)
    write_json(FLAGS.child_out, result)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip TF's slow teardown


# ----------------------------------------------------------------------------- the parent


def child_path(workdir, child, suffix=".json"):
    return pathlib.Path(workdir) / (re.sub(r"[^A-Za-z0-9]", "_", child) + suffix)


def spawn(child, args, workdir, env=None, stdout=None):
    """Runs one measurement subprocess (`env`: extra environment; `stdout`: a file for its standard output,
    else discarded), streams its stderr, returns its JSON (or an error)."""
    out = child_path(workdir, child)
    cmd = [sys.executable, os.fspath(pathlib.Path(__file__).resolve()), f"--child={child}", f"--child_out={out}", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"), **(env or {}))
    start = time.perf_counter()
    sink = open(stdout, "w") if stdout else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
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
    if stdout:
        sink.close()
    wall = time.perf_counter() - start
    if out.exists():
        result = json.loads(out.read_text())
    else:
        result = {"child": child, "error": f"subprocess exited with {code} without a report"
                  + (f" (killed after --child_timeout={FLAGS.child_timeout:g} s)" if code == -9 else ""),
                  "traceback": "\n".join(tail)}
    result["wall_s"] = wall
    return result


def onednn_summary(path):
    """{"primitive | implementation | source dtype": [executions, ms]} of the oneDNN verbose lines
    between ONEDNN_MARK and ONEDNN_END of a subprocess's standard output."""
    table, inside = {}, False
    for line in pathlib.Path(path).read_text(errors="replace").splitlines():
        if line.startswith(ONEDNN_MARK):
            inside = True
        elif line.startswith(ONEDNN_END):
            break
        elif inside and line.startswith("onednn_verbose") and ",exec," in line:
            fields = line.split(",")
            i = fields.index("exec")
            dtype = re.match(r"src[:_]([a-z0-9]+)", fields[i + 5])
            key = f"{fields[i + 2]} | {fields[i + 3]} | {dtype.group(1) if dtype else '?'}"
            entry = table.setdefault(key, [0, 0.0])
            entry[0] += 1
            entry[1] += float(fields[-1])
    return dict(sorted(table.items(), key=lambda kv: -kv[1][1]))


def agreement(reference, other, prefix=""):
    """Label agreement (argmax of the semantic logits) and largest output differences of `other` vs `reference`."""
    logits, embeddings = reference[prefix + "logits"], reference[prefix + "embeddings"]
    found = {
        "labels_agree": float(np.mean(np.argmax(other[prefix + "logits"], -1) == np.argmax(logits, -1))),
        "max_abs_diff_logits": float(np.max(np.abs(other[prefix + "logits"] - logits))),
        "max_abs_diff_embeddings": float(np.max(np.abs(other[prefix + "embeddings"] - embeddings))),
        "max_abs_embeddings": float(np.max(np.abs(embeddings))),
    }
    if prefix:
        found["accuracy"] = float(np.mean(np.argmax(other[prefix + "logits"], -1) == other["truth"]))
        found["accuracy_fp32"] = float(np.mean(np.argmax(logits, -1) == reference["truth"]))
    return found


class Served:
    """A bf16 measurement subprocess kept alive: started (and warmed up) one after another, then timed one
    repetition at a time on request (`sample`), ended with `finish` (its JSON, or an error)."""

    def __init__(self, child, args, workdir, env):
        self.child, self.out, self.err = child, child_path(workdir, child), child_path(workdir, child, ".err")
        cmd = [sys.executable, os.fspath(pathlib.Path(__file__).resolve()), f"--child={child}", f"--child_out={self.out}", *args]
        self.stderr = open(self.err, "w")  # noqa: SIM115 - closed in finish
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, cwd=REPO_ROOT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"), **env),
        )
        self.killer = threading.Timer(FLAGS.child_timeout, self.proc.kill)  # only this child, by its handle
        self.killer.daemon = True
        self.killer.start()
        self.live = self._read(SERVE_READY) is not None

    def _read(self, tag):
        for line in self.proc.stdout:
            if line.startswith(tag):
                return line[len(tag):].strip()
        return None  # the process ended

    def sample(self):
        if self.live:
            self.proc.stdin.write("time\n")
            self.proc.stdin.flush()
            self.live = self._read(SERVE_SAMPLE) is not None

    def finish(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("done\n")
            self.proc.stdin.close()
        code = self.proc.wait()
        self.killer.cancel()
        self.stderr.close()
        if self.out.exists():
            return json.loads(self.out.read_text())
        tail = self.err.read_text(errors="replace").splitlines()[-40:]
        return {"child": self.child, "error": f"subprocess exited with {code} without a report", "traceback": "\n".join(tail)}


def run_bf16(args, workdir, started):
    """The precision subprocesses: {variant: result with its agreement with fp32}, {variant: oneDNN summary}.
    Each variant's process warms up in turn; then the processes time --repeats repetitions in rotating order."""
    served = {}
    for variant, (_, env) in BF16_VARIANTS.items():
        log(f"bf16 {variant}: build and warm up  ({time.perf_counter() - started:.0f} s)")
        served[variant] = Served(f"bf16:{variant}", args, workdir, env)
    names = [v for v, s in served.items() if s.live]
    for rep in range(FLAGS.repeats):
        log(f"bf16 repetition {rep + 1} of {FLAGS.repeats}  ({time.perf_counter() - started:.0f} s)")
        for variant in names[rep % len(names):] + names[: rep % len(names)]:
            served[variant].sample()
    runs, arrays = {}, {}
    for variant, s in served.items():
        runs[variant] = s.finish()
        npz = child_path(workdir, f"bf16:{variant}", ".npz")
        if ok(runs[variant]) and npz.exists():
            with np.load(npz) as data:
                arrays[variant] = dict(data)
    base = runs.get("fp32", {}).get("call_samples_s")
    for variant, r in runs.items():
        if base and r.get("call_samples_s") and variant != "fp32":  # the same round: fp32 seconds / variant seconds
            r["round_ratios"] = [b / v for b, v in zip(base, r["call_samples_s"])]
            r["round_ratio"] = statistics.median(r["round_ratios"])
    for variant, data in arrays.items():
        if variant != "fp32" and "fp32" in arrays:
            runs[variant]["agreement"] = agreement(arrays["fp32"], data)
            if "trained_logits" in data:
                runs[variant]["trained_agreement"] = agreement(arrays["fp32"], data, "trained_")
    onednn = {}
    if FLAGS.onednn_verbose:
        for variant in ("fp32", "grappler"):
            log(f"oneDNN primitives of one call, {variant}  ({time.perf_counter() - started:.0f} s)")
            stdout = child_path(workdir, f"onednn:{variant}", ".txt")
            r = spawn(f"onednn:{variant}", args, workdir, env={**BF16_VARIANTS[variant][1], "ONEDNN_VERBOSE": "1"}, stdout=stdout)
            onednn[variant] = {"call_s": r.get("call_s"), "primitives": onednn_summary(stdout) if stdout.exists() else {},
                               "op_classes": r.get("op_classes", {}), **({"error": r["error"]} if not ok(r) else {})}
    return runs, onednn


def rate(flops, seconds, peak):
    """(GFLOP, GFLOP/s, % of peak) cells."""
    if not flops or not seconds:
        return ["-", "-", "-"]
    gflops = flops / seconds / 1e9
    return [f"{flops / 1e9:.2f}", f"{gflops:.1f}", f"{100 * gflops / peak:.1f}%" if peak else "-"]


def report_rates(out, train, infer, batch, peak, peak_how):
    out.write(
        f"\nachieved FLOP rate (FLOPs: TensorFlow's profiler, float_operation, on each function's traced graph; the "
        f"compiled point ops and ops of unknown shape count 0)\nfp32 peak {fmt(peak, 1)} GFLOP/s: {peak_how}\n"
    )
    body = []
    for impl, r in train.items():
        if ok(r):
            body.append(["training step", impl, str(batch), fmt(r["step_s"], 3), *rate(r.get("flops"), r["step_s"], peak)])
    for impl, r in infer.items():
        for size, entry in (r.get("batches") or {}).items() if ok(r) else ():
            if "call_s" in entry:
                body.append(["inference", impl, size, fmt(entry["call_s"], 3), *rate(entry.get("flops"), entry["call_s"], peak)])
    print_table(["function", "impl", "batch", "s/call", "GFLOP", "GFLOP/s", "% of peak"], body, out, left=(0, 1))


def report_profile(out, profile, batch, points, peak):
    out.write(
        f"\nwhere the time goes: {profile['impl']}, batch {batch} x {points}, TensorFlow profiler trace "
        f"(tf.profiler.experimental) of {profile['train']['calls']} call(s) each; ms per call summed over the ops of "
        f"each group (ops on the two inter-op threads overlap; grappler/oneDNN fusions keep the name of one of "
        f"their ops), GFLOP of the same ops in the traced graph\n"
    )
    for kind, title in (("train", "training step"), ("infer", "inference (training=False)")):
        p = profile[kind]
        out.write(
            f"\n{title}: {p['traced_s'] * 1e3:.0f} ms per traced call ({p['untraced_s'] * 1e3:.0f} ms untraced), "
            f"op time {p['op_ms']:.0f} ms per call, {p['flops'] / 1e9:.2f} GFLOP\n"
        )
        total = sum(e["ms"] for e in p["groups"].values()) or 1.0
        for table, header in ((p["groups"], "layer / group"), (p["classes"], "op class")):
            body = []
            for name, e in sorted(table.items(), key=lambda kv: -kv[1]["ms"]):
                body.append([
                    name, f"{e['ms']:.1f}", f"{100 * e['ms'] / total:.1f}%",
                    *(["%.1f" % e["backward_ms"]] if kind == "train" else []),
                    *rate(e["flops"], e["ms"] / 1e3, peak),
                    ", ".join(f"{t} {ms:.0f}" for t, ms in e["types"].items()),
                ])
            print_table(
                [header, "ms", "share", *(["of it bwd ms"] if kind == "train" else []), "GFLOP", "GFLOP/s", "% peak",
                 "top op types (ms)"], body, out, left=(0, 7 if kind == "train" else 6),
            )
        dense = p["classes"].get(OP_CLASSES[0][0], {"ms": 0.0, "flops": 0})
        rest_flops = p["flops"] - dense["flops"]
        dense_rate = dense["flops"] / (dense["ms"] / 1e3) / 1e9 if dense["ms"] else 0.0
        out.write(
            f"-> dense ops: {100 * dense['ms'] / total:.0f}% of the op time at {dense_rate:.0f} GFLOP/s"
            + (f" ({100 * dense_rate / peak:.0f}% of peak)" if peak else "")
            + f"; the other {100 * (1 - dense['ms'] / total):.0f}% of the op time does {100 * rest_flops / max(p['flops'], 1):.0f}% "
            f"of the counted FLOPs\n"
        )


def report_bf16(out, runs, onednn, batch, points):
    impl = next((r["impl"] for r in runs.values() if r.get("impl")), "?")
    out.write(
        f"\nbfloat16 inference (training=False), batch {batch} x {points}, {impl} point ops, seeded BN-calibrated model; "
        f"x fp32: fp32 median / variant median; per round: median of fp32 / variant seconds of the same round:\n"
    )
    base = runs.get("fp32", {}).get("call_s")
    body = []
    for variant, r in runs.items():
        if not ok(r):
            body.append([variant, "FAILS"] + ["-"] * 7)
            continue
        a = r.get("agreement", {})
        body.append([
            variant, f"{r['call_s'] * 1e3:.0f}", f"{r['call_min_s'] * 1e3:.0f}-{r['call_max_s'] * 1e3:.0f}",
            fmt_x(base / r["call_s"]) if base else "-", fmt_x(r.get("round_ratio")),
            f"{100 * a['labels_agree']:.1f}%" if a else "-", fmt(a.get("max_abs_diff_logits"), 3),
            fmt(a.get("max_abs_diff_embeddings"), 3), fmt(a.get("max_abs_embeddings") if a else None, 3),
        ])
    print_table(
        ["variant", "ms/call", "min-max ms", "x fp32", "x fp32 per round", "labels = fp32", "max|d logits|", "max|d emb|",
         "max|emb fp32|"], body, out,
    )
    for variant, r in runs.items():
        out.write(f"  {variant}: {r.get('what') or BF16_VARIANTS[variant][0]}\n")
        if not ok(r):
            out.write(f"    FAILS at {r.get('where')}\n    {r['error']}\n")
    trained = {v: r for v, r in runs.items() if ok(r) and r.get("trained_agreement")}
    if trained:
        fp32 = runs["fp32"]
        out.write(
            f"trained model {FLAGS.run_dir} ({fp32.get('checkpoint')}), {fp32['trained_blocks']} test blocks of area "
            f"{FLAGS.area} x {fp32['trained_points']} points:\n"
        )
        body = [[v, f"{100 * r['trained_agreement']['labels_agree']:.2f}%", fmt(r["trained_agreement"]["max_abs_diff_logits"], 3),
                 fmt(r["trained_agreement"]["max_abs_diff_embeddings"], 3), fmt(r["trained_agreement"]["max_abs_embeddings"], 3),
                 f"{100 * r['trained_agreement']['accuracy_fp32']:.2f}%", f"{100 * r['trained_agreement']['accuracy']:.2f}%"]
                for v, r in trained.items()]
        print_table(["variant", "labels = fp32", "max|d logits|", "max|d emb|", "max|emb fp32|", "accuracy fp32", "accuracy"],
                    body, out)
    if onednn:
        out.write("TF op time of that call per op class, ms (profiler trace; top op types of the last variant):\n")
        names = sorted({c for s in onednn.values() for c in s["op_classes"]}, key=lambda c: [n for n, _ in OP_CLASSES].index(c))
        last = list(onednn)[-1]
        body = [[c, *(fmt(s["op_classes"].get(c, {}).get("ms"), 1) for s in onednn.values()),
                 ", ".join(f"{t} {ms:.0f}" for t, ms in onednn[last]["op_classes"].get(c, {}).get("types", {}).items())]
                for c in names]
        body.append(["total", *(fmt(sum(e["ms"] for e in s["op_classes"].values()), 1) for s in onednn.values()), ""])
        print_table(["op class", *onednn, f"top op types ({last})"], body, out, left=(0, len(onednn) + 1))
    for variant, summary in onednn.items():
        prims = summary["primitives"]
        total = sum(ms for _, ms in prims.values())
        out.write(
            f"oneDNN primitives of one {variant} call (ONEDNN_VERBOSE=1; {fmt(summary['call_s'], 2)} s wall, "
            f"{total:.0f} ms in oneDNN):\n"
            + ("".join(f"  {key}: {n} x, {ms:.1f} ms\n" for key, (n, ms) in prims.items()) or "  none\n")
            + (f"  FAILED: {summary['error']}\n" if summary.get("error") else "")
        )


def report_arithmetic(out, arith, memory, batch, peak):
    """The fast vs plain arithmetic table (alternating in one process) and the peak memory of training."""
    if ok(arith):
        out.write(
            f"\nfast vs plain arithmetic (jsnet_tf.layers.arithmetic), alternating in one process, batch {batch}, "
            f"{arith['impl']} point ops; inference outputs max |fast - plain| "
            + ", ".join(f"{k} {v:.2g} (of {arith['infer_max_abs'][k]:.3g})" for k, v in arith["infer_max_abs_diff"].items())
            + ":\n"
        )
        body = []
        for kind, label in (("train", "training step"), ("infer", f"inference batch {batch}")):
            r = arith[kind]
            for name in ARITHMETICS:
                seconds = r["s"][name]
                body.append([
                    label, name, fmt(seconds, 3), f"{min(r['samples_s'][name]):.3f}-{max(r['samples_s'][name]):.3f}",
                    *rate(arith["flops"][name][kind], seconds, peak),
                    f"{r['ratio']:.2f}x ({min(r['ratios']):.2f}-{max(r['ratios']):.2f})" if name == "fast" else "-",
                ])
        print_table(["call", "arithmetic", "s (median)", "min-max s", "GFLOP", "GFLOP/s", "of peak", "plain / fast per pair"],
                    body, out, left=(0, 1))
    elif arith is not None:
        out.write(f"\nfast vs plain arithmetic FAILED: {arith['error']}\n")
    if memory:
        out.write(f"\npeak memory of training steps at batch {FLAGS.memory_batch} x {FLAGS.points} (one process each):\n")
        body = [
            [name, fmt_mib(r["rss_peak_mib"]), fmt_mib(r["rss_over_build_mib"]), fmt_mib(r.get("tf_peak_mib"))]
            if ok(r) else [name, "error", "-", "-"]
            for name, r in memory.items()
        ]
        print_table(["arithmetic", "RSS peak MiB", "RSS over build MiB", "TF alloc peak MiB"], body, out)
        if all(ok(r) for r in memory.values()) and len(memory) == 2:
            out.write(
                f"fast / plain: RSS peak {memory['fast']['rss_peak_mib'] / memory['plain']['rss_peak_mib']:.0%}, "
                f"over build {memory['fast']['rss_over_build_mib'] / memory['plain']['rss_over_build_mib']:.0%}\n"
            )


def child_args(batch, repeats, warmup, min_time, profile_calls, trained):
    """The flags of a measurement subprocess; `trained`: (run folder, data folder, area) or None."""
    args = [
        f"--batch={batch}", f"--points={FLAGS.points}", f"--repeats={repeats}", f"--warmup={warmup}",
        f"--min_time={min_time}", f"--check_batch={FLAGS.check_batch}", f"--compile_limit={FLAGS.compile_limit}",
        f"--threads={FLAGS.threads}", f"--seed={FLAGS.seed}", f"--profile_calls={profile_calls}",
        f"--arithmetic={FLAGS.arithmetic}", f"--memory_batch={FLAGS.memory_batch}",
    ]
    if trained:
        args += [f"--run_dir={trained[0]}", f"--data_dir={trained[1]}", f"--area={trained[2]}", f"--bf16_blocks={FLAGS.bf16_blocks}"]
    return args


def trained_run():
    """(run folder, data folder, area) of --run_dir, checked: a UsageError of one line when unusable."""
    from jsnet_tf import checkpoints
    from jsnet_tf.data import pipeline
    from jsnet_tf.errors import UserError

    try:
        cfg = checkpoints.load_config(FLAGS.run_dir)
        checkpoints.find_weights(FLAGS.run_dir, "latest")
        data_dir = FLAGS.data_dir or cfg["data"]["data_dir"]
        area = FLAGS.area if FLAGS.area is not None else checkpoints.run_area(FLAGS.run_dir)
        if area is None:
            raise app.UsageError(f"--run_dir={FLAGS.run_dir} records no test area: give --area")
        pipeline.area_files(data_dir, area, "test", "blocks")
    except UserError as error:
        raise app.UsageError(str(error)) from None
    return pathlib.Path(FLAGS.run_dir).resolve(), pathlib.Path(data_dir).resolve(), int(area)


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
    trained = trained_run() if FLAGS.bf16 and FLAGS.run_dir else None
    if trained:
        FLAGS.area = trained[2]  # for the report
    profile_calls = 1 if FLAGS.quick and not FLAGS["profile_calls"].present else FLAGS.profile_calls
    args = child_args(batch, repeats, warmup, min_time, profile_calls, trained)
    if FLAGS.peak_gflops:
        peak, peak_how = FLAGS.peak_gflops, "given by --peak_gflops"
    else:
        peak, peak_how = machine_peak(FLAGS.threads, FLAGS.fma_units)

    results = {
        "check": None, "train": {}, "pair": None, "infer": {}, "profile": None, "bf16": {}, "onednn": {}, "arith": None,
        "memory": {},
    }
    with tempfile.TemporaryDirectory(prefix="jsnet_model_bench_") as workdir:
        if FLAGS.check and have_custom:
            log(f"check: custom vs twin, same weights, batch {FLAGS.check_batch}  ({time.perf_counter() - started:.0f} s)")
            results["check"] = spawn("check", args, workdir)
        if FLAGS.arith:
            log(f"fast and plain arithmetic alternately in one process  ({time.perf_counter() - started:.0f} s)")
            results["arith"] = spawn("arith", args, workdir)
        if FLAGS.memory:
            for name in ARITHMETICS:  # one process each, one after the other: their RSS peaks are theirs alone
                log(f"memory: training steps at batch {FLAGS.memory_batch}, {name} arithmetic  ({time.perf_counter() - started:.0f} s)")
                results["memory"][name] = spawn(f"memory:{name}", args, workdir)
        for kind, wanted in (("train", FLAGS.train), ("infer", FLAGS.infer)):
            if not wanted:
                continue
            for impl in impls:
                log(f"{kind} {impl}  ({time.perf_counter() - started:.0f} s)")
                results[kind][impl] = spawn(f"{kind}:{impl}", args, workdir)
            if kind == "train" and FLAGS.paired and have_custom:
                log(f"train custom and twin alternately in one process  ({time.perf_counter() - started:.0f} s)")
                results["pair"] = spawn("pair", args, workdir)
        if FLAGS.profile:
            log(f"profile of {impls[0]}: training step and inference under TF's profiler  ({time.perf_counter() - started:.0f} s)")
            results["profile"] = spawn(f"profile:{impls[0]}", args, workdir)
            if ok(results["profile"]):
                results["profile"]["impl"] = impls[0]
        if FLAGS.bf16:
            results["bf16"], results["onednn"] = run_bf16([*args, f"--point_ops={impls[0]}"], workdir, started)

    everything = [results["check"], results["arith"], *results["memory"].values(), *results["train"].values(), results["pair"],
                  *results["infer"].values(), results["profile"],
                  *(r for v, r in results["bf16"].items() if v != "keras")]  # the Keras policy is expected to fail
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

    report_arithmetic(out, results["arith"], results["memory"], batch, peak)
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

    if any(ok(r) for r in [*train.values(), *infer.values()]):
        report_rates(out, train, infer, batch, peak, peak_how)
    if ok(results["profile"]):
        report_profile(out, results["profile"], batch, FLAGS.points, peak)
    if results["bf16"]:
        report_bf16(out, results["bf16"], results["onednn"], batch, FLAGS.points)

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
            "fp32_peak_gflops": peak,
            "fp32_peak_how": peak_how,
            "profile": results["profile"],
            "bf16": results["bf16"],
            "onednn": results["onednn"],
            "arithmetic": FLAGS.arithmetic,
            "arith": results["arith"],
            "memory": results["memory"],
        }
        common.write_report(FLAGS.json, report)


if __name__ == "__main__":
    define_flags()
    app.run(main)
