"""Peak memory and speed of predict on LAZ clouds of 10 and 20 times its tile vs a cloud of one tile.

    .venv/bin/python benchmarks/large_clouds.py                      # 1M and 2M points in tiles of 100,000
    .venv/bin/python benchmarks/large_clouds.py --points 200000 --tile 20000 --repeats 1   # a quick look
    .venv/bin/python benchmarks/large_clouds.py --json=/tmp/large.json

Each case runs the installed `jsnet-predict` in its own process (`--format laz --nopictures`,
tiny random-weight network: 512-point blocks, the tests' model) and reads that process's peak
resident memory (`os.wait4`: ru_maxrss of the child alone). Cases:
  * one tile: a LAZ of `--tile` points, labelled in one pass (in memory);
  * tiled: a LAZ of each of `--points` points (the same building floor, repeated along x),
    labelled with `--max_points_per_pass=--tile`, i.e. out of core (jsnet_tf.out_of_core).
The floor: 3 m x 2 m rooms (a floor, two walls, a table) of ~1,250 points per square metre, at
UTM-sized coordinates. Printed: points, tiles, peak memory (MiB), seconds and points per second
of each case, the ratio of each tiled peak to the one-tile peak (target: within 25%, flat in the
cloud's size), for --repeats runs each (the cases interleaved), with the range.
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import common  # noqa: E402  (benchmarks/common.py)
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from common import log  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("points", ["1000000", "2000000"], "points of each large cloud")
flags.DEFINE_integer("tile", 100_000, "points of the one-tile cloud, and --max_points_per_pass of the large one")
flags.DEFINE_integer("repeats", 2, "runs of each case (interleaved)")
flags.DEFINE_string("json", None, "also write the numbers here")

ROOM = (3.0, 2.0)  # metres
POINTS_PER_ROOM = 7_500  # ~1,250 a square metre
EAST, NORTH = 512_000.0, 4_100_000.0


def floor_plan(count, rng):
    """(count, 3) float64 points of rooms side by side, rows of 5 rooms along y (10 m deep)."""
    rooms = -(-count // POINTS_PER_ROOM)
    parts = []
    for r in range(rooms):
        ox, oy = ROOM[0] * (r // 5), ROOM[1] * (r % 5)
        n = POINTS_PER_ROOM
        floor = rng.uniform([0, 0, 0], [ROOM[0], ROOM[1], 0.02], (n // 2, 3))
        wall_x = rng.uniform([0, 0, 0], [0.05, ROOM[1], 2.5], (n // 8, 3))
        wall_y = rng.uniform([0, ROOM[1] - 0.05, 0], [ROOM[0], ROOM[1], 2.5], (n // 8, 3))
        table = rng.uniform([0.8, 0.5, 0.7], [2.0, 1.3, 0.75], (n - n // 2 - 2 * (n // 8), 3))
        parts.append(np.concatenate([floor, wall_x, wall_y, table]) + [ox, oy, 0.0])
    return np.concatenate(parts)[:count] + [EAST, NORTH, 100.0]


def write_laz(path, count, seed):
    import laspy

    rng = np.random.default_rng(seed)
    xyz = floor_plan(count, rng)
    header = laspy.LasHeader(point_format=7, version="1.4")
    header.scales, header.offsets = [0.001] * 3, [EAST, NORTH, 0.0]
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.red, las.green, las.blue = (rng.integers(0, 65536, count) for _ in range(3))
    las.write(str(path))


def make_run(root):
    """A train.py workdir with tiny weights (the tests' model after one training-mode pass)."""
    from jsnet_tf import checkpoints, config
    from jsnet_tf.model import build_model

    points = 512
    cfg = config.load(None, [f"data.num_points={points}", "model.npoints=[256, 64, 32, 16]", "data.areas=[2]",
                             "eval.batch_size=8"])
    model = build_model(cfg)
    model.set_bn_decay(0.0)
    model(np.random.default_rng(0).uniform(0, 1, (4, points, 9)).astype(np.float32), training=True)
    checkpoints.write_run_files(root / "workdir" / "area2", cfg)
    checkpoints.save_weights(model, root / "workdir" / "area2" / "weights")
    return root / "workdir"


def main(argv):
    del argv
    import tensorflow as tf

    folder = pathlib.Path(tempfile.mkdtemp(prefix="large_clouds_"))
    log(f"working in {folder}")
    workdir = make_run(folder)
    cases = {"one tile": (folder / "tile.laz", FLAGS.tile, 0)}
    for count in map(int, FLAGS.points):
        cases[f"{count / 1e6:g}M tiled"] = (folder / f"large{count}.laz", count, FLAGS.tile)
    for path, count, _ in cases.values():
        write_laz(path, count, seed=count)
    results = {name: [] for name in cases}
    for rep in range(FLAGS.repeats):
        order = list(cases) if rep % 2 == 0 else list(cases)[::-1]
        for name in order:
            path, count, max_points = cases[name]
            peak, seconds, stdout = measure(workdir, path, folder / "out", max_points)
            tiles = next((line.split("; ")[-1] for line in stdout.splitlines() if " tiles (" in line), "one tile")
            results[name].append({"peak_mib": peak, "seconds": seconds, "points_per_second": count / seconds})
            log(f"{name}: {count} points, peak {peak:.0f} MiB, {seconds:.1f} s, {tiles}")
    print(f"{'case':<12} {'points':>9} {'peak MiB (min..max)':>22} {'/ one tile':>20} {'seconds':>16} {'points/s':>18}")
    ratios = {}
    for name, (_, count, _) in cases.items():
        rows = results[name]
        peak = [r["peak_mib"] for r in rows]
        secs = [r["seconds"] for r in rows]
        rate = [r["points_per_second"] for r in rows]
        ratios[name] = [r["peak_mib"] / o["peak_mib"] for r, o in zip(rows, results["one tile"])]
        print(f"{name:<12} {count:>9} {np.median(peak):>8.0f} ({min(peak):.0f}..{max(peak):.0f}) "
              f"{np.median(ratios[name]):>8.3f} ({min(ratios[name]):.3f}..{max(ratios[name]):.3f}) "
              f"{np.median(secs):>7.1f} ({min(secs):.0f}..{max(secs):.0f}) "
              f"{np.median(rate):>8.0f} ({min(rate):.0f}..{max(rate):.0f})")
    worst = max(max(r) for r in ratios.values())
    print(f"largest peak / one-tile peak: {worst:.3f}; target <= 1.25")
    if FLAGS.json:
        common.write_report(FLAGS.json, {"machine": common.machine(tf), "points": FLAGS.points, "tile": FLAGS.tile,
                                         "results": results, "peak_ratio": ratios})


def measure(workdir, cloud, out, max_points):
    """(peak resident MiB, seconds, stdout) of jsnet-predict on one cloud, in its own process."""
    out.mkdir(exist_ok=True)
    command = [str(pathlib.Path(sys.executable).parent / "jsnet-predict"), "--noverbose", "--workdir", str(workdir),
               "--area", "2", "--min_instance_points", "50", "--format", "laz", "--nopictures", "--overwrite",
               "--max_points_per_pass", str(max_points), "--out", str(out), str(cloud)]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        stdout.seek(0)
        stderr.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{cloud}: jsnet-predict failed:\n{stderr.read()[-2000:]}")
        return usage.ru_maxrss / 1024.0, seconds, stdout.read()


if __name__ == "__main__":
    app.run(main)
