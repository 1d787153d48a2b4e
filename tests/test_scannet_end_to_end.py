"""ScanNet v2 end to end through the console scripts, on the built-in synthetic release: prepare ->
train (train scenes, ignored vertices left out) -> evaluate the val scenes with the benchmark's
protocol (every vertex labelled, AP / AP50 / AP25 over the 18 instance classes, the submission
files, which a brute-force scorer of the benchmark's rules scores to the same AP) -> predict a mesh
and export, with ScanNet's 20 class names."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jsnet_tf.data import scannet
from tests import instance_ap_reference

BIN = pathlib.Path(sys.executable).parent
POINTS = 256
SMALL = ["--set", f"data.num_points={POINTS}", "--set", "model.npoints=[128, 64, 32, 16]", "--set", "train.batch_size=4",
         "--set", "eval.batch_size=4", "--set", "data.validation_rooms=0.5"]


def _run(script, *args, cwd, timeout=900):
    result = subprocess.run([str(BIN / script), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{script}: {result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def scannet_run(tmp_path_factory):
    """(folder, trained run folder, prepared data): two train scenes (one held out for validation),
    one val and one test scene of the synthetic release, a tiny network trained one epoch."""
    folder = tmp_path_factory.mktemp("scannet_e2e")
    raw, data, work = folder / "raw", folder / "scannet", folder / "train"
    _run("jsnet-synthetic-scannet", "--out", raw, "--scenes", "2,1,1", "--noprogress", cwd=folder)
    _run("jsnet-prepare-scannet", "--raw", raw, "--out", data, "--split_dir", raw / "splits", "--num_points", POINTS,
         "--noprogress", cwd=folder)
    trained = _run("jsnet-train", "--config", "scannet", "--data_dir", data, "--workdir", work, "--epochs", "1",
                   "--noverbose", *SMALL, cwd=folder)
    assert "training on ScanNet v2" in trained.stdout
    return folder, work, data


@pytest.mark.slow
def test_a_scannet_run_trains_on_train_scenes_and_validates_on_scenes_carved_from_them(scannet_run):
    _, work, data = scannet_run
    record = json.loads((work / "run.json").read_text())
    train_scenes = [pathlib.Path(line).stem for line in scannet.list_path(data, "train").read_text().split()]
    assert record["dataset"] == "scannet" and record["training_scenes"] == 1
    assert record["validation_rooms"] and set(record["validation_rooms"]) <= set(train_scenes)  # never val
    metrics = json.loads((work / "metrics.json").read_text())
    assert np.isfinite(metrics[0]["total"]) and 0.0 <= metrics[0]["val_accuracy"] <= 1.0


@pytest.mark.slow
def test_evaluation_scores_every_val_vertex_by_the_benchmarks_rules(scannet_run):
    folder, work, data = scannet_run
    out = folder / "eval"
    evaluated = _run("jsnet-evaluate", "--workdir", work, "--out", out, "--noverbose", cwd=folder)
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "scannet" and results["split"] == "val" and len(results["scenes"]) == 1
    assert results["class_names"] == list(scannet.CLASSES)
    assert results["instance_classes"] == list(range(2, 20)) and results["ignore_label"] == -1
    for key in ("AP", "AP50", "AP25", "mIoU", "mCov", "mPrec"):
        assert key in results
    assert "AP50" in evaluated.stdout
    scene = results["scenes"][0]
    vertices = len(np.load(data / "scenes" / f"{scene}.npz")["xyz"])
    stored = scannet.load_scene(data / "scenes" / f"{scene}.npz")
    assert results["num_points"] == int((stored.semantic >= 0).sum())  # ignored vertices are left out
    # The benchmark's files: every mesh vertex, nyu40 ids.
    semantic = np.loadtxt(out / "semantic" / f"{scene}.txt", dtype=np.int64)
    assert semantic.shape == (vertices,) and set(semantic.tolist()) <= set(scannet.NYU40_IDS)
    gt = np.loadtxt(out / "instances_gt" / f"{scene}.txt", dtype=np.int64)
    assert gt.shape == (vertices,) and set((gt[gt > 0] // 1000).tolist()) <= set(scannet.NYU40_IDS[2:])
    assert (gt[stored.semantic < 0] == 0).all()
    for line in (out / "instances" / f"{scene}.txt").read_text().splitlines():
        mask_file, label, confidence = line.split()
        assert int(label) in scannet.NYU40_IDS[2:] and 0 < float(confidence) <= 1  # instance classes only
        assert len((out / "instances" / mask_file).read_text().splitlines()) == vertices
    scored = instance_ap_reference.score_folder(out, [scene], list(scannet.NYU40_IDS[2:]))
    ap, ap50, ap25 = instance_ap_reference.averages(scored)
    for ours, theirs in ((results["AP"], ap), (results["AP50"], ap50), (results["AP25"], ap25)):
        assert (ours is None and theirs is None) or ours == pytest.approx(theirs, abs=1e-12)


@pytest.mark.slow
def test_predict_and_export_use_scannets_classes(scannet_run):
    from jsnet_tf import io

    folder, work, _ = scannet_run
    mesh = next((folder / "raw" / "scans_test").glob("*/*_vh_clean_2.ply"))
    predicted = folder / "predicted"
    _run("jsnet-predict", "--workdir", work, mesh, "--out", predicted, "--noverbose", cwd=folder)
    with np.load(predicted / f"{mesh.stem}_labels.npz") as z:
        assert list(z["classes"]) == list(scannet.CLASSES)
        assert len(z["semantic"]) == len(io.read_point_cloud(mesh).xyz)
    refused = subprocess.run([str(BIN / "jsnet-predict"), "--workdir", str(work), str(mesh), "--out", str(folder / "p2"),
                              "--category", "Mug"], cwd=folder, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "--category is for ShapeNet part runs;" in refused.stderr
    exported = folder / "exported"
    _run("jsnet-export", "--workdir", work, "--out", exported, cwd=folder)
    metadata = json.loads((exported / "1" / "assets.extra" / "jsnet_serving.json").read_text())
    assert metadata["dataset"] == "scannet" and metadata["class_names"] == list(scannet.CLASSES)
