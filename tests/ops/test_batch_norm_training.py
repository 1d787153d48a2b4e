"""batch_norm_training: the training-mode batch norm (+ ReLU) against the float64 brute force
(outputs, batch mean, biased variance, the three gradients), finite differences and the pure-TF
twin; edge shapes; the same bits for any number of threads.

Tolerances come from the float32 arithmetic. The compiled kernel sums in double and rounds the
mean, variance and per-channel coefficients once to float32, then computes each output as
((x - mean) * scale) + beta in float32: its error is a few units of float32 rounding (EPS = 2^-24)
of the terms it adds, |x - mean| * |scale|, |mean| * |scale| (the mean's own rounding), |beta|
and |y|. The pure-TF twin sums in float32 (TensorFlow's reductions), which costs up to a few
times EPS * log2(rows) more. Inputs with a ReLU take `relu_safe_beta`, so that no output lies
near 0, where float32 and float64 could take opposite sides.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.ops import numpy_reference as ref

EPS = 2.0**-24
EPSILON = 1e-3
BLOCK_ROWS = 512  # JSNET_BATCH_NORM_BLOCK_ROWS: partial sums per block of rows


def _rounding(impl, rows):
    """The relative error the bounds allow: the compiled kernel rounds at most 6 times on the way to
    a value (3 coefficients, 3 float32 operations), the twin's float32 sums add log2(rows) more."""
    return 8 * EPS if impl == "custom" else 16 * EPS * max(1.0, np.log2(rows))

# x shapes: one row; C off the SIMD widths and below them; rows not a multiple of the block, and
# several blocks; a (B, N, K, C) grouped tensor; the network's widths
SHAPES = [(1, 5), (3, 13), (40, 3), (7, 1), (BLOCK_ROWS + 77, 24), (3 * BLOCK_ROWS + 1, 9), (2, 16, 8, 32), (4, 64, 128)]


def _inputs(rng, shape, relu, mean=3.0, spread=2.0):
    x = (rng.standard_normal(shape) * spread + mean).astype(np.float32)
    channels = shape[-1]
    gamma = (rng.random(channels) + 0.5).astype(np.float32) * rng.choice([-1.0, 1.0], channels).astype(np.float32)
    beta = ref.relu_safe_beta(x, gamma) if relu else rng.standard_normal(channels).astype(np.float32)
    return x, gamma, beta


def _run(x, gamma, beta, relu, upstream=None):
    """(y, mean, variance) and, with `upstream`, the gradients of sum(y * upstream) w.r.t. x, gamma, beta."""
    args = [tf.constant(a) for a in (x, gamma, beta)]
    with tf.GradientTape() as tape:
        tape.watch(args)
        y, mean, variance = ops.batch_norm_training(*args, EPSILON, relu)
    outputs = [t.numpy() for t in (y, mean, variance)]
    if upstream is None:
        return outputs, None
    return outputs, [g.numpy() for g in tape.gradient(y, args, output_gradients=tf.constant(upstream))]


def _assert_within(got, want, bound, what):
    error = np.abs(got.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(error - bound), error.shape)
    assert np.all(error <= bound), f"{what}: error {error[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"


def _check_forward(impl, x, gamma, beta, relu, outputs):
    y, mean, variance = outputs
    want_y, want_mean, want_variance = ref.batch_norm_training(x, gamma, beta, EPSILON, relu)
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    k = _rounding(impl, len(flat))
    _assert_within(mean, want_mean, k * (np.abs(want_mean) + np.abs(flat).max(axis=0)) + 1e-30, "mean")
    _assert_within(variance, want_variance, k * want_variance + 1e-30, "variance")
    scale = np.abs(gamma) / np.sqrt(want_variance + EPSILON)
    terms = scale * (np.abs(flat - want_mean) + np.abs(want_mean)) + np.abs(beta) + np.abs(want_y.reshape(flat.shape))
    _assert_within(y, want_y, (k * terms).reshape(x.shape), "y")


def _check_gradients(impl, x, gamma, beta, relu, upstream, grads):
    """Bounds from the sizes of the terms each gradient sums (g: upstream after the ReLU mask)."""
    want = ref.batch_norm_training_grad(upstream, x, gamma, beta, EPSILON, relu)
    channels = x.shape[-1]
    flat = x.reshape(-1, channels).astype(np.float64)
    rows = len(flat)
    mean = flat.mean(axis=0)
    inv_std = 1.0 / np.sqrt(flat.var(axis=0) + EPSILON)
    normalised = (flat - mean) * inv_std
    g = upstream.reshape(-1, channels).astype(np.float64)
    if relu:
        g = np.where(normalised * gamma + beta > 0, g, 0.0)
    k = _rounding(impl, rows)
    # grad_gamma = sum g * xhat: rounding of xhat (through the mean's and the variance's) and of the sum
    size_gamma = np.abs(g * normalised).sum(axis=0) + np.abs(mean) * inv_std * np.abs(g).sum(axis=0)
    size_beta = np.abs(g).sum(axis=0)
    scale = np.abs(gamma) * inv_std
    size_x = scale * (np.abs(g) + size_beta / rows + (np.abs(normalised) + np.abs(mean) * inv_std) * size_gamma / rows)
    for got, expected, size, what in zip(grads, want, (size_x, size_gamma, size_beta), ("x", "gamma", "beta")):
        _assert_within(got, expected, (k * size).reshape(expected.shape) + 1e-30, f"gradient w.r.t. {what}")


