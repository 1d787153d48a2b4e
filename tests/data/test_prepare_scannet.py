"""The ScanNet v2 preparation (jsnet_tf.data.prepare_scannet) on a release written by the test:
two labelled scenes (one with the release's quirks) and a test scene, in the release's formats."""

import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from jsnet_tf.data import prepare_scannet, s3dis, scannet
from jsnet_tf.errors import DataError
from tests.data import scannet_release as release

REPO = Path(__file__).resolve().parents[2]
TRAIN, VAL, TEST = "scene0001_00", "scene0002_00", "scene0707_00"

# segment id: (vertex count, nyu40, class, instance), by hand from the objects below
TRAIN_SEGMENTS = {5: (40, 1, 0, -1),     # wall
                  7: (30, 5, 4, 0),      # office chair (segments 9 and 7)
                  9: (30, 5, 4, 0),
                  11: (25, 22, -1, -1),  # ceiling: nyu40 22 is not scored
                  8: (45, 5, 4, 1),      # chair
                  13: (30, 0, -1, -1)}   # in no object
TRAIN_OBJECTS = [("wall", [5]), ("office chair", [9, 7]), ("ceiling", [11]), ("chair", [8])]
# Both quirks: segments in two objects (each goes to the later one: the bookshelf loses its only
# segment to the box) and the whole list given twice, as scene0217_00 does.
VAL_OBJECTS = [("table", [100, 101]), ("trash can", [101, 102]), ("chair", [102]),
               ("bookshelf", [104]), ("box", [103, 104])]
VAL_SEGMENTS = {100: (20, 7, 6, 0), 101: (20, 39, 19, 1), 102: (20, 5, 4, 2), 103: (20, 29, -1, -1),
                104: (20, 29, -1, -1)}
NUM_POINTS = 200  # the train scene's vertex count: its one block holds each vertex once


def make_scene_data(segment_table, corner, seed):
    """(xyz float32 (multiples of 1/64 inside 0.9 m), rgb, segment id per vertex (shuffled))."""
    rng = np.random.default_rng(seed)
    seg = rng.permutation(np.concatenate([np.full(v[0], s) for s, v in segment_table.items()]))
    xyz = (np.asarray(corner, np.float32) + rng.integers(0, 57, (len(seg), 3)) / np.float32(64)
           ).astype(np.float32)
    return xyz, rng.integers(0, 256, (len(seg), 3), dtype=np.uint8), seg


def make_release(root):
    """root/raw (scans/, scans_test/, the label table) and root/splits; returns the scene data."""
    raw = Path(root) / "raw"
    data = {TRAIN: make_scene_data(TRAIN_SEGMENTS, (-3.5, 12.25, 0.5), 1),
            VAL: make_scene_data(VAL_SEGMENTS, (250.0, -8.0, -1.25), 2)}
    release.write_scene(raw / "scans", TRAIN, *data[TRAIN], TRAIN_OBJECTS)
    release.write_scene(raw / "scans", VAL, *data[VAL], VAL_OBJECTS + VAL_OBJECTS)
    rng = np.random.default_rng(3)
    data[TEST] = ((rng.integers(0, 57, (30, 3)) / 64).astype(np.float32),
                  rng.integers(0, 256, (30, 3), dtype=np.uint8), None)
    release.write_scene(raw / "scans_test", TEST, data[TEST][0], data[TEST][1])
    release.write_table(raw / scannet.LABEL_MAP_FILE)
    release.write_splits(Path(root) / "splits", [TRAIN], [VAL], [TEST])
    return data


def expected_labels(segment_table, seg):
    """(nyu40, semantic, instance) of each vertex from the by-hand segment table."""
    return [np.array([segment_table[s][k] for s in seg]) for k in (1, 2, 3)]


def all_files(out):
    return sorted(str(p.relative_to(out)) for p in Path(out).rglob("*") if p.is_file())


