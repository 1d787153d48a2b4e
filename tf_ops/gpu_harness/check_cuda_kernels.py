#!/usr/bin/env python3
"""Checks the CUDA launchers of tf_ops/src/point_kernels.h and batch_norm_kernels.h against the CPU
kernels.

Loads libjsnet_cuda_kernels.so and libjsnet_cpu_kernels.so (see build_harness.py) with ctypes and,
for every op, gradient and validation helper, runs the CUDA launcher on CuPy arrays and the CPU
function on NumPy arrays (begin=0, end=all work items, i.e. single-threaded) over many sizes and
edge cases, then compares them:

  * integer outputs (FPS / ball query / kNN / three_nn indices, pts_cnt, validation positions):
    exactly;
  * kNN / three_nn distances: bit-identical expected (no FMA on either side); otherwise within
    1e-6 relative is accepted and reported;
  * copies (gather / group): bit-identical expected, else rtol 1e-5 / atol 1e-6;
  * three_interpolate: rtol 1e-5 / atol 1e-6 (bit-identity reported; expected, as both sides
    round every product and sum in one order);
  * gradients (atomics, any summation order) and gather_weight_net_sum with its four gradients
    (fused multiply-adds, each side in its own order): |a - b| <= 1e-6 + 1e-5 * sum(|terms|).
  * the batch norm's outputs, moments and gradients: within 1e-6 + 1e-5 * sum(|terms|) of the
    float64 reference, and of each other (both sum in double over the same row blocks, in
    different orders inside a block). Its CPU phases run as ops.cc runs them: the sums over row
    blocks, their combination, then the rows (the split run cuts each parallel phase in three).

The CPU results are also checked against an independent NumPy brute force (squared distances in
float32 in the contract's order, so indices can be compared exactly; sums in float64). With
--cpu-only no GPU, CuPy or CUDA library is needed: only the CPU kernels are checked against NumPy
(and against a split [begin, end) run, as a thread pool would call them).

The S3DIS-sized cases are timed (CUDA events, median of --repeats runs; CPU: single-threaded C
call, median of a few runs) and printed as a table. Exits non-zero on any mismatch.

    python3 tf_ops/gpu_harness/check_cuda_kernels.py --build       # on a GPU machine
    python3 tf_ops/gpu_harness/check_cuda_kernels.py --build --cpu-only
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import re
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HARNESS_DIR = Path(__file__).resolve().parent


def _load_build_harness():
    spec = importlib.util.spec_from_file_location("jsnet_build_harness",
                                                  HARNESS_DIR / "build_harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build_harness = _load_build_harness()


def _load_numpy_reference():
    """jsnet_tf/ops/numpy_reference.py (NumPy only) without importing the package (TensorFlow)."""
    path = HARNESS_DIR.parents[1] / "jsnet_tf" / "ops" / "numpy_reference.py"
    spec = importlib.util.spec_from_file_location("jsnet_numpy_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


numpy_reference = _load_numpy_reference()

F32 = np.float32
I32 = np.int32
VP = ctypes.c_void_p
I64 = ctypes.c_int64
CI = ctypes.c_int
CF = ctypes.c_float

# Rows of a block of the batch norm's partial sums (JSNET_BATCH_NORM_BLOCK_ROWS).
BATCH_NORM_BLOCK_ROWS = int(re.search(r"#define JSNET_BATCH_NORM_BLOCK_ROWS (\d+)",
                                      (HARNESS_DIR.parent / "src" / "batch_norm_kernels.h").read_text())[1])

RTOL = 1e-5
ATOL = 1e-6
DIST_RTOL = 1e-6

# ----------------------------------------------------------------------------- library bindings

CPU_SIGNATURES = {
    "jsnet_farthest_point_sample_cpu": (None, [I64, I64, CI, CI, VP, VP]),
    "jsnet_gather_point_cpu": (None, [I64, I64, CI, CI, VP, VP, VP]),
    "jsnet_gather_point_grad_cpu": (None, [I64, I64, CI, CI, VP, VP, VP]),
    "jsnet_query_ball_point_cpu": (None, [I64, I64, CI, CI, CF, CI, VP, VP, VP, VP]),
    "jsnet_group_point_cpu": (None, [I64, I64, CI, CI, CI, CI, VP, VP, VP]),
    "jsnet_group_point_grad_cpu": (None, [I64, I64, CI, CI, CI, CI, VP, VP, VP]),
    "jsnet_knn_point_cpu": (None, [I64, I64, CI, CI, CI, VP, VP, VP, VP]),
    "jsnet_three_nn_cpu": (None, [I64, I64, CI, CI, VP, VP, VP, VP]),
    "jsnet_three_interpolate_cpu": (None, [I64, I64, CI, CI, CI, VP, VP, VP, VP]),
    "jsnet_three_interpolate_grad_cpu": (None, [I64, I64, CI, CI, CI, VP, VP, VP, VP]),
    "jsnet_gather_weight_net_sum_cpu": (None, [I64, I64, CI, CI, CI, CI, CI, VP, VP, VP, VP, VP, VP]),
    "jsnet_gather_weight_net_sum_grad_points_cpu": (None, [I64, I64, CI, CI, CI, CI, CI, VP, VP, VP, VP,
                                                           VP, VP]),
    "jsnet_gather_weight_net_sum_grad_blocks_cpu": (I64, [CI, CI]),
    "jsnet_gather_weight_net_sum_grad_workspace_floats_cpu": (I64, [CI, CI, CI, CI]),
    "jsnet_gather_weight_net_sum_grad_weight_net_cpu": (None, [I64, I64, CI, CI, CI, CI, CI, CI, VP, VP,
                                                               VP, VP, VP, VP, VP]),
    "jsnet_gather_weight_net_sum_grad_reduce_cpu": (None, [I64, I64, CI, CI, CI, CI, VP, VP, VP]),
    "jsnet_first_non_finite_cpu": (I64, [I64, VP]),
    "jsnet_batch_norm_moments_cpu": (None, [I64, I64, I64, CI, VP, VP]),
    "jsnet_batch_norm_combine_moments_cpu": (None, [I64, CI, VP, VP, VP, VP]),
    "jsnet_batch_norm_normalize_cpu": (None, [I64, I64, CI, VP, VP, VP, VP, VP, CF, CI, VP]),
    "jsnet_batch_norm_grad_sums_cpu": (None, [I64, I64, I64, CI, VP, VP, VP, VP, VP, VP, CF, CI, VP]),
    "jsnet_batch_norm_grad_combine_cpu": (None, [I64, CI, VP, VP, VP, CF, VP, VP, VP]),
    "jsnet_batch_norm_grad_x_cpu": (None, [I64, I64, CI, VP, VP, VP, VP, CI, VP, VP]),
    "jsnet_first_out_of_range_cpu": (I64, [I64, VP, CI]),
}

CUDA_SIGNATURES = {
    "jsnet_farthest_point_sample_cuda": (CI, [CI, CI, CI, VP, VP, VP, VP]),
    "jsnet_gather_point_cuda": (CI, [CI, CI, CI, VP, VP, VP, VP]),
    "jsnet_gather_point_grad_cuda": (CI, [CI, CI, CI, VP, VP, VP, VP]),
    "jsnet_query_ball_point_cuda": (CI, [CI, CI, CI, CF, CI, VP, VP, VP, VP, VP]),
    "jsnet_group_point_cuda": (CI, [CI, CI, CI, CI, CI, VP, VP, VP, VP]),
    "jsnet_group_point_grad_cuda": (CI, [CI, CI, CI, CI, CI, VP, VP, VP, VP]),
    "jsnet_knn_point_cuda_workspace_floats": (I64, [CI, CI, CI, CI]),
    "jsnet_knn_point_cuda": (CI, [CI, CI, CI, CI, VP, VP, VP, VP, VP, VP]),
    "jsnet_three_nn_cuda": (CI, [CI, CI, CI, VP, VP, VP, VP, VP]),
    "jsnet_three_interpolate_cuda": (CI, [CI, CI, CI, CI, VP, VP, VP, VP, VP]),
    "jsnet_three_interpolate_grad_cuda": (CI, [CI, CI, CI, CI, VP, VP, VP, VP, VP]),
    "jsnet_gather_weight_net_sum_cuda": (CI, [CI, CI, CI, CI, CI, CI, VP, VP, VP, VP, VP, VP, VP]),
    "jsnet_gather_weight_net_sum_grad_cuda": (CI, [CI, CI, CI, CI, CI, CI, VP, VP, VP, VP, VP, VP, VP, VP,
                                                   VP, VP, VP]),
    "jsnet_first_non_finite_cuda": (CI, [I64, VP, VP, VP]),
    "jsnet_batch_norm_cuda_workspace_doubles": (I64, [I64, CI]),
    "jsnet_batch_norm_cuda": (CI, [I64, CI, VP, VP, VP, CF, CI, VP, VP, VP, VP, VP]),
    "jsnet_batch_norm_grad_cuda": (CI, [I64, CI, VP, VP, VP, VP, VP, VP, CF, CI, VP, VP, VP, VP, VP]),
    "jsnet_first_out_of_range_cuda": (CI, [I64, VP, CI, VP, VP]),
}


def load_library(path, signatures):
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def hp(a: np.ndarray):
    """Host pointer of a C-contiguous NumPy array."""
    assert a.flags.c_contiguous
    return a.ctypes.data


def dp(a):
    """Device pointer of a CuPy array."""
    return a.data.ptr


# ----------------------------------------------------------------------------- references
# Squared distances exactly as the contract evaluates them (float32, dx*dx + dy*dy + dz*dz left to
# right; NumPy never fuses separate ufuncs).


def sq_dist(query: np.ndarray, points: np.ndarray) -> np.ndarray:
    """query (Q, 3), points (P, 3) -> (Q, P) float32 squared distances."""
    q = query.astype(F32)
    p = points.astype(F32)
    dx = p[None, :, 0] - q[:, None, 0]
    dy = p[None, :, 1] - q[:, None, 1]
    dz = p[None, :, 2] - q[:, None, 2]
    return dx * dx + dy * dy + dz * dz


def ref_fps(xyz, npoint):
    b, n, _ = xyz.shape
    out = np.zeros((b, npoint), I32)
    if npoint == 0:
        return {"idx": out}
    md = np.full((b, n), np.inf, F32)
    last = np.zeros(b, np.int64)
    rows = np.arange(b)
    for s in range(1, npoint):
        c = xyz[rows, last]  # (B, 3)
        dx = xyz[:, :, 0] - c[:, None, 0]
        dy = xyz[:, :, 1] - c[:, None, 1]
        dz = xyz[:, :, 2] - c[:, None, 2]
        md = np.minimum(md, dx * dx + dy * dy + dz * dz)
        last = md.argmax(axis=1)  # first maximum
        out[:, s] = last
    return {"idx": out}


def ref_gather(xyz, idx):
    b = xyz.shape[0]
    return {"out": xyz[np.arange(b)[:, None], idx]}


def _scatter_add(shape_bn, idx_flat, vals, c):
    """float64 sums and abs-sums of vals (R, c) scattered to rows idx_flat of a (rows, c) array."""
    total = np.zeros((shape_bn, c), np.float64)
    abs_total = np.zeros((shape_bn, c), np.float64)
    v = vals.astype(np.float64)
    np.add.at(total, idx_flat, v)
    np.add.at(abs_total, idx_flat, np.abs(v))
    return total, abs_total


def ref_gather_grad(grad_out, idx, n):
    b, m, _ = grad_out.shape
    flat = (np.arange(b)[:, None] * n + idx).reshape(-1)
    tot, abs_tot = _scatter_add(b * n, flat, grad_out.reshape(-1, 3), 3)
    return {"grad": tot.reshape(b, n, 3)}, {"grad": abs_tot.reshape(b, n, 3)}


def ref_ball(xyz, new_xyz, radius, nsample):
    b, n, _ = xyz.shape
    m = new_xyz.shape[1]
    r2 = F32(radius) * F32(radius)
    idx = np.zeros((b, m, nsample), I32)
    cnt = np.zeros((b, m), I32)
    for bi in range(b):
        if n == 0 or m == 0:
            continue
        mask = sq_dist(new_xyz[bi], xyz[bi]) < r2  # (M, N)
        csum = np.cumsum(mask, axis=1)
        cnt[bi] = np.minimum(csum[:, -1], nsample)
        first = np.where(mask.any(axis=1), mask.argmax(axis=1), 0)
        idx[bi] = first[:, None]
        take = mask & (csum <= nsample)
        qs, js = np.nonzero(take)
        idx[bi, qs, csum[qs, js] - 1] = js
    return {"idx": idx, "pts_cnt": cnt}


def ref_group(points, idx):
    b = points.shape[0]
    return {"out": points[np.arange(b)[:, None, None], idx]}


def ref_group_grad(grad_out, idx, n):
    b, m, s, c = grad_out.shape
    flat = (np.arange(b)[:, None, None] * n + idx).reshape(-1)
    tot, abs_tot = _scatter_add(b * n, flat, grad_out.reshape(-1, c), c)
    return {"grad": tot.reshape(b, n, c)}, {"grad": abs_tot.reshape(b, n, c)}


def _topk_keys(d: np.ndarray, k: int):
    """Rows of d (Q, P) float32 >= 0 -> the k smallest (d, index) pairs, ascending, ties by
    index, through unique uint64 keys (distance bits << 32 | index)."""
    q, p = d.shape
    keys = (d.view(np.uint32).astype(np.uint64) << np.uint64(32)) | np.arange(p, dtype=np.uint64)
    if k < p:
        keys = np.partition(keys, k - 1, axis=1)[:, :k]
    keys = np.sort(keys, axis=1)
    dist = (keys >> np.uint64(32)).astype(np.uint32).view(F32)
    idx = (keys & np.uint64(0xFFFFFFFF)).astype(I32)
    return dist, idx


def ref_knn(xyz, new_xyz, k):
    b, n, _ = xyz.shape
    m = new_xyz.shape[1]
    dist = np.zeros((b, m, k), F32)
    idx = np.zeros((b, m, k), I32)
    for bi in range(b):
        if m and k:
            dist[bi], idx[bi] = _topk_keys(sq_dist(new_xyz[bi], xyz[bi]), k)
    return {"dist": dist, "idx": idx}


def ref_three_nn(xyz1, xyz2):
    b, n, _ = xyz1.shape
    m = xyz2.shape[1]
    dist = np.full((b, n, 3), np.inf, F32)
    idx = np.zeros((b, n, 3), I32)
    kk = min(3, m)
    for bi in range(b):
        if n and kk:
            dist[bi, :, :kk], idx[bi, :, :kk] = _topk_keys(sq_dist(xyz1[bi], xyz2[bi]), kk)
    return {"dist": dist, "idx": idx}


def ref_interp(points, idx, weight):
    b = points.shape[0]
    g = points.astype(np.float64)[np.arange(b)[:, None, None], idx]  # (B, N, 3, C)
    terms = weight.astype(np.float64)[..., None] * g
    return {"out": terms.sum(axis=2)}, {"out": np.abs(terms).sum(axis=2)}


def ref_interp_grad(grad_out, idx, weight, m):
    b, n, c = grad_out.shape
    flat = (np.arange(b)[:, None, None] * m + idx).reshape(-1)  # (B*N*3)
    vals = (weight.astype(np.float64)[..., None] * grad_out.astype(np.float64)[:, :, None, :])
    tot, abs_tot = _scatter_add(b * m, flat, vals.reshape(-1, c), c)
    return {"grad": tot.reshape(b, m, c)}, {"grad": abs_tot.reshape(b, m, c)}


def _weight_net_terms(points, idx, hidden, kernel, bias):
    """(gathered points, channel weights, |gathered points|, sums of |terms| of the weights)."""
    b = points.shape[0]
    g = points.astype(np.float64)[np.arange(b)[:, None, None], idx]  # (B, M, S, C)
    k = kernel.astype(np.float64)
    w = hidden.astype(np.float64) @ k + bias.astype(np.float64)
    w_abs = np.abs(hidden.astype(np.float64)) @ np.abs(k) + np.abs(bias.astype(np.float64))
    return g, w, np.abs(g), w_abs


def ref_gather_weight_net_sum(points, idx, hidden, kernel, bias):
    g, w, g_abs, w_abs = _weight_net_terms(points, idx, hidden, kernel, bias)
    return {"out": (g * w).sum(axis=2)}, {"out": (g_abs * w_abs).sum(axis=2)}


def ref_gather_weight_net_sum_grad(points, idx, hidden, kernel, bias, grad_out):
    b, n, c = points.shape
    g, w, g_abs, w_abs = _weight_net_terms(points, idx, hidden, kernel, bias)
    up = grad_out.astype(np.float64)[:, :, None, :]
    flat = (np.arange(b)[:, None, None] * n + idx).reshape(-1)  # (B*M*S)
    grad_points, _ = _scatter_add(b * n, flat, (up * w).reshape(-1, c), c)
    grad_points_abs, _ = _scatter_add(b * n, flat, (np.abs(up) * w_abs).reshape(-1, c), c)
    u, u_abs = up * g, np.abs(up) * g_abs
    h = hidden.astype(np.float64)
    k = kernel.astype(np.float64)
    return ({"grad_points": grad_points.reshape(b, n, c), "grad_hidden": u @ k.T,
             "grad_kernel": np.einsum("bmsh,bmsc->hc", h, u), "grad_bias": u.sum(axis=(0, 1, 2))},
            {"grad_points": grad_points_abs.reshape(b, n, c), "grad_hidden": u_abs @ np.abs(k).T,
             "grad_kernel": np.einsum("bmsh,bmsc->hc", np.abs(h), u_abs),
             "grad_bias": u_abs.sum(axis=(0, 1, 2))})


def _batch_norm_terms(x, gamma, beta, epsilon, relu, grad_y=None):
    """float64 pieces of the batch norm of x (R, C): mean, inverse std, normalised x, pre-ReLU
    output and, with grad_y, the gradient masked by the ReLU."""
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=0)
    inv_std = 1.0 / np.sqrt(x64.var(axis=0) + np.float64(epsilon))
    normalised = (x64 - mean) * inv_std
    pre = normalised * gamma + beta
    g = None
    if grad_y is not None:
        g = np.where(pre > 0, grad_y, 0.0) if relu else grad_y.astype(np.float64)
    return mean, inv_std, normalised, pre, g


def ref_batch_norm(x, gamma, beta, epsilon, relu):
    mean, inv_std, normalised, pre, _ = _batch_norm_terms(x, gamma, beta, epsilon, relu)
    y = np.maximum(pre, 0.0) if relu else pre
    scale = np.abs(gamma) * inv_std
    y_terms = scale * (np.abs(x - mean) + np.abs(mean)) + np.abs(beta)
    return ({"y": y, "mean": mean, "variance": x.astype(np.float64).var(axis=0)},
            {"y": y_terms, "mean": np.abs(x).mean(axis=0), "variance": x.astype(np.float64).var(axis=0)})


def ref_batch_norm_grad(grad_y, x, gamma, beta, epsilon, relu):
    rows = x.shape[0]
    mean, inv_std, normalised, _, g = _batch_norm_terms(x, gamma, beta, epsilon, relu, grad_y)
    grad_beta, grad_gamma = g.sum(axis=0), (g * normalised).sum(axis=0)
    grad_x = gamma * inv_std * (g - grad_beta / rows - normalised * grad_gamma / rows)
    size_beta = np.abs(g).sum(axis=0)
    size_gamma = np.abs(g * normalised).sum(axis=0) + np.abs(mean) * inv_std * size_beta
    size_x = np.abs(gamma) * inv_std * (np.abs(g) + size_beta / rows
                                        + (np.abs(normalised) + np.abs(mean) * inv_std) * size_gamma / rows)
    return ({"grad_x": grad_x, "grad_gamma": grad_gamma, "grad_beta": grad_beta},
            {"grad_x": size_x, "grad_gamma": size_gamma, "grad_beta": size_beta})


def ref_first_non_finite(values):
    bad = np.flatnonzero(~np.isfinite(values))
    return {"pos": np.array([bad[0] if bad.size else -1], np.int64)}


def ref_first_out_of_range(values, limit):
    bad = np.flatnonzero((values < 0) | (values >= limit))
    return {"pos": np.array([bad[0] if bad.size else -1], np.int64)}


# ----------------------------------------------------------------------------- comparisons


@dataclass
class Verdict:
    ok: bool
    note: str = ""


def compare(kind: str, got: np.ndarray, want: np.ndarray, abs_sum: np.ndarray | None = None
            ) -> Verdict:
    """kind: 'int' exact | 'dist' bits else 1e-6 rel | 'copy' bits else tol | 'float' tol |
    'grad' abs-sum tolerance."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _compare(kind, np.asarray(got), np.asarray(want), abs_sum)


