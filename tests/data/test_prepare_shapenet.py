"""ShapeNet part preparation (library and CLI) on the synthetic part set, in the release layout."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jsnet_tf.data import prepare_shapenet, prepared_settings, shapenet
from jsnet_tf.data.shapenet import CATEGORIES, CATEGORY_NAMES
from jsnet_tf.errors import DataError

REPO = Path(__file__).resolve().parents[2]
NP = 256          # prepared points per shape
SIZES = (2, 1, 1)  # train, val, test shapes per category


@pytest.fixture(scope="module")
def raw16(tmp_path_factory):
    """Every category, (2, 1, 1) shapes each, in the release's raw layout."""
    root = tmp_path_factory.mktemp("raw16")
    splits = shapenet.write_synthetic_partset(root, seed=5, shapes_per_category=SIZES,
                                              points_range=(2048, 2300))
    return root, splits


@pytest.fixture(scope="module")
def prepared(raw16, tmp_path_factory):
    raw, _ = raw16
    out = tmp_path_factory.mktemp("prepared16")
    done = prepare_shapenet.prepare(raw, out, num_points=NP, progress=False)
    assert done == {"prepared": ["train", "val", "test"], "skipped": []}
    return out


@pytest.fixture(scope="module")
def raw_small(tmp_path_factory):
    """Two categories, one shape per split each: the tree the bad-input tests break."""
    root = tmp_path_factory.mktemp("raw_small")
    shapenet.write_synthetic_partset(root, seed=2, shapes_per_category=(1, 1, 1),
                                     categories=("Mug", "Table"), points_range=(2048, 2100))
    return root


def files_of(folder):
    """{name: (bytes, mtime_ns)} of every file in `folder` (hidden temp files included)."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {p.name: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in folder.iterdir()}


def load_split(out, split):
    sets = [shapenet.read_shapenet_h5(f) for f in shapenet.prepared_files(out, split)]
    return shapenet.PartSet(*(np.concatenate([getattr(s, k) for s in sets])
                              for k in shapenet.PartSet._fields))


def reference_instances(xyz, part, radius):
    """Brute force: all pairwise distances of each part's points, components by repeated
    min-label propagation, ids numbered by part, then by the component's first point."""
    instance = np.empty(len(part), np.int64)
    next_id = 0
    for p in sorted(set(part.tolist())):
        members = np.flatnonzero(part == p)
        pts = xyz[members]
        sq = (pts ** 2).sum(1)
        close = sq[:, None] + sq[None, :] - 2 * pts @ pts.T <= radius ** 2
        i, j = np.nonzero(close)
        label = np.arange(len(members))
        while True:
            new = label.copy()
            np.minimum.at(new, i, label[j])
            new = new[new]
            if np.array_equal(new, label):
                break
            label = new
        firsts = np.unique(label)          # a component's label is its first member's index
        instance[members] = next_id + np.searchsorted(firsts, label)
        next_id += len(firsts)
    return instance


# ------------------------------------------------------------------------------------ round trip

def test_round_trip_counts_categories_labels_and_instances(raw16, prepared):
    raw, splits = raw16
    out = prepared
    record = json.loads((out / "prepare.json").read_text())
    assert record == {"num_points": NP, "seed": 0, "instance_radius": 0.1,
                      "categories": shapenet.RELEASE_SYNSETS}
    synset_to_name = {v: k for k, v in shapenet.RELEASE_SYNSETS.items()}
    for split, per_category in zip(shapenet.SPLITS, SIZES):
        got = load_split(out, split)
        assert got.data.shape == (per_category * 16, NP, 6)
        # Shapes in the json's order, each with its category's id.
        expected = [CATEGORY_NAMES.index(synset_to_name[e.split("/")[1]]) for e in splits[split]]
        assert got.category.tolist() == expected
        assert np.bincount(got.category, minlength=16).tolist() == [per_category] * 16
        for c, part in zip(got.category, got.part):
            assert set(part.tolist()) == set(CATEGORIES[CATEGORY_NAMES[c]].parts)
    train = load_split(out, "train")
    assert sorted(set(train.part.ravel().tolist())) == list(range(50))

    # Instances are the connected components of each part (brute force on the raw file), for one
    # shape of every category; every prepared point is a point of its raw shape.
    test = load_split(out, "test")
    for entry, points, part, instance in zip(splits["test"], test.data, test.part, test.instance):
        rows = np.loadtxt(raw / (entry.split("/", 1)[1] + ".txt"))
        xyz = rows[:, :3] - rows[:, :3].mean(0)
        xyz /= np.sqrt((xyz ** 2).sum(1)).max()
        ref = reference_instances(xyz, rows[:, 6].astype(int), 0.1)
        p = points[:, :3].astype(np.float64)
        d = (p ** 2).sum(1)[:, None] + (xyz ** 2).sum(1)[None] - 2 * p @ xyz.T
        nearest = d.argmin(1)
        assert d[np.arange(NP), nearest].max() < 1e-10
        np.testing.assert_allclose(points[:, 3:], rows[nearest, 3:6], atol=1e-6)
        np.testing.assert_array_equal(part, rows[nearest, 6].astype(int))
        assert len(set(nearest.tolist())) == NP                # without replacement
        np.testing.assert_array_equal(instance, ref[nearest])
        name = synset_to_name[entry.split("/")[1]]
        assert ref.max() + 1 == shapenet.SYNTHETIC_INSTANCES[name]


