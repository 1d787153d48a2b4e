"""Speed of the JSNet point ops against the libraries a user would pick instead, side by side.

    .venv/bin/python benchmarks/peers.py                        # full tables, a few minutes on 2 cores
    .venv/bin/python benchmarks/peers.py --quick                # smoke run: batch 1, small calls, 1 repetition
    .venv/bin/python benchmarks/peers.py --json=/tmp/peers.json # also write the numbers as JSON
    .venv/bin/python benchmarks/peers.py --ops=knn,three_nn     # only some ops

The peers are the `bench` extra of pyproject.toml (`pip install -e .[bench]`: fpsample, open3d-cpu,
pykdtree, faiss-cpu; scipy and scikit-learn come with the package). A peer that does not import is
listed as "not installed" and the rest runs.

Calls: every call of farthest point sampling, ball query, kNN and three_nn that one forward pass of
the network makes, with the inputs of benchmarks/ops.py (`build_cases`: batch 8, 4096 points uniform
in a 1 m cube per block, each coarser level the FPS subset of the previous one).

  * jsnet-tf:  the compiled kernels (`use_implementation("custom")`) inside a traced function, as
    the network calls them (its layers run inside the traced train/predict step, which pays the
    cost of entering a tf.function once per step, not per op): 16 calls one after the other
    (control dependencies, one inter-op thread, all outputs returned) in one tf.function, each
    on its own copy of the inputs so that graph optimisation can neither merge nor prune them;
    the time per call is that function's time / 16. "x" is
    measured on this column. Two more columns: "eager", the op called from Python (what a user
    calling jsnet_tf.ops pays: argument checks and op dispatch every call; "x eager" is the ratio
    on it), and "own tf.function", each call wrapped in its own tf.function call (the entry cost,
    the header's "empty tf.function call", is then paid by every op call).
    Without a built op library the columns time the pure-TF twins instead (the header says so).
  * peers: their Python API on NumPy arrays, per cloud: none of them takes a batch, so each call
    loops over the batch's clouds. The timed call includes what a user has to redo for every
    batch (building the KD-tree, index or point cloud object of each cloud) but not the
    conversion of the results into jsnet-tf's layout (that happens outside the timing, for the
    agreement checks), so the peers are timed at their best.
      FPS:        fpsample `fps_sampling` (vanilla) and `bucket_fps_kdline_sampling` (QuickFPS,
                  bucket height --fps_bucket_height), both from index 0; Open3D
                  `PointCloud.farthest_point_down_sample` (legacy, float64) and its tensor twin
                  `t.geometry.PointCloud.farthest_point_down_sample`, from index 0.
      ball query: Open3D `NearestNeighborSearch.hybrid_search` (the nearest max_knn hits within the
                  radius) and `fixed_radius_search` (all hits, unsorted); scipy `cKDTree
                  .query_ball_point` (all hits, sorted by index).
      kNN, three_nn: pykdtree `KDTree.query`; Open3D `NearestNeighborSearch.knn_search`; scipy
                  `cKDTree.query`; faiss `IndexFlatL2` (exact brute force); scikit-learn `KDTree`
                  (the original JSNet's kNN, float64).
    Threads: TensorFlow intra-op threads, scipy `workers` and faiss OpenMP threads are --threads;
    pykdtree (OpenMP) and Open3D use their defaults (all cores); fpsample is single-threaded.

Timing: each callable runs once (tracing, and its outputs are kept for the checks), then once more
to size a repetition (back-to-back calls for at least --min_time seconds, mean per call); the
callables of one call size are interleaved over --repeats repetitions, in rotated order, and the
tables show the median and the range (min-max) over the repetitions. Each op's title line gives
the time of the op on tiny input (batch 1, 16 points) in a tf.function: the fixed cost of a call
(tf.function dispatch + op launch + thread-pool sharding), which the small calls mostly are; the
empty tf.function's overhead is in the header. "x" is the fastest peer's median over jsnet-tf's;
the target is >= 2x at every size. A callable whose first call takes longer than --slow_call_s is
timed by its second call only, outside the repetitions (its range is that one call).

Agreement with jsnet-tf, on the benchmark inputs, where the semantics agree:
  * FPS: the same index sequence (vanilla, bucket) or the same index set (Open3D returns the
    points in input order). A first difference at a step where the two picks are equally far
    from the points chosen so far (to float32 rounding) is a tie: reported, not a disagreement,
    and the sequences are not compared past it. A peer that starts elsewhere although asked for
    index 0 (fpsample 1.0.2's bucket variants do) is not comparable ("-"): its sequence is checked
    to be a valid farthest-point sequence from its own start instead.
  * ball query: jsnet-tf keeps the first nsample hits in index order (squared distance < r^2).
    For the all-hit peers the same first nsample, for Open3D hybrid (the nearest max_knn) the
    same set at centres with at most nsample hits (the others are counted, not compared). Centres
    with a point within float32 rounding of the sphere are skipped (counted).
  * kNN, three_nn: squared distances equal to float32 rounding (sorted), and the same index sets
    per query except where the differing neighbours are ties (the same float64 distances).
The table marks each peer yes / NO / - (failed or nothing comparable); details follow the tables.
"""

