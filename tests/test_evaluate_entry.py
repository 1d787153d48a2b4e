"""`python evaluate.py`: a run folder in, the original's output files, pictures and the paper's
metrics out; resumption; one clear line for bad input."""

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from jsnet_tf import checkpoints, config, metrics
from jsnet_tf.model import build_model
from tests.conftest import tiny_overrides

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _evaluate(*args):
    """The installed console script, run from a folder other than the repository: the run records
    its data folder as an absolute path, so nothing depends on the current folder."""
    elsewhere = tempfile.mkdtemp(prefix="evaluate_cwd_")
    return subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "jsnet-evaluate"), "--noverbose", *args], cwd=elsewhere,
        capture_output=True, text=True, timeout=600,
    )


def calibrated_run(data_dir, workdir, seed=0):
    """A train.py-style workdir whose area2 run (data of `data_dir`) holds weights after one
    training-mode pass (the batch-norm statistics of an untrained network would overflow in
    inference)."""
    cfg = config.load(None, tiny_overrides(data_dir) + ["data.areas=[2]", "eval.batch_size=4"])
    model = build_model(cfg)
    points = np.random.default_rng(seed).uniform(0, 1, (4, cfg["data"]["num_points"], 9)).astype(np.float32)
    model.set_bn_decay(0.0)  # moving statistics := this batch's (a tenth of them would blow the logits up)
    model(points, training=True)
    checkpoints.write_run_files(workdir / "area2", cfg, area=2)
    checkpoints.save_weights(model, workdir / "area2" / "weights")
    return workdir


@pytest.fixture(scope="module")
def run(tiny_s3dis, tmp_path_factory):
    return calibrated_run(tiny_s3dis, tmp_path_factory.mktemp("workdir"))


@pytest.fixture(scope="module")
def evaluated(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    result = _evaluate("--workdir", str(run), "--area", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.slow
def test_outputs_follow_the_original_formats_and_the_metrics_match_them(evaluated):
    out, result = evaluated
    listed = (out / "output_filelist.txt").read_text().split()
    assert listed and all((out / name).exists() for name in listed)
    room = listed[0][: -len("_pred.txt")]
    outputs = metrics.read_room_outputs(out / f"{room}_pred.txt")
    with np.load(out / f"{room}.npz") as z:
        np.testing.assert_array_equal(outputs.sem_pred, z["semantic_pred"])
        np.testing.assert_array_equal(outputs.ins_pred, z["instance_pred"])
        np.testing.assert_array_equal(outputs.sem_gt, z["semantic_gt"])
        np.testing.assert_allclose(outputs.xyz, z["xyz"], atol=1e-6)
    reported = json.loads((out / "results.json").read_text())
    from_files = metrics.evaluate_filelist(out / "output_filelist.txt")
    for key in ("oAcc", "mAcc", "mIoU", "mCov", "mWCov", "mPrec", "mRec"):
        assert reported[key] == pytest.approx(from_files[key]), key
    assert reported["protocol"] == "every point of every block" and reported["area"] == 2
    for suffix in ("sem_pred.ply", "ins_pred.ply", "sem_gt.ply", "ins_gt.ply"):
        assert (out / "pictures" / f"{room}_{suffix}").stat().st_size > 0
    assert (out / "pictures" / f"{room}.png").stat().st_size > 0 and (out / "confusion.png").stat().st_size > 0
    assert "mean" in result.stdout and "oAcc" in result.stdout


@pytest.mark.slow
def test_a_second_run_reuses_the_finished_rooms(run, evaluated):
    out, _ = evaluated
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    again = _evaluate("--workdir", str(run), "--area", "2", "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")} == stamps
    # Other settings: the stored rooms no longer apply and run again.
    changed = _evaluate("--workdir", str(run), "--area", "2", "--out", str(out), "--bandwidth", "0.55")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "came from other weights or settings: running it again" in changed.stdout
    assert all(p.stat().st_mtime_ns != stamps[p.name] for p in out.glob("*.npz"))
    assert json.loads((out / "results.json").read_text())["eval"]["bandwidth"] == 0.55


def test_help_explains_every_flag():
    result = _evaluate("--helpshort")
    for flag in ("workdir", "area", "data_dir", "out", "which", "bandwidth", "filelist", "set"):
        assert f"--{flag}:" in result.stdout, flag
    for flag in ("label_all_points", "pictures", "overwrite"):
        assert f"--[no]{flag}:" in result.stdout, flag
    assert "Traceback" not in result.stderr


def test_a_workdir_without_weights_is_one_clear_line(tmp_path):
    checkpoints.write_run_files(tmp_path / "area5", config.load(None))
    result = _evaluate("--workdir", str(tmp_path), "--area", "5")
    assert result.returncode != 0 and "evaluate.py: error:" in result.stderr and "holds no weights" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_an_area_without_prepared_rooms_is_one_clear_line(run, tmp_path):
    converted = tmp_path / "converted"  # a run folder that does not record its area, as convert writes
    shutil.copytree(run / "area2", converted)
    (converted / "run.json").unlink()
    result = _evaluate("--workdir", str(converted), "--area", "4", "--out", str(tmp_path / "out"))
    assert result.returncode != 0 and "evaluate.py: error:" in result.stderr and "area 4" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_is_not_evaluated_on_its_training_areas(run, tmp_path):
    result = _evaluate("--workdir", str(run / "area2"), "--area", "1", "--out", str(tmp_path))
    assert result.returncode != 0 and "is the model of area 2: area 1 was part of its training data" in result.stderr
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())


