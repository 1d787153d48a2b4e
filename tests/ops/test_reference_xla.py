"""The pure-TF twins compile under XLA (jit_compile=True) and give the same results there."""

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.ops import numpy_reference as ref


@pytest.fixture(autouse=True)
def twins():
    with ops.use_implementation("reference"):
        yield


@pytest.fixture
def cloud(rng):
    return ref.grid_points(rng, (2, 300, 3), cells=16), ref.grid_points(rng, (2, 70, 3), cells=16)


@pytest.mark.parametrize("jit", [False, True], ids=["tf.function", "jit_compile"])
def test_search_ops(cloud, jit, rng):
    xyz, new_xyz = cloud
    radius = ref.grid_radius(rng, cells=16, max_sq_cells=40)

    @tf.function(jit_compile=jit)
    def run(a, b):
        return (
            ops.farthest_point_sample(40, a),
            *ops.query_ball_point(radius, 24, a, b),
            *ops.knn_point(16, a, b),
            *ops.three_nn(b, a),
        )

    fps, ball_idx, ball_cnt, knn_d, knn_i, nn_d, nn_i = [t.numpy() for t in run(xyz, new_xyz)]
    np.testing.assert_array_equal(fps, ref.farthest_point_sample(40, xyz))
    want_idx, want_cnt = ref.query_ball_point(radius, 24, xyz, new_xyz)
    np.testing.assert_array_equal(ball_idx, want_idx)
    np.testing.assert_array_equal(ball_cnt, want_cnt)
    for (d, i), k in (((knn_d, knn_i), 16), ((nn_d, nn_i), 3)):
        want_d, want_i = ref.k_nearest(k, xyz, new_xyz)
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_array_equal(d, want_d)


@pytest.mark.parametrize("jit", [False, True], ids=["tf.function", "jit_compile"])
def test_gather_ops_and_gradients(jit, rng):
    points = tf.constant(rng.standard_normal((2, 50, 6)).astype(np.float32))
    group_idx = rng.integers(0, 50, (2, 10, 8)).astype(np.int32)
    interp_idx = rng.integers(0, 50, (2, 30, 3)).astype(np.int32)
    weight = rng.random((2, 30, 3)).astype(np.float32)

    @tf.function(jit_compile=jit)
    def run(p):
        with tf.GradientTape() as tape:
            tape.watch(p)
            grouped = ops.group_point(p, group_idx)
            interpolated = ops.three_interpolate(p, interp_idx, weight)
            gathered = ops.gather_point(p[..., :3], group_idx[:, :, 0])
            total = tf.reduce_sum(grouped) + tf.reduce_sum(interpolated) + tf.reduce_sum(gathered)
        return grouped, interpolated, gathered, tape.gradient(total, p)

    grouped, interpolated, gathered, grad = [t.numpy() for t in run(points)]
    p = points.numpy()
    np.testing.assert_array_equal(grouped, ref.group_point(p, group_idx))
    np.testing.assert_allclose(interpolated, ref.three_interpolate(p, interp_idx, weight), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(gathered, ref.gather_point(p[..., :3], group_idx[:, :, 0]))
    want = ref.scatter_add(np.ones((2, 10, 8, 6)), group_idx, 50)
    for s in range(3):
        want += ref.scatter_add(np.repeat(weight[:, :, s : s + 1], 6, axis=2), interp_idx[:, :, s], 50)
    want[..., :3] += ref.scatter_add(np.ones((2, 10, 3)), group_idx[:, :, 0], 50)
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True], ids=["tf.function", "jit_compile"])
def test_gather_weight_net_sum_and_gradients(jit, rng):
    points = rng.standard_normal((2, 50, 6)).astype(np.float32)
    idx = rng.integers(0, 50, (2, 10, 8)).astype(np.int32)
    hidden = rng.standard_normal((2, 10, 8, 5)).astype(np.float32)
    kernel, bias = rng.standard_normal((5, 6)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    upstream = rng.standard_normal((2, 10, 6)).astype(np.float32)

    @tf.function(jit_compile=jit)
    def run(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            out = ops.gather_weight_net_sum(args[0], idx, *args[1:])
        return out, *tape.gradient(out, args, output_gradients=upstream)

    got = [t.numpy() for t in run(*[tf.constant(a) for a in (points, hidden, kernel, bias)])]
    want = [ref.gather_weight_net_sum(points, idx, hidden, kernel, bias)]
    want += ref.gather_weight_net_sum_grads(upstream, points, idx, hidden, kernel, bias)
    for g, w in zip(got, want):  # absolute: float32 sums of up to 160 terms, on the scale of the largest
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max())


@pytest.mark.parametrize("jit", [False, True], ids=["tf.function", "jit_compile"])
def test_batch_norm_training_and_gradients(jit, rng):
    x = (rng.standard_normal((2, 40, 8, 6)) * 2 + 1).astype(np.float32)
    gamma = (rng.random(6) + 0.5).astype(np.float32)
    beta = ref.relu_safe_beta(x, gamma)
    upstream = rng.standard_normal(x.shape).astype(np.float32)

    @tf.function(jit_compile=jit)
    def run(x, gamma, beta):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            y, mean, variance = ops.batch_norm_training(x, gamma, beta, 1e-3, True)
        return y, mean, variance, *tape.gradient(y, [x, gamma, beta], output_gradients=upstream)

    got = [t.numpy() for t in run(*(tf.constant(a) for a in (x, gamma, beta)))]
    want = [*ref.batch_norm_training(x, gamma, beta, 1e-3, True), *ref.batch_norm_training_grad(upstream, x, gamma, beta, 1e-3, True)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())
