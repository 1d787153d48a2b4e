"""The GPU self-check (jsnet_tf.ops.gpu_self_check), tested on the CPU: CI has no GPU, so the
check is handed the CPU as the device to check and a deliberately wrong implementation as the
kernels that run there, as a GPU with broken CUDA kernels would be."""

import types
import warnings

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.ops import custom, gpu_self_check, library, op_cases, reference
from jsnet_tf.ops import numpy_reference as ref

CPU = gpu_self_check.CPU


def _reversed_knn(k, xyz, new_xyz):
    dist, idx = custom.knn_point(k, xyz, new_xyz)
    return dist[..., ::-1], idx[..., ::-1]


def _group_point_with_doubled_gradient(points, idx):
    @tf.custom_gradient
    def grouped(points):
        out = custom.group_point(points, idx)
        return out, lambda upstream: 2.0 * custom._group_point_grad(types.SimpleNamespace(inputs=(points, idx)), upstream)[0]

    return grouped(points)


def wrong_kernels():
    """The compiled ops with a wrong knn_point (neighbours in reverse) and a wrong group_point
    gradient (doubled): what a GPU with faulty CUDA kernels would compute."""
    functions = {case.name: getattr(custom, case.name) for case in op_cases.CASES}
    functions.update(knn_point=_reversed_knn, group_point=_group_point_with_doubled_gradient)
    return types.SimpleNamespace(**functions)


@pytest.fixture
def faulty_device(monkeypatch):
    """The process's self-check, set to check the CPU with the wrong kernels, which the compiled
    ops also use there: without the fallback their answers are wrong."""
    library.load()
    wrong = wrong_kernels()
    monkeypatch.setattr(gpu_self_check, "PROCESS", gpu_self_check.GpuSelfCheck(wrong, devices=lambda: [CPU]))
    monkeypatch.setitem(ops._MODULES, "custom", wrong)
    monkeypatch.delenv(gpu_self_check.ENV_VAR, raising=False)
    return wrong


def _knn_inputs(rng):
    return ref.grid_points(rng, (2, 64, 3)), ref.grid_points(rng, (2, 16, 3))


def test_correct_kernels_pass():
    library.load()
    assert gpu_self_check.compare(custom, CPU) == {}
    assert gpu_self_check.compare(reference, CPU) == {}


def test_check_names_each_wrong_op_and_what_differs():
    library.load()
    failures = gpu_self_check.compare(wrong_kernels(), CPU)
    assert set(failures) == {"knn_point", "group_point"}
    assert failures["knn_point"].startswith("output 0 differs")
    assert failures["group_point"].startswith("gradient differs")


def test_failing_device_warns_once_and_falls_back_to_pure_tf(faulty_device, rng):
    xyz, new_xyz = _knn_inputs(rng)
    want_dist, want_idx = ref.k_nearest(8, xyz, new_xyz)
    with ops.use_implementation("custom"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            dist, idx = ops.knn_point(8, xyz, new_xyz)
            np.testing.assert_array_equal(idx.numpy(), want_idx)
            np.testing.assert_array_equal(dist.numpy(), want_dist)
    messages = [str(w.message) for w in caught if issubclass(w.category, gpu_self_check.GpuSelfCheckWarning)]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"GPU self-check: on {CPU} the compiled group_point, knn_point differ from the CPU kernels")
    assert "use the pure-TF implementation" in messages[0] and "JSNET_GPU_SELF_CHECK=0" in messages[0]
    assert set(gpu_self_check.PROCESS.checked()[CPU]) == {"knn_point", "group_point"}


def test_fallback_holds_inside_a_traced_function_and_its_gradient(faulty_device, rng):
    """The check runs the first time a tf.function traces the ops, and the trace uses pure TF."""
    points = tf.constant(rng.standard_normal((2, 32, 4)).astype(np.float32))
    idx = rng.integers(0, 32, (2, 16, 8)).astype(np.int32)
    upstream = rng.standard_normal((2, 16, 8, 4)).astype(np.float32)

    @tf.function
    def grouped_and_gradient(points):
        with tf.GradientTape() as tape:
            tape.watch(points)
            out = ops.group_point(points, idx)
        return out, tape.gradient(out, points, output_gradients=upstream)

    with ops.use_implementation("custom"), pytest.warns(gpu_self_check.GpuSelfCheckWarning, match="group_point"):
        out, grad = grouped_and_gradient(points)
    np.testing.assert_array_equal(out.numpy(), ref.group_point(points.numpy(), idx))
    np.testing.assert_allclose(grad.numpy(), ref.scatter_add(upstream, idx, 32), rtol=1e-5, atol=1e-5)


def test_another_device_keeps_the_compiled_ops(faulty_device, rng, monkeypatch):
    """Only the failing device falls back: ops placed on a device that was not checked keep the
    (here wrong) compiled kernels."""
    monkeypatch.setattr(gpu_self_check, "PROCESS", gpu_self_check.GpuSelfCheck(faulty_device, devices=lambda: ["/device:GPU:0"]))
    xyz, new_xyz = _knn_inputs(rng)
    with ops.use_implementation("custom"), tf.device("/CPU:0"):
        _, idx = ops.knn_point(8, xyz, new_xyz)
    np.testing.assert_array_equal(idx.numpy(), ref.k_nearest(8, xyz, new_xyz)[1][..., ::-1])
    assert gpu_self_check.PROCESS.checked() == {}


def test_environment_variable_skips_the_check(faulty_device, rng, monkeypatch):
    monkeypatch.setenv(gpu_self_check.ENV_VAR, "0")
    xyz, new_xyz = _knn_inputs(rng)
    with ops.use_implementation("custom"), warnings.catch_warnings():
        warnings.simplefilter("error", gpu_self_check.GpuSelfCheckWarning)
        _, idx = ops.knn_point(8, xyz, new_xyz)
    np.testing.assert_array_equal(idx.numpy(), ref.k_nearest(8, xyz, new_xyz)[1][..., ::-1])  # unchecked: wrong
    assert gpu_self_check.PROCESS.checked() == {}


def test_never_runs_without_cuda_kernels(monkeypatch, rng):
    """On a CPU-only machine (or with a library without CUDA kernels) there is nothing to check."""
    library.load()
    if (library.read_build_info() or {}).get("cuda") and tf.config.list_logical_devices("GPU"):
        pytest.skip("this machine runs the CUDA kernels")
    monkeypatch.delenv(gpu_self_check.ENV_VAR, raising=False)
    monkeypatch.setattr(gpu_self_check, "PROCESS", gpu_self_check.GpuSelfCheck())

    def must_not_run(*args, **kwargs):
        raise AssertionError("the GPU self-check ran on a machine without CUDA kernels")

    monkeypatch.setattr(gpu_self_check, "compare", must_not_run)
    with ops.use_implementation("custom"):
        ops.knn_point(4, *_knn_inputs(rng))
    assert gpu_self_check.cuda_gpus() == []
    assert gpu_self_check.PROCESS.checked() == {}


def test_target_device_follows_the_device_scope():
    gpus = ["/device:GPU:0", "/device:GPU:1"]
    assert gpu_self_check.target_device(gpus) == "/device:GPU:0"  # TensorFlow's default placement
    with tf.device("/GPU:1"):
        assert gpu_self_check.target_device(gpus) == "/device:GPU:1"
    with tf.device("/CPU:0"):
        assert gpu_self_check.target_device(gpus) is None

    @tf.function
    def traced():
        with tf.device("/GPU:1"):
            assert gpu_self_check.target_device(gpus) == "/device:GPU:1"
        return tf.constant(0)

    traced()