import dataclasses
import inspect
import math
import os
import pathlib
import statistics
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402  (benchmarks/common.py)
import numpy as np  # noqa: E402
import ops as op_benchmark  # noqa: E402  (benchmarks/ops.py: the inputs and call sizes; defines its flags)
from absl import app, flags  # noqa: E402
from common import log  # noqa: E402

FLAGS = flags.FLAGS
# benchmarks/ops.py defines flags of the same names at import: these replace them, with this script's help.
flags.DEFINE_integer("repeats", 5, "timed repetitions per callable and call size; median and range reported",
                     allow_override=True)
flags.DEFINE_bool("quick", False, "smoke run: batch 1, the smallest call of each op and the layer1 ball query, "
                  "1 repetition of one call",
                  allow_override=True)
flags.DEFINE_float("min_time", 0.05, "seconds each timed repetition runs at least (back-to-back calls, mean per call)",
                   allow_override=True)
flags.DEFINE_string("json", None, "also write all numbers to this JSON file", allow_override=True)
flags.DEFINE_list("ops", [], "only these ops (default all): fps, ball, knn, three_nn", allow_override=True)
flags.DEFINE_integer("threads", os.cpu_count(),
                     "TensorFlow intra-op threads, scipy workers and faiss OpenMP threads; default os.cpu_count()",
                     allow_override=True)
flags.DEFINE_integer("batch", 8, "clouds per call (S3DIS training uses 8; --quick: 1 unless given)",
                     allow_override=True)
flags.DEFINE_float("slow_call_s", 5.0,
                   "a callable whose first call takes longer than this (seconds) is timed by one more call instead of "
                   "--repeats repetitions (Open3D's tensor FPS takes tens of seconds per batch); its range is that call")
flags.DEFINE_integer("fps_bucket_height", 5,
                     "KD-tree height h of fpsample's bucket_fps_kdline_sampling (buckets of 2**h points; capped "
                     "at log2 of the cloud size)")

OPS = {"fps": "FPS", "ball": "ball query", "knn": "kNN", "three_nn": "three_nn"}
TARGET = 2.0  # jsnet-tf should be this many times faster than the fastest peer, at every size
TIE_RTOL = 1e-5  # float32 rounding of squared distances, relative
DIST_ATOL = 1e-6  # ... and absolute, for distances near 0 (faiss computes |x|^2 + |y|^2 - 2xy)
TIE_ATOL = 1e-12  # two float64 squared distances closer than TIE_RTOL (relative) or this are a tie
JSNET, OWN_FUNCTION, EAGER = "jsnet-tf", "own tf.function", "eager"
IN_GRAPH_CALLS = 16  # op calls per timed tf.function call of the in-graph measurement


# ----------------------------------------------------------------------------- the calls


@dataclasses.dataclass
class Call:
    """One op call of the network, as NumPy inputs for the peers and the tf case for jsnet-tf."""

    op: str  # key of OPS
    size: str
    case: object  # benchmarks/ops.py Case
    arrays: dict  # numpy inputs: xyz (fps); support, queries (ball: queries are the centres; knn; three_nn)
    params: dict  # npoint (fps); radius, nsample (ball); k (knn, three_nn)
    ours: list = None  # jsnet-tf's outputs, numpy
    samples: dict = dataclasses.field(default_factory=dict)  # callable -> seconds per call, per repetition
    peers: dict = dataclasses.field(default_factory=dict)  # peer -> result dict (status, agrees, note)


def op_calls(cases):
    """The FPS, ball query, kNN and three_nn cases of benchmarks/ops.py, with their NumPy inputs."""
    calls = []
    for case in cases:
        if case.op not in OPS:
            continue
        # The call parameters are the keyword defaults of the case's function (npoint, radius, nsample, k).
        params = {name: p.default for name, p in inspect.signature(case.fn).parameters.items()
                  if p.default is not inspect.Parameter.empty}
        args = [np.asarray(a) for a in case.args]
        if case.op == "fps":
            arrays = {"xyz": args[0]}
        elif case.op == "three_nn":  # three_nn(xyz1 queries, xyz2 candidates)
            arrays = {"queries": args[0], "support": args[1]}
            params = {"k": 3}
        else:  # query_ball_point(..., xyz, new_xyz), knn_point(k, xyz, new_xyz)
            arrays = {"support": args[0], "queries": args[1]}
        calls.append(Call(case.op, case.size, case, arrays, params))
    return calls


