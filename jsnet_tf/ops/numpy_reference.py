"""Float64 NumPy brute force of the point ops: the independent reference of the op tests and of
`jsnet-doctor`'s self-test (so it ships with the package).

Plain loops and sorts over every candidate, written from the documented semantics, sharing no
code with either implementation under test.
"""

import numpy as np


def squared_distances(queries, points):
    """(M, 3), (N, 3) -> (M, N) float64."""
    diff = queries.astype(np.float64)[:, None, :] - points.astype(np.float64)[None, :, :]
    return np.sum(diff * diff, axis=-1)


def farthest_point_sample(npoint, xyz):
    out = np.zeros((xyz.shape[0], npoint), np.int64)
    for b, pts in enumerate(xyz):
        nearest = np.full(len(pts), np.inf)
        last = 0
        for i in range(1, npoint):
            nearest = np.minimum(nearest, squared_distances(pts[last : last + 1], pts)[0])
            last = int(np.argmax(nearest))  # numpy: first index of the maximum
            out[b, i] = last
    return out


def gather_point(xyz, idx):
    return np.stack([xyz[b][idx[b]] for b in range(len(xyz))]).astype(np.float64)


def query_ball_point(radius, nsample, xyz, new_xyz):
    radius_sq = float(np.float32(radius) * np.float32(radius))
    b_size, m = new_xyz.shape[:2]
    idx = np.zeros((b_size, m, nsample), np.int64)
    cnt = np.zeros((b_size, m), np.int64)
    for b in range(b_size):
        d2 = squared_distances(new_xyz[b], xyz[b])
        for q in range(m):
            hits = list(np.flatnonzero(d2[q] < radius_sq)[:nsample])
            cnt[b, q] = len(hits)
            if hits:
                idx[b, q] = hits + [hits[0]] * (nsample - len(hits))
    return idx, cnt


def group_point(points, idx):
    return np.stack([points[b][idx[b]] for b in range(len(points))]).astype(np.float64)


def k_nearest(k, points, queries):
    """Stable sort by distance, so equal distances keep index order; missing slots: inf, 0."""
    b_size, m = queries.shape[:2]
    dist = np.full((b_size, m, k), np.inf)
    idx = np.zeros((b_size, m, k), np.int64)
    for b in range(b_size):
        d2 = squared_distances(queries[b], points[b])
        order = np.argsort(d2, axis=1, kind="stable")[:, :k]
        found = order.shape[1]
        idx[b, :, :found] = order
        dist[b, :, :found] = np.take_along_axis(d2, order, axis=1)
    return dist, idx


def three_interpolate(points, idx, weight):
    out = np.zeros(idx.shape[:2] + points.shape[2:], np.float64)
    for b in range(len(points)):
        for i in range(idx.shape[1]):
            for s in range(3):
                out[b, i] += weight[b, i, s] * points[b, idx[b, i, s]].astype(np.float64)
    return out


def gather_weight_net_sum(points, idx, hidden, kernel, bias):
    weights = hidden.astype(np.float64) @ kernel.astype(np.float64) + bias.astype(np.float64)
    return np.einsum("bmsc,bmsc->bmc", group_point(points, idx), weights)


def gather_weight_net_sum_grads(upstream, points, idx, hidden, kernel, bias):
    """(d points, d hidden, d kernel, d bias) of sum(gather_weight_net_sum(...) * upstream)."""
    up = upstream.astype(np.float64)[:, :, None, :]
    weights = hidden.astype(np.float64) @ kernel.astype(np.float64) + bias.astype(np.float64)
    u = up * group_point(points, idx)  # d out / d weights
    grad_points = scatter_add(up * weights, idx, points.shape[1])
    grad_kernel = np.einsum("bmsh,bmsc->hc", hidden.astype(np.float64), u)
    return grad_points, u @ kernel.astype(np.float64).T, grad_kernel, u.sum(axis=(0, 1, 2))


def batch_norm_training(x, gamma, beta, epsilon, relu):
    """y, mean, variance (biased) in float64 over the rows of x (..., C)."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    mean, variance = flat.mean(axis=0), flat.var(axis=0)
    y = (flat - mean) / np.sqrt(variance + epsilon) * gamma + beta
    if relu:
        y = np.maximum(y, 0.0)
    return y.reshape(x.shape), mean, variance


def batch_norm_training_grad(upstream, x, gamma, beta, epsilon, relu):
    """Gradients of sum(y * upstream) w.r.t. x, gamma and beta in float64 (the moments depend on x)."""
    channels = x.shape[-1]
    flat = x.reshape(-1, channels).astype(np.float64)
    rows = len(flat)
    inv_std = 1.0 / np.sqrt(flat.var(axis=0) + epsilon)
    normalised = (flat - flat.mean(axis=0)) * inv_std
    g = upstream.reshape(-1, channels).astype(np.float64)
    if relu:
        g = np.where(normalised * gamma + beta > 0.0, g, 0.0)
    grad_beta, grad_gamma = g.sum(axis=0), (g * normalised).sum(axis=0)
    grad_x = gamma * inv_std * (g - grad_beta / rows - normalised * grad_gamma / rows)
    return grad_x.reshape(x.shape), grad_gamma, grad_beta


def relu_safe_beta(x, gamma):
    """A beta (C,) that puts each channel's ReLU threshold in the middle of the widest gap between
    consecutive normalised values of x (..., C) in their central half: about half the outputs are
    positive and none is near 0, so float32 and float64 agree on the ReLU's mask."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    normalised = np.sort((flat - flat.mean(axis=0)) / (flat.std(axis=0) + 1e-30), axis=0)
    rows = len(flat)
    if rows == 1:
        return gamma.astype(np.float32)  # every output is beta: positive where gamma is
    low, high = rows // 4, max(rows // 4 + 1, 3 * rows // 4)
    below = low + np.argmax(normalised[low + 1 : high + 1] - normalised[low:high], axis=0)
    columns = np.arange(flat.shape[1])
    threshold = 0.5 * (normalised[below, columns] + normalised[below + 1, columns])
    return (-gamma.astype(np.float64) * threshold).astype(np.float32)


def scatter_add(grad_out, idx, n):
    """Gradient of a gather: grad_out (B, ..., C) summed into (B, n, C) at idx (B, ...)."""
    b_size, c = grad_out.shape[0], grad_out.shape[-1]
    grad = np.zeros((b_size, n, c), np.float64)
    for b in range(b_size):
        np.add.at(grad[b], idx[b].reshape(-1), grad_out[b].reshape(-1, c))
    return grad


def grid_points(rng, shape, cells=64):
    """Coordinates on a 1/cells grid in [0, 1): float32 distances are then exact, so the kernels
    must agree with float64 to the bit, and equal distances (ties) are frequent."""
    return (rng.integers(0, cells, size=shape) / cells).astype(np.float32)


def grid_radius(rng, cells=64, max_sq_cells=800):
    """A radius whose square falls halfway between grid distances: no point lies on the sphere."""
    return float(np.sqrt((rng.integers(1, max_sq_cells) + 0.5) / cells**2))
