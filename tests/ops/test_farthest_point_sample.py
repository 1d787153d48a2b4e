import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.ops import numpy_reference as ref

SIZES = [(1, 1, 1), (1, 5, 5), (2, 37, 10), (3, 130, 130), (2, 1000, 257), (1, 2049, 64)]


@pytest.mark.parametrize("batch,n,npoint", SIZES)
def test_matches_float64_brute_force(impl, rng, batch, n, npoint):
    xyz = ref.grid_points(rng, (batch, n, 3), cells=16)  # coarse grid: many equal distances
    got = ops.farthest_point_sample(npoint, xyz).numpy()
    np.testing.assert_array_equal(got, ref.farthest_point_sample(npoint, xyz))


def _clustered(rng, batch, n):
    """Tight clusters of very different sizes and one far outlier, on a 1/1024 grid shifted to
    negative coordinates: float32 distances stay exact, leaves are small and skewed."""
    centres = rng.random((batch, 6, 3))
    spread = np.array([0.002, 0.01, 0.01, 0.05, 0.05, 0.2])[rng.integers(0, 6, size=(batch, n))]
    pts = centres[np.arange(batch)[:, None], rng.integers(0, 6, size=(batch, n))] + rng.normal(size=(batch, n, 3)) * spread[..., None]
    pts[:, -1] = 1.0
    return (np.round(np.clip(pts, 0, 1) * 1023) / 1024 - 0.5).astype(np.float32)


def _degenerate(rng, batch, n, kind):
    """Clouds whose leaves have empty boxes or whose distances all tie."""
    if kind == "all equal":
        return np.full((batch, n, 3), 0.25, np.float32)
    if kind == "few distinct":  # 16 points repeated in random order
        distinct = ref.grid_points(rng, (batch, 16, 3), cells=1024)
        return np.take_along_axis(distinct, rng.integers(0, 16, size=(batch, n, 1)), axis=1)
    xyz = np.zeros((batch, n, 3), np.float32)  # on a line along y
    xyz[..., 1] = ref.grid_points(rng, (batch, n), cells=1024)
    return xyz


# Large enough for the pruned CPU kernel (leaves of points, skipped when a pick cannot lower them):
# a wrongly skipped leaf or a wrong tie between leaves changes the picks. The pure-TF twin runs
# the same loop at every size, so these run the compiled ops only.
@pytest.mark.parametrize("impl", ["custom"], indirect=True)
@pytest.mark.parametrize("n,npoint", [(4096, 1024), (1500, 1500)])
def test_large_clouds_match_brute_force(impl, rng, n, npoint):
    for xyz in (ref.grid_points(rng, (2, n, 3), cells=64), _clustered(rng, 2, n)):
        np.testing.assert_array_equal(ops.farthest_point_sample(npoint, xyz).numpy(), ref.farthest_point_sample(npoint, xyz))


@pytest.mark.parametrize("impl", ["custom"], indirect=True)
@pytest.mark.parametrize("kind", ["all equal", "few distinct", "line"])
def test_degenerate_large_clouds_match_brute_force(impl, rng, kind):
    xyz = _degenerate(rng, 2, 2053, kind)
    np.testing.assert_array_equal(ops.farthest_point_sample(700, xyz).numpy(), ref.farthest_point_sample(700, xyz))


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