def quick_calls(calls):
    """--quick: per op the call with the fewest points, and the layer1 ball query (the one where nsample truncates)."""
    def points(call):
        return sum(a.shape[1] for a in call.arrays.values())

    smallest = {}
    for call in calls:
        if call.op not in smallest or points(call) < points(smallest[call.op]):
            smallest[call.op] = call
    return [c for c in calls if c is smallest[c.op] or (c.op == "ball" and c.case.quick)]


# ----------------------------------------------------------------------------- the peers


@dataclasses.dataclass
class Peer:
    name: str
    module: str  # what has to import
    op: str
    make: object  # make(lib, call, threads) -> a no-argument callable running the library on call's inputs
    result: object  # result(raw output) -> the output in the form the op's agreement check takes


def fpsample_vanilla(lib, call, threads):
    xyz, npoint = call.arrays["xyz"], call.params["npoint"]
    return lambda: [lib.fps_sampling(cloud, npoint, start_idx=0) for cloud in xyz]


def bucket_height(points):
    return max(1, min(FLAGS.fps_bucket_height, int(math.log2(points))))


def fpsample_bucket(lib, call, threads):
    xyz, npoint = call.arrays["xyz"], call.params["npoint"]
    h = bucket_height(xyz.shape[1])
    return lambda: [lib.bucket_fps_kdline_sampling(cloud, npoint, h, start_idx=0) for cloud in xyz]


def open3d_fps(lib, call, threads):
    xyz, npoint = call.arrays["xyz"], call.params["npoint"]
    clouds = xyz.astype(np.float64)  # the legacy point cloud stores float64; its vector copies them anyway

    def run():
        return [np.asarray(lib.geometry.PointCloud(lib.utility.Vector3dVector(cloud))
                           .farthest_point_down_sample(npoint, 0).points) for cloud in clouds]

    return run


def open3d_tensor_fps(lib, call, threads):
    xyz, npoint = call.arrays["xyz"], call.params["npoint"]

    def run():
        return [lib.t.geometry.PointCloud(lib.core.Tensor.from_numpy(cloud))
                .farthest_point_down_sample(npoint, 0).point.positions.numpy() for cloud in xyz]

    return run


def ordered(raw):
    return "sequence", np.stack([np.asarray(r, np.int64) for r in raw])


def points_to_indices(xyz):
    """result() for peers that return the sampled points: their indices in xyz, as a set per cloud."""

    def result(raw):
        sets = []
        for cloud, picked in zip(xyz, raw):
            where = {point.tobytes(): i for i, point in enumerate(cloud)}
            sets.append(sorted(where[p.tobytes()] for p in np.asarray(picked, np.float32)))
        return "set", np.asarray(sets, np.int64)

    return result


def open3d_nns(lib, support):
    return lib.core.nns.NearestNeighborSearch(lib.core.Tensor.from_numpy(support))


def open3d_hybrid(lib, call, threads):
    support, queries = call.arrays["support"], call.arrays["queries"]
    radius, nsample = call.params["radius"], call.params["nsample"]

    def run():
        out = []
        for s, q in zip(support, queries):
            nns = open3d_nns(lib, s)
            nns.hybrid_index(radius)
            idx, _, counts = nns.hybrid_search(lib.core.Tensor.from_numpy(q), radius, nsample)
            out.append((idx.numpy(), counts.numpy()))
        return out

    return run


def hybrid_result(raw):
    return "nearest", [[row[:count] for row, count in zip(idx, counts)] for idx, counts in raw]


def open3d_radius(lib, call, threads):
    support, queries, radius = call.arrays["support"], call.arrays["queries"], call.params["radius"]

    def run():
        out = []
        for s, q in zip(support, queries):
            nns = open3d_nns(lib, s)
            nns.fixed_radius_index(radius)
            idx, _, splits = nns.fixed_radius_search(lib.core.Tensor.from_numpy(q), radius, sort=False)
            out.append((idx.numpy(), splits.numpy()))
        return out

    return run


def radius_result(raw):
    return "all", [[idx[a:b] for a, b in zip(splits[:-1], splits[1:])] for idx, splits in raw]


def scipy_ball(lib, call, threads):
    support, queries, radius = call.arrays["support"], call.arrays["queries"], call.params["radius"]
    return lambda: [lib.cKDTree(s).query_ball_point(q, radius, workers=threads, return_sorted=True)
                    for s, q in zip(support, queries)]


def ball_lists(raw):
    return "all", [list(per_cloud) for per_cloud in raw]


def knn_loop(search):
    """make() for a per-cloud kNN: search(lib, support, queries, k, threads) -> (dist, idx) of one cloud."""

    def make(lib, call, threads):
        support, queries, k = call.arrays["support"], call.arrays["queries"], call.params["k"]
        return lambda: [search(lib, s, q, k, threads) for s, q in zip(support, queries)]

    return make