def run_prepare(root, out, **kw):
    kw.setdefault("num_points", NUM_POINTS)
    with pytest.warns(s3dis.DataWarning) if kw.pop("warns", True) else _no_warning():
        return prepare_scannet.prepare(Path(root) / "raw", out, split_dir=Path(root) / "splits",
                                       progress=False, **kw)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(root, out, scene data) of the hand-made release prepared once (copy `out` to change it)."""
    root = tmp_path_factory.mktemp("scannet")
    data = make_release(root)
    with pytest.warns(s3dis.DataWarning) as caught:
        done = prepare_scannet.prepare(root / "raw", root / "out", split_dir=root / "splits",
                                       num_points=NUM_POINTS, progress=False)
    assert done == {"prepared": [TRAIN, VAL, TEST], "skipped": []}
    aggregation = root / "raw" / "scans" / VAL / f"{VAL}.aggregation.json"
    assert sorted(str(w.message) for w in caught) == [
        f"{aggregation}: 3 segment(s) named by more than one object, each given to the object "
        f"listed last",
        f"{aggregation}: dropped 5 object(s) that repeat an earlier one (same label and "
        f"segments)"]
    return root, root / "out", data


# --------------------------------------------------------------------------------- the outputs

def test_points_labels_instances_and_ignored_points_exactly(prepared):
    _, out, data = prepared
    for name, table in ((TRAIN, TRAIN_SEGMENTS), (VAL, VAL_SEGMENTS)):
        xyz, rgb, seg = data[name]
        scene = scannet.load_scene(out / "scenes" / f"{name}.npz")
        assert scene.name == name and len(scene) == len(xyz)
        corner = xyz.astype(np.float64).min(axis=0)
        np.testing.assert_array_equal(scene.offset, corner)
        np.testing.assert_array_equal(scene.xyz, xyz - xyz.min(axis=0))  # the release's order
        assert scene.xyz.dtype == np.float32 and scene.xyz.min() == 0
        np.testing.assert_array_equal(scene.rgb, rgb)
        nyu40, semantic, instance = expected_labels(table, seg)
        np.testing.assert_array_equal(scene.nyu40, nyu40)
        np.testing.assert_array_equal(scene.semantic, semantic)
        np.testing.assert_array_equal(scene.instance, instance)
    train = scannet.load_scene(out / "scenes" / f"{TRAIN}.npz")
    assert (train.semantic == -1).sum() == 55 and (train.nyu40 == 0).sum() == 30
    assert np.unique(train.instance).tolist() == [-1, 0, 1]
    test = scannet.load_scene(out / "scenes" / f"{TEST}.npz")
    np.testing.assert_array_equal(test.xyz + test.offset, data[TEST][0])
    assert (test.semantic == -1).all() and (test.instance == -1).all() and (test.nyu40 == 0).all()


def test_lists_mean_sizes_and_settings(prepared):
    root, out, _ = prepared
    assert all_files(out) == ["lists/mean_ins_size_train.txt", "lists/test.txt", "lists/train.txt",
                              "lists/val.txt", "prepare.json", f"scenes/{TRAIN}.npz",
                              f"scenes/{VAL}.npz", f"scenes/{TEST}.npz"]
    for split, name in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        assert (out / "lists" / f"{split}.txt").read_text() == f"scenes/{name}.npz\n"
        assert s3dis.read_file_list(scannet.list_path(out, split)) == [out / "scenes" / f"{name}.npz"]
    # the train scene's two chairs: 60 and 45 points, each once in the scene's one block
    sizes = s3dis.read_mean_ins_size(scannet.mean_ins_size_path(out), scannet.NUM_CLASSES)
    assert sizes.tolist() == [0.0] * 4 + [52.0] + [0.0] * 15
    recorded = json.loads((out / "prepare.json").read_text())
    assert recorded["num_points"] == NUM_POINTS and recorded["seed"] == 0
    assert [recorded["split_lists"][s].split(",")[0] for s in scannet.SPLITS] == ["1 scenes"] * 3
    assert recorded["label_map"].startswith("sha256 ")


def test_raw_may_be_the_scans_folder(prepared, tmp_path):
    """--raw scans/: the test scene is found in the scans_test/ beside it, the label table in the
    folder above; the outputs are those of --raw on the download's root."""
    root, out, _ = prepared
    with pytest.warns(s3dis.DataWarning):
        prepare_scannet.prepare(root / "raw" / "scans", tmp_path / "o", split_dir=root / "splits",
                                num_points=NUM_POINTS, progress=False)
    assert all_files(tmp_path / "o") == all_files(out)
    for name in (TRAIN, VAL, TEST):
        assert (tmp_path / "o" / "scenes" / f"{name}.npz").read_bytes() == \
            (out / "scenes" / f"{name}.npz").read_bytes()


