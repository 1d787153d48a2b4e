"""Where the native clustering extension lives, how it is recognised as current, and loading it.

`python -m jsnet_tf.clustering.build` compiles `src/clustering.cc` into `lib/_clustering<suffix>`
(the interpreter's extension suffix) and records in `lib/build_info.json` what it was built from:
a digest of the sources, the Python ABI, the pybind11 version and the compiler flags. Loading
refuses an extension that is missing or stale, with a message naming the build command, instead
of running old code or failing later with an undefined symbol.
"""

import importlib.machinery
import importlib.util
import pathlib
import sysconfig

from jsnet_tf import native_build
from jsnet_tf.errors import UserError

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
SOURCE_DIR = PACKAGE_DIR / "src"
SOURCE_FILES = ("clustering.cc",)
LIB_DIR = PACKAGE_DIR / "lib"
MODULE_NAME = "_clustering"
LIB_PATH = LIB_DIR / f"{MODULE_NAME}{sysconfig.get_config_var('EXT_SUFFIX')}"
INFO_PATH = LIB_DIR / "build_info.json"
BUILD_COMMAND = "python -m jsnet_tf.clustering.build"
BUILD_HINT = f"build it with `{BUILD_COMMAND}` (or `make build`) from the repository root"


class ExtensionError(UserError, ImportError):
    """The native clustering extension is missing, stale or does not load."""


def source_digest(source_dir=None):
    """SHA-256 over the extension's sources, or None when they are not present (installed package)."""
    return native_build.source_digest(SOURCE_DIR if source_dir is None else source_dir, SOURCE_FILES)


def read_build_info():
    return native_build.read_build_info(INFO_PATH)


def problem():
    """Why the extension cannot be used as it is, or None when it is current."""
    if not LIB_PATH.exists():
        return f"the native clustering extension {LIB_PATH} is not built; {BUILD_HINT}"
    info = read_build_info()
    if info is None:
        return f"{INFO_PATH} is missing or unreadable, so {LIB_PATH} cannot be trusted; {BUILD_HINT}"
    current = source_digest()
    if current is not None and info.get("source_digest") != current:
        return f"{LIB_PATH} is stale: {SOURCE_DIR} changed since it was built; {BUILD_HINT}"
    return None


_module = None
_failure = None  # a process cannot load a rebuilt extension later anyway


def load():
    """The extension module (cached). Raises ExtensionError when it is missing, stale or broken."""
    global _module, _failure
    if _module is None:
        if _failure is None:
            _failure = problem()
        if _failure is None:
            try:
                loader = importlib.machinery.ExtensionFileLoader(MODULE_NAME, str(LIB_PATH))
                spec = importlib.util.spec_from_file_location(MODULE_NAME, LIB_PATH, loader=loader)
                module = importlib.util.module_from_spec(spec)
                loader.exec_module(module)
                _module = module
            except ImportError as error:
                _failure = f"loading {LIB_PATH} failed ({error}); {BUILD_HINT}"
        if _failure is not None:
            raise ExtensionError(_failure)
    return _module
