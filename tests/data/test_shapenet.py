"""ShapeNet part reader, instances, sampling, splits and prepared files on a synthetic part set."""

import json
import shutil

import h5py
import numpy as np
import pytest

from jsnet_tf.data import shapenet
from jsnet_tf.data.shapenet import CATEGORIES, Shape
from jsnet_tf.errors import DataError

THREE = ("Airplane", "Mug", "Table")

# The release's synsetoffset2category.txt (shapenetcore_partanno_segmentation_benchmark_v0_normal),
# typed from the published file: an independent check of the synthetic writer's synsets.
RELEASE_CATEGORY_FILE = """\
Airplane\t02691156
Bag\t02773838
Cap\t02954340
Car\t02958343
Chair\t03001627
Earphone\t03261776
Guitar\t03467517
Knife\t03624134
Lamp\t03636649
Laptop\t03642806
Motorbike\t03790512
Mug\t03797390
Pistol\t03948459
Rocket\t04099429
Skateboard\t04225987
Table\t04379243
"""


@pytest.fixture(scope="module")
def partset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapenet")
    splits = shapenet.write_synthetic_partset(root, seed=3, shapes_per_category=(1, 1, 1),
                                              categories=THREE, points_range=(1800, 2600))
    return root, splits


def write_rows(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(str(v) for v in row) + "\n" for row in rows))
    return path


# ----------------------------------------------------------------------------------- constants

def test_categories_cover_50_parts():
    assert len(CATEGORIES) == shapenet.NUM_CATEGORIES == 16
    parts = [p for c in CATEGORIES.values() for p in c.parts]
    assert parts == list(range(50))
    assert CATEGORIES["Motorbike"].parts == tuple(range(30, 36))
    assert CATEGORIES["Table"].parts == (47, 48, 49)
    assert shapenet.PART_TO_CATEGORY[37] == shapenet.CATEGORY_INDEX["Mug"]


# ----------------------------------------------------------------------------- synthetic set

def test_synthetic_layout_and_split_listing(partset):
    root, splits = partset
    assert (root / "synsetoffset2category.txt").read_text() == RELEASE_CATEGORY_FILE
    assert shapenet.read_category_file(root) == dict(
        line.split("\t") for line in RELEASE_CATEGORY_FILE.splitlines())
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "val": 3, "test": 3}
    for split in shapenet.SPLITS:
        entries = json.loads((root / f"train_test_split/shuffled_{split}_file_list.json")
                             .read_text())
        assert entries == splits[split]
        listed = shapenet.read_split(root, split)
        assert len(listed) == 3 and {c for c, _ in listed} == {"Airplane", "Mug", "Table"}
        for (category, path), entry in zip(listed, entries):
            assert path == root / entry.split("/")[1] / (entry.split("/")[2] + ".txt")
            assert path.is_file() and shapenet.RELEASE_SYNSETS[category] == path.parent.name
    assert len(shapenet.read_split(root, "trainval")) == 6
    assert [c for c, _ in shapenet.read_split(root, "train", ["Mug"])] == ["Mug"]
    with pytest.raises(ValueError, match="unknown split"):
        shapenet.read_split(root, "dev")


def test_read_synthetic_shapes_round_trip(partset):
    root, _ = partset
    expected = shapenet.SYNTHETIC_INSTANCES
    for category, path in shapenet.read_split(root, "trainval") + shapenet.read_split(root,
                                                                                     "test"):
        shape = shapenet.read_shape(path, category)
        raw = np.loadtxt(path)
        assert len(shape) == len(raw) and 1800 <= len(shape) <= 2600
        assert shape.points.shape == (len(raw), 6) and shape.points.dtype == np.float32
        assert shape.part.dtype == np.int32 and shape.instance.dtype == np.int32
        assert shape.shape_id == path.stem and shape.category == category
        np.testing.assert_array_equal(shape.part, raw[:, 6].astype(np.int32))
        np.testing.assert_allclose(shape.points[:, 3:], raw[:, 3:6], atol=1e-6)
        assert set(np.unique(shape.part)) == set(CATEGORIES[category].parts)
        # Unit sphere normalisation: centred, max norm 1.
        np.testing.assert_allclose(shape.points[:, :3].mean(0), 0, atol=1e-5)
        assert np.linalg.norm(shape.points[:, :3], axis=1).max() == pytest.approx(1, abs=1e-5)
        assert np.unique(shape.instance).tolist() == list(range(expected[category]))
        # Every instance lies within a single part.
        for g in np.unique(shape.instance):
            assert len(np.unique(shape.part[shape.instance == g])) == 1
        raw_shape = shapenet.read_shape(path, category, normalize=False, radius=None)
        np.testing.assert_allclose(raw_shape.points[:, :3], raw[:, :3], atol=1e-6)
        assert not raw_shape.instance.any()


