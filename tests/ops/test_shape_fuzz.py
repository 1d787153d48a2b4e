"""Hundreds of random shapes and arguments, some invalid: every call either returns outputs of the
documented shapes or raises InvalidArgumentError, exactly as an independent validity oracle says;
nothing else (no crash, hang or other exception)."""

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops

CASES_PER_OP = 60

# Per op: the array arguments with their required rank, and for xyz-like ones the channel count;
# which arrays are coordinates (must be finite); the size arguments.
SPECS = {
    "farthest_point_sample": dict(arrays={"xyz": (3, 3)}, coords=["xyz"], ints=["npoint"]),
    "gather_point": dict(arrays={"xyz": (3, 3), "idx": (2, None)}, coords=[], ints=[]),
    "query_ball_point": dict(arrays={"xyz": (3, 3), "new_xyz": (3, 3)}, coords=["xyz", "new_xyz"], ints=["nsample"]),
    "group_point": dict(arrays={"points": (3, None), "idx": (3, None)}, coords=[], ints=[]),
    "knn_point": dict(arrays={"xyz": (3, 3), "new_xyz": (3, 3)}, coords=["xyz", "new_xyz"], ints=["k"]),
    "three_nn": dict(arrays={"xyz1": (3, 3), "xyz2": (3, 3)}, coords=["xyz1", "xyz2"], ints=[]),
    "three_interpolate": dict(arrays={"points": (3, None), "idx": (3, 3), "weight": (3, 3)}, coords=[], ints=[]),
}


def _make_case(op_name, rng):
    b, n, m = int(rng.integers(0, 4)), int(rng.integers(0, 40)), int(rng.integers(0, 20))
    c, s = int(rng.integers(0, 7)), int(rng.integers(0, 9))
    cloud = lambda count, ch=3: rng.random((b, count, ch), dtype=np.float32)  # noqa: E731
    index = lambda *shape: rng.integers(0, max(n, 1), (b, *shape)).astype(np.int32)  # noqa: E731
    arrays = {
        "farthest_point_sample": lambda: {"xyz": cloud(n)},
        "gather_point": lambda: {"xyz": cloud(n), "idx": index(m)},
        "query_ball_point": lambda: {"xyz": cloud(n), "new_xyz": cloud(m)},
        "group_point": lambda: {"points": cloud(n, c), "idx": index(m, s)},
        "knn_point": lambda: {"xyz": cloud(n), "new_xyz": cloud(m)},
        "three_nn": lambda: {"xyz1": cloud(m), "xyz2": cloud(n)},
        "three_interpolate": lambda: {"points": cloud(n, c), "idx": index(m, 3), "weight": cloud(m)},
    }[op_name]()
    ints = {name: int(rng.integers(1, n + 3)) for name in SPECS[op_name]["ints"]}
    return arrays, ints


def _corrupt(rng, arrays, ints):
    name = list(arrays)[rng.integers(0, len(arrays))]
    a = arrays[name]
    kind = rng.integers(0, 8)
    if kind == 0 and a.ndim > 1:
        arrays[name] = a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])  # merge batch and points: one dimension less
    elif kind == 1 and a.dtype == np.float32 and a.size:
        a = a.copy()
        a.flat[rng.integers(0, a.size)] = rng.choice([np.nan, np.inf])
        arrays[name] = a
    elif kind == 2 and a.shape[0]:
        arrays[name] = np.concatenate([a, a[:1]], axis=0)  # one more batch element
    elif kind == 3 and ints:
        ints[list(ints)[rng.integers(0, len(ints))]] = int(rng.integers(-2, 1))
    elif kind == 4 and a.dtype == np.int32 and a.size:
        a = a.copy()
        a.flat[rng.integers(0, a.size)] = rng.choice([-1, 10**6])
        arrays[name] = a
    elif kind == 5:
        arrays[name] = np.concatenate([a, a[..., :1]], axis=-1)  # one more channel


def _is_valid(op_name, arrays, ints):
    spec = SPECS[op_name]
    for name, (rank, channels) in spec["arrays"].items():
        a = arrays[name]
        if a.ndim != rank or (channels is not None and a.shape[-1] != channels):
            return False
    if len({a.shape[0] for a in arrays.values()}) > 1:
        return False
    if any(v <= 0 for v in ints.values()):
        return False
    if any(not np.isfinite(arrays[name]).all() for name in spec["coords"]):
        return False
    first = arrays[list(arrays)[0]]
    n = first.shape[1]
    if ints.get("npoint", 0) > n or ints.get("k", 0) > n:
        return False
    if "idx" in arrays and arrays["idx"].size and ((arrays["idx"] < 0).any() or (arrays["idx"] >= n).any()):
        return False
    if op_name == "three_interpolate" and arrays["idx"].shape != arrays["weight"].shape:
        return False
    return True


def _expected_shapes(op_name, arrays, ints):
    a = arrays
    return {
        "farthest_point_sample": lambda: [(a["xyz"].shape[0], ints["npoint"])],
        "gather_point": lambda: [(*a["idx"].shape, 3)],
        "query_ball_point": lambda: [(*a["new_xyz"].shape[:2], ints["nsample"]), a["new_xyz"].shape[:2]],
        "group_point": lambda: [(*a["idx"].shape, a["points"].shape[2])],
        "knn_point": lambda: [(*a["new_xyz"].shape[:2], ints["k"])] * 2,
        "three_nn": lambda: [a["xyz1"].shape] * 2,
        "three_interpolate": lambda: [(*a["idx"].shape[:2], a["points"].shape[2])],
    }[op_name]()


OP_NAMES = list(SPECS)


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_random_shapes_either_work_or_raise_invalid_argument(impl, rng, op_name):
    fn = getattr(ops, op_name)
    outcomes = []
    for _ in range(CASES_PER_OP):
        arrays, ints = _make_case(op_name, rng)
        if rng.random() < 0.5:
            _corrupt(rng, arrays, ints)
        valid = _is_valid(op_name, arrays, ints)
        case = {**{k: v.shape for k, v in arrays.items()}, **ints}
        scalars = list(ints.values())
        if op_name == "query_ball_point":
            radius = float(rng.choice([0.3, 0.3, 0.3, 0.0, -0.1, np.nan]))
            scalars.insert(0, radius)
            valid = valid and radius > 0
        try:
            outputs = fn(*scalars, *arrays.values())
        except tf.errors.InvalidArgumentError as error:
            assert not valid, f"{op_name} rejected a valid case {case}: {error.message}"
            outcomes.append("rejected")
            continue
        assert valid, f"{op_name} accepted an invalid case {case}"
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        assert [tuple(o.shape) for o in outputs] == [tuple(s) for s in _expected_shapes(op_name, arrays, ints)], case
        outcomes.append("accepted")
    assert "accepted" in outcomes and "rejected" in outcomes  # both paths exercised
