"""Where the compiled op library lives, how it is recognised as current, and loading it.

`python tf_ops/build.py` writes `lib/libjsnet_ops.so` next to this file together with
`lib/build_info.json` (TensorFlow version, digest of the sources, CUDA or not). Loading refuses a
library built for another TensorFlow or from other sources, with a message saying how to rebuild,
instead of failing later with an undefined symbol or a segfault.

The environment variable JSNET_OPS_LIB_DIR names another folder for the library and its record
(both the build and the loading use it): a second build beside the package's, e.g. one with CUDA
kernels, or an empty folder to see how a machine without the library behaves.
"""

import os
import pathlib

import tensorflow as tf

from jsnet_tf import native_build
from jsnet_tf.errors import UserError

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
LIB_DIR = pathlib.Path(os.environ.get("JSNET_OPS_LIB_DIR") or PACKAGE_DIR / "lib").resolve()
LIB_PATH = LIB_DIR / "libjsnet_ops.so"
INFO_PATH = LIB_DIR / "build_info.json"
SOURCE_DIR = PACKAGE_DIR.parents[1] / "tf_ops" / "src"
SOURCE_FILES = (
    "ops.cc",
    "cpu_isa.h",
    "point_kernels.cc",
    "point_kernels.h",
    "point_kernels_simd.inc",
    "point_kernels.cu",
    "batch_norm_kernels.cc",
    "batch_norm_kernels.h",
    "batch_norm_kernels_rows.inc",
    "batch_norm_kernels.cu",
)
BUILD_HINT = "build it with `python tf_ops/build.py` (or `make build`) from the repository root"


class OpLibraryError(UserError, RuntimeError):
    """The compiled op library is missing, stale or was built for another TensorFlow."""


def tf_version_key():
    """TensorFlow major.minor: a library built against another one must not be loaded."""
    return ".".join(tf.__version__.split(".")[:2])


def source_digest(source_dir=None):
    """SHA-256 over the op sources, or None when they are not present (installed package)."""
    return native_build.source_digest(SOURCE_DIR if source_dir is None else source_dir, SOURCE_FILES)


def read_build_info():
    return native_build.read_build_info(INFO_PATH)


def problem():
    """Why the library cannot be used as it is, or None when it is current."""
    if not LIB_PATH.exists():
        return f"the JSNet op library {LIB_PATH} is not built; {BUILD_HINT}"
    info = read_build_info()
    if info is None:
        return f"{INFO_PATH} is missing or unreadable, so {LIB_PATH} cannot be trusted; {BUILD_HINT}"
    if info.get("tf_version") != tf_version_key():
        return (
            f"{LIB_PATH} was built for TensorFlow {info.get('tf_version')} but this is "
            f"TensorFlow {tf.__version__}; rebuild it: {BUILD_HINT}"
        )
    current = source_digest()
    if current is not None and info.get("source_digest") != current:
        return f"{LIB_PATH} is stale: the sources in {SOURCE_DIR} changed since it was built; {BUILD_HINT}"
    return None


_module = None
_failure = None  # why loading failed: a process cannot load a rebuilt library later anyway


def load():
    """The loaded op module (cached). Raises OpLibraryError when the library is unusable."""
    global _module, _failure
    if _module is None:
        if _failure is None:
            _failure = problem()
        if _failure is None:
            try:
                _module = tf.load_op_library(os.fspath(LIB_PATH))
            except tf.errors.NotFoundError as error:
                _failure = f"loading {LIB_PATH} failed ({error}); {BUILD_HINT}"
        if _failure is not None:
            raise OpLibraryError(_failure)
    return _module


def available():
    """True when the library is built, current, and loads."""
    try:
        load()
    except OpLibraryError:
        return False
    return True
