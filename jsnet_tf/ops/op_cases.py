"""One small checked case per point op: what the GPU self-check (`gpu_self_check`: a GPU's kernels
against the CPU kernels) and `jsnet-doctor`'s self-test (every op on every device against the
float64 brute force of `numpy_reference`) run.

A case names the op (a function of an implementation module: `custom` or `reference`), draws a
small input (milliseconds to run), gives the float64 answer and, for a differentiable op, which
argument (or arguments) the gradient is taken w.r.t. and its float64 gradient (one array per
argument). Adding an op to both checks is adding one entry to CASES.

Coordinates lie on a 1/64 grid, so float32 distances are exact and ties are frequent: indices and
distances must match the reference exactly; sums of float32 products (interpolation, gradients)
within the case's tolerance.
"""

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from jsnet_tf.ops import numpy_reference as ref


@dataclasses.dataclass(frozen=True)
class OpCase:
    """An op, a small input of it and its float64 answer (see the module docstring)."""

    name: str  # the op's function name in an implementation module
    draw: Callable[[np.random.Generator], tuple]  # the op's arguments: NumPy arrays and Python numbers
    reference: Callable[..., tuple]  # arguments -> float64 outputs, in the op's output order
    grad_arg: int | tuple[int, ...] | None = None  # position(s) of the arguments the op is differentiable w.r.t.
    # (upstream, *arguments) -> float64 gradient: an array, or a tuple of them when grad_arg is a tuple
    reference_grad: Callable[..., np.ndarray | tuple] | None = None
    rtol: float = 1e-5  # float outputs and gradients; integer outputs must be equal
    atol: float = 1e-6


@dataclasses.dataclass
class Trial:
    """One drawn input of a case: its arguments and the upstream gradient of the first output."""

    case: OpCase
    args: tuple
    upstream: np.ndarray | None


@dataclasses.dataclass
class Result:
    """What an implementation gave for a trial on a device, and how long it took."""

    outputs: list  # NumPy arrays
    grad: np.ndarray | tuple | None  # a tuple when the case's grad_arg is
    device: str  # where the first output was computed (TensorFlow may place an op elsewhere)
    forward_seconds: float
    grad_seconds: float | None


def _interpolate_grad(upstream, points, idx, weight):
    return sum(ref.scatter_add(upstream * weight[:, :, s : s + 1], idx[:, :, s], points.shape[1]) for s in range(3))