def test_reference_instances_hand_case():
    # Two legs of part 5 (apart), a part 2 blob touching one of them: ids by part, first point.
    xyz = np.array([[0, 0, 0], [0, 0, .05], [1, 0, 0], [1, 0, .05], [0, .05, 0]], float)
    part = np.array([5, 5, 5, 5, 2])
    assert reference_instances(xyz, part, 0.06).tolist() == [1, 1, 2, 2, 0]
    assert shapenet.part_instances(xyz, part, 0.06).tolist() == [1, 1, 2, 2, 0]


# ------------------------------------------------------------------------------------- bad input

def break_shape(raw, line_number, new_line):
    """Rewrites one line of the last train shape (1-based; None: empties the file)."""
    category, path = shapenet.read_split(raw, "train")[-1]
    if line_number is None:
        path.write_text("")
    else:
        lines = path.read_text().splitlines()
        lines[line_number - 1] = new_line(lines[line_number - 1].split())
        path.write_text("\n".join(lines) + "\n")
    return category, path


def no_category_line(raw):
    split = raw / "train_test_split" / "shuffled_train_file_list.json"
    entries = json.loads(split.read_text())
    split.write_text(json.dumps(entries + ["shape_data/04225943/abcdef"]))
    return split, r":1: entry 2: unknown synset '04225943'"


def five_numbers(raw):
    _, path = break_shape(raw, 7, lambda t: " ".join(t[:5]))
    return path, r":7: expected 7 numbers \(x y z nx ny nz part\), found 5"


def part_outside(raw):
    category, path = break_shape(raw, 4, lambda t: " ".join(t[:6] + ["12.000000"]))
    parts = CATEGORIES[category].parts
    return path, rf":4: part 12 outside {category}'s parts {parts[0]}\.\.{parts[-1]}"


def fractional_part(raw):
    _, path = break_shape(raw, 3, lambda t: " ".join(t[:6] + [str(float(t[6]) + 0.5)]))
    return path, r":3: part label '\d+\.5' is not an integer"


def empty_shape(raw):
    _, path = break_shape(raw, None, None)
    return path, ": empty shape file"


def missing_split_list(raw):
    path = raw / "train_test_split" / "shuffled_val_file_list.json"
    path.unlink()
    return path, ": cannot read split file"


def missing_shape(raw):
    _, path = shapenet.read_split(raw, "train")[-1]
    path.unlink()
    return path, ": cannot read"


@pytest.mark.parametrize("breaker", [no_category_line, five_numbers, part_outside,
                                     fractional_part, empty_shape, missing_split_list,
                                     missing_shape])
def test_bad_input_is_one_line_and_leaves_no_output(raw_small, tmp_path, breaker):
    raw, out = tmp_path / "raw", tmp_path / "out"
    shutil.copytree(raw_small, raw)
    path, message = breaker(raw)
    with pytest.raises(DataError) as error:
        prepare_shapenet.prepare(raw, out, num_points=64, progress=False)
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(str(path)), text
    assert re.search(message, text), text
    assert files_of(out) == {}


