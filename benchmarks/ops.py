"""Speed of the JSNet point ops at S3DIS sizes: compiled kernels vs their pure-TF twins.

    .venv/bin/python benchmarks/ops.py                      # full table, a few minutes on 2 cores
    .venv/bin/python benchmarks/ops.py --quick              # smoke run, one call per op, < 1 minute
    .venv/bin/python benchmarks/ops.py --json=/tmp/ops.json # also write the numbers as JSON
    .venv/bin/python benchmarks/ops.py --ops=fps,knn        # only some ops

(build the kernels first with `.venv/bin/python tf_ops/build.py`; without them only the twins run.)

What is measured, per op call that the JSNet network makes in one forward pass (batch 8, 4096
points per block, the call list of the original's models/JISS/model.py):

  * FPS: farthest_point_sample 4096->1024 (layer1), 1024->256, 256->64, 64->32 (PointConv layers);
    gather_point of the sampled centres at the same sizes (forward, and forward+backward).
  * ball query: query_ball_point r=0.1 K=32, 1024 centres in 4096 points (layer1), and the
    PointConv density estimate, 128 slots of each layer's input points onto themselves
    (r=0.2 on 1024, r=0.4 on 256, r=0.8 on 64); group_point of the layer1 groups (3 xyz + 6
    feature channels, K=32) and of the density groups (3 channels, 128 slots), forward and
    forward+backward.
  * kNN: knn_point K=32 of the sampled centres among the layer input (256 in 1024, 64 in 256,
    32 in 64), and K=16 of each decoder level onto itself (64, 256, 1024 points); the decoder
    calls happen twice (semantic and instance decoders), so 9 calls per forward pass.
  * three_nn + three_interpolate: decoder levels 32->64, 64->256, 256->1024, 1024->4096 (twice),
    plus the original's pointnet_upsample calls 256->4096 and 1024->4096 (twice each); channel
    counts are the network's (512, 512, 256, 128, 256); three_interpolate also forward+backward.

Every call is timed for
  * custom:   the compiled kernels (`use_implementation("custom")`), in a tf.function;
  * twin:     the pure-TF twins (`use_implementation("reference")`), in a tf.function;
  * twin+XLA: the twins in tf.function(jit_compile=True);
  * and for kNN also the original's path, an sklearn KDTree (leaf_size=30, float64, exact) built
    per batch element on the support points and queried with k, both as the network runs it
    inside tf.py_function ("KDTree") and as bare sklearn on numpy arrays ("sklearn").
Everything runs on /CPU:0, also where a GPU is visible (the targets are the CPU kernels').
Each function is called once to trace/compile, then timed: each repetition runs it back to back
for at least --min_time seconds and takes the mean per call; the table shows the median over
--repeats repetitions. The implementations of one call are interleaved (rotated order each
repetition), so the speedup columns compare measurements taken side by side. Gradient rows time
forward + backward (tf.GradientTape, upstream gradient given) w.r.t. the differentiable input.

Before timing, the outputs of custom, twin and twin+XLA are compared on the benchmark inputs
(integer outputs equal, float outputs allclose): the "same" column says whether custom matches
the twin, so that a fast but wrong kernel shows; disagreements of twin+XLA or of the KDTree
neighbours are listed under the table.

The "all N calls" rows sum the per-call medians times the number of such calls in one forward
pass. FPS rows note the cost per distance evaluation (B * N * npoint evaluations per call):
wall-clock ns per evaluation, and core-ns per evaluation = that times the intra-op threads
(--threads, default os.cpu_count()); the aim for the CPU kernel is about 1 core-ns per
evaluation. The "target" column checks the CPU kernel targets: FPS >= 10x the twin, ball query
>= 5x the twin, kNN >= 3x both the twin and the KDTree path (py_function); twin means the
non-XLA twin. A "*" after it marks rows where custom takes less than 3x the call overhead of an
empty tf.function (printed in the header): such a row times the call more than the kernel (inside
the network's graph the per-op overhead is far smaller).

Inputs are fixed (np.random.default_rng(0)): 4096 points uniform in a 1 m cube per block (so ball
query radii see realistic densities), each coarser level the FPS subset of the previous one,
features and upstream gradients standard normal.
"""