def test_table_legs_are_separate_instances(partset):
    root, _ = partset
    category, path = next(e for e in shapenet.read_split(root, "train") if e[0] == "Table")
    shape = shapenet.read_shape(path, category)
    leg_instances = np.unique(shape.instance[shape.part == 48])
    assert len(leg_instances) == 4
    assert len(np.unique(shape.instance[shape.part == 47])) == 1
    assert len(np.unique(shape.instance[shape.part == 49])) == 1


def test_synthetic_is_deterministic_and_other_categories(tmp_path):
    others = tuple(c for c in CATEGORIES if c not in THREE)
    a = shapenet.write_synthetic_partset(tmp_path / "a", seed=7, shapes_per_category=(1, 0, 0),
                                         categories=others)
    b = shapenet.write_synthetic_partset(tmp_path / "b", seed=7, shapes_per_category=(1, 0, 0),
                                         categories=others)
    c = shapenet.write_synthetic_partset(tmp_path / "c", seed=8, shapes_per_category=(1, 0, 0),
                                         categories=others[:1])
    assert a == b and a["val"] == a["test"] == [] and len(a["train"]) == len(others)
    assert c["train"][0] not in a["train"]
    listed = shapenet.read_split(tmp_path / "a", "train")
    assert sorted(category for category, _ in listed) == sorted(others)
    for category, path in listed:
        assert (path.read_text() == (tmp_path / "b" / path.relative_to(tmp_path / "a"))
                .read_text())
        # The part column is written as a float, as in the release.
        assert path.read_text().split("\n")[0].split()[6].endswith(".000000")
        shape = shapenet.read_shape(path, category)
        assert set(np.unique(shape.part)) == set(CATEGORIES[category].parts)
        assert shape.instance.max() + 1 == shapenet.SYNTHETIC_INSTANCES[category]
        for g in np.unique(shape.instance):
            assert len(np.unique(shape.part[shape.instance == g])) == 1
    with pytest.raises(ValueError, match="shapes_per_category"):
        shapenet.write_synthetic_partset(tmp_path / "d", shapes_per_category=(1, 1))


# ------------------------------------------------------------------------- connected components

def test_part_instances_separated_and_touching_legs():
    legs = np.array([[0, 0, z] for z in np.linspace(0, 1, 11)], np.float64)
    apart = np.concatenate([legs, legs + [1.0, 0, 0]])
    touching = np.concatenate([legs, legs + [0.05, 0, 0]])
    part = np.full(22, 48)
    assert np.bincount(shapenet.part_instances(apart, part, radius=0.15)).tolist() == [11, 11]
    assert shapenet.part_instances(touching, part, radius=0.15).tolist() == [0] * 22
    # Different parts never share an instance, even when touching; ids ordered by part.
    part2 = np.array([49] * 11 + [47] * 11)
    inst = shapenet.part_instances(touching, part2, radius=0.15)
    assert inst.tolist() == [1] * 11 + [0] * 11
    # Chain: consecutive points ~0.1 apart are connected at radius 0.101 but not at 0.09.
    assert shapenet.part_instances(legs, np.zeros(11), radius=0.101).max() == 0
    assert shapenet.part_instances(legs, np.zeros(11), radius=0.09).tolist() == list(range(11))
    with pytest.raises(ValueError):
        shapenet.part_instances(legs[:, :2], np.zeros(11))


# -------------------------------------------------------------------------------- sampling

def make_shape(n):
    pts = np.arange(n * 6, dtype=np.float32).reshape(n, 6)
    return Shape("Mug", "x", pts, np.arange(n, dtype=np.int32) % 2 + 36,
                 np.arange(n, dtype=np.int32))


def test_sample_points_without_replacement_when_enough():
    shape = make_shape(3000)
    s = shapenet.sample_points(shape, 2048, rng=0)
    assert s.points.shape == (2048, 6) and s.part.shape == s.instance.shape == (2048,)
    assert len(np.unique(s.instance)) == 2048
    np.testing.assert_array_equal(s.points[:, 0] / 6, s.instance)  # rows stay aligned
    np.testing.assert_array_equal(s.part, s.instance % 2 + 36)
    again = shapenet.sample_points(shape, 2048, rng=0)
    np.testing.assert_array_equal(again.instance, s.instance)


