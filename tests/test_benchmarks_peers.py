"""benchmarks/peers.py: its agreement checks catch wrong peer outputs, a --quick run finds every installed
peer agreeing with the compiled ops, and a peer that does not import is reported, not raised."""

import importlib
import json
import pathlib
import sys

import numpy as np
import pytest
from absl import flags

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
PEER_MODULES = ("fpsample", "open3d", "pykdtree.kdtree", "scipy.spatial", "faiss", "sklearn.neighbors")


@pytest.fixture
def peers(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("peers")


def run_quick(peers, tmp_path, *extra):
    """peers.py --quick in this process; returns the JSON report."""
    report = tmp_path / "peers.json"
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["peers.py", "--quick", f"--json={report}", *extra])
        peers.main([])
    finally:
        flags.FLAGS.unparse_flags()
    return json.loads(report.read_text())


def importable(module):
    try:
        importlib.import_module(module)
    except (ImportError, OSError):
        return False
    return True


def brute_knn(support, queries, k):
    d2 = ((queries[:, :, None, :].astype(np.float64) - support[:, None, :, :]) ** 2).sum(-1)
    idx = np.argsort(d2, axis=2, kind="stable")[:, :, :k]
    return np.take_along_axis(d2, idx, axis=2).astype(np.float32), idx.astype(np.int32)


def test_agreement_checks_accept_the_truth_and_reject_a_wrong_answer(peers, rng):
    support = rng.random((2, 40, 3), dtype=np.float32)
    queries = rng.random((2, 10, 3), dtype=np.float32)
    call = peers.Call("knn", "test", None, {"support": support, "queries": queries}, {"k": 4})
    dist, idx = brute_knn(support, queries, 4)
    assert peers.neighbour_agreement(call, (dist, idx), (dist.astype(np.float64), idx[:, :, ::-1]))[0] is True
    wrong = idx.copy()
    wrong[1, 3, 3] = brute_knn(support, queries, 5)[1][1, 3, 4]  # the 5th nearest instead of the 4th
    assert peers.neighbour_agreement(call, (dist, idx), (dist.astype(np.float64), wrong))[0] is False

    # Ball query: the first 3 hits in index order; an all-hit peer that misses one disagrees.
    radius, nsample = 0.4, 3
    ball = peers.Call("ball", "test", None, {"support": support, "queries": queries},
                      {"radius": radius, "nsample": nsample})
    d2 = ((queries[:, :, None, :].astype(np.float64) - support[:, None, :, :]) ** 2).sum(-1)
    hits = [[np.flatnonzero(row < radius * radius) for row in cloud] for cloud in d2]
    ours_idx = np.zeros((2, 10, nsample), np.int32)
    count = np.zeros((2, 10), np.int32)
    for b in range(2):
        for m in range(10):
            first = hits[b][m][:nsample]
            count[b, m] = len(first)
            ours_idx[b, m] = np.concatenate([first, np.full(nsample - len(first), first[0] if len(first) else 0)])
    assert peers.ball_agreement(ball, (ours_idx, count), ("all", hits))[0] is True
    crowded = next((b, m) for b in range(2) for m in range(10) if len(hits[b][m]) > nsample)
    dropped = [[h.copy() for h in cloud] for cloud in hits]
    dropped[crowded[0]][crowded[1]] = dropped[crowded[0]][crowded[1]][1:]
    assert peers.ball_agreement(ball, (ours_idx, count), ("all", dropped))[0] is False

    # FPS: a swap of two picks is not a tie; a sequence from another start is checked, not compared.
    xyz = support[:1]
    fps = peers.Call("fps", "test", None, {"xyz": xyz}, {"npoint": 8})
    points = xyz[0].astype(np.float64)
    picks, nearest = [0], np.full(len(points), np.inf)
    while len(picks) < 8:
        nearest = np.minimum(nearest, ((points - points[picks[-1]]) ** 2).sum(1))
        picks.append(int(np.argmax(nearest)))
    sequence = np.asarray([picks], np.int64)
    assert peers.fps_agreement(fps, [sequence], ("sequence", sequence))[0] is True
    swapped = sequence.copy()
    swapped[0, [3, 4]] = swapped[0, [4, 3]]
    assert peers.fps_agreement(fps, [sequence], ("sequence", swapped))[0] is False
    assert peers.fps_agreement(fps, [sequence], ("set", np.sort(sequence, axis=1)))[0] is True
    assert peers.farthest_violation(xyz[0], swapped[0]) == 3


@pytest.mark.slow
def test_quick_run_installed_peers_agree_and_a_missing_one_is_reported(peers, tmp_path, monkeypatch, capsys):
    report = run_quick(peers, tmp_path)
    rows = report["rows"]
    assert {r["key"] for r in rows} == {"fps", "ball", "knn", "three_nn"}
    assert report["jsnet_implementation"] == "custom"  # make test builds the op library
    for row in rows:
        assert row["jsnet_ms"]["median"] > 0
        for name, peer in row["peers"].items():
            module = next(p.module for p in peers.all_peers() if p.name == name and p.op == row["key"])
            if not importable(module):
                assert peer["status"].startswith("not installed"), (row["call"], name, peer)
                continue
            assert peer["status"] == "ok", (row["call"], name, peer)
            if peer["agrees"] is None:  # fpsample 1.0.2's bucket FPS ignores start_idx=0: checked, not compared
                assert name == "fpsample bucket" and "valid farthest-point sequence" in peer["note"], (name, peer)
            else:
                assert peer["agrees"] is True, (row["call"], name, peer)
            assert peer["ms"]["median"] > 0

    monkeypatch.setitem(sys.modules, "faiss", None)  # as if faiss-cpu were not installed
    capsys.readouterr()
    report = run_quick(peers, tmp_path, "--ops=three_nn")
    (row,) = report["rows"]
    assert row["peers"]["faiss flat"]["status"].startswith("not installed")
    assert report["peer_modules"]["faiss"].startswith("not installed")
    assert "not installed" in capsys.readouterr().out
