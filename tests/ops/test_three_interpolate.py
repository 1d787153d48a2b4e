import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.ops import numpy_reference as ref

# (batch, M source points, C, N target points)
SIZES = [(1, 1, 1, 1), (2, 3, 5, 7), (3, 37, 64, 130), (2, 256, 128, 1024)]


def _inputs(rng, batch, m, c, n):
    points = rng.standard_normal((batch, m, c)).astype(np.float32)
    idx = rng.integers(0, m, (batch, n, 3)).astype(np.int32)
    weight = rng.random((batch, n, 3)).astype(np.float32)
    return points, idx, weight / weight.sum(-1, keepdims=True)


@pytest.mark.parametrize("batch,m,c,n", SIZES)
def test_matches_numpy(impl, rng, batch, m, c, n):
    points, idx, weight = _inputs(rng, batch, m, c, n)
    got = ops.three_interpolate(points, idx, weight).numpy()
    np.testing.assert_allclose(got, ref.three_interpolate(points, idx, weight), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch,m,c,n", SIZES[:3])
def test_gradient_wrt_points(impl, rng, batch, m, c, n):
    points, idx, weight = _inputs(rng, batch, m, c, n)
    points, weight = tf.constant(points), tf.constant(weight)
    upstream = rng.standard_normal((batch, n, c)).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([points, weight])
        out = ops.three_interpolate(points, idx, weight)
    grad = tape.gradient(out, points, output_gradients=upstream).numpy()
    want = np.zeros((batch, m, c))
    for s in range(3):
        want += ref.scatter_add(upstream * weight.numpy()[:, :, s : s + 1], idx[:, :, s], m)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-5)
    assert tape.gradient(out, weight) is None  # as the original: no gradient w.r.t. weights


def test_compute_gradient(impl, rng):
    points, idx, weight = _inputs(rng, 2, 4, 3, 5)
    theoretical, numerical = tf.test.compute_gradient(lambda p: ops.three_interpolate(p, idx, weight), [points])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-2)
