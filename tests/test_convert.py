"""`python -m jsnet_tf.convert`: an original TF1 checkpoint becomes a run folder whose model gives
the original network's outputs, for the S3DIS network and for the ShapeNet part head (50 classes,
xyz + normals, the layer table of the shipped shapenet_part config).

The original files are not needed: tests/tf1_jsnet.py rebuilds the original graph with
`tf.compat.v1` scopes (names and math written from the reference page) and saves a training
checkpoint with random weights and random BN statistics.

Tolerance: the TF1 graph computes in float64, so it gives the exact result. The converted model
computes in float32, as the original did, and float32 rounding alone moves this network's outputs
(std ~1, max 7 to 17) by 1e-5 to 2e-5 of their largest value (6e-5 to 3e-4 absolute over 16 seeds);
the same graph run in float32 lands as far from its float64 result (1.3e-4 and 1.8e-4 for two
seeds), so atol 1e-4 on the raw outputs is below what float32 allows. Most of it enters through the
kernel density, whose padding subtraction cancels, and the batch norm after it. So outputs must
agree to 1e-4 of the largest output, which a mapping error misses by orders of magnitude (see the
negative controls). The shipped ShapeNet part network (2048 points) lands at 1e-5 to 5e-5 of its
largest output over 12 seeds, and so does the same graph run in float32: the same tolerance holds.
"""

import pathlib
import re
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import checkpoints, config, convert, tasks
from jsnet_tf.data import s3dis
from jsnet_tf.model import build_model
from tests import tf1_jsnet
from tests.conftest import BASE_SEED
from tests.test_shapenet_head import shapes

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_POINTS = 2048  # with the paper's npoints: balls hold enough points for a well-conditioned density
OVERRIDES = [f"data.num_points={NUM_POINTS}"]
TOLERANCE = 1e-4  # of the largest output
# The reference page's inventory of the original S3DIS checkpoint ("Details of the original graph").
MODEL_TENSORS = {"weights": 59, "biases": 65, "beta": 54, "gamma": 54, "moving mean": 54, "moving variance": 54}
TRAINABLE_VALUES = 8_085_805
MOVING_VALUES = 15_276
TRAINING_CHECKPOINT_TENSORS = 807
SUMPOOL_MEAN = "sem_fa_layer2/fp_sumpool/bn/sem_fa_layer2/fp_sumpool/bn/moments/Squeeze/ExponentialMovingAverage"


@pytest.fixture(scope="module")
def cfg():
    return config.load(None, OVERRIDES)


def _write_original(folder, rng, points, **layers):
    """(checkpoint folder, prefix, points, logits, embeddings) of a random original network saved
    in `folder` as epoch_99.ckpt; `layers` are `tf1_jsnet.write_checkpoint`'s npoints,
    num_classes, radii and sigma (S3DIS's by default)."""
    prefix = folder / "epoch_99.ckpt"
    logits, embeddings = tf1_jsnet.write_checkpoint(prefix, rng, points, **layers)
    return folder, str(prefix), points, logits, embeddings


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """(checkpoint folder, prefix, points, logits, embeddings) of a random original network."""
    rng = np.random.default_rng([BASE_SEED, zlib.crc32(b"tests/test_convert.py::original")])
    return _write_original(tmp_path_factory.mktemp("original"), rng, tf1_jsnet.block_points(rng, 2, NUM_POINTS))


def _model(cfg):
    model = build_model(cfg)
    model.build((None, cfg["data"]["num_points"], cfg["model"]["input_channels"]))
    return model


def _tolerance(reference):
    return TOLERANCE * np.abs(reference).max()


def _stored(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _rewrite(prefix, tensors):
    """Writes {name: value} as a TF1 name-based checkpoint (what tf.compat.v1.train.Saver writes)."""
    names = sorted(tensors)
    values = [tensors[n] for n in names]
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names), tensors=values)
    return str(prefix)


def _kind(name):
    if name.endswith(tf1_jsnet.MEAN_SUFFIX):
        return "moving mean"
    if name.endswith(tf1_jsnet.VARIANCE_SUFFIX):
        return "moving variance"
    return name.rpartition("/")[2]


# ----------------------------------------------------------------------------- the fixture


