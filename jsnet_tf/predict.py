"""Segments your own point clouds with a trained JSNet.

  jsnet-predict --workdir RUN --out DIR INPUT [INPUT ...]    (also python -m jsnet_tf.predict)

The run's dataset (its task, jsnet_tf.tasks) decides what an INPUT is and what is written:
- S3DIS and ScanNet runs (rooms): INPUT is `.ply` (ASCII or binary), `.txt` / `.xyz` / `.pts`
  (`x y z [r g b]` a line), `.npy` ((N, 3) or (N, 6+)), or a scanner's `.las` / `.laz`, `.e57`
  or `.pcd` (jsnet_tf.scan_formats), coordinates in metres in any frame (float64, georeferenced
  ones too). Each cloud is cut into the 1 m blocks of the test protocol, run through the network,
  clustered and merged into instances; the outputs (jsnet_tf.prediction) hold every point, in the
  input's coordinates, in the --format(s) asked: `<stem>_semantic.ply` and `<stem>_instance.ply`,
  `<stem>_labels.txt`, `<stem>_labels.npz`, `<stem>_labels.las` / `.laz` (class in
  `classification`, instance, confidence and score as extra dimensions), and always
  `<stem>_instances.txt` (id, class, confidence, points of each instance) and `<stem>.png`, with
  the run's class names and colours.
- ShapeNet part runs: INPUT is one shape with normals (`.txt` `x y z nx ny nz [part]` or `.ply` with
  nx, ny, nz); parts predicted among those of --category; outputs as jsnet_tf.tasks.part_prediction says.
A cloud's outputs appear together at the end or not at all. An input that fails (unreadable,
empty, no x/y/z, NaN points under --nan_policy=error, ...) is reported in one line and the others
are still processed; the exit status is then 1. Flags for another dataset's runs are refused.
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags (defined when run as a program)."""
    from jsnet_tf import cli
    from jsnet_tf.prediction import DEFAULT_FORMATS, DEFAULT_MAX_POINTS_PER_PASS, FORMATS

    cli.define_shared("workdir", "which", "set", "batch_size", "seed", "verbose", "pictures")
    flags.DEFINE_integer("area", None, "with a train.py workdir of S3DIS: the area<k> run to use (needed when it holds several)")
    flags.DEFINE_string("out", None, "output folder (created if missing)")
    flags.DEFINE_string(
        "mean_ins_size", None,
        "room runs: file of the mean instance size per class of the training data (one class a line); instances of at "
        "most a quarter of their class's mean are dropped. Default: the run folder's mean_ins_size.txt (jsnet-convert "
        "--mean_ins_size), else the run's training data (S3DIS: <data_dir>/lists/mean_ins_size_woArea<k>.txt; ScanNet: "
        "<data_dir>/lists/mean_ins_size_train.txt), else no size filter",
    )
    flags.DEFINE_integer(
        "min_instance_points", None,
        "room runs, instead of --mean_ins_size: drop instances of fewer than this many points, whatever their class",
    )
    flags.DEFINE_enum(
        "nan_policy", "drop", ["drop", "error"],
        "points with a NaN or infinite coordinate or colour: drop them (their count is printed; the outputs hold the "
        "other points, in the input's order) or fail the file",
    )
    flags.DEFINE_float("color_max", None, "room runs: the full-intensity colour value of the inputs (1 or 255); default: detected")
    flags.DEFINE_bool("color", True, "room runs: use the inputs' colours; --nocolor gives every point mid-grey, as for clouds "
                      "without colour")
    flags.DEFINE_integer(
        "max_points_per_pass", DEFAULT_MAX_POINTS_PER_PASS,
        "room runs: clouds with more points are cut into x-y tiles of at most this many points, processed one after "
        "another (about 300 bytes a point of the tile of working memory); the labels and instances are those of a "
        "single pass (instances merge across tiles). LAS / LAZ inputs of more points are labelled out of core (scratch "
        "files in --out, memory bounded by the tile, no picture); other formats are held in memory. 0: never tile",
    )
    flags.DEFINE_list(
        "format", list(DEFAULT_FORMATS),
        f"room runs: the label files to write, any of {', '.join(FORMATS)}: ply (<stem>_semantic.ply and "
        "<stem>_instance.ply), txt (<stem>_labels.txt), npz (<stem>_labels.npz), las / laz (<stem>_labels.las / .laz: "
        "LAS 1.4, the class k in classification as 64 + k with the class names in its Classification Lookup VLR, "
        "instance, confidence and score as extra dimensions; a LAS/LAZ input keeps its scale, offset and fields). "
        "<stem>_instances.txt is always written",
    )
    flags.DEFINE_integer(
        "e57_scan", None,
        "room runs, E57 inputs: label only this scan (0-based); default: every scan of the file, each moved by its pose",
    )
    flags.DEFINE_bool("txt", True, "write <stem>_labels.txt (--notxt saves time and disk on large clouds)")
    flags.DEFINE_bool("overwrite", False, "replace existing outputs (otherwise a cloud whose outputs exist is an error)")
    flags.DEFINE_string(
        "category", None,
        "ShapeNet part runs: the category of the input shapes (e.g. Airplane); their parts are predicted among that "
        "category's parts only, as the benchmark does. Default: among all 50 parts",
    )


