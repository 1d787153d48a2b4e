"""The point ops of JSNet: the original's seven, with its names and argument order, and
gather_weight_net_sum, the depthwise decoding's weight net output layer, gather, weight and
reduce in one op; and batch_norm_training, the training-mode batch norm (+ ReLU) of the layers
in one op.

Two implementations with identical semantics:
  * ``custom``: compiled CPU (multithreaded) and CUDA kernels from ``tf_ops/`` (fast; the
    default when the library is built);
  * ``reference``: pure-TF twins from builtin ops (XLA-compilable, no library needed; used as the
    test reference and for exported SavedModels).

The implementation is chosen when an op is called (so, for a ``tf.function``, when it is traced):
the innermost ``use_implementation(...)`` block, else ``set_implementation(...)``, else the
``JSNET_OPS`` environment variable (``custom`` or ``reference``), else ``custom`` when the
library is built and current and ``reference`` otherwise.

The first time the compiled ops are about to run on a GPU, they check themselves there against
the CPU kernels (``gpu_self_check``); a GPU that fails gets one warning and the pure-TF ops.

Shapes: xyz (B, N, 3), new_xyz (B, M, 3), points (B, N, C); all float32, indices int32.
"""

from jsnet_tf.errors import UserError
from jsnet_tf.ops import checks, custom, gpu_self_check, library, reference
from jsnet_tf.ops.library import OpLibraryError
from jsnet_tf.scoped_choice import ScopedChoice

__all__ = [
    "IMPLEMENTATIONS",
    "OpLibraryError",
    "UnknownImplementationError",
    "batch_norm_training",
    "farthest_point_sample",
    "gather_point",
    "gather_weight_net_sum",
    "group_point",
    "implementation",
    "knn_point",
    "query_ball_point",
    "set_implementation",
    "three_interpolate",
    "three_nn",
    "use_implementation",
]

IMPLEMENTATIONS = ("custom", "reference")
_MODULES = {"custom": custom, "reference": reference}


class UnknownImplementationError(UserError, ValueError):
    """An unknown op implementation name."""


_CHOICE = ScopedChoice(
    "op implementation",
    IMPLEMENTATIONS,
    "JSNET_OPS",
    lambda: "custom" if library.available() else "reference",
    UnknownImplementationError,
)


def implementation():
    """The name of the implementation the next op call will use."""
    return _CHOICE.current()


def set_implementation(name):
    """Selects the implementation process-wide; None goes back to the environment/default."""
    _CHOICE.set(name, "set_implementation")


def use_implementation(name):
    """Uses `name` for the ops called (or traced) inside the block."""
    return _CHOICE.use(name, "use_implementation")


def _impl():
    name = implementation()
    if name == "custom":
        library.load()  # raises OpLibraryError saying how to build it
        if gpu_self_check.PROCESS.falls_back():
            name = "reference"
    return _MODULES[name]


def farthest_point_sample(npoint, xyz):
    """Farthest point sampling from index 0.

    Args: npoint: int, 1 <= npoint <= N. xyz: (B, N, 3).
    Returns: idx (B, npoint) int32; each next point is the first index farthest from those chosen.
    """
    op = "farthest_point_sample"
    npoint = checks.check_positive_int(op, "npoint", npoint)
    xyz = checks.as_float32(xyz)
    checks.check_points(op, "xyz", xyz)
    checks.check_at_most_points(op, "npoint", npoint, xyz, "xyz")
    return _impl().farthest_point_sample(npoint, xyz)


def gather_point(xyz, idx):
    """xyz (B, N, 3), idx (B, M) -> (B, M, 3) = xyz[b, idx[b, m]]. Differentiable w.r.t. xyz."""
    op = "gather_point"
    xyz, idx = checks.as_float32(xyz), checks.as_int32(idx)
    checks.check_points(op, "xyz", xyz)
    checks.check_rank(op, "idx", idx, 2, "(batch, npoint)")
    checks.check_same_batch(op, "xyz", xyz, "idx", idx)
    return _impl().gather_point(xyz, idx)


def query_ball_point(radius, nsample, xyz, new_xyz):
    """Ball query.

    Args: radius > 0; nsample >= 1; xyz (B, N, 3) candidates; new_xyz (B, M, 3) centres.
    Returns: idx (B, M, nsample) int32, the first nsample candidates in index order with squared
      distance < radius^2, remaining slots padded with the first hit (all 0 when there is no hit);
      pts_cnt (B, M) int32, the number of hits kept (0 <= pts_cnt <= nsample).
    """
    op = "query_ball_point"
    radius = checks.check_positive_float(op, "radius", radius)
    nsample = checks.check_positive_int(op, "nsample", nsample)
    xyz, new_xyz = checks.as_float32(xyz), checks.as_float32(new_xyz)
    checks.check_points(op, "xyz", xyz)
    checks.check_points(op, "new_xyz", new_xyz)
    checks.check_same_batch(op, "xyz", xyz, "new_xyz", new_xyz)
    return _impl().query_ball_point(radius, nsample, xyz, new_xyz)


def group_point(points, idx):
    """points (B, N, C), idx (B, M, S) -> (B, M, S, C) = points[b, idx[b, m, s]]. Differentiable."""
    op = "group_point"
    points, idx = checks.as_float32(points), checks.as_int32(idx)
    checks.check_points(op, "points", points, channels=None)
    checks.check_rank(op, "idx", idx, 3, "(batch, npoint, nsample)")
    checks.check_same_batch(op, "points", points, "idx", idx)
    return _impl().group_point(points, idx)