def test_fixture_saves_the_original_inventory(original):
    stored = tf.train.load_checkpoint(original[1]).get_variable_to_shape_map()
    model = {name: shape for name, shape in stored.items() if not convert.is_training_state(name)}
    kinds = {}
    for name in model:
        kinds[_kind(name)] = kinds.get(_kind(name), 0) + 1
    assert len(stored) == TRAINING_CHECKPOINT_TENSORS
    assert kinds == MODEL_TENSORS
    moving = sum(int(np.prod(s)) for n, s in model.items() if _kind(n).startswith("moving"))
    assert moving == MOVING_VALUES
    assert sum(int(np.prod(s)) for s in model.values()) - moving == TRAINABLE_VALUES
    assert stored[SUMPOOL_MEAN] == []  # the scalar-moment batch norm of the decoders


def test_every_model_variable_has_its_original_name(original, cfg):
    stored = tf.train.load_checkpoint(original[1]).get_variable_to_shape_map()
    names = {convert.original_name(path): list(v.shape) for path, v in checkpoints.model_variables(_model(cfg)).items()}
    assert names == {n: s for n, s in stored.items() if not convert.is_training_state(n)}
    skipped = sorted(n for n in stored if convert.is_training_state(n))
    assert len(skipped) == 2 * sum(_kind(n) in ("weights", "biases", "beta", "gamma") for n in names) + 3
    assert {"beta1_power", "beta2_power", "batch"} <= set(skipped)
    assert convert.original_name("jiss/sem_fc5/weights") == "sem_fc5/weights"
    assert convert.original_name("ins_pcff/fc1/bn/moving_variance") == (
        "ins_fc1/bn/ins_fc1/bn/moments/Squeeze_1/ExponentialMovingAverage"
    )
    assert convert.original_name("layer3/density_net_nonlinear1/biases") == "layer3/density_net/nonlinear1/biases"


# ----------------------------------------------------------------------------- the outputs


@pytest.mark.slow
def test_converted_model_gives_the_original_outputs(original, cfg):
    folder, prefix, points, logits, embeddings = original
    model = _model(cfg)
    assert convert.convert(folder, model) == prefix  # a folder means its latest checkpoint
    out = model(points, training=False)
    np.testing.assert_allclose(out["semantic_logits"].numpy(), logits, rtol=0, atol=_tolerance(logits))
    np.testing.assert_allclose(out["embeddings"].numpy(), embeddings, rtol=0, atol=_tolerance(embeddings))
    assert logits.std(axis=1).min() > 0.1  # outputs vary from point to point: the comparison has teeth


def _pcff_convs_of_the_two_branches_exchanged(values):
    """A plausible naming bug: `sem_pcff/fc1` read from `ins_fc1` and the other way round."""
    for leaf in ("weights", "biases", "bn/beta", "bn/gamma", "bn/moving_mean", "bn/moving_variance"):
        sem, ins = f"sem_pcff/fc1/{leaf}", f"ins_pcff/fc1/{leaf}"
        values[sem], values[ins] = values[ins], values[sem]


def _after_conv_rows_and_columns_exchanged(values):
    """A plausible layout bug: the [1, C, 32, Cout] kernel read 32-major instead of C-major."""
    kernel = values["layer3/after_conv/weights"]
    values["layer3/after_conv/weights"] = kernel.reshape(1, 32, kernel.shape[1], -1).transpose(0, 2, 1, 3)


@pytest.mark.slow
@pytest.mark.parametrize("mistake", [_pcff_convs_of_the_two_branches_exchanged, _after_conv_rows_and_columns_exchanged])
def test_a_mapping_mistake_is_far_outside_the_tolerance(original, cfg, mistake):
    _, prefix, points, logits, _ = original
    model = _model(cfg)
    values = convert.read_original(prefix, model)
    mistake(values)
    variables = checkpoints.model_variables(model)
    for path, value in values.items():
        variables[path].assign(value)
    error = np.abs(model(points, training=False)["semantic_logits"].numpy() - logits).max()
    assert error > 100 * _tolerance(logits)


# ----------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def stored(original):
    return _stored(original[1])


def test_a_missing_variable_is_named(stored, cfg, tmp_path):
    tensors = {n: v for n, v in stored.items() if n != SUMPOOL_MEAN}
    with pytest.raises(convert.ConversionError, match=f"{SUMPOOL_MEAN} is missing"):
        convert.run(_rewrite(tmp_path / "ckpt", tensors), tmp_path / "run", cfg)
    assert not (tmp_path / "run").exists()


