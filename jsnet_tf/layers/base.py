"""Base class of the layers that call the ops of `jsnet_tf.ops`."""

import keras

from jsnet_tf import ops


class PointOpLayer(keras.layers.Layer):
    """A layer calling `jsnet_tf.ops`: XLA-compatible only with the pure-TF twins.

    Keras 3 compiles with XLA when every layer `supports_jit`; the compiled ops have no XLA
    kernel, so the answer follows the op implementation in force when Keras asks.
    """

    @property
    def supports_jit(self):
        return ops.implementation() == "reference"

    @supports_jit.setter
    def supports_jit(self, value):
        """Ignored: decided by the op implementation (Keras sets a default at construction)."""
