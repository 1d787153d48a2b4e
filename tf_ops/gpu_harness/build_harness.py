#!/usr/bin/env python3
"""Builds the framework-free JSNet kernels (point ops and batch norm) as two plain shared libraries.

    libjsnet_cuda_kernels.so  tf_ops/src/{point,batch_norm}_kernels.cu compiled by nvcc (static
                              CUDA runtime, so the library loads without libcudart on the library
                              path)
    libjsnet_cpu_kernels.so   tf_ops/src/{point,batch_norm}_kernels.cc compiled by g++ with
                              -ffp-contract=off (no FMA: the distance contract)

Both export the extern "C" functions of tf_ops/src/point_kernels.h and batch_norm_kernels.h and
need no TensorFlow, so check_cuda_kernels.py can compare them with ctypes + NumPy + CuPy.

    python3 tf_ops/gpu_harness/build_harness.py [--out DIR] [--archs 80,90] [--no-cuda]

The compilers can be overridden with the NVCC and CXX environment variables.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SRC_DIR = REPO_ROOT / "tf_ops" / "src"
DEFAULT_OUT = REPO_ROOT / "tf_ops" / "gpu_harness" / "build"
CUDA_LIB_NAME = "libjsnet_cuda_kernels.so"
CPU_LIB_NAME = "libjsnet_cpu_kernels.so"
CPU_SOURCES = ("point_kernels.cc", "batch_norm_kernels.cc")
CUDA_SOURCES = ("point_kernels.cu", "batch_norm_kernels.cu")


def find_nvcc() -> str | None:
    """nvcc from $NVCC, PATH, $CUDA_HOME/bin or /usr/local/cuda/bin (None if absent)."""
    candidates = [os.environ.get("NVCC"), shutil.which("nvcc")]
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(str(Path(home) / "bin" / "nvcc"))
    for cand in candidates:
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


def find_cxx() -> str:
    return os.environ.get("CXX") or shutil.which("g++") or "g++"


def parse_archs(archs) -> list[str]:
    """'90', '80,90', 'sm_90', [80, 90] -> ['80', '90'] (numeric compute capabilities)."""
    if isinstance(archs, (int, str)):
        items = str(archs).replace(";", ",").replace(" ", ",").split(",")
    else:
        items = [str(a) for a in archs]
    out = []
    for item in items:
        item = item.strip().lower()
        for prefix in ("sm_", "compute_"):
            if item.startswith(prefix):
                item = item[len(prefix):]
        if not item:
            continue
        if not item.isdigit():
            raise ValueError(f"bad CUDA arch {item!r}: expected numbers such as 75, 80, 90")
        if int(item) < 75:
            raise ValueError(f"CUDA arch {item} is not supported by nvcc 13 (need >= 75)")
        if item not in out:
            out.append(item)
    if not out:
        raise ValueError("no CUDA arch given")
    return out


def nvcc_command(nvcc: str, archs, sources: list[Path], out: Path) -> list[str]:
    arch_list = parse_archs(archs)
    cmd = [nvcc, "-std=c++17", "-O3", "-shared", "-Xcompiler", "-fPIC", "--cudart", "static"]
    for a in arch_list:
        cmd += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    top = max(arch_list, key=int)  # PTX of the newest arch for forward compatibility
    cmd += ["-gencode", f"arch=compute_{top},code=compute_{top}"]
    cmd += ["-o", str(out), *map(str, sources)]
    return cmd


def cxx_command(cxx: str, sources: list[Path], out: Path) -> list[str]:
    return [cxx, "-O3", "-std=c++17", "-fPIC", "-shared", "-ffp-contract=off", "-o", str(out),
            *map(str, sources)]


def _sources(names) -> list[Path]:
    sources = [SRC_DIR / name for name in names]
    missing = [str(src) for src in sources if not src.is_file()]
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}")
    return sources


def _run(cmd: list[str], verbose: bool) -> float:
    if verbose:
        print("+ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}")
    if proc.stdout.strip() and verbose:
        print(proc.stdout.rstrip(), flush=True)
    if verbose:
        print(f"  ({elapsed:.1f} s)", flush=True)
    return elapsed


def build(out_dir=None, archs="90", cuda=True, cpu=True, verbose=False) -> dict:
    """Compiles the libraries into out_dir and returns {'cpu': Path|None, 'cuda': Path|None}.

    Raises RuntimeError when a compiler is missing or a compilation fails.
    """
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    result = {"cpu": None, "cuda": None}
    if cpu:
        lib = out / CPU_LIB_NAME
        _run(cxx_command(find_cxx(), _sources(CPU_SOURCES), lib), verbose)
        result["cpu"] = lib
    if cuda:
        nvcc = find_nvcc()
        if nvcc is None:
            raise RuntimeError("nvcc not found (PATH, $NVCC, $CUDA_HOME/bin, /usr/local/cuda/bin)")
        lib = out / CUDA_LIB_NAME
        _run(nvcc_command(nvcc, archs, _sources(CUDA_SOURCES), lib), verbose)
        result["cuda"] = lib
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--archs", default="90",
                        help="comma-separated compute capabilities, >= 75 (default: %(default)s)")
    parser.add_argument("--no-cuda", action="store_true", help="build only the CPU library")
    parser.add_argument("--no-cpu", action="store_true", help="build only the CUDA library")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not echo the commands")
    args = parser.parse_args(argv)
    try:
        libs = build(args.out, args.archs, cuda=not args.no_cuda, cpu=not args.no_cpu,
                     verbose=not args.quiet)
    except (RuntimeError, ValueError) as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    for kind, path in libs.items():
        if path is not None:
            print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
