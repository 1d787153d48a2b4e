"""Atomic file writing and text-number parsing, NumPy only.

Every output of the package is written through `AtomicTarget` (or `write_text_atomic`): into a
hidden `.<name>.<random>.tmp` file next to the final one, then renamed onto it, so an interrupted
run never leaves a half-written file under a final name. `parse_numbers` checks one line of a
text data file and names the file and line of a bad one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def _file_mode() -> int:
    """The mode of a new file under the process's umask (read once: setting it is process-wide)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def temp_path_for(path: str | os.PathLike) -> Path:
    """A fresh temporary name next to `path`: hidden, ending in `.tmp` (never a final name)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes it 0600; the final file follows the umask
    return Path(tmp)


def is_temp_file(path: str | os.PathLike) -> bool:
    """True for a name `temp_path_for` makes (hidden, ending in `.tmp`)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(".tmp")


class AtomicTarget:
    """`with AtomicTarget(final) as tmp:` write tmp; on success it is renamed onto final."""

    def __init__(self, path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path_for(self.path)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` through an `AtomicTarget`."""
    with AtomicTarget(path) as tmp:
        Path(tmp).write_text(text)


def parse_numbers(path, number: int, line: str, count: int, layout: str):
    """(the `count` finite numbers of a text line, None) or (None, a message naming file:line)."""
    tokens = line.split()
    if len(tokens) != count:
        return None, f"{path}:{number}: expected {count} numbers ({layout}), found {len(tokens)}"
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        return None, f"{path}:{number}: not a number in {line.strip()!r}"
    if not all(np.isfinite(values)):
        return None, f"{path}:{number}: non-finite value in {line.strip()!r}"
    return values, None
