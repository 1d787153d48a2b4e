import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.layers import BatchNormDecay, ConvBlock, PointBatchNorm
from jsnet_tf.layers.arithmetic import ARITHMETICS, use_arithmetic
from jsnet_tf.ops import numpy_reference as ref
from tests.layers.numpy_layers import randomise_weights

EPS = 1e-3


def _normalise(x, mean, var, gamma, beta):
    return gamma * (x - mean) / np.sqrt(var + EPS) + beta


@pytest.mark.parametrize("scalar", [False, True])
def test_training_mode_normalises_with_biased_batch_moments_and_updates_moving_stats(rng, scalar):
    x = rng.standard_normal((4, 5, 3, 7)).astype(np.float32) * 3 + 1
    layer = PointBatchNorm(scalar_moments=scalar, decay=0.8)
    layer.build(x.shape)
    gamma, beta = rng.random(7).astype(np.float32) + 0.5, rng.standard_normal(7).astype(np.float32)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    out = layer(x, training=True).numpy()
    axes = (0, 1, 2, 3) if scalar else (0, 1, 2)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=axes), x64.var(axis=axes)  # numpy var: biased
    np.testing.assert_allclose(out, _normalise(x64, mean, var, gamma, beta), rtol=1e-4, atol=1e-4)
    assert layer.moving_mean.shape == (() if scalar else (7,))
    # moving statistics start at 0: m = 0 - (1 - 0.8) * (0 - batch)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.2 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.2 * var, rtol=1e-5, atol=1e-6)


def test_eval_mode_uses_moving_statistics(rng):
    x = rng.standard_normal((2, 6, 4)).astype(np.float32)
    layer = PointBatchNorm()
    layer.build(x.shape)
    mean, var = rng.standard_normal(4).astype(np.float32), rng.random(4).astype(np.float32)
    layer.moving_mean.assign(mean)
    layer.moving_variance.assign(var)
    np.testing.assert_allclose(layer(x).numpy(), _normalise(x, mean, var, 1.0, 0.0), rtol=1e-5, atol=1e-5)


