"""jsnet-doctor: on this (CPU) machine every row is filled and it exits 0; with the op library
missing or stale it exits 1 with the one line saying how to build it (the library is pointed
elsewhere with JSNET_OPS_LIB_DIR, never deleted). The GPU cases are checked in process with
stand-ins for what a GPU machine would report, since CI has none."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from jsnet_tf import doctor
from jsnet_tf.ops import library, op_cases
from tests.ops.test_gpu_self_check import wrong_kernels

ROWS = ("jsnet-tf", "Python", "TensorFlow", "GPUs", "CPU", "Op library", "Clustering", "GPU self-check", "Self-test")
CPU = "/device:CPU:0"


def _run_doctor(tmp_path, *args, **env):
    script = pathlib.Path(sys.executable).parent / "jsnet-doctor"
    assert script.exists(), f"{script}: not installed (make install puts the package into the environment, editable)"
    result = subprocess.run([str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def _rows(stdout):
    """{label: value} of the report's rows (the lines before the first blank one)."""
    lines = stdout.split("\n\n")[0].splitlines()
    width = max(len(label) for label in ROWS)
    return {line[:width].strip(): line[width:].strip() for line in lines}


def _problems(stdout):
    return [line for line in stdout.splitlines() if line.startswith("problem: ")]


@pytest.mark.slow
def test_this_machine_fills_every_row_and_passes(tmp_path):
    library.load()  # built by `make build`
    result = _run_doctor(tmp_path)
    assert result.returncode == 0, result.stdout
    rows = _rows(result.stdout)
    assert list(rows) == list(ROWS)
    assert all(len(value) > 3 for value in rows.values()), rows
    assert rows["Op library"].startswith(f"ok, {library.LIB_PATH}: built for TensorFlow")
    assert rows["Clustering"].startswith("ok, ")
    runs = 2 * len(op_cases.CASES)  # every op, compiled and pure TF
    assert rows["Self-test"].startswith(f"{runs} of {runs} op runs passed on CPU:0") or "GPU:0" in rows["Self-test"]
    table = [line.split() for line in result.stdout.splitlines() if line.startswith(("  compiled", "  pure-TF"))]
    assert len(table) >= 14 and all(line[3] == "ok" for line in table)
    assert sum(line[-1] == "ms" and line[-3] == "ok" for line in table) >= 6  # the 3 gradients of each implementation
    assert result.stdout.rstrip().endswith("no problems found")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_missing_library_is_one_problem_saying_how_to_build_it(tmp_path):
    empty = tmp_path / "no-library"
    empty.mkdir()
    before = library.LIB_PATH.stat().st_mtime_ns
    result = _run_doctor(tmp_path, JSNET_OPS_LIB_DIR=str(empty))
    assert result.returncode == 1
    assert _problems(result.stdout) == [
        f"problem: the JSNet op library {empty / 'libjsnet_ops.so'} is not built; {library.BUILD_HINT}"
    ]
    assert "compiled CPU:0 all ops skipped: the op library is unusable -".split() in [line.split() for line in result.stdout.splitlines()]
    runs = len(op_cases.CASES)
    assert _rows(result.stdout)["Self-test"].startswith(f"{runs} of {runs} op runs passed")  # the pure-TF ops still checked
    assert library.LIB_PATH.stat().st_mtime_ns == before


@pytest.mark.slow
def test_stale_library_is_one_problem_saying_how_to_build_it(tmp_path):
    stale = tmp_path / "stale-library"
    stale.mkdir()
    shutil.copy(library.LIB_PATH, stale / library.LIB_PATH.name)
    info = {**library.read_build_info(), "source_digest": "0" * 64}
    (stale / "build_info.json").write_text(json.dumps(info))
    result = _run_doctor(tmp_path, "--noself_test", JSNET_OPS_LIB_DIR=str(stale))
    assert result.returncode == 1
    [problem] = _problems(result.stdout)
    assert problem.startswith(f"problem: {stale / 'libjsnet_ops.so'} is stale: the sources in ")
    assert problem.endswith(library.BUILD_HINT)


def test_a_gpu_without_cuda_kernels_says_how_to_build_them():
    """A GPU machine whose library has no CUDA kernels (a CPU-only TensorFlow, no nvcc): the ops
    would run on the CPU, which is a problem saying what to install and the build command."""
    library.load()
    if (library.read_build_info() or {}).get("cuda"):
        pytest.skip("this library has CUDA kernels")
    findings = doctor.Findings()
    compiled_ok, cuda_kernels = doctor.op_library_row(findings, cuda_build=False, gpus=[("GPU:0", "NVIDIA H100", "90")])
    assert (compiled_ok, cuda_kernels) == (True, False)
    assert "CUDA kernels: no (this TensorFlow is a CPU-only build)" in findings.rows[0][1]
    [problem] = findings.problems
    assert problem.startswith(f"{library.LIB_PATH} has no CUDA kernels, so the point ops run on the CPU beside the GPUs: "
                              "install the CUDA build of TensorFlow")
    assert problem.endswith(f"`{doctor.REBUILD_CUDA}`")


