"""Pure-TensorFlow twins of the point ops, built only from builtin ops.

They have the exact semantics of the compiled kernels (tie-breaking, padding, squared distances
computed as dx*dx + dy*dy + dz*dz), compile under XLA (`jit_compile=True`), and need no op library,
which makes them the reference in tests and the implementation of exported SavedModels.

Arguments arrive converted and statically checked by `jsnet_tf.ops`; what only the data can
reveal is asserted here with `tf.debugging` (a no-op under XLA). Like the compiled ops, the
search ops (sampling, ball query, kNN, three_nn) are not differentiable, three_interpolate is
differentiable with respect to `points` only, gather_weight_net_sum with respect to all but
`idx`, and batch_norm_training with respect to x, gamma and beta through y.
"""

import numpy as np
import tensorflow as tf

from jsnet_tf.ops import checks


def _points(op, name, x, channels=3):
    layout = f"(batch, points, {channels})" if channels else "(batch, points, channels)"
    return checks.ensure_shape(op, name, x, [None, None, channels], layout)


def pairwise_squared_distances(queries, points):
    """(B, M, 3), (B, N, 3) -> (B, M, N) float32 squared distances, same arithmetic as the kernels."""
    q = queries[:, :, None, :]
    p = points[:, None, :, :]
    dx = p[..., 0] - q[..., 0]
    dy = p[..., 1] - q[..., 1]
    dz = p[..., 2] - q[..., 2]
    return dx * dx + dy * dy + dz * dz


def farthest_point_sample(npoint, xyz):
    op = "farthest_point_sample"
    xyz = _points(op, "xyz", xyz)
    assertions = [checks.assert_at_most_points(op, "npoint", npoint, xyz, "xyz"), checks.assert_finite(op, "xyz", xyz)]
    (xyz,) = checks.after(assertions, tf.stop_gradient(xyz))
    batch = tf.shape(xyz)[0]

    def step(i, last, nearest, chosen):
        centre = tf.gather(xyz, last, batch_dims=1)[:, None, :]  # (B, 1, 3)
        dx = xyz[..., 0] - centre[..., 0]
        dy = xyz[..., 1] - centre[..., 1]
        dz = xyz[..., 2] - centre[..., 2]
        nearest = tf.minimum(nearest, dx * dx + dy * dy + dz * dz)
        last = tf.argmax(nearest, axis=1, output_type=tf.int32)  # first index of the maximum
        return i + 1, last, nearest, chosen.write(i, last)

    first = tf.zeros([batch], tf.int32)
    nearest = tf.fill(tf.shape(xyz)[:2], np.float32(np.inf))
    chosen = tf.TensorArray(tf.int32, size=npoint, element_shape=[None]).write(0, first)
    _, _, _, chosen = tf.while_loop(
        lambda i, *_: i < npoint, step, (tf.constant(1), first, nearest, chosen), maximum_iterations=npoint - 1
    )
    return tf.transpose(chosen.stack())


def gather_point(xyz, idx):
    xyz = _points("gather_point", "xyz", xyz)
    idx = checks.ensure_shape("gather_point", "idx", idx, [None, None], "(batch, npoint)")
    assertions = checks.assert_indices_in_range("gather_point", "idx", idx, tf.shape(xyz)[1], "xyz")
    assertions.append(checks.assert_same_batch("gather_point", "xyz", xyz, "idx", idx))
    xyz, idx = checks.after(assertions, xyz, idx)
    return tf.gather(xyz, idx, batch_dims=1)


