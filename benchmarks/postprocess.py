"""Speed of JSNet's instance post-processing: the native extension vs the original's way.

    .venv/bin/python benchmarks/postprocess.py                        # 72-block room, ~1 min on 2 cores
    .venv/bin/python benchmarks/postprocess.py --quick                # 9 small blocks, ~5 s
    .venv/bin/python benchmarks/postprocess.py --json=/tmp/post.json  # also write the numbers as JSON

(build the extension first: `.venv/bin/python -m jsnet_tf.clustering.build`.)

Input: a synthetic room (tests/clustering/rooms.py) of 8 x 9 = 72 blocks of 1 m x 1 m at stride
0.5 m (neighbouring blocks overlap, like the S3DIS test blocks), 5250 points each (~378k points),
9-35 instances per block, with network outputs that look trained: per block and instance a 5-d
embedding centre, centres >= 1.5 apart (delta_d), points within 0.5 of theirs (delta_v), 1% noise
points; predicted classes right but for 3% flips.

Sections (each a function that returns a `Section`; they run in order and share `context`):
  * mean-shift, per block: `mean_shift` + `cluster_classes` (native) vs sklearn's
    MeanShift(bandwidth=0.6, bin_seeding=True) + scipy.stats.mode per cluster (the original's
    `cluster`); both on every block, side by side; labels compared (adjusted Rand index, and the
    share of blocks whose labels are identical).
  * BlockMerging, per block: `RoomMerger.merge` vs the plain reference port
    (tests/clustering/reference.py), both streaming all blocks with the sklearn labels; the
    outputs must be identical.
  * room: `postprocess_room` end to end (1 thread, and one thread per CPU) vs the original's way,
    whose time is the sum of its stages measured above (sklearn clustering, reference merging) and
    of its final assignment and filtering loops, timed here; the instance labels are compared.
    Target: the native room >= 20x the original's and under 1 s.
  * metrics of the room's labels: jsnet_tf.metrics.Evaluator from arrays (what evaluate.py
    does) and evaluate_filelist on the written txt files vs the original evaluator
    (tests/metrics_reference.py: np.loadtxt and its Python loops), the seven numbers compared.
    Target: >= 50x the original evaluator.
Native rows are the median of --repeats runs; the original's stages run once (they take seconds).
"""

import dataclasses
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import common  # noqa: E402  (benchmarks/common.py)
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import sklearn  # noqa: E402
from absl import app, flags  # noqa: E402
from common import log  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from jsnet_tf import clustering, metrics  # noqa: E402
from tests import metrics_reference  # noqa: E402
from tests.clustering import reference  # noqa: E402
from tests.clustering.rooms import make_room  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "smoke run: a 3 x 3-block room of 2048 points per block, 2 repetitions")
flags.DEFINE_integer("repeats", 5, "timed repetitions of the native rows; the median is reported")
flags.DEFINE_integer("seed", 0, "seed of the synthetic room")
flags.DEFINE_float("bandwidth", 0.6, "mean-shift bandwidth")
flags.DEFINE_string("json", None, "also write all numbers to this JSON file")

TARGET_SPEEDUP = 20.0
TARGET_SECONDS = 1.0


@dataclasses.dataclass
class Section:
    """One table of the report: rows of cells under headers, then free-form notes."""

    title: str
    headers: list
    rows: list
    notes: list = dataclasses.field(default_factory=list)
    numbers: dict = dataclasses.field(default_factory=dict)  # for the JSON report