def _normal(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def _indices(rng, high, shape):
    return rng.integers(0, high, shape).astype(np.int32)


def _weights(rng, shape):
    weight = rng.random(shape).astype(np.float32) + np.float32(0.1)
    return weight / weight.sum(-1, keepdims=True)


BATCH, POINTS, QUERIES, CHANNELS, UNITS = 2, 64, 16, 4, 5


def _batch_norm_inputs(rng):
    x = (rng.standard_normal((BATCH, POINTS, CHANNELS)) * 2.0 + 3.0).astype(np.float32)
    gamma = (rng.random(CHANNELS) + 0.5).astype(np.float32)
    return x, gamma, ref.relu_safe_beta(x, gamma), 1e-3, True


CASES = (
    OpCase(
        "farthest_point_sample",
        draw=lambda rng: (QUERIES, ref.grid_points(rng, (BATCH, POINTS, 3))),
        reference=lambda npoint, xyz: (ref.farthest_point_sample(npoint, xyz),),
    ),
    OpCase(
        "gather_point",
        draw=lambda rng: (_normal(rng, (BATCH, POINTS, 3)), _indices(rng, POINTS, (BATCH, QUERIES))),
        reference=lambda xyz, idx: (ref.gather_point(xyz, idx),),
        grad_arg=0,
        reference_grad=lambda upstream, xyz, idx: ref.scatter_add(upstream, idx, xyz.shape[1]),
    ),
    OpCase(
        "query_ball_point",
        draw=lambda rng: (
            ref.grid_radius(rng, max_sq_cells=200), 8,
            ref.grid_points(rng, (BATCH, POINTS, 3)), ref.grid_points(rng, (BATCH, QUERIES, 3)),
        ),
        reference=ref.query_ball_point,
    ),
    OpCase(
        "group_point",
        draw=lambda rng: (_normal(rng, (BATCH, POINTS, CHANNELS)), _indices(rng, POINTS, (BATCH, QUERIES, 8))),
        reference=lambda points, idx: (ref.group_point(points, idx),),
        grad_arg=0,
        reference_grad=lambda upstream, points, idx: ref.scatter_add(upstream, idx, points.shape[1]),
    ),
    OpCase(
        "knn_point",
        draw=lambda rng: (8, ref.grid_points(rng, (BATCH, POINTS, 3)), ref.grid_points(rng, (BATCH, QUERIES, 3))),
        reference=lambda k, xyz, new_xyz: ref.k_nearest(k, xyz, new_xyz),
    ),
    OpCase(
        "three_nn",
        draw=lambda rng: (ref.grid_points(rng, (BATCH, POINTS, 3)), ref.grid_points(rng, (BATCH, QUERIES, 3))),
        reference=lambda xyz1, xyz2: ref.k_nearest(3, xyz2, xyz1),
    ),
    OpCase(
        "three_interpolate",
        draw=lambda rng: (
            _normal(rng, (BATCH, QUERIES, CHANNELS)), _indices(rng, QUERIES, (BATCH, POINTS, 3)), _weights(rng, (BATCH, POINTS, 3)),
        ),
        reference=lambda points, idx, weight: (ref.three_interpolate(points, idx, weight),),
        grad_arg=0,
        reference_grad=_interpolate_grad,
    ),
    OpCase(
        "gather_weight_net_sum",
        draw=lambda rng: (
            _normal(rng, (BATCH, POINTS, CHANNELS)),
            _indices(rng, POINTS, (BATCH, QUERIES, 8)),
            _normal(rng, (BATCH, QUERIES, 8, UNITS)),
            _normal(rng, (UNITS, CHANNELS)),
            _normal(rng, (CHANNELS,)),
        ),
        reference=lambda *args: (ref.gather_weight_net_sum(*args),),
        grad_arg=(0, 2, 3, 4),
        reference_grad=ref.gather_weight_net_sum_grads,
        rtol=1e-4,  # sums of up to 8 * (UNITS + 1) float32 products, in an order of each kernel's choosing
        atol=1e-5,
    ),
    OpCase(
        "batch_norm_training",
        draw=_batch_norm_inputs,
        reference=ref.batch_norm_training,
        grad_arg=(0, 1, 2),
        reference_grad=ref.batch_norm_training_grad,
        # gamma's gradient sums 128 products of size ~1 that cancel to ~0.05: a float32 sum (the
        # twin's) is off by ~1e-6 of the terms' total, ~1e-4
        atol=1e-4,
    ),
)


def draw(case, rng):
    """A fresh input of `case`, with an upstream gradient for its first output when it has one."""
    args = case.draw(rng)
    upstream = None
    if case.grad_arg is not None:
        shape = case.reference(*args)[0].shape
        upstream = rng.standard_normal(shape).astype(np.float32)
    return Trial(case, args, upstream)


def expected(trial):
    """The float64 outputs and gradient of a trial."""
    case = trial.case
    outputs = [np.asarray(o) for o in case.reference(*trial.args)]
    grad = None if trial.upstream is None else case.reference_grad(trial.upstream, *trial.args)
    return outputs, grad


def run(trial, implementation, device, gradient=True):
    """Runs the trial's op of `implementation` (a module of op functions) on `device`: its outputs
    and, unless `gradient` is False, the gradient of sum(first output * upstream). Call it eagerly
    with no tape paused (not while a tf.function traces: `gpu_self_check` runs it in a thread)."""
    case = trial.case
    with tf.device(device):
        args = [tf.constant(a) if isinstance(a, np.ndarray) else a for a in trial.args]
        want_grad = gradient and case.grad_arg is not None
        started = time.perf_counter()
        with tf.GradientTape() as tape:
            sources = [args[i] for i in grad_positions(case)] if want_grad else []
            tape.watch(sources)
            out = getattr(implementation, case.name)(*args)
        outputs = list(out) if isinstance(out, (tuple, list)) else [out]
        arrays = [o.numpy() for o in outputs]
        forward_seconds = time.perf_counter() - started
        grad, grad_seconds = None, None
        if want_grad:
            started = time.perf_counter()
            grads = tape.gradient(outputs[0], sources, output_gradients=tf.constant(trial.upstream))
            grads = tuple(None if g is None else g.numpy() for g in grads)
            grad = grads if isinstance(case.grad_arg, tuple) else grads[0]
            grad_seconds = time.perf_counter() - started
    return Result(arrays, grad, outputs[0].device, forward_seconds, grad_seconds)


def grad_positions(case):
    """The positions of the arguments the case's gradient is taken w.r.t. (empty: none)."""
    if case.grad_arg is None:
        return ()
    return case.grad_arg if isinstance(case.grad_arg, tuple) else (case.grad_arg,)


def _mismatch(what, got, want, case):
    """Why `got` is not `want` (a short phrase), or None."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"{what} has shape {got.shape}, expected {want.shape}"
    if np.issubdtype(got.dtype, np.integer):
        wrong = got != want
    else:
        wrong = ~np.isclose(got.astype(np.float64), want, rtol=case.rtol, atol=case.atol)  # inf == inf
    if not wrong.any():
        return None
    first = tuple(int(i) for i in np.argwhere(wrong)[0])
    example = f"{float(got[first]):.7g} vs {float(want[first]):.7g}"
    return f"{what} differs at {int(wrong.sum())} of {wrong.size} values (first at {first}: {example})"


def differences(case, result, outputs, grad):
    """Short phrases saying where `result` differs from the `outputs` and `grad` it should have given
    (float64 answers, or another device's Result fields); empty when it agrees."""
    found = []
    if len(result.outputs) != len(outputs):
        return [f"{len(result.outputs)} outputs, expected {len(outputs)}"]
    for i, (got, want) in enumerate(zip(result.outputs, outputs)):
        found.append(_mismatch(f"output {i}", got, want, case))
    if isinstance(grad, tuple):  # one gradient per argument, named by its position
        for position, got, want in zip(case.grad_arg, result.grad or (None,) * len(grad), grad):
            what = f"gradient w.r.t. argument {position}"
            found.append(f"no {what}" if got is None else _mismatch(what, got, want, case))
    elif grad is not None:
        found.append("no gradient" if result.grad is None else _mismatch("gradient", result.grad, grad, case))
    return [f for f in found if f]
