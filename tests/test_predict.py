"""`python -m jsnet_tf.predict`: user clouds in, labelled clouds out in their own coordinates; bad
inputs are one clear line and leave no output; tiling covers every point once; the streaming
RoomSegmenter gives the results of the former all-rows-first one."""

import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from jsnet_tf import checkpoints, config, io, metrics
from jsnet_tf.clustering import postprocess
from jsnet_tf.data import s3dis, shapenet
from jsnet_tf.evaluation import RoomSegmenter, _chunks, _normalised
from jsnet_tf.model import build_model
from jsnet_tf.prediction import (
    GREY,
    CloudSegmenter,
    PredictError,
    plan_tiles,
    write_labels_txt,
    write_outputs,
)
from jsnet_tf.tasks.s3dis import S3DISTask
from tests.conftest import TINY_POINTS
from tests.test_evaluation import OracleNet, oracle_room

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
S3DIS = S3DISTask()
# One block a network call: a row's outputs then depend on the row alone. In a batch of several,
# TensorFlow's CPU matmuls can round a row differently at another position, and this tiny model
# (batch-norm statistics of one random batch) magnifies that to 1e-4, so tiled and single-pass
# runs, which batch blocks differently, would agree only that far.
TINY_MODEL = [f"data.num_points={TINY_POINTS}", "model.npoints=[256, 64, 32, 16]", "data.areas=[2]", "eval.batch_size=1"]
OUTPUTS = ("_semantic.ply", "_instance.ply", "_labels.txt", "_instances.txt", "_labels.npz", ".png")


def _predict(*args):
    """The installed console script, run from a folder other than the repository (every path is absolute)."""
    elsewhere = tempfile.mkdtemp(prefix="predict_cwd_")
    return subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "jsnet-predict"), "--noverbose", *map(str, args)],
        cwd=elsewhere, capture_output=True, text=True, timeout=600,
    )


def _tiny_model(cfg):
    """A small JSNet after one training-mode pass (untrained batch-norm statistics overflow)."""
    model = build_model(cfg)
    points = np.random.default_rng(0).uniform(0, 1, (4, TINY_POINTS, 9)).astype(np.float32)
    model.set_bn_decay(0.0)  # moving statistics := this batch's (a tenth of them would blow the logits up)
    model(points, training=True)
    return model


