"""The S3DIS preparation CLI on a tiny raw tree of three areas."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jsnet_tf.data import prepare_s3dis, s3dis

REPO = Path(__file__).resolve().parents[2]
ROOMS = {1: ["office_1", "hallway_2"], 2: ["office_1"], 3: ["conferenceRoom_1"]}


def make_raw(root, seed=0):
    rng = np.random.default_rng(seed)
    for area, rooms in ROOMS.items():
        for room in rooms:
            anno = root / f"Area_{area}" / room / "Annotations"
            anno.mkdir(parents=True)
            for cls, n in (("floor_1", 300), ("chair_1", 150), ("chair_2", 120)):
                pts = np.column_stack([rng.uniform(0, 1.4, (n, 3)),
                                       rng.integers(0, 256, (n, 3))])
                np.savetxt(anno / f"{cls}.txt", pts, fmt="%.3f %.3f %.3f %d %d %d")
        (root / f"Area_{area}" / f"Area_{area}_alignmentAngle.txt").write_text("x\n")
    return root


def all_files(out):
    return sorted(str(p.relative_to(out)) for p in Path(out).rglob("*") if p.is_file())


def test_prepare_outputs_lists_and_resume(tmp_path):
    raw, out = make_raw(tmp_path / "raw"), tmp_path / "out"
    done = prepare_s3dis.prepare(raw, out, num_points=128, progress=False)
    names = ["Area_1_hallway_2", "Area_1_office_1", "Area_2_office_1", "Area_3_conferenceRoom_1"]
    assert done == {"prepared": names, "skipped": []}
    for name in names:
        room = s3dis.load_room(out / "rooms" / f"{name}.npz")
        blocks = s3dis.read_blocks_h5(out / "blocks" / f"{name}.h5")
        assert len(room) == 570 and blocks.data.shape[1:] == (128, 9) and len(blocks.data) > 0
        np.testing.assert_array_equal(blocks.semantic, room.semantic[blocks.indices])
    lists = out / "lists"
    train1 = s3dis.read_file_list(lists / "train_hdf5_file_list_woArea1.txt")
    assert train1 == [out / "blocks" / f"{n}.h5" for n in names[2:]]
    assert (lists / "test_hdf5_file_list_Area1.txt").read_text().split() == [
        f"blocks/{n}.h5" for n in names[:2]]
    assert (lists / "train_file_list_woArea3.txt").read_text().split() == [
        f"rooms/{n}.npz" for n in names[:3]]
    assert (lists / "test_file_list_Area2.txt").read_text().split() == [
        "rooms/Area_2_office_1.npz"]
    sizes = s3dis.read_mean_ins_size(lists / "mean_ins_size_woArea2.txt")
    train2 = [out / "blocks" / f"{n}.h5" for n in names if "Area_2" not in n]
    expected = s3dis.mean_instance_size(
        s3dis.instance_sizes(b.semantic, b.instance) for b in map(s3dis.read_blocks_h5, train2))
    np.testing.assert_array_equal(sizes, expected)
    assert sizes[1] > 0 and sizes[8] > 0 and sizes[0] == 0

    # second run: everything skipped, nothing rewritten
    stamps = {p: os.stat(out / p).st_mtime_ns for p in all_files(out) if "lists" not in p}
    again = prepare_s3dis.prepare(raw, out, num_points=128, progress=False)
    assert again == {"prepared": [], "skipped": names}
    assert {p: os.stat(out / p).st_mtime_ns for p in stamps} == stamps

    # a killed run: one room's block file missing, a stray temp file left behind
    (out / "blocks" / "Area_2_office_1.h5").unlink()
    (out / "blocks" / ".Area_2_office_1.h5.x1y2.tmp").write_bytes(b"\x89HDF half")
    (out / "rooms" / ".Area_3_conferenceRoom_1.npz.q.tmp").write_bytes(b"PK half")
    third = prepare_s3dis.prepare(raw, out, num_points=128, progress=False)
    assert third["prepared"] == ["Area_2_office_1"] and len(third["skipped"]) == 3
    assert s3dis.read_file_list(lists / "test_hdf5_file_list_Area2.txt") == [
        out / "blocks" / "Area_2_office_1.h5"]
    assert not any(".tmp" in line for f in lists.iterdir() for line in f.read_text().split())


def test_prepare_subset_of_areas_and_bad_room(tmp_path):
    raw, out = make_raw(tmp_path / "raw"), tmp_path / "out"
    done = prepare_s3dis.prepare(raw, out, areas=[2, 3], num_points=64, progress=False)
    assert done["prepared"] == ["Area_2_office_1", "Area_3_conferenceRoom_1"]
    with pytest.raises(s3dis.DataError, match="Area_7"):
        prepare_s3dis.prepare(raw, out, areas=[7], progress=False)
    bad = raw / "Area_1" / "office_1" / "Annotations" / "chair_2.txt"
    bad.write_text("0 0 0 1 2 3\n0 0 0 1 2\n")
    before = all_files(out)
    with pytest.raises(s3dis.DataError, match=r"chair_2\.txt:2"):
        prepare_s3dis.prepare(raw, out, areas=[1], num_points=64, progress=False)
    after = all_files(out)
    # the good room of area 1 (hallway_2 sorts first) was finished; nothing of office_1, no temps
    assert set(after) - set(before) == {"rooms/Area_1_hallway_2.npz",
                                        "blocks/Area_1_hallway_2.h5"}
    assert not any(p.endswith(".tmp") for p in after)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "jsnet_tf.data.prepare_s3dis", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("--raw", str(empty), "--out", str(tmp_path / "o"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"prepare_s3dis: error: {empty}: no Area_* folders (expected the S3DIS Area_1..Area_6)"]
    raw = make_raw(tmp_path / "raw")
    result = run_cli("--raw", str(raw), "--out", str(tmp_path / "o"), "--areas", "1,3",
                     "--num_points", "64")
    assert result.returncode == 0, result.stderr
    assert "prepared 3 room(s)" in result.stdout
    assert (tmp_path / "o" / "lists" / "mean_ins_size_woArea3.txt").is_file()
    assert not (tmp_path / "o" / "blocks" / "Area_2_office_1.h5").exists()