@pytest.mark.parametrize("relu", [False, True], ids=["no_relu", "relu"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_outputs_and_gradients_match_numpy(impl, rng, shape, relu):
    x, gamma, beta = _inputs(rng, shape, relu)
    upstream = rng.standard_normal(shape).astype(np.float32)
    outputs, grads = _run(x, gamma, beta, relu, upstream)
    assert [o.shape for o in outputs] == [shape, shape[-1:], shape[-1:]]
    _check_forward(impl, x, gamma, beta, relu, outputs)
    _check_gradients(impl, x, gamma, beta, relu, upstream, grads)


@pytest.mark.parametrize("relu", [False, True], ids=["no_relu", "relu"])
def test_a_mean_far_from_zero_does_not_cancel(impl, rng, relu):
    """Mean 1000 spreads of 0.5: E[x^2] - E[x]^2 in float32 would lose every digit of the variance."""
    x, gamma, beta = _inputs(rng, (300, 12), relu, mean=1000.0, spread=0.5)
    upstream = rng.standard_normal(x.shape).astype(np.float32)
    outputs, grads = _run(x, gamma, beta, relu, upstream)
    _check_forward(impl, x, gamma, beta, relu, outputs)
    _check_gradients(impl, x, gamma, beta, relu, upstream, grads)


def test_one_row_gives_beta_and_no_gradient_through_x(impl, rng):
    x, gamma, beta = _inputs(rng, (1, 6), relu=False)
    (y, mean, variance), (grad_x, grad_gamma, grad_beta) = _run(x, gamma, beta, False, np.ones((1, 6), np.float32))
    np.testing.assert_array_equal(mean, x[0])
    np.testing.assert_array_equal(variance, np.zeros(6))
    np.testing.assert_allclose(y[0], beta, rtol=0, atol=1e-6)
    np.testing.assert_allclose(grad_x, np.zeros((1, 6)), atol=1e-6)
    np.testing.assert_allclose(grad_gamma, np.zeros(6), atol=1e-6)
    np.testing.assert_array_equal(grad_beta, np.ones(6))


@pytest.mark.parametrize("relu", [False, True], ids=["no_relu", "relu"])
def test_gradients_match_finite_differences(impl, rng, relu):
    """Central differences of the float32 op along random directions. Each channel holds evenly
    spaced values, so that with relu_safe_beta every output stays at least 0.01 from the ReLU's
    threshold, beyond what a step moves it."""
    rows, channels = 64, 5
    spaced = np.stack([rng.permutation(np.linspace(-2.0, 2.0, rows)) for _ in range(channels)], axis=1)
    x = (spaced * (rng.random(channels) + 0.5) + rng.standard_normal(channels)).astype(np.float32)
    gamma = ((rng.random(channels) + 0.5) * rng.choice([-1.0, 1.0], channels)).astype(np.float32)
    beta = ref.relu_safe_beta(x, gamma) if relu else rng.standard_normal(channels).astype(np.float32)
    upstream = rng.standard_normal(x.shape)
    (y, _, _), grads = _run(x, gamma, beta, relu, upstream.astype(np.float32))
    step = 1e-3
    noise = 8 * EPS * np.sum(np.abs(y * upstream)) / step  # float32 rounding of the two losses

    def loss(*args):
        y = ops.batch_norm_training(*[tf.constant(a.astype(np.float32)) for a in args], EPSILON, relu)[0]
        return float(np.sum(y.numpy().astype(np.float64) * upstream))

    args = [a.astype(np.float64) for a in (x, gamma, beta)]
    for i, grad in enumerate(grads):
        for _ in range(3):
            direction = rng.standard_normal(args[i].shape)
            plus, minus = list(args), list(args)
            plus[i], minus[i] = args[i] + step * direction, args[i] - step * direction
            numerical = (loss(*plus) - loss(*minus)) / (2 * step)
            analytic = float(np.sum(grad * direction))
            assert abs(numerical - analytic) <= 1e-4 * abs(analytic) + noise, (i, numerical, analytic, noise)


@pytest.mark.parametrize("relu", [False, True], ids=["no_relu", "relu"])
def test_compiled_op_equals_the_pure_tf_twin(rng, relu):
    x, gamma, beta = _inputs(rng, (8, 512, 64), relu)
    upstream = rng.standard_normal(x.shape).astype(np.float32)
    ops.library.load()
    results = {}
    for name in ops.IMPLEMENTATIONS:
        with ops.use_implementation(name):
            results[name] = _run(x, gamma, beta, relu, upstream)
    (outputs, grads), (twin_outputs, twin_grads) = results["custom"], results["reference"]
    for got, want, what in zip([*outputs, *grads], [*twin_outputs, *twin_grads], ["y", "mean", "variance", "x", "gamma", "beta"]):
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=what)


def test_the_moments_carry_no_gradient(impl, rng):
    x, gamma, beta = (tf.constant(a) for a in _inputs(rng, (30, 4), relu=False))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, gamma, beta])
        _, mean, variance = ops.batch_norm_training(x, gamma, beta)
    assert tape.gradient(mean, [x, gamma, beta]) == [None, None, None]
    assert tape.gradient(variance, [x, gamma, beta]) == [None, None, None]


