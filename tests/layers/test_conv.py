import numpy as np
import pytest

from jsnet_tf.layers import ConvBlock

EPS = 1e-3


def _eval_bn(y, layer):
    bn = layer.bn
    return bn.gamma.numpy() * (y - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + EPS) + bn.beta.numpy()


def _randomise(layer, rng):
    for w in layer.weights:
        value = rng.standard_normal(w.shape).astype(np.float32)
        w.assign(np.abs(value) if "variance" in w.path else value)


@pytest.mark.parametrize("layout,kernel_shape", [("conv2d", (1, 1, 6, 5)), ("conv1d", (1, 6, 5))])
def test_one_by_one_convolution_with_bias_bn_relu(rng, layout, kernel_shape):
    x = rng.standard_normal((2, 7, 3, 6) if layout == "conv2d" else (2, 7, 6)).astype(np.float32)
    layer = ConvBlock(5, layout=layout)
    layer(x)
    assert tuple(layer.kernel.shape) == kernel_shape
    _randomise(layer, rng)
    y = x.astype(np.float64) @ layer.kernel.numpy().reshape(6, 5) + layer.bias.numpy()
    np.testing.assert_allclose(layer(x).numpy(), np.maximum(_eval_bn(y, layer), 0), rtol=1e-4, atol=1e-4)


def test_pointconv_kernel_spans_all_rows(rng):
    """after_conv: a [1, C] kernel over a (B, M, C, 32) map = a dense map of C*32 values, C-major."""
    x = rng.standard_normal((2, 4, 6, 32)).astype(np.float32)
    layer = ConvBlock(3, rows=6, batch_norm=False, activation=None)
    out = layer(x).numpy()
    assert tuple(layer.kernel.shape) == (1, 6, 32, 3) and out.shape == (2, 4, 3)
    want = np.einsum("bmcj,cju->bmu", x.astype(np.float64), layer.kernel.numpy()[0]) + layer.bias.numpy()
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_sigmoid_and_no_activation(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    plain = ConvBlock(2, batch_norm=False, activation=None)
    squashed = ConvBlock(2, batch_norm=False, activation="sigmoid")
    y = plain(x).numpy()
    squashed(x)
    squashed.set_weights(plain.get_weights())
    np.testing.assert_allclose(squashed(x).numpy(), 1 / (1 + np.exp(-y)), rtol=1e-5)


def test_config_round_trip_and_bad_arguments():
    layer = ConvBlock(7, rows=4, batch_norm=False, activation="sigmoid", name="after_conv")
    clone = ConvBlock.from_config(layer.get_config())
    assert (clone.units, clone.rows, clone.batch_norm, clone.activation) == (7, 4, False, "sigmoid")
    with pytest.raises(ValueError, match="unknown activation"):
        ConvBlock(3, activation="tanh")
    with pytest.raises(ValueError, match="unknown kernel layout"):
        ConvBlock(3, layout="conv3d")