def pykdtree_search(lib, s, q, k, threads):
    return lib.KDTree(s).query(q, k=k, sqr_dists=True)


def open3d_search(lib, s, q, k, threads):
    nns = open3d_nns(lib, s)
    nns.knn_index()
    idx, dist = nns.knn_search(lib.core.Tensor.from_numpy(q), k)
    return dist.numpy(), idx.numpy()


def scipy_search(lib, s, q, k, threads):
    return lib.cKDTree(s).query(q, k=k, workers=threads)


def faiss_search(lib, s, q, k, threads):
    lib.omp_set_num_threads(threads)
    index = lib.IndexFlatL2(s.shape[1])
    index.add(s)
    return index.search(q, k)


def sklearn_knn(lib, call, threads):
    # The original's kNN as benchmarks/ops.py times it (a KDTree per cloud, leaf_size 30, float64).
    k, support, queries = call.params["k"], call.arrays["support"], call.arrays["queries"]
    return lambda: op_benchmark.kdtree_knn(k, support, queries)


def squared_neighbours(raw):
    dist = np.stack([np.asarray(d, np.float64).reshape(len(d), -1) for d, _ in raw])
    return dist, np.stack([np.asarray(i, np.int64).reshape(len(i), -1) for _, i in raw])


def euclidean_neighbours(raw):
    dist, idx = squared_neighbours(raw)
    return np.square(dist), idx


def sklearn_neighbours(raw):
    dist, idx = raw  # already squared, batched
    return np.asarray(dist, np.float64), np.asarray(idx, np.int64)


def neighbour_peers(op):
    return [
        Peer("pykdtree", "pykdtree.kdtree", op, knn_loop(pykdtree_search), squared_neighbours),
        Peer("Open3D", "open3d", op, knn_loop(open3d_search), squared_neighbours),
        Peer("scipy cKDTree", "scipy.spatial", op, knn_loop(scipy_search), euclidean_neighbours),
        Peer("faiss flat", "faiss", op, knn_loop(faiss_search), squared_neighbours),
        Peer("sklearn KDTree", "sklearn.neighbors", op, sklearn_knn, sklearn_neighbours),
    ]


def all_peers():
    return [
        Peer("fpsample", "fpsample", "fps", fpsample_vanilla, ordered),
        Peer("fpsample bucket", "fpsample", "fps", fpsample_bucket, ordered),
        Peer("Open3D", "open3d", "fps", open3d_fps, None),  # result: points_to_indices(the call's xyz)
        Peer("Open3D tensor", "open3d", "fps", open3d_tensor_fps, None),
        Peer("Open3D hybrid", "open3d", "ball", open3d_hybrid, hybrid_result),
        Peer("Open3D radius", "open3d", "ball", open3d_radius, radius_result),
        Peer("scipy cKDTree", "scipy.spatial", "ball", scipy_ball, ball_lists),
        *neighbour_peers("knn"),
        *neighbour_peers("three_nn"),
    ]


def import_peer(module):
    """(the imported module, None) or (None, why not): a missing peer is reported, never raised."""
    import importlib

    try:
        return importlib.import_module(module), None
    except ImportError as error:  # also a missing shared library of the wheel (open3d: libusb-1.0)
        return None, f"not installed ({type(error).__name__}: {str(error).splitlines()[0][:160]})"
    except OSError as error:
        return None, f"not installed (OSError: {str(error).splitlines()[0][:160]})"


# ----------------------------------------------------------------------------- agreement


def squared_distances(points, queries):
    """float64 (M, N) squared distances of queries (M, 3) to points (N, 3)."""
    p, q = points.astype(np.float64), queries.astype(np.float64)
    return np.maximum((q * q).sum(1)[:, None] + (p * p).sum(1)[None, :] - 2.0 * q @ p.T, 0.0)


def close(a, b):
    return abs(a - b) <= TIE_RTOL * max(abs(a), abs(b)) + TIE_ATOL


def farthest_violation(xyz, sequence):
    """The first step of `sequence` that is not a farthest point from the points before it (ties allowed), or None."""
    points = xyz.astype(np.float64)
    nearest = np.full(len(points), np.inf)
    for step in range(1, len(sequence)):
        nearest = np.minimum(nearest, np.square(points - points[sequence[step - 1]]).sum(axis=1))
        if not close(nearest[sequence[step]], nearest.max()):
            return step
    return None


