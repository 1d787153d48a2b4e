import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.ops import numpy_reference as ref

SIZES = [(1, 1, 1), (2, 7, 3), (3, 130, 257), (2, 4096, 1024)]


@pytest.mark.parametrize("batch,n,m", SIZES)
def test_matches_numpy(impl, rng, batch, n, m):
    xyz = rng.standard_normal((batch, n, 3)).astype(np.float32)
    idx = rng.integers(0, n, (batch, m)).astype(np.int32)
    np.testing.assert_array_equal(ops.gather_point(xyz, idx).numpy(), ref.gather_point(xyz, idx))


@pytest.mark.parametrize("batch,n,m", SIZES[:3])
def test_gradient_is_scatter_add(impl, rng, batch, n, m):
    xyz = tf.constant(rng.standard_normal((batch, n, 3)).astype(np.float32))
    idx = rng.integers(0, n, (batch, m)).astype(np.int32)  # repeated indices accumulate
    upstream = rng.standard_normal((batch, m, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(xyz)
        out = ops.gather_point(xyz, idx)
    grad = tape.gradient(out, xyz, output_gradients=upstream)
    np.testing.assert_allclose(grad.numpy(), ref.scatter_add(upstream, idx, n), rtol=1e-5, atol=1e-6)


def test_compute_gradient(impl, rng):
    xyz = rng.standard_normal((2, 6, 3)).astype(np.float32)
    idx = np.array([[0, 5, 5, 2], [1, 1, 3, 4]], np.int32)
    theoretical, numerical = tf.test.compute_gradient(lambda x: ops.gather_point(x, idx), [xyz])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-2)
    times_gathered = theoretical[0].sum(axis=0).reshape(2, 6, 3)[..., 0]  # (outputs, inputs)
    np.testing.assert_array_equal(times_gathered, [[1, 0, 1, 0, 0, 2], [0, 2, 0, 1, 1, 0]])
