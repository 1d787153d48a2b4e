"""The fast arithmetic (jsnet_tf.layers.arithmetic: the first map of a grouped MLP before the gather,
split weights for concatenations, interpolation after the map, PointConv's density on the weights,
batch norms folded in inference) equals the plain composition in float64, for every rewritten layer
and the whole network: outputs, gradients of a fixed linear functional of the outputs with respect
to the inputs and every weight, and the moving statistics that training-mode batch norms leave.

Float64 throughout: the layers under keras' float64 dtype policy and exact float64 stand-ins for the four
point ops that move values (gather_point, group_point: selections; three_interpolate and
gather_weight_net_sum: weighted sums; tests/ops checks each op against its float64 brute force); the
neighbour searches, which give indices only, stay the library's. Equal to 1e-9 relative,
far below float32's 1e-7, so a rewrite that is not exact in real arithmetic cannot pass.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.layers import (
    JISS,
    PCFF,
    ConvBlock,
    DepthwiseDecoding,
    FeaturePropagation,
    PointConvEncoding,
    SetAbstraction,
    interpolation_weights,
)
from jsnet_tf.layers.arithmetic import ARITHMETICS, arithmetic, use_arithmetic
from jsnet_tf.model import DECODER, ENCODER, JSNet
from jsnet_tf.ops import numpy_reference as ref
from tests.layers.numpy_layers import randomise_weights

TOLERANCE = 1e-9


def _gather(points, idx):
    return tf.gather(points, idx, batch_dims=1)


def _three_interpolate(points, idx, weight):
    return tf.einsum("bnk,bnkc->bnc", tf.cast(weight, points.dtype), _gather(points, idx))


def _gather_weight_net_sum(points, idx, hidden, kernel, bias):
    return tf.reduce_sum(_gather(points, idx) * (tf.tensordot(hidden, kernel, 1) + bias), axis=2)


@pytest.fixture
def float64(monkeypatch):
    """Layers in float64 (keras dtype policy) and float64 stand-ins for the value-moving point ops."""
    monkeypatch.setattr(ops, "gather_point", _gather)
    monkeypatch.setattr(ops, "group_point", _gather)
    monkeypatch.setattr(ops, "three_interpolate", _three_interpolate)
    monkeypatch.setattr(ops, "gather_weight_net_sum", _gather_weight_net_sum)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _both(layer, inputs, training, rng):
    """{arithmetic: (outputs, gradients, moving statistics after the call)} from the same weights."""
    start = [w.numpy() for w in layer.weights]
    inputs = tf.nest.map_structure(tf.convert_to_tensor, list(inputs))
    floats = [x for x in tf.nest.flatten(inputs) if x.dtype == tf.float64]
    cotangents = None
    results = {}
    for name in ARITHMETICS:
        for weight, value in zip(layer.weights, start):
            weight.assign(value)
        with use_arithmetic(name), tf.GradientTape() as tape:
            tape.watch(floats)
            outputs = tf.nest.flatten(layer(*inputs, training=training))
            if cotangents is None:
                cotangents = [tf.constant(rng.standard_normal(o.shape)) for o in outputs]
            functional = tf.add_n([tf.reduce_sum(o * c) for o, c in zip(outputs, cotangents)])
        grads = tape.gradient(functional, [*floats, *layer.trainable_weights])
        moving = [w.numpy() for w in layer.non_trainable_weights]
        grads = [np.zeros(1) if g is None else tf.convert_to_tensor(g).numpy() for g in grads]
        results[name] = ([o.numpy() for o in outputs], grads, moving)
    return results


def _assert_same(results):
    for kind, fast, plain in zip(("outputs", "gradients", "moving statistics"), results["fast"], results["plain"]):
        assert len(fast) == len(plain)
        for i, (a, b) in enumerate(zip(fast, plain)):
            scale = max(float(np.max(np.abs(b))), 1.0)
            assert np.max(np.abs(a - b)) <= TOLERANCE * scale, f"{kind} {i}: fast and plain differ"


def _check(layer, inputs, training, rng):
    layer(*tf.nest.map_structure(tf.convert_to_tensor, list(inputs)))
    assert all(weight.dtype == "float64" for weight in layer.weights)
    randomise_weights(layer, rng)
    _assert_same(_both(layer, inputs, training, rng))


def _cloud(rng, batch, points, channels):
    xyz = ref.grid_points(rng, (batch, points, 3)).astype(np.float64)
    return xyz, rng.standard_normal((batch, points, channels))


TRAINING = pytest.mark.parametrize("training", [False, True], ids=["eval", "training"])


@TRAINING
@pytest.mark.parametrize("rows", [1, 4])
def test_conv_block(float64, rng, training, rows):
    shape = (2, 5, rows, 3) if rows > 1 else (2, 5, 7, 3)
    _check(ConvBlock(6, rows=rows), [rng.standard_normal(shape)], training, rng)


@TRAINING
def test_set_abstraction(float64, rng, training):
    xyz, features = _cloud(rng, 2, 48, 5)
    _check(SetAbstraction(12, 0.4, 6, [8, 6]), [xyz, features], training, rng)


@TRAINING
def test_pointconv_encoding(float64, rng, training):
    xyz, features = _cloud(rng, 2, 48, 5)
    _check(PointConvEncoding(12, 0.4, 0.05, 6, [8, 7, 6]), [xyz, features], training, rng)


@TRAINING
@pytest.mark.parametrize("points", [32, 30, 3])  # 3: fewer points than the 6 neighbours asked (K = 3)
def test_depthwise_decoding(float64, rng, training, points):
    xyz, skip = _cloud(rng, 2, points, 3)
    coarse_xyz = xyz[:, rng.permutation(points)[: min(8, points)]]
    coarse = rng.standard_normal((2, coarse_xyz.shape[1], 5))
    weights = interpolation_weights(xyz, coarse_xyz)
    neighbours = ops.knn_point(min(6, points), xyz, xyz)[1]
    _check(DepthwiseDecoding([8, 6]), [xyz, coarse, skip, weights, neighbours], training, rng)


@TRAINING
def test_feature_propagation(float64, rng, training):
    xyz, skip = _cloud(rng, 2, 32, 3)
    coarse_xyz = xyz[:, rng.permutation(32)[:8]]
    inputs = [rng.standard_normal((2, 8, 5)), skip, interpolation_weights(xyz, coarse_xyz)]
    _check(FeaturePropagation([8, 6]), inputs, training, rng)


@TRAINING
def test_pcff(float64, rng, training):
    xyz, f0 = _cloud(rng, 2, 32, 4)
    order = rng.permutation(32)
    xyz1, xyz2 = xyz[:, order[:16]], xyz[:, order[:8]]
    f1, f2 = rng.standard_normal((2, 16, 4)), rng.standard_normal((2, 8, 8))
    inputs = [f0, f1, f2, interpolation_weights(xyz, xyz1), interpolation_weights(xyz, xyz2)]
    _check(PCFF(units=6), inputs, training, rng)


@TRAINING
@pytest.mark.parametrize("instance_fusion", [True, False], ids=["instance_fusion", "no_instance_fusion"])
@pytest.mark.parametrize("semantic_fusion", [True, False], ids=["semantic_fusion", "no_semantic_fusion"])
def test_jiss(float64, rng, training, instance_fusion, semantic_fusion):
    layer = JISS(4, 3, dropout=0.0, instance_fusion=instance_fusion, semantic_fusion=semantic_fusion)
    _check(layer, [rng.standard_normal((2, 24, 128)), rng.standard_normal((2, 24, 128))], training, rng)


@pytest.mark.slow
@TRAINING
def test_whole_network(float64, rng, training):
    encoder = [{**spec, "npoint": npoint, "k": 8} for spec, npoint in zip(ENCODER, (64, 32, 16, 8))]
    decoder = [{**spec, "k": 8} if "k" in spec else spec for spec in DECODER]
    model = JSNet(encoder=encoder, decoder=decoder, dropout=0.0)
    points = np.concatenate(_cloud(rng, 2, 128, 6), axis=-1)
    _check(model, [points], training, rng)


def test_the_default_is_fast_and_blocks_nest():
    assert arithmetic() == "fast"
    with use_arithmetic("plain"):
        assert arithmetic() == "plain"
        with use_arithmetic("fast"):
            assert arithmetic() == "fast"
        assert arithmetic() == "plain"
    with pytest.raises(ValueError, match="unknown arithmetic 'exact'"):
        with use_arithmetic("exact"):
            pass


def test_the_environment_variable_switches_programs_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv("JSNET_ARITHMETIC", "plain")
    assert arithmetic() == "plain"
    with use_arithmetic("fast"):
        assert arithmetic() == "fast"
    monkeypatch.setenv("JSNET_ARITHMETIC", "exact")
    with pytest.raises(ValueError, match="^JSNET_ARITHMETIC: unknown arithmetic 'exact'; choose one of fast, plain$"):
        arithmetic()
