"""Builds the native clustering extension (jsnet_tf/clustering/lib/_clustering<suffix>).

Compiles `src/clustering.cc` with pybind11 and the system C++ compiler for the running Python.
Portable flags only (-O3, no -march=native), so a library built on one x86-64 machine runs on
another. Nothing is rebuilt when the sources, Python, pybind11 and the compiler are unchanged.
The extension and its build description are written atomically.

    python -m jsnet_tf.clustering.build            # build if needed
    python -m jsnet_tf.clustering.build --force    # always rebuild
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

from jsnet_tf.clustering import library

FLAGS = ("-std=c++17", "-O3", "-fPIC", "-shared", "-Wall", "-fvisibility=hidden", "-ffp-contract=off")


def compiler():
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"


def compiler_version(cxx):
    try:
        result = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        raise SystemExit(f"error: no usable C++ compiler ({cxx}): {error}") from None
    return result.stdout.splitlines()[0].strip() if result.stdout else cxx


def pybind11_include():
    try:
        import pybind11
    except ImportError:
        raise SystemExit("error: pybind11 is not installed; `pip install pybind11`") from None
    return pybind11.get_include(), pybind11.__version__


def build(force=False, verbose=False):
    """Compiles the extension unless it is current; returns its path."""
    cxx = compiler()
    include, pybind11_version = pybind11_include()
    info = {
        "source_digest": library.source_digest(),
        "python": sysconfig.get_config_var("EXT_SUFFIX"),
        "pybind11": pybind11_version,
        "compiler": compiler_version(cxx),
        "flags": list(FLAGS),
    }
    if info["source_digest"] is None:
        raise SystemExit(f"error: the sources {library.SOURCE_FILES} are not in {library.SOURCE_DIR}")
    if not force and library.LIB_PATH.exists() and library.read_build_info() == info:
        print(f"{library.LIB_PATH} is up to date")
        return library.LIB_PATH
    print(f"building {library.LIB_PATH} ({info['compiler']})", flush=True)
    started = time.time()
    library.LIB_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.LIB_DIR, prefix=".build-") as tmp:
        work = pathlib.Path(tmp)
        command = [
            cxx, *FLAGS, f"-I{include}", f"-I{sysconfig.get_paths()['include']}",
            str(library.SOURCE_DIR / "clustering.cc"), "-o", str(work / library.LIB_PATH.name),
        ]
        if verbose:
            print(" ".join(command), flush=True)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"error: compilation failed:\n{' '.join(command)}\n{result.stdout}{result.stderr}")
        # Extension first, then its description: a crash in between leaves an extension that
        # library.problem() reports as unusable rather than one described wrongly.
        os.replace(work / library.LIB_PATH.name, library.LIB_PATH)
        (work / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        os.replace(work / "info.json", library.INFO_PATH)
    print(f"built {library.LIB_PATH} in {time.time() - started:.0f} s")
    return library.LIB_PATH


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even when the extension is current")
    parser.add_argument("--verbose", action="store_true", help="print the compiler command")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    build(force=args.force, verbose=args.verbose)


if __name__ == "__main__":
    main()