def test_sizes_of_many_blocks_match_the_blocks(prepared, tmp_path):
    """With fewer points a block than the scene has, the sizes are those of its sampled blocks
    (seeded by the scene's name), as S3DIS's mean_ins_size counts them."""
    root = prepared[0]
    out = tmp_path / "o"
    with pytest.warns(s3dis.DataWarning):
        prepare_scannet.prepare(root / "raw", out, split_dir=root / "splits", num_points=64,
                                seed=5, progress=False, splits=["train", "val"])
    scene = scannet.load_scene(out / "scenes" / f"{TRAIN}.npz")
    blocks = s3dis.test_blocks(scene, num_points=64,
                               rng=np.random.default_rng([5, zlib.crc32(TRAIN.encode())]))
    counts = {g: int((blocks.instance == g).sum()) for g in (0, 1)}
    assert sum(counts.values()) > 0
    sizes = s3dis.read_mean_ins_size(scannet.mean_ins_size_path(out), 20)
    assert sizes[4] == int((counts[0] + counts[1]) / 2) and sizes.sum() == sizes[4]


# ------------------------------------------------------------------------------- bad input

def _rewrite_mesh_without_colour(root):
    mesh = root / "raw" / "scans" / TRAIN / f"{TRAIN}_vh_clean_2.ply"
    xyz, _ = scannet.read_mesh(mesh)
    release.write_mesh(mesh, xyz)


def _short_segments(root):
    path = root / "raw" / "scans" / TRAIN / f"{TRAIN}_vh_clean_2.0.010000.segs.json"
    data = json.loads(path.read_text())
    release.write_segments(path, data["segIndices"][:-1], TRAIN)


def _unknown_segment(root):
    release.write_aggregation(root / "raw" / "scans" / TRAIN / f"{TRAIN}.aggregation.json", TRAIN,
                              TRAIN_OBJECTS[:3] + [("chair", [8, 77])])


def _unknown_label(root):
    release.write_aggregation(root / "raw" / "scans" / TRAIN / f"{TRAIN}.aggregation.json", TRAIN,
                              TRAIN_OBJECTS[:2] + [("skylight", [11])] + TRAIN_OBJECTS[3:])


def _missing_scene(root):
    release.write_splits(root / "splits", [TRAIN, "scene0099_00"], [VAL], [TEST])


def _missing_file(root):
    (root / "raw" / "scans" / VAL / f"{VAL}_vh_clean_2.0.010000.segs.json").unlink()


