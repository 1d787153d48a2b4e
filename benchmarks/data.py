"""Throughput of the tf.data input pipelines (`jsnet_tf.data.pipeline`) in blocks per second.

    .venv/bin/python benchmarks/data.py                       # synthetic data set, ~1-2 minutes
    .venv/bin/python benchmarks/data.py --quick               # smoke run, smaller rooms, < 1 min
    .venv/bin/python benchmarks/data.py --data_dir=PREPARED   # a prepared S3DIS (prepare_s3dis)
    .venv/bin/python benchmarks/data.py --json=/tmp/data.json # also write the numbers as JSON

Without --data_dir a data set is made in a temporary folder: the built-in synthetic S3DIS
(`jsnet_tf.data.synthetic.generate`, --syn_areas x --syn_rooms_per_area rooms at
--syn_points_per_m2) run
through `prepare_s3dis.prepare`; if the synthetic generator is unavailable or fails, rooms of
random points (--fallback_points each, 6 m x 5 m x 3 m) are written directly with
`s3dis.save_room` / `write_blocks_h5`. The header says which one was used.

Rows (batch --batch x 4096 points, test area --area):
  * train resample, cached: `training_dataset` (the default: every stride-0.5 block, fresh points) with a RoomCache
                            shared across epochs, filled by a warm-up epoch;
  * train random, no cache: the same, every room reloaded from its .npz for each epoch;
  * fixed test / train:     `fixed_dataset`, the prepared stride-0.5 HDF5 blocks of the test
                            area / the training areas (shuffled, as training on them would).
Each row first pulls --warmup batches, then times whole batches, running over more epochs
(epoch 1, 2, ...) until at least --blocks blocks (and --min_time seconds) have come out.

The "x step" column divides the pipeline's blocks/s by what one training step consumes:
--batch blocks per --step_seconds. The default 1.47 s is a training step of the JSNet model at
batch 8 x 4096 on this machine (2-core CPU, `benchmarks/model.py --quick --noxla --noinfer`,
measured on the day this benchmark was written); pass the number from your own run of that
command. The target is x step >= 5 for the random training pipeline.
"""

import os
import pathlib
import platform
import sys
import tempfile
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
flags.DEFINE_string("data_dir", None, "prepared S3DIS folder (rooms/, blocks/, lists/); default: make "
                    "a synthetic one in a temporary folder")
flags.DEFINE_integer("area", 5, "test area (training rows use the other areas)")
flags.DEFINE_integer("batch", 8, "blocks per batch (S3DIS training uses 8)")
flags.DEFINE_integer("block_points", 4096, "points per block")
flags.DEFINE_integer("blocks", 400, "time at least this many blocks per row (after warm-up)")
flags.DEFINE_float("min_time", 3.0, "and at least this many seconds per row")
flags.DEFINE_integer("warmup", 2, "batches pulled before timing starts")
flags.DEFINE_integer("parallel", None, "num_parallel_calls of the pipeline maps (default AUTOTUNE)")
flags.DEFINE_float("step_seconds", 1.47, "seconds per training step at --batch (default: JSNet at "
                   "batch 8 x 4096 on this machine, benchmarks/model.py --quick --noxla --noinfer)")
flags.DEFINE_integer("syn_areas", 6, "synthetic data: areas")
flags.DEFINE_integer("syn_rooms_per_area", 2, "synthetic data: rooms per area")
flags.DEFINE_float("syn_points_per_m2", 3000.0, "synthetic data: surface sampling density")
flags.DEFINE_integer("fallback_points", 400_000, "random-room fallback: points per room")
flags.DEFINE_bool("quick", False, "smoke run: smaller synthetic rooms, 80 blocks and 1 s per row")
flags.DEFINE_string("json", None, "also write all numbers to this JSON file")

TARGET = 5.0



