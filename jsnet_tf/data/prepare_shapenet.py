"""Prepares ShapeNet part for training and evaluation.

    python -m jsnet_tf.data.prepare_shapenet --raw DIR --out DIR [--num_points 2048] [--seed 0]
        [--splits train,val,test] [--overwrite]

`--raw` is `shapenetcore_partanno_segmentation_benchmark_v0_normal` (or the synthetic set of
`jsnet_tf.data.synthetic_parts`): `synsetoffset2category.txt`, `<synset>/<shape_id>.txt`,
`train_test_split/shuffled_{train,val,test}_file_list.json`. Writes, under `--out`, for every
split:

    shapenet_<split>_<k>.h5        data (B, N, 6), seglabels / pid (B, N), category (B,)
    <split>_hdf5_file_list.txt     the split's h5 files, in the split json's order

and `prepare.json`, the settings the outputs were made with: num_points, seed,
instance_radius and the category file's {category: synset} mapping.

Reruns resume: a split whose list and files exist, hold as many shapes of `--num_points` points
as the split json lists and were made with the recorded settings is skipped. Other settings than
the recorded ones are refused (one line naming the differing keys) while outputs exist, unless
`--overwrite`, which removes every output first, so a folder never mixes outputs of two
settings. A split is written all or nothing (`shapenet.prepare_shapenet`); bad input stops the
run with one line naming the file (and line), exit status 1. Hidden `.<name>.*.tmp` files
left by a killed run are ignored.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags

from jsnet_tf.data import shapenet
from jsnet_tf.data.prepared_settings import SETTINGS_FILE, must_start_over, write_settings
from jsnet_tf.errors import DataError, UserError


def settings(raw: str | Path, num_points: int, seed: int, radius: float) -> dict:
    """The settings recorded in `prepare.json` (the category mapping read from `raw`)."""
    return {"num_points": int(num_points), "seed": int(seed), "instance_radius": float(radius),
            "categories": shapenet.read_category_file(raw)}


def existing_outputs(out: str | Path) -> list[Path]:
    """The prepared files in `out`: the split lists and h5 files (temp files are not outputs)."""
    out = Path(out)
    if not out.is_dir():
        return []
    names = {shapenet.list_file(out, s).name for s in shapenet.SPLITS}
    return sorted(p for p in out.iterdir() if p.is_file() and (
        p.name in names or any(shapenet.is_split_file(p.name, s) for s in shapenet.SPLITS)))


def split_is_complete(out: str | Path, split: str, expected_shapes: int,
                      num_points: int) -> bool:
    """True if `split`'s list exists and its files hold `expected_shapes` shapes of
    `num_points` points (read from the h5 headers)."""
    try:
        files = shapenet.prepared_files(out, split)
        sizes = [shapenet.read_shapenet_h5_size(f) for f in files]
    except DataError:
        return False
    return (all(n == num_points for _, n in sizes)
            and sum(b for b, _ in sizes) == expected_shapes)


def prepare(raw: str | Path, out: str | Path, splits: Sequence[str] = shapenet.SPLITS,
            num_points: int = shapenet.DEFAULT_NUM_POINTS, seed: int = 0,
            radius: float = shapenet.DEFAULT_INSTANCE_RADIUS, overwrite: bool = False,
            progress: bool = True) -> dict[str, list[str]]:
    """Prepares `splits` of `raw` into `out` (see the module docstring).

    Returns {"prepared": [...], "skipped": [...]} split names. Raises DataError on bad input
    or on settings other than the recorded ones (unless `overwrite`); every split list and
    category is checked before anything is written, and a failing split leaves none of its
    files (nor, when nothing else is there, a settings file).
    """
    out = Path(out)
    unknown = [s for s in splits if s not in shapenet.SPLITS]
    if unknown or not splits:
        raise ValueError(f"splits must be some of {', '.join(shapenet.SPLITS)}, got "
                         f"{', '.join(splits) or 'none'}")
    wanted = settings(raw, num_points, seed, radius)
    entries = {s: shapenet.read_split(raw, s, synsets=wanted["categories"]) for s in splits}
    for split, listed in entries.items():
        if not listed:
            raise DataError(f"{Path(raw) / shapenet.SPLIT_FILE.format(split)}: no shapes in "
                            f"split {split!r}")
    outputs = existing_outputs(out)
    if must_start_over(out, wanted, bool(outputs), overwrite):
        # Lists first: a list is what marks a split complete.
        for path in sorted(outputs, key=lambda p: not p.name.endswith(".txt")):
            path.unlink()
        write_settings(out, wanted)
    done: dict[str, list[str]] = {"prepared": [], "skipped": []}
    try:
        for split in splits:
            if not overwrite and split_is_complete(out, split, len(entries[split]), num_points):
                done["skipped"].append(split)
                continue
            shapenet.prepare_shapenet(raw, out, split, num_points=num_points, seed=seed,
                                      radius=radius, synsets=wanted["categories"],
                                      progress=progress)
            done["prepared"].append(split)
    except BaseException:
        if not existing_outputs(out):
            (out / SETTINGS_FILE).unlink(missing_ok=True)
        raise
    return done


FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags; defined only when run as a program, so importing this module
    adds no flags that could clash."""
    flags.DEFINE_string("raw", None, "ShapeNet part folder "
                        "(shapenetcore_partanno_segmentation_benchmark_v0_normal): "
                        "synsetoffset2category.txt, <synset>/<id>.txt, train_test_split/.")
    flags.DEFINE_string("out", None, "Output folder: shapenet_<split>_<k>.h5, "
                        "<split>_hdf5_file_list.txt and prepare.json are written here.")
    flags.DEFINE_integer("num_points", shapenet.DEFAULT_NUM_POINTS,
                         "Points sampled per shape (without replacement when a shape has more, "
                         "with duplicates when it has fewer).", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the per-shape point sampling (reproducible reruns).",
                         lower_bound=0)
    flags.DEFINE_float("instance_radius", shapenet.DEFAULT_INSTANCE_RADIUS,
                       "Two points of one part closer than this (unit-sphere units) belong to "
                       "the same part instance (connected components, as SGPN).",
                       lower_bound=0.0)
    flags.DEFINE_list("splits", list(shapenet.SPLITS), "Splits to prepare, some of "
                      "train,val,test.")
    flags.DEFINE_bool("overwrite", False, "Replace existing outputs: redo the requested splits, "
                      "and when the settings differ from prepare.json remove every output first "
                      "(without it such a run is refused).")
    flags.DEFINE_bool("progress", True, "Show a progress bar over the shapes.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.raw or not FLAGS.out:
        raise app.UsageError("--raw and --out are required")
    unknown = [s for s in FLAGS.splits if s not in shapenet.SPLITS]
    if unknown or not FLAGS.splits:
        raise app.UsageError(f"--splits must be some of {','.join(shapenet.SPLITS)}, got "
                             f"{','.join(FLAGS.splits)}")
    try:
        done = prepare(FLAGS.raw, FLAGS.out, FLAGS.splits, FLAGS.num_points, FLAGS.seed,
                       FLAGS.instance_radius, FLAGS.overwrite, FLAGS.progress)
    except (UserError, OSError) as e:
        sys.exit(f"prepare_shapenet: error: {e}")
    counts = {s: sum(shapenet.read_shapenet_h5_size(f)[0]
                     for f in shapenet.prepared_files(FLAGS.out, s)) for s in FLAGS.splits}
    print(f"prepared {', '.join(done['prepared']) or 'nothing'}; skipped "
          f"{', '.join(done['skipped']) or 'nothing'} (already complete); shapes: "
          f"{', '.join(f'{s} {n}' for s, n in counts.items())}; outputs under {FLAGS.out}")


def cli():
    """The `jsnet-prepare-shapenet` console script (also `python -m jsnet_tf.data.prepare_shapenet`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__, define_flags)


if __name__ == "__main__":
    cli()
