"""Prepares S3DIS for training and evaluation.

    python -m jsnet_tf.data.prepare_s3dis --raw DIR --out DIR [--areas 1,2,...]

`--raw` holds the Stanford3dDataset_v1.2(_Aligned_Version) areas: `Area_k/<room>/Annotations/`.
Writes, under `--out`:

    rooms/Area_k_<room>.npz    the room (xyz shifted to the origin, rgb, semantic, instance)
    blocks/Area_k_<room>.h5    its 1 m sliding-window blocks (stride 0.5): data / seglabels / pid
                               (+ indices: each block point's index in the room)
    lists/train_hdf5_file_list_woArea{k}.txt, test_hdf5_file_list_Area{k}.txt,
    lists/train_file_list_woArea{k}.txt,      test_file_list_Area{k}.txt,
    lists/mean_ins_size_woArea{k}.txt

Every file is written to a hidden `.<name>.*.tmp` file and renamed when complete, so a rerun
skips the rooms whose outputs exist and redoes the rest; stray temp files are ignored.
"""

from __future__ import annotations

import re
import sys
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from absl import app, flags

from jsnet_tf.data import s3dis

_AREA_RE = re.compile(r"^Area_(\d+)$")


def find_rooms(raw: str | Path, areas: Sequence[int] | None = None) -> list[tuple[int, Path]]:
    """(area, room dir) for every room folder under `raw/Area_k/`, sorted; DataError if `raw`
    has no Area_* folders or a requested area is missing."""
    raw = Path(raw)
    if not raw.is_dir():
        raise s3dis.DataError(f"{raw}: raw data folder does not exist")
    found = {}
    for d in raw.iterdir():
        m = _AREA_RE.match(d.name)
        if m and d.is_dir():
            found[int(m.group(1))] = d
    if not found:
        raise s3dis.DataError(f"{raw}: no Area_* folders (expected the S3DIS Area_1..Area_6)")
    wanted = sorted(found) if not areas else sorted(set(areas))
    missing = [k for k in wanted if k not in found]
    if missing:
        raise s3dis.DataError(f"{raw}: no folder for area(s) "
                              f"{', '.join(f'Area_{k}' for k in missing)}")
    return [(k, room) for k in wanted
            for room in sorted(p for p in found[k].iterdir() if p.is_dir())]


def room_outputs(out: str | Path, name: str) -> tuple[Path, Path]:
    out = Path(out)
    return out / "rooms" / f"{name}.npz", out / "blocks" / f"{name}.h5"


def prepare(raw: str | Path, out: str | Path, areas: Sequence[int] | None = None,
            num_points: int = 4096, seed: int = 0, progress: bool = True) -> dict[str, list[str]]:
    """Prepares every room (skipping complete ones), then the lists and mean instance sizes.

    Returns {"prepared": [...], "skipped": [...]} room names. Raises DataError on bad input;
    rooms finished before the error stay, nothing half-written is left under their final names.
    """
    from tqdm import tqdm

    out = Path(out)
    rooms = find_rooms(raw, areas)
    done: dict[str, list[str]] = {"prepared": [], "skipped": []}
    bar = tqdm(rooms, desc="S3DIS rooms", unit="room", disable=not progress, file=sys.stderr)
    for area, room_dir in bar:
        name = f"Area_{area}_{room_dir.name}"
        bar.set_postfix_str(name)
        npz, h5 = room_outputs(out, name)
        if npz.is_file() and h5.is_file():
            done["skipped"].append(name)
            continue
        room = None
        if npz.is_file():
            try:
                room = s3dis.load_room(npz)
            except s3dis.DataError:
                room = None
        if room is None:
            room = s3dis.read_room(room_dir, name=name)
            s3dis.save_room(npz, room)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        blocks = s3dis.test_blocks(room, num_points=num_points, rng=rng)
        s3dis.write_blocks_h5(h5, blocks.data, blocks.semantic, blocks.instance, blocks.indices)
        done["prepared"].append(name)
    s3dis.write_area_lists(out)
    return done


FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags; defined only when run as a program, so importing this module
    (e.g. from a benchmark or a training script) adds no flags that could clash."""
    flags.DEFINE_string("raw", None, "S3DIS folder holding Area_1 .. Area_6 "
                        "(each Area_k/<room>/Annotations/<class>_<i>.txt).")
    flags.DEFINE_string("out", None, "Output folder: rooms/, blocks/ and lists/ are written here.")
    flags.DEFINE_list("areas", None, "Areas to prepare, e.g. 1,2,3 (default: every Area_* in --raw).")
    flags.DEFINE_integer("num_points", 4096, "Points per block.")
    flags.DEFINE_integer("seed", 0, "Seed of the per-room point sampling (reproducible reruns).")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.raw or not FLAGS.out:
        raise app.UsageError("--raw and --out are required")
    try:
        areas = [int(a) for a in FLAGS.areas] if FLAGS.areas else None
    except ValueError:
        raise app.UsageError(f"--areas must be integers, got {','.join(FLAGS.areas)}")
    try:
        done = prepare(FLAGS.raw, FLAGS.out, areas, FLAGS.num_points, FLAGS.seed, FLAGS.progress)
    except (s3dis.DataError, OSError) as e:
        sys.exit(f"prepare_s3dis: error: {e}")
    print(f"prepared {len(done['prepared'])} room(s), skipped {len(done['skipped'])} already "
          f"complete; outputs under {FLAGS.out}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
