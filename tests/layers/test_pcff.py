"""PCFF against float64 NumPy: out = conv-BN-ReLU(concat(F0, up(F1)) + up(F2)), up() the 3-NN
interpolation onto the full-resolution points; with fuse=False, conv-BN-ReLU(F0) alone."""

import numpy as np
import pytest

from jsnet_tf.layers import PCFF, interpolation_weights
from jsnet_tf.ops import numpy_reference as ref
from tests.layers.numpy_layers import conv_block, randomise_weights, upsample

BATCH, N0, N1, N2 = 2, 32, 16, 8
C0, C1 = 4, 3  # F2 has C0 + C1 channels, added to concat(F0, up(F1)) channel by channel


def _levels(rng):
    """Points of levels 0, 1, 2 (each a subset of the one before) and their features."""
    xyz0 = ref.grid_points(rng, (BATCH, N0, 3))
    xyz1 = xyz0[:, rng.permutation(N0)[:N1]]
    xyz2 = xyz1[:, rng.permutation(N1)[:N2]]
    features = [rng.standard_normal((BATCH, n, c)).astype(np.float32) for n, c in ((N0, C0), (N1, C1), (N2, C0 + C1))]
    return (xyz0, xyz1, xyz2), features


def _call(layer, xyz, features, training=False):
    xyz0, xyz1, xyz2 = xyz
    return layer(*features, interpolation_weights(xyz0, xyz1), interpolation_weights(xyz0, xyz2), training=training)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "training"])
def test_fused_levels_match_float64_reference(impl, rng, training):
    xyz, (f0, f1, f2) = _levels(rng)
    layer = PCFF(units=5)
    _call(layer, xyz, (f0, f1, f2))
    randomise_weights(layer, rng)
    got = _call(layer, xyz, (f0, f1, f2), training).numpy()
    fused = np.concatenate([f0, upsample(f1, xyz[0], xyz[1])], -1) + upsample(f2, xyz[0], xyz[2])
    np.testing.assert_allclose(got, conv_block(layer.fc1, fused, training), rtol=1e-4, atol=1e-4)


def test_unfused_uses_level_zero_only(impl, rng):
    xyz, (f0, f1, f2) = _levels(rng)
    layer = PCFF(units=5, fuse=False)
    _call(layer, xyz, (f0, f1, f2))
    randomise_weights(layer, rng)
    got = _call(layer, xyz, (f0, f1, f2)).numpy()
    np.testing.assert_allclose(got, conv_block(layer.fc1, f0.astype(np.float64)), rtol=1e-4, atol=1e-4)
    other = _call(layer, xyz, (f0, -f1, 2 * f2)).numpy()
    np.testing.assert_array_equal(other, got)


def test_unfused_builds_on_first_call_without_level_two_weights(rng):
    xyz, (f0, f1, f2) = _levels(rng)
    layer = PCFF(units=5, fuse=False)
    out = layer(f0, f1, f2, interpolation_weights(xyz[0], xyz[1]), None)
    assert out.shape == (BATCH, N0, 5)