def knn_point(k, xyz, new_xyz):
    """Exact k nearest neighbours.

    Args: k, 1 <= k <= N; xyz (B, N, 3) candidates; new_xyz (B, M, 3) queries.
    Returns: dist (B, M, k) squared distances ascending, idx (B, M, k) int32; ties by lower index.
    """
    op = "knn_point"
    k = checks.check_positive_int(op, "k", k)
    xyz, new_xyz = checks.as_float32(xyz), checks.as_float32(new_xyz)
    checks.check_points(op, "xyz", xyz)
    checks.check_points(op, "new_xyz", new_xyz)
    checks.check_same_batch(op, "xyz", xyz, "new_xyz", new_xyz)
    checks.check_at_most_points(op, "k", k, xyz, "xyz")
    return _impl().knn_point(k, xyz, new_xyz)


def three_nn(xyz1, xyz2):
    """Three nearest xyz2 points of every xyz1 point.

    Args: xyz1 (B, N, 3) queries; xyz2 (B, M, 3) candidates.
    Returns: dist (B, N, 3) squared distances ascending, idx (B, N, 3) int32; ties by lower index;
      with M < 3 the missing slots hold dist inf and idx 0.
    """
    op = "three_nn"
    xyz1, xyz2 = checks.as_float32(xyz1), checks.as_float32(xyz2)
    checks.check_points(op, "xyz1", xyz1)
    checks.check_points(op, "xyz2", xyz2)
    checks.check_same_batch(op, "xyz1", xyz1, "xyz2", xyz2)
    return _impl().three_nn(xyz1, xyz2)


def three_interpolate(points, idx, weight):
    """points (B, M, C), idx (B, N, 3), weight (B, N, 3) -> (B, N, C) weighted sums of 3 points.

    Differentiable w.r.t. points only (the weights come from three_nn, which is not).
    """
    op = "three_interpolate"
    points, idx, weight = checks.as_float32(points), checks.as_int32(idx), checks.as_float32(weight)
    checks.check_points(op, "points", points, channels=None)
    checks.check_points(op, "idx", idx)
    checks.check_points(op, "weight", weight)
    if not idx.shape.is_compatible_with(weight.shape):
        raise checks.invalid(op, f"idx {idx.shape} and weight {weight.shape} must have the same shape")
    checks.check_same_batch(op, "points", points, "idx", idx)
    return _impl().three_interpolate(points, idx, weight)


def gather_weight_net_sum(points, idx, hidden, kernel, bias):
    """points (B, N, C), idx (B, M, S), hidden (B, M, S, H), kernel (H, C), bias (C,) -> (B, M, C):
    out[b, m] = sum_s points[b, idx[b, m, s]] * (hidden[b, m, s] @ kernel + bias), the products
    channel-wise.

    A weight net's last linear map, group_point, a product and a sum over S in one op that never
    holds the (B, M, S, C) channel weights or grouped points, not even for the gradient (it makes
    them again, a few at a time). Differentiable w.r.t. points, hidden, kernel and bias.
    """
    op = "gather_weight_net_sum"
    points, idx = checks.as_float32(points), checks.as_int32(idx)
    hidden, kernel, bias = checks.as_float32(hidden), checks.as_float32(kernel), checks.as_float32(bias)
    checks.check_points(op, "points", points, channels=None)
    checks.check_rank(op, "idx", idx, 3, "(batch, npoint, nsample)")
    checks.check_rank(op, "hidden", hidden, 4, "(batch, npoint, nsample, units)")
    checks.check_rank(op, "kernel", kernel, 2, "(units, channels)")
    checks.check_rank(op, "bias", bias, 1, "(channels,)")
    if not hidden.shape[:3].is_compatible_with(idx.shape):
        raise checks.invalid(op, f"hidden {hidden.shape} must have shape (batch, npoint, nsample, units) with {idx.shape} of idx")
    channels = points.shape[2:]
    if not kernel.shape.is_compatible_with(hidden.shape[3:].concatenate(channels)):
        layout = f"(units, channels) of hidden {hidden.shape} and points {points.shape}"
        raise checks.invalid(op, f"kernel {kernel.shape} must have shape {layout}")
    if not bias.shape.is_compatible_with(channels):
        raise checks.invalid(op, f"bias {bias.shape} must have shape (channels,) of points {points.shape}")
    checks.check_same_batch(op, "points", points, "idx", idx)
    return _impl().gather_weight_net_sum(points, idx, hidden, kernel, bias)


def batch_norm_training(x, gamma, beta, epsilon=1e-3, relu=False):
    """Training-mode batch norm over every axis of x but the last, with the ReLU after it when `relu`.

    Args: x (..., C); gamma, beta (C,); epsilon > 0, added to the variance; relu: True or False.
    Returns: y (..., C) = (x - mean) * rsqrt(variance + epsilon) * gamma + beta, then max(y, 0) when
      relu; mean (C,) and variance (C,), the batch moments over all rows of x (the BIASED
      variance, which the original normalises with and feeds to its moving averages).
    Differentiable w.r.t. x, gamma and beta through y. mean and variance carry no gradient (they
    only feed the moving averages): both implementations return them through stop_gradient. The
    compiled gradient recomputes the normalisation and the ReLU mask from x and the two moments,
    so no (R, C) tensor is kept for it; sums run in double over fixed row blocks, so the results
    do not depend on the number of threads.
    """
    op = "batch_norm_training"
    epsilon = checks.check_positive_float(op, "epsilon", epsilon)
    relu = checks.check_bool(op, "relu", relu)
    x, gamma, beta = checks.as_float32(x), checks.as_float32(gamma), checks.as_float32(beta)
    if x.shape.rank == 0:
        raise checks.invalid(op, f"x must have shape (..., channels), got {x.shape}")
    checks.check_channel_vector(op, "gamma", gamma, x)
    checks.check_channel_vector(op, "beta", beta, x)
    return _impl().batch_norm_training(x, gamma, beta, epsilon, relu)
