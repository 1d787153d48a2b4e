"""Run folders: which weights a run offers, and loading them into a rebuilt model."""

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import checkpoints, config
from jsnet_tf.model import build_model

OVERRIDES = ["data.num_points=256", "model.npoints=[128, 64, 32, 16]"]


def _model(cfg, seed):
    tf.keras.utils.set_random_seed(seed)
    model = build_model(cfg)
    model.build((None, cfg["data"]["num_points"], cfg["model"]["input_channels"]))
    return model


@pytest.fixture(scope="module")
def cfg():
    return config.load(None, OVERRIDES)


def test_a_run_folder_round_trips_the_model_outputs(cfg, tmp_path, rng):
    model = _model(cfg, seed=1)
    checkpoints.write_run_files(tmp_path, cfg)
    checkpoints.save_weights(model, tmp_path / "weights")
    loaded, loaded_cfg, prefix = checkpoints.load_run(tmp_path)
    assert loaded_cfg == cfg and "weights" in prefix
    points = rng.uniform(0, 1, (1, 256, 9)).astype(np.float32)
    expected = model(points, training=False)
    got = loaded(points, training=False)
    for key in expected:
        np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())


def test_best_is_preferred_and_latest_prefers_the_epochs(cfg, tmp_path):
    model = _model(cfg, seed=1)
    for folder in ("weights", "checkpoints", "best"):
        checkpoints.save_weights(model, tmp_path / folder)
    assert "/best/" in checkpoints.find_weights(tmp_path, "best")
    assert "/checkpoints/" in checkpoints.find_weights(tmp_path, "latest")
    explicit = checkpoints.find_weights(tmp_path, str(tmp_path / "weights"))
    assert "/weights/" in explicit and checkpoints.find_weights(tmp_path, explicit) == explicit


def test_a_folder_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="holds no weights"):
        checkpoints.find_weights(tmp_path)
    with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
        checkpoints.find_weights(tmp_path / "nope")
    with pytest.raises(checkpoints.CheckpointError, match="config.toml is missing"):
        checkpoints.load_run(tmp_path)


def test_weights_of_another_architecture_name_the_mismatched_variables(cfg, tmp_path):
    wide = config.load(None, OVERRIDES + ["model.num_classes=7"])
    prefix = checkpoints.save_weights(_model(wide, seed=1), tmp_path)
    expected = r"jiss/sem_fc5/weights has shape \[1, 128, 7\] in the file, the model needs \[1, 128, 13\]"
    with pytest.raises(checkpoints.CheckpointError, match=expected):
        checkpoints.restore_weights(_model(cfg, seed=2), prefix)


def test_a_workdir_resolves_to_its_run_folder_and_area(tmp_path):
    cfg = config.load(None)
    checkpoints.write_run_files(tmp_path / "work" / "area3", cfg)
    assert checkpoints.resolve_run(tmp_path / "work") == (tmp_path / "work" / "area3", 3)
    assert checkpoints.resolve_run(tmp_path / "work" / "area3") == (tmp_path / "work" / "area3", None)
    checkpoints.write_run_files(tmp_path / "work" / "area5", cfg)
    with pytest.raises(checkpoints.CheckpointError, match="areas 3, 5: choose one with --area"):
        checkpoints.resolve_run(tmp_path / "work")
    assert checkpoints.resolve_run(tmp_path / "work", 5) == (tmp_path / "work" / "area5", 5)
    with pytest.raises(checkpoints.CheckpointError, match="no such folder"):
        checkpoints.resolve_run(tmp_path / "missing")
