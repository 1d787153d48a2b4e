"""Point cloud feature fusion (PCFF, paper Sec. 3.2)."""

import keras
import tensorflow as tf

from jsnet_tf.layers import arithmetic
from jsnet_tf.layers.base import PointOpLayer
from jsnet_tf.layers.conv import ConvBlock, dense
from jsnet_tf.layers.feature_propagation import interpolate


@keras.saving.register_keras_serializable(package="jsnet_tf")
class PCFF(PointOpLayer):
    """Fuses a decoder's last three levels at full resolution, then a 1x1 conv (`fc1`, 128).

    out = concat(F0, up(F1)) + up(F2), channel-wise add (128 + 128 = 256 = F2's width), where up()
    is 3-NN interpolation onto the N input points. With `fuse=False` (ablation) only F0 goes
    through the conv.

    Call: f0 (B, N, 128), f1 (B, N1, 128), f2 (B, N2, 256), weights N <- N1, weights N <- N2
    -> (B, N, 128).
    """

    def __init__(self, units=128, fuse=True, **kwargs):
        super().__init__(**kwargs)
        self.units, self.fuse = units, fuse
        self.fc1 = ConvBlock(units, layout="conv1d", name="fc1")

    def build(self, f0_shape, f1_shape=None, f2_shape=None, weights_1_shape=None, weights_2_shape=None):
        channels = f0_shape[-1] + f1_shape[-1] if self.fuse else f0_shape[-1]
        self.fc1.build((None, None, channels))

    def call(self, f0, f1, f2, weights_1, weights_2, training=False):
        if not self.fuse:
            return self.fc1(f0, training=training)
        if not arithmetic.fast():
            x = tf.concat([f0, interpolate(f1, weights_1)], axis=-1) + interpolate(f2, weights_2)
            return self.fc1(x, training=training)
        # W (concat(f0, up(f1)) + up(f2)) = W_0 f0 + up(W_1 f1) + up(W f2): f1 and f2 are mapped at
        # their own (coarser) points and only 128 channels are interpolated.
        kernel, bias = self.fc1.affine(training)
        split = f0.shape[-1]
        x = dense(f0, kernel[:split]) + interpolate(dense(f1, kernel[split:]), weights_1)
        x = x + interpolate(dense(f2, kernel), weights_2) + bias
        return self.fc1.finish(x, training)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "fuse": self.fuse}
