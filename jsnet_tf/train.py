"""Trains JSNet: `jsnet-train --area 5 --data_dir DIR --workdir DIR [--config NAME_OR_FILE]`
(also `python train.py` in the repository, or `python -m jsnet_tf.train`).

Everything not given on the command line comes from the config (default: the paper's S3DIS
setting, the shipped `s3dis_area5`; a TOML file or a shipped config's name: `s3dis_6fold`,
`shapenet_part`, `demo`, `ablations/09_rs`); `--set section.key=value` overrides any config key.
The data folder is the output of the dataset's preparer (`jsnet-prepare-s3dis`,
`jsnet-prepare-shapenet`, `jsnet-prepare-scannet`); the config's dataset (its task, jsnet_tf.tasks)
decides the rest. S3DIS: each test area trains its own model in `<workdir>/area<k>` (one area with
--area, else every area of `data.areas`: 6-fold with `s3dis_6fold`). ShapeNet part (`shapenet_part`)
and ScanNet v2 (`scannet`): one run in `<workdir>` itself, on the train split, validated on val
(ShapeNet) or on scenes carved from train (ScanNet, data.validation_rooms). Running the same command
again resumes after the last complete epoch. The run records its data folder as an absolute
path, so evaluate and predict find it from any folder.

No checkpoint, stopping point or threshold is chosen on the test data: validation, `best/` and
early stopping use `data.validation_rooms` (carved from the training areas) or are off, and the
model is the last epoch, as in the paper.
With TF_CONFIG set, training runs on several machines (MultiWorkerMirroredStrategy); otherwise on
all visible GPUs, or the CPU.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags (defined when run as a program)."""
    from jsnet_tf import cli

    flags.DEFINE_string("config", "s3dis_area5", "experiment config to start from: a TOML file or a shipped config's name "
                        "(s3dis_area5, s3dis_6fold, shapenet_part, scannet, demo, demo_shapenet, demo_scannet, "
                        "ablations/01_base_network ...)")
    flags.DEFINE_integer("area", None, "S3DIS: the test area to hold out (overrides data.areas; default: every area of "
                         "the config)")
    flags.DEFINE_string("workdir", None, "where checkpoints, TensorBoard logs and the config of the run go (required)")
    flags.DEFINE_integer("epochs", None, "number of epochs (overrides train.epochs)")
    flags.DEFINE_integer("batch_size", None, "global batch size over all replicas (overrides train.batch_size)")
    flags.DEFINE_bool(
        "validate", True,
        "after every epoch, semantic accuracy and loss on the validation data (data.validation_rooms, or ShapeNet's "
        "val split), which also choose best/ and early stopping; nothing happens without validation data",
    )
    cli.define_shared("set", "data_dir", "verbose")


def resolve_config():
    """The run's config from --config and the flags, checked (its dataset's task included)."""
    from jsnet_tf import config, tasks
    from jsnet_tf.cli import config_overrides

    overrides = config_overrides(FLAGS.set, {
        "data.data_dir": FLAGS.data_dir or None,
        "train.epochs": FLAGS.epochs,
        "train.batch_size": FLAGS.batch_size,
    })
    cfg = config.load(FLAGS.config, overrides)
    task = tasks.for_config(cfg)
    if FLAGS.area is not None:
        task.training_folds(cfg, FLAGS.area)  # refused where the dataset has no areas
        cfg = config.apply_overrides(cfg, [f"data.areas=[{FLAGS.area}]"])  # the run records its area
    task.check_config(cfg, FLAGS.config)
    return cfg


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    logging.set_verbosity(logging.WARNING)  # TensorFlow's checkpoint INFO lines would interleave the progress bar
    from jsnet_tf import tasks

    cfg = resolve_config()  # a bad config is refused before TensorFlow loads
    task = tasks.for_config(cfg)
    folds = task.training_folds(cfg, FLAGS.area)
    from jsnet_tf import training

    for fold in folds:
        run_dir = task.run_dir(FLAGS.workdir, fold)
        held_out = f", {task.fold_description(fold)} held out" if task.has_folds else f" ({task.fold_description(fold)})"
        print(f"training on {task.title}{held_out} -> {run_dir}", flush=True)
        training.Trainer(cfg, run_dir, fold).fit(verbose=int(FLAGS.verbose), validate=FLAGS.validate)


def cli():
    """The `jsnet-train` console script (also `python -m jsnet_tf.train`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__, define_flags, name="train.py")


if __name__ == "__main__":
    cli()