def fps_agreement(call, ours, peer_out):
    """FPS: the same sequence (or set) of indices, up to a tie at the first difference."""
    kind, theirs = peer_out
    (mine,) = ours
    if kind == "set":
        bad = int(np.count_nonzero((np.sort(mine, axis=1) != theirs).any(axis=1)))
        return bad == 0, "" if bad == 0 else f"{bad} of {len(mine)} clouds pick other point sets"
    if (theirs[:, 0] != 0).any():  # another start point: another sequence, only checked to be a valid FPS
        starts = theirs[:, 0] != 0
        invalid = [b for b, (xyz, t) in enumerate(zip(call.arrays["xyz"], theirs)) if farthest_violation(xyz, t)]
        return None, (f"start_idx=0 not honoured: {np.count_nonzero(starts)} of {len(mine)} clouds start at another "
                      f"point (cloud 0: {theirs[0, 0]}); " + (f"NOT a farthest-point sequence in {len(invalid)} clouds"
                      if invalid else "each a valid farthest-point sequence from its own start"))
    ties, wrong = [], []
    for b, (xyz, a, t) in enumerate(zip(call.arrays["xyz"], mine, theirs)):
        differ = np.flatnonzero(a != t)
        if not differ.size:
            continue
        step = int(differ[0])
        # Squared distance of each point to the nearest of the points chosen before the step.
        nearest = squared_distances(xyz[a[:step]], xyz).min(axis=1)
        (ties if close(nearest[a[step]], nearest[t[step]]) else wrong).append((b, step))
    if wrong:
        return False, f"{len(wrong)} of {len(mine)} clouds diverge without a tie (cloud {wrong[0][0]} at step " \
                      f"{wrong[0][1]})"
    if ties:
        return True, f"{len(ties)} of {len(mine)} clouds diverge at a tie (first at step {min(s for _, s in ties)}; " \
                     "not compared past it)"
    return True, ""


def ball_agreement(call, ours, peer_out):
    """Ball query: the first nsample hits in index order (all-hit peers), or the same set (hybrid, few hits)."""
    kind, theirs = peer_out
    idx, count = ours
    radius, nsample = call.params["radius"], call.params["nsample"]
    r2 = radius * radius
    border = crowded = compared = 0
    wrong = []
    for b, (support, queries) in enumerate(zip(call.arrays["support"], call.arrays["queries"])):
        d2 = squared_distances(support, queries)
        near_sphere = (np.abs(d2 - r2) <= TIE_RTOL * r2).any(axis=1)
        hits = (d2 < r2).sum(axis=1)
        for m in range(len(queries)):
            if near_sphere[m]:
                border += 1
                continue
            mine = idx[b, m, : count[b, m]]
            found = np.asarray(theirs[b][m], np.int64)
            if kind == "all":
                same = np.array_equal(mine, np.sort(found)[:nsample])
            elif hits[m] > nsample:  # hybrid keeps the nearest max_knn: another selection rule
                crowded += 1
                continue
            else:
                same = np.array_equal(mine, np.sort(found))
            compared += 1
            if not same:
                wrong.append((b, m))
    notes = [f"{compared} centres compared"]
    if border:
        notes.append(f"{border} skipped (a point on the sphere to float32 rounding)")
    if crowded:
        notes.append(f"{crowded} not compared (more than {nsample} hits: nearest {nsample} vs first {nsample} by index)")
    if wrong:
        notes.append(f"{len(wrong)} DIFFER (first: cloud {wrong[0][0]} centre {wrong[0][1]})")
    return (not wrong) if compared else None, "; ".join(notes)


def neighbour_agreement(call, ours, peer_out):
    """kNN / three_nn: distances to float32 rounding; index sets equal except at ties."""
    dist, idx = ours
    their_dist, their_idx = peer_out
    their_dist = np.sort(their_dist, axis=2)
    if their_dist.shape != dist.shape:
        return False, f"shape {their_dist.shape} vs {dist.shape}"
    far = ~np.isclose(their_dist, dist, rtol=TIE_RTOL, atol=DIST_ATOL)
    if far.any():
        worst = np.max(np.abs(their_dist - dist))
        return False, f"{np.count_nonzero(far.any(axis=2))} queries with other distances (max difference {worst:.3g})"
    mine_sets, their_sets = np.sort(idx, axis=2), np.sort(their_idx, axis=2)
    ties = wrong = 0
    for b, m in zip(*np.nonzero((mine_sets != their_sets).any(axis=2))):
        support, query = call.arrays["support"][b], call.arrays["queries"][b, m][None]
        exact = squared_distances(support, query)[0]
        a, t = np.sort(exact[mine_sets[b, m]]), np.sort(exact[their_sets[b, m]])
        if all(close(x, y) for x, y in zip(a, t)):
            ties += 1
        else:
            wrong += 1
    if wrong:
        return False, f"{wrong} queries with other neighbours"
    return True, f"{ties} queries with another neighbour at a tie" if ties else ""


AGREEMENT = {"fps": fps_agreement, "ball": ball_agreement, "knn": neighbour_agreement, "three_nn": neighbour_agreement}


