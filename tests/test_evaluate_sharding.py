"""`evaluate.py --shard k/n` and TF_CONFIG: disjoint shares of an area's rooms in separate
processes give, merged, what one process gives, byte for byte; results.json times every stage."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.test_distributed import _free_ports
from tests.test_evaluate_entry import _evaluate, calibrated_run

STAGES = ("reading", "blocks", "network", "mean-shift", "merging", "files")


@pytest.fixture(scope="module")
def run(tiny_s3dis_split, tmp_path_factory):
    """A run of area 2 (two rooms) with usable batch-norm statistics."""
    return calibrated_run(tiny_s3dis_split, tmp_path_factory.mktemp("workdir"), seed=1)


@pytest.fixture(scope="module")
def whole(run, tmp_path_factory):
    """The area evaluated by one process."""
    out = tmp_path_factory.mktemp("whole")
    result = _evaluate("--workdir", str(run), "--area", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def _assert_same_outputs(expected, actual):
    """Every file of `expected` is in `actual` with the same bytes, except: an .npz holds the same
    arrays (zip entries carry their write time) and the time each room took; results.json is the
    same but for its `timing` record."""
    names = sorted(p.relative_to(expected) for p in expected.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(actual) for p in actual.rglob("*") if p.is_file())
    assert any(n.suffix == ".npz" for n in names) and any(n.suffix == ".png" for n in names)
    for name in names:
        if name.suffix == ".npz":
            with np.load(expected / name) as a, np.load(actual / name) as b:
                assert sorted(a.files) == sorted(b.files), name
                for key in a.files:
                    if key != "timing":
                        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
        elif name.name == "results.json":
            a, b = (json.loads((folder / name).read_text()) for folder in (expected, actual))
            assert a.pop("timing") and b.pop("timing")
            assert json.dumps(a) == json.dumps(b)
        else:
            assert (expected / name).read_bytes() == (actual / name).read_bytes(), name


@pytest.mark.slow
def test_job_array_shares_merge_into_what_one_process_writes(run, whole, tmp_path):
    args = ["--workdir", str(run), "--area", "2", "--out", str(tmp_path)]
    first = _evaluate(*args, "--shard", "0/2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 rooms (shard 0/2: 1 of them)" in first.stdout
    assert "the share that finishes last" in first.stdout and not (tmp_path / "results.json").exists()
    second = _evaluate(*args, "--shard", "1/2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 rooms (shard 1/2: 1 of them)" in second.stdout and "oAcc" in second.stdout
    _assert_same_outputs(whole[0], tmp_path)


@pytest.mark.slow
def test_two_tf_distribute_workers_on_localhost_write_what_one_process_writes(run, whole, tmp_path):
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    script = pathlib.Path(sys.executable).parent / "jsnet-evaluate"
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [str(script), "--noverbose", "--workdir", str(run), "--area", "2", "--out", str(tmp_path)],
            env={**os.environ, "TF_CONFIG": json.dumps(tf_config)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "tf.distribute task 1/2: its 1 of 2 rooms done; the chief merges them" in outputs[1][0]
    assert "oAcc" in outputs[0][0] and "oAcc" not in outputs[1][0]
    _assert_same_outputs(whole[0], tmp_path)


@pytest.mark.slow
def test_results_time_every_stage_of_every_room(whole):
    out, result = whole
    timing = json.loads((out / "results.json").read_text())["timing"]
    assert set(timing["rooms"]) == set(json.loads((out / "results.json").read_text())["rooms"])
    for name, room in timing["rooms"].items():
        with np.load(out / f"{name}.npz") as z:
            assert room["points"] == len(z["xyz"])
        assert set(room["stages"]) == set(STAGES) and all(s > 0 for s in room["stages"].values())
        assert room["points_per_second"] == pytest.approx(room["points"] / room["seconds"], rel=1e-2)
    for stage in STAGES:
        assert timing["stages"][stage] == pytest.approx(sum(r["stages"][stage] for r in timing["rooms"].values()), abs=2e-3)
    assert timing["points"] == sum(r["points"] for r in timing["rooms"].values())
    assert timing["devices"] == ["/job:localhost/replica:0/task:0/device:CPU:0"] or timing["devices"] == ["/CPU:0"]
    assert "time per stage over 2 rooms" in result.stdout and "network" in result.stdout


@pytest.mark.parametrize("shard, problem", [("2/2", "k must lie in 0 .. n-1"), ("one of two", "expected k/n")])
def test_a_share_that_does_not_exist_is_one_clear_line(run, tmp_path, shard, problem):
    result = _evaluate("--workdir", str(run), "--area", "2", "--out", str(tmp_path), "--shard", shard)
    assert result.returncode != 0 and "evaluate.py: error:" in result.stderr and problem in result.stderr
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())
