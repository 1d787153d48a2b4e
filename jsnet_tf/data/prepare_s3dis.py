"""Prepares S3DIS for training and evaluation.

    python -m jsnet_tf.data.prepare_s3dis --raw DIR --out DIR [--areas 1,2,...]
        [--num_points 4096] [--seed 0] [--overwrite]

`--raw` holds the Stanford3dDataset_v1.2(_Aligned_Version) areas: `Area_k/<room>/Annotations/`.
Writes, under `--out`:

    rooms/Area_k_<room>.npz    the room (xyz shifted to the origin, rgb, semantic, instance)
    blocks/Area_k_<room>.h5    its 1 m sliding-window blocks (stride 0.5): data / seglabels / pid
                               (+ indices: each block point's index in the room)
    lists/train_hdf5_file_list_woArea{k}.txt, test_hdf5_file_list_Area{k}.txt,
    lists/train_file_list_woArea{k}.txt,      test_file_list_Area{k}.txt,
    lists/mean_ins_size_woArea{k}.txt
    prepare.json               the settings the blocks were made with: num_points, seed

Every file is written to a hidden `.<name>.*.tmp` file and renamed when complete, so a rerun
skips the rooms whose outputs exist and redoes the rest; stray temp files are ignored. A rerun
with other settings than the recorded ones is refused (one line naming the keys that differ)
while outputs exist, unless `--overwrite`, which removes every output first (of all areas), so
a folder never mixes blocks of two settings; `--overwrite` with the recorded settings redoes the
requested rooms from the raw files. The settings are checked before anything is written.
"""

from __future__ import annotations

import re
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import app, flags

from jsnet_tf.data import prepared_settings, s3dis
from jsnet_tf.errors import UserError

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


def settings(num_points: int, seed: int) -> dict:
    """The settings recorded in `prepare.json`: those the block files depend on."""
    return {"num_points": int(num_points), "seed": int(seed)}


def area_list_names(area: int) -> set[str]:
    """The names of the `lists/` files `s3dis.write_area_lists` writes for `area`."""
    names = {s3dis.list_path("", area, split, kind).name
             for split in s3dis.SPLITS for kind in ("rooms", "blocks")}
    return names | {s3dis.mean_ins_size_path("", area).name}


def existing_outputs(out: str | Path) -> list[Path]:
    """The prepared files in `out`, lists first, then block and room files (the order in which
    to remove them: a room with both files is complete). Temp and other files are not outputs."""
    out = Path(out)
    lists = []
    for path in sorted((out / "lists").glob("*Area*.txt")):
        area = re.search(r"Area(\d+)\.txt$", path.name)
        if area and path.name in area_list_names(int(area.group(1))):
            lists.append(path)
    rooms = [path for folder, suffix in (("blocks", ".h5"), ("rooms", ".npz"))
             for path in sorted((out / folder).glob(f"Area_*{suffix}"))
             if path.is_file() and s3dis.parse_room_file_name(path) is not None]
    return lists + rooms


def prepare(raw: str | Path, out: str | Path, areas: Sequence[int] | None = None,
            num_points: int = 4096, seed: int = 0, overwrite: bool = False,
            progress: bool = True) -> dict[str, list[str]]:
    """Prepares every room (skipping complete ones, unless `overwrite`), then the lists and
    mean instance sizes (see the module docstring).

    Returns {"prepared": [...], "skipped": [...]} room names. Raises DataError on bad input or
    on settings other than the recorded ones while outputs exist (unless `overwrite`), before
    writing anything; rooms finished before a bad room stay, nothing half-written is left under
    their final names (nor, when no output is left, a settings file).
    """
    from tqdm import tqdm

    out = Path(out)
    rooms = find_rooms(raw, areas)
    wanted = settings(num_points, seed)
    outputs = existing_outputs(out)
    if prepared_settings.must_start_over(out, wanted, bool(outputs), overwrite):
        for path in outputs:
            path.unlink()
        prepared_settings.write_settings(out, wanted)
    done: dict[str, list[str]] = {"prepared": [], "skipped": []}
    try:
        bar = tqdm(rooms, desc="S3DIS rooms", unit="room", disable=not progress, file=sys.stderr)
        for area, room_dir in bar:
            name = f"Area_{area}_{room_dir.name}"
            bar.set_postfix_str(name)
            npz, h5 = room_outputs(out, name)
            if not overwrite and npz.is_file() and h5.is_file():
                done["skipped"].append(name)
                continue
            room = None
            if npz.is_file() and not overwrite:
                try:
                    room = s3dis.load_room(npz)
                except s3dis.DataError:
                    room = None
            if room is None:
                room = s3dis.read_room(room_dir, name=name)
                s3dis.save_room(npz, room)
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            blocks = s3dis.test_blocks(room, num_points=num_points, rng=rng)
            s3dis.write_blocks_h5(h5, blocks.data, blocks.semantic, blocks.instance,
                                  blocks.indices)
            done["prepared"].append(name)
        s3dis.write_area_lists(out)
    except BaseException:
        if not existing_outputs(out):
            (out / prepared_settings.SETTINGS_FILE).unlink(missing_ok=True)
        raise
    return done


FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags; defined only when run as a program, so importing this module
    (e.g. from a benchmark or a training script) adds no flags that could clash."""
    flags.DEFINE_string("raw", None, "S3DIS folder holding Area_1 .. Area_6 "
                        "(each Area_k/<room>/Annotations/<class>_<i>.txt).")
    flags.DEFINE_string("out", None, "Output folder: rooms/, blocks/, lists/ and prepare.json are "
                        "written here.")
    flags.DEFINE_list("areas", None, "Areas to prepare, e.g. 1,2,3 (default: every Area_* in --raw).")
    flags.DEFINE_integer("num_points", 4096, "Points per block (recorded in prepare.json).",
                         lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the per-room point sampling (reproducible reruns; "
                         "recorded in prepare.json).", lower_bound=0)
    flags.DEFINE_bool("overwrite", False, "Replace existing outputs: redo the requested rooms, "
                      "and when the settings differ from prepare.json remove every output first "
                      "(without it such a run is refused).")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.raw or not FLAGS.out:
        raise app.UsageError("--raw and --out are required")
    try:
        areas = [int(a) for a in FLAGS.areas] if FLAGS.areas else None
    except ValueError:
        raise app.UsageError(f"--areas must be integers, got {','.join(FLAGS.areas)}") from None
    try:
        done = prepare(FLAGS.raw, FLAGS.out, areas, FLAGS.num_points, FLAGS.seed, FLAGS.overwrite,
                       FLAGS.progress)
    except (UserError, OSError) as e:
        sys.exit(f"prepare_s3dis: error: {e}")
    print(f"prepared {len(done['prepared'])} room(s), skipped {len(done['skipped'])} already "
          f"complete; outputs under {FLAGS.out}")


def cli():
    """The `jsnet-prepare-s3dis` console script (also `python -m jsnet_tf.data.prepare_s3dis`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__, define_flags)


if __name__ == "__main__":
    cli()
