"""The settings a prepared data folder was made with, recorded in its `prepare.json`.

The preparation CLIs (`prepare_s3dis`, `prepare_shapenet`) record the settings their outputs
depend on, so that a rerun with other settings is refused, naming the keys that differ, instead
of leaving a folder that mixes outputs of two settings.
"""

from __future__ import annotations

import json
from pathlib import Path

from jsnet_tf.errors import DataError
from jsnet_tf.files import write_text_atomic

SETTINGS_FILE = "prepare.json"


def read_settings(out: str | Path) -> dict | None:
    """The recorded settings of `out`, None if it has none; DataError if unreadable."""
    path = Path(out) / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable settings file: {e}") from e
    if not isinstance(recorded, dict):
        raise DataError(f"{path}: not a settings file (expected a JSON object)")
    return recorded


def describe_differences(recorded: dict, wanted: dict) -> str:
    """E.g. "num_points (recorded 2048, now 1024), categories (Skateboard: recorded 04225943,
    now 04225987)"; a key or category missing on one side shows as None."""
    parts = []
    for key in sorted(set(recorded) | set(wanted)):
        old, new = recorded.get(key), wanted.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changed = [f"{name}: recorded {old.get(name)}, now {new.get(name)}"
                       for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
            parts.append(f"{key} ({'; '.join(changed)})")
        else:
            parts.append(f"{key} (recorded {old}, now {new})")
    return ", ".join(parts)


def must_start_over(out: str | Path, wanted: dict, has_outputs: bool, overwrite: bool) -> bool:
    """Whether every output of `out` must be removed (and `wanted` recorded) before preparing:
    True when the recorded settings are not `wanted` (or none are recorded). Such a folder that
    `has_outputs` is refused without `overwrite`: DataError, one line naming the differing keys.
    Reads only; writes nothing."""
    recorded = read_settings(out)
    if recorded == wanted:
        return False
    if has_outputs and not overwrite:
        out = Path(out)
        if recorded is None:
            raise DataError(f"{out}: holds prepared files but no {SETTINGS_FILE}; rerun with "
                            f"--overwrite to replace them")
        raise DataError(f"{out / SETTINGS_FILE}: outputs were made with other settings: "
                        f"{describe_differences(recorded, wanted)}; rerun with --overwrite "
                        f"to replace all outputs")
    return True


def write_settings(out: str | Path, wanted: dict) -> None:
    """Records `wanted` as `out`'s settings (atomically, creating `out`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / SETTINGS_FILE, json.dumps(wanted, indent=2) + "\n")
