"""FeaturePropagation and its 3-NN interpolation against float64 NumPy: weights 1/d^2 over the 3
nearest coarse points (d^2 floored at 1e-10), normalised; interpolated features before the skip
features; 1x1 conv + BN + ReLU stack."""

import numpy as np
import pytest

from jsnet_tf.layers import FeaturePropagation, interpolate, interpolation_weights
from jsnet_tf.ops import numpy_reference as ref
from tests.layers import numpy_layers
from tests.layers.numpy_layers import conv_stack, randomise_weights, upsample


def _levels(rng, batch=2, fine=40, coarse=10):
    """Distinct fine grid points and a random subset of them as the coarse level (as FPS gives)."""
    cells = np.stack([rng.choice(64**3, fine, replace=False) for _ in range(batch)])
    xyz = (np.stack(np.unravel_index(cells, (64, 64, 64)), axis=-1) / 64).astype(np.float32)
    subset = np.stack([rng.choice(fine, coarse, replace=False) for _ in range(batch)])
    return xyz, ref.gather_point(xyz, subset).astype(np.float32), subset


def test_interpolation_weights_match_brute_force(impl, rng):
    xyz, coarse_xyz, _ = _levels(rng)
    idx, weight = interpolation_weights(xyz, coarse_xyz)
    want_idx, want_weight = numpy_layers.interpolation_weights(xyz, coarse_xyz)
    np.testing.assert_array_equal(idx.numpy(), want_idx)
    np.testing.assert_allclose(weight.numpy(), want_weight, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(weight.numpy().sum(-1), 1.0, rtol=1e-6)


def test_a_fine_point_on_a_coarse_point_takes_its_features(impl, rng):
    """d^2 = 0 is floored at 1e-10: the coincident point weighs 1 (the others, at least one grid
    step away, under 1e-6), finite, no NaN."""
    xyz, coarse_xyz, subset = _levels(rng)
    features = rng.standard_normal((2, 10, 5)).astype(np.float32)
    got = interpolate(features, interpolation_weights(xyz, coarse_xyz)).numpy()
    assert np.all(np.isfinite(got))
    for b in range(2):
        np.testing.assert_allclose(got[b, subset[b]], features[b], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "training"])
def test_matches_float64_reference(impl, rng, training):
    xyz, coarse_xyz, _ = _levels(rng)
    coarse = rng.standard_normal((2, 10, 5)).astype(np.float32)
    skip = rng.standard_normal((2, 40, 3)).astype(np.float32)
    layer = FeaturePropagation([8, 6])
    weights = interpolation_weights(xyz, coarse_xyz)
    layer(coarse, skip, weights)
    randomise_weights(layer, rng)
    got = layer(coarse, skip, weights, training=training).numpy()
    want = conv_stack(layer.convs, np.concatenate([upsample(coarse, xyz, coarse_xyz), skip], -1), training)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
