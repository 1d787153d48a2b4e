"""Built-in synthetic ShapeNet part set, written in the real release's raw layout.

    python -m jsnet_tf.data.synthetic_parts --out DIR [--seed 0] [--shapes_per_category 12,3,4]
        [--points_per_shape 2048,3000]

writes what `shapenetcore_partanno_segmentation_benchmark_v0_normal` holds:

    DIR/synsetoffset2category.txt                       the 16 categories with the real synsets
    DIR/<synset>/<shape_id>.txt                         "x y z nx ny nz part" a line
    DIR/train_test_split/shuffled_{train,val,test}_file_list.json   "shape_data/<synset>/<id>"

All 16 categories, each with every part id of its real range, made of simple primitives (see
`shapenet.write_synthetic_partset`), so `prepare_shapenet` and training run on it unchanged.
The default size (12 train, 3 val, 4 test shapes per category: 304 shapes) suits a demo that
trains a few epochs on 2 cores in minutes. Deterministic per seed; every file is written
atomically.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags

from jsnet_tf.data import shapenet

FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags; defined only when run as a program."""
    flags.DEFINE_string("out", None, "Output folder: the raw ShapeNet part layout is written "
                        "inside it.")
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed and sizes give the same files.",
                         lower_bound=0)
    flags.DEFINE_list("shapes_per_category", ["12", "3", "4"],
                      "Shapes of every category in the train, val and test splits, e.g. 12,3,4.")
    flags.DEFINE_list("points_per_shape", ["2048", "3000"],
                      "min,max points of a shape (each shape draws its count in this range).")
    flags.DEFINE_bool("progress", True, "Show a progress bar over the shapes.")


def _counts(name: str, values: list[str], length: int, minimum: int) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in values)
    except ValueError:
        counts = ()
    if len(counts) != length or min(counts) < minimum:
        raise app.UsageError(f"--{name} must be {length} integers >= {minimum}, got "
                             f"{','.join(values)}")
    return counts


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    sizes = _counts("shapes_per_category", FLAGS.shapes_per_category, 3, 0)
    low, high = _counts("points_per_shape", FLAGS.points_per_shape, 2, 1)
    if low > high:
        raise app.UsageError(f"--points_per_shape: min {low} > max {high}")
    start = time.time()
    try:
        splits = shapenet.write_synthetic_partset(FLAGS.out, seed=FLAGS.seed,
                                                  shapes_per_category=sizes,
                                                  points_range=(low, high),
                                                  progress=FLAGS.progress)
    except OSError as e:
        sys.exit(f"synthetic_parts: error: {e}")
    except RuntimeError as e:  # too few points for connected parts
        sys.exit(f"synthetic_parts: error: {e}; use more --points_per_shape (the default 2048,3000 works)")
    print(f"wrote {sum(map(len, splits.values()))} shapes "
          f"({', '.join(f'{s} {len(e)}' for s, e in splits.items())}) of "
          f"{shapenet.NUM_CATEGORIES} categories in {time.time() - start:.1f} s -> {FLAGS.out}")


def cli():
    """The `jsnet-synthetic-parts` console script (also `python -m jsnet_tf.data.synthetic_parts`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__, define_flags)


if __name__ == "__main__":
    cli()
