"""PointConv encoding (JSNet layers 2-4) with its kernel density estimate."""

import math

import keras
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.layers import arithmetic
from jsnet_tf.layers.base import PointOpLayer
from jsnet_tf.layers.conv import ConvBlock, apply_stack, build_stack, conv_stack
from jsnet_tf.layers.grouping import grouped_conv, relative_xyz

DENSITY_SLOTS = 128
PI = 3.1415926  # the original's constant


def kernel_density(xyz, radius, sigma, slots=DENSITY_SLOTS):
    """Gaussian kernel density of every point over its ball, as the original computes it.

    xyz (B, N, 3) -> (B, N, 1). Covariance sigma * I (per-axis std sqrt(sigma)); the ball holds up
    to `slots` neighbours (the point itself included); padding copies of the first hit are
    subtracted and the sum is divided by the number of neighbours found.
    """
    idx, count = ops.query_ball_point(radius, slots, xyz, xyz)
    offsets = ops.group_point(xyz, idx) - xyz[:, :, None, :]
    std = math.sqrt(sigma)
    quadratic = tf.reduce_sum(tf.square(offsets / std), axis=-1)
    log_normaliser = math.log(std) * 3 + 3 * math.log(2 * PI) / 2
    pdf = tf.exp(-0.5 * quadratic - log_normaliser)  # (B, N, slots)
    count = tf.cast(count, pdf.dtype)[..., None]
    total = tf.reduce_sum(pdf, axis=-1, keepdims=True) - pdf[..., :1] * (slots - count)
    return total / count


@keras.saving.register_keras_serializable(package="jsnet_tf")
class PointConvEncoding(PointOpLayer):
    """FPS to `npoint` centres, kNN grouping, PointConv with inverse-density scaling.

    Grouped xyz relative to the centre, concatenated before the grouped features, go through all
    MLP widths but the last (1x1 conv + BN + ReLU); a weight net (32) on the grouped xyz; the
    inverse density at the neighbours, divided by its max over K, through a density net
    (16, then 1 with sigmoid); then per centre (C x K) @ (K x 32) and a [1, C] convolution to
    mlp[-1] + BN + ReLU.

    Call: xyz (B, N, 3), features (B, N, C) -> new_xyz (B, npoint, 3), (B, npoint, mlp[-1]).
    """

    def __init__(self, npoint, radius, sigma, k, mlp, **kwargs):
        super().__init__(**kwargs)
        self.npoint, self.radius, self.sigma, self.k, self.mlp = npoint, radius, sigma, k, list(mlp)
        self.convs = conv_stack(self.mlp[:-1], "conv")
        self.weight_net = conv_stack([32], "weight_net_wconv")
        self.density_net = [
            ConvBlock(16, name="density_net_nonlinear0"),
            ConvBlock(1, batch_norm=False, activation="sigmoid", name="density_net_nonlinear1"),
        ]
        self.after_conv = ConvBlock(self.mlp[-1], rows=self.mlp[-2], name="after_conv")

    def build(self, xyz_shape, features_shape):
        grouped = (None, self.npoint, self.k)
        channels = build_stack(self.convs, (*grouped, 3 + features_shape[-1]))[-1]
        build_stack(self.weight_net, (*grouped, 3))
        build_stack(self.density_net, (*grouped, 1))
        self.after_conv.build((None, self.npoint, channels, 32))

    def call(self, xyz, features, training=False):
        if xyz.shape[1] == self.npoint:
            new_xyz = xyz
        else:
            new_xyz = ops.gather_point(xyz, ops.farthest_point_sample(self.npoint, xyz))
        _, idx = ops.knn_point(self.k, xyz, new_xyz)
        grouped_xyz = relative_xyz(xyz, new_xyz, idx)

        inverse_density = ops.group_point(1.0 / kernel_density(xyz, self.radius, self.sigma), idx)
        density_scale = inverse_density / tf.reduce_max(inverse_density, axis=2, keepdims=True)

        grouped = grouped_conv(self.convs[0], xyz, features, new_xyz, idx, training, grouped_xyz)
        grouped = apply_stack(self.convs[1:], grouped, training)  # (B, M, K, C)
        weights = apply_stack(self.weight_net, grouped_xyz, training)  # (B, M, K, 32)
        density_scale = apply_stack(self.density_net, density_scale, training)  # (B, M, K, 1)
        if arithmetic.fast():  # (g d)^T w = g^T (d w): scales 32 channels instead of C
            x = tf.matmul(grouped, weights * density_scale, transpose_a=True)
        else:
            x = tf.matmul(grouped * density_scale, weights, transpose_a=True)  # (B, M, C, 32)
        return new_xyz, self.after_conv(x, training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "npoint": self.npoint,
            "radius": self.radius,
            "sigma": self.sigma,
            "k": self.k,
            "mlp": self.mlp,
        }