def _compare(kind, got, want, abs_sum):
    if got.shape != want.shape:
        return Verdict(False, f"shape {got.shape} != {want.shape}")
    if got.size == 0:
        return Verdict(True)
    if kind == "int":
        bad = got != want
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            return Verdict(False, f"{int(bad.sum())} of {got.size} differ, first at {first}: "
                                  f"{got[first].item()} vs {want[first].item()}")
        return Verdict(True)
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    if kind in ("dist", "copy") and want.dtype == np.float32 and got.dtype == np.float32:
        if np.array_equal(got.view(np.uint32), want.view(np.uint32)):
            return Verdict(True, "bit-exact")
        # +0 vs -0 or tiny rounding differences
        if kind == "dist":
            both_inf = np.isinf(g) & np.isinf(w) & (np.sign(g) == np.sign(w))
            err = np.where(both_inf, 0.0, np.abs(g - w))
            lim = DIST_RTOL * np.abs(w)
            bad = ~(err <= lim)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                return Verdict(False, f"{int(bad.sum())} distances beyond 1e-6 rel, first at "
                                      f"{first}: {got[first].item()!r} vs {want[first].item()!r}")
            return Verdict(True, f"NOT bit-exact: {int((got != want).sum())} distances differ "
                                 f"within 1e-6 rel")
    if kind == "grad":
        assert abs_sum is not None
        lim = ATOL + RTOL * abs_sum
    else:
        lim = ATOL + RTOL * np.abs(w)
    same_inf = np.isinf(g) & np.isinf(w) & (np.sign(g) == np.sign(w))
    err = np.where(same_inf, 0.0, np.abs(g - w))
    bad = ~(err <= lim)  # NaN counts as bad
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        return Verdict(False, f"{int(bad.sum())} of {got.size} beyond tolerance, first at {first}:"
                              f" {got[first].item()!r} vs {want[first].item()!r}"
                              f" (max err {np.max(err):.3g})")
    if got.dtype == np.float32 and want.dtype == np.float32:
        exact = np.array_equal(got, want)
        return Verdict(True, "bit-exact" if exact else f"max err {err.max():.3g}")
    return Verdict(True, f"max err {err.max():.3g}")


