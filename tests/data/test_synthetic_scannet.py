"""The built-in synthetic ScanNet v2 (jsnet_tf.data.synthetic_scannet): the release's layout and
formats, the documented class mapping and quirks, and a round trip through the preparation."""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import plyfile
import pytest

from jsnet_tf.data import prepare_scannet, scannet, synthetic_scannet
from tests.data import scannet_release as release

REPO = Path(__file__).resolve().parents[2]
SIZES = (2, 1, 1)
TRAIN, VAL, TEST = ["scene0000_00", "scene0001_00"], ["scene0002_00"], ["scene0003_00"]
# The module docstring's table: raw category -> nyu40 id
MAPPING = {"wall": 1, "floor": 2, "ceiling": 22, "column": 38, "window": 9, "door": 8, "desk": 14,
           "table": 7, "office chair": 5, "chair": 5, "couch": 6, "bookshelf": 10,
           "whiteboard": 30, "box": 29, "trash can": 39}


def files_of(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_scannet") / "raw"
    summary = synthetic_scannet.generate(out, seed=0, scenes=SIZES, points_per_m2=120,
                                         progress=False)
    assert summary["scenes"] == summary["written"] == 4 and summary["skipped"] == 0
    return out


def scene_file(raw, scene, suffix):
    folder = "scans_test" if scene in TEST else "scans"
    return raw / folder / scene / f"{scene}{suffix}"


def groups_of(raw, scene):
    return json.loads(scene_file(raw, scene, scannet.AGGREGATION_SUFFIX).read_text())["segGroups"]


def seg_indices(raw, scene):
    return json.loads(scene_file(raw, scene, scannet.SEGMENTS_SUFFIX).read_text())["segIndices"]


# ----------------------------------------------------------------------------- layout, formats

def test_layout(raw):
    expected = {"scannetv2-labels.combined.tsv", "splits/scannetv2_train.txt",
                "splits/scannetv2_val.txt", "splits/scannetv2_test.txt"}
    for scene in TRAIN + VAL:
        expected |= {f"scans/{scene}/{scene}{s}" for s in (scannet.MESH_SUFFIX,
                                                           scannet.SEGMENTS_SUFFIX,
                                                           scannet.AGGREGATION_SUFFIX)}
    expected.add(f"scans_test/{TEST[0]}/{TEST[0]}{scannet.MESH_SUFFIX}")
    assert set(files_of(raw)) == expected
    assert scannet.read_splits(raw / "splits") == {"train": TRAIN, "val": VAL, "test": TEST}


def test_mesh_is_the_releases_binary_ply(raw):
    for scene in TRAIN + VAL + TEST:
        data = scene_file(raw, scene, scannet.MESH_SUFFIX).read_bytes()
        header = data[:data.index(b"end_header\n")].decode().splitlines()
        count = int(header[3].split()[2])
        faces = int(header[11].split()[2])
        assert header[:3] == ["ply", "format binary_little_endian 1.0",
                              "comment jsnet-tf synthetic ScanNet"]
        assert header[3:] == [f"element vertex {count}", "property float x", "property float y",
                              "property float z", "property uchar red", "property uchar green",
                              "property uchar blue", "property uchar alpha",
                              f"element face {faces}", "property list uchar int vertex_indices"]
        assert len(data) == len("\n".join(header)) + 12 + 16 * count + 13 * faces
        ply = plyfile.PlyData.read(scene_file(raw, scene, scannet.MESH_SUFFIX))
        assert (ply["vertex"]["alpha"] == 255).all() and faces > count / 2
        triangles = np.stack(ply["face"]["vertex_indices"])
        assert triangles.shape == (faces, 3) and 0 <= triangles.min() and triangles.max() < count
        if scene not in TEST:  # faces join vertices of one segment
            seg = np.asarray(seg_indices(raw, scene))
            assert len(seg) == count
            assert (seg[triangles] == seg[triangles[:, :1]]).all()


def test_json_files_have_the_releases_keys(raw):
    for scene in TRAIN + VAL:
        segs = json.loads(scene_file(raw, scene, scannet.SEGMENTS_SUFFIX).read_text())
        assert set(segs) == {"params", "sceneId", "segIndices"} and segs["sceneId"] == scene
        agg = json.loads(scene_file(raw, scene, scannet.AGGREGATION_SUFFIX).read_text())
        assert agg["sceneId"] == f"scannet.{scene}" and agg["appId"] == "Aggregator.v2"
        assert agg["segmentsFile"] == f"scannet.{scene}_vh_clean_2.0.010000.segs.json"
        for k, group in enumerate(agg["segGroups"]):
            assert set(group) == {"id", "objectId", "segments", "label"}
            assert group["id"] == group["objectId"] == k and group["segments"]


def test_label_table_holds_the_real_rows_of_the_categories_used(raw):
    lines = (raw / scannet.LABEL_MAP_FILE).read_text().splitlines()
    assert lines[0] == release.TABLE_HEADER
    rows = {line.split("\t")[1]: line for line in lines[1:]}
    assert all(len(line.split("\t")) == 17 for line in lines)
    for label, row in release.TABLE_ROWS.items():  # transcribed separately for the tests
        if label in rows:
            assert rows[label] == row
    assert scannet.read_label_map(raw / scannet.LABEL_MAP_FILE).nyu40 == MAPPING
    used = {g["label"] for scene in TRAIN + VAL for g in groups_of(raw, scene)}
    assert used <= set(MAPPING) and {"wall", "floor", "ceiling", "box", "trash can"} <= used


def test_segments_follow_objects_and_some_are_in_none(raw):
    for scene in TRAIN[1:]:  # the first train scene shares segments on purpose
        groups, seg = groups_of(raw, scene), np.asarray(seg_indices(raw, scene))
        named = [s for g in groups for s in g["segments"]]
        assert len(named) == len(set(named))           # no segment in two objects
        unannotated = ~np.isin(seg, named)
        assert 0 < unannotated.mean() < 0.2
        assert len(np.unique(seg)) > 20 and int(np.max(seg)) > len(np.unique(seg))  # sparse ids


def test_the_quirks(raw):
    val = groups_of(raw, VAL[0])
    n = len(val) // 2
    assert len(val) == 2 * n and n > 5
    for first, again in zip(val[:n], val[n:]):   # scene0217_00: the list again, renumbered
        assert again == {**first, "id": first["id"] + n, "objectId": first["objectId"] + n}
    train = groups_of(raw, TRAIN[0])
    named = [s for g in train for s in g["segments"]]
    assert len(named) > len(set(named))           # segments in two objects


# ---------------------------------------------------------------------------------- round trip

def reference_labels(raw, scene):
    """nyu40 id and object index per vertex by the rule, in plain Python: repeated objects
    dropped, each segment to the last object naming it."""
    owner, seen, kept = {}, set(), []
    for group in groups_of(raw, scene):
        key = (group["label"], frozenset(group["segments"]))
        if key in seen:
            continue
        seen.add(key)
        kept.append(group)
        for s in group["segments"]:
            owner[s] = len(kept) - 1
    objects = [owner.get(s, -1) for s in seg_indices(raw, scene)]
    nyu40 = [MAPPING[kept[k]["label"]] if k >= 0 else 0 for k in objects]
    return np.array(nyu40), np.array(objects)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = prepare_scannet.prepare(raw, out, split_dir=raw / "splits", num_points=512,
                                       progress=False)
    assert done["prepared"] == TRAIN + VAL + TEST
    messages = {str(w.message).split(": ", 1)[0]: str(w.message).split(": ", 1)[1]
                for w in caught}
    assert set(messages) == {str(scene_file(raw, s, scannet.AGGREGATION_SUFFIX))
                             for s in (TRAIN[0], VAL[0])}
    assert messages[str(scene_file(raw, VAL[0], scannet.AGGREGATION_SUFFIX))].startswith(
        f"dropped {len(groups_of(raw, VAL[0])) // 2} object(s) that repeat an earlier one")
    assert "segment(s) named by more than one object" in messages[
        str(scene_file(raw, TRAIN[0], scannet.AGGREGATION_SUFFIX))]
    return out


def test_prepared_scenes_follow_the_raw_files(raw, prepared):
    for scene in TRAIN + VAL:
        got = scannet.load_scene(prepared / "scenes" / f"{scene}.npz")
        nyu40, objects = reference_labels(raw, scene)
        np.testing.assert_array_equal(got.nyu40, nyu40)
        classes = [scannet.NYU40_IDS.index(i) if i in scannet.NYU40_IDS else -1 for i in nyu40]
        np.testing.assert_array_equal(got.semantic, classes)
        # the instances are the objects of the instance classes, one id each
        instance_object = (got.semantic >= 2)
        assert ((got.instance >= 0) == instance_object).all()
        pairs = set(zip(got.instance[instance_object].tolist(),
                        objects[instance_object].tolist()))
        assert len(pairs) == len({i for i, _ in pairs}) == len({o for _, o in pairs})
        assert sorted({i for i, _ in pairs}) == list(range(len(pairs)))
        mesh = plyfile.PlyData.read(scene_file(raw, scene, scannet.MESH_SUFFIX))["vertex"]
        xyz = np.stack([mesh[k] for k in "xyz"], axis=1).astype(np.float64)
        np.testing.assert_allclose(got.xyz + got.offset, xyz, atol=1e-5)
        # every kind of point is there: scored classes, instances, ignored, unannotated
        assert (got.semantic == -1).any() and (got.nyu40 == 0).any() and len(pairs) > 3
        assert {0, 1} <= set(got.semantic.tolist())


def test_mean_sizes_are_there_for_the_instance_classes_seen(prepared):
    sizes = np.loadtxt(prepared / "lists" / "mean_ins_size_train.txt")
    assert sizes.shape == (20,) and sizes[0] == sizes[1] == 0
    seen = set()
    for scene in TRAIN:
        got = scannet.load_scene(prepared / "scenes" / f"{scene}.npz")
        seen |= set(got.semantic[got.instance >= 0].tolist())
    assert {c for c in range(20) if sizes[c] > 0} == seen


# ------------------------------------------------------------------- determinism, resume, CLI

def test_same_seed_same_files_other_seed_other_scenes(raw, tmp_path):
    again = tmp_path / "again"
    synthetic_scannet.generate(again, seed=0, scenes=SIZES, points_per_m2=120, progress=False)
    assert files_of(again) == files_of(raw)
    other = tmp_path / "other"
    synthetic_scannet.generate(other, seed=1, scenes=(1, 0, 0), points_per_m2=120, progress=False)
    mesh = f"scans/{TRAIN[0]}/{TRAIN[0]}{scannet.MESH_SUFFIX}"
    assert files_of(other)[mesh] != files_of(raw)[mesh]


def test_resume_and_overwrite(raw, tmp_path):
    out = tmp_path / "raw"
    kw = dict(seed=0, scenes=SIZES, points_per_m2=120, progress=False)
    synthetic_scannet.generate(out, **kw)
    again = synthetic_scannet.generate(out, **kw)
    assert (again["written"], again["skipped"]) == (0, 4)
    # a killed run: a scene missing, its half-written folder left in the temp folder
    shutil.rmtree(out / "scans" / VAL[0])
    (out / ".synthetic_tmp" / VAL[0]).mkdir(parents=True)
    (out / ".synthetic_tmp" / VAL[0] / "half.ply").write_bytes(b"ply")
    resumed = synthetic_scannet.generate(out, **kw)
    assert (resumed["written"], resumed["skipped"]) == (1, 3)
    assert files_of(out) == files_of(raw)
    redone = synthetic_scannet.generate(out, overwrite=True, **kw)
    assert redone["written"] == 4 and files_of(out) == files_of(raw)


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "jsnet_tf.data.synthetic_scannet", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_cli(tmp_path):
    ok = run_cli("--out", "raw", "--scenes", "1,1,0", "--points_per_m2", "60", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("2 scenes (2 written, 0 already there; train 1, val 1, test 0), ")
    assert ok.stdout.rstrip().endswith("prepare with --split_dir raw/splits")
    assert "synthetic ScanNet: 100%" in ok.stderr
    assert sorted(p.name for p in (tmp_path / "raw" / "scans").iterdir()) == [
        "scene0000_00", "scene0001_00"]
    bad = run_cli("--out", "x", "--scenes", "1,2")
    assert bad.returncode == 1 and "--scenes must be 3 integers >= 0" in bad.stderr
    result = run_cli("--helpshort")
    for name in ("out", "seed", "scenes", "points_per_m2", "overwrite", "progress"):
        line = next(line for line in result.stdout.splitlines()
                    if line.strip().startswith((f"--{name}:", f"--[no]{name}:")))
        assert len(line.split(":", 1)[1].strip()) > 10, line
