"""The compiled kernels and the pure-TF twins agree at the network's real sizes, on continuous
data (the same float32 arithmetic: identical indices, distances and features)."""

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops


def _both(fn, *args):
    ops.library.load()
    outputs = []
    for name in ops.IMPLEMENTATIONS:
        with ops.use_implementation(name):
            out = fn(*args)
        outputs.append([o.numpy() for o in (out if isinstance(out, tuple) else (out,))])
    return outputs


@pytest.mark.parametrize("n,npoint", [(4096, 1024), (1024, 256)])
def test_farthest_point_sample(rng, n, npoint):
    xyz = rng.random((2, n, 3), dtype=np.float32)
    custom, reference = _both(ops.farthest_point_sample, npoint, xyz)
    np.testing.assert_array_equal(custom[0], reference[0])


@pytest.mark.parametrize("radius,nsample,n,m", [(0.1, 32, 4096, 1024), (0.2, 128, 1024, 1024), (0.8, 128, 64, 64)])
def test_query_ball_point(rng, radius, nsample, n, m):
    xyz = rng.random((2, n, 3), dtype=np.float32)
    custom, reference = _both(ops.query_ball_point, radius, nsample, xyz, xyz[:, :m])
    for c, r in zip(custom, reference):
        np.testing.assert_array_equal(c, r)


@pytest.mark.parametrize("k,n,m", [(32, 1024, 256), (16, 1024, 1024), (32, 64, 32)])
def test_knn_point(rng, k, n, m):
    xyz = rng.random((2, n, 3), dtype=np.float32)
    custom, reference = _both(ops.knn_point, k, xyz, xyz[:, :m])
    for c, r in zip(custom, reference):
        np.testing.assert_array_equal(c, r)


@pytest.mark.parametrize("n,m", [(4096, 1024), (64, 32)])
def test_three_nn_and_interpolate(rng, n, m):
    xyz = rng.random((2, n, 3), dtype=np.float32)
    features = rng.standard_normal((2, m, 128)).astype(np.float32)
    custom, reference = _both(ops.three_nn, xyz, xyz[:, :m])
    for c, r in zip(custom, reference):
        np.testing.assert_array_equal(c, r)
    weight = 1.0 / np.maximum(custom[0], 1e-10)
    weight /= weight.sum(-1, keepdims=True)
    custom, reference = _both(ops.three_interpolate, features, custom[1], weight)
    np.testing.assert_allclose(custom[0], reference[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ops.IMPLEMENTATIONS)
def test_neighbour_distances_have_no_gradient(rng, name):
    """As in the original, the neighbour searches are not differentiable: the twins stop the
    gradient of their float distances, as the compiled ops declare none."""
    if name == "custom":
        ops.library.load()
    xyz = tf.constant(rng.random((1, 64, 3), dtype=np.float32))
    with ops.use_implementation(name), tf.GradientTape(persistent=True) as tape:
        tape.watch(xyz)
        outputs = {
            "knn dist": ops.knn_point(4, xyz, xyz)[0],
            "three_nn dist": ops.three_nn(xyz, xyz)[0],
        }
    for label, out in outputs.items():
        assert tape.gradient(out, xyz) is None, label
