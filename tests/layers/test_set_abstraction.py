"""SetAbstraction against a float64 brute force: FPS from index 0, ball query (first `nsample` in
index order, short balls padded with the first hit), grouped xyz minus the centre before the
grouped features, 1x1 conv + BN + ReLU stack, max over the group."""

import numpy as np
import pytest

from jsnet_tf.layers import SetAbstraction
from jsnet_tf.ops import numpy_reference as ref
from tests.layers.numpy_layers import conv_stack, randomise_weights

NPOINT, NSAMPLE = 12, 8
RADIUS = float(np.sqrt(300.5) / 64)  # its square lies halfway between grid distances
CLUSTER = 16


def _points(rng, batch=2, n=64, channels=4):
    """Grid points with a tight cluster at index 0 (FPS's first centre: a full ball) and one point
    far outside the unit cube (the farthest, so the second centre: a ball of one)."""
    xyz = ref.grid_points(rng, (batch, n, 3))
    xyz[:, :CLUSTER] = ref.grid_points(rng, (batch, CLUSTER, 3), cells=4) / 16  # 4 grid cells wide
    xyz[:, -1] = 2.0
    return xyz, rng.standard_normal((batch, n, channels)).astype(np.float32)


def _brute_force(layer, xyz, features, training):
    """new_xyz, pooled features, ball counts and the first conv's pre-BN activations."""
    centres = ref.gather_point(xyz, ref.farthest_point_sample(NPOINT, xyz))
    idx, count = ref.query_ball_point(RADIUS, NSAMPLE, xyz, centres)
    grouped = np.concatenate([ref.group_point(xyz, idx) - centres[:, :, None, :], ref.group_point(features, idx)], -1)
    first = layer.convs[0]
    pre_bn = grouped @ first.kernel.numpy().astype(np.float64).reshape(grouped.shape[-1], -1) + first.bias.numpy()
    hidden = conv_stack(layer.convs, grouped, training)
    return centres, hidden.max(axis=2), count, pre_bn


@pytest.mark.parametrize("training", [False, True], ids=["eval", "training"])
def test_matches_float64_brute_force(impl, rng, training):
    xyz, features = _points(rng)
    layer = SetAbstraction(NPOINT, RADIUS, NSAMPLE, [8, 6])
    layer(xyz, features)
    randomise_weights(layer, rng)
    bn = layer.convs[0].bn
    moving_before = bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()
    new_xyz, pooled = layer(xyz, features, training=training)
    want_xyz, want_pooled, count, pre_bn = _brute_force(layer, xyz, features, training)
    assert count.max() == NSAMPLE and count.min() == 1  # full balls and padded ones both checked
    np.testing.assert_array_equal(new_xyz.numpy(), want_xyz)
    np.testing.assert_allclose(pooled.numpy(), want_pooled, rtol=1e-4, atol=1e-4)
    if training:  # moving statistics follow the batch moments, padding copies included
        batch_moments = pre_bn.mean(axis=(0, 1, 2)), pre_bn.var(axis=(0, 1, 2))
        for moving, old, batch in zip((bn.moving_mean, bn.moving_variance), moving_before, batch_moments):
            np.testing.assert_allclose(moving.numpy(), old - 0.1 * (old - batch), rtol=1e-4, atol=1e-5)