def _overrides():
    """The run's config changes the flags ask for (every point is labelled)."""
    from jsnet_tf.cli import config_overrides

    return config_overrides(FLAGS.set, {"eval.label_all_points": True, "eval.batch_size": FLAGS.batch_size,
                                        "eval.seed": FLAGS.seed})


def _options(task):
    """The predict options of the flags; the task's own flags in `extra` (given ones only)."""
    from jsnet_tf.tasks import PredictOptions

    extra = {name: FLAGS[name].value for name in task.predict_flags if FLAGS[name].present}
    if "max_points_per_pass" in task.predict_flags:
        extra.setdefault("max_points_per_pass", FLAGS.max_points_per_pass)
    return PredictOptions(overwrite=FLAGS.overwrite, nan_policy=FLAGS.nan_policy, color_max=FLAGS.color_max,
                          color=FLAGS.color, txt=FLAGS.txt, pictures=FLAGS.pictures, progress=FLAGS.verbose, extra=extra)


def build_predictor(out_dir):
    """The task's Predictor of the run in --workdir (its flags checked)."""
    from jsnet_tf import checkpoints, tasks
    from jsnet_tf.tasks.base import refuse_foreign_predict_flags

    run_dir, fold = checkpoints.resolve_run(FLAGS.workdir, FLAGS.area)
    task = tasks.for_config(checkpoints.load_config(run_dir))
    dataset_flags = sorted({name for other in tasks.names() for name in tasks.get(other).predict_flags})
    refuse_foreign_predict_flags(task, [name for name in dataset_flags if FLAGS[name].present], run_dir)
    model, cfg, prefix = checkpoints.load_run(run_dir, FLAGS.which, _overrides())
    predictor = task.predictor(model, cfg, run_dir, fold, _options(task))
    print(f"weights {prefix}; {predictor.describe()}; outputs -> {out_dir}", flush=True)
    return predictor


def main(argv):
    from jsnet_tf.cli import is_user_error

    inputs = [pathlib.Path(a) for a in argv[1:]]
    if not inputs:
        raise app.UsageError("give at least one INPUT (a point cloud: .ply, .txt, .xyz, .pts, .npy, .las, .laz, .e57 "
                             "or .pcd; a shape for ShapeNet part runs)")
    if not FLAGS.workdir or not FLAGS.out:
        raise app.UsageError("--workdir and --out are required")
    if FLAGS.color_max is not None and not FLAGS.color_max > 0:
        raise app.UsageError(f"--color_max must be positive, got {FLAGS.color_max}")
    from jsnet_tf.prediction import FORMATS

    unknown = [f for f in FLAGS.format if f not in FORMATS]
    if unknown or not FLAGS.format:
        raise app.UsageError(f"--format takes some of {', '.join(FORMATS)}, got {','.join(FLAGS.format) or 'nothing'}")
    if FLAGS.e57_scan is not None and FLAGS.e57_scan < 0:
        raise app.UsageError(f"--e57_scan must be >= 0, got {FLAGS.e57_scan}")
    logging.set_verbosity(logging.WARNING)
    out_dir = pathlib.Path(FLAGS.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    predict_one = build_predictor(out_dir)
    failed, first_of_stem = 0, {}
    for path in inputs:
        try:
            if path.stem in first_of_stem:
                other = first_of_stem[path.stem]
                from jsnet_tf.prediction import PredictError

                raise PredictError(f"{path}: its outputs would take the names of {other}'s ({path.stem}_*); rename one")
            first_of_stem[path.stem] = path
            print(predict_one(path, out_dir), flush=True)
        except Exception as error:
            if not is_user_error(error):
                raise
            failed += 1
            print(f"predict: error: {_describe(path, error)}", file=sys.stderr, flush=True)
    if failed:
        sys.exit(f"predict: {failed} of {len(inputs)} inputs failed; their outputs were not written")


def _describe(path, error):
    """One line for an input's failure, naming the file."""
    if isinstance(error, MemoryError):
        return f"{path}: out of memory: lower --max_points_per_pass (now {FLAGS.max_points_per_pass})"
    text = str(error) or type(error).__name__
    return text if str(path) in text else f"{path}: {text}"


def cli():
    """The `jsnet-predict` console script (also `python -m jsnet_tf.predict`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__, define_flags, name="predict")


if __name__ == "__main__":
    cli()
