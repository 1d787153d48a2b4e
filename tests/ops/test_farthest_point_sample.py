import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from tests.ops import numpy_reference as ref

SIZES = [(1, 1, 1), (1, 5, 5), (2, 37, 10), (3, 130, 130), (2, 1000, 257), (1, 2049, 64)]


@pytest.mark.parametrize("batch,n,npoint", SIZES)
def test_matches_float64_brute_force(impl, rng, batch, n, npoint):
    xyz = ref.grid_points(rng, (batch, n, 3), cells=16)  # coarse grid: many equal distances
    got = ops.farthest_point_sample(npoint, xyz).numpy()
    np.testing.assert_array_equal(got, ref.farthest_point_sample(npoint, xyz))


def test_each_pick_is_farthest_on_continuous_data(impl, rng):
    xyz = rng.random((2, 700, 3), dtype=np.float32)
    idx = ops.farthest_point_sample(100, xyz).numpy()
    assert (idx[:, 0] == 0).all()
    for b in range(2):
        assert len(set(idx[b])) == 100
        for i in range(1, 100):
            nearest = ref.squared_distances(xyz[b, idx[b, :i]], xyz[b]).min(axis=0)
            assert nearest[idx[b, i]] == pytest.approx(nearest.max(), rel=1e-5)


def test_static_shape_propagates(impl):
    fn = tf.function(lambda x: ops.farthest_point_sample(8, x), input_signature=[tf.TensorSpec([None, None, 3])])
    out = fn.get_concrete_function().structured_outputs
    assert out.shape.as_list() == [None, 8] and out.dtype == tf.int32
