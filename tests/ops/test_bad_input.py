"""Bad input raises InvalidArgumentError with a message naming the problem, in eager mode (static
checks) and inside tf.function with unknown dimensions (checks of the kernels / twins' asserts)."""

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops

NAN_XYZ = np.zeros((1, 8, 3), np.float32)
NAN_XYZ[0, 5, 1] = np.nan
INF_XYZ = np.zeros((1, 8, 3), np.float32)
INF_XYZ[0, 2, 0] = np.inf


def xyz(b=1, n=8, c=3):
    return np.random.default_rng(0).random((b, n, c), dtype=np.float32)


def idx(shape, value=0):
    return np.full(shape, value, np.int32)


def ones(shape):
    return np.ones(shape, np.float32)


def weight_net(hidden_shape, channels, units=None, bias=None):
    """hidden, kernel and bias of gather_weight_net_sum: kernel (units, channels), bias (bias,),
    both by default of hidden_shape's last size and `channels`."""
    units = hidden_shape[-1] if units is None else units
    bias = channels if bias is None else bias
    return np.ones(hidden_shape, np.float32), np.ones((units, channels), np.float32), np.ones(bias, np.float32)


GWNS = ops.gather_weight_net_sum

# (name, function, arguments, message pattern). Tensors among the arguments are fed through a
# tf.function with fully unknown shapes in the "dynamic" variant.
CASES = [
    ("fps rank", ops.farthest_point_sample, (4, xyz()[0]), r"xyz must have shape \(batch, points, 3\)"),
    ("fps last dim", ops.farthest_point_sample, (4, xyz(c=2)), r"xyz must have shape \(batch, points, 3\)"),
    ("fps npoint > N", ops.farthest_point_sample, (9, xyz()), r"npoint \(9\) exceeds the number of points"),
    ("fps npoint 0", ops.farthest_point_sample, (0, xyz()), r"npoint must be a positive integer"),
    ("fps NaN", ops.farthest_point_sample, (4, NAN_XYZ), r"non-finite"),
    ("fps Inf", ops.farthest_point_sample, (4, INF_XYZ), r"non-finite"),
    ("gather rank", ops.gather_point, (xyz(), idx((1, 2, 2))), r"idx must have shape \(batch, npoint\)"),
    ("gather last dim", ops.gather_point, (xyz(c=4), idx((1, 2))), r"xyz must have shape"),
    ("gather idx >= N", ops.gather_point, (xyz(), idx((1, 2), 8)), r"out of range"),
    ("gather idx < 0", ops.gather_point, (xyz(), idx((1, 2), -1)), r"out of range"),
    ("gather batch", ops.gather_point, (xyz(b=2), idx((3, 2))), r"batch sizes"),
    ("ball radius 0", ops.query_ball_point, (0.0, 4, xyz(), xyz()), r"radius must be a positive"),
    ("ball radius NaN", ops.query_ball_point, (float("nan"), 4, xyz(), xyz()), r"radius must be a positive"),
    ("ball nsample 0", ops.query_ball_point, (0.1, 0, xyz(), xyz()), r"nsample must be a positive"),
    ("ball nsample -3", ops.query_ball_point, (0.1, -3, xyz(), xyz()), r"nsample must be a positive"),
    ("ball last dim", ops.query_ball_point, (0.1, 4, xyz(), xyz(c=2)), r"new_xyz must have shape"),
    ("ball batch", ops.query_ball_point, (0.1, 4, xyz(b=2), xyz(b=1)), r"batch sizes"),
    ("ball NaN xyz", ops.query_ball_point, (0.1, 4, NAN_XYZ, xyz()), r"xyz has a non-finite"),
    ("ball NaN centre", ops.query_ball_point, (0.1, 4, xyz(), NAN_XYZ), r"new_xyz has a non-finite"),
    ("group rank", ops.group_point, (xyz(c=5), idx((1, 2))), r"idx must have shape \(batch, npoint, nsample\)"),
    ("group points rank", ops.group_point, (xyz()[0], idx((1, 2, 2))), r"points must have shape"),
    ("group idx >= N", ops.group_point, (xyz(c=5), idx((1, 2, 2), 8)), r"out of range"),
    ("group idx < 0", ops.group_point, (xyz(c=5), idx((1, 2, 2), -5)), r"out of range"),
    ("group batch", ops.group_point, (xyz(b=2, c=5), idx((1, 2, 2))), r"batch sizes"),
    ("knn k > N", ops.knn_point, (9, xyz(), xyz()), r"k \(9\) exceeds the number of points"),
    ("knn k 0", ops.knn_point, (0, xyz(), xyz()), r"k must be a positive integer"),
    ("knn last dim", ops.knn_point, (2, xyz(c=6), xyz()), r"xyz must have shape"),
    ("knn batch", ops.knn_point, (2, xyz(b=3), xyz(b=2)), r"batch sizes"),
    ("knn NaN", ops.knn_point, (2, xyz(), NAN_XYZ), r"non-finite"),
    ("three_nn rank", ops.three_nn, (xyz()[0], xyz()), r"xyz1 must have shape"),
    ("three_nn batch", ops.three_nn, (xyz(b=2), xyz(b=1)), r"batch sizes"),
    ("three_nn NaN", ops.three_nn, (xyz(), NAN_XYZ), r"xyz2 has a non-finite"),
    ("interp idx >= M", ops.three_interpolate, (xyz(c=4), idx((1, 5, 3), 8), xyz(n=5)), r"out of range"),
    ("interp idx last dim", ops.three_interpolate, (xyz(c=4), idx((1, 5, 2)), xyz(n=5, c=2)), r"idx must have shape"),
    ("interp weight shape", ops.three_interpolate, (xyz(c=4), idx((1, 5, 3)), xyz(n=6)), r"idx .* and weight .* same shape|weight"),
    ("interp batch", ops.three_interpolate, (xyz(b=2, c=4), idx((1, 5, 3)), xyz(n=5)), r"batch sizes"),
    ("gwns idx rank", GWNS, (xyz(c=4), idx((1, 2)), *weight_net((1, 2, 2, 3), 4)), r"idx must have shape \(batch, npoint,"),
    ("gwns idx >= N", GWNS, (xyz(c=4), idx((1, 2, 2), 8), *weight_net((1, 2, 2, 3), 4)), r"out of range"),
    ("gwns idx < 0", GWNS, (xyz(c=4), idx((1, 2, 2), -1), *weight_net((1, 2, 2, 3), 4)), r"out of range"),
    ("gwns hidden rank", GWNS, (xyz(c=4), idx((1, 2, 2)), *weight_net((1, 2, 2), 4)), r"hidden.*must have shape"),
    ("gwns hidden nsample", GWNS, (xyz(c=4), idx((1, 2, 2)), *weight_net((1, 2, 3, 3), 4)), r"hidden.*must have shape"),
    ("gwns kernel units", GWNS, (xyz(c=4), idx((1, 2, 2)), *weight_net((1, 2, 2, 3), 4, units=5)), r"kernel.*must have shape"),
    ("gwns kernel channels", GWNS, (xyz(c=4), idx((1, 2, 2)), *weight_net((1, 2, 2, 3), 5, bias=4)), r"kernel.*must have shape"),
    ("gwns bias channels", GWNS, (xyz(c=4), idx((1, 2, 2)), *weight_net((1, 2, 2, 3), 4, bias=5)), r"bias.*must have shape"),
    ("gwns batch", GWNS, (xyz(b=2, c=4), idx((1, 2, 2)), *weight_net((1, 2, 2, 3), 4)), r"batch sizes"),
    ("bn x scalar", ops.batch_norm_training, (ones(()), ones((1,)), ones((1,))), r"x must have shape \(\.\.\., channels\)"),
    ("bn gamma channels", ops.batch_norm_training, (xyz(), ones((4,)), ones((3,))), r"gamma must have shape \(channels,\)"),
    ("bn gamma scalar", ops.batch_norm_training, (xyz(), ones(()), ones((3,))), r"gamma must have shape \(channels,\)"),
    ("bn beta rank", ops.batch_norm_training, (xyz(), ones((3,)), ones((1, 3))), r"beta must have shape \(channels,\)"),
    ("bn epsilon 0", ops.batch_norm_training, (xyz(), ones((3,)), ones((3,)), 0.0), r"epsilon must be a positive finite"),
    ("bn epsilon NaN", ops.batch_norm_training, (xyz(), ones((3,)), ones((3,)), float("nan")), r"epsilon must be a positive finite"),
    ("bn relu 1", ops.batch_norm_training, (xyz(), ones((3,)), ones((3,)), 1e-3, 1), r"relu must be True or False"),
]

