"""Build records shared by the native parts (the TF op library, the clustering extension): a
digest of the sources a binary was built from, reading the JSON record kept beside it, and where
the CUDA compiler is (the op library's build uses it; jsnet-doctor reports it)."""

import hashlib
import json
import os
import pathlib
import shutil

CUDA_HOME = pathlib.Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))


def source_digest(source_dir, names):
    """SHA-256 over the named source files, or None when one is absent (an installed package)."""
    digest = hashlib.sha256()
    for name in names:
        path = pathlib.Path(source_dir) / name
        if not path.exists():
            return None
        digest.update(name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def read_build_info(path):
    """The JSON build record at `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def find_nvcc():
    """The nvcc that builds the CUDA kernels (PATH, then $CUDA_HOME/bin), or None."""
    installed = CUDA_HOME / "bin" / "nvcc"
    return shutil.which("nvcc") or (str(installed) if installed.exists() else None)
