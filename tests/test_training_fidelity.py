"""Training mode: the converted Keras JSNet takes the original TF1 graph's training step.

A random original network (tests/tf1_jsnet.py, float64 arithmetic, so the exact result) and the
Keras model converted from its checkpoint (float32) each run one training-mode pass on the same
2 blocks of 512 points (npoints 256, 64, 32, 16; dropout off; BN decay 0.7): batch norm with the
batch moments and the moving-statistic update, the loss (`jsnet_tf.losses.jsnet_loss` against
`tf1_jsnet.original_loss`, the original's utils/loss.py written anew) and the gradient of the
total loss for every trainable variable.

Tolerances, from measurements. On 10 seeds, the Keras model and the original graph run in
float32 (`tf1_jsnet.training_pass(..., dtype=tf.float32)`) land equally far from the float64
result (worst seed, Keras | original in float32):
  * outputs, max error / max |output|: 7.5e-5 | 7.0e-5;
  * the five loss terms, relative: 8.2e-6 | 6.7e-6;
  * moving means after the update, error in units of the moving std: 1.4e-4 | 1.4e-4 (the
    float32 rounding of a mean far from 0 in std units); moving variances, relative: 2.7e-5 |
    2.5e-5;
  * gradients, 1 - cosine of the worst tensor: 3.1e-3 | 7.0e-3 (4e-4, a cosine of 0.9996, on
    the median seed, for both); of the median tensor: 6e-5 | 1.2e-4; all gradients as one
    vector, relative error: 1.7e-2 | 3.0e-2.
On 35 seeds the Keras model's worst were, in the same order, 1.1e-4, 8.2e-6, 4.2e-4, 4.0e-5,
4.8e-3, 3.6e-4 and 3.0e-2.
The gradients are the noisy part, and not because of the batch norm: in training mode most
gradients are small differences of large sums (the batch norm's backward pass, the JISS cache's
mean over a block), and in float32 about 25 of the 7 million ReLU inputs of a pass fall on the
other side of zero than in float64. Each such point passes (or stops) its whole upstream
gradient, so a handful of points carry most of a tensor's gradient error, and the error has a
long tail over seeds. Which tensors are hit is chance: both float32 versions have as many
flips, half of them at the same places. The worst tensor is a density net's on most seeds: its
batch norm normalises the nearly constant kernel density and so scales up its float32 error
(8e-5 of its outputs' largest value, against at most 2e-5 for the encoder's other layers).
TensorFlow's fused batch-norm kernel and two-pass moments with tf.nn.batch_normalization give
errors of the same size (equal to 2 digits on 6 of 10 seeds; the two-pass version's worst seed
is the worse: 1.1e-2 for the worst tensor, 3.1e-2 for all gradients).

Hence, about 5x the worst float32 error seen: outputs 5e-4, moving means 2e-3, 1 - cosine of the
median tensor 2e-3 (a systematic error in the gradients), all gradients 0.15 (a wrong or missing
gradient term); the loss terms 1e-4 and moving variances 5e-4 (12x); the worst tensor 0.1 (9x
the two-pass version's worst: it only catches a gross error in one small tensor, such as a wrong sign). Each deliberate
mistake of `test_a_training_step_mistake_is_far_outside_the_tolerances` lands more than 10x
beyond the tolerance of the check that catches it.

Biases followed by a per-channel training-mode batch norm, and `ins_fc5`'s biases (the
discriminative loss does not change when every embedding moves by the same vector), have a
gradient of exactly 0; the float64 graph gives 1e-13 of the largest gradient, float32 up to 7e-5.
Their cosine means nothing: they are checked to stay below 1e-3 of the largest gradient.
"""

import zlib

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import checkpoints, config, convert
from jsnet_tf.layers import PointBatchNorm
from jsnet_tf.losses import jsnet_loss
from jsnet_tf.model import build_model
from tests import tf1_jsnet
from tests.conftest import BASE_SEED

pytestmark = pytest.mark.slow  # two TF1 graphs of the whole network: about 80 s of CPU

