"""DepthwiseDecoding against float64 NumPy, per the reference page ("Network"): 3-NN interpolation
of the coarse features onto the fine points, kNN of the fine points in themselves, a weight net on
the grouped xyz (32 + BN + ReLU, then one weight per grouped channel, no BN or activation), grouped
(xyz offsets, features) times the weights, summed over K + bias + one-mean-one-variance BN + ReLU,
before the skip features, then the 1x1 conv stack."""

import numpy as np
import pytest

from jsnet_tf import ops
from jsnet_tf.layers import DepthwiseDecoding, interpolation_weights
from jsnet_tf.ops import numpy_reference as ref
from tests.layers.numpy_layers import batch_norm, conv_block, conv_stack, randomise_weights, upsample

BATCH, FINE, COARSE, K = 2, 32, 8, 6


def _brute_force(layer, xyz, coarse_xyz, coarse, skip, training):
    interpolated = upsample(coarse, xyz, coarse_xyz)
    _, neighbours = ref.k_nearest(K, xyz, xyz)
    offsets = ref.group_point(xyz, neighbours) - xyz[:, :, None, :]
    grouped = np.concatenate([offsets, ref.group_point(interpolated, neighbours)], -1)
    hidden = conv_block(layer.hidden, offsets, training)
    channel_weights = conv_block(layer.channel_weights, hidden, training, with_batch_norm=False, activation=None)
    summed = (grouped * channel_weights).sum(axis=2) + layer.sumpool.bias.numpy()
    pooled = np.maximum(batch_norm(layer.sumpool.bn, summed, training, scalar_moments=True), 0.0)
    return conv_stack(layer.convs, np.concatenate([pooled, skip], -1), training)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "training"])
def test_matches_float64_reference(impl, rng, training):
    xyz = ref.grid_points(rng, (BATCH, FINE, 3))
    coarse_xyz = xyz[:, rng.permutation(FINE)[:COARSE]]
    coarse = rng.standard_normal((BATCH, COARSE, 5)).astype(np.float32)
    skip = rng.standard_normal((BATCH, FINE, 3)).astype(np.float32)
    inputs = xyz, coarse, skip, interpolation_weights(xyz, coarse_xyz), ops.knn_point(K, xyz, xyz)[1]
    layer = DepthwiseDecoding([8, 6])
    layer(*inputs)
    randomise_weights(layer, rng)
    got = layer(*inputs, training=training).numpy()
    np.testing.assert_allclose(got, _brute_force(layer, xyz, coarse_xyz, coarse, skip, training), rtol=1e-4, atol=1e-4)
    # one moving mean and variance over all channels (the original's): scalars
    assert layer.sumpool.bn.moving_mean.shape == () and layer.sumpool.bn.moving_variance.shape == ()