def query_ball_point(radius, nsample, xyz, new_xyz):
    op = "query_ball_point"
    xyz, new_xyz = _points(op, "xyz", xyz), _points(op, "new_xyz", new_xyz)
    assertions = [
        checks.assert_finite(op, "xyz", xyz),
        checks.assert_finite(op, "new_xyz", new_xyz),
        checks.assert_same_batch(op, "xyz", xyz, "new_xyz", new_xyz),
    ]
    xyz, new_xyz = checks.after(assertions, tf.stop_gradient(xyz), tf.stop_gradient(new_xyz))
    n = tf.shape(xyz)[1]
    radius_sq = np.float32(radius) * np.float32(radius)
    within = pairwise_squared_distances(new_xyz, xyz) < radius_sq  # (B, M, N)
    # Hits keep their index, misses become N; the nsample smallest are the first hits in order.
    order = tf.where(within, tf.range(n)[None, None, :], n)
    static_n = xyz.shape[1]
    k = min(nsample, static_n) if static_n is not None else tf.minimum(nsample, n)
    negated, _ = tf.math.top_k(-order, k=k, sorted=True)
    first = -negated
    if static_n is None or static_n < nsample:
        short = nsample - tf.shape(first)[2]
        first = tf.concat([first, tf.fill(tf.concat([tf.shape(first)[:2], [short]], 0), n)], axis=2)
        first.set_shape([None, None, nsample])
    pts_cnt = tf.minimum(tf.reduce_sum(tf.cast(within, tf.int32), axis=2), nsample)
    pad = tf.where(pts_cnt > 0, first[:, :, 0], 0)[:, :, None]
    return tf.where(first < n, first, pad), pts_cnt


def group_point(points, idx):
    points = _points("group_point", "points", points, channels=None)
    idx = checks.ensure_shape("group_point", "idx", idx, [None, None, None], "(batch, npoint, nsample)")
    assertions = checks.assert_indices_in_range("group_point", "idx", idx, tf.shape(points)[1], "points")
    assertions.append(checks.assert_same_batch("group_point", "points", points, "idx", idx))
    points, idx = checks.after(assertions, points, idx)
    return tf.gather(points, idx, batch_dims=1)


def _nearest(op, k, points, queries, points_name, queries_name, assertions=()):
    """k nearest of `points` for each query; k may exceed N: missing slots get inf and idx 0."""
    points, queries = _points(op, points_name, points), _points(op, queries_name, queries)
    assertions = [
        *assertions,
        checks.assert_finite(op, points_name, points),
        checks.assert_finite(op, queries_name, queries),
        checks.assert_same_batch(op, points_name, points, queries_name, queries),
    ]
    points, queries = checks.after(assertions, tf.stop_gradient(points), tf.stop_gradient(queries))
    d2 = pairwise_squared_distances(queries, points)
    n = tf.shape(points)[1]
    if points.shape[1] is None or points.shape[1] < k:
        # Candidates at index N.. with infinite distance stand in for missing points.
        d2 = tf.concat([d2, tf.fill(tf.concat([tf.shape(d2)[:2], [k]], 0), np.float32(np.inf))], axis=2)
    negated, idx = tf.math.top_k(-d2, k=k, sorted=True)  # equal values: lower index first
    return -negated, tf.where(idx < n, idx, 0)


def knn_point(k, xyz, new_xyz):
    xyz = _points("knn_point", "xyz", xyz)
    k_fits = checks.assert_at_most_points("knn_point", "k", k, xyz, "xyz")
    return _nearest("knn_point", k, xyz, new_xyz, "xyz", "new_xyz", [k_fits])


def three_nn(xyz1, xyz2):
    return _nearest("three_nn", 3, xyz2, xyz1, "xyz2", "xyz1")


def three_interpolate(points, idx, weight):
    op = "three_interpolate"
    points = _points(op, "points", points, channels=None)
    idx, weight = _points(op, "idx", idx), _points(op, "weight", weight)
    assertions = checks.assert_indices_in_range(op, "idx", idx, tf.shape(points)[1], "points")
    assertions.append(checks.assert_same_batch(op, "points", points, "idx", idx))
    assertions.append(
        tf.debugging.assert_equal(tf.shape(idx), tf.shape(weight), message=f"{op}: idx and weight shapes differ")
    )
    points, idx, weight = checks.after(assertions, points, idx, tf.stop_gradient(weight))
    neighbours = tf.gather(points, idx, batch_dims=1)  # (B, N, 3, C)
    w = weight[..., None]
    out = w[:, :, 0] * neighbours[:, :, 0] + w[:, :, 1] * neighbours[:, :, 1] + w[:, :, 2] * neighbours[:, :, 2]
    return out