NUM_POINTS = 512
NPOINTS = (256, 64, 32, 16)
INSTANCES = 8  # instance ids per block
DECAY = 0.7  # not 0.5, where decay and 1 - decay would be confused unseen
TOLERANCES = {
    "outputs": 5e-4,  # of the largest output
    "losses": 1e-4,  # relative
    "moving means": 2e-3,  # in units of the moving std
    "moving variances": 5e-4,  # relative
    "gradient directions, worst tensor": 0.1,  # 1 - cosine
    "gradient directions, median tensor": 2e-3,  # 1 - cosine
    "gradients": 0.15,  # all of them as one vector, relative error
    "vanishing gradients": 1e-3,  # of the largest gradient
}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """(checkpoint prefix, points, semantic labels, instance labels, float64 training pass)."""
    rng = np.random.default_rng([BASE_SEED, zlib.crc32(b"tests/test_training_fidelity.py::original")])
    prefix = str(tmp_path_factory.mktemp("original") / "epoch_0.ckpt")
    points = tf1_jsnet.block_points(rng, 2, NUM_POINTS)
    tf1_jsnet.write_checkpoint(prefix, rng, points, npoints=NPOINTS)
    semantic = rng.integers(0, 13, (2, NUM_POINTS)).astype(np.int32)
    instance = rng.integers(0, INSTANCES, (2, NUM_POINTS)).astype(np.int32)
    reference = tf1_jsnet.training_pass(prefix, points, semantic, instance, NPOINTS, decay=DECAY)
    return prefix, points, semantic, instance, reference


@pytest.fixture(scope="module")
def model():
    cfg = config.load(None, [f"data.num_points={NUM_POINTS}", f"model.npoints={list(NPOINTS)}", "model.dropout=0.0"])
    network = build_model(cfg)
    network.build((None, NUM_POINTS, cfg["model"]["input_channels"]))
    return network


def _keras_pass(model, original, mistake=None):
    """One training-mode pass of `model` with the original's weights (reloaded, since a pass
    updates the moving statistics), in the layout of `tf1_jsnet.training_pass`."""
    prefix, points, semantic, instance, _ = original
    convert.convert(prefix, model)
    variables = checkpoints.model_variables(model)
    if mistake is not None:
        mistake(variables)
    model.set_bn_decay(DECAY)
    trainable = {path: v for path, v in variables.items() if v.trainable}
    with tf.GradientTape() as tape:
        out = model(tf.constant(points), training=True)
        losses = jsnet_loss(out["semantic_logits"], out["embeddings"], semantic, instance)
    gradients = tape.gradient(losses["total"], list(trainable.values()))
    return {
        "outputs": {"logits": out["semantic_logits"].numpy(), "embeddings": out["embeddings"].numpy()},
        "losses": {name: float(value) for name, value in losses.items()},
        "moving": {convert.original_name(p): v.numpy() for p, v in variables.items() if not v.trainable},
        "gradients": {convert.original_name(p): g.numpy() for p, g in zip(trainable, gradients)},
    }


@pytest.fixture(scope="module")
def keras(model, original):
    return _keras_pass(model, original)


@pytest.fixture(scope="module")
def errors(original, keras):
    return _errors(keras, original[4])


def _vanishing(names):
    """The trainable variables whose gradient is exactly 0 in training mode (module docstring)."""
    per_channel = {n.rpartition("/bn/")[0] for n in names if n.endswith("/bn/gamma") and "fp_sumpool" not in n}
    return {f"{scope}/biases" for scope in per_channel} | {"ins_fc5/biases"}


def _cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _errors(result, reference):
    """Each check's measured error (the keys of TOLERANCES), with where it is worst."""
    outputs = {k: np.abs(result["outputs"][k] - v).max() / np.abs(v).max() for k, v in reference["outputs"].items()}
    losses = {k: abs(result["losses"][k] - v) / abs(v) for k, v in reference["losses"].items()}
    means, variances = {}, {}
    for name, value in reference["moving"].items():
        if name.endswith(tf1_jsnet.MEAN_SUFFIX):
            std = np.sqrt(reference["moving"][name.replace(tf1_jsnet.MEAN_SUFFIX, tf1_jsnet.VARIANCE_SUFFIX)])
            means[name] = np.max(np.abs(result["moving"][name] - value) / std)
        else:
            variances[name] = np.max(np.abs(result["moving"][name] - value) / value)
    gradients = reference["gradients"]
    vanishing = _vanishing(gradients)
    directions = {n: 1.0 - _cosine(result["gradients"][n], g) for n, g in gradients.items() if n not in vanishing}
    names = sorted(gradients)
    exact, ours = (np.concatenate([g[n].ravel() for n in names]) for g in (gradients, result["gradients"]))
    exact, ours = exact.astype(np.float64), ours.astype(np.float64)
    overall = {"all trainable variables": np.linalg.norm(ours - exact) / np.linalg.norm(exact)}
    scale = max(np.abs(g).max() for g in gradients.values())
    vanished = {n: np.abs(result["gradients"][n]).max() / scale for n in vanishing}
    checks = {
        "outputs": outputs,
        "losses": losses,
        "moving means": means,
        "moving variances": variances,
        "gradient directions, worst tensor": directions,
        "gradients": overall,
        "vanishing gradients": vanished,
    }
    errors = {check: max((float(e), n) for n, e in values.items()) for check, values in checks.items()}
    errors["gradient directions, median tensor"] = (float(np.median(list(directions.values()))), "the median tensor")
    return errors