def test_shared_decay_drives_the_update(rng):
    x = rng.standard_normal((8, 3)).astype(np.float32)
    layer = PointBatchNorm(decay=0.9)
    decay = BatchNormDecay(0.5)
    layer.attach_decay(decay)
    layer(x, training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.5 * x.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
    decay.assign(0.99)
    before = layer.moving_mean.numpy()
    layer(x, training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy(), before - 0.01 * (before - x.mean(0)), rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    layer = PointBatchNorm(scalar_moments=True, epsilon=1e-4, decay=0.7, name="bn")
    clone = PointBatchNorm.from_config(layer.get_config())
    assert (clone.scalar_moments, clone.epsilon, clone.decay, clone.name) == (True, 1e-4, 0.7, "bn")


# Training mode in float32, fast arithmetic (one op: ops.batch_norm_training, with the ConvBlock's
# ReLU fused) against plain (TensorFlow's fused kernel, then tf.nn.relu). Both compute the same
# batch norm in float32: each output is within a few float32 roundings of the exact value, times
# log2(rows) for the float32 sums of TensorFlow's kernel (about 1e-6 of the outputs' scale here),
# and the gradients, sums over rows, within as much of the sums of their terms' sizes; 1e-5 of the
# largest value leaves a factor of 10. beta puts each ReLU threshold far from every output
# (relu_safe_beta), so both take the same mask.
FLOAT32 = 1e-5


def _fast_and_plain(layer, x, call):
    """{arithmetic: (outputs, gradients w.r.t. x and the trainable weights, moving statistics)}."""
    start = [w.numpy() for w in layer.weights]
    x = tf.constant(x)
    cotangent = None
    results = {}
    for name in ARITHMETICS:
        for weight, value in zip(layer.weights, start):
            weight.assign(value)
        with use_arithmetic(name), tf.GradientTape() as tape:
            tape.watch(x)
            y = call(x)
            if cotangent is None:
                cotangent = tf.constant(np.random.default_rng(0).standard_normal(y.shape).astype(np.float32))
            functional = tf.reduce_sum(y * cotangent)
        grads = tape.gradient(functional, [x, *layer.trainable_weights])
        results[name] = [y.numpy(), *[g.numpy() for g in grads], *[w.numpy() for w in layer.non_trainable_weights]]
    return results


def _assert_close_in_float32(results, scale_of=None):
    """Each value within FLOAT32 of its largest magnitude, or of value scale_of[i]'s."""
    scale_of = scale_of or {}
    for i, (fast, plain) in enumerate(zip(results["fast"], results["plain"])):
        scale = max(float(np.abs(results["plain"][scale_of.get(i, i)]).max()), 1e-30)
        assert np.abs(fast - plain).max() <= FLOAT32 * scale, f"value {i}: fast and plain differ"


@pytest.mark.parametrize("relu", [False, True], ids=["no_relu", "relu"])
def test_training_in_float32_fast_equals_plain(impl, rng, relu):
    x = (rng.standard_normal((4, 60, 3, 7)) * 3 + 1).astype(np.float32)
    layer = PointBatchNorm(decay=0.8)
    layer.build(x.shape)
    gamma = (rng.random(7) + 0.5).astype(np.float32)
    layer.gamma.assign(gamma)
    layer.beta.assign(ref.relu_safe_beta(x, gamma))
    _assert_close_in_float32(_fast_and_plain(layer, x, lambda t: layer(t, training=True, relu=relu)))


@pytest.mark.parametrize("activation", ["relu", "sigmoid", None])
def test_conv_block_training_in_float32_fast_equals_plain(impl, rng, activation):
    x = rng.standard_normal((2, 300, 9)).astype(np.float32)
    block = ConvBlock(12, activation=activation)
    block.build(x.shape)
    randomise_weights(block, rng)
    # the convolution's outputs, which the batch norm normalises
    pre = x.reshape(-1, 9).astype(np.float64) @ block.kernel.numpy().reshape(9, 12) + block.bias.numpy()
    block.bn.beta.assign(ref.relu_safe_beta(pre, block.bn.gamma.numpy()))
    block.bn.moving_mean.assign(np.zeros(12, np.float32))
    block.bn.moving_variance.assign(np.zeros(12, np.float32))
    # values: outputs, gradients w.r.t. x, then the trainable weights, then the moving statistics; the
    # bias's gradient is 0 in real arithmetic (the batch norm subtracts the mean): on the kernel's scale
    position = {id(w): 2 + i for i, w in enumerate(block.trainable_weights)}
    bias, kernel = position[id(block.bias)], position[id(block.kernel)]
    _assert_close_in_float32(_fast_and_plain(block, x, lambda t: block(t, training=True)), {bias: kernel})


@pytest.mark.parametrize("arithmetic", ARITHMETICS)
def test_the_fast_training_step_runs_one_batch_norm_op_with_the_relu(arithmetic, rng):
    """The fast arithmetic's op (the compiled one here) takes the ReLU; the plain one keeps
    TensorFlow's fused kernel and a separate ReLU."""
    ops.library.load()
    block = ConvBlock(8)
    x = tf.constant(rng.standard_normal((2, 40, 5)).astype(np.float32))
    block.build(x.shape)

    @tf.function
    def step(t):
        with tf.GradientTape() as tape:
            y = block(t, training=True)
        return tape.gradient(y, block.trainable_weights)

    with ops.use_implementation("custom"), use_arithmetic(arithmetic):
        graph = step.get_concrete_function(x).graph
    kinds = {op.type for op in graph.get_operations()}
    fused = {"FusedBatchNormV3", "FusedBatchNormGradV3", "Relu", "ReluGrad"}
    ours = {"JsnetBatchNormTraining", "JsnetBatchNormTrainingGrad"}
    assert (ours <= kinds, kinds & fused) == ((True, set()) if arithmetic == "fast" else (False, fused))
