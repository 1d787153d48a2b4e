"""Depthwise PointConv decoding (JSNet decoder levels 1-3)."""

import keras
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.layers import arithmetic
from jsnet_tf.layers.base import PointOpLayer
from jsnet_tf.layers.batch_norm import PointBatchNorm
from jsnet_tf.layers.conv import ConvBlock, apply_stack, build_stack, conv_stack, dense
from jsnet_tf.layers.feature_propagation import interpolate


@keras.saving.register_keras_serializable(package="jsnet_tf")
class SumPool(keras.layers.Layer):
    """Sum over the neighbour axis + bias + scalar-moment batch norm + ReLU (the original's
    `fp_sumpool`): (B, N, K, C) -> (B, N, C)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = PointBatchNorm(scalar_moments=True, name="bn")

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="biases")
        self.bn.build((*input_shape[:2], input_shape[-1]))

    def call(self, inputs, training=False):
        return self.finish(tf.reduce_sum(inputs, axis=2), training)

    def finish(self, sums, training):
        """Bias, batch norm and ReLU of the neighbour sums (B, N, C); in inference with the fast
        arithmetic as one scale and shift: (x + b - mean) s + beta, s = gamma / sqrt(variance + eps)."""
        if training or not arithmetic.fast():
            return tf.nn.relu(self.bn(sums + self.bias, training=training))
        bn = self.bn
        scale = bn.gamma * tf.math.rsqrt(bn.moving_variance + bn.epsilon)
        return tf.nn.relu(sums * scale + ((self.bias - bn.moving_mean) * scale + bn.beta))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:2], input_shape[-1])


@keras.saving.register_keras_serializable(package="jsnet_tf")
class DepthwiseDecoding(PointOpLayer):
    """Coarse features interpolated onto the fine points (3-NN), grouped over each fine point's
    kNN among the fine points, weighted channel-wise by a weight net (32 + BN + ReLU, then 3+C
    without BN or activation) on the grouped xyz, sum-pooled, concatenated before the skip
    features, then a 1x1 conv stack. The original's radius/sigma arguments are unused there.

    Call: (xyz (B, N, 3), coarse (B, M, C), skip (B, N, C1), interpolation weights for N <- M,
    neighbours (B, N, K) kNN indices of xyz in itself) -> (B, N, mlp[-1]).
    """

    def __init__(self, mlp, **kwargs):
        super().__init__(**kwargs)
        self.mlp = list(mlp)
        self.hidden = ConvBlock(32, name="decode_weight_net_wconv0")
        self.sumpool = SumPool(name="fp_sumpool")
        self.convs = conv_stack(self.mlp, "conv_")

    def build(self, xyz_shape, coarse_shape, skip_shape, weights_shape, neighbours_shape):
        channels = 3 + coarse_shape[-1]  # one weight per grouped channel: relative xyz + features
        self.channel_weights = ConvBlock(channels, batch_norm=False, activation=None, name="decode_weight_net_wconv1")
        grouped = (None, None, None)
        build_stack([self.hidden, self.channel_weights], (*grouped, 3))
        self.sumpool.build((*grouped, channels))
        build_stack(self.convs, (None, None, channels + skip_shape[-1]))

    def call(self, xyz, coarse, skip, weights, neighbours, training=False):
        interpolated = interpolate(coarse, weights)
        grouped_xyz = ops.group_point(xyz, neighbours) - xyz[:, :, None, :]
        hidden = self.hidden(grouped_xyz, training=training)
        if not arithmetic.fast():
            grouped = tf.concat([grouped_xyz, ops.group_point(interpolated, neighbours)], axis=-1)
            channel_weights = self.channel_weights(hidden, training=training)
            pooled = self.sumpool(grouped * channel_weights, training=training)
            return apply_stack(self.convs, tf.concat([pooled, skip], axis=-1), training)
        # The xyz and feature channels weighted and summed apart (no (B, N, K, 3 + C) concatenation);
        # the feature channels' weights made, the features gathered, weighted and summed in one op
        # (no (B, N, K, C) channel weights or grouped features, in training neither); the first
        # conv's weights split over the pooled and the skip features. The relative xyz stay out of
        # the op: through it they would come out as sum_s x_j w - c sum_s w, a difference of large
        # terms that loses float32 digits where neighbours are close.
        kernel, bias = self.channel_weights.affine(training)
        xyz_sums = tf.reduce_sum(grouped_xyz * dense(hidden, kernel[:, :3], bias[:3]), axis=2)
        feature_sums = ops.gather_weight_net_sum(interpolated, neighbours, hidden, kernel[:, 3:], bias[3:])
        pooled = self.sumpool.finish(tf.concat([xyz_sums, feature_sums], axis=-1), training)
        x = self.convs[0].call_parts([pooled, skip], training)
        return apply_stack(self.convs[1:], x, training)

    def get_config(self):
        return {**super().get_config(), "mlp": self.mlp}
