"""The S3DIS preparation CLI on a tiny raw tree of three areas."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jsnet_tf.data import prepare_s3dis, prepared_settings, s3dis

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


# ----------------------------------------------------------------------------- recorded settings

NAMES = ["Area_1_hallway_2", "Area_1_office_1", "Area_2_office_1", "Area_3_conferenceRoom_1"]


@pytest.fixture(scope="module")
def prepared64(tmp_path_factory):
    """(raw, out) of the tiny tree prepared with 64 points, seed 0 (copy `out` before changing it)."""
    root = tmp_path_factory.mktemp("prepared64")
    raw, out = make_raw(root / "raw"), root / "out"
    prepare_s3dis.prepare(raw, out, num_points=64, progress=False)
    return raw, out


def snapshot(out):
    """{file: (bytes, mtime in ns)} of every file under `out`: what "nothing changed" compares."""
    return {p: ((Path(out) / p).read_bytes(), os.stat(Path(out) / p).st_mtime_ns)
            for p in all_files(out)}


def copy_of(out, tmp_path):
    return Path(shutil.copytree(out, tmp_path / "out"))


def test_settings_are_recorded(prepared64):
    _, out = prepared64
    assert json.loads((out / "prepare.json").read_text()) == {"num_points": 64, "seed": 0}
    assert sorted(p.name for p in out.iterdir()) == ["blocks", "lists", "prepare.json", "rooms"]


@pytest.mark.parametrize("kwargs, differences", [
    (dict(num_points=32), "num_points (recorded 64, now 32)"),
    (dict(num_points=64, seed=3), "seed (recorded 0, now 3)"),
    (dict(num_points=32, seed=3, areas=[2]),
     "num_points (recorded 64, now 32), seed (recorded 0, now 3)"),
])
def test_changed_settings_are_refused_and_nothing_changes(prepared64, tmp_path, kwargs,
                                                          differences):
    raw, out = prepared64[0], copy_of(prepared64[1], tmp_path)
    before = snapshot(out)
    with pytest.raises(s3dis.DataError) as refused:
        prepare_s3dis.prepare(raw, out, progress=False, **kwargs)
    assert str(refused.value) == (f"{out / 'prepare.json'}: outputs were made with other "
                                  f"settings: {differences}; rerun with --overwrite to replace "
                                  "all outputs")
    assert snapshot(out) == before


def test_outputs_without_a_record_or_with_a_broken_one_are_refused(prepared64, tmp_path):
    raw, out = prepared64[0], copy_of(prepared64[1], tmp_path)
    (out / "prepare.json").unlink()
    before = snapshot(out)
    with pytest.raises(s3dis.DataError) as refused:
        prepare_s3dis.prepare(raw, out, num_points=64, progress=False)
    assert str(refused.value) == (f"{out}: holds prepared files but no prepare.json; rerun with "
                                  "--overwrite to replace them")
    assert snapshot(out) == before
    (out / "prepare.json").write_text('{"num_points": 64,\n')
    before = snapshot(out)
    with pytest.raises(s3dis.DataError,
                       match=rf"^{out / 'prepare.json'}: not a readable settings file: "):
        prepare_s3dis.prepare(raw, out, num_points=64, progress=False)
    assert snapshot(out) == before


def test_overwrite_with_other_settings_gives_what_a_fresh_folder_gets(prepared64, tmp_path):
    raw, out = prepared64[0], copy_of(prepared64[1], tmp_path)
    (out / "notes.txt").write_text("mine\n")  # not an output: left alone
    done = prepare_s3dis.prepare(raw, out, areas=[1], num_points=32, seed=3, overwrite=True,
                                 progress=False)
    assert done == {"prepared": NAMES[:2], "skipped": []}
    fresh = tmp_path / "fresh"
    prepare_s3dis.prepare(raw, fresh, areas=[1], num_points=32, seed=3, progress=False)
    # Every output of the old settings is gone, areas 2 and 3 included: nothing mixes.
    assert all_files(out) == sorted(all_files(fresh) + ["notes.txt"])
    assert json.loads((out / "prepare.json").read_text()) == {"num_points": 32, "seed": 3}
    for name in NAMES[:2]:
        got = s3dis.read_blocks_h5(out / "blocks" / f"{name}.h5")
        want = s3dis.read_blocks_h5(fresh / "blocks" / f"{name}.h5")
        assert got.data.shape[1:] == (32, 9)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    for path in all_files(fresh):
        if path.startswith("lists/"):
            assert (out / path).read_text() == (fresh / path).read_text()


def test_overwrite_with_the_same_settings_redoes_the_requested_rooms(prepared64, tmp_path):
    raw, out = prepared64[0], copy_of(prepared64[1], tmp_path)
    before = snapshot(out)
    done = prepare_s3dis.prepare(raw, out, areas=[2], num_points=64, overwrite=True, progress=False)
    assert done == {"prepared": ["Area_2_office_1"], "skipped": []}
    after = snapshot(out)
    assert sorted(after) == sorted(before)
    redone = {p for p in after if after[p][1] != before[p][1]}
    assert {"blocks/Area_2_office_1.h5", "rooms/Area_2_office_1.npz"} <= redone
    assert not {p for p in redone if p.startswith(("blocks/", "rooms/"))} - {
        "blocks/Area_2_office_1.h5", "rooms/Area_2_office_1.npz"}
    assert "prepare.json" not in redone
    # the same raw files, settings and seed: the same blocks
    redone_blocks, old_blocks = (s3dis.read_blocks_h5(folder / "blocks" / "Area_2_office_1.h5")
                                 for folder in (out, prepared64[1]))
    for a, b in zip(redone_blocks, old_blocks):
        np.testing.assert_array_equal(a, b)


def test_same_settings_resume_without_rewriting(prepared64, tmp_path):
    raw, out = prepared64[0], copy_of(prepared64[1], tmp_path)
    (out / "blocks" / "Area_3_conferenceRoom_1.h5").unlink()
    before = snapshot(out)
    done = prepare_s3dis.prepare(raw, out, num_points=64, progress=False)
    assert done == {"prepared": ["Area_3_conferenceRoom_1"], "skipped": NAMES[:3]}
    after = snapshot(out)
    assert {p: v for p, v in after.items() if not p.startswith("lists/")} == {
        **{p: v for p, v in before.items() if not p.startswith("lists/")},
        "blocks/Area_3_conferenceRoom_1.h5": after["blocks/Area_3_conferenceRoom_1.h5"]}


def test_a_first_run_that_fails_leaves_no_settings(tmp_path):
    raw, out = make_raw(tmp_path / "raw"), tmp_path / "out"
    (raw / "Area_2" / "office_1" / "Annotations" / "floor_1.txt").write_text("0 0 0 1 2\n")
    with pytest.raises(s3dis.DataError, match=r"floor_1\.txt:1: expected 6 numbers"):
        prepare_s3dis.prepare(raw, out, areas=[2], num_points=64, progress=False)
    assert all_files(out) == []


def test_cli_refuses_changed_settings_in_one_line(prepared64, tmp_path):
    raw, out = prepared64[0], copy_of(prepared64[1], tmp_path)
    before = snapshot(out)
    result = run_cli("--raw", str(raw), "--out", str(out), "--num_points", "32", "--noprogress")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"prepare_s3dis: error: {out / 'prepare.json'}: outputs were made with other settings: "
        "num_points (recorded 64, now 32); rerun with --overwrite to replace all outputs"]
    assert snapshot(out) == before
    result = run_cli("--raw", str(raw), "--out", str(out), "--num_points", "32", "--overwrite",
                     "--noprogress", "--areas", "3")
    assert result.returncode == 0, result.stderr
    assert "prepared 1 room(s), skipped 0" in result.stdout
    assert all_files(out) == [
        "blocks/Area_3_conferenceRoom_1.h5", "lists/mean_ins_size_woArea3.txt",
        "lists/test_file_list_Area3.txt", "lists/test_hdf5_file_list_Area3.txt",
        "lists/train_file_list_woArea3.txt", "lists/train_hdf5_file_list_woArea3.txt",
        "prepare.json", "rooms/Area_3_conferenceRoom_1.npz"]


def test_describe_differences_names_every_differing_key_once():
    text = prepared_settings.describe_differences(
        {"seed": 0, "num_points": 64, "categories": {"Mug": "1", "Cap": "2"}},
        {"seed": 1, "num_points": 64, "categories": {"Mug": "1", "Bag": "3"}, "radius": 0.1})
    assert text == ("categories (Bag: recorded None, now 3; Cap: recorded 2, now None), "
                    "radius (recorded None, now 0.1), seed (recorded 0, now 1)")
