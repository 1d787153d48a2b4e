"""ScanNet v2 constants and readers (jsnet_tf.data.scannet), on files written by the tests."""

import hashlib
import json
import tomllib
import warnings
from pathlib import Path

import numpy as np
import plyfile
import pytest

from jsnet_tf.data import s3dis, scannet
from jsnet_tf.errors import DataError, UserError
from tests.data import scannet_release as release

REPO = Path(__file__).resolve().parents[2]

# As the benchmark's evaluate_semantic_label.py lists them.
BENCHMARK_LABELS = ["wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
                    "bookshelf", "picture", "counter", "desk", "curtain", "refrigerator",
                    "shower curtain", "toilet", "sink", "bathtub", "otherfurniture"]
BENCHMARK_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]


# ----------------------------------------------------------------------------------- constants

def test_classes_and_ids_are_the_benchmarks():
    assert list(scannet.CLASSES) == BENCHMARK_LABELS and scannet.NUM_CLASSES == 20
    assert list(scannet.NYU40_IDS) == BENCHMARK_IDS
    assert [scannet.CLASSES[c] for c in scannet.INSTANCE_CLASSES] == BENCHMARK_LABELS[2:]
    assert scannet.NUM_CHANNELS == 9 and scannet.IGNORE == -1
    for nyu40 in range(41):
        expected = BENCHMARK_IDS.index(nyu40) if nyu40 in BENCHMARK_IDS else -1
        assert scannet.NYU40_TO_CLASS[nyu40] == expected


def test_palette_is_the_benchmarks_colours():
    palette = scannet.PALETTE
    assert palette.shape == (20, 3) and palette.dtype == np.uint8 and not palette.flags.writeable
    assert len({tuple(c) for c in palette.tolist()}) == 20
    # util.py's create_color_palette at nyu40 1 (wall), 5 (chair), 24 (refrigerator), 39
    assert palette[0].tolist() == [174, 199, 232] and palette[4].tolist() == [188, 189, 34]
    assert palette[14].tolist() == [255, 127, 14] and palette[19].tolist() == [82, 84, 163]


# ---------------------------------------------------------------------------------- split lists

# sha256 of Tasks/Benchmark/scannetv2_{train,val,test}.txt in github.com/ScanNet/ScanNet
UPSTREAM_SHA256 = {
    "train": "96acca299b7855f02824c496b19077904d80996e7ced1bb9f0dac98f7dd4d0c8",
    "val": "d75d4971c3fa7128c643695840e279042c212ef904fe933bd00cf9918c61b083",
    "test": "0214c6a3b1ee516ad653393b0321e7c0394c7662a4b3702eac1ddd7fbc00f7e0",
}


def test_official_split_lists_ship_unchanged():
    splits = scannet.read_splits()
    assert {s: len(n) for s, n in splits.items()} == {"train": 1201, "val": 312, "test": 100}
    for split, digest in UPSTREAM_SHA256.items():
        path = scannet.OFFICIAL_SPLIT_DIR / f"scannetv2_{split}.txt"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert "scene0217_00" in splits["val"]        # the scene that lists its objects twice
    assert min(splits["test"]) == "scene0707_00" and max(splits["train"] + splits["val"]) < "scene0707"
    # declared as package data, so a wheel carries them
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["jsnet_tf"]
    package = REPO / "jsnet_tf"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    assert set(scannet.OFFICIAL_SPLIT_DIR.glob("scannetv2_*.txt")) <= shipped


@pytest.mark.parametrize("text, problem", [
    ("scene0000_00\nscene 1\n", ":2: not a scene name: 'scene 1'"),
    ("scene0000_00\n\n.hidden\n", ":3: not a scene name: '.hidden'"),
    ("scene0000_00\nscene0001_00\nscene0000_00\n", ":3: scene scene0000_00 is listed twice"),
])
def test_bad_split_list(tmp_path, text, problem):
    path = tmp_path / "scannetv2_train.txt"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        scannet.read_split_list(path)
    assert str(e.value) == f"{path}{problem}"