def test_an_extra_variable_is_named_and_its_optimizer_slots_ignored(stored, cfg, tmp_path):
    extra = np.zeros((1, 128, 13), np.float32)
    tensors = {**stored, "sem_fc6/weights": extra, "sem_fc6/weights/Adam": extra, "sem_fc6/weights/Adam_1": extra}
    with pytest.raises(convert.ConversionError) as raised:
        convert.run(_rewrite(tmp_path / "ckpt", tensors), tmp_path / "run", cfg)
    assert "does not fit the model: sem_fc6/weights is not part of the model (the config" in str(raised.value)
    assert not (tmp_path / "run").exists()


def test_a_misshaped_variable_is_named_with_both_shapes(stored, cfg, tmp_path):
    tensors = {**stored, "sem_fc5/weights": np.zeros((1, 128, 7), np.float32)}
    message = r"sem_fc5/weights has shape \[1, 128, 7\] in the checkpoint, the model needs \[1, 128, 13\]"
    with pytest.raises(convert.ConversionError, match=message):
        convert.run(_rewrite(tmp_path / "ckpt", tensors), tmp_path / "run", cfg)
    assert not (tmp_path / "run").exists()


def test_checkpoint_paths(original, tmp_path):
    folder, prefix = original[0], original[1]
    assert convert.resolve_checkpoint(folder) == prefix
    assert convert.resolve_checkpoint(prefix + ".index") == prefix
    assert convert.resolve_checkpoint(prefix + ".data-00000-of-00001") == prefix
    with pytest.raises(convert.ConversionError, match=f"--checkpoint {tmp_path}/nope.ckpt: no such checkpoint"):
        convert.resolve_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(convert.ConversionError, match="holds no TF1 checkpoint"):
        convert.resolve_checkpoint(tmp_path)


def test_a_moved_folder_still_gives_its_latest_checkpoint(original, tmp_path):
    """The original Saver's `checkpoint` file holds the paths of the machine that trained."""
    moved = tmp_path / "moved"
    moved.mkdir()
    for file in original[0].glob("epoch_99.ckpt.*"):
        (moved / file.name).symlink_to(file)
    (moved / "epoch_98.ckpt.index").write_bytes(b"")  # an older one beside it
    (moved / "checkpoint").write_text(
        'model_checkpoint_path: "/elsewhere/log/epoch_99.ckpt"\n'
        'all_model_checkpoint_paths: "/elsewhere/log/epoch_98.ckpt"\n'
        'all_model_checkpoint_paths: "/elsewhere/log/epoch_99.ckpt"\n'
    )
    assert convert.resolve_checkpoint(moved) == str(moved / "epoch_99.ckpt")
    (moved / "checkpoint").unlink()
    with pytest.raises(convert.ConversionError, match=r"several checkpoints \(epoch_98.ckpt, epoch_99.ckpt\); name one"):
        convert.resolve_checkpoint(moved)


def test_a_tf2_checkpoint_is_told_apart(cfg, tmp_path):
    model = _model(cfg)
    prefix = checkpoints.save_weights(model, tmp_path)
    with pytest.raises(convert.ConversionError, match="TF2 object-based checkpoint"):
        convert.read_original(prefix, model)


def test_converted_weights_are_not_overwritten_without_the_flag(original, cfg, tmp_path):
    run_dir = tmp_path / "run"
    convert.run(original[1], run_dir, cfg)
    before = sorted(p.name for p in (run_dir / "weights").iterdir())
    with pytest.raises(convert.ConversionError, match="already holds converted weights: pass --overwrite"):
        convert.run(original[1], run_dir, cfg)
    assert sorted(p.name for p in (run_dir / "weights").iterdir()) == before
    convert.run(original[1], run_dir, cfg, overwrite=True)
    assert checkpoints.find_weights(run_dir).startswith(str(run_dir / "weights"))
    assert not (run_dir / ".weights.tmp").exists()
    (run_dir / "best").mkdir()  # a training run's weights would shadow converted ones
    with pytest.raises(convert.ConversionError, match=r"holds a training run \(best/\)"):
        convert.run(original[1], run_dir, cfg, overwrite=True)


# ----------------------------------------------------------------------------- the command line


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "jsnet_tf.convert", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_the_command_writes_a_run_folder_that_loads(original, cfg, tmp_path):
    folder, prefix = original[0], original[1]
    result = _cli("--checkpoint", str(folder), "--workdir", str(tmp_path / "run"), "--set", OVERRIDES[0])
    assert result.returncode == 0, result.stderr
    assert f"converted {prefix}" in result.stdout
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"config.toml", "architecture.json", "weights"}
    model, loaded_cfg, weights = checkpoints.load_run(tmp_path / "run")
    assert loaded_cfg["data"]["num_points"] == NUM_POINTS and "/weights/" in weights
    expected = convert.read_original(prefix, model)
    for path, variable in checkpoints.model_variables(model).items():
        np.testing.assert_array_equal(variable.numpy(), expected[path], err_msg=path)