def gather_weight_net_sum(points, idx, hidden, kernel, bias):
    op = "gather_weight_net_sum"
    points = _points(op, "points", points, channels=None)
    idx = checks.ensure_shape(op, "idx", idx, [None, None, None], "(batch, npoint, nsample)")
    hidden = checks.ensure_shape(op, "hidden", hidden, [None, None, None, None], "(batch, npoint, nsample, units)")
    kernel = checks.ensure_shape(op, "kernel", kernel, [None, None], "(units, channels)")
    bias = checks.ensure_shape(op, "bias", bias, [None], "(channels,)")
    assertions = checks.assert_indices_in_range(op, "idx", idx, tf.shape(points)[1], "points")
    assertions.append(checks.assert_same_batch(op, "points", points, "idx", idx))
    expected = {
        "hidden": (tf.shape(hidden)[:3], tf.shape(idx), "(batch, npoint, nsample, units) of idx"),
        "kernel": (tf.shape(kernel), tf.stack([tf.shape(hidden)[3], tf.shape(points)[2]]), "(units, channels) of hidden and points"),
        "bias": (tf.shape(bias), tf.shape(points)[2:], "(channels,) of points"),
    }
    for name, (shape, want, layout) in expected.items():
        assertions.append(tf.debugging.assert_equal(shape, want, message=f"{op}: {name} must have shape {layout}"))
    points, idx, hidden, kernel, bias = checks.after(assertions, points, idx, hidden, kernel, bias)
    weights = tf.tensordot(hidden, kernel, 1) + bias
    return weighted_neighbour_sum(tf.gather(points, idx, batch_dims=1), weights)


@tf.custom_gradient
def weighted_neighbour_sum(values, weights):
    """sum over the neighbour axis of values * weights: (B, N, K, C) twice -> (B, N, C).

    The gradients broadcast the incoming (B, N, 1, C) gradient inside the two products instead of
    materialising it at (B, N, K, C) first, as the gradient of reduce_sum would.
    """

    scope = tf.get_current_name_scope()

    def gradient(upstream):
        # Under the caller's scope, like the gradients autodiff makes (profiles group ops by it).
        with tf.name_scope(f"gradient_tape/{scope}/weighted_neighbour_sum/" if scope else "weighted_neighbour_sum"):
            upstream = upstream[:, :, None, :]
            return upstream * weights, upstream * values

    return tf.reduce_sum(values * weights, axis=2), gradient


def batch_norm_training(x, gamma, beta, epsilon, relu):
    """The batch norm written out: two-pass moments of the (rows, channels) matrix, normalisation,
    ReLU; autodiff differentiates through the moments. mean and variance leave through
    stop_gradient, as the compiled op's."""
    op = "batch_norm_training"
    layout = "(channels,) of x"
    assertions = [tf.debugging.assert_rank_at_least(x, 1, message=f"{op}: x must have shape (..., channels)")]
    with tf.control_dependencies(assertions):
        channels = tf.shape(x)[-1:]
    for name, v in (("gamma", gamma), ("beta", beta)):
        message = f"{op}: {name} must have shape {layout}"
        assertions.append(tf.debugging.assert_rank(v, 1, message=message))
        assertions.append(tf.debugging.assert_equal(tf.shape(v), channels, message=message))
    x, gamma, beta = checks.after(assertions, x, gamma, beta)
    flat = tf.reshape(x, tf.concat([[-1], tf.shape(x)[-1:]], 0))
    mean = tf.reduce_mean(flat, axis=0)
    centred = flat - mean
    variance = tf.reduce_mean(tf.square(centred), axis=0)
    y = centred * (gamma * tf.math.rsqrt(variance + epsilon)) + beta
    if relu:
        y = tf.nn.relu(y)
    return tf.reshape(y, tf.shape(x)), tf.stop_gradient(mean), tf.stop_gradient(variance)