def median_time(function, repeats):
    """(median seconds, last result) of `repeats` calls."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ms(seconds):
    return f"{seconds * 1e3:.2f} ms"


def speedup(slow, fast):
    return f"{slow / fast:.0f}x" if fast > 0 else "-"


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def section_mean_shift(room, context):
    native_times, sklearn_times, aris, identical = [], [], [], 0
    context["sklearn_blocks"] = []
    for b, (embeddings, semantic) in enumerate(zip(room.embeddings, room.semantic)):
        start = time.perf_counter()
        labels_ref, classes_ref = reference.cluster_block(embeddings, semantic, FLAGS.bandwidth)
        sklearn_times.append(time.perf_counter() - start)

        def native(embeddings=embeddings, semantic=semantic):
            labels, centres = clustering.mean_shift(embeddings, FLAGS.bandwidth)
            return labels, clustering.cluster_classes(labels, semantic, len(centres))

        seconds, (labels, _) = median_time(native, FLAGS.repeats)
        native_times.append(seconds)
        aris.append(adjusted_rand_score(labels_ref, labels))
        identical += int(np.array_equal(labels_ref, labels))
        context["sklearn_blocks"].append((labels_ref, classes_ref))
        if b % 12 == 11:
            log(f"  mean-shift: {b + 1}/{len(room.embeddings)} blocks")
    context["sklearn_seconds"] = sum(sklearn_times)
    rows = [
        ["per block, median", ms(statistics.median(native_times)), ms(statistics.median(sklearn_times)),
         speedup(statistics.median(sklearn_times), statistics.median(native_times))],
        ["per block, slowest", ms(max(native_times)), ms(max(sklearn_times)), ""],
        [f"all {len(native_times)} blocks", ms(sum(native_times)), ms(sum(sklearn_times)),
         speedup(sum(sklearn_times), sum(native_times))],
    ]
    notes = [f"labels vs sklearn: adjusted Rand index min {min(aris):.4f}, mean {np.mean(aris):.4f}; "
             f"identical labels in {identical}/{len(aris)} blocks"]
    numbers = {"native_s": native_times, "sklearn_s": sklearn_times, "ari": aris, "identical_blocks": identical}
    return Section("mean-shift + cluster classes (bandwidth %g)" % FLAGS.bandwidth,
                   ["", "native", "sklearn", "speedup"], rows, notes, numbers)


def section_block_merging(room, context):
    blocks = [(xyz, labels, classes) for xyz, (labels, classes) in zip(room.xyz, context["sklearn_blocks"])]

    def native_stream():
        merger = clustering.RoomMerger()
        times, outputs = [], []
        for xyz, labels, classes in blocks:
            start = time.perf_counter()
            outputs.append(merger.merge(xyz, labels, classes))
            times.append(time.perf_counter() - start)
        return times, outputs

    runs = [native_stream() for _ in range(FLAGS.repeats)]
    native_times = [statistics.median(run[0][b] for run in runs) for b in range(len(blocks))]
    native_outputs = runs[-1][1]

    volume, volume_seg = {}, {}
    reference_times, reference_outputs = [], []
    for xyz, labels, classes in blocks:
        start = time.perf_counter()
        reference_outputs.append(reference.block_merging(volume, volume_seg, xyz, labels, classes))
        reference_times.append(time.perf_counter() - start)
    context.update(reference_seconds=sum(reference_times), reference_volume=volume,
                   reference_written=np.concatenate(reference_outputs))
    same = all(np.array_equal(a, b) for a, b in zip(native_outputs, reference_outputs))
    rows = [
        ["per block, median", ms(statistics.median(native_times)), ms(statistics.median(reference_times)),
         speedup(statistics.median(reference_times), statistics.median(native_times))],
        [f"all {len(blocks)} blocks", ms(sum(native_times)), ms(sum(reference_times)),
         speedup(sum(reference_times), sum(native_times))],
    ]
    notes = [f"outputs identical to the reference in every block: {'yes' if same else 'NO'}"]
    numbers = {"native_s": native_times, "reference_s": reference_times, "identical": same}
    return Section("BlockMerging (same sklearn labels in)", ["", "native", "reference", "speedup"], rows, notes,
                   numbers)


def section_room(room, context):
    args = (room.xyz, room.embeddings, room.semantic, room.mean_ins_size)
    threads = os.cpu_count() or 1
    one_thread, labels = median_time(lambda: clustering.postprocess_room(*args, bandwidth=FLAGS.bandwidth),
                                     FLAGS.repeats)
    all_threads, labels_threads = median_time(
        lambda: clustering.postprocess_room(*args, bandwidth=FLAGS.bandwidth, num_threads=threads), FLAGS.repeats)

    start = time.perf_counter()
    expected = reference.assign_and_filter(context["reference_volume"], np.concatenate(room.xyz),
                                           context["reference_written"], np.concatenate(room.semantic),
                                           room.mean_ins_size)
    final_seconds = time.perf_counter() - start
    original = context["sklearn_seconds"] + context["reference_seconds"] + final_seconds

    same = np.array_equal(labels, expected)
    ari = adjusted_rand_score(expected, labels)
    met = original / one_thread >= TARGET_SPEEDUP and one_thread < TARGET_SECONDS
    rows = [
        ["original: sklearn clustering", "", f"{context['sklearn_seconds']:.2f} s", ""],
        ["original: reference merging", "", f"{context['reference_seconds']:.2f} s", ""],
        ["original: assign + filter loops", "", f"{final_seconds:.2f} s", ""],
        ["room, 1 thread", f"{one_thread:.3f} s", f"{original:.2f} s", speedup(original, one_thread)],
        [f"room, {threads} threads", f"{all_threads:.3f} s", f"{original:.2f} s", speedup(original, all_threads)],
    ]
    notes = [
        f"{len(labels)} points, {labels.max() + 1} instances; labels identical to the original's way: "
        f"{'yes' if same else 'NO'} (adjusted Rand index {ari:.4f}); threads change nothing: "
        f"{'yes' if np.array_equal(labels, labels_threads) else 'NO'}",
        f"target {'met' if met else 'NOT met'}: >= {TARGET_SPEEDUP:g}x the original and < {TARGET_SECONDS:g} s "
        f"(1 thread: {original / one_thread:.0f}x, {one_thread:.3f} s)",
    ]
    context["room_labels"] = labels
    numbers = {"native_1_thread_s": one_thread, "native_threads_s": all_threads, "threads": threads,
               "original_s": original, "final_loops_s": final_seconds, "identical": same, "ari": ari,
               "target_met": met}
    return Section("room post-processing", ["", "native", "original", "speedup"], rows, notes, numbers)


def section_metrics(room, context):
    """The paper's metrics of the room's labels: jsnet_tf.metrics from arrays and from the txt
    outputs vs the original evaluator (tests/metrics_reference.py: np.loadtxt and its loops)."""
    sem_pred = np.concatenate(room.semantic)
    ins_gt = np.concatenate(room.instance)
    ins_pred = context["room_labels"]
    # Ground-truth classes: each true instance's most frequent predicted class (undoes the flips).
    counts = np.zeros((ins_gt.max() + 1, len(room.mean_ins_size)), np.int64)
    np.add.at(counts, (ins_gt, sem_pred), 1)
    sem_gt = counts.argmax(axis=1)[ins_gt]
    n = len(sem_pred)
    rng = np.random.default_rng(FLAGS.seed)
    with tempfile.TemporaryDirectory() as tmp:
        pred = pathlib.Path(tmp) / "Area_5_room_1_pred.txt"
        write_seconds, _ = median_time(lambda: metrics.write_room_outputs(
            pred, metrics.gt_path_for(pred), rng.uniform(0, 10, (n, 3)), rng.integers(0, 256, (n, 3)),
            rng.uniform(0, 1, n), sem_pred, ins_pred, sem_gt, ins_gt), 1)
        filelist = pathlib.Path(tmp) / "output_filelist.txt"
        filelist.write_text(f"{pred}\n")

        def from_arrays():
            evaluator = metrics.Evaluator(len(room.mean_ins_size))
            evaluator.add_room(sem_gt, ins_gt, sem_pred, ins_pred)
            return evaluator.result()

        arrays_seconds, ours = median_time(from_arrays, FLAGS.repeats)
        files_seconds, ours_files = median_time(
            lambda: metrics.evaluate_filelist(filelist, num_classes=len(room.mean_ins_size)), FLAGS.repeats)
        start = time.perf_counter()
        original = metrics_reference.evaluate_filelist(str(filelist), num_classes=len(room.mean_ins_size))
        original_seconds = time.perf_counter() - start
    keys = ("oAcc", "mAcc", "mIoU", "mCov", "mWCov", "mPrec", "mRec")
    # The original's mean is nan where a class has no value (it divides by zero); ours leaves such
    # classes out, so the means are compared where the original's is defined.
    defined = [k for k in keys if np.isfinite(original[k])]
    same = all(np.isclose(ours[k], original[k]) and np.isclose(ours_files[k], original[k]) for k in defined)
    per_million = 1e6 / n
    rows = [
        ["original evaluator, txt files", "", f"{original_seconds * per_million:.2f} s", ""],
        ["from arrays (evaluate.py)", f"{arrays_seconds * per_million:.3f} s", f"{original_seconds * per_million:.2f} s",
         speedup(original_seconds, arrays_seconds)],
        ["from the txt files", f"{files_seconds * per_million:.3f} s", f"{original_seconds * per_million:.2f} s",
         speedup(original_seconds, files_seconds)],
    ]
    notes = [
        f"{n} points, {ins_gt.max() + 1} true and {ins_pred.max() + 1} predicted instances; times per million points; "
        f"the metrics equal the original evaluator's ({', '.join(defined)}; the others are nan there): "
        f"{'yes' if same else 'NO'}",
        f"writing the room's two txt files: {write_seconds:.2f} s",
        f"target >= 50x the original evaluator: from arrays {original_seconds / arrays_seconds:.0f}x "
        f"({'met' if original_seconds / arrays_seconds >= 50 else 'NOT met'}), from the txt files "
        f"{original_seconds / files_seconds:.0f}x (parsing text bounds it)",
    ]
    numbers = {"arrays_s": arrays_seconds, "files_s": files_seconds, "original_s": original_seconds, "points": n,
               "identical": bool(same)}
    return Section("metrics of the room", ["", "ours", "original", "speedup"], rows, notes, numbers)


SECTIONS = [section_mean_shift, section_block_merging, section_room, section_metrics]


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def format_section(section):
    widths = [max([len(h)] + [len(row[i]) for row in section.rows]) for i, h in enumerate(section.headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [section.title, line(section.headers), "  ".join("-" * w for w in widths)]
    lines += [line(row) for row in section.rows]
    lines += section.notes
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    started = time.perf_counter()
    if FLAGS.quick:
        shape, points = (3, 3), 2048
        repeats = 2 if not FLAGS["repeats"].present else FLAGS.repeats
        FLAGS.repeats = repeats
    else:
        shape, points = (8, 9), 5250
    log(f"making a {shape[0]} x {shape[1]}-block room of {points} points per block ...")
    room = make_room(np.random.default_rng(FLAGS.seed), *shape, points_per_block=points)
    context, sections = {}, []
    for make_section in SECTIONS:
        log(f"{make_section.__name__} ...")
        sections.append(make_section(room, context))

    instances = [len(np.unique(i)) for i in room.instance]
    out = sys.stdout
    out.write(f"JSNet instance post-processing: {len(room.xyz)} blocks x {points} points "
              f"({sum(map(len, room.xyz))} points), {min(instances)}-{max(instances)} instances per block; "
              f"{platform.machine()}, {os.cpu_count()} CPUs, point scans {clustering.library.load().vector_isa()}, "
              f"numpy {np.__version__}, scikit-learn "
              f"{sklearn.__version__}, scipy {scipy.__version__}\n\n")
    for section in sections:
        out.write(format_section(section) + "\n")
    out.write(f"total benchmark time {time.perf_counter() - started:.0f} s\n")
    out.flush()
    if FLAGS.json:
        report = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "vector_isa": clustering.library.load().vector_isa(),
            "numpy": np.__version__,
            "sklearn": sklearn.__version__,
            "blocks": len(room.xyz),
            "points_per_block": points,
            "quick": FLAGS.quick,
            "repeats": FLAGS.repeats,
            "sections": {s.title: {"rows": s.rows, "notes": s.notes, **s.numbers} for s in sections},
        }
        common.write_report(FLAGS.json, report)


if __name__ == "__main__":
    app.run(main)
