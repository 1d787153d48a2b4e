"""The training loop on a tiny synthetic S3DIS: learning, checkpoints and logs, exact resumption
after an interruption, and clear errors before any training starts."""

import json

import numpy as np
import pytest

from jsnet_tf import config, training
from jsnet_tf.errors import DataError
from tests.conftest import TINY_POINTS, tiny_overrides


@pytest.fixture(scope="module")
def prepared(tiny_s3dis):
    return tiny_s3dis


def _config(prepared, **train):
    return config.load(None, tiny_overrides(prepared, **train))


@pytest.fixture(scope="module")
def split(tiny_s3dis_split):
    return tiny_s3dis_split


def _split_config(split, validation_rooms, **train):
    return config.load(None, tiny_overrides(split, **train) + [f"data.validation_rooms={validation_rooms}"])


def _scalars(run_folder):
    """{tag: ([steps], [values])} of the scalars in every event file of a TensorBoard run folder."""
    import tensorflow as tf

    found = {}
    for path in sorted(run_folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps, values = found.setdefault(value.tag, ([], []))
                steps.append(event.step)
                values.append(float(tf.make_ndarray(value.tensor)))
    return found


def _check_train_curves(train, recorded):
    """The train run holds loss/total at every step, its epoch means those of metrics.json."""
    ends = np.cumsum([r["steps"] for r in recorded])
    steps, values = train["loss/total"]
    assert steps == list(range(1, ends[-1] + 1))
    for record, start, end in zip(recorded, ends - [r["steps"] for r in recorded], ends):
        assert np.mean(values[start:end]) == pytest.approx(record["total"], rel=1e-5)
    assert {"loss/sem", "loss/disc", "learning_rate", "bn_decay"} <= set(train) and "accuracy" not in train


class _Reads:
    """Every room and block file the data pipeline opens during a test."""

    def __init__(self, monkeypatch):
        from jsnet_tf.data import s3dis

        self.paths = []
        for name in ("load_room", "read_blocks_h5"):
            real = getattr(s3dis, name)

            def spy(path, *args, _real=real, **kwargs):
                self.paths.append(str(path))
                return _real(path, *args, **kwargs)

            monkeypatch.setattr(s3dis, name, spy)

    def rooms(self):
        import pathlib

        return {pathlib.Path(p).stem for p in self.paths}


@pytest.fixture(scope="module")
def validated(split, tmp_path_factory):
    """(trainer, history, run folder, reads): one run with a validation room (3 epochs; early
    stopping on, its patience of 5 not reached), every room and block file it read recorded.
    Shared by the tests that only read it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        reads = _Reads(monkeypatch)
        run = tmp_path_factory.mktemp("validated") / "run"
        trainer = training.Trainer(_split_config(split, 0.5, epochs=3, early_stopping_patience=5), run, fold=2)
        history = trainer.fit(verbose=0, validate=True)
    return trainer, history, run, reads


@pytest.mark.slow
def test_training_lowers_the_loss_and_writes_checkpoints_and_logs(validated):
    trainer, history, run, _ = validated
    assert len(history) == 3 and history[-1]["total"] < history[0]["total"]
    assert 0.0 <= history[-1]["val_accuracy"] <= 1.0 and np.isfinite(history[-1]["val_loss"])
    recorded = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in recorded] == [1, 2, 3] and recorded[-1]["val_accuracy"] == history[-1]["val_accuracy"]
    best = json.loads((run / "best.json").read_text())
    assert best["loss"] == min(r["val_loss"] for r in recorded)
    assert trainer.best_manager.latest_checkpoint.endswith(f"ckpt-{best['epoch']}")
    assert all(np.isfinite(list(h.values())).all() for h in history)
    assert trainer.manager.latest_checkpoint.endswith("ckpt-3")
    # TensorBoard: train and validation runs with the same tags, so the curves overlay
    train, validation = (_scalars(run / "tensorboard" / name) for name in ("train", "validation"))
    _check_train_curves(train, recorded)
    assert set(validation) == {"loss/total", "accuracy"}
    ends = list(np.cumsum([r["steps"] for r in recorded]))
    assert validation["loss/total"][0] == ends and validation["accuracy"][0] == ends   # at each epoch's last step
    assert validation["loss/total"][1] == pytest.approx([r["val_loss"] for r in recorded], rel=1e-6)
    assert validation["accuracy"][1] == pytest.approx([r["val_accuracy"] for r in recorded], rel=1e-6)
    assert config.load(run / "config.toml") == trainer.cfg


@pytest.mark.slow
def test_resuming_after_an_interruption_reaches_the_same_weights(prepared, tmp_path):
    cfg = _config(prepared)
    straight = training.Trainer(cfg, tmp_path / "straight", fold=2)
    straight.fit(verbose=0)
    steps_per_epoch = int(straight.optimizer.iterations.numpy()) // 2

    interrupted = training.Trainer(cfg, tmp_path / "interrupted", fold=2)
    interrupted.fit(verbose=0, stop_after_steps=steps_per_epoch + 1)  # dies inside epoch 2
    resumed = training.Trainer(cfg, tmp_path / "interrupted", fold=2)  # a new process would do this
    assert int(resumed.epoch.numpy()) == 1 and int(resumed.optimizer.iterations.numpy()) == steps_per_epoch
    resumed.fit(verbose=0)

    assert int(resumed.optimizer.iterations.numpy()) == int(straight.optimizer.iterations.numpy())
    for a, b in zip(straight.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_early_stopping_after_patience_without_a_better_validation_loss(split, tmp_path, monkeypatch):
    trainer = training.Trainer(_split_config(split, 0.5, epochs=6, early_stopping_patience=2), tmp_path / "run", fold=2)
    losses = iter([1.0, 0.5, 0.7, 0.6, 0.4, 0.3])  # best at epoch 2, no better at 3 and 4: stop
    monkeypatch.setattr(trainer, "validate", lambda: {"accuracy": 0.5, "loss": next(losses)})
    history = trainer.fit(verbose=0, validate=True)
    assert len(history) == 4 and int(trainer.epoch.numpy()) == 4
    assert json.loads((tmp_path / "run" / "best.json").read_text()) == {"epoch": 2, "loss": 0.5}
    again = training.Trainer(trainer.cfg, tmp_path / "run", fold=2)  # train.py run again on a stopped run
    assert again.fit(verbose=0) == [] and int(again.epoch.numpy()) == 4


def test_workdir_of_another_architecture_is_refused(prepared, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "architecture.json").write_text(json.dumps({"model": {"num_classes": 50}, "num_points": 2048}))
    with pytest.raises(training.TrainingError, match="holds a run of another architecture"):
        training.Trainer(_config(prepared), tmp_path / "run", fold=2)


def test_unwritable_workdir_is_refused(prepared, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(training.TrainingError, match="is not writable"):
        training.Trainer(_config(prepared), blocker / "run", fold=2)


def test_area_without_data_fails_before_anything_is_written(prepared, tmp_path):
    with pytest.raises(DataError, match="area4|Area4|woArea4"):
        training.Trainer(_config(prepared), tmp_path / "run", fold=4)
    assert not (tmp_path / "run").exists()


def test_non_finite_loss_stops_with_the_step_and_the_last_good_checkpoint(prepared, tmp_path, monkeypatch):
    trainer = training.Trainer(_config(prepared), tmp_path / "run", fold=2)
    real_make_step = trainer._make_step

    def poisoned_step():
        step = real_make_step()

        def run(batch):
            losses = step(batch)
            return {k: v * float("nan") for k, v in losses.items()}

        return run

    monkeypatch.setattr(trainer, "_make_step", poisoned_step)
    with pytest.raises(training.TrainingError, match=r"non-finite loss .* at step 1, epoch 0; the last good checkpoint is \(none yet\)"):
        trainer.fit(verbose=0)
    assert not list((tmp_path / "run" / "checkpoints").glob("ckpt-*"))


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    """A prepared synthetic S3DIS like `tiny_s3dis` but sparse (30 points a square metre): few
    stride-0.5 windows reach the 100 points a block needs, so a resampled epoch with area 2 held
    out is 28 blocks (7 steps at batch 4) instead of about 100."""
    from jsnet_tf.data import prepare_s3dis, synthetic

    root = tmp_path_factory.mktemp("sparse_s3dis")
    synthetic.generate(root / "raw", seed=1, areas=2, rooms_per_area=1, points_per_m2=30)
    prepare_s3dis.prepare(root / "raw", root / "prepared", num_points=TINY_POINTS, progress=False)
    return root / "prepared"


# train.py's own program (jsnet_tf.train.cli), holding still after training step
# JSNET_TEST_HOLD_AT_STEP with a file JSNET_TEST_HOLD_MARKER saying so, for the test to kill -9 it
# there: a point in the middle of an epoch that the test chooses, not one a sleep happens to hit.
HOLD_AT_STEP = """
import os, pathlib, time
from jsnet_tf import training
from jsnet_tf.train import cli

log_step = training.Trainer._log_step

def log_step_then_hold(self, step, losses):
    log_step(self, step, losses)
    if step == int(os.environ["JSNET_TEST_HOLD_AT_STEP"]):
        pathlib.Path(os.environ["JSNET_TEST_HOLD_MARKER"]).touch()
        time.sleep(600)

training.Trainer._log_step = log_step_then_hold
cli()
"""


@pytest.mark.slow
def test_kill_9_in_the_middle_of_an_epoch_then_resume_gives_the_same_weights(sparse, tmp_path):
    import os
    import pathlib
    import signal
    import subprocess
    import sys
    import time

    import tensorflow as tf

    from jsnet_tf.data import pipeline

    repo = pathlib.Path(__file__).resolve().parents[1]
    steps = pipeline.epoch_blocks(sparse, 2, num_points=TINY_POINTS) // 4
    assert steps >= 3, steps  # an epoch with a middle
    flags = [
        "--area", "2", "--epochs", "2", "--batch_size", "4", "--novalidate", "--noverbose",
        "--data_dir", str(sparse), "--set", f"data.num_points={TINY_POINTS}",  # the default sampling: resample
        "--set", "model.npoints=[256, 64, 32, 16]",
    ]
    run = lambda program, workdir, **kw: subprocess.Popen(  # noqa: E731
        [sys.executable, *program, *flags, "--workdir", str(workdir)], cwd=repo, **kw)
    # The uninterrupted run and the one to kill train side by side (two processes, two cores).
    straight = run(["train.py"], tmp_path / "straight")
    marker = tmp_path / "holding"
    hold = {"JSNET_TEST_HOLD_AT_STEP": str(steps + steps // 2), "JSNET_TEST_HOLD_MARKER": str(marker)}
    victim = run(["-c", HOLD_AT_STEP], tmp_path / "killed", env={**os.environ, **hold},
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "killed" / "area2" / "checkpoints"
    try:
        deadline = time.time() + 600
        while not marker.exists() and victim.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the run to kill ended or hung before the middle of epoch 2"
        assert (checkpoints / "ckpt-1.index").exists() and not (checkpoints / "ckpt-2.index").exists()
        os.kill(victim.pid, signal.SIGKILL)  # in the middle of epoch 2
        assert victim.wait() == -signal.SIGKILL
        first_epoch = (checkpoints / "ckpt-1.index").stat().st_mtime_ns
        assert run(["train.py"], tmp_path / "killed").wait(timeout=600) == 0
        assert straight.wait(timeout=600) == 0
        assert (checkpoints / "ckpt-1.index").stat().st_mtime_ns == first_epoch  # resumed after epoch 1, not from scratch
    finally:
        for process in (straight, victim):  # left running by a failure above
            if process.poll() is None:
                process.kill()

    uninterrupted = tf.train.load_checkpoint(str(tmp_path / "straight" / "area2" / "checkpoints" / "ckpt-2"))
    resumed = tf.train.load_checkpoint(str(checkpoints / "ckpt-2"))
    names = [n for n in uninterrupted.get_variable_to_shape_map() if n.startswith("model/")]
    assert len(names) == 340
    for name in names:
        np.testing.assert_allclose(resumed.get_tensor(name), uninterrupted.get_tensor(name), rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_batch_that_does_not_split_over_the_replicas_is_refused(prepared, tmp_path):
    class ThreeReplicas:
        num_replicas_in_sync = 3

    with pytest.raises(training.TrainingError, match="batch_size 4 does not split evenly over 3 replicas"):
        training.Trainer(_config(prepared), tmp_path / "run", fold=2, strategy=ThreeReplicas())



# ---------------------------------------------------------------------------------- model selection


@pytest.mark.slow
def test_validation_rooms_choose_best_and_no_test_area_room_is_ever_read(validated):
    _, history, run, reads = validated
    record = json.loads((run / "run.json").read_text())
    assert record["area"] == 2 and record["selected_on_test_area"] is False
    (validation_room,) = record["validation_rooms"]
    assert validation_room.startswith("Area_1_") and record["training_rooms"] == 1
    assert all("val_loss" in h for h in history) and (run / "best.json").exists()
    read = reads.rooms()
    assert read == {"Area_1_office_1", "Area_1_office_2"}, read  # training room + validation room, nothing of area 2
    training_reads = {p for p in reads.paths if p.endswith(".npz")}
    assert all(validation_room not in p for p in training_reads)  # the validation room never trains


def test_without_validation_rooms_there_is_no_validation_and_no_best(prepared, tmp_path, monkeypatch):
    reads = _Reads(monkeypatch)
    trainer = training.Trainer(_config(prepared, epochs=1), tmp_path / "run", fold=2)
    history = trainer.fit(verbose=0, validate=True)
    assert "val_loss" not in history[0] and not (tmp_path / "run" / "best").exists()
    _check_train_curves(_scalars(tmp_path / "run" / "tensorboard" / "train"), [{"epoch": 1, **history[0]}])
    assert sorted(p.name for p in (tmp_path / "run" / "tensorboard").iterdir()) == ["train"]
    assert reads.rooms() == {"Area_1_office_1"}
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["selection"].startswith("none") and record["validation_rooms"] == []


def test_early_stopping_without_validation_data_is_refused_before_anything_is_written(prepared, tmp_path):
    with pytest.raises(training.TrainingError, match="early_stopping_patience needs validation data: set data.validation_rooms"):
        training.Trainer(_config(prepared, early_stopping_patience=3), tmp_path / "run", fold=2)
    assert not (tmp_path / "run").exists()


def test_a_validation_split_that_empties_an_area_is_refused(prepared, tmp_path):
    with pytest.raises(DataError, match="keeping a room in every training area"):
        training.Trainer(config.load(None, tiny_overrides(prepared) + ["data.validation_rooms=0.5"]), tmp_path / "run", fold=2)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_selecting_on_the_test_area_needs_the_words_and_is_recorded(prepared, tmp_path, monkeypatch):
    from jsnet_tf import checkpoints

    reads = _Reads(monkeypatch)
    trainer = training.Trainer(_config(prepared, epochs=1, select_on_test_area="true"), tmp_path / "run", fold=2)
    trainer.fit(verbose=0)
    assert "Area_2_office_1" in reads.rooms()  # validated on the test area, as asked
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["selected_on_test_area"] is True and "leaks" in record["selection"]
    with pytest.raises(checkpoints.CheckpointError, match="chosen on the test area"):
        checkpoints.find_weights(tmp_path / "run", "best")
    assert "/best/" in checkpoints.find_weights(tmp_path / "run", "best", allow_test_area_selection=True)
    assert "/checkpoints/" in checkpoints.find_weights(tmp_path / "run")  # the default: the last epoch


def test_resuming_with_other_data_settings_is_refused_naming_the_keys(prepared, tmp_path):
    training.Trainer(_config(prepared), tmp_path / "run", fold=2)
    before = (tmp_path / "run" / "run.json").read_text()
    other = config.load(None, tiny_overrides(prepared) + ['data.sampling="fixed"', "data.blocks_per_room=0"])
    with pytest.raises(training.TrainingError, match=r"other data settings \(.*sampling: 'random_corners' -> 'fixed'"):
        training.Trainer(other, tmp_path / "run", fold=2)
    assert (tmp_path / "run" / "run.json").read_text() == before


def test_a_shapenet_dataset_with_an_s3dis_model_is_refused_before_anything_is_written(prepared, tmp_path):
    cfg = config.load(None, tiny_overrides(prepared) + ['data.dataset="shapenet"', 'data.sampling="resample"',
                                                         "data.blocks_per_room=0"])
    with pytest.raises(training.TrainingError, match="feeds 6 channels and 50 classes, the model has model.input_channels=9"):
        training.Trainer(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_interruption_before_validation_is_caught_up_on_resume(split, tmp_path, monkeypatch):
    cfg = _split_config(split, 0.5, epochs=1)
    trainer = training.Trainer(cfg, tmp_path / "run", fold=2)
    monkeypatch.setattr(trainer, "validate", lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # killed after the epoch's checkpoint, before its validation
        trainer.fit(verbose=0)
    assert (tmp_path / "run" / "checkpoints" / "ckpt-1.index").exists() and not (tmp_path / "run" / "best").exists()
    resumed = training.Trainer(cfg, tmp_path / "run", fold=2)
    assert resumed.fit(verbose=0) == []  # nothing left to train, but epoch 1 is validated
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert recorded == [{"epoch": 1, "val_accuracy": recorded[0]["val_accuracy"], "val_loss": recorded[0]["val_loss"]}]
    assert json.loads((tmp_path / "run" / "best.json").read_text()) == {"epoch": 1, "loss": recorded[0]["val_loss"]}
    # TensorBoard: the caught-up validation at the epoch's last step, beside the first process's curves
    steps = int(resumed.optimizer.iterations.numpy())
    validation = _scalars(tmp_path / "run" / "tensorboard" / "validation")
    assert validation["loss/total"][0] == [steps] and validation["loss/total"][1] == pytest.approx([recorded[0]["val_loss"]])
    assert validation["accuracy"][1] == pytest.approx([recorded[0]["val_accuracy"]])
    assert _scalars(tmp_path / "run" / "tensorboard" / "train")["loss/total"][0] == list(range(1, steps + 1))


def test_a_run_records_its_data_and_workdir_as_absolute_paths(prepared, tmp_path, monkeypatch):
    """A run started with relative paths is found again from any folder (evaluate, predict)."""
    import os

    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(prepared)
    assert relative.startswith("..")
    cfg = config.load(None, tiny_overrides(relative))
    trainer = training.Trainer(cfg, "run", fold=2)
    assert cfg["data"]["data_dir"] == relative  # the caller's config is left as it was
    recorded = config.load(tmp_path / "run" / "config.toml")["data"]["data_dir"]
    assert recorded == str(prepared) and os.path.isabs(recorded)
    assert trainer.workdir == tmp_path / "run" and trainer.workdir.is_absolute()