# Cases whose problem only a static check can see (a bad attribute value or a rank that no
# kernel would accept) are not repeated in the dynamic variant.
STATIC_ONLY = {
    "fps npoint 0", "ball radius 0", "ball radius NaN", "ball nsample 0", "ball nsample -3", "knn k 0",
    "bn epsilon 0", "bn epsilon NaN", "bn relu 1",
}


@pytest.mark.parametrize("name,fn,args,pattern", CASES, ids=[c[0] for c in CASES])
def test_eager(impl, name, fn, args, pattern):
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        fn(*args)


@pytest.mark.parametrize(
    "name,fn,args,pattern", [c for c in CASES if c[0] not in STATIC_ONLY], ids=[c[0] for c in CASES if c[0] not in STATIC_ONLY]
)
def test_in_tf_function_with_unknown_shapes(impl, name, fn, args, pattern):
    tensors = [a for a in args if isinstance(a, np.ndarray)]
    scalars = [a for a in args if not isinstance(a, np.ndarray)]
    signature = [tf.TensorSpec(None, tf.as_dtype(a.dtype)) for a in tensors]
    graph_fn = tf.function(lambda *ts: fn(*scalars, *ts), input_signature=signature)
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        graph_fn(*tensors)


@pytest.mark.parametrize("bad", [True, 2.5, "3", None])
def test_non_integer_sizes_are_rejected(impl, bad):
    with pytest.raises(tf.errors.InvalidArgumentError, match="npoint must be a positive integer"):
        ops.farthest_point_sample(bad, xyz())


def test_float_indices_are_rejected(impl):
    with pytest.raises(tf.errors.InvalidArgumentError, match="indices must be integers"):
        ops.gather_point(xyz(), np.zeros((1, 2), np.float32))


def test_int64_index_beyond_int32_does_not_wrap_into_range(impl):
    wrapping = np.array([[2**32 + 1]], np.int64)  # a plain int32 cast would make it index 1
    with pytest.raises(tf.errors.InvalidArgumentError, match="out of range"):
        ops.gather_point(xyz(), wrapping)
