"""Float64 NumPy twins of JSNet's building blocks, for the layer behaviour tests.

Written from the reference page (/work/shared/reference/jsnet.md, "Network") and the layers'
docstrings; they read only a layer's weights, never its code paths. Neighbourhoods come from the
brute force in jsnet_tf/ops/numpy_reference.py.
"""

import numpy as np

from jsnet_tf.ops import numpy_reference as ref

EPSILON = 1e-3  # the original batch norm's
DISTANCE_FLOOR = 1e-10  # squared distances below this count as this (3-NN interpolation)


def randomise_weights(layer, rng, scale=0.5):
    """Random values in every weight, positive moving variances: eval-mode outputs of order 1
    that depend on every weight (the initial zero biases and statistics would hide mix-ups)."""
    for weight in layer.weights:
        value = rng.standard_normal(weight.shape) * scale
        if "variance" in weight.path:
            value = np.abs(value) + 0.5
        elif "gamma" in weight.path:
            value = value + 1.0
        weight.assign(value.astype(np.float32))


def batch_norm(bn, x, training, scalar_moments=False):
    """The original batch norm with `bn`'s weights: biased batch moments in training (over every
    axis with `scalar_moments`, else over all but the channels), moving statistics in eval mode."""
    if training:
        axes = tuple(range(x.ndim if scalar_moments else x.ndim - 1))
        mean, variance = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, variance = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    return bn.gamma.numpy() * (x - mean) / np.sqrt(variance + EPSILON) + bn.beta.numpy()


def conv_block(block, x, training=False, with_batch_norm=True, activation="relu"):
    """1x1 convolution + bias with `block`'s weights, then (as the reference page says the block
    should be) batch norm and ReLU, sigmoid or no activation."""
    y = x @ block.kernel.numpy().astype(np.float64).reshape(x.shape[-1], -1) + block.bias.numpy()
    if with_batch_norm:
        y = batch_norm(block.bn, y, training)
    if activation == "relu":
        return np.maximum(y, 0.0)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-y))
    assert activation is None, activation
    return y


def conv_stack(blocks, x, training=False):
    """1x1 conv + BN + ReLU per block, each fed by the previous one."""
    for block in blocks:
        x = conv_block(block, x, training)
    return x


def interpolation_weights(fine_xyz, coarse_xyz):
    """Indices of the 3 nearest coarse points of every fine point and their inverse squared
    distance weights (distances floored at 1e-10), normalised to sum to 1."""
    squared, idx = ref.k_nearest(3, coarse_xyz, fine_xyz)
    inverse = 1.0 / np.maximum(squared, DISTANCE_FLOOR)
    return idx, inverse / inverse.sum(axis=-1, keepdims=True)


def upsample(coarse_features, fine_xyz, coarse_xyz):
    """Coarse features interpolated onto the fine points (3-NN, inverse squared distance)."""
    idx, weight = interpolation_weights(fine_xyz, coarse_xyz)
    return ref.three_interpolate(coarse_features, idx, weight)
