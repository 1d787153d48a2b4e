"""`python train.py`: --help explains every flag; bad configuration and data stop with one clear
line before any training."""

import pathlib
import subprocess
import sys

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