def test_sample_points_with_replacement_when_fewer():
    s = shapenet.sample_points(make_shape(100), 256, rng=np.random.default_rng(1))
    assert s.points.shape == (256, 6)
    assert set(np.unique(s.instance)) == set(range(100))   # all kept, plus duplicates
    np.testing.assert_array_equal(s.points[:, 0] / 6, s.instance)
    assert len(shapenet.sample_points(make_shape(2048), 2048)) == 2048


# ---------------------------------------------------------------------------------- bad input

GOOD = [0.1, 0.2, 0.3, 0.0, 0.0, 1.0, 36]


@pytest.mark.parametrize("bad, message", [
    ([0.1, 0.2, 0.3, 0.0, 0.0, 1.0], r"s\.txt:2: expected 7 numbers"),
    ([0.1, 0.2, 0.3, 0.0, 0.0, 1.0, 36, 1], r"s\.txt:2: expected 7 numbers"),
    ([0.1, "abc", 0.3, 0.0, 0.0, 1.0, 36], r"s\.txt:2: not a number"),
    ([0.1, "nan", 0.3, 0.0, 0.0, 1.0, 36], r"s\.txt:2: non-finite"),
    ([0.1, 0.2, 0.3, 0.0, 0.0, 1.0, 12], r"s\.txt:2: part 12 outside Mug's parts 36\.\.37"),
    ([0.1, 0.2, 0.3, 0.0, 0.0, 1.0, 36.5], r"s\.txt:2: part label '36.5' is not an integer"),
    ([0.1, 0.2, 0.3, 0.0, 0.0, 1.0, "37.000001"],
     r"s\.txt:2: part label '37.000001' is not an integer"),
])
def test_read_shape_bad_line(tmp_path, bad, message):
    path = write_rows(tmp_path / "s.txt", [GOOD, bad, GOOD])
    with pytest.raises(DataError, match=message):
        shapenet.read_shape(path, "Mug")


def test_read_shape_accepts_integer_valued_float_parts(tmp_path):
    rows = [[0, 0, 0, 0, 0, 1, "36.000000"], [1, 0, 0, 0, 0, 1, "37.0"], [0, 2, 0, 1, 0, 0, 37]]
    shape = shapenet.read_shape(write_rows(tmp_path / "s.txt", rows), "Mug", radius=None)
    assert shape.part.tolist() == [36, 37, 37] and shape.part.dtype == np.int32


