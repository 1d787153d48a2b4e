"""The first convolution of a grouped MLP (set abstraction, PointConv encoding)."""

import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.layers import arithmetic
from jsnet_tf.layers.conv import dense


def relative_xyz(xyz, new_xyz, idx):
    """Neighbour xyz relative to their centre: (B, M, K, 3)."""
    return ops.group_point(xyz, idx) - new_xyz[:, :, None, :]


def grouped_conv(block, xyz, features, new_xyz, idx, training, grouped_xyz=None):
    """`block` on concat([neighbour xyz - centre, neighbour features]) -> (B, M, K, units).

    xyz (B, N, 3), features (B, N, C), new_xyz (B, M, 3) centres, idx (B, M, K) neighbours;
    grouped_xyz: relative_xyz(...) when the caller has it. The fast arithmetic maps the points
    before the gather: W [x_j - c, f_j] + b = (W_x x_j + W_f f_j) - (W_x c - b), a map of N points
    instead of M * K neighbours and no grouped (B, M, K, 3 + C) input.
    """
    if not arithmetic.fast():
        if grouped_xyz is None:
            grouped_xyz = relative_xyz(xyz, new_xyz, idx)
        grouped = tf.concat([grouped_xyz, ops.group_point(features, idx)], axis=-1)
        return block(grouped, training=training)
    kernel, bias = block.affine(training)
    kernel_xyz, kernel_features = kernel[:3], kernel[3:]
    mapped = dense(xyz, kernel_xyz) + dense(features, kernel_features)  # (B, N, units)
    centre = dense(new_xyz, kernel_xyz) - bias  # (B, M, units)
    return block.finish(ops.group_point(mapped, idx) - centre[:, :, None, :], training)
