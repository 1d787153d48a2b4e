"""Keras 3 layers of JSNet, one paper component per module."""

from jsnet_tf.layers.batch_norm import BatchNormDecay, PointBatchNorm
from jsnet_tf.layers.conv import ConvBlock
from jsnet_tf.layers.depthwise_decoding import DepthwiseDecoding, SumPool
from jsnet_tf.layers.feature_propagation import FeaturePropagation, interpolate, interpolation_weights
from jsnet_tf.layers.jiss import JISS
from jsnet_tf.layers.pcff import PCFF
from jsnet_tf.layers.pointconv_encoding import PointConvEncoding, kernel_density
from jsnet_tf.layers.set_abstraction import SetAbstraction

__all__ = [
    "JISS",
    "PCFF",
    "BatchNormDecay",
    "ConvBlock",
    "DepthwiseDecoding",
    "FeaturePropagation",
    "PointBatchNorm",
    "PointConvEncoding",
    "SetAbstraction",
    "SumPool",
    "interpolate",
    "interpolation_weights",
    "kernel_density",
]