def _assert_within(errors, checks):
    for check in checks:
        error, where = errors[check]
        assert error <= TOLERANCES[check], f"{check}: {error:.3g} at {where} (tolerance {TOLERANCES[check]})"


def test_both_sides_report_every_tensor(original, keras):
    reference = original[4]
    assert set(keras["gradients"]) == set(reference["gradients"]) and len(reference["gradients"]) == 232
    assert set(keras["moving"]) == set(reference["moving"]) and len(reference["moving"]) == 108
    assert set(keras["losses"]) == set(reference["losses"]) == {"total", "sem", "disc", "var", "dist"}
    assert min(reference["losses"].values()) > 0  # every term active: the comparison has teeth


def test_the_exact_gradients_vanish_only_where_batch_norm_cancels_them(original):
    gradients = original[4]["gradients"]
    scale = max(np.abs(g).max() for g in gradients.values())
    vanished = {n for n, g in gradients.items() if np.abs(g).max() < 1e-9 * scale}
    assert vanished == _vanishing(gradients) and len(vanished) == 49
    assert min(np.abs(gradients[n]).max() for n in gradients if n not in vanished) > 1e-6 * scale


def test_outputs_and_loss_terms(original, errors):
    _assert_within(errors, ["outputs", "losses"])
    assert original[4]["outputs"]["logits"].std(axis=1).min() > 0.1  # outputs vary from point to point


def test_moving_statistics_after_the_update(errors):
    _assert_within(errors, ["moving means", "moving variances"])


def test_gradients_of_every_trainable_variable(errors):
    directions = ["gradient directions, worst tensor", "gradient directions, median tensor"]
    _assert_within(errors, [*directions, "gradients", "vanishing gradients"])


def _gammas_of_the_two_branches_exchanged(variables, monkeypatch):
    """A naming bug: one decoder's batch-norm gamma read from the other decoder's."""
    sem, ins = (variables[f"{branch}_fa_layer4/conv_0/bn/gamma"] for branch in ("sem", "ins"))
    values = sem.numpy(), ins.numpy()
    sem.assign(values[1])
    ins.assign(values[0])


def _bessel_correction_kept(variables, monkeypatch):
    """The fused kernel reports the batch variance with Bessel's correction; the original's moving
    variance follows the biased one (32 rows in layer4/after_conv: a factor 32/31)."""
    per_channel = PointBatchNorm._per_channel_training

    def unbiased(layer, inputs, relu):
        outputs, mean, variance = per_channel(layer, inputs, relu)
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), variance.dtype)
        return outputs, mean, variance * count / (count - 1.0)

    monkeypatch.setattr(PointBatchNorm, "_per_channel_training", unbiased)


def _batch_moments_held_constant(variables, monkeypatch):
    """A hand-written batch norm's classic bug: no gradient through the batch mean and variance.
    Outputs and moving statistics stay right; only the gradients show it."""
    per_channel = PointBatchNorm._per_channel_training

    def constant(layer, inputs, relu):
        _, mean, variance = per_channel(layer, inputs, relu)
        mean, variance = tf.stop_gradient(mean), tf.stop_gradient(variance)
        outputs = tf.nn.batch_normalization(inputs, mean, variance, layer.beta, layer.gamma, layer.epsilon)
        return (tf.nn.relu(outputs) if relu else outputs), mean, variance

    monkeypatch.setattr(PointBatchNorm, "_per_channel_training", constant)


FORWARD = ["outputs", "losses", "moving means"]
MISTAKES = [  # (mistake, the check that catches it, checks it passes)
    (_gammas_of_the_two_branches_exchanged, "outputs", []),
    (_bessel_correction_kept, "moving variances", FORWARD),
    (_batch_moments_held_constant, "gradient directions, median tensor", [*FORWARD, "moving variances"]),
]


@pytest.mark.parametrize("mistake, caught_by, passed", MISTAKES, ids=[m[0].__name__.strip("_") for m in MISTAKES])
def test_a_training_step_mistake_is_far_outside_the_tolerances(
    model, original, monkeypatch, mistake, caught_by, passed
):
    result = _keras_pass(model, original, lambda variables: mistake(variables, monkeypatch))
    errors = _errors(result, original[4])
    assert errors[caught_by][0] > 10 * TOLERANCES[caught_by], errors[caught_by]
    _assert_within(errors, passed)  # what only the moving-statistic and gradient checks catch