def test_read_shape_missing_empty_and_unknown_category(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        shapenet.read_shape(tmp_path / "none.txt", "Mug")
    (tmp_path / "e.txt").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        shapenet.read_shape(tmp_path / "e.txt", "Mug")
    with pytest.raises(ValueError, match="unknown category"):
        shapenet.read_shape(write_rows(tmp_path / "s.txt", [GOOD]), "Spoon")
    one = shapenet.read_shape(tmp_path / "s.txt", "Mug")   # one point: centred, not scaled
    assert one.points.shape == (1, 6) and not one.points[:, :3].any()


def test_bad_split_and_category_files(tmp_path):
    split_dir = tmp_path / "train_test_split"
    split_dir.mkdir()
    (tmp_path / "synsetoffset2category.txt").write_text("Mug\t03797390\n")
    with pytest.raises(DataError, match=r"shuffled_train_file_list\.json: cannot read split"):
        shapenet.read_split(tmp_path, "train")
    (split_dir / "shuffled_train_file_list.json").write_text('[\n"shape_data/1/2",\n')
    with pytest.raises(DataError, match=r"shuffled_train_file_list\.json:3: not valid JSON"):
        shapenet.read_split(tmp_path, "train")
    (split_dir / "shuffled_train_file_list.json").write_text(
        '[\n"shape_data/03797390/a",\n"shape_data/04225943/abc"\n]')
    with pytest.raises(DataError, match=r"json:3: entry 1: unknown synset '04225943' \(not in "
                                        r".*synsetoffset2category\.txt\)"):
        shapenet.read_split(tmp_path, "train")
    (split_dir / "shuffled_train_file_list.json").write_text('["abc"]')
    with pytest.raises(DataError, match=r"json:1: entry 0: expected"):
        shapenet.read_split(tmp_path, "train")
    (tmp_path / "synsetoffset2category.txt").unlink()
    with pytest.raises(DataError, match=r"synsetoffset2category\.txt: cannot read"):
        shapenet.read_split(tmp_path, "train")


@pytest.mark.parametrize("text, message", [
    ("Airplane\t02691156\nMug 1 2\n", r"\.txt:2: expected '<category> <synset>'"),
    ("Airplane\t02691156\n\nSpoon\t01234567\n", r"\.txt:3: unknown category 'Spoon'"),
    ("Mug\t03797390\nMug\t03797391\n", r"\.txt:2: category Mug listed twice"),
    ("Mug\t03797390\nCap\t03797390\n", r"\.txt:2: synset 03797390 listed twice \(Mug and Cap\)"),
    ("\n", r"synsetoffset2category\.txt: no categories"),
])
def test_bad_category_file(tmp_path, text, message):
    (tmp_path / "synsetoffset2category.txt").write_text(text)
    with pytest.raises(DataError, match=message):
        shapenet.read_category_file(tmp_path)


def test_synsets_come_from_the_category_file(tmp_path):
    """The old hand-typed table had Skateboard as 04225943; the release says 04225987. Whatever
    the file says is followed, by every reader, and prepared category ids follow the names."""
    synsets = dict(shapenet.RELEASE_SYNSETS, Skateboard="04225943", Mug="99999999")
    splits = shapenet.write_synthetic_partset(tmp_path, seed=1, shapes_per_category=(1, 0, 1),
                                              categories=("Skateboard", "Mug"), synsets=synsets)
    assert shapenet.read_category_file(tmp_path) == synsets
    assert (tmp_path / "04225943").is_dir() and not (tmp_path / "04225987").exists()
    listed = shapenet.read_split(tmp_path, "train")
    assert sorted(c for c, _ in listed) == ["Mug", "Skateboard"]
    assert {c: p.parent.name for c, p in listed} == {"Skateboard": "04225943", "Mug": "99999999"}
    paths = shapenet.prepare_shapenet(tmp_path, tmp_path / "out", "test", num_points=64)
    categories = shapenet.read_shapenet_h5(paths[0]).category
    expected = [shapenet.CATEGORY_INDEX["Skateboard" if "04225943" in e else "Mug"]
                for e in splits["test"]]
    assert categories.tolist() == expected
    # Readers follow the file: under the release's mapping these folders' synsets are unknown.
    (tmp_path / "synsetoffset2category.txt").write_text(RELEASE_CATEGORY_FILE)
    with pytest.raises(DataError, match=r"entry \d: unknown synset '(04225943|99999999)'"):
        shapenet.read_split(tmp_path, "train")


# ------------------------------------------------------------------------------------ prepare

def test_prepare_writes_expected_h5(partset, tmp_path):
    root, _ = partset
    out = tmp_path / "out"
    paths = shapenet.prepare_shapenet(root, out, "train", num_points=2048, seed=0,
                                      shapes_per_file=2)
    assert [p.name for p in paths] == ["shapenet_train_0.h5", "shapenet_train_1.h5"]
    assert (out / "train_hdf5_file_list.txt").read_text().split() == [p.name for p in paths]
    assert shapenet.prepared_files(out, "train") == paths
    assert sorted(p.name for p in out.iterdir()) == [
        "shapenet_train_0.h5", "shapenet_train_1.h5", "train_hdf5_file_list.txt"]
    with h5py.File(paths[0], "r") as f:
        assert f["data"].shape == (2, 2048, 6) and f["data"].dtype == np.float32
        assert f["seglabels"].shape == f["pid"].shape == (2, 2048)
        assert f["seglabels"].dtype == f["pid"].dtype == f["category"].dtype == np.int32
        assert f["category"].shape == (2,)
    assert [shapenet.read_shapenet_h5_size(p) for p in paths] == [(2, 2048), (1, 2048)]
    sets = [shapenet.read_shapenet_h5(p) for p in paths]
    data = np.concatenate([s.data for s in sets])
    part = np.concatenate([s.part for s in sets])
    inst = np.concatenate([s.instance for s in sets])
    cat = np.concatenate([s.category for s in sets])
    entries = shapenet.read_split(root, "train")
    assert len(data) == len(entries) == 3
    assert [shapenet.CATEGORY_NAMES[c] for c in cat] == [c for c, _ in entries]
    assert (shapenet.PART_TO_CATEGORY[part] == cat[:, None]).all()
    assert np.linalg.norm(data[..., :3], axis=-1).max() <= 1 + 1e-5
    np.testing.assert_allclose(np.linalg.norm(data[..., 3:], axis=-1), 1, atol=1e-4)
    for (category, path), points in zip(entries, data):
        # Every sampled point is a point of the shape, normalised; none twice when it has more.
        shape = shapenet.read_shape(path, category, radius=None)
        rows = {tuple(r) for r in shape.points}
        assert all(tuple(r) in rows for r in points)
        assert len({tuple(r) for r in points}) == min(2048, len(shape))
    for c, i in zip(cat, inst):
        assert i.max() + 1 == shapenet.SYNTHETIC_INSTANCES[shapenet.CATEGORY_NAMES[c]]
    # Same seed, same files; a shape's sample does not depend on the file it lands in.
    again = shapenet.prepare_shapenet(root, tmp_path / "again", "train", seed=0,
                                      shapes_per_file=3)
    np.testing.assert_array_equal(shapenet.read_shapenet_h5(again[0]).data, data)
    other = shapenet.prepare_shapenet(root, tmp_path / "other", "train", seed=1)
    assert not np.array_equal(shapenet.read_shapenet_h5(other[0]).data, data)
    # Rewriting with fewer files removes the stale one, and the list names only the new ones.
    paths = shapenet.prepare_shapenet(root, out, "train", num_points=2048, shapes_per_file=3)
    assert sorted(p.name for p in out.iterdir()) == [
        "shapenet_train_0.h5", "train_hdf5_file_list.txt"]


def test_prepare_is_all_or_nothing(partset, tmp_path):
    root, _ = partset
    raw = tmp_path / "raw"
    shutil.copytree(root, raw)
    out = tmp_path / "out"
    shapenet.prepare_shapenet(raw, out, "train", num_points=64, shapes_per_file=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(before) == 4
    category, path = shapenet.read_split(raw, "train")[-1]   # in the last file
    lines = path.read_text().splitlines()
    lines[9] = " ".join(lines[9].split()[:5])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{path.name}:10: expected 7 numbers .* found 5"):
        shapenet.prepare_shapenet(raw, out, "train", num_points=32, shapes_per_file=1)
    # The complete earlier output is untouched, no temp file is left.
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(DataError, match=rf"{path.name}:10"):
        shapenet.prepare_shapenet(raw, tmp_path / "fresh", "train", num_points=32)
    assert not (tmp_path / "fresh").exists() or not list((tmp_path / "fresh").iterdir())
    with pytest.raises(ValueError, match="unknown split"):
        shapenet.prepare_shapenet(raw, out, "trainval")


def test_prepared_files_errors(tmp_path):
    with pytest.raises(DataError, match=r"train_hdf5_file_list\.txt: cannot read file list"):
        shapenet.prepared_files(tmp_path, "train")
    (tmp_path / "val_hdf5_file_list.txt").write_text("\n")
    with pytest.raises(DataError, match=r"val_hdf5_file_list\.txt: no files listed"):
        shapenet.prepared_files(tmp_path, "val")
    (tmp_path / "train_hdf5_file_list.txt").write_text("a.h5\nb.h5\n")
    (tmp_path / "val_hdf5_file_list.txt").write_text("c.h5\n")
    with pytest.raises(DataError, match=r"a\.h5: listed in .*train_hdf5_file_list\.txt but"):
        shapenet.prepared_files(tmp_path, "trainval")
    for name in ("a.h5", "b.h5", "c.h5"):
        (tmp_path / name).write_bytes(b"not hdf5")
    assert shapenet.prepared_files(tmp_path, "trainval") == [tmp_path / n
                                                            for n in ("a.h5", "b.h5", "c.h5")]
    with pytest.raises(DataError, match=r"a\.h5: not a readable"):
        shapenet.read_shapenet_h5_size(tmp_path / "a.h5")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        for key, shape in (("data", (2, 4, 6)), ("seglabels", (2, 4)), ("pid", (2, 4)),
                           ("category", (3,))):
            f[key] = np.zeros(shape, np.int32)
    with pytest.raises(DataError, match=r"d\.h5: inconsistent shapes: data \(2, 4, 6\)"):
        shapenet.read_shapenet_h5_size(tmp_path / "d.h5")


def test_read_shapenet_h5_errors(tmp_path):
    with pytest.raises(DataError, match="not a readable"):
        shapenet.read_shapenet_h5(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["data"] = np.zeros((1, 4, 6), np.float32)
    with pytest.raises(DataError, match="missing dataset"):
        shapenet.read_shapenet_h5(tmp_path / "x.h5")
    with pytest.raises(ValueError):
        shapenet.write_shapenet_h5(tmp_path / "y.h5", np.zeros((1, 4, 9)), np.zeros((1, 4)),
                                   np.zeros((1, 4)), np.zeros(1))
