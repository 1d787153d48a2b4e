"""Convolution + bias + batch norm + activation blocks in the original's kernel layouts.

Every JSNet convolution is a 1x1 convolution (a dense map of the last axis), except PointConv's
`after_conv`, whose [1, C] kernel spans C rows of a (..., C, 32) map: a dense map of the C * 32
values flattened C-major. Kernels keep the TF1 layouts ([1, 1, Cin, Cout] for conv2d,
[1, Cin, Cout] for conv1d, [1, C, Cin, Cout] for after_conv) so checkpoints map one to one, and
Xavier (Glorot uniform) initialisation sees the same fans. Every convolution has a bias, also the
ones followed by batch norm (it matters in eval mode).
"""

import keras
import tensorflow as tf

from jsnet_tf.layers import arithmetic
from jsnet_tf.layers.batch_norm import PointBatchNorm

ACTIVATIONS = {"relu": tf.nn.relu, "sigmoid": tf.sigmoid, None: None}


@keras.saving.register_keras_serializable(package="jsnet_tf")
class ConvBlock(keras.layers.Layer):
    """(..., Cin) -> (..., units), or (..., rows, Cin) -> (..., units) when `rows` > 1.

    Args:
      units: output channels.
      rows: input rows the kernel spans (the [1, C] PointConv kernel); 1 for 1x1 convolutions.
      layout: "conv2d" ([1, rows, Cin, Cout] kernel) or "conv1d" ([1, Cin, Cout]).
      batch_norm: apply the original batch norm after the bias.
      activation: "relu", "sigmoid" or None.
    """

    def __init__(self, units, rows=1, layout="conv2d", batch_norm=True, activation="relu", **kwargs):
        super().__init__(**kwargs)
        if layout not in ("conv1d", "conv2d") or (layout == "conv1d" and rows != 1):
            raise ValueError(f"{self.name}: unknown kernel layout {layout!r} for rows={rows}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"{self.name}: unknown activation {activation!r}")
        self.units, self.rows, self.layout = units, rows, layout
        self.batch_norm, self.activation = batch_norm, activation
        self.bn = PointBatchNorm(name="bn") if batch_norm else None

    def build(self, input_shape):
        in_channels = input_shape[-1]
        shape = (1, in_channels, self.units) if self.layout == "conv1d" else (1, self.rows, in_channels, self.units)
        self.kernel = self.add_weight(shape=shape, initializer="glorot_uniform", name="weights")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="biases")
        if self.bn is not None:
            self.bn.build((*input_shape[:-1 - (self.rows > 1)], self.units))

    def call(self, inputs, training=False):
        x = inputs
        if self.rows > 1:  # (..., rows, Cin) -> (..., rows * Cin), row-major like the kernel
            x = tf.reshape(x, tf.concat([tf.shape(x)[:-2], [self.rows * x.shape[-1]]], 0))
        shape = tf.concat([tf.shape(x)[:-1], [self.units]], 0)
        kernel, bias = self.affine(training)
        flat = tf.reshape(x, (-1, kernel.shape[0]))
        if not arithmetic.fast():
            outputs = tf.reshape(tf.matmul(flat, kernel) + bias, shape)
            return self.finish(outputs, training)
        # On the flat (points, channels) matrix, so that grappler fuses MatMul + BiasAdd (+ ReLU
        # when the batch norm is folded) into one oneDNN call.
        return tf.reshape(self.finish(tf.nn.bias_add(tf.matmul(flat, kernel), bias), training), shape)

    def folds_batch_norm(self, training):
        """Whether `affine` holds the batch norm (inference with the fast arithmetic)."""
        return self.bn is not None and not training and arithmetic.fast()

    def affine(self, training):
        """(kernel (rows * Cin, units), bias (units,)) of the convolution; in inference with the fast
        arithmetic the batch norm folded in: (x W + b - mean) * s + beta = x (W s) + (b - mean) s + beta
        with s = gamma / sqrt(variance + epsilon)."""
        kernel, bias = tf.reshape(self.kernel, (-1, self.units)), self.bias
        if self.folds_batch_norm(training):
            bn = self.bn
            scale = bn.gamma * tf.math.rsqrt(bn.moving_variance + bn.epsilon)
            kernel, bias = kernel * scale, (bias - bn.moving_mean) * scale + bn.beta
        return kernel, bias

    def finish(self, outputs, training):
        """Batch norm (unless `affine` folded it) and activation of the convolution's outputs; with
        the fast arithmetic a ReLU goes into the batch norm, whose training-mode op applies it."""
        activation = self.activation
        if self.bn is not None and not self.folds_batch_norm(training):
            fuse_relu = activation == "relu" and arithmetic.fast()
            outputs = self.bn(outputs, training=training, relu=fuse_relu)
            activation = None if fuse_relu else activation
        activation = ACTIVATIONS[activation]
        return activation(outputs) if activation is not None else outputs

    def call_parts(self, parts, training, scale=None):
        """This block on concat(parts, axis=-1) * scale without forming either (split weights):
        W [a, b] s + bias = s (W_a a + W_b b) + bias. `scale` (..., 1) is a per-point factor."""
        kernel, bias = self.affine(training)
        kernels = tf.split(kernel, [part.shape[-1] for part in parts], axis=0)
        outputs = tf.add_n([dense(part, k) for part, k in zip(parts, kernels)])
        if scale is not None:
            outputs = outputs * scale
        return self.finish(outputs + bias, training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[: len(input_shape) - 1 - (self.rows > 1)], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "rows": self.rows,
            "layout": self.layout,
            "batch_norm": self.batch_norm,
            "activation": self.activation,
        }


def dense(x, kernel, bias=None):
    """x (..., Cin) @ kernel (Cin, Cout) (+ bias) -> (..., Cout) as one 2-D matmul."""
    outputs = tf.matmul(tf.reshape(x, (-1, kernel.shape[0])), kernel)
    if bias is not None:
        outputs = tf.nn.bias_add(outputs, bias)
    return tf.reshape(outputs, tf.concat([tf.shape(x)[:-1], [kernel.shape[1]]], 0))


def conv_stack(widths, prefix, **kwargs):
    """ConvBlocks named prefix0, prefix1, ... (the original's scope names)."""
    return [ConvBlock(width, name=f"{prefix}{i}", **kwargs) for i, width in enumerate(widths)]


def build_stack(blocks, input_shape):
    """Builds blocks applied one after another to `input_shape`; returns the output shape."""
    shape = tuple(input_shape)
    for block in blocks:
        block.build(shape)
        shape = block.compute_output_shape(shape)
    return shape


def apply_stack(blocks, x, training):
    for block in blocks:
        x = block(x, training=training)
    return x