def make_dataset(root, areas, rooms_per_area, points_per_m2, fallback_points, num_points):
    """A prepared data set under root/prepared; returns (path, description)."""
    from jsnet_tf.data import prepare_s3dis, s3dis

    out = pathlib.Path(root) / "prepared"
    try:
        from jsnet_tf.data import synthetic

        synthetic.generate(str(pathlib.Path(root) / "raw"), seed=0, areas=areas,
                           rooms_per_area=rooms_per_area, points_per_m2=points_per_m2)
        prepare_s3dis.prepare(pathlib.Path(root) / "raw", out, num_points=num_points, progress=False)
        return out, f"synthetic S3DIS, {areas} areas x {rooms_per_area} rooms, {points_per_m2:g} points/m2"
    except Exception as e:  # generator missing or broken: random rooms instead
        log(f"synthetic data set unavailable ({type(e).__name__}: {e}); using random rooms")
    rng = np.random.default_rng(0)
    for area in range(1, areas + 1):
        for r in range(rooms_per_area):
            name = f"Area_{area}_office_{r + 1}"
            n = fallback_points
            xyz = (rng.uniform(0, 1, (n, 3)) * [6.0, 5.0, 3.0]).astype(np.float32)
            semantic = rng.integers(0, s3dis.NUM_CLASSES, n).astype(np.int32)
            room = s3dis.Room(name, xyz, rng.integers(0, 256, (n, 3)).astype(np.uint8), semantic,
                              rng.integers(0, 40, n).astype(np.int32))
            s3dis.save_room(out / "rooms" / f"{name}.npz", room)
            b = s3dis.test_blocks(room, num_points=num_points, rng=rng)
            s3dis.write_blocks_h5(out / "blocks" / f"{name}.h5", *b)
    s3dis.write_area_lists(out)
    return out, f"random rooms, {areas} areas x {rooms_per_area} rooms, {fallback_points} points each"


def time_row(make, blocks_wanted, min_time, warmup):
    """make(epoch) -> dataset. Returns dict(blocks, seconds, blocks_per_s, epochs)."""
    epoch = 0
    it = iter(make(epoch))
    for _ in range(warmup):
        try:
            next(it)
        except StopIteration:
            epoch += 1
            it = iter(make(epoch))
    count, epochs = 0, 1
    start = time.perf_counter()
    while count < blocks_wanted or time.perf_counter() - start < min_time:
        try:
            batch = next(it)
        except StopIteration:
            epoch += 1
            epochs += 1
            it = iter(make(epoch))
            continue
        count += int(batch["points"].shape[0])
    seconds = time.perf_counter() - start
    return {"blocks": count, "seconds": seconds, "blocks_per_s": count / seconds, "epochs": epochs}


