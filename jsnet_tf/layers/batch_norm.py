"""The original JSNet batch norm, reproduced exactly so converted weights give the original outputs.

Differences from `keras.layers.BatchNormalization` (facts of the TF1 graph):
  * moving mean and variance start at 0 (not 1) and update on every training-mode call as
    m -= (1 - decay) * (m - batch_statistic), with the biased batch variance;
  * epsilon 1e-3; decay 0.9 unless a schedule drives it (the paper's BN-decay, 0.5 at step 0);
  * `scalar_moments=True`: ONE mean and variance over every axis, channels included, with scalar
    moving statistics and per-channel gamma/beta (the decoders' sum-pool norm).

Under tf.distribute with several replicas the batch moments are those of the global batch (summed
over the replicas), so training on k devices follows the same trajectory as on one.

Training mode, per-channel moments, float32 and one replica: with the fast arithmetic
(`jsnet_tf.layers.arithmetic`) one op, `ops.batch_norm_training`, takes the moments, normalises
and applies a ReLU the caller asks for (`relu=True`), forward and backward; with the plain
arithmetic TensorFlow's fused batch-norm kernel does, then a separate ReLU.

Because the moving statistics start at 0, a network that never ran in training mode divides by
sqrt(1e-3) at every batch norm in inference and overflows: train (or load trained weights) first.
"""

import keras
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.layers import arithmetic
from jsnet_tf.layers.base import PointOpLayer


class BatchNormDecay:
    """A decay shared by many batch norms, set each training step by the schedule.

    Held outside Keras' weight tracking on purpose: it is training state of the loop, not a weight
    of the network (the inventory equals the original checkpoint's).
    """

    def __init__(self, value=0.9):
        self.variable = tf.Variable(float(value), trainable=False, dtype=tf.float32, name="bn_decay")

    def assign(self, value):
        self.variable.assign(value)


@keras.saving.register_keras_serializable(package="jsnet_tf")
class PointBatchNorm(PointOpLayer):
    """Batch norm over all axes but the last (or all axes): (..., C) -> (..., C).

    A PointOpLayer: in training mode, with the fast arithmetic, per-channel moments, float32 and
    one replica, it calls `ops.batch_norm_training`.

    Args:
      scalar_moments: one mean/variance over all axes, scalar moving statistics.
      epsilon: added to the variance.
      decay: moving-average decay when no shared `BatchNormDecay` is attached.
    """

    def __init__(self, scalar_moments=False, epsilon=1e-3, decay=0.9, **kwargs):
        super().__init__(**kwargs)
        self.scalar_moments = scalar_moments
        self.epsilon = epsilon
        self.decay = decay
        self.decay_source = None

    def build(self, input_shape):
        channels = input_shape[-1]
        stat_shape = () if self.scalar_moments else (channels,)
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.moving_mean = self.add_weight(
            shape=stat_shape, initializer="zeros", trainable=False, aggregation="mean", name="moving_mean"
        )
        self.moving_variance = self.add_weight(
            shape=stat_shape, initializer="zeros", trainable=False, aggregation="mean", name="moving_variance"
        )

    def attach_decay(self, source):
        """Makes this layer follow a shared, schedule-driven `BatchNormDecay`."""
        self.decay_source = source

    def _current_decay(self):
        return self.decay_source.variable if self.decay_source is not None else self.decay

    def call(self, inputs, training=False, relu=False):
        """The batch norm of `inputs`, followed by a ReLU when `relu` (fused into the batch norm's op
        where it can be: see the module docstring)."""
        if not training:
            outputs = tf.nn.batch_normalization(
                inputs, self.moving_mean, self.moving_variance, self.beta, self.gamma, self.epsilon
            )
            return tf.nn.relu(outputs) if relu else outputs
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            mean, variance = self._synchronised_moments(inputs, replica)
            outputs = tf.nn.batch_normalization(inputs, mean, variance, self.beta, self.gamma, self.epsilon)
        elif self.scalar_moments or inputs.dtype != tf.float32:  # the fused kernels take float32 only
            mean, variance = tf.nn.moments(inputs, self._moment_axes(inputs))
            outputs = tf.nn.batch_normalization(inputs, mean, variance, self.beta, self.gamma, self.epsilon)
        else:
            outputs, mean, variance = self._per_channel_training(inputs, relu)
            relu = False  # applied
        keep = 1.0 - tf.cast(self._current_decay(), self.moving_mean.dtype)
        self.moving_mean.assign(self.moving_mean - keep * (self.moving_mean - mean))
        self.moving_variance.assign(self.moving_variance - keep * (self.moving_variance - variance))
        return tf.nn.relu(outputs) if relu else outputs

    def _moment_axes(self, inputs):
        rank = len(inputs.shape)
        return list(range(rank if self.scalar_moments else rank - 1))

    def _synchronised_moments(self, inputs, replica):
        """Mean and biased variance of the global batch, summed over all replicas (as on one
        device, so the loss does not depend on how the batch is split)."""
        axes = self._moment_axes(inputs)
        count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(inputs), axes)), inputs.dtype)
        total, count = replica.all_reduce(tf.distribute.ReduceOp.SUM, [tf.reduce_sum(inputs, axes), count])
        mean = total / count
        squares = replica.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(tf.square(inputs - mean), axes))
        return mean, squares / count

    def _per_channel_training(self, inputs, relu):
        """Per-channel float32 training-mode batch norm, then the ReLU when `relu`: one op with the
        fast arithmetic, TensorFlow's fused kernel and a ReLU with the plain one. Returns the
        outputs, the batch mean and the biased batch variance."""
        if arithmetic.fast():
            return ops.batch_norm_training(inputs, self.gamma, self.beta, self.epsilon, relu)
        outputs, mean, variance = self._fused_training(inputs)
        return (tf.nn.relu(outputs) if relu else outputs), mean, variance

    def _fused_training(self, inputs):
        """Per-channel training-mode batch norm in TensorFlow's fused kernel (a few times faster
        forward and backward than separate moment and normalisation ops, same result).
        Returns the outputs, the batch mean and the biased batch variance."""
        channels = inputs.shape[-1]
        flat = tf.reshape(inputs, [1, 1, -1, channels])
        outputs, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
            flat, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
        )
        count = tf.cast(tf.shape(flat)[2], tf.float32)
        # The kernel reports the variance with Bessel's correction; the original uses the biased one.
        variance = tf.where(count > 1.0, unbiased * ((count - 1.0) / tf.maximum(count, 1.0)), 0.0)
        return tf.reshape(outputs, tf.shape(inputs)), mean, variance

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scalar_moments": self.scalar_moments, "epsilon": self.epsilon, "decay": self.decay}
