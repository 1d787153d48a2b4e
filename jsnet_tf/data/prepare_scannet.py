"""Prepares ScanNet v2 for training, evaluation and prediction.

    python -m jsnet_tf.data.prepare_scannet --raw DIR --out DIR [--splits train,val,test]
        [--split_dir DIR] [--label_map FILE] [--num_points 4096] [--seed 0] [--overwrite]

`--raw` is the download (the folder holding `scans/` and `scans_test/`) or its `scans/` folder:
a scene's folder is looked for in `--raw`, in its `scans/` and `scans_test/`, and in a
`scans_test/` beside it. The label table `scannetv2-labels.combined.tsv` is looked for in
`--raw` and the folder above it, unless `--label_map` names it. The splits are the official
lists shipped with the package (1201 train, 312 val, 100 test scenes) unless `--split_dir`
holds other `scannetv2_{train,val,test}.txt`. See `jsnet_tf.data.scannet` for the files read,
the labels (20 classes, everything else ignored; 18 instance classes) and the release's quirks.
Writes, under `--out`:

    scenes/<scene>.npz            every vertex of the scene's mesh, in the mesh's order
                                  (`scannet.save_scene`: xyz shifted to the origin, rgb,
                                  semantic, instance, name, offset, nyu40)
    lists/{train,val,test}.txt    the scene files of each prepared split, sorted
    lists/mean_ins_size_train.txt the mean instance size of each class over the train split, in
                                  the points of the sampled stride-0.5, 1 m blocks (`--num_points`
                                  a block) as S3DIS's mean_ins_size files
    prepare.json                  the settings: num_points, seed, and digests of the split lists
                                  and the label table

Test scenes are read without labels (every vertex ignored). Every split list, scene folder and
file is checked before anything is written. Every file is written to a hidden `.<name>.*.tmp`
file and renamed when complete, so a rerun skips the scenes whose files exist and redoes the
rest; a split's list is written once all its scenes are. A rerun with other settings than the
recorded ones is refused (one line naming the keys that differ) while outputs exist, unless
`--overwrite`, which removes every output first; `--overwrite` with the recorded settings redoes
the requested scenes.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import app, flags

from jsnet_tf.data import prepared_settings, s3dis, scannet
from jsnet_tf.errors import DataError, UserError
from jsnet_tf.files import is_temp_file, write_text_atomic


def find_scene_dir(raw: str | Path, scene: str) -> Path | None:
    """The scan folder of `scene` under `raw` (see the module docstring), None if none."""
    raw = Path(raw)
    for folder in (raw, *(raw / f for f in scannet.SCAN_FOLDERS), raw.parent / "scans_test"):
        if (folder / scene).is_dir():
            return folder / scene
    return None


def find_label_map(raw: str | Path, label_map: str | Path | None = None) -> Path:
    """`label_map`, else the label table in `raw` or the folder above it; DataError if none."""
    if label_map is not None:
        if not Path(label_map).is_file():
            raise DataError(f"{label_map}: label table does not exist")
        return Path(label_map)
    raw = Path(raw)
    for folder in (raw, raw.resolve().parent):
        if (folder / scannet.LABEL_MAP_FILE).is_file():
            return folder / scannet.LABEL_MAP_FILE
    raise DataError(f"{raw}: no {scannet.LABEL_MAP_FILE} here or in the folder above "
                    f"(name it with --label_map)")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def settings(splits: dict[str, list[str]], label_map: Path, num_points: int, seed: int) -> dict:
    """The settings recorded in `prepare.json`: those the outputs depend on. The split lists
    and the label table are recorded by content (scene count and digest)."""
    return {"num_points": int(num_points), "seed": int(seed),
            "split_lists": {s: f"{len(names)} scenes, sha256 {_digest(' '.join(names).encode())}"
                            for s, names in splits.items()},
            "label_map": f"sha256 {_digest(label_map.read_bytes())}"}


def existing_outputs(out: str | Path) -> list[Path]:
    """The prepared files in `out`: lists first, then scene files (the order in which to remove
    them: a list marks a split complete). Temp and other files are not outputs."""
    out = Path(out)
    lists = [p for p in [scannet.list_path(out, s) for s in scannet.SPLITS]
             + [scannet.mean_ins_size_path(out)] if p.is_file()]
    scenes = sorted(p for p in (out / scannet.SCENES_DIR).glob("*.npz")
                    if p.is_file() and not is_temp_file(p) and scannet.is_scene_name(p.stem))
    return lists + scenes


def locate_scenes(raw: str | Path, splits: dict[str, list[str]], wanted: Sequence[str],
                  split_dir: Path) -> list[tuple[str, str, Path]]:
    """(split, scene, scan folder) for every scene of the `wanted` splits, sorted by split and
    name, after checking that each folder holds the files it needs (the mesh; the segments and
    aggregation too for train and val); DataError naming the first one missing."""
    raw = Path(raw)
    if not raw.is_dir():
        raise DataError(f"{raw}: raw data folder does not exist")
    found = []
    for split in wanted:
        missing = []
        for scene in sorted(splits[split]):
            scene_dir = find_scene_dir(raw, scene)
            if scene_dir is None:
                missing.append(scene)
                continue
            files = scannet.scene_files(scene_dir, scene)
            needed = ("mesh", "segments", "aggregation") if split in scannet.LABELLED_SPLITS \
                else ("mesh",)
            for key in needed:
                if not files[key].is_file():
                    raise DataError(f"{files[key]}: missing ({split} scene {scene})")
            found.append((split, scene, scene_dir))
        if missing:
            raise DataError(f"{split_dir / scannet.SPLIT_FILE.format(split)}: {len(missing)} "
                            f"scene(s) not found under {raw}, first {missing[0]} (prepare other "
                            f"--splits, or point --raw at the folder holding them)")
    return found


def prepare(raw: str | Path, out: str | Path, splits: Sequence[str] = scannet.SPLITS,
            split_dir: str | Path | None = None, label_map: str | Path | None = None,
            num_points: int = 4096, seed: int = 0, overwrite: bool = False,
            progress: bool = True) -> dict[str, list[str]]:
    """Prepares the scenes of `splits` (skipping complete ones, unless `overwrite`), then their
    lists and, with train, the mean instance sizes (see the module docstring).

    Returns {"prepared": [...], "skipped": [...]} scene names. Raises DataError on bad input or
    on settings other than the recorded ones while outputs exist (unless `overwrite`), before
    writing anything; scenes finished before a bad scene stay, nothing half-written is left
    under a final name (nor, when no output is left, a settings file).
    """
    from tqdm import tqdm

    unknown = [s for s in splits if s not in scannet.SPLITS]
    if unknown or not splits:
        raise ValueError(f"splits must be some of {', '.join(scannet.SPLITS)}, got "
                         f"{', '.join(splits) or 'none'}")
    out = Path(out)
    split_dir = scannet.OFFICIAL_SPLIT_DIR if split_dir is None else Path(split_dir)
    lists = scannet.read_splits(split_dir)
    wanted_splits = [s for s in scannet.SPLITS if s in splits]
    table_path = find_label_map(raw, label_map)
    table = scannet.read_label_map(table_path)
    scenes = locate_scenes(raw, lists, wanted_splits, split_dir)
    wanted = settings(lists, table_path, num_points, seed)
    outputs = existing_outputs(out)
    if prepared_settings.must_start_over(out, wanted, bool(outputs), overwrite):
        for path in outputs:
            path.unlink()
        prepared_settings.write_settings(out, wanted)
    done: dict[str, list[str]] = {"prepared": [], "skipped": []}
    sizes: dict[str, list[list[int]]] = {}  # of the train scenes prepared in this run
    try:
        bar = tqdm(scenes, desc="ScanNet scenes", unit="scene", disable=not progress,
                   file=sys.stderr)
        for split, name, scene_dir in bar:
            bar.set_postfix_str(name)
            path = scannet.scene_path(out, name)
            if not overwrite and path.is_file():
                done["skipped"].append(name)
                continue
            labelled = split in scannet.LABELLED_SPLITS
            scene = scannet.read_scene(scene_dir, table if labelled else None, name=name)
            scannet.save_scene(path, scene)
            if split == "train":
                sizes[name] = _scene_instance_sizes(scene, num_points, seed)
            done["prepared"].append(name)
        if "train" in wanted_splits and (sizes or not scannet.mean_ins_size_path(out).is_file()):
            for name in lists["train"]:
                if name not in sizes:
                    sizes[name] = _scene_instance_sizes(
                        scannet.load_scene(scannet.scene_path(out, name)), num_points, seed)
            s3dis.write_mean_ins_size(scannet.mean_ins_size_path(out), s3dis.mean_instance_size(
                (sizes[name] for name in lists["train"]), scannet.NUM_CLASSES))
        for split in wanted_splits:
            write_text_atomic(scannet.list_path(out, split), "".join(
                f"{scannet.SCENES_DIR}/{name}.npz\n" for name in sorted(lists[split])))
    except BaseException:
        if not existing_outputs(out):
            (out / prepared_settings.SETTINGS_FILE).unlink(missing_ok=True)
        raise
    return done


def _scene_instance_sizes(scene: scannet.Scene, num_points: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng([seed, zlib.crc32(scene.name.encode())])
    return scannet.instance_sizes(scene, num_points=num_points, rng=rng)


FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags; defined only when run as a program, so importing this module
    adds no flags that could clash."""
    flags.DEFINE_string("raw", None, "The ScanNet v2 download (holding scans/ and scans_test/) "
                        "or its scans/ folder; each scene folder holds <scene>_vh_clean_2.ply, "
                        "<scene>_vh_clean_2.0.010000.segs.json and <scene>.aggregation.json "
                        "(test scenes: the mesh only).")
    flags.DEFINE_string("out", None, "Output folder: scenes/, lists/ and prepare.json are "
                        "written here.")
    flags.DEFINE_list("splits", list(scannet.SPLITS), "Splits to prepare, some of "
                      "train,val,test (test scenes are read without labels).")
    flags.DEFINE_string("split_dir", None, "Folder holding scannetv2_train.txt, "
                        "scannetv2_val.txt and scannetv2_test.txt (default: the official "
                        "benchmark lists shipped with jsnet-tf: 1201 / 312 / 100 scenes).")
    flags.DEFINE_string("label_map", None, f"The label table {scannet.LABEL_MAP_FILE} (raw "
                        "category -> nyu40 id; default: the one in --raw or the folder above).")
    flags.DEFINE_integer("num_points", 4096, "Points per block of the sampled stride-0.5, 1 m "
                         "blocks in which the mean instance sizes of the train split are "
                         "counted (recorded in prepare.json).", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of that per-scene block sampling (reproducible reruns; "
                         "recorded in prepare.json).", lower_bound=0)
    flags.DEFINE_bool("overwrite", False, "Replace existing outputs: redo the requested scenes, "
                      "and when the settings differ from prepare.json remove every output first "
                      "(without it such a run is refused).")
    flags.DEFINE_bool("progress", True, "Show a progress bar over the scenes.")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Repairs of the release (`scannet.DataWarning`) as one line each, above the progress bar."""
    from tqdm import tqdm

    tqdm.write(f"prepare_scannet: warning: {message}", file=sys.stderr)


def main(argv):
    warnings.showwarning = _show_warning
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.raw or not FLAGS.out:
        raise app.UsageError("--raw and --out are required")
    unknown = [s for s in FLAGS.splits if s not in scannet.SPLITS]
    if unknown or not FLAGS.splits:
        raise app.UsageError(f"--splits must be some of {','.join(scannet.SPLITS)}, got "
                             f"{','.join(FLAGS.splits)}")
    try:
        done = prepare(FLAGS.raw, FLAGS.out, FLAGS.splits, FLAGS.split_dir, FLAGS.label_map,
                       FLAGS.num_points, FLAGS.seed, FLAGS.overwrite, FLAGS.progress)
    except (UserError, OSError) as e:
        sys.exit(f"prepare_scannet: error: {e}")
    print(f"prepared {len(done['prepared'])} scene(s), skipped {len(done['skipped'])} already "
          f"complete; outputs under {FLAGS.out}")


def cli():
    """The `jsnet-prepare-scannet` console script (also `python -m jsnet_tf.data.prepare_scannet`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__, define_flags)


if __name__ == "__main__":
    cli()