# ----------------------------------------------------------------------------- cases


@dataclass
class Case:
    op: str
    shape: str
    inputs: dict
    timed: bool = False
    results: list = field(default_factory=list)  # (label, Verdict)


def uniform_xyz(rng, b, n, scale=1.0):
    return (rng.random((b, n, 3), dtype=np.float64) * scale).astype(F32)


def grid_xyz(rng, b, n, step=0.125, cells=5):
    """Coordinates on a coarse grid: many duplicate points and exactly tied distances."""
    return (rng.integers(0, cells, size=(b, n, 3)) * step).astype(F32)


def make_cases(rng, quick=False) -> list[Case]:
    cases: list[Case] = []

    def add(op, shape, timed=False, **inputs):
        cases.append(Case(op, shape, inputs, timed))

    # ---------------------------------------------------------------- farthest_point_sample
    fps_sizes = [(1, 1, 1, "u"), (2, 3, 3, "u"), (1, 5, 1, "u"), (3, 100, 37, "u"),
                 (2, 1000, 1000, "u"), (2, 1025, 256, "u"), (4, 3000, 300, "u"),
                 (2, 5000, 128, "u"), (1, 9001, 100, "u"), (2, 257, 257, "g"),
                 (3, 2048, 512, "g"), (2, 700, 700, "g")]
    for b, n, npoint, kind in fps_sizes:
        xyz = uniform_xyz(rng, b, n) if kind == "u" else grid_xyz(rng, b, n)
        add("farthest_point_sample", f"B{b} N{n} -> {npoint}{' grid' if kind == 'g' else ''}",
            xyz=xyz, npoint=npoint)
    for n, npoint in [(4096, 1024), (1024, 256), (256, 64), (64, 32)]:
        add("farthest_point_sample", f"B8 N{n} -> {npoint}", True,
            xyz=uniform_xyz(rng, 8, n), npoint=npoint)

    # ---------------------------------------------------------------- gather_point (+grad)
    for b, n, m, timed in [(1, 1, 1, False), (2, 3, 5, False), (3, 100, 37, False),
                           (2, 1031, 1500, False), (8, 4096, 1024, True), (8, 1024, 256, True),
                           (8, 256, 64, True), (8, 64, 32, True)]:
        xyz = uniform_xyz(rng, b, n)
        idx = rng.integers(0, n, size=(b, m)).astype(I32)
        add("gather_point", f"B{b} N{n} M{m}", timed, xyz=xyz, idx=idx)
        grad = rng.standard_normal((b, m, 3)).astype(F32)
        add("gather_point_grad", f"B{b} N{n} M{m}", timed, grad_out=grad, idx=idx, n=n)

    # ---------------------------------------------------------------- query_ball_point
    def ball_inputs(xyz, m, far_fraction=0.0):
        b, n, _ = xyz.shape
        sel = np.stack([rng.choice(n, size=m, replace=m > n) for _ in range(b)])
        new_xyz = xyz[np.arange(b)[:, None], sel].copy()
        if far_fraction > 0:
            far = rng.random((b, m)) < far_fraction
            new_xyz[far] += F32(100.0)  # no point in the ball
        return new_xyz

    ball_sizes = [
        # b, n, m, radius, nsample, coords, far fraction
        (1, 1, 1, 0.2, 4, "u", 0.0),
        (2, 3, 2, 0.5, 8, "u", 0.0),
        (2, 100, 20, 0.3, 64, "u", 0.0),      # nsample > points in the ball
        (3, 1000, 333, 0.1, 32, "u", 0.2),    # queries without hit
        (2, 777, 50, 0.05, 16, "u", 0.5),
        (2, 300, 40, 0.25, 1, "u", 0.0),      # nsample 1
        (2, 500, 100, 0.25, 32, "g", 0.1),    # grid: d2 == r2 exactly on the sphere
        (2, 1200, 64, 2.0, 32, "u", 0.0),     # everything in the ball, early exit
        (1, 5000, 33, 0.02, 5, "u", 0.3),
    ]
    for b, n, m, radius, nsample, kind, far in ball_sizes:
        xyz = uniform_xyz(rng, b, n) if kind == "u" else grid_xyz(rng, b, n)
        add("query_ball_point",
            f"B{b} N{n} M{m} r{radius} S{nsample}{' grid' if kind == 'g' else ''}",
            xyz=xyz, new_xyz=ball_inputs(xyz, m, far), radius=radius, nsample=nsample)
    for n, m, radius in [(4096, 1024, 0.1), (1024, 256, 0.2), (256, 64, 0.4), (64, 32, 0.8)]:
        xyz = uniform_xyz(rng, 8, n)
        add("query_ball_point", f"B8 N{n} M{m} r{radius} S32", True,
            xyz=xyz, new_xyz=ball_inputs(xyz, m), radius=radius, nsample=32)

    # ---------------------------------------------------------------- group_point (+grad)
    group_sizes = [(1, 1, 1, 1, 1, False), (2, 3, 5, 2, 4, False), (2, 100, 7, 33, 16, False),
                   (3, 1000, 67, 100, 32, False), (1, 50, 300, 10, 5, False),
                   (8, 4096, 9, 1024, 32, True), (8, 1024, 64, 256, 32, True),
                   (8, 256, 128, 64, 32, True), (8, 64, 256, 32, 32, True)]
    for b, n, c, m, s, timed in group_sizes:
        points = rng.standard_normal((b, n, c)).astype(F32)
        idx = rng.integers(0, n, size=(b, m, s)).astype(I32)
        idx[:, :, s // 2:] = idx[:, :, :1]  # padded groups repeat their first index
        add("group_point", f"B{b} N{n} C{c} M{m} S{s}", timed, points=points, idx=idx)
        grad = rng.standard_normal((b, m, s, c)).astype(F32)
        add("group_point_grad", f"B{b} N{n} C{c} M{m} S{s}", timed, grad_out=grad, idx=idx, n=n)

    # ---------------------------------------------------------------- knn_point
    knn_sizes = [(1, 1, 1, 1, "u"), (2, 3, 3, 3, "u"), (2, 5, 4, 5, "u"), (2, 3, 7, 2, "u"),
                 (3, 1000, 100, 16, "u"), (2, 333, 50, 7, "u"), (2, 200, 40, 20, "u"),
                 (2, 100, 30, 32, "u"),
                 (2, 100, 17, 33, "u"), (2, 100, 30, 100, "u"), (2, 64, 64, 64, "u"),
                 (2, 500, 100, 32, "g"), (2, 500, 50, 64, "g"), (2, 400, 20, 400, "g"),
                 (1, 2000, 10, 1500, "u"), (1, 5000, 6, 4097, "u"), (1, 4500, 5, 4500, "g"),
                 (3, 777, 65, 5, "g")]
    for b, n, m, k, kind in knn_sizes:
        xyz = uniform_xyz(rng, b, n) if kind == "u" else grid_xyz(rng, b, n)
        new_xyz = uniform_xyz(rng, b, m) if kind == "u" else grid_xyz(rng, b, m)
        add("knn_point", f"B{b} N{n} M{m} K{k}{' grid' if kind == 'g' else ''}",
            xyz=xyz, new_xyz=new_xyz, k=k)
    for n, m in [(4096, 1024), (1024, 256), (256, 64), (64, 32)]:
        for k in (32, 16):
            xyz = uniform_xyz(rng, 8, n)
            add("knn_point", f"B8 N{n} M{m} K{k}", True, xyz=xyz,
                new_xyz=xyz[:, rng.choice(n, m, replace=False)].copy(), k=k)

    # ---------------------------------------------------------------- three_nn
    nn_sizes = [(1, 1, 1, "u"), (2, 5, 2, "u"), (2, 10, 3, "u"), (1, 4, 0, "u"),
                (3, 1000, 100, "u"), (2, 500, 64, "g"), (2, 333, 5, "g"), (1, 70, 2000, "u")]
    for b, n, m, kind in nn_sizes:
        gen = uniform_xyz if kind == "u" else grid_xyz
        add("three_nn", f"B{b} N{n} M{m}{' grid' if kind == 'g' else ''}",
            xyz1=gen(rng, b, n), xyz2=gen(rng, b, m))
    for n, m in [(64, 32), (256, 64), (1024, 256), (4096, 1024)]:
        add("three_nn", f"B8 N{n} M{m}", True, xyz1=uniform_xyz(rng, 8, n),
            xyz2=uniform_xyz(rng, 8, m))

    # ---------------------------------------------------------------- three_interpolate (+grad)
    interp_sizes = [(1, 1, 1, 1, False), (2, 3, 5, 7, False), (2, 100, 33, 1000, False),
                    (3, 17, 130, 50, False), (8, 32, 512, 64, True), (8, 64, 256, 256, True),
                    (8, 256, 256, 1024, True), (8, 1024, 128, 4096, True)]
    for b, m, c, n, timed in interp_sizes:
        points = rng.standard_normal((b, m, c)).astype(F32)
        idx = rng.integers(0, m, size=(b, n, 3)).astype(I32)
        w = rng.random((b, n, 3)) + 1e-3
        weight = (w / w.sum(axis=2, keepdims=True)).astype(F32)
        add("three_interpolate", f"B{b} M{m} C{c} N{n}", timed, points=points, idx=idx,
            weight=weight)
        grad = rng.standard_normal((b, n, c)).astype(F32)
        add("three_interpolate_grad", f"B{b} M{m} C{c} N{n}", timed, grad_out=grad, idx=idx,
            weight=weight, m=m)

    # ---------------------------------------------------------------- gather_weight_net_sum (+grad)
    # b, n, c, m, nsample, units, timed: C off the SIMD widths, K = 1, units off the widths; the
    # depthwise decodings' sizes at batch 8 (fa_layer3, fa_layer2, fa_layer1) are timed
    gwns_sizes = [(1, 1, 1, 1, 1, 1, False), (2, 3, 5, 2, 4, 3, False),
                  (2, 100, 7, 33, 16, 32, False), (3, 1000, 67, 100, 32, 9, False),
                  (1, 50, 300, 10, 1, 32, False), (4, 64, 515, 1, 16, 32, False),
                  (8, 1024, 259, 1024, 16, 32, True), (8, 256, 515, 256, 16, 32, True),
                  (8, 64, 515, 64, 16, 32, True)]
    for b, n, c, m, s, units, timed in gwns_sizes:
        points = rng.standard_normal((b, n, c)).astype(F32)
        idx = rng.integers(0, n, size=(b, m, s)).astype(I32)
        idx[:, :, s // 2:] = idx[:, :, :1]  # repeated indices: the gradient's scatter adds up
        net = {"hidden": rng.standard_normal((b, m, s, units)).astype(F32),
               "kernel": rng.standard_normal((units, c)).astype(F32),
               "bias": rng.standard_normal(c).astype(F32)}
        shape = f"B{b} N{n} C{c} M{m} S{s} H{units}"
        add("gather_weight_net_sum", shape, timed, points=points, idx=idx, **net)
        grad = rng.standard_normal((b, m, c)).astype(F32)
        add("gather_weight_net_sum_grad", shape, timed, points=points, idx=idx, grad_out=grad, **net)

    # ---------------------------------------------------------------- batch_norm (+grad)
    # rows, channels, relu, timed: one row, C off and below the SIMD widths, rows off the 512-row
    # blocks, several blocks; the network's sizes at batch 8 are timed
    bn_sizes = [(1, 1, False, False), (1, 5, True, False), (3, 13, True, False), (7, 1, False, False),
                (513, 24, True, False), (1537, 9, False, False), (100, 300, True, False),
                (4097, 70, True, False), (262144, 32, True, True), (32768, 128, True, True),
                (131072, 64, False, True)]
    for rows, c, relu, timed in bn_sizes:
        x = (rng.standard_normal((rows, c)) * 2.0 + 3.0).astype(F32)
        gamma = ((rng.random(c) + 0.5) * rng.choice([-1.0, 1.0], c)).astype(F32)
        beta = numpy_reference.relu_safe_beta(x, gamma) if relu else rng.standard_normal(c).astype(F32)
        label = f"R{rows} C{c}" + (" relu" if relu else "")
        add("batch_norm", label, timed, x=x, gamma=gamma, beta=beta, epsilon=1e-3, relu=relu)
        moments = {"mean": x.astype(np.float64).mean(axis=0).astype(F32),
                   "variance": x.astype(np.float64).var(axis=0).astype(F32)}
        add("batch_norm_grad", label, timed, grad_y=rng.standard_normal((rows, c)).astype(F32), x=x,
            **moments, gamma=gamma, beta=beta, epsilon=1e-3, relu=relu)

    # ---------------------------------------------------------------- validation helpers
    for count, bad_pos in [(0, []), (1, []), (1, [0]), (1000, []), (1000, [999]),
                           (1000, [3, 700]), ((1 << 20) + 3, [(1 << 20) + 1]),
                           ((1 << 20) + 3, [5000, 77, 1 << 19]), (3 << 20, [])]:
        vals = rng.standard_normal(count).astype(F32)
        specials = [np.nan, np.inf, -np.inf]
        for j, p in enumerate(bad_pos):
            vals[p] = specials[j % 3]
        add("first_non_finite", f"count {count} bad {len(bad_pos)}", count == 3 << 20,
            values=vals)
        limit = 1000
        ivals = rng.integers(0, limit, size=count).astype(I32)
        for j, p in enumerate(bad_pos):
            ivals[p] = -1 if j % 2 == 0 else limit
        add("first_out_of_range", f"count {count} bad {len(bad_pos)}", count == 3 << 20,
            values=ivals, limit=limit)

    if quick:
        cases = [c for c in cases if not c.timed]
    return cases


# ----------------------------------------------------------------------------- op table
# For each op: work-item count of the CPU function, the CPU call, the CUDA call, the reference.
# Output specs: name -> (shape, dtype, comparison kind).


def op_outputs(case: Case) -> dict:
    x = case.inputs
    if case.op == "farthest_point_sample":
        b, n, _ = x["xyz"].shape
        return {"idx": ((b, x["npoint"]), I32, "int")}
    if case.op == "gather_point":
        b, m = x["idx"].shape
        return {"out": ((b, m, 3), F32, "copy")}
    if case.op == "gather_point_grad":
        b = x["idx"].shape[0]
        return {"grad": ((b, x["n"], 3), F32, "grad")}
    if case.op == "query_ball_point":
        b, m, _ = x["new_xyz"].shape
        return {"idx": ((b, m, x["nsample"]), I32, "int"), "pts_cnt": ((b, m), I32, "int")}
    if case.op == "group_point":
        b, m, s = x["idx"].shape
        return {"out": ((b, m, s, x["points"].shape[2]), F32, "copy")}
    if case.op == "group_point_grad":
        b, m, s, c = x["grad_out"].shape
        return {"grad": ((b, x["n"], c), F32, "grad")}
    if case.op == "knn_point":
        b, m, _ = x["new_xyz"].shape
        return {"dist": ((b, m, x["k"]), F32, "dist"), "idx": ((b, m, x["k"]), I32, "int")}
    if case.op == "three_nn":
        b, n, _ = x["xyz1"].shape
        return {"dist": ((b, n, 3), F32, "dist"), "idx": ((b, n, 3), I32, "int")}
    if case.op == "three_interpolate":
        b, n, _ = x["idx"].shape
        return {"out": ((b, n, x["points"].shape[2]), F32, "float")}
    if case.op == "three_interpolate_grad":
        b, n, c = x["grad_out"].shape
        return {"grad": ((b, x["m"], c), F32, "grad")}
    if case.op == "gather_weight_net_sum":
        b, m, _ = x["idx"].shape
        return {"out": ((b, m, x["points"].shape[2]), F32, "grad")}
    if case.op == "gather_weight_net_sum_grad":
        return {"grad_points": (x["points"].shape, F32, "grad"),
                "grad_hidden": (x["hidden"].shape, F32, "grad"),
                "grad_kernel": (x["kernel"].shape, F32, "grad"),
                "grad_bias": (x["bias"].shape, F32, "grad")}
    if case.op == "batch_norm":
        rows, c = x["x"].shape
        return {"y": ((rows, c), F32, "float"), "mean": ((c,), F32, "float"),
                "variance": ((c,), F32, "float")}
    if case.op == "batch_norm_grad":
        rows, c = x["x"].shape
        return {"grad_x": ((rows, c), F32, "grad"), "grad_gamma": ((c,), F32, "grad"),
                "grad_beta": ((c,), F32, "grad")}
    if case.op in ("first_non_finite", "first_out_of_range"):
        return {"pos": ((1,), np.int64, "int")}
    raise KeyError(case.op)


def garbage(shape, dtype):
    """Output buffers start as junk so that unwritten slots are caught."""
    if np.dtype(dtype) == F32:
        return np.full(shape, np.nan, F32)
    return np.full(shape, -123457, dtype)


def cpu_work_items(case: Case) -> int:
    x = case.inputs
    op = case.op
    if op in ("farthest_point_sample",):
        return x["xyz"].shape[0]
    if op in ("gather_point_grad", "group_point_grad", "three_interpolate_grad",
              "gather_weight_net_sum_grad"):
        return x["grad_out"].shape[0]
    if op == "gather_weight_net_sum":
        return x["idx"].shape[0] * x["idx"].shape[1]
    if op == "gather_point":
        return x["idx"].size
    if op == "query_ball_point":
        return x["new_xyz"].shape[0] * x["new_xyz"].shape[1]
    if op == "group_point":
        return x["idx"].size
    if op == "knn_point":
        return x["new_xyz"].shape[0] * x["new_xyz"].shape[1]
    if op == "three_nn":
        return x["xyz1"].shape[0] * x["xyz1"].shape[1]
    if op == "three_interpolate":
        return x["idx"].shape[0] * x["idx"].shape[1]
    if op in ("batch_norm", "batch_norm_grad"):
        return x["x"].shape[0]
    return x["values"].size


def cpu_call(lib, case: Case, out: dict, begin: int, end: int):
    x = case.inputs
    op = case.op
    if op == "farthest_point_sample":
        b, n, _ = x["xyz"].shape
        lib.jsnet_farthest_point_sample_cpu(begin, end, n, x["npoint"], hp(x["xyz"]),
                                            hp(out["idx"]))
    elif op == "gather_point":
        b, n, _ = x["xyz"].shape
        lib.jsnet_gather_point_cpu(begin, end, n, x["idx"].shape[1], hp(x["xyz"]), hp(x["idx"]),
                                   hp(out["out"]))
    elif op == "gather_point_grad":
        lib.jsnet_gather_point_grad_cpu(begin, end, x["n"], x["idx"].shape[1], hp(x["grad_out"]),
                                        hp(x["idx"]), hp(out["grad"]))
    elif op == "query_ball_point":
        n = x["xyz"].shape[1]
        lib.jsnet_query_ball_point_cpu(begin, end, n, x["new_xyz"].shape[1], x["radius"],
                                       x["nsample"], hp(x["xyz"]), hp(x["new_xyz"]),
                                       hp(out["idx"]), hp(out["pts_cnt"]))
    elif op == "group_point":
        b, n, c = x["points"].shape
        _, m, s = x["idx"].shape
        lib.jsnet_group_point_cpu(begin, end, n, c, m, s, hp(x["points"]), hp(x["idx"]),
                                  hp(out["out"]))
    elif op == "group_point_grad":
        b, m, s, c = x["grad_out"].shape
        lib.jsnet_group_point_grad_cpu(begin, end, x["n"], c, m, s, hp(x["grad_out"]),
                                       hp(x["idx"]), hp(out["grad"]))
    elif op == "knn_point":
        n = x["xyz"].shape[1]
        lib.jsnet_knn_point_cpu(begin, end, n, x["new_xyz"].shape[1], x["k"], hp(x["xyz"]),
                                hp(x["new_xyz"]), hp(out["dist"]), hp(out["idx"]))
    elif op == "three_nn":
        lib.jsnet_three_nn_cpu(begin, end, x["xyz1"].shape[1], x["xyz2"].shape[1],
                               hp(x["xyz1"]), hp(x["xyz2"]), hp(out["dist"]), hp(out["idx"]))
    elif op == "three_interpolate":
        b, m, c = x["points"].shape
        lib.jsnet_three_interpolate_cpu(begin, end, m, c, x["idx"].shape[1], hp(x["points"]),
                                        hp(x["idx"]), hp(x["weight"]), hp(out["out"]))
    elif op == "three_interpolate_grad":
        b, n, c = x["grad_out"].shape
        lib.jsnet_three_interpolate_grad_cpu(begin, end, x["m"], c, n, hp(x["grad_out"]),
                                             hp(x["idx"]), hp(x["weight"]), hp(out["grad"]))
    elif op == "gather_weight_net_sum":
        b, n, c = x["points"].shape
        _, m, s, units = x["hidden"].shape
        lib.jsnet_gather_weight_net_sum_cpu(begin, end, n, c, m, s, units, hp(x["points"]),
                                            hp(x["idx"]), hp(x["hidden"]), hp(x["kernel"]),
                                            hp(x["bias"]), hp(out["out"]))
    elif op == "gather_weight_net_sum_grad":
        # work items: batch elements for the points' gradient; the row blocks of the weight net's
        # gradients in the same proportion, and their sum over the blocks after the last range
        b, n, c = x["points"].shape
        _, m, s, units = x["hidden"].shape
        lib.jsnet_gather_weight_net_sum_grad_points_cpu(begin, end, n, c, m, s, units,
                                                        hp(x["grad_out"]), hp(x["idx"]),
                                                        hp(x["hidden"]), hp(x["kernel"]),
                                                        hp(x["bias"]), hp(out["grad_points"]))
        blocks = lib.jsnet_gather_weight_net_sum_grad_blocks_cpu(b, m)
        if begin == 0:
            floats = lib.jsnet_gather_weight_net_sum_grad_workspace_floats_cpu(b, m, c, units)
            out["workspace"] = np.full(max(floats, 1), np.nan, F32)
        workspace = out["workspace"]
        lib.jsnet_gather_weight_net_sum_grad_weight_net_cpu(
            begin * blocks // b, end * blocks // b, b, n, c, m, s, units, hp(x["points"]),
            hp(x["idx"]), hp(x["hidden"]), hp(x["kernel"]), hp(x["grad_out"]),
            hp(out["grad_hidden"]), hp(workspace))
        if end == b:
            lib.jsnet_gather_weight_net_sum_grad_reduce_cpu(0, units + 1, b, c, m, units,
                                                            hp(workspace), hp(out["grad_kernel"]),
                                                            hp(out["grad_bias"]))
            del out["workspace"]
    elif op == "first_non_finite":
        out["pos"][0] = lib.jsnet_first_non_finite_cpu(x["values"].size, hp(x["values"]))
    elif op == "first_out_of_range":
        out["pos"][0] = lib.jsnet_first_out_of_range_cpu(x["values"].size, hp(x["values"]),
                                                         x["limit"])
    else:
        raise KeyError(op)


def run_cpu_batch_norm(lib, case: Case, out: dict, splits: int):
    """The batch norm's CPU phases in the order of ops.cc: sums over row blocks, their combination
    (in block order), then the rows; each parallel phase in `splits` consecutive ranges."""
    x = case.inputs
    rows, c = x["x"].shape
    blocks = -(-rows // BATCH_NORM_BLOCK_ROWS)
    partial = np.full(max(blocks * 2 * c, 1), np.nan)

    def ranges(total):
        bounds = np.linspace(0, total, splits + 1).astype(np.int64)
        return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

    eps, relu = x["epsilon"], int(x["relu"])
    if case.op == "batch_norm":
        for lo, hi in ranges(blocks):
            lib.jsnet_batch_norm_moments_cpu(lo, hi, rows, c, hp(x["x"]), hp(partial))
        lib.jsnet_batch_norm_combine_moments_cpu(rows, c, hp(x["x"]), hp(partial), hp(out["mean"]),
                                                 hp(out["variance"]))
        for lo, hi in ranges(rows):
            lib.jsnet_batch_norm_normalize_cpu(lo, hi, c, hp(x["x"]), hp(out["mean"]),
                                               hp(out["variance"]), hp(x["gamma"]), hp(x["beta"]),
                                               eps, relu, hp(out["y"]))
        return
    coefficients = np.full(3 * c, np.nan, F32)
    for lo, hi in ranges(blocks):
        lib.jsnet_batch_norm_grad_sums_cpu(lo, hi, rows, c, hp(x["grad_y"]), hp(x["x"]),
                                           hp(x["mean"]), hp(x["variance"]), hp(x["gamma"]),
                                           hp(x["beta"]), eps, relu, hp(partial))
    lib.jsnet_batch_norm_grad_combine_cpu(rows, c, hp(partial), hp(x["variance"]), hp(x["gamma"]),
                                          eps, hp(out["grad_gamma"]), hp(out["grad_beta"]),
                                          hp(coefficients))
    for lo, hi in ranges(rows):
        lib.jsnet_batch_norm_grad_x_cpu(lo, hi, c, hp(x["grad_y"]), hp(x["x"]), hp(x["mean"]),
                                        hp(x["beta"]), relu, hp(coefficients), hp(out["grad_x"]))


def run_cpu(lib, case: Case, splits: int = 1):
    """Runs the CPU function over all work items, in `splits` consecutive ranges."""
    outs = {name: garbage(shape, dt) for name, (shape, dt, _) in op_outputs(case).items()}
    if case.op in ("batch_norm", "batch_norm_grad"):
        run_cpu_batch_norm(lib, case, outs, splits)
        return outs
    total = cpu_work_items(case)
    if case.op in ("first_non_finite", "first_out_of_range"):
        splits = 1
    bounds = np.linspace(0, total, splits + 1).astype(np.int64)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi > lo or total == 0:
            cpu_call(lib, case, outs, int(lo), int(hi))
    return outs


def reference(case: Case):
    """(outputs, abs-sums for 'grad'/'float' outputs or None)."""
    x = case.inputs
    op = case.op
    if op == "farthest_point_sample":
        return ref_fps(x["xyz"], x["npoint"]), None
    if op == "gather_point":
        return ref_gather(x["xyz"], x["idx"]), None
    if op == "gather_point_grad":
        return ref_gather_grad(x["grad_out"], x["idx"], x["n"])
    if op == "query_ball_point":
        return ref_ball(x["xyz"], x["new_xyz"], x["radius"], x["nsample"]), None
    if op == "group_point":
        return ref_group(x["points"], x["idx"]), None
    if op == "group_point_grad":
        return ref_group_grad(x["grad_out"], x["idx"], x["n"])
    if op == "knn_point":
        return ref_knn(x["xyz"], x["new_xyz"], x["k"]), None
    if op == "three_nn":
        return ref_three_nn(x["xyz1"], x["xyz2"]), None
    if op == "three_interpolate":
        return ref_interp(x["points"], x["idx"], x["weight"])
    if op == "three_interpolate_grad":
        return ref_interp_grad(x["grad_out"], x["idx"], x["weight"], x["m"])
    if op == "gather_weight_net_sum":
        return ref_gather_weight_net_sum(x["points"], x["idx"], x["hidden"], x["kernel"], x["bias"])
    if op == "gather_weight_net_sum_grad":
        return ref_gather_weight_net_sum_grad(x["points"], x["idx"], x["hidden"], x["kernel"],
                                              x["bias"], x["grad_out"])
    if op == "batch_norm":
        return ref_batch_norm(x["x"], x["gamma"], x["beta"], x["epsilon"], x["relu"])
    if op == "batch_norm_grad":
        return ref_batch_norm_grad(x["grad_y"], x["x"], x["gamma"], x["beta"], x["epsilon"], x["relu"])
    if op == "first_non_finite":
        return ref_first_non_finite(x["values"]), None
    if op == "first_out_of_range":
        return ref_first_out_of_range(x["values"], x["limit"]), None
    raise KeyError(op)


class CudaRunner:
    """Uploads a case's inputs once; launch() enqueues the launcher on a dedicated stream."""

    def __init__(self, lib, cp, case: Case, stream):
        self.lib, self.cp, self.case, self.stream = lib, cp, case, stream
        self.dev = {k: cp.asarray(v) for k, v in case.inputs.items() if isinstance(v, np.ndarray)}
        self.out = {name: cp.asarray(garbage(shape, dt))
                    for name, (shape, dt, _) in op_outputs(case).items()}
        self.workspace = None
        if case.op == "farthest_point_sample":
            b, n, _ = case.inputs["xyz"].shape
            self.workspace = cp.full((max(b * n, 1),), np.nan, F32)
        elif case.op == "knn_point":
            b, n, _ = case.inputs["xyz"].shape
            m = case.inputs["new_xyz"].shape[1]
            floats = lib.jsnet_knn_point_cuda_workspace_floats(b, n, m, case.inputs["k"])
            if floats < 0:
                raise RuntimeError(f"negative knn workspace size {floats}")
            if floats > 0:
                self.workspace = cp.full((floats,), np.nan, F32)
        elif case.op in ("batch_norm", "batch_norm_grad"):
            rows, c = case.inputs["x"].shape
            doubles = lib.jsnet_batch_norm_cuda_workspace_doubles(rows, c)
            self.workspace = cp.full((max(doubles, 1),), np.nan, np.float64)
        cp.cuda.Device().synchronize()

    def launch(self) -> int:
        x = self.case.inputs
        d = self.dev
        o = self.out
        lib = self.lib
        s = self.stream.ptr
        op = self.case.op
        ws = dp(self.workspace) if self.workspace is not None else None
        if op == "farthest_point_sample":
            b, n, _ = x["xyz"].shape
            return lib.jsnet_farthest_point_sample_cuda(b, n, x["npoint"], dp(d["xyz"]), ws,
                                                        dp(o["idx"]), s)
        if op == "gather_point":
            b, n, _ = x["xyz"].shape
            return lib.jsnet_gather_point_cuda(b, n, x["idx"].shape[1], dp(d["xyz"]),
                                               dp(d["idx"]), dp(o["out"]), s)
        if op == "gather_point_grad":
            b, m = x["idx"].shape
            return lib.jsnet_gather_point_grad_cuda(b, x["n"], m, dp(d["grad_out"]), dp(d["idx"]),
                                                    dp(o["grad"]), s)
        if op == "query_ball_point":
            b, n, _ = x["xyz"].shape
            return lib.jsnet_query_ball_point_cuda(b, n, x["new_xyz"].shape[1], x["radius"],
                                                   x["nsample"], dp(d["xyz"]), dp(d["new_xyz"]),
                                                   dp(o["idx"]), dp(o["pts_cnt"]), s)
        if op == "group_point":
            b, n, c = x["points"].shape
            _, m, ns = x["idx"].shape
            return lib.jsnet_group_point_cuda(b, n, c, m, ns, dp(d["points"]), dp(d["idx"]),
                                              dp(o["out"]), s)
        if op == "group_point_grad":
            b, m, ns, c = x["grad_out"].shape
            return lib.jsnet_group_point_grad_cuda(b, x["n"], c, m, ns, dp(d["grad_out"]),
                                                   dp(d["idx"]), dp(o["grad"]), s)
        if op == "knn_point":
            b, n, _ = x["xyz"].shape
            return lib.jsnet_knn_point_cuda(b, n, x["new_xyz"].shape[1], x["k"], dp(d["xyz"]),
                                            dp(d["new_xyz"]), ws, dp(o["dist"]), dp(o["idx"]), s)
        if op == "three_nn":
            b, n, _ = x["xyz1"].shape
            return lib.jsnet_three_nn_cuda(b, n, x["xyz2"].shape[1], dp(d["xyz1"]),
                                           dp(d["xyz2"]), dp(o["dist"]), dp(o["idx"]), s)
        if op == "three_interpolate":
            b, m, c = x["points"].shape
            return lib.jsnet_three_interpolate_cuda(b, m, c, x["idx"].shape[1], dp(d["points"]),
                                                    dp(d["idx"]), dp(d["weight"]), dp(o["out"]),
                                                    s)
        if op == "three_interpolate_grad":
            b, n, c = x["grad_out"].shape
            return lib.jsnet_three_interpolate_grad_cuda(b, x["m"], c, n, dp(d["grad_out"]),
                                                         dp(d["idx"]), dp(d["weight"]),
                                                         dp(o["grad"]), s)
        if op in ("gather_weight_net_sum", "gather_weight_net_sum_grad"):
            b, n, c = x["points"].shape
            _, m, ns, units = x["hidden"].shape
            net = (dp(d["points"]), dp(d["idx"]), dp(d["hidden"]), dp(d["kernel"]), dp(d["bias"]))
            if op == "gather_weight_net_sum":
                return lib.jsnet_gather_weight_net_sum_cuda(b, n, c, m, ns, units, *net,
                                                            dp(o["out"]), s)
            return lib.jsnet_gather_weight_net_sum_grad_cuda(b, n, c, m, ns, units, *net,
                                                             dp(d["grad_out"]),
                                                             dp(o["grad_points"]),
                                                             dp(o["grad_hidden"]),
                                                             dp(o["grad_kernel"]),
                                                             dp(o["grad_bias"]), s)
        if op == "batch_norm":
            rows, c = x["x"].shape
            return lib.jsnet_batch_norm_cuda(rows, c, dp(d["x"]), dp(d["gamma"]), dp(d["beta"]),
                                             x["epsilon"], int(x["relu"]), ws, dp(o["y"]),
                                             dp(o["mean"]), dp(o["variance"]), s)
        if op == "batch_norm_grad":
            rows, c = x["x"].shape
            return lib.jsnet_batch_norm_grad_cuda(rows, c, dp(d["grad_y"]), dp(d["x"]),
                                                  dp(d["mean"]), dp(d["variance"]),
                                                  dp(d["gamma"]), dp(d["beta"]), x["epsilon"],
                                                  int(x["relu"]), ws, dp(o["grad_x"]),
                                                  dp(o["grad_gamma"]), dp(o["grad_beta"]), s)
        if op == "first_non_finite":
            return lib.jsnet_first_non_finite_cuda(x["values"].size, dp(d["values"]),
                                                   dp(o["pos"]), s)
        if op == "first_out_of_range":
            return lib.jsnet_first_out_of_range_cuda(x["values"].size, dp(d["values"]),
                                                     x["limit"], dp(o["pos"]), s)
        raise KeyError(op)

    def fetch(self) -> dict:
        self.stream.synchronize()
        return {k: self.cp.asnumpy(v) for k, v in self.out.items()}


# ----------------------------------------------------------------------------- driver


def median_ms(fn, repeats: int, budget_s: float = 2.0) -> float:
    times = []
    t_start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - t_start > budget_s:
            break
    return statistics.median(times)


def cuda_time_ms(runner: CudaRunner, repeats: int) -> float:
    cp = runner.cp
    for _ in range(3):
        rc = runner.launch()
        if rc != 0:
            raise RuntimeError(f"launch returned cudaError {rc}")
    runner.stream.synchronize()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeats):
        start.record(runner.stream)
        runner.launch()
        stop.record(runner.stream)
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def check_case(case: Case, cpu_lib, cuda_lib, cp, stream, args) -> dict:
    """Runs one case; returns timing info. Fills case.results with (label, Verdict)."""
    specs = op_outputs(case)
    timing = {}
    cpu_out = run_cpu(cpu_lib, case)
    if case.timed and not args.no_timing:
        timing["cpu_ms"] = median_ms(lambda: run_cpu(cpu_lib, case), args.cpu_repeats)

    ref_out, ref_abs = (None, None)
    if not args.no_reference:
        ref_out, ref_abs = reference(case)
        for name, (_, _, kind) in specs.items():
            abs_sum = ref_abs.get(name) if ref_abs else None
            k = kind
            if kind == "copy":
                k = "copy"
            elif kind == "float":
                k = "grad"  # float64 reference: tolerance relative to the sum of |terms|
            elif kind == "dist":
                k = "dist"
            case.results.append((f"cpu~ref {name}", compare(k, cpu_out[name], ref_out[name],
                                                              abs_sum)))
    if args.cpu_only and cpu_work_items(case) > 1:
        split_out = run_cpu(cpu_lib, case, splits=3)
        for name in specs:
            same = np.array_equal(split_out[name], cpu_out[name], equal_nan=True)
            case.results.append((f"cpu split {name}",
                                 Verdict(same, "" if same else "3-range run differs")))

    if cuda_lib is not None:
        runner = CudaRunner(cuda_lib, cp, case, stream)
        rc = runner.launch()
        try:
            gpu_out = runner.fetch()
        except Exception as exc:  # noqa: BLE001 - sticky CUDA errors surface here
            case.results.append(("cuda run", Verdict(False, f"{type(exc).__name__}: {exc}")))
            return timing
        if rc != 0:
            case.results.append(("cuda launch", Verdict(False, f"returned cudaError {rc}")))
            return timing
        abs_sums = None
        if any(kind == "grad" for (_, _, kind) in specs.values()):
            abs_sums = ref_abs if ref_abs is not None else reference(case)[1]
        for name, (_, _, kind) in specs.items():
            abs_sum = abs_sums.get(name) if abs_sums else None
            if kind == "grad":
                # two float32 summations in different orders: allow both their errors
                abs_sum = 2.0 * abs_sum
            case.results.append((f"cuda~cpu {name}", compare(kind, gpu_out[name], cpu_out[name],
                                                              abs_sum)))
        if case.timed and not args.no_timing:
            timing["gpu_ms"] = cuda_time_ms(runner, args.repeats)
        del runner
    return timing


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Compare the JSNet CUDA launchers with the CPU kernels (and a NumPy brute "
                    "force) over many sizes; time the S3DIS sizes.")
    parser.add_argument("--build", action="store_true",
                        help="build the libraries first (build_harness.py)")
    parser.add_argument("--lib-dir", default=str(build_harness.DEFAULT_OUT),
                        help="folder of the two libraries (default: %(default)s)")
    parser.add_argument("--archs", default=None,
                        help="CUDA archs for --build, e.g. 80,90 (default: the current GPU's, "
                             "else 90)")
    parser.add_argument("--cpu-only", action="store_true",
                        help="no GPU: check the CPU kernels against NumPy only")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the NumPy brute-force comparison")
    parser.add_argument("--no-timing", action="store_true", help="skip the timings")
    parser.add_argument("--quick", action="store_true", help="skip the S3DIS-sized cases")
    parser.add_argument("--repeats", type=int, default=20, help="timed CUDA runs (median)")
    parser.add_argument("--cpu-repeats", type=int, default=3, help="timed CPU runs (median)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--op", action="append", default=None,
                        help="only this op (repeatable), e.g. knn_point")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every comparison")
    args = parser.parse_args(argv)

    lib_dir = Path(args.lib_dir)
    cp = None
    if not args.cpu_only:
        try:
            import cupy as cp  # noqa: PLC0415 - only needed on the GPU machine

            device_arch = cp.cuda.Device().compute_capability  # e.g. "90"
        except Exception as exc:  # noqa: BLE001 - no CuPy or no usable GPU
            print(f"CuPy / GPU unavailable ({type(exc).__name__}: {exc}); "
                  "use --cpu-only to check the CPU kernels alone", file=sys.stderr)
            print("0 passed, 1 failed")
            return 1
    if args.build and args.archs is None:
        args.archs = device_arch if cp is not None else "90"
    if args.build:
        print(f"building into {lib_dir} (archs {args.archs}) ...", flush=True)
        try:
            build_harness.build(lib_dir, args.archs, cuda=not args.cpu_only, verbose=True)
        except (RuntimeError, ValueError) as exc:
            print(f"build failed: {exc}", file=sys.stderr)
            print("0 passed, 1 failed")
            return 1

    cpu_lib = load_library(lib_dir / build_harness.CPU_LIB_NAME, CPU_SIGNATURES)
    cuda_lib = stream = None
    if not args.cpu_only:
        cuda_lib = load_library(lib_dir / build_harness.CUDA_LIB_NAME, CUDA_SIGNATURES)
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        print(f"device: {name} (sm_{props['major']}{props['minor']}), CuPy {cp.__version__}, "
              f"CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, "
              f"driver {cp.cuda.runtime.driverGetVersion()}")
        stream = cp.cuda.Stream(non_blocking=True)

    rng = np.random.default_rng(args.seed)
    cases = make_cases(rng, quick=args.quick)
    if args.op:
        cases = [c for c in cases if c.op in args.op]

    passed = failed = 0
    table = []
    for case in cases:
        t0 = time.perf_counter()
        try:
            timing = check_case(case, cpu_lib, cuda_lib, cp, stream, args)
        except Exception as exc:  # noqa: BLE001 - report and go on
            timing = {}
            case.results.append(("error", Verdict(False, f"{type(exc).__name__}: {exc}")))
            if args.verbose:
                traceback.print_exc()
        ok = all(v.ok for _, v in case.results) and bool(case.results)
        passed += ok
        failed += not ok
        notes = "; ".join(f"{label}: {v.note}" for label, v in case.results
                          if (not v.ok) or (args.verbose and v.note) or "NOT bit-exact" in v.note)
        status = "ok  " if ok else "FAIL"
        print(f"[{status}] {case.op:24s} {case.shape:34s} {time.perf_counter() - t0:6.2f}s"
              + (f"  {notes}" if notes else ""), flush=True)
        if case.timed and not args.no_timing:
            table.append((case.op, case.shape, timing.get("gpu_ms"), timing.get("cpu_ms"), ok))

    if table:
        print()
        print(f"{'op':24s} {'shape':34s} {'GPU ms':>9s} {'CPU ms':>9s}  match")
        for op, shape, gpu, cpu, ok in table:
            gpu_s = f"{gpu:9.3f}" if gpu is not None else f"{'-':>9s}"
            cpu_s = f"{cpu:9.2f}" if cpu is not None else f"{'-':>9s}"
            print(f"{op:24s} {shape:34s} {gpu_s} {cpu_s}  {'yes' if ok else 'NO'}")
        print("(GPU: CUDA events, median; CPU: one thread, begin=0..end=all)")
    print()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
