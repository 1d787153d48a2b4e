"""`python train.py`: --help explains every flag; bad configuration and data stop with one clear
line before any training."""

import json
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import tiny_overrides

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args):
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_help_explains_every_flag():
    result = _run("--helpshort")  # absl prints the help and exits (status 1)
    for flag in ("--config", "--set", "--area", "--data_dir", "--workdir", "--epochs", "--batch_size"):
        assert flag in result.stdout
    assert "Traceback" not in result.stderr


def test_unknown_config_key_is_one_clear_line(tmp_path):
    result = _run("--workdir", str(tmp_path / "w"), "--set", "train.batchsize=8")
    assert result.returncode != 0
    assert "train.py: error: override 'train.batchsize=8': unknown key train.batchsize (did you mean 'batch_size'?)" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_is_one_clear_line(tmp_path):
    result = _run("--workdir", str(tmp_path / "w"), "--data_dir", str(tmp_path / "nothing"), "--area", "5")
    assert result.returncode != 0 and "train.py: error:" in result.stderr and "nothing" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_s3dis_config_without_areas_is_an_error_not_a_silent_exit(tmp_path):
    result = _run("--workdir", str(tmp_path / "w"), "--set", "data.areas=[]")
    assert result.returncode != 0 and "train.py: error:" in result.stderr and "data.areas is empty" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "w").exists()


def test_an_unknown_sampling_mode_is_one_clear_line(tmp_path):
    result = _run("--workdir", str(tmp_path / "w"), "--area", "5", "--set", "data.sampling=resampled")
    assert result.returncode != 0
    assert "data.sampling must be one of resample, fixed, random_corners, got 'resampled' (did you mean 'resample'?)" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "w").exists()


# ------------------------------------------------------------------------------------------------
# A refused start writes nothing, so the corrected command starts cleanly
# ------------------------------------------------------------------------------------------------

REFUSED = [
    ("model.backbone=pointcov", "model.backbone must be one of pointconv, pointnet2, got 'pointcov' (did you mean 'pointconv'?)"),
    ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
]


def _tiny_command(workdir, data_dir):
    """One epoch of the tiny network on `tiny_s3dis`, area 2 held out."""
    command = ["--workdir", str(workdir), "--data_dir", str(data_dir), "--area", "2", "--epochs", "1", "--novalidate", "--noverbose"]
    for override in tiny_overrides(data_dir):
        command += ["--set", override]
    return command


def _listing(folder):
    """Every file and folder under `folder` with its size and modification time."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _assert_refused(workdir, data_dir, override, message):
    before = _listing(data_dir)
    result = _run(*_tiny_command(workdir, data_dir), "--set", override)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("train.py: error:")]
    assert errors == [f"train.py: error: override {override!r}: {message}"]
    assert "Traceback" not in result.stderr
    assert not workdir.exists()
    assert _listing(data_dir) == before


@pytest.mark.parametrize("override, message", REFUSED, ids=["backbone_typo", "batch_size_0"])
def test_a_refused_start_writes_nothing(override, message, tiny_s3dis, tmp_path):
    _assert_refused(tmp_path / "run", tiny_s3dis, override, message)


@pytest.mark.slow
def test_the_corrected_command_after_refused_starts_trains_in_the_same_workdir(tiny_s3dis, tmp_path):
    workdir = tmp_path / "run"
    before = _listing(tiny_s3dis)
    for override, message in REFUSED:
        _assert_refused(workdir, tiny_s3dis, override, message)
    result = _run(*_tiny_command(workdir, tiny_s3dis))
    assert result.returncode == 0, result.stderr
    assert json.loads((workdir / "area2" / "metrics.json").read_text())[-1]["epoch"] == 1
    assert (workdir / "area2" / "checkpoints" / "checkpoint").is_file()
    assert _listing(tiny_s3dis) == before  # the user's data folder is only read
