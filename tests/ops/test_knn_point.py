import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.ops import numpy_reference as ref

# (batch, N, M, k): N=1, k = N, sizes off every block size, the S3DIS encoder/decoder calls.
SIZES = [(1, 1, 1, 1), (2, 5, 3, 5), (3, 37, 11, 7), (2, 130, 130, 100), (2, 1024, 256, 32), (1, 1024, 1024, 16)]


@pytest.mark.parametrize("batch,n,m,k", SIZES)
def test_matches_float64_brute_force_with_ties(impl, rng, batch, n, m, k):
    xyz = ref.grid_points(rng, (batch, n, 3), cells=8)  # a coarse grid: many equal distances
    new_xyz = ref.grid_points(rng, (batch, m, 3), cells=8)
    dist, idx = ops.knn_point(k, xyz, new_xyz)
    want_dist, want_idx = ref.k_nearest(k, xyz, new_xyz)
    np.testing.assert_array_equal(idx.numpy(), want_idx)
    np.testing.assert_array_equal(dist.numpy(), want_dist)


def test_continuous_data_within_float_tolerance(impl, rng):
    xyz = rng.random((2, 2000, 3), dtype=np.float32)
    new_xyz = rng.random((2, 300, 3), dtype=np.float32)
    dist, idx = ops.knn_point(32, xyz, new_xyz)
    want_dist, _ = ref.k_nearest(32, xyz, new_xyz)
    np.testing.assert_allclose(dist.numpy(), want_dist, rtol=1e-5, atol=1e-7)
    true_dist = np.stack([np.take_along_axis(ref.squared_distances(new_xyz[b], xyz[b]), idx.numpy()[b], 1) for b in range(2)])
    np.testing.assert_allclose(true_dist, want_dist, rtol=1e-5, atol=1e-7)  # the right neighbours


def test_query_point_is_its_own_first_neighbour(impl, rng):
    xyz = rng.random((1, 300, 3), dtype=np.float32)
    dist, idx = ops.knn_point(16, xyz, xyz)
    np.testing.assert_array_equal(idx.numpy()[0, :, 0], np.arange(300))
    np.testing.assert_array_equal(dist.numpy()[0, :, 0], 0)


def test_static_shape_propagates(impl):
    spec = tf.TensorSpec([None, None, 3])
    fn = tf.function(lambda a, b: ops.knn_point(32, a, b), input_signature=[spec, spec])
    dist, idx = fn.get_concrete_function().structured_outputs
    assert dist.shape.as_list() == [None, None, 32] and idx.dtype == tf.int32