def test_predictions_that_do_not_match_their_ground_truth_are_one_clear_line(tmp_path):
    xyz = np.zeros((5, 3))
    labels = np.zeros(5, np.int64)
    metrics.write_room_outputs(
        tmp_path / "r_pred.txt", tmp_path / "r_gt.txt", xyz, np.zeros((5, 3)), np.ones(5), labels, labels, labels, labels
    )
    (tmp_path / "r_gt.txt").write_text("0 0\n" * 4)
    (tmp_path / "output_filelist.txt").write_text("r_pred.txt\n")
    result = _evaluate("--filelist", str(tmp_path / "output_filelist.txt"))
    assert result.returncode != 0 and "evaluate.py: error:" in result.stderr
    assert "r_pred.txt" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_results_record_the_weights_and_how_they_were_chosen(evaluated):
    out, _ = evaluated
    results = json.loads((out / "results.json").read_text())
    assert results["model_selection"] == {"which": "latest", "chosen_on": "nothing (the last epoch)", "selected_on_test_area": False}
    assert "/weights/" in results["weights"]


def test_best_weights_chosen_on_the_test_area_are_refused_without_the_flag(run, tmp_path):
    leaky = tmp_path / "leaky"
    shutil.copytree(run / "area2", leaky)
    (leaky / "run.json").write_text(json.dumps({"area": 2, "selected_on_test_area": True, "selection": "test area 2"}))
    shutil.copytree(leaky / "weights", leaky / "best")
    result = _evaluate("--workdir", str(leaky), "--which", "best", "--out", str(tmp_path / "out"))
    assert result.returncode != 0 and "evaluate.py: error:" in result.stderr
    assert "chosen on the test area" in result.stderr and "--select_on_test_area" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
    by_path = _evaluate("--workdir", str(leaky), "--which", str(leaky / "best"), "--out", str(tmp_path / "out"))
    assert by_path.returncode != 0 and "chosen on the test area" in by_path.stderr  # however best/ is named
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_words_accept_best_weights_of_the_test_area_and_results_say_so(run, tmp_path):
    leaky = tmp_path / "leaky"
    shutil.copytree(run / "area2", leaky)
    (leaky / "run.json").write_text(json.dumps({"area": 2, "selected_on_test_area": True, "selection": "test area 2"}))
    shutil.copytree(leaky / "weights", leaky / "best")
    result = _evaluate("--workdir", str(leaky), "--which", "best", "--select_on_test_area", "--nopictures",
                       "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    selection = json.loads((tmp_path / "out" / "results.json").read_text())["model_selection"]
    assert selection == {"which": "best", "chosen_on": "test area 2", "selected_on_test_area": True}


def test_best_of_a_run_without_validation_is_one_clear_line(run, tmp_path):
    result = _evaluate("--workdir", str(run), "--area", "2", "--which", "best", "--out", str(tmp_path / "out"))
    assert result.returncode != 0 and "has no best/ checkpoint" in result.stderr and "--which latest" in result.stderr
    assert "Traceback" not in result.stderr
