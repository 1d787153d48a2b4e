"""gather_weight_net_sum: out[b, m] = sum_s points[b, idx[b, m, s]] * (bias + hidden[b, m, s] @ kernel),
against the float64 brute force; its four gradients against the brute force, finite differences of
the float64 twin and the pure-TF twin's gradients; the compiled kernels' results the same for any
number of threads."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.ops import numpy_reference as ref
from jsnet_tf.ops import reference

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# (batch, N points, C, M queries, nsample, units): C below, off and on the SIMD widths (8, 16) and
# register tiles (32, 64 channels), K = 1 and odd, units off the widths, M = 1, several batch
# elements, the network's sizes (C = 256 + 3 features, 32 units, 16 neighbours).
SIZES = [
    (1, 1, 1, 1, 1, 1),
    (2, 7, 5, 3, 4, 3),
    (3, 37, 17, 13, 16, 32),
    (1, 64, 131, 40, 1, 32),
    (4, 30, 33, 1, 16, 32),
    (2, 20, 64, 9, 7, 9),
    (2, 50, 259, 40, 16, 32),
    (1, 40, 512, 12, 16, 32),
    (2, 25, 8, 30, 5, 16),
]


def _inputs(rng, batch, n, c, m, nsample, units):
    points = rng.standard_normal((batch, n, c)).astype(np.float32)
    idx = rng.integers(0, n, (batch, m, nsample)).astype(np.int32)  # repeated indices: the scatter adds up
    hidden = rng.standard_normal((batch, m, nsample, units)).astype(np.float32)
    kernel = rng.standard_normal((units, c)).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    return points, idx, hidden, kernel, bias


def _grads(points, idx, hidden, kernel, bias, upstream):
    """(d points, d hidden, d kernel, d bias) of sum(out * upstream) with the current implementation."""
    sources = [tf.constant(x) for x in (points, hidden, kernel, bias)]
    with tf.GradientTape() as tape:
        tape.watch(sources)
        out = ops.gather_weight_net_sum(sources[0], idx, *sources[1:])
    return [g.numpy() for g in tape.gradient(out, sources, output_gradients=upstream)]


def _assert_close(got, want, rtol):
    """Equal within rtol of the largest value: sums of float32 products in any order."""
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, float(np.abs(want).max(initial=0))))


@pytest.mark.parametrize("batch,n,c,m,nsample,units", SIZES)
def test_matches_numpy(impl, rng, batch, n, c, m, nsample, units):
    args = _inputs(rng, batch, n, c, m, nsample, units)
    got = ops.gather_weight_net_sum(*args).numpy()
    assert got.shape == (batch, m, c)
    _assert_close(got, ref.gather_weight_net_sum(*args), 1e-5)


def test_equals_the_composition_it_replaces(impl, rng):
    """The weight net's last 1x1 convolution, group_point, a product and a sum over the neighbours."""
    points, idx, hidden, kernel, bias = _inputs(rng, 2, 50, 9, 20, 16, 32)
    weights = tf.nn.bias_add(tf.reshape(tf.reshape(hidden, (-1, 32)) @ kernel, (2, 20, 16, 9)), bias)
    plain = tf.reduce_sum(ops.group_point(points, idx) * weights, axis=2).numpy()
    _assert_close(ops.gather_weight_net_sum(points, idx, hidden, kernel, bias).numpy(), plain, 1e-5)


@pytest.mark.parametrize("batch,n,c,m,nsample,units", SIZES)
def test_gradients_match_numpy(impl, rng, batch, n, c, m, nsample, units):
    args = _inputs(rng, batch, n, c, m, nsample, units)
    upstream = rng.standard_normal((batch, m, c)).astype(np.float32)
    wanted = ref.gather_weight_net_sum_grads(upstream, *args)
    for name, got, want in zip(("points", "hidden", "kernel", "bias"), _grads(*args, upstream), wanted):
        assert got.shape == want.shape, name
        _assert_close(got, want, 1e-5)


@pytest.mark.parametrize("size", [(2, 6, 3, 4, 5, 2), (1, 5, 9, 3, 1, 4)])
def test_gradients_match_finite_differences_of_the_float64_twin(impl, rng, size):
    """The op's Jacobians (float32) against central differences of the pure-TF twin in float64
    (exact there: the output is affine in every single input value)."""
    points, idx, hidden, kernel, bias = _inputs(rng, *size)
    wide = [x.astype(np.float64) for x in (points, hidden, kernel, bias)]
    twin = lambda *args: reference.gather_weight_net_sum(*map(tf.convert_to_tensor, (args[0], idx, *args[1:])))  # noqa: E731
    _, numerical = tf.test.compute_gradient(twin, wide)
    theoretical, _ = tf.test.compute_gradient(lambda p, h, k, b: ops.gather_weight_net_sum(p, idx, h, k, b), [points, hidden, kernel, bias])
    for t, nu in zip(theoretical, numerical):
        _assert_close(t, nu, 1e-5)


def test_compiled_gradients_equal_the_pure_tf_twins(rng):
    args = _inputs(rng, 2, 300, 64, 128, 16, 32)
    upstream = rng.standard_normal((2, 128, 64)).astype(np.float32)
    ops.library.load()
    grads = {}
    for name in ops.IMPLEMENTATIONS:
        with ops.use_implementation(name):
            grads[name] = _grads(*args, upstream)
    for custom, twin in zip(grads["custom"], grads["reference"]):
        _assert_close(custom, twin, 1e-5)


def test_empty_queries(impl, rng):
    points, idx, hidden, kernel, bias = _inputs(rng, 2, 5, 3, 0, 4, 6)
    upstream = np.zeros((2, 0, 3), np.float32)
    assert ops.gather_weight_net_sum(points, idx, hidden, kernel, bias).shape == (2, 0, 3)
    grad_points, grad_hidden, grad_kernel, grad_bias = _grads(points, idx, hidden, kernel, bias, upstream)
    assert grad_hidden.shape == (2, 0, 4, 6)
    for grad, shape in ((grad_points, (2, 5, 3)), (grad_kernel, (6, 3)), (grad_bias, (3,))):
        np.testing.assert_array_equal(grad, np.zeros(shape))


_THREADS_SCRIPT = """
import json, sys
import numpy as np, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads({threads})
sys.path.insert(0, {root!r})
from tests.ops.test_gather_weight_net_sum import _grads, _inputs
from jsnet_tf import ops
rng = np.random.default_rng(7)
args = _inputs(rng, 3, 400, 67, 300, 16, 32)
upstream = rng.standard_normal((3, 300, 67)).astype(np.float32)
with ops.use_implementation("custom"):
    out = [ops.gather_weight_net_sum(*args).numpy(), *_grads(*args, upstream)]
np.savez({path!r}, *out)
"""


@pytest.mark.slow
def test_compiled_results_do_not_depend_on_the_number_of_threads(tmp_path):
    """One thread and four give the same bits: the kernel and bias gradients are summed over row
    blocks fixed by the shapes, in block order."""
    results = []
    for threads in (1, 4):
        path = tmp_path / f"threads{threads}.npz"
        script = _THREADS_SCRIPT.format(threads=threads, root=str(REPO_ROOT), path=str(path))
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=os.environ, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        with np.load(path) as saved:
            results.append([saved[f"arr_{i}"] for i in range(5)])
    for one, four in zip(*results):
        np.testing.assert_array_equal(one, four)