def test_a_nan_stays_nan_through_the_relu(impl, rng):
    """A NaN in x makes its channel's moments and outputs NaN, as tf.nn.relu keeps NaN (not 0)."""
    x, gamma, beta = _inputs(rng, (20, 3), relu=True)
    x[4, 1] = np.nan
    (y, mean, variance), _ = _run(x, gamma, beta, relu=True)
    assert np.isnan(y[:, 1]).all() and np.isnan(mean[1]) and np.isnan(variance[1])
    assert np.isfinite(y[:, [0, 2]]).all()


def test_the_gradient_masks_exactly_where_the_forward_relu_cut(impl, rng):
    """Outputs at and around 0 (beta puts a row's pre-activation exactly at 0 where float32 allows):
    the ReLU's gradient equals the plain gradient of upstream * (y > 0), bit for bit, so the
    gradient's recomputed mask is the forward's."""
    x, gamma, beta = _inputs(rng, (64, 16), relu=False)
    (pre, _, _), _ = _run(x, gamma, beta, relu=False)
    beta = (beta - pre[7]).astype(np.float32)  # row 7 lands on (or next to) 0 in every channel
    upstream = rng.standard_normal(x.shape).astype(np.float32)
    (y, _, _), (gx, gg, gb) = _run(x, gamma, beta, relu=True, upstream=upstream)
    (plain, _, _), _ = _run(x, gamma, beta, relu=False)
    np.testing.assert_array_equal(y, np.where(plain > 0, plain, 0.0))
    _, (px, pg, pb) = _run(x, gamma, beta, relu=False, upstream=np.where(plain > 0, upstream, 0.0).astype(np.float32))
    assert (np.abs(plain[7]) < 1e-5).all()
    for got, want in ((gx, px), (gg, pg), (gb, pb)):
        np.testing.assert_array_equal(got, want)


def test_empty_channels(impl):
    y, mean, variance = ops.batch_norm_training(np.zeros((5, 0), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))
    assert (y.shape, mean.shape, variance.shape) == ((5, 0), (0,), (0,))


THREADS_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[1]))
from jsnet_tf import ops
rng = np.random.default_rng(7)
x = (rng.standard_normal((9 * 512 + 100, 48)) * 3 + 2).astype(np.float32)
gamma, beta = rng.random(48).astype(np.float32) + 0.5, rng.standard_normal(48).astype(np.float32)
upstream = rng.standard_normal(x.shape).astype(np.float32)
args = [tf.constant(a) for a in (x, gamma, beta)]
with ops.use_implementation("custom"), tf.GradientTape() as tape:
    tape.watch(args)
    y, mean, variance = ops.batch_norm_training(*args, 1e-3, True)
grads = tape.gradient(y, args, output_gradients=tf.constant(upstream))
np.savez(sys.argv[2], *[t.numpy() for t in (y, mean, variance, *grads)])
"""


def test_custom_results_do_not_depend_on_the_thread_count(tmp_path):
    """Fixed row blocks added in block order: 1 and 2 intra-op threads give the same bits."""
    saved = {}
    for threads in (1, 2):
        path = tmp_path / f"threads{threads}.npz"
        result = subprocess.run(
            [sys.executable, "-c", THREADS_SCRIPT, str(threads), str(path)],
            cwd=pathlib.Path(__file__).resolve().parents[2], env=os.environ, capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        with np.load(path) as arrays:
            saved[threads] = [arrays[name] for name in arrays.files]
    for one, two in zip(saved[1], saved[2]):
        np.testing.assert_array_equal(one, two)