import dataclasses
import math
import os
import pathlib
import platform
import statistics
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402  (benchmarks/common.py)
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from common import log  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "timed repetitions per implementation and call; the median is reported")
flags.DEFINE_bool("quick", False, "smoke run: one call per op, 2 repetitions, shorter repetitions")
flags.DEFINE_float(
    "min_time", 0.05, "seconds each timed repetition runs at least (calls are repeated back to back, mean per call)"
)
flags.DEFINE_string("json", None, "also write all numbers to this JSON file")
flags.DEFINE_list(
    "ops",
    [],
    "only these ops (default all): fps, gather, gather_grad, ball, group, group_grad, knn, three_nn, interp, "
    "interp_grad",
)
flags.DEFINE_integer(
    "threads", os.cpu_count(), "TensorFlow intra-op threads (the CPU kernels shard over them); default os.cpu_count()"
)
flags.DEFINE_bool("xla", True, "also time the twins under tf.function(jit_compile=True)")
flags.DEFINE_bool("kdtree", True, "also time the original's sklearn KDTree kNN path")
flags.DEFINE_integer("batch", 8, "batch size (S3DIS training uses 8)")

B_POINTS = 4096
LEVELS = (4096, 1024, 256, 64, 32)

# key: (table name, speedup target vs the twin or None, also vs KDTree)
OPS = {
    "fps": ("FPS", 10.0, False),
    "gather": ("gather_point", None, False),
    "gather_grad": ("gather_point grad", None, False),
    "ball": ("ball query", 5.0, False),
    "group": ("group_point", None, False),
    "group_grad": ("group_point grad", None, False),
    "knn": ("kNN", 3.0, True),
    "three_nn": ("three_nn", None, False),
    "interp": ("three_interpolate", None, False),
    "interp_grad": ("three_interp grad", None, False),
}
IMPLS = ("custom", "twin", "twin+XLA", "KDTree", "sklearn")
OVERHEAD_BOUND = 3.0  # custom within this factor of the bare tf.function call overhead: a "*" row
call_overhead_s = 0.0  # measured in main()


@dataclasses.dataclass
class Case:
    op: str  # key of OPS
    size: str  # what the call does, for the table
    calls: int  # such calls per forward pass
    fn: object  # fn(*args) -> outputs, calling jsnet_tf.ops
    args: tuple  # tf tensors
    quick: bool = False  # part of the --quick run
    evals: int = 0  # FPS distance evaluations per call
    kdtree: tuple = None  # (k, support, queries) numpy, for the KDTree kNN path
    rtol: float = 1e-5
    atol: float = 1e-6
    times: dict = dataclasses.field(default_factory=dict)  # impl -> median seconds per call
    errors: dict = dataclasses.field(default_factory=dict)  # impl -> why it failed
    same: dict = dataclasses.field(default_factory=dict)  # check -> bool or message
    notes: list = dataclasses.field(default_factory=list)


# ----------------------------------------------------------------------------- the original's kNN


def kdtree_knn(k, support, queries):
    """The original's kNN: per batch element a KDTree on the support points, queried with k.

    Returns squared distances (float32, to match knn_point) and indices (int32), ascending.
    """
    from sklearn.neighbors import KDTree

    batch, m = queries.shape[:2]
    dist = np.empty((batch, m, k), np.float32)
    idx = np.empty((batch, m, k), np.int32)
    for b in range(batch):
        d, i = KDTree(support[b], leaf_size=30).query(queries[b], k=k)
        dist[b] = np.square(d)
        idx[b] = i
    return dist, idx


