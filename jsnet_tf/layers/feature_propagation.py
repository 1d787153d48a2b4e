"""3-NN interpolation and PointNet++ feature propagation."""

import keras
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.layers import arithmetic
from jsnet_tf.layers.base import PointOpLayer
from jsnet_tf.layers.conv import apply_stack, build_stack, conv_stack, dense


def interpolation_weights(xyz1, xyz2):
    """Inverse squared-distance weights of the 3 nearest xyz2 points of every xyz1 point.

    xyz1 (B, N, 3), xyz2 (B, M, 3) -> idx (B, N, 3), weight (B, N, 3) summing to 1; squared
    distances are clamped at 1e-10 as in the original.
    """
    dist, idx = ops.three_nn(xyz1, xyz2)
    inverse = 1.0 / tf.maximum(dist, 1e-10)
    return idx, inverse / tf.reduce_sum(inverse, axis=-1, keepdims=True)


def interpolate(points, weights):
    """points (B, M, C) at the coarse points -> (B, N, C) at the fine points of `weights`."""
    idx, weight = weights
    return ops.three_interpolate(points, idx, weight)


@keras.saving.register_keras_serializable(package="jsnet_tf")
class FeaturePropagation(PointOpLayer):
    """PointNet++ FP: interpolate coarse features, concat the skip features, 1x1 conv stack.

    Call: (coarse (B, M, C2), skip (B, N, C1), weights from `interpolation_weights`) -> (B, N, mlp[-1]).
    """

    def __init__(self, mlp, **kwargs):
        super().__init__(**kwargs)
        self.mlp = list(mlp)
        self.convs = conv_stack(self.mlp, "conv_")

    def build(self, coarse_shape, skip_shape, weights_shape):
        build_stack(self.convs, (None, None, coarse_shape[-1] + skip_shape[-1]))

    def call(self, coarse, skip, weights, training=False):
        if not arithmetic.fast():
            x = tf.concat([interpolate(coarse, weights), skip], axis=-1)
            return apply_stack(self.convs, x, training)
        # W [up(a), b] = up(W_a a) + W_b b: the coarse part mapped at the M coarse points.
        first = self.convs[0]
        kernel, bias = first.affine(training)
        split = coarse.shape[-1]
        x = interpolate(dense(coarse, kernel[:split]), weights) + dense(skip, kernel[split:]) + bias
        return apply_stack(self.convs[1:], first.finish(x, training), training)

    def get_config(self):
        return {**super().get_config(), "mlp": self.mlp}