@pytest.mark.parametrize("breaker, problem", [
    (_rewrite_mesh_without_colour,
     "{scans}/{train}/{train}_vh_clean_2.ply: vertices have no colour (red, green, blue properties)"),
    (_short_segments,
     "{scans}/{train}/{train}_vh_clean_2.0.010000.segs.json: 199 segment indices for a mesh of "
     "200 vertices"),
    (_unknown_segment,
     "{scans}/{train}/{train}.aggregation.json: object 3 (chair) names segment 77, which no vertex "
     "of {scans}/{train}/{train}_vh_clean_2.0.010000.segs.json has"),
    (_unknown_label,
     "{scans}/{train}/{train}.aggregation.json: object 2: label 'skylight' is not in "
     "{root}/raw/scannetv2-labels.combined.tsv"),
    (_missing_scene,
     "{root}/splits/scannetv2_train.txt: 1 scene(s) not found under {root}/raw, first scene0099_00 "
     "(prepare other --splits, or point --raw at the folder holding them)"),
    (_missing_file, "{scans}/{val}/{val}_vh_clean_2.0.010000.segs.json: missing (val scene {val})"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, breaker, problem):
    make_release(tmp_path)
    breaker(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        prepare_scannet.prepare(tmp_path / "raw", out, split_dir=tmp_path / "splits",
                                progress=False)
    assert str(e.value) == problem.format(scans=tmp_path / "raw" / "scans", root=tmp_path,
                                          train=TRAIN, val=VAL)
    assert not out.exists() or all_files(out) == []


def test_a_bad_scene_keeps_the_finished_ones_and_resumes(tmp_path):
    data = make_release(tmp_path)
    mesh = tmp_path / "raw" / "scans" / VAL / f"{VAL}_vh_clean_2.ply"
    release.write_mesh(mesh, data[VAL][0])  # no colour
    out = tmp_path / "out"
    with pytest.raises(DataError, match="vertices have no colour"):
        prepare_scannet.prepare(tmp_path / "raw", out, split_dir=tmp_path / "splits",
                                num_points=NUM_POINTS, progress=False)
    # the train scene was finished; no list (a split is listed once complete), no temp file
    assert all_files(out) == ["prepare.json", f"scenes/{TRAIN}.npz"]
    release.write_mesh(mesh, data[VAL][0], data[VAL][1])
    done = run_prepare(tmp_path, out)
    assert done == {"prepared": [VAL, TEST], "skipped": [TRAIN]}
    assert "lists/mean_ins_size_train.txt" in all_files(out)


# ---------------------------------------------------------------------------- resume, settings

def snapshot(out, skip_lists=False):
    return {p: ((Path(out) / p).read_bytes(), os.stat(Path(out) / p).st_mtime_ns)
            for p in all_files(out) if not (skip_lists and p.startswith("lists/"))}


def copy_of(out, tmp_path):
    return Path(shutil.copytree(out, tmp_path / "out"))


def test_resume_skips_finished_scenes(prepared, tmp_path):
    root, out = prepared[0], copy_of(prepared[1], tmp_path)
    before = snapshot(out, skip_lists=True)
    done = run_prepare(root, out, warns=False)
    assert done == {"prepared": [], "skipped": [TRAIN, VAL, TEST]}
    assert snapshot(out, skip_lists=True) == before
    # a killed run: one scene file missing, stray temp files left
    (out / "scenes" / f"{VAL}.npz").unlink()
    (out / "scenes" / f".{VAL}.npz.x1y2.tmp").write_bytes(b"PK half")
    (out / "lists" / ".train.txt.q.tmp").write_text("half")
    done = run_prepare(root, out)
    assert done == {"prepared": [VAL], "skipped": [TRAIN, TEST]}
    assert (out / "scenes" / f"{VAL}.npz").read_bytes() == \
        (prepared[1] / "scenes" / f"{VAL}.npz").read_bytes()
    assert (out / "lists" / "val.txt").read_text() == f"scenes/{VAL}.npz\n"


@pytest.mark.parametrize("change, differences", [
    (dict(num_points=64), "num_points (recorded 200, now 64)"),
    (dict(seed=3), "seed (recorded 0, now 3)"),
])
def test_changed_settings_are_refused_and_nothing_changes(prepared, tmp_path, change, differences):
    root, out = prepared[0], copy_of(prepared[1], tmp_path)
    before = snapshot(out)
    with pytest.raises(DataError) as refused:
        run_prepare(root, out, warns=False, **change)
    assert str(refused.value) == (f"{out / 'prepare.json'}: outputs were made with other "
                                  f"settings: {differences}; rerun with --overwrite to replace "
                                  "all outputs")
    assert snapshot(out) == before


def test_other_split_lists_or_label_table_are_other_settings(prepared, tmp_path):
    root, out = prepared[0], copy_of(prepared[1], tmp_path)
    shutil.copytree(root / "raw", tmp_path / "raw")
    release.write_splits(tmp_path / "splits", [TRAIN, VAL], [], [TEST])
    before = snapshot(out)
    with pytest.raises(DataError, match=r"other settings: split_lists \(train: recorded 1 scenes, "
                                        r"sha256 \w+, now 2 scenes, sha256 \w+; val: "):
        run_prepare(tmp_path, out, warns=False)
    release.write_splits(tmp_path / "splits", [TRAIN], [VAL], [TEST])
    release.write_table(tmp_path / "raw" / scannet.LABEL_MAP_FILE, labels=list(
        release.TABLE_ROWS)[:-1])
    with pytest.raises(DataError, match=r"other settings: label_map \(recorded sha256 \w+, now "):
        run_prepare(tmp_path, out, warns=False)
    assert snapshot(out) == before


def test_overwrite_with_other_settings_gives_what_a_fresh_folder_gets(prepared, tmp_path):
    root, out = prepared[0], copy_of(prepared[1], tmp_path)
    (out / "notes.txt").write_text("mine\n")  # not an output: left alone
    done = run_prepare(root, out, num_points=64, splits=["train", "val"], overwrite=True)
    assert done == {"prepared": [TRAIN, VAL], "skipped": []}
    fresh = tmp_path / "fresh"
    run_prepare(root, fresh, num_points=64, splits=["train", "val"])
    # the test scene of the old settings is gone too: nothing mixes
    assert all_files(out) == sorted(all_files(fresh) + ["notes.txt"])
    for path in all_files(fresh):
        assert (out / path).read_bytes() == (fresh / path).read_bytes()


def test_splits_one_at_a_time_without_the_test_scans(prepared, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(prepared[0] / "raw", root / "raw")
    shutil.copytree(prepared[0] / "splits", root / "splits")
    shutil.move(root / "raw" / "scans_test", tmp_path / "later")
    out = tmp_path / "o"
    run_prepare(root, out, splits=["val", "train"])
    assert [p for p in all_files(out) if p.startswith("lists/")] == [
        "lists/mean_ins_size_train.txt", "lists/train.txt", "lists/val.txt"]
    with pytest.raises(DataError, match=r"scannetv2_test\.txt: 1 scene\(s\) not found"):
        run_prepare(root, out, splits=["test"], warns=False)
    shutil.move(tmp_path / "later", root / "raw" / "scans_test")
    assert run_prepare(root, out, splits=["test"], warns=False) == {"prepared": [TEST], "skipped": []}
    assert all_files(out) == all_files(prepared[1])


def test_label_table_is_looked_for_and_can_be_named(prepared, tmp_path):
    root = prepared[0]
    with pytest.raises(DataError) as e:
        prepare_scannet.prepare(root / "raw" / "scans" / TRAIN, tmp_path / "o",
                                split_dir=root / "splits", progress=False)
    assert str(e.value) == (f"{root / 'raw' / 'scans' / TRAIN}: no scannetv2-labels.combined.tsv "
                            "here or in the folder above (name it with --label_map)")
    with pytest.raises(DataError, match="label table does not exist"):
        prepare_scannet.prepare(root / "raw", tmp_path / "o", split_dir=root / "splits",
                                label_map=tmp_path / "none.tsv", progress=False)
    with pytest.raises(ValueError, match="splits must be some of train, val, test"):
        prepare_scannet.prepare(root / "raw", tmp_path / "o", splits=["dev"], progress=False)


# ---------------------------------------------------------------------------------------- CLI

def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "jsnet_tf.data.prepare_scannet", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_cli_from_another_folder_with_relative_paths(prepared, tmp_path):
    root = prepared[0]
    shutil.copytree(root / "raw", tmp_path / "raw")
    shutil.copytree(root / "splits", tmp_path / "splits")
    ok = run_cli("--raw", "raw", "--out", "out", "--split_dir", "splits", "--num_points",
                 str(NUM_POINTS), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["prepared 3 scene(s), skipped 0 already complete; outputs "
                                      "under out"]
    assert "ScanNet scenes: 100%" in ok.stderr
    # the repairs of the val scene, one line each
    aggregation = Path("raw") / "scans" / VAL / f"{VAL}.aggregation.json"
    warned = [line for line in ok.stderr.splitlines() if "warning" in line]
    assert warned == [
        f"prepare_scannet: warning: {aggregation}: dropped 5 object(s) that repeat an earlier one "
        "(same label and segments)",
        f"prepare_scannet: warning: {aggregation}: 3 segment(s) named by more than one object, "
        "each given to the object listed last"]
    assert all_files(tmp_path / "out") == all_files(prepared[1])
    refused = run_cli("--raw", "raw", "--out", "out", "--split_dir", "splits", "--noprogress",
                      cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "prepare_scannet: error: out/prepare.json: outputs were made with other settings: "
        f"num_points (recorded {NUM_POINTS}, now 4096); rerun with --overwrite to replace all "
        "outputs"]


def test_cli_one_line_error_and_usage(tmp_path):
    make_release(tmp_path)
    _rewrite_mesh_without_colour(tmp_path)
    bad = run_cli("--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--split_dir",
                  str(tmp_path / "splits"), "--noprogress")
    assert bad.returncode == 1
    mesh = tmp_path / "raw" / "scans" / TRAIN / f"{TRAIN}_vh_clean_2.ply"
    assert bad.stderr.splitlines() == [
        f"prepare_scannet: error: {mesh}: vertices have no colour (red, green, blue properties)"]
    assert all_files(tmp_path / "out") == []
    usage = run_cli("--raw", "r", "--out", "o", "--splits", "train,dev")
    assert usage.returncode == 1 and "--splits must be some of train,val,test" in usage.stderr
    usage = run_cli("--out", "o")
    assert usage.returncode == 1 and "--raw and --out are required" in usage.stderr


def test_cli_help_explains_every_flag():
    result = run_cli("--helpshort")
    for name in ("raw", "out", "splits", "split_dir", "label_map", "num_points", "seed",
                 "overwrite", "progress"):
        line = next(line for line in result.stdout.splitlines()
                    if line.strip().startswith((f"--{name}:", f"--[no]{name}:")))
        assert len(line.split(":", 1)[1].strip()) > 10, line
    assert "scenes/<scene>.npz" in result.stdout  # the module docstring comes first