def test_split_folders(tmp_path):
    folder = release.write_splits(tmp_path / "s", train=["a_1", "b_1"], val=["c_1"], test=[])
    assert scannet.read_splits(folder) == {"train": ["a_1", "b_1"], "val": ["c_1"], "test": []}
    release.write_splits(folder, train=["a_1"], val=["c_1"], test=["a_1"])
    with pytest.raises(DataError, match=rf"^{folder}: scene a_1 is in both the train and the test"):
        scannet.read_splits(folder)
    (folder / "scannetv2_val.txt").unlink()
    with pytest.raises(DataError, match=rf"^{folder / 'scannetv2_val.txt'}: missing split list"):
        scannet.read_splits(folder)
    with pytest.raises(DataError, match="split folder does not exist"):
        scannet.read_splits(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------- label table

def test_label_table_real_rows(tmp_path):
    path = tmp_path / "labels.tsv"
    release.write_table(path)
    table = scannet.read_label_map(path)
    assert table.path == path
    assert table.nyu40 == {"wall": 1, "chair": 5, "office chair": 5, "ceiling": 22, "table": 7,
                           "trash can": 39, "box": 29, "bookshelf": 10, "desk": 14,
                           "furnace": 39, "wardrobe cabinet": 39}
    with pytest.raises(DataError) as e:
        table.nyu40_id("spaceship", "agg.json: object 3")
    assert str(e.value) == f"agg.json: object 3: label 'spaceship' is not in {path}"


@pytest.mark.parametrize("lines, problem", [
    (["id\traw_category\tcategory", "1\twall\twall"],
     ":1: no nyu40id column in the header (expected the columns of scannetv2-labels.combined.tsv)"),
    ([release.TABLE_HEADER, "1\twall\twall\t8277\tone"], ":2: nyu40id 'one' of 'wall' is not an integer 0..40"),
    ([release.TABLE_HEADER, "1\twall\twall\t8277\t41"], ":2: nyu40id '41' of 'wall' is not an integer 0..40"),
    ([release.TABLE_HEADER, "1\twall\twall"], ":2: 3 columns, the header names 17"),
    ([release.TABLE_HEADER, release.TABLE_ROWS["wall"], "", "9\twall\twall\t1\t2"],
     ":4: 'wall' is listed again with another nyu40id (1, then 2)"),
])
def test_bad_label_table(tmp_path, lines, problem):
    path = tmp_path / "labels.tsv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        scannet.read_label_map(path)
    assert str(e.value) == f"{path}{problem}"


def test_label_table_blank_lines_and_consistent_repeats(tmp_path):
    path = tmp_path / "labels.tsv"
    path.write_text("\n".join([release.TABLE_HEADER, release.TABLE_ROWS["wall"], "",
                               release.TABLE_ROWS["wall"]]) + "\n")
    assert scannet.read_label_map(path).nyu40 == {"wall": 1}
    path.write_text("")
    with pytest.raises(DataError, match="empty label table"):
        scannet.read_label_map(path)


# ------------------------------------------------------------------------------------- mesh file

def test_read_mesh_keeps_the_file_order_and_values(tmp_path, rng):
    xyz = rng.normal(0, 3, (50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    release.write_mesh(tmp_path / "m.ply", xyz, rgb)
    got_xyz, got_rgb = scannet.read_mesh(tmp_path / "m.ply")
    assert got_xyz.dtype == np.float64 and got_rgb.dtype == np.uint8
    np.testing.assert_array_equal(got_xyz, xyz.astype(np.float64))
    np.testing.assert_array_equal(got_rgb, rgb)


def test_read_mesh_with_polygons_and_wider_colour_types(tmp_path):
    vertex = np.array([(0, 0, 0, 1, 2, 3), (1, 0, 0, 4, 5, 6), (1, 1, 0, 255, 0, 9),
                       (0, 1, 0, 7, 8, 9)],
                      dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u2"),
                             ("green", "u2"), ("blue", "u2")])
    face = np.empty(1, dtype=[("vertex_indices", "O")])
    face["vertex_indices"][0] = np.array([0, 1, 2, 3], np.int32)  # a quad
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex"),
                     plyfile.PlyElement.describe(face, "face")]).write(str(tmp_path / "q.ply"))
    xyz, rgb = scannet.read_mesh(tmp_path / "q.ply")
    assert rgb.tolist() == [[1, 2, 3], [4, 5, 6], [255, 0, 9], [7, 8, 9]] and xyz.shape == (4, 3)
    vertex["red"][0] = 256
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(tmp_path / "w.ply"))
    with pytest.raises(DataError, match=r"w\.ply: colours are not integers 0\.\.255 \(uint16"):
        scannet.read_mesh(tmp_path / "w.ply")


