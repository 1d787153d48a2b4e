"""Every layer of jsnet_tf.layers keeps the shared contract (tests/layers/layer_test_case.py), the
point-op layers under both op implementations: config and Keras serialization round trips (same
outputs with the weights copied), the documented weights and output shapes, symbolic and eager
calls, a training call.

Small cases: batch 2, at most 32 points, narrow MLPs; the widths the docstrings fix (JISS's and
PCFF's 128) are kept.
"""

import keras
import numpy as np
import pytest

import jsnet_tf.layers
from jsnet_tf import ops
from jsnet_tf.layers import (
    JISS,
    PCFF,
    ConvBlock,
    DepthwiseDecoding,
    FeaturePropagation,
    PointBatchNorm,
    PointConvEncoding,
    SetAbstraction,
    SumPool,
    interpolation_weights,
)
from jsnet_tf.layers.base import PointOpLayer
from jsnet_tf.ops.numpy_reference import grid_points
from tests.layers.layer_test_case import (
    CHECKS,
    Counts,
    LayerCase,
    batch_norm_counts,
    conv_counts,
    stack_counts,
)

BATCH, POINTS, COARSE, MIDDLE, K = 2, 32, 8, 16, 6


def _normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _input(*shape):
    """make_inputs for a layer of one input."""
    return lambda rng: (_normal(rng, *shape),)


def _xyz(rng):
    return grid_points(rng, (BATCH, POINTS, 3))


def _encoder_inputs(rng):
    return _xyz(rng), _normal(rng, BATCH, POINTS, 4)


def _coarse_skip_and_weights(rng, xyz):
    """Coarse features at the first COARSE points, skip features, interpolation weights."""
    return _normal(rng, BATCH, COARSE, 5), _normal(rng, BATCH, POINTS, 3), interpolation_weights(xyz, xyz[:, :COARSE])


def _propagation_inputs(rng):
    return _coarse_skip_and_weights(rng, _xyz(rng))


def _decoding_inputs(rng):
    xyz = _xyz(rng)
    return xyz, *_coarse_skip_and_weights(rng, xyz), ops.knn_point(K, xyz, xyz)[1]


def _fusion_inputs(rng):
    """The docstring's widths: F0 and F1 128, F2 256."""
    xyz = _xyz(rng)
    f0, f1, f2 = _normal(rng, BATCH, POINTS, 128), _normal(rng, BATCH, MIDDLE, 128), _normal(rng, BATCH, COARSE, 256)
    return f0, f1, f2, interpolation_weights(xyz, xyz[:, :MIDDLE]), interpolation_weights(xyz, xyz[:, :COARSE])


def _jiss_inputs(rng):
    return _normal(rng, BATCH, MIDDLE, 128), _normal(rng, BATCH, MIDDLE, 128)


def _sum_pool_counts(channels):
    """A bias per channel and the one-mean-one-variance batch norm."""
    return Counts(channels, 0, 1, 0) + batch_norm_counts(channels, scalar_moments=True)


