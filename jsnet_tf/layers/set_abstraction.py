"""PointNet++ set abstraction (JSNet layer 1)."""

import keras
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.layers.base import PointOpLayer
from jsnet_tf.layers.conv import apply_stack, build_stack, conv_stack
from jsnet_tf.layers.grouping import grouped_conv


@keras.saving.register_keras_serializable(package="jsnet_tf")
class SetAbstraction(PointOpLayer):
    """FPS to `npoint` centres, ball query (first `nsample` within `radius`), grouped xyz relative
    to the centre concatenated before the grouped features, 1x1 conv stack, max over the group.

    Call: xyz (B, N, 3), features (B, N, C) -> new_xyz (B, npoint, 3), new_features (B, npoint, mlp[-1]).
    """

    def __init__(self, npoint, radius, nsample, mlp, **kwargs):
        super().__init__(**kwargs)
        self.npoint, self.radius, self.nsample, self.mlp = npoint, radius, nsample, list(mlp)
        self.convs = conv_stack(self.mlp, "conv")

    def build(self, xyz_shape, features_shape):
        build_stack(self.convs, (None, self.npoint, self.nsample, 3 + features_shape[-1]))

    def call(self, xyz, features, training=False):
        new_xyz = ops.gather_point(xyz, ops.farthest_point_sample(self.npoint, xyz))
        idx, _ = ops.query_ball_point(self.radius, self.nsample, xyz, new_xyz)
        x = grouped_conv(self.convs[0], xyz, features, new_xyz, idx, training)
        x = apply_stack(self.convs[1:], x, training)
        return new_xyz, tf.reduce_max(x, axis=2)

    def get_config(self):
        return {
            **super().get_config(),
            "npoint": self.npoint,
            "radius": self.radius,
            "nsample": self.nsample,
            "mlp": self.mlp,
        }
