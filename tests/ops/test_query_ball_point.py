import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.ops import numpy_reference as ref

# (batch, N, M, nsample): N=1, N not a multiple of any block size, nsample > points in ball,
# M = N, S3DIS layer 1 (4096 -> 1024, K=32).
SIZES = [(1, 1, 1, 4), (2, 37, 5, 3), (3, 130, 130, 200), (2, 1000, 77, 32), (1, 4096, 1024, 32)]


@pytest.mark.parametrize("batch,n,m,nsample", SIZES)
def test_matches_float64_brute_force(impl, rng, batch, n, m, nsample):
    xyz = ref.grid_points(rng, (batch, n, 3))
    new_xyz = ref.grid_points(rng, (batch, m, 3))
    radius = ref.grid_radius(rng)
    idx, cnt = ops.query_ball_point(radius, nsample, xyz, new_xyz)
    want_idx, want_cnt = ref.query_ball_point(radius, nsample, xyz, new_xyz)
    np.testing.assert_array_equal(cnt.numpy(), want_cnt)
    np.testing.assert_array_equal(idx.numpy(), want_idx)


def test_query_without_hit_returns_zeros(impl):
    xyz = np.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]], np.float32)
    new_xyz = np.array([[[5.0, 5.0, 5.0], [1.0, 1.0, 1.05]]], np.float32)
    idx, cnt = ops.query_ball_point(0.1, 4, xyz, new_xyz)
    np.testing.assert_array_equal(cnt.numpy(), [[0, 1]])
    np.testing.assert_array_equal(idx.numpy(), [[[0, 0, 0, 0], [1, 1, 1, 1]]])


def test_radius_is_strict(impl):
    xyz = np.array([[[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.25, 0.0, 0.0]]], np.float32)
    idx, cnt = ops.query_ball_point(0.5, 3, xyz, xyz[:, :1])  # the point at exactly 0.5 is outside
    np.testing.assert_array_equal(idx.numpy(), [[[0, 2, 0]]])
    np.testing.assert_array_equal(cnt.numpy(), [[2]])


def test_static_shape_propagates(impl):
    spec = tf.TensorSpec([None, None, 3])
    fn = tf.function(lambda a, b: ops.query_ball_point(0.2, 16, a, b), input_signature=[spec, spec])
    idx, cnt = fn.get_concrete_function().structured_outputs
    assert idx.shape.as_list() == [None, None, 16] and cnt.shape.rank == 2
