"""Builds the JSNet op library (jsnet_tf/ops/lib/libjsnet_ops.so) against the installed TensorFlow.

Every compiler and linker flag comes from `tf.sysconfig`, so the library matches the ABI of the
TensorFlow it will be loaded into. CUDA kernels are compiled in when nvcc is on PATH and the
installed TensorFlow is a CUDA build (the full `tensorflow` wheel; `tensorflow-cpu` has no CUDA
headers); the CPU kernels are always there. Nothing is rebuilt when the sources, TensorFlow and
the CUDA setting are unchanged. The library is written atomically.

    python tf_ops/build.py             # build if needed
    python tf_ops/build.py --force     # always rebuild
    python tf_ops/build.py --cuda=off  # CPU kernels only
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from jsnet_tf.native_build import CUDA_HOME, find_nvcc  # noqa: E402
from jsnet_tf.ops import library  # noqa: E402

DEFAULT_ARCHS = "75,80,86,89,90"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even when the library is current")
    parser.add_argument(
        "--cuda",
        choices=("auto", "on", "off"),
        default=os.environ.get("JSNET_CUDA", "auto"),
        help="compile the CUDA kernels: auto = when nvcc and a CUDA build of TensorFlow are present "
        "(default; env JSNET_CUDA)",
    )
    parser.add_argument(
        "--cuda-archs",
        default=os.environ.get("JSNET_CUDA_ARCHS"),
        help="comma-separated SM versions to compile for, e.g. 80,90 (default: the GPUs nvidia-smi "
        f"sees, else {DEFAULT_ARCHS}; env JSNET_CUDA_ARCHS)",
    )
    parser.add_argument("--verbose", action="store_true", help="print every compiler command")
    return parser.parse_args(argv)


def cuda_wanted(mode):
    """(build CUDA?, reason) for --cuda auto|on|off."""
    if mode == "off":
        return False, "disabled by --cuda=off"
    nvcc = find_nvcc()
    built_with_cuda = tf.test.is_built_with_cuda()
    if nvcc and built_with_cuda:
        return True, f"nvcc at {nvcc}, TensorFlow built with CUDA"
    reason = "no nvcc on PATH" if not nvcc else "this TensorFlow is not a CUDA build (tensorflow-cpu)"
    if mode == "on":
        raise SystemExit(f"error: --cuda=on but {reason}")
    return False, reason


def detect_archs():
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return DEFAULT_ARCHS
    caps = sorted({line.strip().replace(".", "") for line in out.splitlines() if line.strip()})
    return ",".join(caps) or DEFAULT_ARCHS


def gencode_flags(archs):
    arch_list = [a.strip() for a in archs.split(",") if a.strip()]
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in arch_list]
    # PTX of the newest arch lets newer GPUs JIT-compile the kernels.
    flags.append(f"-gencode=arch=compute_{arch_list[-1]},code=compute_{arch_list[-1]}")
    return flags


def compile_commands(work, use_cuda, archs):
    src = library.SOURCE_DIR
    tf_cflags = tf.sysconfig.get_compile_flags()
    common = ["-std=c++17", "-O3", "-fPIC", "-Wall"]
    commands = [
        # Framework-free kernels: no TF headers; no FMA contraction so distances match the GPU.
        ["g++", *common, "-ffp-contract=off", "-c", str(src / "point_kernels.cc"), "-o", str(work / "point_kernels.o")],
        # The batch norm's float32 steps unfused too, so its gradient recomputes the ReLU mask exactly.
        ["g++", *common, "-ffp-contract=off", "-c", str(src / "batch_norm_kernels.cc"), "-o", str(work / "batch_norm_kernels.o")],
        ["g++", *common, *tf_cflags, *(["-DGOOGLE_CUDA=1", f"-I{CUDA_HOME / 'include'}"] if use_cuda else []),
         "-c", str(src / "ops.cc"), "-o", str(work / "ops.o")],
    ]
    if use_cuda:
        commands.append(
            [find_nvcc(), "-std=c++17", "-O3", "-Xcompiler", "-fPIC", *gencode_flags(archs),
             "-c", str(src / "point_kernels.cu"), "-o", str(work / "point_kernels_cu.o")]
        )
        commands.append(
            [find_nvcc(), "-std=c++17", "-O3", "-Xcompiler", "-fPIC", *gencode_flags(archs),
             "-c", str(src / "batch_norm_kernels.cu"), "-o", str(work / "batch_norm_kernels_cu.o")]
        )
    return commands


def run(command, verbose):
    if verbose:
        print(" ".join(command), flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: compilation failed:\n{' '.join(command)}\n{result.stdout}{result.stderr}")


def build(force=False, cuda="auto", cuda_archs=None, verbose=False):
    use_cuda, why = cuda_wanted(cuda)
    archs = (cuda_archs or detect_archs()) if use_cuda else None
    info = {
        "tf_version": library.tf_version_key(),
        "tf_full_version": tf.__version__,
        "source_digest": library.source_digest(),
        "cuda": use_cuda,
        "cuda_archs": archs,
    }
    if not force and library.LIB_PATH.exists() and library.read_build_info() == info:
        print(f"{library.LIB_PATH} is up to date (CUDA: {'yes' if use_cuda else 'no'})")
        return library.LIB_PATH
    print(f"building {library.LIB_PATH} for TensorFlow {tf.__version__}, CUDA kernels: "
          f"{'yes, sm ' + archs if use_cuda else 'no'} ({why})", flush=True)
    started = time.time()
    library.LIB_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.LIB_DIR, prefix=".build-") as tmp:
        work = pathlib.Path(tmp)
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            list(pool.map(lambda c: run(c, verbose), compile_commands(work, use_cuda, archs)))
        objects = sorted(str(p) for p in work.glob("*.o"))
        link = ["g++", "-shared", "-o", str(work / "lib.so"), *objects]
        if use_cuda:
            # Our own static CUDA runtime, linked before TensorFlow (whose framework library
            # exports CUDA runtime entry points of its own CUDA version) and kept private, so the
            # kernels nvcc compiled run on the runtime they were compiled for.
            link += [f"-L{CUDA_HOME / 'lib64'}", "-lcudart_static", "-Wl,--exclude-libs,libcudart_static.a"]
        link += tf.sysconfig.get_link_flags()
        if use_cuda:
            link += ["-ldl", "-lrt", "-lpthread"]
        run(link, verbose)
        # Library first, then its description: a crash in between leaves a library that
        # library.problem() reports as stale rather than one described wrongly.
        os.replace(work / "lib.so", library.LIB_PATH)
        (work / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        os.replace(work / "info.json", library.INFO_PATH)
    print(f"built {library.LIB_PATH} in {time.time() - started:.0f} s")
    return library.LIB_PATH


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    build(force=args.force, cuda=args.cuda, cuda_archs=args.cuda_archs, verbose=args.verbose)


if __name__ == "__main__":
    main()
