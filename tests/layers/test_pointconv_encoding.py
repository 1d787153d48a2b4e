import numpy as np
import pytest

from jsnet_tf import ops
from jsnet_tf.layers import PointConvEncoding, kernel_density


def _density_brute_force(xyz, radius, sigma, slots=128):
    """Mean over the first `slots` neighbours in the ball (the point itself included) of the
    Gaussian N(offset; 0, sigma * I), in float64."""
    out = np.zeros(xyz.shape[:2])
    r2 = float(np.float32(radius) * np.float32(radius))
    for b, pts in enumerate(xyz.astype(np.float64)):
        for i, p in enumerate(pts):
            d2 = ((pts - p) ** 2).sum(-1)
            hits = np.flatnonzero(d2 < r2)[:slots]
            pdf = np.exp(-0.5 * d2[hits] / sigma) / ((2 * 3.1415926 * sigma) ** 1.5)
            out[b, i] = pdf.mean()
    return out[..., None]


@pytest.mark.parametrize("radius,sigma,n", [(0.2, 0.1, 300), (0.8, 0.4, 64), (0.05, 0.01, 200)])
def test_kernel_density_matches_brute_force(impl, rng, radius, sigma, n):
    xyz = rng.random((2, n, 3), dtype=np.float32)
    got = kernel_density(xyz, radius, sigma).numpy()
    np.testing.assert_allclose(got, _density_brute_force(xyz, radius, sigma), rtol=1e-4)


def test_density_caps_the_ball_at_128_neighbours(impl, rng):
    xyz = (rng.random((1, 400, 3)) * 0.05).astype(np.float32)  # every point within every ball
    got = kernel_density(xyz, 0.5, 0.1).numpy()
    np.testing.assert_allclose(got, _density_brute_force(xyz, 0.5, 0.1), rtol=1e-4)


def test_encoding_shapes_and_weights(impl, rng):
    layer = PointConvEncoding(npoint=32, radius=0.4, sigma=0.2, k=16, mlp=[16, 16, 24])
    xyz = rng.random((2, 100, 3), dtype=np.float32)
    new_xyz, features = layer(xyz, rng.standard_normal((2, 100, 8)).astype(np.float32))
    assert new_xyz.shape == (2, 32, 3) and features.shape == (2, 32, 24)
    shapes = {w.path.split("/", 1)[1]: tuple(w.shape) for w in layer.trainable_weights}
    assert shapes["conv0/weights"] == (1, 1, 3 + 8, 16)
    assert shapes["weight_net_wconv0/weights"] == (1, 1, 3, 32)
    assert shapes["density_net_nonlinear1/weights"] == (1, 1, 16, 1)
    assert shapes["after_conv/weights"] == (1, 16, 32, 24)
    np.testing.assert_array_equal(new_xyz.numpy(), ops.gather_point(xyz, ops.farthest_point_sample(32, xyz)).numpy())