def _scene(rng, count, offset=(0.0, 0.0, 0.0)):
    """A 3 m x 2 m room-like cloud: a floor, a wall and a box, shifted by `offset`."""
    floor = rng.uniform([0, 0, 0], [3, 2, 0.02], (count // 2, 3))
    wall = rng.uniform([0, 1.95, 0], [3, 2, 2.5], (count // 4, 3))
    box = rng.uniform([0.8, 0.5, 0.6], [1.8, 1.2, 0.75], (count - count // 2 - count // 4, 3))
    return np.concatenate([floor, wall, box]) + np.asarray(offset)


# ------------------------------------------------------------------------------------------------
# The command line, end to end
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A train.py workdir whose area2 run holds tiny weights; its data folder holds only the mean
    instance sizes that predict looks up by default."""
    root = tmp_path_factory.mktemp("predict_run")
    data_dir = root / "data"
    (data_dir / "lists").mkdir(parents=True)
    np.savetxt(data_dir / "lists" / "mean_ins_size_woArea2.txt", np.full(13, 80.0))
    cfg = config.load(None, TINY_MODEL + [f'data.data_dir="{data_dir}"'])
    checkpoints.write_run_files(root / "workdir" / "area2", cfg)
    checkpoints.save_weights(_tiny_model(cfg), root / "workdir" / "area2" / "weights")
    return root / "workdir"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Good inputs (binary PLY with colour in a far-away frame, txt without colour, npy with two
    NaN points) and bad ones, with the points each good one must come back with."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(7)
    ply_xyz = _scene(rng, 3000, offset=(512_345.25, 4_100_200.5, 87.0)).astype(np.float32)
    ply_rgb = rng.integers(0, 256, (3000, 3)).astype(np.uint8)
    io.write_ply(folder / "scan.ply", ply_xyz, ply_rgb, binary=True)
    txt_xyz = np.round(_scene(rng, 2500, offset=(-3.0, 10.0, -1.5)), 4)
    np.savetxt(folder / "bare.txt", txt_xyz, fmt="%.4f")
    npy = np.concatenate([_scene(rng, 2000), rng.integers(0, 256, (2000, 3))], axis=1)
    npy[[5, 700], [1, 2]] = np.nan
    np.save(folder / "holes.npy", npy)
    (folder / "empty.txt").write_bytes(b"")
    io.write_ply(folder / "flat.ply", np.zeros((10, 3)), extra={"intensity": np.ones(10)})
    with open(folder / "flat.ply", "r+b") as f:  # rename the y property: a PLY without y
        data = f.read().replace(b"property double y\n", b"property double q\n", 1)
        f.seek(0)
        f.write(data)
    (folder / "garbage.npy").write_bytes(b"\x93NUMPY this is not an array")
    expected = {
        "scan": ply_xyz.astype(np.float64),
        "bare": txt_xyz,
        "holes": npy[np.isfinite(npy).all(axis=1), :3],
    }
    return folder, expected


@pytest.fixture(scope="module")
def predicted(run, inputs, tmp_path_factory):
    folder, _ = inputs
    out = tmp_path_factory.mktemp("predicted")
    names = ["scan.ply", "empty.txt", "bare.txt", "flat.ply", "holes.npy", "garbage.npy"]
    result = _predict("--workdir", run, "--area", 2, *(folder / n for n in names), "--out", out)
    return out, result


@pytest.mark.slow
def test_every_input_point_comes_back_labelled_in_its_own_coordinates(predicted, inputs):
    out, result = predicted
    _, expected = inputs
    assert "Traceback" not in result.stderr
    for stem, xyz in expected.items():
        for suffix in OUTPUTS:
            assert (out / f"{stem}{suffix}").stat().st_size > 0, (stem, suffix)
        with np.load(out / f"{stem}_labels.npz") as z:
            np.testing.assert_array_equal(z["xyz"], xyz)
            np.testing.assert_array_equal(z["offset"], xyz.min(axis=0))
            semantic, instance, score = z["semantic"], z["instance"], z["score"]
            assert list(z["classes"]) == list(s3dis.CLASSES)
            stored = metrics.InstanceTable(z["instance_ids"], z["instance_classes"], z["instance_confidences"],
                                           z["instance_points"])
        # The instance list: every instance once, its class and points as the per-point labels say.
        listed = metrics.check_instance_table(metrics.read_instance_list(out / f"{stem}_instances.txt"), instance, 13, stem)
        for a, b in zip(listed, stored):
            np.testing.assert_array_equal(a, b)
        for i, c in zip(listed.ids, listed.classes):
            assert c == np.bincount(semantic[instance == i]).argmax()
        assert ((listed.confidences > 0) & (listed.confidences <= 1)).all()
        assert semantic.shape == instance.shape == score.shape == (len(xyz),)
        assert semantic.min() >= 0 and semantic.max() < 13 and instance.min() >= -1
        assert (score > 0).all() and (score <= 1 + 1e-6).all()
        for kind, colours in (("semantic", io.semantic_colors(semantic, s3dis.PALETTE)), ("instance", io.instance_colors(instance))):
            ply = io.read_point_cloud(out / f"{stem}_{kind}.ply")
            np.testing.assert_array_equal(ply.xyz, xyz)
            np.testing.assert_array_equal(ply.rgb, colours)
            np.testing.assert_array_equal(ply.extra["semantic"], semantic)
            np.testing.assert_array_equal(ply.extra["instance"], instance)
            np.testing.assert_array_equal(ply.extra["score"], score)
        table = np.loadtxt(out / f"{stem}_labels.txt", ndmin=2)
        np.testing.assert_allclose(table[:, :3], xyz, rtol=0, atol=5.1e-7)
        np.testing.assert_array_equal(table[:, 3], semantic)
        np.testing.assert_array_equal(table[:, 4], instance)
        np.testing.assert_allclose(table[:, 5], score, rtol=0, atol=5.1e-7)


@pytest.mark.slow
def test_nan_points_are_dropped_with_their_count_and_missing_colour_is_warned(predicted):
    _, result = predicted
    assert "holes.npy: 1998 points; dropped 2 with NaN or infinite values" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "bare.txt: no colours" in warnings[0] and f"{GREY}/255" in warnings[0]


@pytest.mark.slow
def test_bad_inputs_are_one_line_each_and_leave_no_outputs(predicted, inputs):
    out, result = predicted
    folder, _ = inputs
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("predict: error:")]
    assert errors == [
        f"predict: error: {folder / 'empty.txt'}: empty file (no points)",
        f"predict: error: {folder / 'flat.ply'}: no y coordinate property (found x, q, z, intensity)",
        f"predict: error: {folder / 'garbage.npy'}: not a readable .npy array: " + errors[2].split("array: ", 1)[1],
    ]
    assert result.stderr.splitlines()[-1] == "predict: 3 of 6 inputs failed; their outputs were not written"
    stems = {p.name.split("_")[0].split(".")[0] for p in out.iterdir()}
    assert stems == {"scan", "bare", "holes"}  # nothing of the bad inputs, no staging folder left


@pytest.mark.slow
def test_nan_policy_error_and_existing_outputs_fail_without_touching_anything(run, inputs, predicted, tmp_path):
    out, _ = predicted
    folder, _ = inputs
    (tmp_path / "holes2.npy").write_bytes((folder / "holes.npy").read_bytes())
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = _predict("--workdir", run, "--nan_policy", "error", tmp_path / "holes2.npy", folder / "scan.ply", "--out", out)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("predict: error:")]
    assert len(errors) == 2
    assert "holes2.npy" in errors[0] and "2 of 2000 points have a NaN" in errors[0]
    assert errors[1] == (
        f"predict: error: {folder / 'scan.ply'}: {out / 'scan_semantic.ply'} exists (pass --overwrite to replace it)"
    )
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@pytest.fixture(scope="module")
def scans_predicted(run, tmp_path_factory):
    """predict --format las,laz,npz --nan_policy error on scanners' files written by their reference
    libraries (a LAS 1.4 LAZ at UTM coordinates, an E57 of two posed scans, a compressed PCD) and on
    bad ones (a truncated LAZ, an E57 without points, a PCD without x/y/z, a PCD with NaN
    coordinates, a LAS whose header count disagrees with its points)."""
    import laspy
    import pye57
    import pypcd4

    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(11)
    header = laspy.LasHeader(point_format=7, version="1.4")
    header.scales, header.offsets = [0.001] * 3, [512_000.0, 4_100_000.0, 0.0]
    site = laspy.LasData(header)
    xyz = np.round(_scene(rng, 3000, offset=(512_345.678, 4_100_200.125, 0.0)), 3)
    site.x, site.y, site.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    site.red, site.green, site.blue = (rng.integers(0, 65536, 3000) for _ in range(3))
    site.intensity = rng.integers(0, 65536, 3000)
    site.write(str(folder / "site.laz"))
    e57 = pye57.E57(str(folder / "station.e57"), mode="w")
    for k in range(2):
        local = _scene(rng, 1500).astype(np.float32).astype(np.float64)
        colour = rng.integers(0, 256, (1500, 3)).astype(np.uint8)
        e57.write_scan_raw({"cartesianX": local[:, 0], "cartesianY": local[:, 1], "cartesianZ": local[:, 2],
                            "colorRed": colour[:, 0], "colorGreen": colour[:, 1], "colorBlue": colour[:, 2]},
                           rotation=np.array([1.0, 0, 0, 0]), translation=np.array([512_345.0 + 3 * k, 4_100_200.0, 5.0]))
    e57.close()
    pypcd4.PointCloud.from_xyz_points(_scene(rng, 2000).astype(np.float32)).save(
        str(folder / "ros.pcd"), encoding=pypcd4.Encoding.BINARY_COMPRESSED)
    data = (folder / "site.laz").read_bytes()
    (folder / "cut.laz").write_bytes(data[: len(data) // 2])
    pye57.E57(str(folder / "blank.e57"), mode="w").close()
    pypcd4.PointCloud.from_points([np.ones(500), np.ones(500)], ("a", "b"), (np.float32, np.float32)).save(
        str(folder / "noxyz.pcd"))
    holes = _scene(rng, 2000).astype(np.float32)
    holes[[4, 9], 0] = np.nan
    pypcd4.PointCloud.from_xyz_points(holes).save(str(folder / "holes.pcd"))
    header = laspy.LasHeader(point_format=3, version="1.2")
    wrong = laspy.LasData(header)
    wrong.x, wrong.y, wrong.z = (_scene(rng, 2000)[:, k] for k in range(3))
    wrong.write(str(folder / "count.las"))
    raw = bytearray((folder / "count.las").read_bytes())
    raw[107:111] = (2100).to_bytes(4, "little")  # the LAS 1.2 header's point count
    (folder / "count.las").write_bytes(bytes(raw))
    names = ["site.laz", "cut.laz", "station.e57", "blank.e57", "noxyz.pcd", "ros.pcd", "holes.pcd", "count.las"]
    out = tmp_path_factory.mktemp("scans_out")
    result = _predict("--workdir", run, "--area", 2, "--format", "las,laz,npz", "--nan_policy", "error",
                      *(folder / n for n in names), "--out", out)
    return folder, out, result


@pytest.mark.slow
def test_scanners_files_come_back_as_las_and_laz_in_their_own_coordinates(scans_predicted):
    import laspy

    from jsnet_tf import scan_formats
    from tests.test_scan_formats import classification_lookup

    folder, out, result = scans_predicted
    assert "Traceback" not in result.stderr
    source = laspy.read(str(folder / "site.laz"))
    for stem in ("site", "station", "ros"):
        assert not (out / f"{stem}_semantic.ply").exists() and not (out / f"{stem}_labels.txt").exists()
        with np.load(out / f"{stem}_labels.npz") as z:
            xyz, semantic, instance = z["xyz"], z["semantic"], z["instance"]
        listed = metrics.read_instance_list(out / f"{stem}_instances.txt")
        for suffix in ("las", "laz"):
            las = laspy.read(str(out / f"{stem}_labels.{suffix}"))
            assert las.header.version == "1.4" and las.header.are_points_compressed == (suffix == "laz")
            np.testing.assert_array_equal(las.classification, semantic + scan_formats.CLASS_CODE_BASE)
            np.testing.assert_array_equal(las.instance, instance)
            expected = np.zeros(len(instance), np.float32)
            for i, confidence in zip(listed.ids, listed.confidences):
                expected[instance == i] = confidence
            np.testing.assert_allclose(las.confidence, expected, rtol=1e-6)
            names = classification_lookup(las.header)
            assert names == {64 + k: name for k, name in enumerate(s3dis.CLASSES)}
            got = np.stack([las.x, las.y, las.z], axis=1)
            np.testing.assert_allclose(got, xyz, rtol=0, atol=5e-4 + 1e-9)  # to the millimetre
            if stem == "site":  # a LAS input: its own integers, scales, offsets and fields
                for name in ("X", "Y", "Z", "red", "green", "blue", "intensity"):
                    np.testing.assert_array_equal(las[name], source[name])
                np.testing.assert_array_equal(las.header.offsets, source.header.offsets)
                np.testing.assert_array_equal(las.header.scales, source.header.scales)


@pytest.mark.slow
def test_bad_scanner_files_are_one_line_each_and_leave_no_outputs(scans_predicted):
    folder, out, result = scans_predicted
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("predict: error:")]
    expected = [("cut.laz", "truncated or corrupt LAS/LAZ point data"), ("blank.e57", "holds no scans"),
                ("noxyz.pcd", "no x/y/z field in the PCD file"), ("holes.pcd", "2 of 2000 points have a NaN"),
                ("count.las", "the LAS header declares 2100 points, the file holds 2000")]
    assert len(errors) == len(expected)
    for line, (name, problem) in zip(errors, expected):
        assert line.startswith(f"predict: error: {folder / name}: ") and problem in line, line
    assert result.stderr.splitlines()[-1] == "predict: 5 of 8 inputs failed; their outputs were not written"
    assert {p.name.split("_")[0].split(".")[0] for p in out.iterdir()} == {"site", "station", "ros"}


def test_help_explains_every_flag():
    result = _predict("--helpshort")
    for flag in ("workdir", "area", "which", "out", "mean_ins_size", "min_instance_points", "nan_policy",
                 "color_max", "max_points_per_pass", "batch_size", "seed", "set", "category"):
        assert f"--{flag}:" in result.stdout, flag
    for flag in ("color", "txt", "pictures", "overwrite", "verbose"):
        assert f"--[no]{flag}:" in result.stdout, flag
    assert "INPUT" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_run_without_mean_instance_sizes_warns_once_and_does_not_filter(run, inputs, tmp_path):
    result = _predict("--workdir", run, "--set", f'data.data_dir="{tmp_path}"', inputs[0] / "scan.ply", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "no mean instance sizes" in line]
    assert len(warnings) == 1 and warnings[0].startswith("predict: warning: no mean instance sizes (neither ")
    assert "instances are NOT filtered by size" in result.stdout


# ------------------------------------------------------------------------------------------------
# Pieces
# ------------------------------------------------------------------------------------------------


def test_tiles_cover_every_point_once_within_the_limit(rng):
    unit = 1.0
    xy = np.concatenate([rng.uniform(0, 9.5, (3000, 2)), rng.uniform(40, 41, (200, 2))])  # and a far patch
    xy[:50] = np.floor(xy[:50])  # points on tile edges
    for max_points in (100, 700, 3199, 3200, 0):
        tiles = plan_tiles(xy, max_points, unit)
        covered = np.concatenate([t.indices for t in tiles])
        np.testing.assert_array_equal(np.sort(covered), np.arange(len(xy)))
        assert len({t.side for t in tiles}) == 1
        for tile in tiles:
            assert np.all(np.diff(tile.indices) > 0) and tile.side % unit == 0
            np.testing.assert_array_equal(tile.origin % tile.side, 0)
            inside = xy[tile.indices] - tile.origin
            assert (inside >= 0).all() and (inside < tile.side).all()
            assert len(tile.indices) <= max_points or tile.side == unit or max_points in (0, 3200)
        if max_points in (0, 3200):
            assert len(tiles) == 1 and np.array_equal(tiles[0].origin, [0, 0])
        else:
            assert len(tiles) > 1


def _oracle_cloud(rng):
    room = oracle_room(rng)
    return room, room.xyz.astype(np.float64) + [100.0, -20.0, 3.0]


def _same_up_to_renumbering(a, b):
    """Whether two instance labelings group the points alike (-1 = none in both)."""
    assert np.array_equal(a < 0, b < 0)
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_tiled_clouds_get_the_labels_and_instances_of_a_single_pass(rng):
    room, xyz = _oracle_cloud(rng)
    cfg = config.load(None)["eval"]
    segmenter = RoomSegmenter(OracleNet(), 256, np.full(13, 100.0), cfg)
    cloud = CloudSegmenter(segmenter, max_points_per_pass=6000)
    offset, tiles = cloud.plan(xyz)
    assert len(tiles) > 1 and max(len(t.indices) for t in tiles) <= 6000
    np.testing.assert_array_equal(offset, xyz.min(axis=0))
    steps = []
    prediction = cloud.segment(xyz, room.rgb, "oracle", progress=steps.append)
    assert sum(steps) == cloud.count_blocks(xyz) and prediction.num_tiles == len(tiles)
    single = CloudSegmenter(segmenter, max_points_per_pass=0).segment(xyz, room.rgb, "oracle")
    assert single.num_tiles == 1
    np.testing.assert_array_equal(prediction.semantic, room.semantic)  # the oracle reads the class from colour
    np.testing.assert_array_equal(prediction.semantic, single.semantic)
    np.testing.assert_array_equal(prediction.score, single.score)
    assert _same_up_to_renumbering(prediction.instance, single.instance)
    local = s3dis.Room("oracle", (xyz - offset).astype(np.float32), room.rgb, room.semantic, room.instance)
    direct = segmenter.segment(local)  # the room path: probabilities held whole
    np.testing.assert_array_equal(single.instance, direct.instance_pred)
    for ours, theirs, reference in zip(prediction.instances, single.instances, direct.instances):
        np.testing.assert_array_equal(ours, reference)
        np.testing.assert_array_equal(theirs, reference)
    tile_of = np.empty(len(xyz), np.int64)
    for k, tile in enumerate(tiles):
        tile_of[tile.indices] = k
    ids = prediction.instance
    assert (ids >= 0).mean() > 0.9
    assert any(len(np.unique(tile_of[ids == i])) > 1 for i in np.unique(ids[ids >= 0]))  # merged across tiles


def test_a_tiled_network_run_gives_the_labels_of_a_single_pass(rng):
    cfg = config.load(None, TINY_MODEL)
    segmenter = RoomSegmenter(_tiny_model(cfg), TINY_POINTS, np.full(13, 20.0), cfg["eval"])
    xyz = np.concatenate([_scene(rng, 3000, offset=(512_340.0 + 3 * k, 4_100_200.0, 10.0)) for k in range(3)])
    rgb = rng.integers(0, 256, (len(xyz), 3)).astype(np.uint8)
    tiled = CloudSegmenter(segmenter, max_points_per_pass=3500)
    assert len(tiled.plan(xyz)[1]) >= 3
    a = tiled.segment(xyz, rgb, "cloud", seed=3)
    b = CloudSegmenter(segmenter, max_points_per_pass=0).segment(xyz, rgb, "cloud", seed=3)
    np.testing.assert_array_equal(a.semantic, b.semantic)
    np.testing.assert_array_equal(a.score, b.score)  # one block a call (TINY_MODEL)
    assert _same_up_to_renumbering(a.instance, b.instance) and (a.instance >= 0).any()


def test_a_cloud_within_one_pass_gets_the_same_labels_with_tiling_disabled(rng):
    cfg = config.load(None, TINY_MODEL)
    segmenter = RoomSegmenter(_tiny_model(cfg), TINY_POINTS, np.full(13, 50.0), cfg["eval"])
    xyz = _scene(rng, 4000, offset=(250.0, 80.0, 10.0))
    rgb = rng.integers(0, 256, (4000, 3)).astype(np.uint8)
    default = CloudSegmenter(segmenter).segment(xyz, rgb, "cloud", seed=2)
    untiled = CloudSegmenter(segmenter, max_points_per_pass=0).segment(xyz, rgb, "cloud", seed=2)
    room = s3dis.Room("cloud", (xyz - xyz.min(axis=0)).astype(np.float32), rgb, np.zeros(4000, np.int32),
                      np.zeros(4000, np.int32))
    direct = segmenter.segment(room, seed=2)
    for prediction in (default, untiled):
        np.testing.assert_array_equal(prediction.semantic, direct.semantic_pred)
        np.testing.assert_array_equal(prediction.instance, direct.instance_pred)
        np.testing.assert_array_equal(prediction.score, direct.score)
        for ours, theirs in zip(prediction.instances, direct.instances):  # probabilities read back from disk
            np.testing.assert_array_equal(ours, theirs)
    grey = CloudSegmenter(segmenter).segment(xyz, None, "cloud", seed=2)
    room.rgb = np.full_like(rgb, GREY)
    np.testing.assert_array_equal(grey.semantic, segmenter.segment(room, seed=2).semantic_pred)


def test_a_cloud_in_millimetres_is_a_clear_error(rng):
    cfg = config.load(None)["eval"]
    cloud = CloudSegmenter(RoomSegmenter(OracleNet(), 256, np.full(13, 100.0), cfg))
    xyz = rng.uniform(0, 3000, (2000, 3))
    with pytest.raises(PredictError, match="no block of 1.0 m x 1.0 m holds 100 points.*metres"):
        cloud.segment(xyz, None)


def test_the_labels_text_is_printf_formatted(tmp_path, rng):
    xyz = rng.uniform(-1e5, 1e5, (300, 3)) * rng.choice([1e-4, 1.0], (300, 1))
    semantic = rng.integers(0, 13, 300)
    instance = rng.integers(-1, 2000, 300)
    score = rng.uniform(0, 1, 300).astype(np.float32)
    write_labels_txt(tmp_path / "l.txt", xyz, semantic, instance, score, rows_per_write=128)
    expected = "# x y z semantic instance score\n" + "".join(
        "%f %f %f %d %d %f\n" % (*p, s, i, float(c)) for p, s, i, c in zip(xyz, semantic, instance, score)
    )
    assert (tmp_path / "l.txt").read_text() == expected


def test_a_failing_output_leaves_none_of_the_files_and_a_rewrite_no_stale_ones(tmp_path, monkeypatch, rng):
    from jsnet_tf import viz
    from jsnet_tf.prediction import CloudPrediction

    xyz = rng.uniform(0, 2, (100, 3))
    no_instances = metrics.InstanceTable(*(np.zeros(0, t) for t in (np.int64, np.int64, np.float64, np.int64)))
    prediction = CloudPrediction(np.zeros(100, np.int32), np.full(100, -1, np.int32), np.ones(100, np.float32),
                                 xyz.min(axis=0), 1, no_instances)

    def broken(*args, **kwargs):
        raise viz.VizError("cannot draw")

    monkeypatch.setattr(viz, "render_segmentation_panel", broken)
    with pytest.raises(viz.VizError):
        write_outputs(tmp_path, "cloud", xyz, prediction, list(s3dis.CLASSES), s3dis.PALETTE)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert len(write_outputs(tmp_path, "cloud", xyz, prediction, list(s3dis.CLASSES), s3dis.PALETTE)) == 6
    written = write_outputs(tmp_path, "cloud", xyz, prediction, list(s3dis.CLASSES), s3dis.PALETTE, pictures=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    assert len(written) == 5 and not (tmp_path / "cloud.png").exists()  # an old picture does not linger


def test_min_instance_points_keeps_instances_of_exactly_that_size(tmp_path):
    cfg = config.load(None)
    sizes, fraction, _ = S3DIS.predict_instance_sizes(cfg, tmp_path, 5, min_instance_points=4)
    room_ids = np.array([0] * 4 + [1] * 3 + [2] * 5)
    kept = postprocess.finalize_instances(room_ids, np.zeros(12, np.int64), sizes, fraction)
    np.testing.assert_array_equal(kept, [0] * 4 + [-1] * 3 + [1] * 5)
    with pytest.raises(PredictError, match="not both"):
        S3DIS.predict_instance_sizes(cfg, tmp_path, 5, "sizes.txt", 4)


def test_mean_instance_sizes_come_from_the_flag_the_run_folder_the_lists_or_nowhere(tmp_path, capsys):
    cfg = config.load(None, [f'data.data_dir="{tmp_path / "data"}"'])
    run_dir, lists = tmp_path / "run", tmp_path / "data" / "lists"
    run_dir.mkdir()
    lists.mkdir(parents=True)
    sizes, fraction, text = S3DIS.predict_instance_sizes(cfg, run_dir, 3)
    assert not sizes.any() and "NOT filtered" in text
    warning = capsys.readouterr().err.strip().splitlines()
    looked = f"neither {run_dir / 'mean_ins_size.txt'} nor {lists / 'mean_ins_size_woArea3.txt'} exists"
    assert len(warning) == 1 and looked in warning[0]
    room_ids = np.array([0] * 4 + [1] * 1)
    np.testing.assert_array_equal(postprocess.finalize_instances(room_ids, np.zeros(5, np.int64), sizes, fraction),
                                  [0] * 4 + [1])  # every instance kept, however small
    np.savetxt(lists / "mean_ins_size_woArea3.txt", np.full(13, 40.0))
    assert S3DIS.predict_instance_sizes(cfg, run_dir, 3)[0].tolist() == [40.0] * 13
    np.savetxt(run_dir / "mean_ins_size.txt", np.arange(13.0))  # the run's own (a converted run) come first
    sizes, fraction, text = S3DIS.predict_instance_sizes(cfg, run_dir, 3)
    assert sizes.tolist() == list(range(13)) and fraction == cfg["eval"]["size_fraction"] and str(run_dir) in text
    np.savetxt(tmp_path / "given.txt", np.full(13, 7.0))
    assert S3DIS.predict_instance_sizes(cfg, run_dir, 3, tmp_path / "given.txt")[0].tolist() == [7.0] * 13
    with pytest.raises(PredictError, match="--mean_ins_size .*nope.txt: no such file"):
        S3DIS.predict_instance_sizes(cfg, run_dir, 3, tmp_path / "nope.txt")
    (run_dir / "mean_ins_size.txt").write_text("nan\n" * 13)
    with pytest.raises(s3dis.DataError, match="must be finite and non-negative"):
        S3DIS.predict_instance_sizes(cfg, run_dir, 3)
    assert capsys.readouterr().err == ""  # the warning is for the case without sizes only


# ------------------------------------------------------------------------------------------------
# The streaming RoomSegmenter against the former all-rows-first logic
# ------------------------------------------------------------------------------------------------


def _members_by_scan(room, block_size, stride, min_points):
    """Every corner of the block grid tested against every point (the former block search):
    (i, j, members) of each block of its corner (i, j) x stride."""
    xyz = room.xyz.astype(np.float64)
    members = []
    for x0, y0 in s3dis.test_block_origins(xyz.max(axis=0), block_size, stride):
        inside = (xyz[:, 0] >= x0) & (xyz[:, 0] <= x0 + block_size) & (xyz[:, 1] >= y0) & (xyz[:, 1] <= y0 + block_size)
        if inside.sum() >= min_points:
            members.append((round(x0 / stride), round(y0 / stride), np.flatnonzero(inside)))
    return members


def _segment_all_rows_first(segmenter, room, seed):
    """The former RoomSegmenter: every chunk of every block through the network first (float64
    probability sums), then clustering block by block."""
    cfg, size = segmenter.cfg, segmenter.block_size
    members = _members_by_scan(room, size, cfg["stride"], cfg["min_block_points"])
    normalised = _normalised(room)
    chunks, owners = [], []
    for b, (i, j, indices) in enumerate(members):
        for chunk in _chunks(indices, segmenter.num_points, np.random.default_rng([seed, 1, i, j])):  # a block's own seed
            chunks.append(chunk)
            owners.append(b)
    data = np.stack([s3dis.block_channels(room, c, s3dis.room_limit(room), size) for c in chunks])
    network = segmenter.inference._functions[0]  # (logits, embeddings, probabilities) of one batch
    outputs = [network(data[s : s + cfg["batch_size"]]) for s in range(0, len(data), cfg["batch_size"])]
    probabilities = np.concatenate([p for _, _, p in outputs])
    embeddings = np.concatenate([e for _, e, _ in outputs])
    sums = np.zeros((len(room), probabilities.shape[-1]), np.float32)
    visits = np.zeros(len(room))
    rows_per_point = np.zeros(len(room))
    merger = segmenter.new_merger()
    owners = np.array(owners)
    for b in range(len(members)):
        rows = np.flatnonzero(owners == b)
        points, first = np.unique(np.concatenate([chunks[r] for r in rows]), return_index=True)
        block_p = probabilities[rows].reshape(-1, probabilities.shape[-1])[first]
        block_e = embeddings[rows].reshape(-1, embeddings.shape[-1])[first]
        labels, centres = postprocess.mean_shift(block_e, cfg["bandwidth"])
        merger.merge(normalised[points], labels, postprocess.cluster_classes(labels, block_p.argmax(axis=1), len(centres)))
        sums[points] += block_p
        visits[points] += 1
        rows_per_point[points] += segmenter.num_points / len(points)
    mean_p = sums / visits[:, None]  # these rooms have no point outside the blocks
    semantic = mean_p.argmax(axis=1)
    instance = postprocess.finalize_instances(
        merger.assign(normalised), semantic, segmenter.mean_ins_size, cfg["size_fraction"], weights=rows_per_point
    )
    return semantic, instance, mean_p.max(axis=1)


@pytest.mark.parametrize("network", ["oracle", "tiny"])
def test_streaming_gives_the_results_of_running_all_rows_first(rng, network):
    if network == "oracle":
        room = oracle_room(rng)
        cfg = config.load(None, ["eval.batch_size=3"])  # batches that straddle blocks
        segmenter = RoomSegmenter(OracleNet(), 256, np.full(13, 100.0), cfg["eval"])
    else:
        xyz = _scene(rng, 5000).astype(np.float32)
        room = s3dis.Room("scene", xyz - xyz.min(axis=0), rng.integers(0, 256, (5000, 3)).astype(np.uint8),
                          np.zeros(5000, np.int32), np.zeros(5000, np.int32))
        cfg = config.load(None, TINY_MODEL + ["eval.batch_size=3"])
        segmenter = RoomSegmenter(_tiny_model(cfg), TINY_POINTS, np.full(13, 50.0), cfg["eval"])
    result = segmenter.segment(room, seed=4)
    semantic, instance, score = _segment_all_rows_first(segmenter, room, 4)
    np.testing.assert_array_equal(result.semantic_pred, semantic)
    np.testing.assert_array_equal(result.instance_pred, instance)
    np.testing.assert_allclose(result.score, score, rtol=1e-6)  # sums are float32 now
    assert result.score.dtype == np.float32


def test_block_search_finds_the_blocks_of_a_full_grid_scan(rng):
    xyz = (rng.integers(0, 16, (3000, 3)) * 0.25).astype(np.float32)  # many points on block edges
    xyz[:150] += [40.0, 25.0, 0.0]  # a far patch: a large, mostly empty extent
    room = s3dis.Room("grid", xyz, np.zeros((3000, 3), np.uint8), np.zeros(3000, np.int32), np.zeros(3000, np.int32))
    for min_points in (1, 20, 100):
        cfg = config.load(None, [f"eval.min_block_points={min_points}"])["eval"]
        found = RoomSegmenter(OracleNet(), 256, np.full(13, 100.0), cfg).block_members(room)
        scanned = _members_by_scan(room, 1.0, 0.5, min_points)
        blocks = RoomSegmenter(OracleNet(), 256, np.full(13, 100.0), cfg).blocks(room)
        assert len(found) == len(scanned) == len(blocks)
        for a, (i, j, b), (bi, bj, c) in zip(found, scanned, blocks):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(c, b)
            assert (bi, bj) == (i, j)


# ------------------------------------------------------------------------------------------------
# ShapeNet part runs: one shape per input
# ------------------------------------------------------------------------------------------------

SHAPENET_POINTS = 256
SHAPENET_MODEL = [f"data.num_points={SHAPENET_POINTS}", "model.npoints=[128, 64, 32, 16]", "eval.batch_size=4"]
MUG = (36, 37)  # the Mug's global part ids
SHAPE_OUTPUTS = ("_parts.ply", "_instances.ply", "_labels.txt", "_instances.txt", "_labels.npz", ".png")


@pytest.fixture(scope="module")
def shapenet_run(tmp_path_factory):
    """A ShapeNet part run folder (the shipped shapenet_part config, a small network) with tiny weights."""
    run_dir = tmp_path_factory.mktemp("shapenet_run") / "run"
    cfg = config.load("shapenet_part", SHAPENET_MODEL)
    model = build_model(cfg)
    points = np.random.default_rng(0).uniform(-1, 1, (4, SHAPENET_POINTS, 6)).astype(np.float32)
    model.set_bn_decay(0.0)  # moving statistics := this batch's
    model(points, training=True)  # one training-mode pass: finite batch-norm statistics
    checkpoints.write_run_files(run_dir, cfg)
    checkpoints.save_weights(model, run_dir / "weights")
    return run_dir


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Mugs in their own frames (scaled by 7, far from the origin): a txt of 700 points with parts,
    a comment and a NaN line; a PLY of exactly one network row with normals; and bad inputs."""
    from jsnet_tf.data import shapenet

    folder = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(5)
    rows = shapenet.synthetic_shape_points("Mug", rng, 2048)[:700]
    rows[:, :3] = rows[:, :3] * 7.0 + [100.0, -5.0, 2.0]
    lines = ["%.6f %.6f %.6f %.6f %.6f %.6f %d" % tuple(r) for r in rows]
    rows = np.array([[float(v) for v in line.split()] for line in lines])  # the values as written
    lines.insert(3, "nan 0 0 0 0 1 36")
    (folder / "mug.txt").write_text("# x y z nx ny nz part\n" + "\n".join(lines) + "\n")
    row_shape = shapenet.synthetic_shape_points("Mug", rng, 2048)[:SHAPENET_POINTS]
    row_shape[:, :3] = row_shape[:, :3] * 0.3 - 40.0
    io.write_ply(folder / "cup.ply", row_shape[:, :3],
                 extra={"nx": row_shape[:, 3], "ny": row_shape[:, 4], "nz": row_shape[:, 5]})
    np.savetxt(folder / "bare.txt", rows[:, :3], fmt="%.6f")
    wrong = rows.copy()
    wrong[10, 6] = 5  # a Bag part in a mug
    np.savetxt(folder / "wrong.txt", wrong, fmt="%.6f")
    expected = {"mug": (rows[:, :3], rows[:, 3:6], rows[:, 6].astype(np.int32)),
                "cup": (row_shape[:, :3], row_shape[:, 3:6], None)}
    return folder, expected


@pytest.fixture(scope="module")
def shapes_predicted(shapenet_run, shapes, tmp_path_factory):
    folder, _ = shapes
    out = tmp_path_factory.mktemp("shapes_predicted")
    names = ["mug.txt", "bare.txt", "cup.ply", "wrong.txt"]
    result = _predict("--workdir", shapenet_run, "--category", "mug", *(folder / n for n in names), "--out", out)
    return out, result


@pytest.mark.slow
def test_a_shapenet_run_labels_every_point_of_a_shape_among_its_categorys_parts(shapes_predicted, shapes):
    from jsnet_tf.tasks import part_metrics

    out, result = shapes_predicted
    _, expected = shapes
    assert "Traceback" not in result.stderr
    assert "mug.txt: 700 points; dropped 1 with NaN or infinite values; 3 network rows of 256 points" in result.stdout
    for stem, (xyz, normals, part_gt) in expected.items():
        for suffix in SHAPE_OUTPUTS:
            assert (out / f"{stem}{suffix}").stat().st_size > 0, (stem, suffix)
        with np.load(out / f"{stem}_labels.npz") as z:
            np.testing.assert_array_equal(z["xyz"], xyz)
            np.testing.assert_array_equal(z["normals"], normals)
            part, instance, score = z["part"], z["instance"], z["score"]
            assert str(z["category"]) == "Mug" and list(z["classes"])[36] == "Mug/part0"
            np.testing.assert_array_equal(np.unique(instance), np.arange(len(z["instance_part"])))
            if part_gt is not None:
                np.testing.assert_array_equal(z["part_gt"], part_gt)
                reference = np.mean([np.sum((part_gt == p) & (part == p)) / np.sum((part_gt == p) | (part == p))
                                     if np.any((part_gt == p) | (part == p)) else 1.0 for p in MUG])
                assert float(z["shape_iou"]) == pytest.approx(reference, rel=1e-12)
                assert float(z["shape_iou"]) == part_metrics.shape_part_ious(part_gt, part, "Mug").mean()
        assert set(np.unique(part)) <= set(MUG) and (score >= 0.5 - 1e-6).all() and (score <= 1 + 1e-6).all()
        for kind, colours in (("parts", io.semantic_colors(part, shapenet.PALETTE)), ("instances", io.instance_colors(instance))):
            ply = io.read_point_cloud(out / f"{stem}_{kind}.ply")
            np.testing.assert_array_equal(ply.xyz, xyz)
            np.testing.assert_array_equal(ply.rgb, colours)
            np.testing.assert_array_equal(ply.extra["part"], part)
            np.testing.assert_array_equal(ply.extra["instance"], instance)
        table = np.loadtxt(out / f"{stem}_labels.txt", ndmin=2)
        assert (out / f"{stem}_labels.txt").read_text().startswith("# x y z part instance score\n")
        np.testing.assert_allclose(table[:, :3], xyz, rtol=0, atol=5.1e-7)
        np.testing.assert_array_equal(table[:, 3], part)
        np.testing.assert_array_equal(table[:, 4], instance)
    assert "part IoU" in next(line for line in result.stdout.splitlines() if line.startswith(str(shapes[0] / "mug.txt:")) and "->" in line)


@pytest.mark.slow
def test_a_shape_of_one_network_row_gets_the_networks_restricted_argmax_and_mean_shift(shapenet_run, shapes_predicted, shapes):
    """The PLY shape holds exactly num_points points: one row in file order, normalised to the unit sphere."""
    out, _ = shapes_predicted
    _, expected = shapes
    xyz, normals, _ = expected["cup"]
    model, cfg, _ = checkpoints.load_run(shapenet_run)
    centred = xyz - xyz.mean(axis=0)
    unit = centred / np.sqrt((centred ** 2).sum(axis=1)).max()
    outputs = model(np.concatenate([unit, normals], axis=1)[None].astype(np.float32), training=False)
    logits = outputs["semantic_logits"].numpy()[0]
    part = MUG[0] + logits[:, MUG[0] : MUG[1] + 1].argmax(axis=1)
    instance, _ = postprocess.mean_shift(outputs["embeddings"].numpy()[0], cfg["eval"]["bandwidth"])
    with np.load(out / "cup_labels.npz") as z:
        np.testing.assert_array_equal(z["part"], part)
        # The instances: the same mean-shift clusters, up to renumbering; the embeddings of predict's
        # process and of this one may differ in float32's last bits, which can move a point (and so
        # a cluster's number) between two of a tiny random network's near-equal modes.
        from sklearn.metrics import adjusted_rand_score

        assert adjusted_rand_score(z["instance"], instance) > 0.95
        assert abs(len(np.unique(z["instance"])) - len(np.unique(instance))) <= 1
        assert "part_gt" not in z.files and "shape_iou" not in z.files


@pytest.mark.slow
def test_shapes_without_normals_or_with_parts_outside_the_category_are_one_line_and_no_outputs(shapes_predicted, shapes):
    out, result = shapes_predicted
    folder, _ = shapes
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("predict: error:")]
    assert errors == [
        f"predict: error: {folder / 'bare.txt'}:1: expected 6 (x y z nx ny nz) or 7 (x y z nx ny nz part) numbers, "
        "found 3: normals are required",
        f"predict: error: {folder / 'wrong.txt'}:11: part 5 is not a part of Mug (36..37)",
    ]
    assert result.stderr.splitlines()[-1] == "predict: 2 of 4 inputs failed; their outputs were not written"
    assert {p.name.split("_")[0].split(".")[0] for p in out.iterdir()} == {"mug", "cup"}


@pytest.mark.slow
def test_flags_of_the_other_dataset_are_one_clear_line(run, shapenet_run, shapes, tmp_path):
    folder, _ = shapes
    result = _predict("--workdir", run, "--category", "Mug", folder / "mug.txt", "--out", tmp_path / "a")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"predict: error: --category is for ShapeNet part runs; {run / 'area2'} is a S3DIS run"
    )
    result = _predict("--workdir", shapenet_run, "--min_instance_points", "5", "--nocolor", folder / "mug.txt",
                      "--out", tmp_path / "b")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"predict: error: --color, --min_instance_points are for S3DIS and ScanNet v2 runs; {shapenet_run} is a ShapeNet part "
        "run"
    )
    assert not any((tmp_path / "a").iterdir()) and not any((tmp_path / "b").iterdir())


def test_shape_files_are_read_with_their_normals_and_checked_line_by_line(tmp_path):
    from jsnet_tf.tasks.part_prediction import read_shape_input

    (tmp_path / "ok.txt").write_text("# a mug\n\n0 0 0 0 0 1 36\n1 2 3 0 1 0 37\n// done\n")
    shape = read_shape_input(tmp_path / "ok.txt", category="Mug")
    np.testing.assert_array_equal(shape.xyz, [[0, 0, 0], [1, 2, 3]])
    np.testing.assert_array_equal(shape.normals, [[0, 0, 1], [0, 1, 0]])
    assert shape.part.tolist() == [36, 37] and shape.part.dtype == np.int32
    (tmp_path / "six.txt").write_text("0 0 0 0 0 1\n1 1 1 1 0 0\n")
    assert read_shape_input(tmp_path / "six.txt").part is None
    cases = {
        "ragged.txt": ("0 0 0 0 0 1\n1 1 1 1 0\n", r"ragged.txt:2: expected 6 values \(as on line 1\), found 5"),
        "word.txt": ("# h\n0 0 0 0 0 1 36\n0 0 x 0 0 1 36\n", "word.txt:3: not a number: 'x'"),
        "half.txt": ("0 0 0 0 0 1 36.5\n", "half.txt:1: part 36.5 is not a part id 0..49"),
        "far.txt": ("# h\n\n0 0 0 0 0 1 36\n0 0 0 0 0 1 60\n", "far.txt:4: part 60 is not a part id 0..49"),
        "blank.txt": ("# only a comment\n", "no points"),
        "empty.txt": ("", "empty file"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(PredictError, match=message):
            read_shape_input(tmp_path / name)
    (tmp_path / "nan.txt").write_text("0 0 0 0 0 1\nnan 1 1 1 0 0\n2 2 2 0 0 1\n")
    shape = read_shape_input(tmp_path / "nan.txt")
    assert shape.num_dropped == 1 and shape.xyz[:, 0].tolist() == [0, 2]
    with pytest.raises(PredictError, match=r"nan.txt:2: a NaN or infinite value \(1 of 3 points have one\)"):
        read_shape_input(tmp_path / "nan.txt", nan_policy="error")
    io.write_ply(tmp_path / "plain.ply", np.zeros((4, 3)), extra={"nx": np.ones(4)})
    with pytest.raises(PredictError, match=r"plain.ply: no normals \(ny, nz missing; properties: x, y, z, nx\)"):
        read_shape_input(tmp_path / "plain.ply")
    with pytest.raises(PredictError, match="takes .txt shapes .* not .npy"):
        read_shape_input(tmp_path / "shape.npy")


def test_categories_are_matched_in_any_case():
    from jsnet_tf.tasks.part_prediction import shape_category

    assert shape_category("airPLANE") == "Airplane" and shape_category(None) is None
    with pytest.raises(PredictError, match="--category Plane: not a ShapeNet part category"):
        shape_category("Plane")


def test_a_failing_shape_output_leaves_none_of_the_files(tmp_path, monkeypatch, rng):
    from jsnet_tf import viz
    from jsnet_tf.tasks.part_evaluation import ShapePrediction
    from jsnet_tf.tasks.part_prediction import ShapeInput, write_shape_outputs

    xyz = rng.uniform(-1, 1, (50, 3))
    shape = ShapeInput(xyz, np.tile([0.0, 0.0, 1.0], (50, 1)), np.full(50, 36, np.int32))
    prediction = ShapePrediction(np.full(50, 37, np.int32), np.zeros(50, np.int32), np.ones(50, np.float32),
                                 np.array([37], np.int32), np.array([1.0]))

    def broken(*args, **kwargs):
        raise viz.VizError("cannot draw")

    monkeypatch.setattr(viz, "render_segmentation_panel", broken)
    with pytest.raises(viz.VizError):
        write_shape_outputs(tmp_path, "shape", shape, xyz, prediction, [str(p) for p in range(50)], "Mug", 0.5)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    written = write_shape_outputs(tmp_path, "shape", shape, xyz, prediction, [str(p) for p in range(50)], "Mug", 0.5,
                                  txt=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    assert [p.name for p in written][-1] == "shape_labels.npz" and len(written) == 5


# ------------------------------------------------------------------------------------------------
# LAS / LAZ clouds larger than one pass, out of core
# ------------------------------------------------------------------------------------------------


def _write_las(path, xyz, rgb):
    """A LAS 1.4 file (point format 7, millimetres) of float64 points and 8-bit colours, by laspy."""
    import laspy

    header = laspy.LasHeader(point_format=7, version="1.4")
    header.scales, header.offsets = np.full(3, 0.001), np.floor(xyz.min(axis=0))
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.red, las.green, las.blue = (rgb[:, k].astype(np.uint16) for k in range(3))
    las.write(str(path))


def _same_instances(a, a_table, b, b_table):
    """Whether two instance labelings group the points alike and their instance lists agree
    (classes and points exactly, confidences to float64 rounding) once renumbered."""
    if not _same_up_to_renumbering(a, b):
        return False
    held = a >= 0
    match = dict(zip(a[held].tolist(), b[held].tolist()))
    order = np.searchsorted(b_table.ids, [match[i] for i in a_table.ids.tolist()])
    np.testing.assert_array_equal(a_table.classes, b_table.classes[order])
    np.testing.assert_array_equal(a_table.points, b_table.points[order])
    np.testing.assert_allclose(a_table.confidences, b_table.confidences[order], rtol=1e-12)
    return len(a_table.ids) == len(b_table.ids)


def test_a_las_cloud_out_of_core_gets_the_labels_of_the_in_memory_path(rng, tmp_path):
    from jsnet_tf import out_of_core

    room, xyz = _oracle_cloud(rng)
    far = xyz.min(axis=0) + [[9.0, 0.5, 0.3], [9.2, 0.4, 0.3], [1.0, 6.0, 0.0]]  # in no block: nearest point's labels
    xyz = np.concatenate([xyz, far]) + [512_000.0, 4_100_000.0, 0.0]
    rgb = np.concatenate([room.rgb, np.zeros((3, 3), np.uint8)])
    _write_las(tmp_path / "cloud.las", xyz, rgb)
    cloud = io.read_point_cloud(tmp_path / "cloud.las")
    segmenter = RoomSegmenter(OracleNet(), 256, np.full(13, 100.0), config.load(None)["eval"])
    tiled = CloudSegmenter(segmenter, max_points_per_pass=6000)
    steps = []
    result = out_of_core.segment_las(tiled, out_of_core.LasSpill(tmp_path / "cloud.las", tmp_path), True, "cloud",
                                     seed=4, progress=steps.append)
    assert result.num_tiles == len(tiled.plan(cloud.xyz)[1]) > 2 and sum(steps) == tiled.count_blocks(cloud.xyz)
    semantic, instance, confidence, score = result.labels(0, len(xyz))
    shifted = (cloud.xyz - result.offset).astype(np.float32)
    for k, tile in enumerate(tiled.plan(cloud.xyz)[1]):  # each tile's file: exactly the points near it
        np.testing.assert_array_equal(out_of_core._tile_points(tmp_path, k)["row"], tiled.near_tile(shifted, tile))
    for max_points in (6000, 0):  # tiled and single-pass in memory
        in_memory = CloudSegmenter(segmenter, max_points).segment(cloud.xyz, cloud.rgb, "cloud", seed=4)
        np.testing.assert_array_equal(semantic, in_memory.semantic)
        np.testing.assert_array_equal(score, in_memory.score)
        assert _same_instances(instance, result.instances, in_memory.instance, in_memory.instances)
        np.testing.assert_allclose(confidence, prediction_confidence(in_memory), rtol=1e-6)
        np.testing.assert_array_equal(result.offset, cloud.xyz.min(axis=0))
    np.testing.assert_array_equal(semantic[-3:], semantic[[np.argmin(np.linalg.norm(cloud.xyz[:-3] - p, axis=1))
                                                           for p in cloud.xyz[-3:]]])
    assert (instance[-3:] == -1).all() and (semantic[:-3] == room.semantic).all()


def prediction_confidence(prediction):
    from jsnet_tf.prediction import instance_confidence_of_points

    return instance_confidence_of_points(prediction.instance, prediction.instances)


@pytest.fixture(scope="module")
def large_predicted(run, scans_predicted, tmp_path_factory):
    """predict of the LAZ of `scans_predicted` in one pass in memory, and out of core in tiles of
    1000 points with the bad LAS / LAZ files (which then go out of core too)."""
    folder, _, _ = scans_predicted
    outputs = {}
    for name, limit, inputs in (("memory", 0, ["site.laz"]), ("core", 1000, ["site.laz", "cut.laz", "count.las"])):
        out = tmp_path_factory.mktemp(f"large_{name}")
        outputs[name] = out, _predict("--workdir", run, "--area", 2, "--format", "ply,txt,npz,laz",
                                      "--max_points_per_pass", limit, *(folder / n for n in inputs), "--out", out)
    return folder, outputs


@pytest.mark.slow
def test_a_laz_out_of_core_gets_the_outputs_of_the_in_memory_path(large_predicted):
    import laspy
    import plyfile

    folder, outputs = large_predicted
    (memory, in_memory), (core, out_of_core) = outputs["memory"], outputs["core"]
    assert in_memory.returncode == 0 and "Traceback" not in out_of_core.stderr
    assert "out of core" in out_of_core.stdout and "no picture (out of core)" in out_of_core.stdout
    with np.load(memory / "site_labels.npz") as a, np.load(core / "site_labels.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in ("xyz", "offset", "classes", "semantic"):
            np.testing.assert_array_equal(a[name], b[name])
            assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a["score"], b["score"])  # one block a call (TINY_MODEL)
        semantic, instance = b["semantic"], b["instance"]
        assert _same_up_to_renumbering(a["instance"], instance) and (instance >= 0).any()
        mine = metrics.InstanceTable(b["instance_ids"], b["instance_classes"], b["instance_confidences"],
                                     b["instance_points"])
        theirs = metrics.InstanceTable(a["instance_ids"], a["instance_classes"], a["instance_confidences"],
                                       a["instance_points"])
        held = instance >= 0
        match = dict(zip(instance[held].tolist(), a["instance"][held].tolist()))
        order = np.searchsorted(theirs.ids, [match[i] for i in mine.ids.tolist()])
        np.testing.assert_array_equal(mine.classes, theirs.classes[order])
        np.testing.assert_array_equal(mine.points, theirs.points[order])
        np.testing.assert_allclose(mine.confidences, theirs.confidences[order], rtol=1e-5)
    listed = metrics.read_instance_list(core / "site_instances.txt")
    np.testing.assert_array_equal(listed.ids, mine.ids)
    np.testing.assert_array_equal(listed.confidences, mine.confidences)
    for suffix in ("_semantic.ply", "_instance.ply"):
        a, b = (plyfile.PlyData.read(str(out / f"site{suffix}"))["vertex"].data for out in (memory, core))
        assert a.dtype == b.dtype
        for name in ("x", "y", "z", "semantic") + (("red", "green", "blue") if suffix == "_semantic.ply" else ()):
            np.testing.assert_array_equal(a[name], b[name])
        np.testing.assert_array_equal(b["instance"], instance)
    np.testing.assert_array_equal(np.loadtxt(core / "site_labels.txt")[:, :5],
                                  np.concatenate([b["x"][:, None], b["y"][:, None], b["z"][:, None],
                                                  semantic[:, None], instance[:, None]], axis=1).round(6))
    source, las = laspy.read(str(folder / "site.laz")), laspy.read(str(core / "site_labels.laz"))
    for name in ("X", "Y", "Z", "red", "green", "blue", "intensity"):
        np.testing.assert_array_equal(las[name], source[name])
    np.testing.assert_array_equal(las.classification, semantic + 64)
    np.testing.assert_array_equal(las.instance, instance)
    assert (memory / "site.png").exists() and not (core / "site.png").exists()


@pytest.mark.slow
def test_bad_las_files_out_of_core_are_one_line_each_and_leave_nothing(large_predicted):
    folder, outputs = large_predicted
    out, result = outputs["core"]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("predict: error:")]
    assert len(errors) == 2
    assert errors[0].startswith(f"predict: error: {folder / 'cut.laz'}: truncated or corrupt LAS/LAZ point data")
    assert errors[1] == f"predict: error: {folder / 'count.las'}: the LAS header declares 2100 points, the file holds 2000"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"site{suffix}" for suffix in ("_semantic.ply", "_instance.ply", "_labels.txt", "_labels.npz", "_labels.laz",
                                       "_instances.txt"))


def test_the_scratch_folder_of_a_killed_run_is_removed_by_the_next_run_on_that_file(tmp_path):
    import os
    import subprocess
    import sys

    from jsnet_tf import out_of_core

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owners = {"killed": finished.stdout.strip(), "running": str(os.getpid()), "starting": None}
    for name, owner in owners.items():
        (tmp_path / f".site.{name}.spill").mkdir()
        if owner is not None:
            (tmp_path / f".site.{name}.spill" / "owner").write_text(owner)
    (tmp_path / ".other.killed.spill").mkdir()
    (tmp_path / ".other.killed.spill" / "owner").write_text(owners["killed"])
    out_of_core._remove_abandoned_scratch(tmp_path, "site")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.killed.spill", ".site.running.spill",
                                                          ".site.starting.spill"]
