"""Tests for the built-in synthetic S3DIS generator (jsnet_tf.data.synthetic)."""

import collections
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jsnet_tf.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHELL = ("wall", "floor", "ceiling")


def _room(seed=0, name="office_1", **kwargs):
    return synthetic.make_room(np.random.default_rng(seed), name, **kwargs)


def _files(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def _rooms(root):
    return sorted(os.path.join(root, a, r) for a in os.listdir(root) if a.startswith("Area_")
                  for r in os.listdir(os.path.join(root, a)))


def _parse(path):
    with open(path) as f:
        text = f.read()
    lines = text.count("\n")
    values = np.array(text.split(), dtype=np.float64)
    assert values.size == 6 * lines, f"{path}: not 6 numbers on every line"
    return values.reshape(-1, 6)


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("s3dis"))
    summary = synthetic.generate(out, seed=0)
    return out, summary


# --- make_room -------------------------------------------------------------------------------


def test_make_room_is_deterministic_and_seed_dependent():
    a, b, c = _room(3), _room(3), _room(4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert len(a.xyz) != len(c.xyz) or not np.array_equal(a.xyz, c.xyz)


@pytest.mark.parametrize("name", ["office_1", "conferenceRoom_1", "hallway_2", "storage_1",
                                  "lounge_1"])
def test_make_room_arrays_are_consistent(name):
    room = _room(7, name, points_per_m2=300)
    n = len(room.xyz)
    assert n > 1000
    assert room.xyz.shape == (n, 3) and room.rgb.shape == (n, 3) and room.rgb.dtype == np.uint8
    assert room.semantic.shape == (n,) and room.instance.shape == (n,)
    assert np.all(np.isfinite(room.xyz))
    assert set(room.semantic) <= set(synthetic.CLASSES)
    assert set(SHELL) <= set(room.semantic) and "door" in room.semantic
    # ordered by instance, ids 0..K-1, one class per instance
    assert np.all(np.diff(room.instance) >= 0)
    ids = np.unique(room.instance)
    np.testing.assert_array_equal(ids, np.arange(len(ids)))
    for k in ids:
        assert len(set(room.semantic[room.instance == k])) == 1
    names = synthetic.annotation_names(room)
    assert len(names) == len(ids) == len(set(names))
    assert sum(nm.startswith("wall_") for nm in names) == 4


def test_instances_are_compact_and_inside_the_room():
    for seed, name in [(0, "office_1"), (1, "conferenceRoom_1"), (2, "storage_1"),
                       (3, "lounge_2"), (4, "hallway_1")]:
        room = _room(seed, name, points_per_m2=300, size=(8.0, 6.0, 3.0))
        assert np.all(room.xyz >= -0.2) and np.all(room.xyz <= np.array([8.2, 6.2, 3.2]))
        for k in np.unique(room.instance):
            m = room.instance == k
            cls = room.semantic[m][0]
            if cls in SHELL or cls == "beam":
                continue
            extent = np.ptp(room.xyz[m], axis=0)
            assert extent.max() <= 4.2, (name, cls, extent)
            assert extent[0] * extent[1] < 0.35 * 8.0 * 6.0, (name, cls, extent)


def test_chairs_touch_tables():
    room = _room(5, "conferenceRoom_1", points_per_m2=300)
    boxes = {}
    for k in np.unique(room.instance):
        m = room.instance == k
        boxes[k] = (room.semantic[m][0], room.xyz[m].min(0), room.xyz[m].max(0))
    tables = [(lo, hi) for c, lo, hi in boxes.values() if c == "table"]
    chairs = [(lo, hi) for c, lo, hi in boxes.values() if c == "chair"]
    assert tables and len(chairs) >= 4
    for lo, hi in chairs:
        assert any(np.all(lo[:2] <= thi[:2] + 0.05) and np.all(hi[:2] >= tlo[:2] - 0.05)
                   for tlo, thi in tables)


def test_scanner_like_density_noise_and_colour_variation():
    room = _room(11, "office_1", points_per_m2=1000, size=(9.0, 7.0, 3.0))
    floor = room.xyz[room.semantic == "floor"]
    # ~5 mm Gaussian noise around the floor plane
    assert 0.003 < floor[:, 2].std() < 0.008
    # density varies across the floor (falloff away from the scanner)
    cells = np.histogram2d(floor[:, 0], floor[:, 1], bins=[np.arange(0.5, 8.6, 1.0),
                                                           np.arange(0.5, 6.6, 1.0)])[0]
    assert cells.max() > 1.8 * cells.min()
    # per-instance colour: instances of one class differ on average
    means = [room.rgb[room.instance == k].mean(0) for k in np.unique(room.instance)
             if room.semantic[room.instance == k][0] == "wall"]
    assert len(means) == 4
    assert min(np.abs(a - b).max() for i, a in enumerate(means) for b in means[i + 1:]) > 0.5
    # and per-point jitter
    assert room.rgb[room.semantic == "wall"].std(0).min() > 2


def test_write_room_concatenates_annotations(tmp_path):
    room = _room(2, "office_3", points_per_m2=200)
    room_dir = str(tmp_path / "office_3")
    synthetic.write_room(room, room_dir)
    names = synthetic.annotation_names(room)
    ann = os.path.join(room_dir, "Annotations")
    assert sorted(os.listdir(ann)) == sorted(n + ".txt" for n in names)
    parts = []
    for n in names:
        with open(os.path.join(ann, n + ".txt"), "rb") as f:
            parts.append(f.read())
    with open(os.path.join(room_dir, "office_3.txt"), "rb") as f:
        assert f.read() == b"".join(parts)
    data = _parse(os.path.join(room_dir, "office_3.txt"))
    np.testing.assert_allclose(data[:, :3], room.xyz, atol=5e-4)
    np.testing.assert_array_equal(data[:, 3:], room.rgb)


# --- generate / files ------------------------------------------------------------------------


def test_default_set_layout_and_classes(default_set):
    out, summary = default_set
    assert summary["rooms"] == 12 and summary["written"] == 12 and summary["skipped"] == 0
    assert 500_000 < summary["points"] < 3_000_000
    assert sorted(os.listdir(out)) == [f"Area_{i}" for i in range(1, 7)]
    instances = collections.Counter()
    per_room_max = collections.Counter()
    total = 0
    for room_dir in _rooms(out):
        name = os.path.basename(room_dir)
        assert name.split("_")[0] in synthetic.ROOM_TYPES and name.split("_")[1].isdigit()
        room_counts = collections.Counter()
        lines = []
        for fn in os.listdir(os.path.join(room_dir, "Annotations")):
            cls, idx = fn[:-len(".txt")].rsplit("_", 1)
            assert cls in synthetic.CLASSES and idx.isdigit() and int(idx) >= 1
            room_counts[cls] += 1
            data = _parse(os.path.join(room_dir, "Annotations", fn))
            assert len(data) >= 10 and np.all(np.isfinite(data))
            rgb = data[:, 3:]
            assert np.all(rgb == np.round(rgb)) and rgb.min() >= 0 and rgb.max() <= 255
            lines.append(len(data))
        for cls, n in room_counts.items():   # numbered 1..n per class
            assert all(os.path.exists(os.path.join(room_dir, "Annotations", f"{cls}_{i}.txt"))
                       for i in range(1, n + 1))
            per_room_max[cls] = max(per_room_max[cls], n)
        instances.update(room_counts)
        with open(os.path.join(room_dir, name + ".txt")) as f:
            assert f.read().count("\n") == sum(lines)
        total += sum(lines)
    assert total == summary["points"]
    assert set(instances) == set(synthetic.CLASSES)
    assert instances["table"] >= 6 and instances["chair"] >= 12
    assert per_room_max["table"] >= 2 and per_room_max["chair"] >= 3
    assert per_room_max["clutter"] >= 5 and per_room_max["wall"] == 4


def test_room_file_holds_the_annotation_points(default_set):
    out, _ = default_set
    for room_dir in _rooms(out)[:3]:
        ann = os.path.join(room_dir, "Annotations")
        ann_lines = []
        for fn in os.listdir(ann):
            with open(os.path.join(ann, fn)) as f:
                ann_lines += f.read().splitlines()
        with open(os.path.join(room_dir, os.path.basename(room_dir) + ".txt")) as f:
            room_lines = f.read().splitlines()
        assert sorted(room_lines) == sorted(ann_lines)


def test_generate_is_deterministic(tmp_path):
    kw = dict(areas=2, rooms_per_area=2, points_per_m2=60)
    synthetic.generate(str(tmp_path / "a"), seed=1, **kw)
    synthetic.generate(str(tmp_path / "b"), seed=1, **kw)
    synthetic.generate(str(tmp_path / "c"), seed=2, **kw)
    a, b, c = (_files(str(tmp_path / d)) for d in "abc")
    assert a and a == b
    assert a != c


def test_generate_resumes_and_overwrites(tmp_path):
    out = str(tmp_path / "d")
    kw = dict(seed=3, areas=2, rooms_per_area=2, points_per_m2=60)
    first = synthetic.generate(out, **kw)
    assert first["written"] == 4
    before = _files(out)
    again = synthetic.generate(out, **kw)
    assert again["written"] == 0 and again["skipped"] == 4 and again["points"] == 0
    # an interrupted run: one room missing, a stale temp folder left behind
    victim = _rooms(out)[1]
    shutil.rmtree(victim)
    os.makedirs(os.path.join(out, synthetic._TMP_DIR, "Area_1", "junk"))
    resumed = synthetic.generate(out, **kw)
    assert resumed["written"] == 1 and resumed["skipped"] == 3
    assert _files(out) == before
    assert sorted(os.listdir(out)) == ["Area_1", "Area_2"]
    redone = synthetic.generate(out, overwrite=True, **kw)
    assert redone["written"] == 4
    assert _files(out) == before
    assert sorted(os.listdir(out)) == ["Area_1", "Area_2"]


def test_cli(tmp_path):
    out = str(tmp_path / "cli")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "jsnet_tf.data.synthetic"]
    res = subprocess.run(cmd + ["--out", out, "--seed", "0", "--rooms_per_area", "1",
                                "--points_per_m2", "40"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(out)) == [f"Area_{i}" for i in range(1, 7)]
    for room_dir in _rooms(out):
        name = os.path.basename(room_dir)
        assert os.path.isfile(os.path.join(room_dir, name + ".txt"))
        assert os.listdir(os.path.join(room_dir, "Annotations"))
    assert "6 rooms" in res.stdout
    res = subprocess.run(cmd + ["--out", out, "--rooms_per_area", "1", "--points_per_m2", "40"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "6 already there" in res.stdout
    res = subprocess.run(cmd + ["--help"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    for flag in ("--out", "--seed", "--areas", "--rooms_per_area", "--points_per_m2",
                 "--overwrite"):
        assert flag in res.stdout + res.stderr
