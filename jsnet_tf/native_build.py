"""Build records shared by the native parts (the TF op library, the clustering extension): a
digest of the sources a binary was built from, and reading the JSON record kept beside it."""

import hashlib
import json
import pathlib


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
