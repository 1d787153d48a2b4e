import numpy as np
import pytest

from jsnet_tf.layers import BatchNormDecay, PointBatchNorm

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