def test_bad_meshes(tmp_path):
    xyz = np.zeros((6, 3), np.float32)
    cases = {}
    release.write_mesh(tmp_path / "grey.ply", xyz)
    cases["grey.ply"] = "vertices have no colour (red, green, blue properties)"
    release.write_mesh(tmp_path / "empty.ply", np.zeros((0, 3)), np.zeros((0, 3)), faces=[])
    cases["empty.ply"] = "the mesh has no vertices"
    bad = xyz.copy()
    bad[4, 1] = np.nan
    release.write_mesh(tmp_path / "nan.ply", bad, np.zeros((6, 3), np.uint8))
    cases["nan.ply"] = "non-finite coordinates at vertex 4"
    (tmp_path / "text.ply").write_text("hello\n")
    cases["text.ply"] = "not a readable PLY mesh: line 1: expected 'ply'"
    release.write_mesh(tmp_path / "cut.ply", np.zeros((600, 3)), np.zeros((600, 3), np.uint8))
    data = (tmp_path / "cut.ply").read_bytes()
    (tmp_path / "cut.ply").write_bytes(data[:len(data) // 2])
    cases["cut.ply"] = "not a readable PLY mesh: element 'vertex': row 373: early end-of-file"
    for name, problem in cases.items():
        with pytest.raises(DataError) as e:
            scannet.read_mesh(tmp_path / name)
        assert str(e.value).startswith(f"{tmp_path / name}: {problem}"), str(e.value)
        assert "\n" not in str(e.value) and isinstance(e.value, UserError)


# ------------------------------------------------------------------------- segments, aggregation

def test_read_segments(tmp_path):
    path = tmp_path / "s.json"
    release.write_segments(path, [4, 4, 9, 123456789], "scene0000_00")
    assert scannet.read_segments(path, 4).tolist() == [4, 4, 9, 123456789]
    with pytest.raises(DataError) as e:
        scannet.read_segments(path, 5)
    assert str(e.value) == f"{path}: 4 segment indices for a mesh of 5 vertices"
    for text, problem in [('{"segIndices": [1, 2.5]}', "segIndices is not a list of integers"),
                          ('{"segIndices": [1, true]}', "segIndices is not a list of integers"),
                          ('{"sceneId": "x"}', "no segIndices list"),
                          ('[1, 2]', "no segIndices list"),
                          ('{"segIndices": [1,', "not a readable segments file: ")]:
        path.write_text(text)
        with pytest.raises(DataError) as e:
            scannet.read_segments(path, 2)
        assert str(e.value).startswith(f"{path}: {problem}")


def test_read_aggregation(tmp_path):
    path = tmp_path / "a.json"
    release.write_aggregation(path, "scene0000_00", [("wall", [1, 2]), ("chair", [])])
    assert scannet.read_aggregation(path) == [scannet.AnnotatedObject(0, "wall", (1, 2)),
                                              scannet.AnnotatedObject(1, "chair", ())]
    for groups, problem in [([{"label": "wall"}], "segGroups[0] is not an object with a string "
                             "label and a list of integer segments"),
                            ([{"label": 3, "segments": [1]}], "segGroups[0] is not an object"),
                            ([{"label": "x", "segments": [1]}, {"label": "y", "segments": [1.0]}],
                             "segGroups[1] is not an object"),
                            ([{"label": "x", "segments": [1], "objectId": "7"}],
                             "segGroups[0] has a non-integer objectId '7'")]:
        path.write_text(json.dumps({"segGroups": groups}))
        with pytest.raises(DataError) as e:
            scannet.read_aggregation(path)
        assert str(e.value).startswith(f"{path}: {problem}")
    path.write_text(json.dumps({"segments": []}))
    with pytest.raises(DataError, match="no segGroups list"):
        scannet.read_aggregation(path)


# -------------------------------------------------------------------------------- vertex labels

@pytest.fixture
def table(tmp_path):
    release.write_table(tmp_path / "labels.tsv")
    return scannet.read_label_map(tmp_path / "labels.tsv")


def objects(*groups):
    return [scannet.AnnotatedObject(i, label, tuple(segs)) for i, (label, segs) in enumerate(groups)]


def test_labels_of_a_plain_scan(table):
    segments = np.array([7, 3, 3, 9, 11, 7, 12, 12, 5])
    labels = scannet.label_vertices(segments, objects(
        ("wall", [3]), ("chair", [7, 9]), ("ceiling", [11]), ("table", [5]),
        ("office chair", [12]), ("bookshelf", [])), table)
    # vertex:                          0   1  2   3   4  5   6   7  8   (segment 7 3 3 9 11 7 12 12 5)
    assert labels.nyu40.tolist() == [5, 1, 1, 5, 22, 5, 5, 5, 7]
    assert labels.semantic.tolist() == [4, 0, 0, 4, -1, 4, 4, 4, 6]
    # instances in list order, over instance classes holding vertices: chair 0, table 1,
    # office chair 2 (the wall is no instance, the empty bookshelf gets none)
    assert labels.instance.tolist() == [0, -1, -1, 0, -1, 0, 2, 2, 1]
    assert (labels.repeats, labels.shared_segments) == (0, 0)
    assert all(a.dtype == np.int32 for a in (labels.nyu40, labels.semantic, labels.instance))


def test_unannotated_vertices_are_ignored(table):
    labels = scannet.label_vertices(np.array([1, 2, 2, 3]), objects(("desk", [2])), table)
    assert labels.nyu40.tolist() == [0, 14, 14, 0]
    assert labels.semantic.tolist() == [-1, 12, 12, -1]
    assert labels.instance.tolist() == [-1, 0, 0, -1]


def test_objects_listed_twice_are_dropped(table):
    """scene0217_00: the whole list again, renumbered from the last objectId + 1."""
    segments = np.array([1, 1, 2, 3, 4, 4])
    once = [("wall", [1]), ("chair", [2, 3]), ("trash can", [4])]
    twice = objects(*once) + [scannet.AnnotatedObject(3 + i, label, tuple(segs))
                              for i, (label, segs) in enumerate(once)]
    single = scannet.label_vertices(segments, objects(*once), table)
    double = scannet.label_vertices(segments, twice, table)
    for key in ("nyu40", "semantic", "instance"):
        np.testing.assert_array_equal(getattr(double, key), getattr(single, key))
    assert single.instance.tolist() == [-1, -1, 0, 0, 1, 1]
    assert (double.repeats, double.shared_segments) == (3, 0)
    # the same segments in another order are the same object
    again = objects(("chair", [2, 3]), ("chair", [3, 2]))
    assert scannet.label_vertices(segments, again, table).repeats == 1


def test_a_segment_in_two_objects_goes_to_the_later_one(table):
    segments = np.array([100, 101, 101, 102, 103, 104, 104])
    labels = scannet.label_vertices(segments, objects(
        ("table", [100, 101]),       # keeps 100; 101 goes to the trash can
        ("trash can", [101, 102]),   # keeps 101; 102 goes to the chair
        ("chair", [102]),
        ("bookshelf", [104]),        # loses its only segment: no instance
        ("box", [103, 104])), table)  # takes 104: ignored class, no instance
    assert labels.nyu40.tolist() == [7, 39, 39, 5, 29, 29, 29]
    assert labels.semantic.tolist() == [6, 19, 19, 4, -1, -1, -1]
    assert labels.instance.tolist() == [0, 1, 1, 2, -1, -1, -1]  # table, trash can, chair
    assert labels.shared_segments == 3  # 101, 102, 104
    assert labels.repeats == 0
    # a segment named twice by one object is not shared
    twice = scannet.label_vertices(segments, objects(("chair", [102, 102])), table)
    assert twice.shared_segments == 0 and twice.instance.tolist() == [-1, -1, -1, 0, -1, -1, -1]


def test_unknown_segment_and_label(table):
    segments = np.array([1, 1, 2])
    with pytest.raises(DataError) as e:
        scannet.label_vertices(segments, objects(("wall", [1]), ("chair", [2, 99])), table,
                               "a.json", "s.json")
    assert str(e.value) == "a.json: object 1 (chair) names segment 99, which no vertex of s.json has"
    with pytest.raises(DataError) as e:
        scannet.label_vertices(segments, objects(("wall", [1]), ("spaceship", [2])), table,
                               "a.json", "s.json")
    assert str(e.value) == f"a.json: object 1: label 'spaceship' is not in {table.path}"


# ---------------------------------------------------------------------------------- scene files

def test_read_save_and_load_a_scene(tmp_path, table, rng):
    xyz = (rng.integers(-300, 300, (40, 3)) / 64.0).astype(np.float32) + np.float32(100.0)
    rgb = rng.integers(0, 256, (40, 3), dtype=np.uint8)
    seg = np.repeat([10, 20, 30, 40], 10)
    groups = [("wall", [10]), ("chair", [20, 30]), ("chair", [20, 30])]  # listed twice
    scene_dir = release.write_scene(tmp_path, "scene0042_00", xyz, rgb, seg, groups)
    with pytest.warns(s3dis.DataWarning, match=r"scene0042_00\.aggregation\.json: dropped 1 "):
        scene = scannet.read_scene(scene_dir, table)
    assert scene.name == "scene0042_00"
    np.testing.assert_array_equal(scene.offset, xyz.astype(np.float64).min(axis=0))
    np.testing.assert_array_equal(scene.xyz, xyz - xyz.min(axis=0))  # exact: multiples of 1/64
    np.testing.assert_array_equal(scene.rgb, rgb)
    assert scene.semantic.tolist() == [0] * 10 + [4] * 20 + [-1] * 10
    assert scene.instance.tolist() == [-1] * 10 + [0] * 20 + [-1] * 10
    assert scene.nyu40.tolist() == [1] * 10 + [5] * 20 + [0] * 10

    scannet.save_scene(tmp_path / "s.npz", scene)
    with np.load(tmp_path / "s.npz") as z:
        assert sorted(z.files) == ["instance", "name", "nyu40", "offset", "rgb", "semantic", "xyz"]
        assert z["offset"].dtype == np.float64 and z["nyu40"].dtype == np.int32
    room = s3dis.load_room(tmp_path / "s.npz")   # an S3DIS room file too
    loaded = scannet.load_scene(tmp_path / "s.npz")
    for key in ("xyz", "rgb", "semantic", "instance", "offset", "nyu40"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(scene, key))
        if key not in ("offset", "nyu40"):
            np.testing.assert_array_equal(getattr(room, key), getattr(scene, key))
    assert loaded.name == room.name == "scene0042_00"


def test_a_test_scan_is_read_without_labels(tmp_path, rng):
    xyz = rng.normal(0, 1, (12, 3)).astype(np.float32)
    scene_dir = release.write_scene(tmp_path, "scene0707_00", xyz, np.zeros((12, 3), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scene = scannet.read_scene(scene_dir, None)
    assert (scene.semantic == -1).all() and (scene.instance == -1).all() and (scene.nyu40 == 0).all()
    assert len(scene) == 12


def test_load_scene_refuses_other_files(tmp_path):
    room = s3dis.Room("Area_1_office_1", np.zeros((3, 3), np.float32), np.zeros((3, 3), np.uint8),
                      np.zeros(3, np.int32), np.zeros(3, np.int32))
    s3dis.save_room(tmp_path / "room.npz", room)
    with pytest.raises(DataError, match=rf"^{tmp_path / 'room.npz'}: not a prepared ScanNet scene"):
        scannet.load_scene(tmp_path / "room.npz")
    s3dis.save_room(tmp_path / "bad.npz", room, extra={"offset": np.zeros(3),
                                                        "nyu40": np.zeros(2, np.int32)})
    with pytest.raises(DataError, match="inconsistent scene arrays"):
        scannet.load_scene(tmp_path / "bad.npz")
    room.semantic[1] = 20
    s3dis.save_room(tmp_path / "range.npz", room, extra={"offset": np.zeros(3),
                                                          "nyu40": np.zeros(3, np.int32)})
    with pytest.raises(DataError, match="labels out of range"):
        scannet.load_scene(tmp_path / "range.npz")


def test_instance_sizes_count_instance_points_of_the_blocks(rng):
    """One block (the scene is under 1 m) sampled at exactly its point count holds every point
    once: the sizes are the instances' point counts."""
    n = 150
    semantic = np.repeat([0, 4, 4, 19, -1], 30).astype(np.int32)
    instance = np.repeat([-1, 0, 1, 2, -1], 30).astype(np.int32)
    instance[40:45] = 1   # instance 1 has 35 points, instance 0 25
    scene = s3dis.Room("scene0000_00", rng.uniform(0, 0.9, (n, 3)).astype(np.float32),
                       np.zeros((n, 3), np.uint8), semantic, instance)
    sizes = scannet.instance_sizes(scene, num_points=n, rng=0)
    assert len(sizes) == 20
    assert sorted(sizes[4]) == [25, 35] and sizes[19] == [30]
    assert all(sizes[c] == [] for c in range(20) if c not in (4, 19))
