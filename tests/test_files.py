"""Atomic writers and text-number parsing (jsnet_tf.files) against hand-checked files and lines."""

import os
import stat

import pytest

from jsnet_tf import files


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_text_atomic_makes_folders_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "new" / "deeper" / "results.txt"
    files.write_text_atomic(target, "first\n")
    assert target.read_text() == "first\n"
    files.write_text_atomic(target, "second, longer\n")
    assert target.read_text() == "second, longer\n"
    assert _names(target.parent) == ["results.txt"]


def test_the_written_file_follows_the_umask_not_mkstemps_0600(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    files.write_text_atomic(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    target = tmp_path / "weights.npz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with files.AtomicTarget(target) as tmp:
            assert tmp.parent == tmp_path and files.is_temp_file(tmp)
            tmp.write_bytes(b"half of the new")
            assert target.read_bytes() == b"old"  # nothing under the final name until success
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["weights.npz"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyError):
        with files.AtomicTarget(tmp_path / "out.json") as tmp:
            tmp.write_text("{")
            raise KeyError("boom")
    assert _names(tmp_path) == []


def test_temp_names_are_hidden_next_to_the_target_and_fresh(tmp_path):
    first, second = files.temp_path_for(tmp_path / "a.h5"), files.temp_path_for(tmp_path / "a.h5")
    assert first != second and first.exists() and second.exists()
    for tmp in (first, second):
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.h5.") and tmp.name.endswith(".tmp")
        assert files.is_temp_file(tmp)


@pytest.mark.parametrize("name, is_temp", [
    (".a.h5.x1y2.tmp", True), (".results.txt.tmp", True),
    ("a.h5", False), ("a.tmp", False), (".hidden", False), (".a.h5.tmp.bak", False),
])
def test_is_temp_file(name, is_temp):
    assert files.is_temp_file(f"/some/folder/{name}") is is_temp


def test_parse_numbers_reads_a_good_line():
    assert files.parse_numbers("f.txt", 3, " 1 -2.5\t3e2 \n", 3, "a b c") == ([1.0, -2.5, 300.0], None)


@pytest.mark.parametrize("line, problem", [
    ("1 2", "f.txt:7: expected 3 numbers (x y z), found 2"),
    ("1 2 3 4", "f.txt:7: expected 3 numbers (x y z), found 4"),
    ("1 two 3", "f.txt:7: not a number in '1 two 3'"),
    ("1 nan 3\n", "f.txt:7: non-finite value in '1 nan 3'"),
    ("1 2 -inf", "f.txt:7: non-finite value in '1 2 -inf'"),
])
def test_parse_numbers_names_the_file_line_and_problem(line, problem):
    assert files.parse_numbers("f.txt", 7, line, 3, "x y z") == (None, problem)