def test_the_command_fails_in_one_line_and_writes_nothing(tmp_path):
    result = _cli("--checkpoint", str(tmp_path / "log" / "epoch_99.ckpt"), "--workdir", str(tmp_path / "run"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"convert: error: --checkpoint {tmp_path}/log/epoch_99.ckpt: no such checkpoint "
        f"({tmp_path}/log/epoch_99.ckpt.index does not exist)"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_help_explains_every_flag():
    result = _cli("--helpshort")
    for flag in ("--checkpoint", "--workdir", "--config", "--set", "--[no]overwrite"):
        assert flag in result.stdout
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- the ShapeNet part head

@pytest.fixture(scope="module")
def shapenet_cfg():
    return config.load("shapenet_part")


@pytest.fixture(scope="module")
def shapenet_original(tmp_path_factory, shapenet_cfg):
    """`original` for the shipped shapenet_part config as it stands: 50 classes, xyz + normals
    (3 feature channels into layer1), its 2048 points and layer table (npoints, radii, sigma).
    Not the 256 points of tests/test_shapenet_head.py: there the level-2 balls hold ~12 points,
    the kernel density loses precision, and float32 rounding alone (of our model and of this
    graph run in float32 alike) passed the tolerance for 1 seed in 12."""
    rng = np.random.default_rng([BASE_SEED, zlib.crc32(b"tests/test_convert.py::shapenet_original")])
    model = shapenet_cfg["model"]
    layers = {key: model[key] for key in ("npoints", "num_classes", "radii", "sigma")}
    points = shapes(rng, 2, shapenet_cfg["data"]["num_points"], grid=None)
    return _write_original(tmp_path_factory.mktemp("shapenet_original"), rng, points, **layers)


@pytest.mark.slow
def test_the_command_converts_a_shapenet_part_checkpoint(shapenet_original, shapenet_cfg, tmp_path):
    _, prefix, points, logits, embeddings = shapenet_original
    result = _cli("--checkpoint", prefix, "--workdir", str(tmp_path / "run"), "--config", "shapenet_part")
    assert result.returncode == 0, result.stderr
    model, recorded, _ = checkpoints.load_run(tmp_path / "run")
    assert recorded["data"]["dataset"] == "shapenet"
    assert (recorded["model"]["num_classes"], recorded["model"]["input_channels"]) == (50, 6)
    assert recorded["model"] == shapenet_cfg["model"]  # the layer table too
    out = model(points, training=False)
    assert out["semantic_logits"].shape == (*points.shape[:2], 50)
    np.testing.assert_allclose(out["semantic_logits"].numpy(), logits, rtol=0, atol=_tolerance(logits))
    np.testing.assert_allclose(out["embeddings"].numpy(), embeddings, rtol=0, atol=_tolerance(embeddings))
    assert logits.std(axis=1).min() > 0.1  # outputs vary from point to point: the comparison has teeth


def test_a_shapenet_part_checkpoint_does_not_fit_the_s3dis_model(shapenet_original, cfg, tmp_path):
    """Converting without --config shapenet_part names the layers whose shapes tell the heads apart."""
    message = (
        r"layer1/conv0/weights has shape \[1, 1, 6, 32\] in the checkpoint, the model needs \[1, 1, 9, 32\]; .*"
        r"sem_fc5/weights has shape \[1, 128, 50\] in the checkpoint, the model needs \[1, 128, 13\]"
    )
    with pytest.raises(convert.ConversionError, match=message):
        convert.run(shapenet_original[1], tmp_path / "run", cfg)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- mean instance sizes

# A plausible mean_ins_size.txt of the original: integer means (its `.astype(np.int)`), one a class.
ORIGINAL_SIZES = np.array([2113, 3050, 1705, 412, 517, 384, 745, 780, 188, 1302, 836, 579, 0], np.float64)


def _original_sizes_file(path, sizes=ORIGINAL_SIZES):
    np.savetxt(path, sizes)  # what estimate_mean_ins_size.py writes
    return path


def test_mean_instance_sizes_are_stored_in_the_run_folder(original, cfg, tmp_path):
    sizes_file = _original_sizes_file(tmp_path / "mean_ins_size.txt")
    run_dir = tmp_path / "run"
    assert convert.run_mean_ins_size(run_dir) is None
    convert.run(original[1], run_dir, cfg, mean_ins_size=sizes_file)
    stored = run_dir / convert.MEAN_INS_SIZE_FILE
    assert stored == run_dir / "mean_ins_size.txt"
    np.testing.assert_array_equal(np.loadtxt(stored), ORIGINAL_SIZES)  # the original's format, exact
    np.testing.assert_array_equal(convert.run_mean_ins_size(run_dir), ORIGINAL_SIZES)
    assert convert.run_mean_ins_size(run_dir).dtype == np.float64
    # a stored file that went bad is refused naming it
    stored.write_text("12\n")
    with pytest.raises(s3dis.DataError, match=f"^{stored}: expected 13 values, found 1$"):
        convert.run_mean_ins_size(run_dir)


@pytest.mark.slow
def test_a_conversion_without_sizes_removes_an_earlier_conversions(original, cfg, tmp_path):
    run_dir = tmp_path / "run"
    convert.run(original[1], run_dir, cfg, mean_ins_size=_original_sizes_file(tmp_path / "sizes.txt"))
    assert convert.run_mean_ins_size(run_dir) is not None
    convert.run(original[1], run_dir, cfg, overwrite=True)  # other weights: the old sizes need not fit them
    assert not (run_dir / "mean_ins_size.txt").exists() and convert.run_mean_ins_size(run_dir) is None
    assert sorted(p.name for p in run_dir.iterdir()) == ["architecture.json", "config.toml", "weights"]


NAN_AS_INTEGER = -9223372036854775808  # np.array(np.nan).astype(np.int64) on x86-64 and aarch64


@pytest.mark.parametrize("text, problem", [
    ("".join(f"{v:.18e}\n" for v in ORIGINAL_SIZES[:12]), "expected 13 values, found 12"),
    ("".join(f"{v:.18e}\n" for v in np.tile(ORIGINAL_SIZES, 2)), "expected 13 values, found 26"),
    ("", "expected 13 values, found 0"),
    ("1.0e+03\n" * 12 + "abc\n", "not a readable mean instance size file: could not convert string 'abc'"),
    ("1.0e+03\n" * 3 + "nan\n" + "1.0e+03\n" * 8 + "inf\n",
     "must be finite and non-negative, got beam nan, clutter inf$"),
    ("1.0e+03\n" * 8 + "-5\n" + "1.0e+03\n" * 4, "must be finite and non-negative, got chair -5$"),
    ("1.0e+03\n" * 12 + f"{float(NAN_AS_INTEGER):.18e}\n",
     r"got clutter -9\.22337e\+18 \(the original writes the integer cast of NaN for a class without instances"),
], ids=["12 values", "26 values", "empty", "not a number", "nan and inf", "negative", "integer cast of nan"])
def test_a_bad_sizes_file_is_refused_in_one_line_and_nothing_is_written(original, cfg, tmp_path, text, problem):
    path = tmp_path / "mean_ins_size.txt"
    path.write_text(text)
    with pytest.raises(s3dis.DataError) as refused:
        convert.run(original[1], tmp_path / "run", cfg, mean_ins_size=path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert re.search(problem, message), message
    assert not (tmp_path / "run").exists()


def test_sizes_for_a_model_of_other_classes_are_refused(original, tmp_path):
    shapenet_cfg = config.load(None, [*OVERRIDES, 'data.dataset="shapenet"', "model.num_classes=50"])
    path = _original_sizes_file(tmp_path / "mean_ins_size.txt")
    message = r"^--mean_ins_size .*: mean instance sizes are for S3DIS and ScanNet v2 models; the config describes"
    with pytest.raises(convert.ConversionError, match=message + " a ShapeNet part model$"):
        convert.run(original[1], tmp_path / "run", shapenet_cfg, mean_ins_size=path)
    missing = tmp_path / "nope.txt"
    with pytest.raises(s3dis.DataError, match=f"^{missing}: no such file"):
        tasks.get("s3dis").load_mean_instance_sizes(missing)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # TensorFlow's import alone takes 10 s or more on a busy machine
def test_the_command_refuses_a_bad_sizes_file_in_one_line(original, tmp_path):
    path = tmp_path / "mean_ins_size.txt"
    path.write_text("1.0e+03\n" * 12)
    result = _cli("--checkpoint", original[1], "--workdir", str(tmp_path / "run"), "--set", OVERRIDES[0],
                  "--mean_ins_size", str(path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"convert: error: {path}: expected 13 values, found 12"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