def test_a_gpu_older_than_the_compiled_architectures_is_a_problem(monkeypatch):
    library.load()
    info = {**library.read_build_info(), "cuda": True, "cuda_archs": "80,90"}
    monkeypatch.setattr(library, "read_build_info", lambda: info)
    gpus = [("GPU:0", "Tesla T4", "75"), ("GPU:1", "NVIDIA A10", "86"), ("GPU:2", "a newer GPU", "100")]
    findings = doctor.Findings()
    assert doctor.op_library_row(findings, cuda_build=True, gpus=gpus) == (True, True)
    assert "CUDA kernels: yes, sm 80, 90" in findings.rows[0][1]
    assert findings.problems == [  # sm_86 runs the sm_80 binary, sm_100 the sm_90 PTX
        "GPU:0 Tesla T4 (sm_75) is not among the architectures of the CUDA kernels (sm 80, 90): "
        "rebuild with `JSNET_CUDA_ARCHS=75 python tf_ops/build.py --force`"
    ]


@pytest.mark.parametrize("capability,archs,runs", [
    ("80", ["80", "90"], True), ("86", ["80", "90"], True), ("89", ["86"], True), ("75", ["80", "90"], False),
    ("86", ["89", "90"], False), ("120", ["75", "90"], True), ("90", ["75", "80", "86", "89", "90"], True),
])
def test_cuda_architecture_compatibility(capability, archs, runs):
    assert doctor.cuda_kernels_run_on(capability, archs) == runs


@pytest.mark.parametrize("cuda_build,needs", [(False, "this TensorFlow is a CPU-only build"), (True, "check the driver")])
def test_gpus_the_driver_lists_but_tensorflow_does_not_see(monkeypatch, cuda_build, needs):
    monkeypatch.setattr(doctor, "nvidia_smi_gpus", lambda: ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"])
    findings = doctor.Findings()
    assert doctor.gpu_rows(findings, cuda_build) == []
    assert findings.rows == [("GPUs", "none visible to TensorFlow, though nvidia-smi lists 1")]
    [problem] = findings.problems
    assert problem.startswith("nvidia-smi lists 1 GPU(s) but") and needs in problem


@pytest.mark.parametrize("machine,flags,narrowed,isa", [
    ("x86_64", {"sse4_2", "avx", "avx2", "avx512f"}, None, "avx512"),
    ("x86_64", {"sse4_2", "avx", "avx2"}, None, "avx2"),
    ("x86_64", {"sse4_2", "avx"}, None, "scalar"),
    ("x86_64", {"avx2", "avx512f"}, "avx2", "avx2"),
    ("x86_64", {"avx2", "avx512f"}, "scalar", "scalar"),
    ("x86_64", {"avx2"}, "avx512", "avx2"),  # JSNET_CPU_ISA narrows, never widens
    ("aarch64", {"asimd", "sve"}, None, "scalar"),
])
def test_kernel_isa_is_chosen_as_the_kernels_do(machine, flags, narrowed, isa):
    assert doctor.kernel_isa(machine, flags, narrowed) == isa


def test_self_test_names_each_wrong_op_device_and_direction():
    library.load()
    lines = doctor.self_test([CPU], {"compiled": (wrong_kernels(), lambda device: None)}, repeats=1)
    failed = {(t.op, part) for t in lines for part, s in (("forward", t.forward), ("gradient", t.gradient)) if s not in ("ok", "-")}
    assert failed == {("knn_point", "forward"), ("group_point", "gradient")}
    group_point, knn_point = doctor.self_test_problems(lines)
    assert group_point.startswith("self-test: compiled group_point on CPU:0, gradient: gradient differs at ")
    assert knn_point.startswith("self-test: compiled knn_point on CPU:0, forward: output 0 differs at ")
    assert knn_point.endswith("(checked against the float64 brute force; please report it with this output)")


def test_self_test_skips_an_op_an_implementation_lacks():
    library.load()
    partial = wrong_kernels()
    del partial.knn_point
    lines = doctor.self_test([CPU], {"fused": (partial, lambda device: None)}, repeats=1)
    assert [(t.op, t.forward) for t in lines if t.op == "knn_point"] == [("knn_point", "skipped: no fused version")]


def test_compiled_ops_that_run_elsewhere_than_asked_fail():
    """Compiled ops asked for a GPU they have no kernels for run on the CPU (soft placement): a
    failure of the self-test, not a pass. On a machine without a GPU, any GPU is such a GPU."""
    import tensorflow as tf

    from jsnet_tf.ops import custom

    if tf.config.list_logical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    library.load()
    lines = doctor.self_test(["/device:GPU:0"], {"compiled": (custom, lambda device: None)}, repeats=1)
    assert {t.forward for t in lines} == {"FAILED: ran on CPU:0 instead (TensorFlow has no kernel of it for GPU:0)"}
    assert len(doctor.self_test_problems(lines)) == len(lines)


def test_without_tensorflow_every_row_is_still_filled(tmp_path):
    """A machine where TensorFlow does not import: one problem saying how to install it."""
    code = "import sys; sys.modules['tensorflow'] = None; from jsnet_tf import doctor; doctor.cli()"
    result = subprocess.run([sys.executable, "-c", code, "--noself_test"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 1
    rows = _rows(result.stdout)
    assert list(rows) == list(ROWS) and all(rows.values())
    assert rows["TensorFlow"].startswith("does not import: ")
    [problem] = _problems(result.stdout)
    assert problem.startswith("problem: TensorFlow does not import (") and "`make install`" in problem


def test_an_installed_package_without_sources_says_it_cannot_compare(monkeypatch, tmp_path):
    library.load()
    monkeypatch.setattr(library, "SOURCE_DIR", tmp_path)
    findings = doctor.Findings()
    doctor.op_library_row(findings, cuda_build=False, gpus=[])
    assert f"(its sources, {tmp_path}, are not here to compare with: an installed package)" in findings.rows[0][1]
    assert findings.problems == []