def main(argv):
    del argv
    started = time.perf_counter()
    import tensorflow as tf

    from jsnet_tf.data import pipeline, s3dis

    blocks_wanted = 80 if FLAGS.quick and not FLAGS["blocks"].present else FLAGS.blocks
    min_time = 1.0 if FLAGS.quick and not FLAGS["min_time"].present else FLAGS.min_time
    density = 1000.0 if FLAGS.quick and not FLAGS["syn_points_per_m2"].present else FLAGS.syn_points_per_m2
    fallback = 100_000 if FLAGS.quick and not FLAGS["fallback_points"].present else FLAGS.fallback_points

    tmp = None
    if FLAGS.data_dir:
        data_dir, source = pathlib.Path(FLAGS.data_dir), f"prepared data set {FLAGS.data_dir}"
    else:
        tmp = tempfile.TemporaryDirectory(prefix="jsnet_data_bench_")
        log("making the data set ...")
        t = time.perf_counter()
        data_dir, source = make_dataset(tmp.name, FLAGS.syn_areas, FLAGS.syn_rooms_per_area, density, fallback,
                                        FLAGS.block_points)
        log(f"  {time.perf_counter() - t:.0f} s")
    try:
        train_rooms = pipeline.area_files(data_dir, FLAGS.area, "train", "rooms")
        points = [len(s3dis.load_room(p)) for p in train_rooms]
        b, n = FLAGS.batch, FLAGS.block_points
        options = dict(batch_size=b, num_points=n, num_parallel_calls=FLAGS.parallel)
        cache = pipeline.RoomCache()
        # warm-up epoch fills the cache (not timed)
        for _ in pipeline.training_dataset(data_dir, FLAGS.area, cache_rooms=cache, **options):
            pass
        rows_spec = [
            ("train resample, cached", lambda e: pipeline.training_dataset(
                data_dir, FLAGS.area, epoch=e + 1, cache_rooms=cache, **options)),
            ("train resample, no cache", lambda e: pipeline.training_dataset(
                data_dir, FLAGS.area, epoch=e + 1, cache_rooms=False, **options)),
            ("train random corners, cached", lambda e: pipeline.training_dataset(
                data_dir, FLAGS.area, epoch=e + 1, sampling="random_corners", cache_rooms=cache, **options)),
            ("train fixed (h5)", lambda e: pipeline.training_dataset(
                data_dir, FLAGS.area, epoch=e + 1, sampling="fixed", **options)),
            ("fixed test (h5)", lambda e: pipeline.fixed_dataset(data_dir, FLAGS.area, **options)),
            ("fixed train (h5), shuffled", lambda e: pipeline.fixed_dataset(
                data_dir, FLAGS.area, split="train", shuffle=True, seed=e, **options)),
        ]
        consume = b / FLAGS.step_seconds
        rows = []
        for name, make in rows_spec:
            log(f"timing {name} ...")
            r = time_row(make, blocks_wanted, min_time, FLAGS.warmup)
            r.update(name=name, x_step=r["blocks_per_s"] / consume)
            rows.append(r)
    finally:
        if tmp is not None:
            tmp.cleanup()

    out = sys.stdout
    out.write(f"JSNet input pipeline, batch {b} x {n} points, test area {FLAGS.area}; TensorFlow "
              f"{tf.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, num_parallel_calls "
              f"{FLAGS.parallel or 'AUTOTUNE'}\n")
    out.write(f"data: {source}; {len(train_rooms)} training rooms, {int(np.mean(points))} points per "
              f"room on average\n")
    out.write(f"training step consumes {consume:.2f} blocks/s ({b} blocks per {FLAGS.step_seconds:g} s "
              f"step); target: random training pipeline >= {TARGET:g}x that\n\n")
    headers = ["pipeline", "blocks", "epochs", "seconds", "blocks/s", "x step"]
    body = [[r["name"], str(r["blocks"]), str(r["epochs"]), f"{r['seconds']:.2f}",
             f"{r['blocks_per_s']:.1f}", f"{r['x_step']:.1f}x"] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in body]) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    out.write(line(headers) + "\n" + "  ".join("-" * w for w in widths) + "\n")
    for c in body:
        out.write(line(c) + "\n")
    worst = min(r["x_step"] for r in rows if r["name"].startswith("train random"))
    verdict = "met" if worst >= TARGET else "NOT met"
    out.write(f"\ntarget {verdict}: random training pipeline delivers >= {worst:.1f}x a training step's "
              f"consumption (need {TARGET:g}x)\n")
    out.write(f"total benchmark time {time.perf_counter() - started:.0f} s\n")
    out.flush()

    if FLAGS.json:
        report = {
            **common.machine(tf),
            "data": source,
            "training_rooms": len(train_rooms),
            "mean_points_per_room": float(np.mean(points)),
            "batch": b,
            "num_points": n,
            "num_parallel_calls": FLAGS.parallel,
            "step_seconds": FLAGS.step_seconds,
            "consumed_blocks_per_s": consume,
            "target_x": TARGET,
            "target_met": worst >= TARGET,
            "quick": FLAGS.quick,
            "rows": rows,
        }
        common.write_report(FLAGS.json, report)


if __name__ == "__main__":
    app.run(main)
