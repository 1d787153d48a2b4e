"""Build checks of the framework-free kernels (tf_ops/gpu_harness/build_harness.py).

* Where nvcc is available: both shared libraries build, the CPU one loads with ctypes and exports
  every jsnet_*_cpu function of point_kernels.h and batch_norm_kernels.h, the CUDA one exports
  every jsnet_*_cuda* launcher.
* Where g++ is available: the CPU kernels match the harness's NumPy brute force (quick sizes).

Running the CUDA kernels needs a GPU: tf_ops/gpu_harness/check_cuda_kernels.py --build.
"""
from __future__ import annotations

import ctypes
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS_DIR = REPO / "tf_ops" / "gpu_harness"
HEADERS = [REPO / "tf_ops" / "src" / name for name in ("point_kernels.h", "batch_norm_kernels.h")]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


build_harness = _load("jsnet_build_harness", HARNESS_DIR / "build_harness.py")


def _declared_functions(headers=HEADERS) -> tuple[set[str], set[str]]:
    """(cpu, cuda) function names declared in the headers."""
    text = re.sub(r"//[^\n]*", "", "".join(header.read_text() for header in headers))
    names = set(re.findall(r"\b(jsnet_\w+)\s*\(", text))
    cpu = {n for n in names if n.endswith("_cpu")}
    cuda = {n for n in names if "_cuda" in n}
    assert cpu | cuda == names, f"unclassified declarations: {names - cpu - cuda}"
    return cpu, cuda


def _exported_symbols(lib: Path) -> set[str] | None:
    nm = shutil.which("nm")
    if nm is None:
        return None
    proc = subprocess.run([nm, "-D", "--defined-only", str(lib)], capture_output=True, text=True,
                          check=True)
    return {line.split()[-1] for line in proc.stdout.splitlines() if line.strip()}


def test_header_declares_all_ops():
    cpu, cuda = _declared_functions(HEADERS[:1])
    assert len(cpu) == 18  # 16 with work items + gather_weight_net_sum's gradient block count, workspace size
    assert len(cuda) == 15  # 14 launchers + the knn workspace size
    cpu, cuda = _declared_functions(HEADERS[1:])
    assert len(cpu) == 6  # the batch norm's phases
    assert len(cuda) == 3  # 2 launchers + their workspace size


@pytest.mark.skipif(build_harness.find_nvcc() is None,
                    reason="nvcc not found (PATH, $NVCC, $CUDA_HOME/bin, /usr/local/cuda/bin)")
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
def test_build_both_libraries(tmp_path):
    libs = build_harness.build(tmp_path, archs="90")
    cpu_lib, cuda_lib = libs["cpu"], libs["cuda"]
    assert cpu_lib.is_file() and cpu_lib.name == "libjsnet_cpu_kernels.so"
    assert cuda_lib.is_file() and cuda_lib.name == "libjsnet_cuda_kernels.so"

    cpu_names, cuda_names = _declared_functions()
    lib = ctypes.CDLL(str(cpu_lib))
    missing = [n for n in sorted(cpu_names) if not hasattr(lib, n)]
    assert not missing, f"CPU library lacks {missing}"

    exported = _exported_symbols(cuda_lib)
    if exported is None:  # no binutils: fall back to loading (static cudart needs no driver)
        cuda = ctypes.CDLL(str(cuda_lib))
        exported = {n for n in cuda_names if hasattr(cuda, n)}
    missing = sorted(cuda_names - exported)
    assert not missing, f"CUDA library lacks {missing}"
    # Only the C API leaks out of the CUDA library (the static CUDA runtime stays hidden).
    assert {s for s in exported if s.startswith("jsnet_")} == cuda_names


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
def test_cpu_kernels_match_numpy_reference(tmp_path, capsys):
    np = pytest.importorskip("numpy")
    del np
    build_harness.build(tmp_path, cuda=False)
    check = _load("jsnet_check_cuda_kernels", HARNESS_DIR / "check_cuda_kernels.py")
    rc = check.main(["--cpu-only", "--quick", "--no-timing", "--lib-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert re.search(r"^\d+ passed, 0 failed$", out, re.MULTILINE), out