def kdtree_knn_op(tf, k, support, queries):
    """kdtree_knn as the network runs it: a tf.py_function node in the graph."""

    def run(s, q):
        return kdtree_knn(k, s.numpy(), q.numpy())

    dist, idx = tf.py_function(run, [support, queries], [tf.float32, tf.int32])
    shape = queries.shape[:2] + [k]
    dist.set_shape(shape)
    idx.set_shape(shape)
    return dist, idx


# ----------------------------------------------------------------------------- inputs and calls


def numpy_fps(npoint, xyz):
    """Farthest point sampling from index 0 (same rule as the ops), for building the inputs."""
    batch, n = xyz.shape[:2]
    idx = np.zeros((batch, npoint), np.int32)
    nearest = np.full((batch, n), np.inf, np.float32)
    rows = np.arange(batch)
    for i in range(1, npoint):
        d = xyz - xyz[rows, idx[:, i - 1]][:, None, :]
        nearest = np.minimum(nearest, d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2])
        idx[:, i] = np.argmax(nearest, axis=1)
    return idx


def build_cases(tf, ops, batch):
    rng = np.random.default_rng(0)
    xyz = [rng.random((batch, B_POINTS, 3), dtype=np.float32)]
    features = rng.standard_normal((batch, B_POINTS, 6), dtype=np.float32)
    fps_idx = []
    for npoint in LEVELS[1:]:
        fps_idx.append(numpy_fps(npoint, xyz[-1]))
        xyz.append(np.take_along_axis(xyz[-1], fps_idx[-1][..., None].astype(np.int64), axis=1))
    t = [tf.constant(x) for x in xyz]  # t[level]: (batch, LEVELS[level], 3)

    def normal(*shape):
        return tf.constant(rng.standard_normal((batch,) + shape, dtype=np.float32))

    def grad_of(op_fn):
        """forward + backward of op_fn(x, *rest) w.r.t. x; the last arg is the upstream gradient."""

        def fn(x, *rest):
            *rest, upstream = rest
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = op_fn(x, *rest)
            return out, tf.convert_to_tensor(tape.gradient(out, x, output_gradients=upstream))

        return fn

    cases = []
    # FPS and gather_point of the sampled centres.
    for level, npoint in enumerate(LEVELS[1:]):
        n = LEVELS[level]
        size = f"{n}->{npoint}"
        cases.append(
            Case("fps", size, 1, lambda x, npoint=npoint: ops.farthest_point_sample(npoint, x), (t[level],),
                 quick=level == 0, evals=batch * n * npoint)
        )
        idx = tf.constant(fps_idx[level])
        cases.append(Case("gather", size, 1, ops.gather_point, (t[level], idx), quick=level == 0))
        cases.append(
            Case("gather_grad", size, 1, grad_of(ops.gather_point), (t[level], idx, normal(npoint, 3)),
                 quick=level == 0, rtol=1e-4, atol=1e-4)
        )

    # Ball queries: layer1 grouping, then the density estimate of the PointConv layers 2-4.
    layer1 = tf.constant(np.concatenate([xyz[0], features], axis=2))  # (batch, 4096, 3 + 6)
    balls = [(0.1, 32, 0, 1, "r=0.1 K=32 1024 in 4096", layer1)] + [
        (radius, 128, level, level, f"r={radius} K=128 {LEVELS[level]} in {LEVELS[level]}", t[level])
        for radius, level in ((0.2, 1), (0.4, 2), (0.8, 3))
    ]
    with ops.use_implementation("reference"):
        group_idx = [ops.query_ball_point(r, k, t[s], t[c])[0] for r, k, s, c, _, _ in balls]
    for (radius, nsample, support, centres, size, points), gidx in zip(balls, group_idx):
        cases.append(
            Case("ball", size, 1,
                 lambda s, c, radius=radius, nsample=nsample: ops.query_ball_point(radius, nsample, s, c),
                 (t[support], t[centres]), quick=support == 0)
        )
        gsize = f"({LEVELS[support]},{points.shape[2]}) K={nsample} x{LEVELS[centres]}"
        cases.append(Case("group", gsize, 1, ops.group_point, (points, gidx), quick=support == 0))
        upstream = normal(*gidx.shape[1:], points.shape[2])
        cases.append(
            Case("group_grad", gsize, 1, grad_of(ops.group_point), (points, gidx, upstream), quick=support == 0,
                 rtol=1e-4, atol=1e-4)
        )

    # kNN: encoder (centres among the layer input, K=32), decoders (level onto itself, K=16, x2).
    knns = [(32, level, level + 1, 1) for level in (1, 2, 3)] + [(16, level, level, 2) for level in (3, 2, 1)]
    for k, support, queries, calls in knns:
        size = f"K={k} {LEVELS[queries]} in {LEVELS[support]}"
        cases.append(
            Case("knn", size, calls, lambda s, q, k=k: ops.knn_point(k, s, q), (t[support], t[queries]),
                 quick=(k, support) == (16, 1), kdtree=(k, xyz[support], xyz[queries]))
        )

    # three_nn + three_interpolate: decoders (x2) and the upsampling to 4096 points.
    interps = [  # (coarse level, fine level, channels, calls)
        (4, 3, 512, 2), (3, 2, 512, 2), (2, 1, 256, 2), (1, 0, 128, 4), (2, 0, 256, 2)
    ]
    for coarse, fine, channels, calls in interps:
        size = f"{LEVELS[coarse]}->{LEVELS[fine]}"
        cases.append(Case("three_nn", size, calls, ops.three_nn, (t[fine], t[coarse]), quick=fine == 0 and coarse == 1))
        with ops.use_implementation("reference"):
            dist, nn_idx = ops.three_nn(t[fine], t[coarse])
        inverse = 1.0 / tf.maximum(dist, 1e-10)
        weight = inverse / tf.reduce_sum(inverse, axis=2, keepdims=True)
        points = normal(LEVELS[coarse], channels)
        isize = f"{size} C={channels}"
        quick = fine == 0 and coarse == 1
        cases.append(Case("interp", isize, calls, ops.three_interpolate, (points, nn_idx, weight), quick=quick,
                          rtol=1e-5, atol=1e-5))
        cases.append(
            Case("interp_grad", isize, calls, grad_of(ops.three_interpolate),
                 (points, nn_idx, weight, normal(LEVELS[fine], channels)), quick=quick, rtol=1e-4, atol=1e-4)
        )
    order = list(OPS)
    return sorted(cases, key=lambda c: order.index(c.op))  # stable: sizes keep their order