CASES = [
    LayerCase("batch_norm", PointBatchNorm, {}, _input(2, 5, 3, 4), (2, 5, 3, 4), batch_norm_counts(4)),
    LayerCase(
        "batch_norm_scalar",
        PointBatchNorm,
        {"scalar_moments": True, "epsilon": 1e-2, "decay": 0.5},
        _input(2, 6, 4),
        (2, 6, 4),
        batch_norm_counts(4, scalar_moments=True),
    ),
    LayerCase("conv2d", ConvBlock, {"units": 6}, _input(2, 5, 3, 4), (2, 5, 3, 6), conv_counts(4, 6)),
    LayerCase(
        "conv1d_sigmoid",
        ConvBlock,
        {"units": 3, "layout": "conv1d", "batch_norm": False, "activation": "sigmoid"},
        _input(2, 7, 5),
        (2, 7, 3),
        conv_counts(5, 3, batch_norm=False),
    ),
    LayerCase(
        "conv_rows",  # PointConv's after_conv: a [1, 4] kernel over (..., 4, 8) -> (..., 6)
        ConvBlock,
        {"units": 6, "rows": 4},
        _input(2, 5, 4, 8),
        (2, 5, 6),
        conv_counts(4 * 8, 6),
    ),
    LayerCase("sum_pool", SumPool, {}, _input(2, 5, 3, 4), (2, 5, 4), _sum_pool_counts(4)),
    LayerCase(
        "set_abstraction",
        SetAbstraction,
        {"npoint": COARSE, "radius": 0.4, "nsample": K, "mlp": [8, 6]},
        _encoder_inputs,
        ((BATCH, COARSE, 3), (BATCH, COARSE, 6)),
        stack_counts(3 + 4, [8, 6]),
    ),
    LayerCase(
        "pointconv_encoding",
        PointConvEncoding,
        {"npoint": COARSE, "radius": 0.4, "sigma": 0.1, "k": K, "mlp": [8, 8, 6]},
        _encoder_inputs,
        ((BATCH, COARSE, 3), (BATCH, COARSE, 6)),
        stack_counts(3 + 4, [8, 8])  # grouped xyz + features through all widths but the last
        + conv_counts(3, 32)  # weight net
        + conv_counts(1, 16)  # density net
        + conv_counts(16, 1, batch_norm=False)
        + conv_counts(8 * 32, 6),  # after_conv: [1, C] kernel over (C, 32)
    ),
    LayerCase(
        "feature_propagation",
        FeaturePropagation,
        {"mlp": [8, 6]},
        _propagation_inputs,
        (BATCH, POINTS, 6),
        stack_counts(5 + 3, [8, 6]),
    ),
    LayerCase(
        "depthwise_decoding",
        DepthwiseDecoding,
        {"mlp": [8, 6]},
        _decoding_inputs,
        (BATCH, POINTS, 6),
        conv_counts(3, 32)  # weight net hidden
        + conv_counts(32, 3 + 5, batch_norm=False)  # one weight per grouped channel
        + _sum_pool_counts(3 + 5)
        + stack_counts(3 + 5 + 3, [8, 6]),
    ),
    LayerCase("pcff", PCFF, {}, _fusion_inputs, (BATCH, POINTS, 128), conv_counts(128 + 128, 128)),
    LayerCase("pcff_unfused", PCFF, {"fuse": False}, _fusion_inputs, (BATCH, POINTS, 128), conv_counts(128, 128)),
    LayerCase(
        "jiss",
        JISS,
        {"num_classes": 4, "embedding_dim": 3, "dropout": 0.3},
        _jiss_inputs,
        ((BATCH, MIDDLE, 4), (BATCH, MIDDLE, 3)),
        conv_counts(128, 128)  # sem_cache on F_SS
        + conv_counts(256, 128)  # ins_cache on F_ISSR
        + conv_counts(256, 128)  # ins_fc2
        + conv_counts(128, 3, batch_norm=False)
        + conv_counts(256, 128)  # sem_fc2
        + conv_counts(128, 4, batch_norm=False),
    ),
    LayerCase(
        "jiss_no_fusion",
        JISS,
        {"num_classes": 4, "embedding_dim": 3, "instance_fusion": False, "semantic_fusion": False},
        _jiss_inputs,
        ((BATCH, MIDDLE, 4), (BATCH, MIDDLE, 3)),
        conv_counts(128, 128)  # ins_fc2
        + conv_counts(128, 3, batch_norm=False)
        + conv_counts(128, 128)  # sem_fc2
        + conv_counts(128, 4, batch_norm=False),
    ),
]


def test_every_layer_has_a_case():
    """A layer added to jsnet_tf.layers without a case here fails this test."""
    exported = [getattr(jsnet_tf.layers, name) for name in jsnet_tf.layers.__all__]
    layer_classes = {obj for obj in exported if isinstance(obj, type) and issubclass(obj, keras.layers.Layer)}
    assert layer_classes == {case.cls for case in CASES}


def _implementations(case):
    """Both op implementations for the layers that call the ops (PointOpLayer), the default one
    for the others: the choice cannot reach them."""
    return ops.IMPLEMENTATIONS if issubclass(case.cls, PointOpLayer) else ("custom",)


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
@pytest.mark.parametrize(
    "impl,case",
    [pytest.param(name, case, id=f"{name}-{case.id}") for case in CASES for name in _implementations(case)],
    indirect=["impl"],
)
def test_layer_contract(impl, rng, case, check):
    check(case, rng)
