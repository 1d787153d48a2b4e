import numpy as np
import pytest

from jsnet_tf import ops
from tests.ops import numpy_reference as ref

# (batch, N queries, M candidates): fewer than 3 candidates, N=1, the S3DIS upsampling steps.
SIZES = [(1, 1, 1), (2, 5, 2), (1, 4, 3), (3, 130, 37), (2, 1024, 256), (1, 4096, 1024)]


@pytest.mark.parametrize("batch,n,m", SIZES)
def test_matches_float64_brute_force_with_ties(impl, rng, batch, n, m):
    xyz1 = ref.grid_points(rng, (batch, n, 3), cells=8)
    xyz2 = ref.grid_points(rng, (batch, m, 3), cells=8)
    dist, idx = ops.three_nn(xyz1, xyz2)
    want_dist, want_idx = ref.k_nearest(3, xyz2, xyz1)
    np.testing.assert_array_equal(idx.numpy(), want_idx)
    np.testing.assert_array_equal(dist.numpy(), want_dist)


def test_fewer_than_three_candidates_give_inf_and_zero(impl):
    xyz1 = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], np.float32)
    xyz2 = np.array([[[0.0, 0.0, 2.0], [0.0, 0.0, 1.0]]], np.float32)
    dist, idx = ops.three_nn(xyz1, xyz2)
    np.testing.assert_array_equal(dist.numpy(), [[[1, 4, np.inf], [2, 5, np.inf]]])
    np.testing.assert_array_equal(idx.numpy(), [[[1, 0, 0], [1, 0, 0]]])