# ----------------------------------------------------------------------------- timing


def to_numpy(out):
    if isinstance(out, (tuple, list)):
        return [np.asarray(o) for o in out]
    return [np.asarray(out)]


def agree(a, b, rtol, atol):
    """(equal?, message): integer outputs must be equal, float outputs allclose."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            return False, f"output {i}: shape {x.shape} vs {y.shape}"
        if np.issubdtype(x.dtype, np.integer):
            bad = np.count_nonzero(x != y)
            if bad:
                return False, f"output {i}: {bad} of {x.size} indices differ"
        elif not np.allclose(x, y, rtol=rtol, atol=atol):
            return False, f"output {i}: max abs difference {np.max(np.abs(x - y)):.3g}"
    return True, ""


def make_callables(tf, ops, case, have_custom):
    calls = {}

    def in_impl(name, fn):
        # The implementation is picked when the function is traced: always call inside the block.
        def call():
            with ops.use_implementation(name):
                return fn(*case.args)

        return call

    if have_custom:
        calls["custom"] = in_impl("custom", tf.function(case.fn))
    calls["twin"] = in_impl("reference", tf.function(case.fn))
    if FLAGS.xla:
        calls["twin+XLA"] = in_impl("reference", tf.function(case.fn, jit_compile=True))
    if case.kdtree is not None and FLAGS.kdtree:
        k, support, queries = case.kdtree
        calls["KDTree"] = in_impl("reference", tf.function(lambda s, q: kdtree_knn_op(tf, k, s, q)))
        calls["sklearn"] = lambda: kdtree_knn(k, support, queries)
    return calls


def measure(case, calls, repeats, min_time, log):
    outputs, number, errors = {}, {}, {}
    for name, call in list(calls.items()):
        try:
            start = time.perf_counter()
            outputs[name] = to_numpy(call())  # traces / compiles
            first = time.perf_counter() - start
            start = time.perf_counter()
            call()
            once = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 - report and go on with the other implementations
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            errors[name] = f"{type(error).__name__}: {(lines[-1] if lines else '')[:300]}"
            del calls[name]
            continue
        number[name] = max(1, min(100000, math.ceil(min_time / max(once, 1e-7))))
        log(f"    {name:9s} first call {first * 1e3:9.1f} ms, then {once * 1e3:9.3f} ms; {number[name]} call(s)/rep")
    samples = common.interleaved_samples(calls, number, repeats)
    case.times = {name: statistics.median(s) for name, s in samples.items()}
    case.errors = errors
    for name, message in errors.items():
        case.notes.append(f"{name} failed: {message}")

    # Correctness side by side on the benchmark inputs.
    if "custom" in outputs and "twin" in outputs:
        ok, message = agree(outputs["custom"], outputs["twin"], case.rtol, case.atol)
        case.same["custom_vs_twin"] = ok
        if not ok:
            case.notes.append(f"custom != twin: {message}")
    if "twin+XLA" in outputs and "twin" in outputs:
        ok, message = agree(outputs["twin+XLA"], outputs["twin"], case.rtol, case.atol)
        case.same["xla_vs_twin"] = ok
        if not ok:
            case.notes.append(f"twin+XLA != twin: {message}")
    base = "custom" if "custom" in outputs else "twin"
    for name in ("KDTree", "sklearn"):
        if name in outputs and base in outputs:
            # KDTree distances are float64: compare with a float32-sized tolerance.
            ok, message = agree(outputs[name], outputs[base], 1e-4, 1e-6)
            case.same[f"{name}_vs_{base}"] = ok
            if not ok:
                case.notes.append(f"{name} != {base}: {message}")


# ----------------------------------------------------------------------------- report


def fmt_ms(seconds):
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    if ms < 1:
        return f"{ms:.3f}"
    if ms < 100:
        return f"{ms:.2f}"
    return f"{ms:.1f}"


def fmt_x(ratio):
    return "-" if ratio is None else (f"{ratio:.1f}x" if ratio < 100 else f"{ratio:.0f}x")


def ratio(times, slow, fast="custom"):
    if times.get(slow) is None or times.get(fast) is None:
        return None
    return times[slow] / times[fast]


def target_check(op, times):
    """(text, met?) for the CPU kernel speed targets; met is None where there is none."""
    _, target, vs_kdtree = OPS[op]
    if target is None or times.get("custom") is None:
        return "", None
    got = [ratio(times, "twin")] + ([ratio(times, "KDTree")] if vs_kdtree else [])
    got = [g for g in got if g is not None]
    if not got:
        return "", None
    met = min(got) >= target
    return f">={target:g}x {'ok' if met else 'MISS'}", met


def overhead_bound(case):
    custom = case.times.get("custom")
    return custom is not None and custom < OVERHEAD_BOUND * call_overhead_s * case.calls


def row_for(case, threads, total=False):
    times = case.times
    text, met = target_check(case.op, times)
    bound = overhead_bound(case)
    if text and bound:
        text += "*"
    notes = []
    if case.op == "fps" and times.get("custom") is not None and case.evals:
        ns = times["custom"] * 1e9 / case.evals
        notes.append(f"custom {ns:.3g} ns/eval = {ns * threads:.3g} core-ns/eval")
        if times.get("twin") is not None:
            notes.append(f"twin {times['twin'] * 1e9 / case.evals * threads:.3g} core-ns/eval")
    same = case.same.get("custom_vs_twin")
    row = {
        "op": OPS[case.op][0],
        "key": case.op,
        "call": case.size,
        "per_pass": case.calls,
        "same": "-" if same is None else ("yes" if same else "NO"),
        "ms": {name: (times[name] * 1e3 if name in times else None) for name in IMPLS},
        "x_twin": ratio(times, "twin"),
        "x_xla": ratio(times, "twin+XLA"),
        "x_kdtree": ratio(times, "KDTree"),
        "x_sklearn": ratio(times, "sklearn"),
        "target": text,
        "target_met": met,
        "overhead_bound": bound,
        "notes": notes,
        "problems": [] if total else list(case.notes),
        "total": total,
        "failed": sorted(case.errors),
    }
    if case.op == "fps" and case.evals:
        row["distance_evals"] = case.evals
        if times.get("custom") is not None:
            row["ns_per_eval"] = times["custom"] * 1e9 / case.evals
            row["core_ns_per_eval"] = row["ns_per_eval"] * threads
    return row


def totals(cases, threads):
    """One row per op: the sum over all its calls in one forward pass."""
    rows = []
    for op in OPS:
        mine = [c for c in cases if c.op == op]
        if not mine or op.endswith("_grad"):
            continue
        if FLAGS.quick:
            continue  # --quick has one call per op: no meaningful total
        impls = set.intersection(*(set(c.times) for c in mine))
        summed = Case(op, "", sum(c.calls for c in mine), None, ())
        summed.times = {name: sum(c.times[name] * c.calls for c in mine) for name in impls}
        summed.evals = sum(c.evals * c.calls for c in mine)
        summed.size = f"all {summed.calls} calls of a forward pass"
        same = [c.same.get("custom_vs_twin") for c in mine]
        if all(s is not None for s in same):
            summed.same["custom_vs_twin"] = all(same)
        rows.append(row_for(summed, threads, total=True))
    return rows


def print_table(rows, out):
    headers = ["op", "call", "n/pass", "same", "custom ms", "twin ms", "twin+XLA ms", "KDTree ms", "sklearn ms",
               "x twin", "x XLA", "x KDTree", "x sklearn", "target", "notes"]
    body = []
    for r in rows:
        if r is None:
            body.append(None)
            continue
        ms = r["ms"]
        body.append([
            r["op"], r["call"], str(r["per_pass"]), r["same"],
            *(fmt_ms(None if ms[name] is None else ms[name] / 1e3) if name not in r["failed"] else "err"
              for name in IMPLS),
            fmt_x(r["x_twin"]), fmt_x(r["x_xla"]), fmt_x(r["x_kdtree"]), fmt_x(r["x_sklearn"]),
            r["target"], "; ".join(r["notes"]),
        ])
    widths = [max([len(h)] + [len(b[i]) for b in body if b is not None]) for i, h in enumerate(headers)]
    left = {0, 1, 13, 14}

    def line(cells):
        parts = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    out.write(line(headers) + "\n")
    out.write("  ".join("-" * w for w in widths[:-1]) + "  " + "-" * max(5, min(widths[-1], 40)) + "\n")
    for b in body:
        out.write("\n" if b is None else line(b) + "\n")


def empty_call_overhead(tf, repeats):
    x = tf.zeros([1])
    f = tf.function(lambda v: v + 1.0)
    f(x)
    best = []
    for _ in range(max(3, repeats)):
        start = time.perf_counter()
        for _ in range(200):
            f(x)
        best.append((time.perf_counter() - start) / 200)
    return statistics.median(best)


def main(argv):
    del argv
    started = time.perf_counter()
    repeats = 2 if FLAGS.quick and not FLAGS["repeats"].present else FLAGS.repeats
    min_time = 0.01 if FLAGS.quick and not FLAGS["min_time"].present else FLAGS.min_time
    unknown = set(FLAGS.ops) - set(OPS)
    if unknown:
        raise app.UsageError(f"--ops: unknown {', '.join(sorted(unknown))}; choose from {', '.join(OPS)}")

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    threads = tf.config.threading.get_intra_op_parallelism_threads()

    from jsnet_tf import ops
    from jsnet_tf.ops import library

    problem = library.problem()
    have_custom = problem is None and library.available()
    if not have_custom:
        log(f"WARNING: no custom kernels, timing the twins only: {problem or 'the library does not load'}")

    global call_overhead_s
    with tf.device("/CPU:0"):  # the CPU kernels, also where a GPU is visible
        cases = build_cases(tf, ops, FLAGS.batch)
        if FLAGS.quick:
            cases = [c for c in cases if c.quick]
        if FLAGS.ops:
            cases = [c for c in cases if c.op in FLAGS.ops]

        overhead = call_overhead_s = empty_call_overhead(tf, repeats)
        for i, case in enumerate(cases, 1):
            log(f"[{i}/{len(cases)}] {OPS[case.op][0]} {case.size}  ({time.perf_counter() - started:.0f} s)")
            measure(case, make_callables(tf, ops, case, have_custom), repeats, min_time, log)

    rows = []
    for op in OPS:
        mine = [row_for(c, threads) for c in cases if c.op == op]
        if mine:
            rows.extend(mine + [None])
    total_rows = totals(cases, threads)
    if total_rows:
        rows.extend(total_rows + [None])
    while rows and rows[-1] is None:
        rows.pop()

    build = library.read_build_info() if have_custom else None
    out = sys.stdout
    out.write(
        f"JSNet point ops, batch {FLAGS.batch}, S3DIS sizes; TensorFlow {tf.__version__}, {platform.machine()}, "
        f"os.cpu_count()={os.cpu_count()}, intra-op threads {threads}, all on /CPU:0\n"
        f"median of {repeats} repetitions, each >= {min_time * 1e3:g} ms of back-to-back calls; "
        f"tf.function call overhead (empty function) {overhead * 1e6:.0f} us\n"
        f"custom: {'compiled kernels' if have_custom else 'NOT AVAILABLE (' + str(problem) + ')'}; "
        f"twin: pure-TF reference ops; KDTree: sklearn in tf.py_function (the original's path); "
        f"sklearn: the same without TF\n"
        f"x twin / x XLA / x KDTree / x sklearn: how many times faster custom is; n/pass: calls per forward pass\n\n"
    )
    print_table(rows, out)
    misses = [r for r in rows if r is not None and r["target_met"] is False]
    wrong = [r for r in rows if r is not None and r["same"] == "NO"]
    other = [f"{OPS[c.op][0]} {c.size}: {n}" for c in cases for n in c.notes]
    out.write("\n")
    if wrong:
        out.write("custom DISAGREES with the twin: " + "; ".join(f"{r['op']} {r['call']}" for r in wrong) + "\n")
    if other:
        out.write("disagreements and failures:\n" + "".join(f"  {o}\n" for o in other))
    if have_custom:
        if misses:
            out.write("below target: " + "; ".join(f"{r['op']} {r['call']} ({r['target']})" for r in misses) + "\n")
            if any(r["overhead_bound"] for r in misses):
                out.write(
                    f"  * custom takes less than {OVERHEAD_BOUND:g}x the empty tf.function call overhead "
                    f"({overhead * 1e6:.0f} us per call) there: the row mostly times the call, not the kernel\n"
                )
        else:
            out.write("all speed targets met\n")
    out.write(f"total benchmark time {time.perf_counter() - started:.0f} s\n")
    out.flush()

    if FLAGS.json:
        report = {
            **common.machine(tf),
            "intra_op_threads": threads,
            "batch": FLAGS.batch,
            "repeats": repeats,
            "min_time_s": min_time,
            "quick": FLAGS.quick,
            "empty_tf_function_call_us": overhead * 1e6,
            "custom_available": have_custom,
            "custom_problem": problem,
            "library_build": build,
            "rows": [r for r in rows if r is not None],
        }
        common.write_report(FLAGS.json, report)


if __name__ == "__main__":
    app.run(main)