# ----------------------------------------------------------------------------- timing


def describe(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {(lines[-1] if lines else '')[:300]}"


def time_interleaved(calls, repeats, min_time, slow_call_s=math.inf):
    """(outputs of the first calls, seconds per call of each repetition, errors) of no-argument callables.

    The first call traces (tf.function) and its outputs are kept; a second one sizes the repetitions, or is
    the only sample of a callable whose first call took more than slow_call_s.
    """
    outputs, number, errors, samples = {}, {}, {}, {}
    for name, call in calls.items():
        try:
            start = time.perf_counter()
            outputs[name] = call()
            first = time.perf_counter() - start
            start = time.perf_counter()
            call()
            once = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 - report it and time the others
            errors[name] = describe(error)
            continue
        if first > slow_call_s:  # hopelessly slow: its second call is its one sample, not repeated
            samples[name] = [once]
            continue
        number[name] = max(1, min(100000, math.ceil(min_time / max(once, 1e-7))))
    samples.update(common.interleaved_samples(calls, number, repeats))
    return outputs, samples, errors


def tiny_call_overhead(tf, ops, op, repeats, min_time):
    """Seconds per call of the op on tiny input (batch 1, 16 points) in a tf.function: the fixed cost of a call."""
    rng = np.random.default_rng(1)
    points = tf.constant(rng.random((1, 16, 3), dtype=np.float32))
    few = points[:, :4]
    fn, args = {
        "fps": (lambda x: ops.farthest_point_sample(4, x), (points,)),
        "ball": (lambda s, c: ops.query_ball_point(0.1, 4, s, c), (points, few)),
        "knn": (lambda s, q: ops.knn_point(4, s, q), (points, points)),
        "three_nn": (ops.three_nn, (points, few)),
    }[op]
    traced = tf.function(fn)
    _, samples, errors = time_interleaved({op: lambda: traced(*args)}, repeats, min_time)
    if op in errors:
        log(f"{OPS[op]} on tiny input failed: {errors[op]}")
        return None
    return statistics.median(samples[op])


def in_graph_call(tf, fn, args):
    """A no-argument callable running `fn` IN_GRAPH_CALLS times, one after the other, inside one
    tf.function, each on its own copy of `args` (so that graph optimisation cannot merge the calls);
    returns the last call's outputs. Its time / IN_GRAPH_CALLS is the op's cost inside a traced step."""
    copies = [tuple(tf.identity(a) for a in args) for _ in range(IN_GRAPH_CALLS)]

    @tf.function
    def chained(copies):
        outputs = []
        for arguments in copies:
            with tf.control_dependencies(tf.nest.flatten(outputs[-1:])):
                outputs.append(fn(*arguments))
        return outputs  # all of them: graph optimisation prunes calls whose outputs go nowhere

    return lambda: chained(copies)[-1]


def ms_stats(samples):
    if not samples:
        return None
    return {"median": statistics.median(samples) * 1e3, "min": min(samples) * 1e3, "max": max(samples) * 1e3}


def run_call(tf, ops, call, peers, impl, threads, repeats, min_time):
    """Times jsnet-tf and the peers on one call and checks the peers' outputs against jsnet-tf's."""

    def in_impl(fn):
        def run():  # the implementation is picked when the op is called (traced): call inside the block
            with ops.use_implementation(impl):
                return fn(*call.case.args)  # eager tensors: computed when returned

        return run

    chained = in_graph_call(tf, call.case.fn, call.case.args)

    def in_graph():
        with ops.use_implementation(impl):
            return chained()

    callables = {JSNET: in_graph, OWN_FUNCTION: in_impl(tf.function(call.case.fn)), EAGER: in_impl(call.case.fn)}
    results = {}
    for peer, (lib, why_not) in peers:
        if lib is None:
            results[peer.name] = {"status": why_not, "agrees": None, "note": ""}
            continue
        try:
            callables[peer.name] = peer.make(lib, call, threads)
        except Exception as error:  # noqa: BLE001
            results[peer.name] = {"status": f"failed ({describe(error)})", "agrees": None, "note": ""}
    outputs, call.samples, errors = time_interleaved(callables, repeats, min_time, FLAGS.slow_call_s)
    if JSNET in call.samples:  # one call of `in_graph` is IN_GRAPH_CALLS op calls
        call.samples[JSNET] = [s / IN_GRAPH_CALLS for s in call.samples[JSNET]]
    if JSNET not in outputs:
        raise RuntimeError(f"{OPS[call.op]} {call.size}: jsnet-tf failed: {errors.get(JSNET)}")
    call.ours = op_benchmark.to_numpy(outputs[JSNET])
    for peer, (lib, _) in peers:
        if lib is None or peer.name in results:
            continue
        if peer.name in errors:
            results[peer.name] = {"status": f"failed ({errors[peer.name]})", "agrees": None, "note": ""}
            continue
        try:
            convert = peer.result or points_to_indices(call.arrays["xyz"])
            agrees, note = AGREEMENT[call.op](call, call.ours, convert(outputs[peer.name]))
        except Exception as error:  # noqa: BLE001 - an unexpected output layout is a finding, not a crash
            agrees, note = False, f"could not compare: {describe(error)}"
        results[peer.name] = {"status": "ok", "agrees": agrees, "note": note}
    call.peers = results


# ----------------------------------------------------------------------------- report


def fastest(call):
    timed = {name: statistics.median(s) for name, s in call.samples.items() if name not in (JSNET, OWN_FUNCTION, EAGER)}
    if not timed:
        return None, None
    name = min(timed, key=timed.get)
    return name, timed[name]


def row_for(call, tiny):
    ours = statistics.median(call.samples[JSNET])
    best, best_s = fastest(call)
    ratio = None if best is None else best_s / ours
    peers = {}
    for name, result in call.peers.items():
        peers[name] = {**result, "ms": ms_stats(call.samples.get(name))}
    return {
        "op": OPS[call.op],
        "key": call.op,
        "call": call.size,
        "params": call.params,
        "jsnet_ms": ms_stats(call.samples[JSNET]),
        "eager_ms": ms_stats(call.samples.get(EAGER)),
        "own_function_ms": ms_stats(call.samples.get(OWN_FUNCTION)),
        "x_fastest_eager": None if best is None or not call.samples.get(EAGER) else best_s / statistics.median(call.samples[EAGER]),
        "tiny_call_ms": None if tiny is None else tiny * 1e3,
        "peers": peers,
        "fastest_peer": best,
        "x_fastest": ratio,
        "target_met": None if ratio is None else ratio >= TARGET,
    }


def fmt_range(stats):
    if stats is None:
        return "-"
    ms = op_benchmark.fmt_ms
    return f"{ms(stats['median'] / 1e3)} ({ms(stats['min'] / 1e3)}-{ms(stats['max'] / 1e3)})"


def agreement_mark(result):
    if result["status"] != "ok":
        return "-"
    return {True: "yes", False: "NO", None: "-"}[result["agrees"]]


def print_op_table(rows, out):
    """One table per op: its peers are the columns."""
    names = list(rows[0]["peers"])
    headers = ["call", "jsnet-tf ms", "eager ms", "own tf.function ms", *[f"{n} ms" for n in names], "fastest peer", "x",
               "target", "x eager", "agrees: " + ", ".join(names)]
    body = []
    for r in rows:
        cells = [r["call"], fmt_range(r["jsnet_ms"])]
        for key in ("eager_ms", "own_function_ms"):
            cells.append("failed" if r[key] is None else op_benchmark.fmt_ms(r[key]["median"] / 1e3))
        for n in names:
            p = r["peers"][n]
            cells.append(fmt_range(p["ms"]) if p["status"] == "ok" else
                         ("not installed" if p["status"].startswith("not installed") else "failed"))
        met = r["target_met"]
        cells += [r["fastest_peer"] or "-", op_benchmark.fmt_x(r["x_fastest"]),
                  "-" if met is None else ("ok" if met else "MISS"), op_benchmark.fmt_x(r["x_fastest_eager"]),
                  " ".join(agreement_mark(r["peers"][n]) for n in names)]
        body.append(cells)
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(headers)]
    left = {0, len(headers) - 5, len(headers) - 1}

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out.write(line(headers) + "\n" + "  ".join("-" * w for w in widths) + "\n")
    for b in body:
        out.write(line(b) + "\n")


