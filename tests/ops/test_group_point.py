import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.ops import numpy_reference as ref

# (batch, N, C, M, nsample)
SIZES = [(1, 1, 1, 1, 1), (2, 37, 5, 7, 3), (3, 130, 64, 33, 17), (2, 1024, 9, 256, 32)]


@pytest.mark.parametrize("batch,n,c,m,nsample", SIZES)
def test_matches_numpy(impl, rng, batch, n, c, m, nsample):
    points = rng.standard_normal((batch, n, c)).astype(np.float32)
    idx = rng.integers(0, n, (batch, m, nsample)).astype(np.int32)
    np.testing.assert_array_equal(ops.group_point(points, idx).numpy(), ref.group_point(points, idx))


@pytest.mark.parametrize("batch,n,c,m,nsample", SIZES[:3])
def test_gradient_is_scatter_add(impl, rng, batch, n, c, m, nsample):
    points = tf.constant(rng.standard_normal((batch, n, c)).astype(np.float32))
    idx = rng.integers(0, n, (batch, m, nsample)).astype(np.int32)
    upstream = rng.standard_normal((batch, m, nsample, c)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(points)
        out = ops.group_point(points, idx)
    grad = tape.gradient(out, points, output_gradients=upstream)
    np.testing.assert_allclose(grad.numpy(), ref.scatter_add(upstream, idx, n), rtol=1e-5, atol=1e-5)


def test_compute_gradient(impl, rng):
    points = rng.standard_normal((2, 5, 4)).astype(np.float32)
    idx = rng.integers(0, 5, (2, 3, 4)).astype(np.int32)
    theoretical, numerical = tf.test.compute_gradient(lambda p: ops.group_point(p, idx), [points])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-2)


def test_static_shape_propagates(impl):
    spec_p, spec_i = tf.TensorSpec([None, None, 64]), tf.TensorSpec([None, 128, 32], tf.int32)
    fn = tf.function(ops.group_point, input_signature=[spec_p, spec_i])
    assert fn.get_concrete_function().structured_outputs.shape.as_list() == [None, 128, 32, 64]