def test_failing_split_leaves_earlier_splits_complete(raw_small, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    shutil.copytree(raw_small, raw)
    category, path = shapenet.read_split(raw, "test")[0]
    path.write_text(f"1 2 3 4 5 6 {CATEGORIES[category].parts[0]}\n1 2 3\n")
    with pytest.raises(DataError, match=rf"{path.name}:2: expected 7 numbers"):
        prepare_shapenet.prepare(raw, out, num_points=64, progress=False)
    assert sorted(files_of(out)) == ["prepare.json", "shapenet_train_0.h5", "shapenet_val_0.h5",
                                     "train_hdf5_file_list.txt", "val_hdf5_file_list.txt"]


# ----------------------------------------------------------------------------- settings, resume

def change_skateboard_synset(raw, synset):
    """Moves the Skateboard shapes to another synset, in the category file and the splits."""
    old = shapenet.read_category_file(raw)["Skateboard"]
    for path in [raw / "synsetoffset2category.txt",
                 *sorted((raw / "train_test_split").glob("*.json"))]:
        path.write_text(path.read_text().replace(old, synset))
    (raw / old).rename(raw / synset)


def test_changed_settings_refused_without_overwrite(raw16, prepared, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    shutil.copytree(raw16[0], raw)
    shutil.copytree(prepared, out)
    before = files_of(out)
    for kwargs, message in [
            (dict(num_points=128), r"num_points \(recorded 256, now 128\); rerun with --overwrite"),
            (dict(num_points=NP, seed=3), r"seed \(recorded 0, now 3\);"),
            (dict(num_points=128, radius=0.2),
             r"instance_radius \(recorded 0.1, now 0.2\), num_points \(recorded 256, now 128\)")]:
        with pytest.raises(DataError, match=rf"^{out / 'prepare.json'}: outputs were made with "
                                            rf"other settings: .*{message}"):
            prepare_shapenet.prepare(raw, out, progress=False, **kwargs)
        assert files_of(out) == before
    change_skateboard_synset(raw, "04225943")
    with pytest.raises(DataError, match=r"other settings: categories \(Skateboard: recorded "
                                        r"04225987, now 04225943\);"):
        prepare_shapenet.prepare(raw, out, num_points=NP, progress=False)
    assert files_of(out) == before

    # --overwrite replaces every output: only the split asked for is there afterwards.
    done = prepare_shapenet.prepare(raw, out, splits=["train"], num_points=128, overwrite=True,
                                    progress=False)
    assert done == {"prepared": ["train"], "skipped": []}
    assert sorted(files_of(out)) == ["prepare.json", "shapenet_train_0.h5",
                                     "train_hdf5_file_list.txt"]
    record = json.loads((out / "prepare.json").read_text())
    assert record["num_points"] == 128 and record["categories"]["Skateboard"] == "04225943"
    assert load_split(out, "train").data.shape == (32, 128, 6)


def test_outputs_without_record_are_refused(raw_small, tmp_path):
    out = tmp_path / "out"
    shapenet.prepare_shapenet(raw_small, out, "train", num_points=64)
    before = files_of(out)
    with pytest.raises(DataError, match=rf"^{out}: holds prepared files but no prepare\.json"):
        prepare_shapenet.prepare(raw_small, out, num_points=64, progress=False)
    assert files_of(out) == before
    done = prepare_shapenet.prepare(raw_small, out, num_points=64, overwrite=True,
                                    progress=False)
    assert done["prepared"] == ["train", "val", "test"]


def test_resume_skips_complete_splits(raw_small, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    shutil.copytree(raw_small, raw)
    kw = dict(num_points=64, progress=False)
    assert prepare_shapenet.prepare(raw, out, splits=["train"], **kw) == {
        "prepared": ["train"], "skipped": []}
    train = files_of(out)
    assert prepare_shapenet.prepare(raw, out, **kw) == {
        "prepared": ["val", "test"], "skipped": ["train"]}
    after = files_of(out)
    assert {k: after[k] for k in train} == train
    assert prepare_shapenet.prepare(raw, out, **kw) == {
        "prepared": [], "skipped": ["train", "val", "test"]}
    assert files_of(out) == after
    # An incomplete split (a listed file gone) and a split whose json changed are redone.
    (out / "shapenet_val_0.h5").unlink()
    split_json = raw / "train_test_split" / "shuffled_test_file_list.json"
    split_json.write_text(json.dumps(json.loads(split_json.read_text())[:1]))
    assert prepare_shapenet.prepare(raw, out, **kw) == {
        "prepared": ["val", "test"], "skipped": ["train"]}
    assert load_split(out, "test").data.shape == (1, 64, 6)
    assert {k: files_of(out)[k] for k in train} == train
    # --overwrite with the same settings redoes the splits asked for, identically.
    old_train = load_split(out, "train")
    done = prepare_shapenet.prepare(raw, out, splits=["train"], overwrite=True, **kw)
    assert done == {"prepared": ["train"], "skipped": []}
    assert os.stat(out / "shapenet_train_0.h5").st_mtime_ns != train["shapenet_train_0.h5"][1]
    for old, new in zip(old_train, load_split(out, "train")):
        np.testing.assert_array_equal(old, new)
    assert (out / "val_hdf5_file_list.txt").is_file() and (out / "shapenet_test_0.h5").is_file()


def test_describe_differences():
    text = prepared_settings.describe_differences(
        {"seed": 0, "categories": {"Mug": "1", "Cap": "2"}},
        {"seed": 1, "categories": {"Mug": "1", "Bag": "3"}, "num_points": 8})
    assert text == ("categories (Bag: recorded None, now 3; Cap: recorded 2, now None), "
                    "num_points (recorded None, now 8), seed (recorded 0, now 1)")


# ------------------------------------------------------------------------------------------ CLI

def run_module(module, *args):
    return subprocess.run([sys.executable, "-m", f"jsnet_tf.data.{module}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_cli_end_to_end(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    made = run_module("synthetic_parts", "--out", str(raw), "--seed", "4",
                      "--shapes_per_category", "1,0,1", "--points_per_shape", "2048,2100",
                      "--noprogress")
    assert made.returncode == 0, made.stderr
    assert "wrote 32 shapes (train 16, val 0, test 16) of 16 categories" in made.stdout
    assert shapenet.read_category_file(raw) == shapenet.RELEASE_SYNSETS
    for split, count in zip(shapenet.SPLITS, (16, 0, 16)):
        entries = json.loads((raw / shapenet.SPLIT_FILE.format(split)).read_text())
        assert len(entries) == count
        assert all(e.startswith("shape_data/") and (raw / (e[11:] + ".txt")).is_file()
                   for e in entries)
    assert len(list(raw.glob("*/*.txt"))) == 32

    ok = run_module("prepare_shapenet", "--raw", str(raw), "--out", str(out),
                    "--num_points", "64", "--splits", "train,test")
    assert ok.returncode == 0, ok.stderr
    assert "prepared train, test; skipped nothing" in ok.stdout
    assert "shapes: train 16, test 16" in ok.stdout
    assert "ShapeNet train: 100%" in ok.stderr                  # the progress bar
    refused = run_module("prepare_shapenet", "--raw", str(raw), "--out", str(out),
                         "--num_points", "32", "--splits", "train", "--noprogress")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"prepare_shapenet: error: {out / 'prepare.json'}: outputs were made with other "
        f"settings: num_points (recorded 64, now 32); rerun with --overwrite to replace all "
        f"outputs"]
    # A bad shape: exit status 1, one line naming file:line, nothing written.
    _, path = shapenet.read_split(raw, "train")[3]
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5] + ["0 0 0 0 1"] + lines[6:]) + "\n")
    fresh = tmp_path / "fresh"
    bad = run_module("prepare_shapenet", "--raw", str(raw), "--out", str(fresh), "--noprogress",
                     "--splits", "train,test")
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        f"prepare_shapenet: error: {path}:6: expected 7 numbers (x y z nx ny nz part), found 5"]
    assert files_of(fresh) == {}


def test_cli_help_and_usage():
    for module, names in [("prepare_shapenet", ["raw", "out", "num_points", "seed", "splits",
                                                "overwrite", "instance_radius", "progress"]),
                          ("synthetic_parts", ["out", "seed", "shapes_per_category",
                                               "points_per_shape", "progress"])]:
        result = run_module(module, "--helpshort")   # absl's help exits with status 1
        for name in names:
            # every flag is listed with a help text after it
            line = next(line for line in result.stdout.splitlines()
                        if line.strip().startswith((f"--{name}:", f"--[no]{name}:")))
            assert len(line.split(":", 1)[1].strip()) > 10, line
    bad = run_module("synthetic_parts", "--out", "x", "--shapes_per_category", "1,2")
    assert bad.returncode == 1 and "--shapes_per_category must be 3 integers" in bad.stderr
    bad = run_module("prepare_shapenet", "--raw", "r", "--out", "o", "--splits", "train,dev")
    assert bad.returncode == 1 and "--splits must be some of train,val,test" in bad.stderr
