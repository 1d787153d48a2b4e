"""ShapeNet part end to end through the entry points: the synthetic part set -> prepare_shapenet
-> train.py (train split, validation on val) -> evaluate.py (part mIoU on test) -> predict on one
shape file; the files and keys each step writes."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
POINTS = 256
SMALL = ["--set", f"data.num_points={POINTS}", "--set", "model.npoints=[128, 64, 32, 16]", "--set", "train.batch_size=4",
         "--set", "eval.batch_size=4"]


def _run(*args, timeout=900):
    result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args[:2]}: {result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_prepare_train_evaluate_and_predict_a_shapenet_run(tmp_path):
    raw, data, work = tmp_path / "raw", tmp_path / "shapenet", tmp_path / "train"
    _run("-m", "jsnet_tf.data.synthetic_parts", "--out", str(raw), "--shapes_per_category", "1,1,1", "--noprogress")
    _run("-m", "jsnet_tf.data.prepare_shapenet", "--raw", str(raw), "--out", str(data), "--num_points", str(POINTS), "--noprogress")
    trained = _run("train.py", "--config", "shapenet_part", "--data_dir", str(data), "--workdir", str(work),
                   "--epochs", "1", "--noverbose", *SMALL)
    assert "training on ShapeNet part" in trained.stdout

    record = json.loads((work / "run.json").read_text())
    assert record["dataset"] == "shapenet" and record["epoch_blocks"] == 16 and "val" in record["selection"]
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics[0]["epoch"] == 1 and 0.0 <= metrics[0]["val_accuracy"] <= 1.0  # validated on the val split
    assert (work / "checkpoints" / "ckpt-1.index").exists() and (work / "best" / "ckpt-1.index").exists()

    out = tmp_path / "eval"
    evaluated = _run("evaluate.py", "--config", "shapenet_part", "--workdir", str(work), "--data_dir", str(data),
                     "--out", str(out), "--noverbose", *SMALL)
    results = json.loads((out / "results.json").read_text())
    for key in ("instance_mIoU", "class_mIoU", "per_category", "model_selection", "weights"):
        assert key in results, key
    assert results["num_shapes"] == 16 and len(results["per_category"]) == 16
    assert 0.0 <= results["instance_mIoU"] <= 1.0 and results["model_selection"]["which"] == "latest"
    assert "/checkpoints/ckpt-1" in results["weights"]
    assert "85.8" in (out / "results.txt").read_text() and "85.8" in evaluated.stdout  # the paper's row beside ours
    assert list((out / "pictures").glob("*.png")) and list((out / "pictures").glob("*.ply"))

    shape = next(raw.glob("0*/*.txt"))  # one shape of the release layout: x y z nx ny nz part
    predicted = tmp_path / "predicted"
    _run("-m", "jsnet_tf.predict", "--workdir", str(work), str(shape), "--out", str(predicted), "--noverbose")
    labels = np.loadtxt(predicted / f"{shape.stem}_labels.txt", comments="#")
    assert labels.shape[0] == len(np.loadtxt(shape)) and set(np.unique(labels[:, 3])) <= set(range(50))  # every point


def test_too_few_points_for_a_synthetic_shape_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jsnet_tf.data.synthetic_parts", "--out", str(tmp_path / "raw"), "--shapes_per_category", "1,0,0",
         "--points_per_shape", "100,120", "--noprogress"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "synthetic_parts: error:" in result.stderr and "--points_per_shape" in result.stderr
    assert "Traceback" not in result.stderr
