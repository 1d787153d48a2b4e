"""gather_weight_sum: out[b, m] = sum_s points[b, idx[b, m, s]] * weights[b, m, s], against the float64
brute force, its gradients against the brute force, finite differences and the pure-TF twin's."""

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.ops import numpy_reference as ref

# (batch, N points, C, M queries, nsample): C off and on the SIMD widths, nsample 1, the network's sizes
SIZES = [(1, 1, 1, 1, 1), (2, 7, 5, 3, 4), (3, 37, 17, 130, 16), (2, 1024, 256, 256, 16), (1, 64, 131, 40, 1)]


def _inputs(rng, batch, n, c, m, nsample):
    points = rng.standard_normal((batch, n, c)).astype(np.float32)
    idx = rng.integers(0, n, (batch, m, nsample)).astype(np.int32)  # repeated indices: the scatter adds up
    weights = rng.standard_normal((batch, m, nsample, c)).astype(np.float32)
    return points, idx, weights


def _brute_force_grads(upstream, points, idx, weights):
    """(d points, d weights) of sum(out * upstream), float64."""
    up = upstream.astype(np.float64)[:, :, None, :]
    return ref.scatter_add(up * weights, idx, points.shape[1]), up * ref.group_point(points, idx)


def _grads(points, idx, weights, upstream):
    points, weights = tf.constant(points), tf.constant(weights)
    with tf.GradientTape() as tape:
        tape.watch([points, weights])
        out = ops.gather_weight_sum(points, idx, weights)
    return [g.numpy() for g in tape.gradient(out, [points, weights], output_gradients=upstream)]


@pytest.mark.parametrize("batch,n,c,m,nsample", SIZES)
def test_matches_numpy(impl, rng, batch, n, c, m, nsample):
    points, idx, weights = _inputs(rng, batch, n, c, m, nsample)
    got = ops.gather_weight_sum(points, idx, weights).numpy()
    assert got.shape == (batch, m, c)
    np.testing.assert_allclose(got, ref.gather_weight_sum(points, idx, weights), rtol=1e-5, atol=1e-5)


def test_equals_group_point_times_weights_summed(impl, rng):
    """The composition it replaces: group_point, a product and a sum over the neighbours."""
    points, idx, weights = _inputs(rng, 2, 50, 9, 20, 16)
    plain = tf.reduce_sum(ops.group_point(points, idx) * weights, axis=2).numpy()
    np.testing.assert_allclose(ops.gather_weight_sum(points, idx, weights).numpy(), plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch,n,c,m,nsample", SIZES[:4])
def test_gradients_match_numpy(impl, rng, batch, n, c, m, nsample):
    points, idx, weights = _inputs(rng, batch, n, c, m, nsample)
    upstream = rng.standard_normal((batch, m, c)).astype(np.float32)
    grad_points, grad_weights = _grads(points, idx, weights, upstream)
    want_points, want_weights = _brute_force_grads(upstream, points, idx, weights)
    np.testing.assert_allclose(grad_points, want_points, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grad_weights, want_weights, rtol=1e-5, atol=1e-6)


def test_gradients_match_finite_differences(impl, rng):
    points, idx, weights = _inputs(rng, 2, 6, 3, 4, 5)
    theoretical, numerical = tf.test.compute_gradient(lambda p, w: ops.gather_weight_sum(p, idx, w), [points, weights])
    for t, nu in zip(theoretical, numerical):
        np.testing.assert_allclose(t, nu, atol=1e-2)


def test_compiled_gradients_equal_the_pure_tf_twins(rng):
    points, idx, weights = _inputs(rng, 2, 300, 64, 128, 16)
    upstream = rng.standard_normal((2, 128, 64)).astype(np.float32)
    ops.library.load()
    grads = {}
    for name in ops.IMPLEMENTATIONS:
        with ops.use_implementation(name):
            grads[name] = _grads(points, idx, weights, upstream)
    np.testing.assert_allclose(grads["custom"][0], grads["reference"][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(grads["custom"][1], grads["reference"][1])  # one product each


def test_custom_forward_sums_the_neighbours_in_order(rng):
    """The compiled kernel adds each channel's products in neighbour order, rounding each step: the
    same float32 value as a float32 loop (the CUDA kernels compute it bit for bit)."""
    points, idx, weights = _inputs(rng, 2, 40, 33, 25, 16)
    want = np.zeros((2, 25, 33), np.float32)
    for s in range(16):
        want += np.take_along_axis(points, idx[:, :, s, None].astype(np.int64), axis=1) * weights[:, :, s]
    with ops.use_implementation("custom"):
        np.testing.assert_array_equal(ops.gather_weight_sum(points, idx, weights).numpy(), want)


def test_empty_queries(impl, rng):
    points = rng.standard_normal((2, 5, 3)).astype(np.float32)
    out = ops.gather_weight_sum(points, np.zeros((2, 0, 4), np.int32), np.zeros((2, 0, 4, 3), np.float32))
    assert out.shape == (2, 0, 3)
