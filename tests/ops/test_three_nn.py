import numpy as np
import pytest

from jsnet_tf import ops
from jsnet_tf.ops import numpy_reference as ref
from tests.ops.test_farthest_point_sample import _clustered, _degenerate

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


def _check(xyz1, xyz2):
    dist, idx = ops.three_nn(xyz1, xyz2)
    want_dist, want_idx = ref.k_nearest(3, xyz2, xyz1)
    np.testing.assert_array_equal(idx.numpy(), want_idx)
    np.testing.assert_array_equal(dist.numpy(), want_dist)


# Large enough for the pruned CPU kernel (leaves of candidates, skipped when their box lies farther
# than the third distance found): a wrongly skipped leaf or a wrong tie between leaves changes the
# result. The pure-TF twin is a brute force at every size, so these run the compiled op only.
@pytest.mark.parametrize("impl", ["custom"], indirect=True)
def test_large_tied_and_clustered_clouds_match_brute_force(impl, rng):
    queries = ref.grid_points(rng, (2, 4096, 3), cells=16)
    queries[:, :3] = [[-2.0, 0.5, 0.5], [0.5, 2.5, 0.5], [1.5, -1.0, 2.0]]  # outside every leaf box (float32 distances stay exact)
    for candidates in (ref.grid_points(rng, (2, 1024, 3), cells=16), _clustered(rng, 2, 1024)):
        _check(queries, candidates)
    _check(_clustered(rng, 2, 4096), _clustered(rng, 2, 1024))


@pytest.mark.parametrize("impl", ["custom"], indirect=True)
@pytest.mark.parametrize("kind", ["all equal", "few distinct", "line"])
def test_degenerate_candidate_clouds_match_brute_force(impl, rng, kind):
    queries = np.concatenate([ref.grid_points(rng, (2, 500, 3), cells=32), np.full((2, 1, 3), 0.25, np.float32)], axis=1)
    _check(queries, _degenerate(rng, 2, 1500, kind))


# Candidate counts around the smallest one the pruned kernel takes (32) and around a leaf (64).
@pytest.mark.parametrize("m", [3, 31, 32, 33, 63, 64, 65, 129, 257])
def test_candidate_counts_around_the_partition_match_brute_force(impl, rng, m):
    _check(ref.grid_points(rng, (2, 300, 3), cells=8), ref.grid_points(rng, (2, m, 3), cells=8))


def test_overflowing_distances_take_the_first_infinite_candidates(impl, rng):
    xyz2 = (1 + ref.grid_points(rng, (1, 200, 3), cells=8)) * np.float32(3e19)  # squared distances overflow
    xyz2[0, 0] = 6e19  # in a leaf far from the two finite ones, yet the first infinite candidate
    xyz2[0, [170, 140]] = [[0, 0, 1], [0, 0, 2]]
    dist, idx = ops.three_nn(np.zeros((1, 2, 3), np.float32), xyz2)
    np.testing.assert_array_equal(dist.numpy(), [[[1, 4, np.inf]] * 2])
    np.testing.assert_array_equal(idx.numpy(), [[[170, 140, 0]] * 2])
