"""tf.distribute: two replicas follow one device's loss trajectory; two workers on localhost train
together and end with the same weights."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_overrides

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 6

# Runs in a fresh process: logical devices must be configured before TensorFlow starts. Trains
# on the first argv[4] of two logical CPUs and prints the loss trajectory; the one-device and the
# two-replica runs are two such processes, started side by side.
REPLICAS = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from jsnet_tf import config, training
cfg = config.load(None, json.loads(sys.argv[1]))
devices = ["/cpu:0", "/cpu:1"][:int(sys.argv[4])]
trainer = training.Trainer(cfg, sys.argv[2], fold=2, strategy=tf.distribute.MirroredStrategy(devices))
assert trainer.strategy.num_replicas_in_sync == len(devices)
step = trainer._make_step()
losses = []
for batch in trainer.strategy.experimental_distribute_dataset(trainer.dataset(0).take(int(sys.argv[3]))):
    losses.append({k: float(v) for k, v in step(batch).items()})
print("RESULT " + json.dumps(losses))
"""


@pytest.mark.slow
def test_two_replicas_give_the_one_device_loss_trajectory(tiny_s3dis, tmp_path):
    overrides = tiny_overrides(tiny_s3dis) + [f"data.blocks_per_room={4 * STEPS + 8}", "train.learning_rate=1e-5"]
    processes = {}
    for name, replicas in (("one", 1), ("two", 2)):
        with open(tmp_path / f"{name}.out", "w") as out, open(tmp_path / f"{name}.err", "w") as err:
            processes[name] = subprocess.Popen(
                [sys.executable, "-c", REPLICAS, json.dumps(overrides), str(tmp_path / name), str(STEPS), str(replicas)],
                cwd=REPO_ROOT, stdout=out, stderr=err,
            )
    trajectories = {}
    try:
        for name, process in processes.items():
            assert process.wait(timeout=600) == 0, (tmp_path / f"{name}.err").read_text()[-3000:]
            trajectories[name] = json.loads((tmp_path / f"{name}.out").read_text().split("RESULT ", 1)[1])
    finally:
        for process in processes.values():
            if process.poll() is None:  # the other one, after a failure
                process.kill()
    one, two = trajectories["one"], trajectories["two"]
    assert len(one) == len(two) == STEPS
    # The same global batch of 4, split 2 + 2. Batch-norm moments are summed over the replicas and
    # dropout masks are cut from the global batch's, so the first step differs only by float
    # summation order.
    for key in ("total", "sem", "disc"):
        np.testing.assert_allclose(two[0][key], one[0][key], rtol=1e-5, err_msg=key)
    # Later steps: Adam's first updates are about lr * sign(gradient), so weights whose gradient
    # is rounding noise (the biases before batch norm: exactly 0 in exact arithmetic) move by
    # random signs. Two one-device runs that differ only in the batch-norm kernel (fused or not)
    # drift apart just as much. At lr 1e-5 the drift measured 0.6% by step 5 while the loss
    # itself moves by a factor 2 between steps; at the paper's 1e-3 it reaches 20% by step 3.
    for key in ("total", "sem", "disc"):
        np.testing.assert_allclose([s[key] for s in two], [s[key] for s in one], rtol=2e-2, err_msg=key)
    assert max(s["total"] for s in one) > 1.5 * min(s["total"] for s in one)  # a real trajectory


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_localhost_train_in_step(tiny_s3dis, tmp_path):
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    args = ["train.py", "--area", "2", "--workdir", str(tmp_path), "--epochs", "1", "--novalidate", "--noverbose"]
    for override in tiny_overrides(tiny_s3dis) + ["data.blocks_per_room=16"]:  # 3 steps (corners of too few points drop)
        args += ["--set", override]
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        processes.append(
            subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    chief = tf.train.latest_checkpoint(str(tmp_path / "area2" / "checkpoints"))
    other = tf.train.latest_checkpoint(str(tmp_path / "area2" / "workers" / "1" / "checkpoints"))
    assert chief and chief.endswith("ckpt-1") and other and other.endswith("ckpt-1")
    steps = json.loads((tmp_path / "area2" / "metrics.json").read_text())[0]["steps"]
    assert steps >= 2
    # Only the chief writes TensorBoard: one run in TensorBoard, not one per worker.
    assert list((tmp_path / "area2" / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert not (tmp_path / "area2" / "workers" / "1" / "tensorboard").exists()
    chief_reader, other_reader = tf.train.load_checkpoint(chief), tf.train.load_checkpoint(other)
    names = [n for n, _ in tf.train.list_variables(chief) if n.startswith("model/")]
    assert len(names) > 300
    for name in names:  # the workers applied the same all-reduced gradients
        np.testing.assert_allclose(other_reader.get_tensor(name), chief_reader.get_tensor(name), rtol=1e-5, atol=1e-6, err_msg=name)