def main(argv):
    del argv
    started = time.perf_counter()
    quick = FLAGS.quick
    repeats = 1 if quick and not FLAGS["repeats"].present else FLAGS.repeats
    min_time = 0.0 if quick and not FLAGS["min_time"].present else FLAGS.min_time
    batch = 1 if quick and not FLAGS["batch"].present else FLAGS.batch
    unknown = set(FLAGS.ops) - set(OPS)
    if unknown:
        raise app.UsageError(f"--ops: unknown {', '.join(sorted(unknown))}; choose from {', '.join(OPS)}")
    if repeats < 1 or batch < 1 or FLAGS.threads < 1 or FLAGS.fps_bucket_height < 1:
        raise app.UsageError("--repeats, --batch, --threads and --fps_bucket_height must be >= 1")

    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)  # a graph's independent ops one at a time
    except RuntimeError:  # TensorFlow already running in this process (tests): keep its setting
        log("TensorFlow is already initialised: keeping its intra-op thread count")
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()

    from jsnet_tf import ops
    from jsnet_tf.ops import library

    problem = library.problem()
    impl = "custom" if problem is None and library.available() else "reference"
    if impl != "custom":
        log(f"WARNING: no compiled kernels, jsnet-tf is timed with the pure-TF twins: {problem or 'the library does not load'}")

    chosen = [op for op in OPS if not FLAGS.ops or op in FLAGS.ops]
    imported = {}
    peers = []
    for peer in all_peers():
        if peer.op in chosen:
            if peer.module not in imported:
                imported[peer.module] = import_peer(peer.module)
            peers.append((peer, imported[peer.module]))
    for module, (_, why_not) in imported.items():
        if why_not:
            log(f"{module}: {why_not}")

    with tf.device("/CPU:0"):  # the CPU kernels, also where a GPU is visible
        cases = op_benchmark.build_cases(tf, ops, batch)
        calls = [c for c in op_calls(cases) if c.op in chosen]
        if quick:
            calls = quick_calls(calls)
        overhead = op_benchmark.empty_call_overhead(tf, repeats)
        with ops.use_implementation(impl):
            tiny = {op: tiny_call_overhead(tf, ops, op, repeats, min_time) for op in chosen}
        for i, call in enumerate(calls, 1):
            log(f"[{i}/{len(calls)}] {OPS[call.op]} {call.size}  ({time.perf_counter() - started:.0f} s)")
            run_call(tf, ops, call, [p for p in peers if p[0].op == call.op], impl, threads, repeats, min_time)

    rows = [row_for(c, tiny[c.op]) for c in calls]
    out = sys.stdout
    out.write(
        f"JSNet point ops vs peer libraries, batch {batch}, S3DIS-like blocks (benchmarks/ops.py inputs); "
        f"TensorFlow {tf.__version__}, os.cpu_count()={os.cpu_count()}, threads {threads}, all on /CPU:0\n"
        f"jsnet-tf: {'compiled kernels' if impl == 'custom' else 'PURE-TF TWINS (' + str(problem) + ')'} "
        f"inside a traced function as the network calls them ({IN_GRAPH_CALLS} calls in one tf.function, time / "
        f"{IN_GRAPH_CALLS}; eager: called from Python; own tf.function: each call its own tf.function call); "
        f"peers: their NumPy API looped over the {batch} cloud(s)\n"
        f"median (min-max) ms over {repeats} interleaved repetition(s), each >= {min_time * 1e3:g} ms of back-to-back "
        f"calls; empty tf.function call {overhead * 1e6:.0f} us; x = fastest peer / jsnet-tf, target >= {TARGET:g}x\n"
    )
    for op in chosen:
        mine = [r for r in rows if r["key"] == op]
        if not mine:
            continue
        t = tiny[op]
        height = f"; fpsample bucket h={FLAGS.fps_bucket_height} (capped at log2 N)" if op == "fps" else ""
        out.write(f"\n{OPS[op]}: tiny call (batch 1, 16 points) {'-' if t is None else op_benchmark.fmt_ms(t)} ms"
                  f"{height}\n")
        print_op_table(mine, out)
    notes = [f"{r['op']} {r['call']}: {name}: {p['status'] if p['status'] != 'ok' else p['note']}"
             for r in rows for name, p in r["peers"].items() if p["note"] or p["status"] != "ok"]
    if notes:
        out.write("\nnotes:\n" + "".join(f"  {n}\n" for n in notes))
    disagree = [f"{r['op']} {r['call']} {name}" for r in rows for name, p in r["peers"].items() if p["agrees"] is False]
    out.write("\n" + ("DISAGREE: " + "; ".join(disagree) if disagree else "every compared peer agrees") + "\n")
    misses = [r for r in rows if r["target_met"] is False]
    if misses:
        out.write(f"below target (>= {TARGET:g}x the fastest peer): "
                  + "; ".join(f"{r['op']} {r['call']} ({op_benchmark.fmt_x(r['x_fastest'])} vs {r['fastest_peer']})"
                              for r in misses) + "\n")
    elif rows:
        out.write(f"every call >= {TARGET:g}x the fastest peer\n")
    out.write(f"total benchmark time {time.perf_counter() - started:.0f} s\n")
    out.flush()

    if FLAGS.json:
        common.write_report(FLAGS.json, {
            **common.machine(tf),
            "intra_op_threads": threads,
            "batch": batch,
            "repeats": repeats,
            "min_time_s": min_time,
            "quick": quick,
            "jsnet_implementation": impl,
            "library_problem": problem,
            "empty_tf_function_call_us": overhead * 1e6,
            "fps_bucket_height": FLAGS.fps_bucket_height,
            "peer_modules": {m: (why or "ok") for m, (_, why) in imported.items()},
            "target_x": TARGET,
            "rows": rows,
        })


if __name__ == "__main__":
    app.run(main)
