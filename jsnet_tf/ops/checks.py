"""Input checks shared by both op implementations.

Static checks run while the op is created and raise `tf.errors.InvalidArgumentError` at once
(before a shape function could turn the problem into a less helpful ValueError). What only the
data can reveal (non-finite coordinates, indices out of range, sizes known only at run time) is
checked by the compiled kernels themselves, and by `tf.debugging` assertions in the pure-TF twins.
"""

import math
import numbers

import tensorflow as tf


def invalid(op, message):
    return tf.errors.InvalidArgumentError(None, None, f"{op}: {message}")


def as_float32(x):
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def as_int32(x):
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_integer:
        raise invalid("jsnet_tf.ops", f"indices must be integers, got {x.dtype.name}")
    # Saturating, so an int64 index beyond int32 stays out of range instead of wrapping into it.
    return x if x.dtype == tf.int32 else tf.saturate_cast(x, tf.int32)


def check_rank(op, name, x, rank, layout):
    if x.shape.rank is not None and x.shape.rank != rank:
        raise invalid(op, f"{name} must have shape {layout}, got {x.shape}")


def check_points(op, name, x, channels=3):
    """x must be (batch, points, channels), channels == `channels` unless None."""
    layout = f"(batch, points, {channels})" if channels else "(batch, points, channels)"
    check_rank(op, name, x, 3, layout)
    if channels and x.shape.rank == 3 and x.shape[2] is not None and x.shape[2] != channels:
        raise invalid(op, f"{name} must have shape {layout}, got {x.shape}")


def check_same_batch(op, a_name, a, b_name, b):
    if a.shape.rank and b.shape.rank:
        if a.shape[0] is not None and b.shape[0] is not None and a.shape[0] != b.shape[0]:
            raise invalid(op, f"batch sizes differ: {a_name} {a.shape} vs {b_name} {b.shape}")


def check_positive_int(op, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise invalid(op, f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive_float(op, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise invalid(op, f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_bool(op, name, value):
    if not isinstance(value, bool):
        raise invalid(op, f"{name} must be True or False, got {value!r}")
    return value


def check_channel_vector(op, name, v, x):
    """v must be (channels,) with channels the last axis of x (when the static shapes say)."""
    layout = "(channels,)"
    check_rank(op, name, v, 1, layout)
    channels = x.shape[-1] if x.shape.rank else None
    if v.shape.rank == 1 and None not in (channels, v.shape[0]) and v.shape[0] != channels:
        raise invalid(op, f"{name} must have shape {layout} = ({channels},) of x {x.shape}, got {v.shape}")


def check_at_most_points(op, name, value, x, points_name):
    """value (npoint, k) must not exceed the static number of points of x, when known."""
    n = x.shape[1] if x.shape.rank == 3 else None
    if n is not None and value > n:
        raise invalid(op, f"{name} ({value}) exceeds the number of points N ({n}) of {points_name}")


# ----------------------------------------------------------------- run-time checks (pure-TF twins)


def after(assertions, *tensors):
    """The tensors, usable only after the run-time assertions passed (so the assertion, not some
    later op, reports bad data, and graphs cannot prune the checks)."""
    if not assertions:
        return list(tensors)
    with tf.control_dependencies(assertions):
        return [tf.identity(t) for t in tensors]



def assert_finite(op, name, x):
    """Fails at run time when x holds NaN or Inf."""
    return tf.debugging.assert_all_finite(x, f"{op}: {name} has a non-finite coordinate (NaN or Inf)")


def assert_indices_in_range(op, name, idx, limit, points_name):
    """Fails at run time when idx holds a value outside [0, limit)."""
    message = f"{op}: {name} holds an index out of range [0, N) of {points_name}"
    return [
        tf.debugging.assert_greater_equal(idx, 0, message=message),
        tf.debugging.assert_less(idx, limit, message=message),
    ]


def assert_at_most_points(op, name, value, x, points_name):
    """Fails at run time when value exceeds the number of points of x."""
    return tf.debugging.assert_less_equal(
        value, tf.shape(x)[1], message=f"{op}: {name} ({value}) exceeds the number of points N of {points_name}"
    )


def assert_same_batch(op, a_name, a, b_name, b):
    return tf.debugging.assert_equal(
        tf.shape(a)[0], tf.shape(b)[0], message=f"{op}: batch sizes of {a_name} and {b_name} differ"
    )


def ensure_shape(op, name, x, shape, layout):
    """x with static shape `shape` (None: any size); when the static shape cannot prove it, a
    run-time assertion reports a mismatch before any computation uses x."""
    known = x.shape.rank == len(shape) and all(d is None or x.shape[i] == d for i, d in enumerate(shape))
    if known:
        return x
    dims = tf.shape(x)
    ok = tf.equal(tf.size(dims), len(shape))
    padded = tf.concat([dims, -tf.ones([len(shape)], tf.int32)], 0)[: len(shape)]
    for i, d in enumerate(shape):
        if d is not None:
            ok = tf.logical_and(ok, tf.equal(padded[i], d))
    with tf.control_dependencies([tf.debugging.Assert(ok, [f"{op}: {name} must have shape {layout}, got", dims])]):
        x = tf.identity(x)
    x.set_shape(shape)
    return x
