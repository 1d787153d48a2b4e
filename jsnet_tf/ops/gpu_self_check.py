"""The GPU path checks itself: the first time the compiled ops are about to run on a GPU in a
process, every op of `op_cases.CASES` runs on a small input on that GPU and on the CPU kernels
(milliseconds). Where they differ, one warning names the ops and the device, and the point ops use
the pure-TF implementation on that device for the rest of the process.

Setting JSNET_GPU_SELF_CHECK=0 skips the check. A machine without a GPU, or an op library built
without CUDA kernels (its ops then run on the CPU, where the test suite checks them), never runs
it. The check compares the GPU with the CPU kernels, not with the float64 brute force, so it is
the same comparison at any size; `jsnet-doctor` compares every device with the brute force.
"""

import concurrent.futures
import os
import threading
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.python.distribute import device_util  # the device scope of the caller, eager or traced
from tensorflow.python.framework import config as tf_config  # whether op determinism is enabled

from jsnet_tf.ops import custom, library, op_cases

ENV_VAR = "JSNET_GPU_SELF_CHECK"
CPU = "/device:CPU:0"


class GpuSelfCheckWarning(RuntimeWarning):
    """A GPU's compiled ops differ from the CPU kernels; the ops fall back to pure TF there."""


def enabled():
    """False when JSNET_GPU_SELF_CHECK says 0 (or false/no/off)."""
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def cuda_gpus():
    """The GPUs the compiled ops can run on: TensorFlow's GPUs when the library has CUDA kernels."""
    if not (library.read_build_info() or {}).get("cuda"):
        return []
    return [device.name for device in tf.config.list_logical_devices("GPU")]


def _kind_and_index(device):
    spec = tf.DeviceSpec.from_string(device)
    return (spec.device_type or "").upper(), spec.device_index or 0


def target_device(devices):
    """The device of `devices` that an op created here will run on, or None when it runs elsewhere
    (a CPU scope, or a GPU that is not listed). Without a device scope TensorFlow places an op with
    GPU kernels on the first GPU."""
    scope = device_util.current()
    if not scope or tf.DeviceSpec.from_string(scope).device_type is None:
        return devices[0] if devices else None
    wanted = _kind_and_index(scope)
    return next((device for device in devices if _kind_and_index(device) == wanted), None)


def compare(implementation, device, baseline_device=CPU, seed=0):
    """{op name: why it differs} for the ops whose `implementation` on `device` differs from the
    compiled CPU kernels on the same small input (empty when all agree)."""
    rng = np.random.default_rng(seed)
    gradient = not tf_config.is_op_determinism_enabled()  # the GPU gradients refuse determinism
    failures = {}
    for case in op_cases.CASES:
        trial = op_cases.draw(case, rng)
        if not hasattr(custom, case.name):  # an op without compiled kernels never runs them on a GPU
            continue
        want = op_cases.run(trial, custom, baseline_device, gradient)
        try:
            got = op_cases.run(trial, implementation, device, gradient)
        except tf.errors.OpError as error:
            failures[case.name] = f"raised {type(error).__name__}: {error.message.splitlines()[0]}"
            continue
        found = op_cases.differences(case, got, want.outputs, want.grad)
        if found:
            failures[case.name] = "; ".join(found)
    return failures


class GpuSelfCheck:
    """The checks of one process: each device checked once, on first use, and remembered.

    `implementation` is what runs on the GPUs (the compiled ops; the tests hand it a wrong one)
    and `devices` lists the devices to check (the tests name the CPU).
    """

    def __init__(self, implementation=custom, devices=cuda_gpus):
        self._implementation = implementation
        self._list_devices = devices
        self._devices = None
        self._failures = {}  # device -> {op: why}
        self._lock = threading.Lock()

    def falls_back(self):
        """True when the ops called now must use the pure-TF implementation: they are about to run
        on a device whose compiled ops differ from the CPU kernels (checked here on first use)."""
        if self._devices is None:
            self._devices = list(self._list_devices())
        if not self._devices or not enabled():
            return False
        device = target_device(self._devices)
        return device is not None and bool(self.failures(device))

    @tf.autograph.experimental.do_not_convert  # runs as Python while a tf.function traces
    def failures(self, device):
        """{op: why} of `device`, checking it the first time it is asked for."""
        with self._lock:
            if device not in self._failures:
                # In a thread of its own: eager, with no tape paused, even while a tf.function traces.
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    self._failures[device] = pool.submit(compare, self._implementation, device).result()
                if self._failures[device]:
                    warnings.warn(warning_text(device, self._failures[device]), GpuSelfCheckWarning, stacklevel=5)
            return self._failures[device]

    def checked(self):
        """{device: {op: why}} of the devices checked so far."""
        with self._lock:
            return dict(self._failures)


def warning_text(device, failures):
    """The one warning line of a device whose ops failed the check."""
    details = "; ".join(f"{op}: {why}" for op, why in failures.items())
    return (
        f"GPU self-check: on {device} the compiled {', '.join(failures)} differ from the CPU kernels ({details}); "
        f"the point ops use the pure-TF implementation on {device} for the rest of this process "
        f"({ENV_VAR}=0 skips the check)"
    )


PROCESS = GpuSelfCheck()
