"""Trains JSNet: `jsnet-train --area 5 --data_dir DIR --workdir DIR [--config NAME_OR_FILE]`
(also `python train.py` in the repository, or `python -m jsnet_tf.train`).

Everything not given on the command line comes from the config (default: the paper's S3DIS
setting, the shipped `s3dis_area5`; a TOML file or a shipped config's name: `s3dis_6fold`,
`shapenet_part`, `demo`, `ablations/09_rs`); `--set section.key=value` overrides any config key.
The data folder is the output of `jsnet-prepare-s3dis`. Each test area trains its own model in
`<workdir>/area<k>` (one area with --area, else every area of `data.areas`: 6-fold with
`s3dis_6fold`). With a ShapeNet part config (`shapenet_part`, data from `jsnet-prepare-shapenet`)
the run goes to `<workdir>` itself: train split, validation on val. Running the same command
again resumes after the last complete epoch. The run records its data folder as an absolute
path, so evaluate and predict find it from any folder.

No checkpoint, stopping point or threshold is chosen on the test data: validation, `best/` and
early stopping use `data.validation_rooms` (carved from the training areas) or are off, and the
model is the last epoch, as in the paper.
With TF_CONFIG set, training runs on several machines (MultiWorkerMirroredStrategy); otherwise on
all visible GPUs, or the CPU.
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "s3dis_area5", "experiment config to start from: a TOML file or a shipped config's name "
                    "(s3dis_area5, s3dis_6fold, shapenet_part, demo, demo_shapenet, ablations/01_base_network ...)")
flags.DEFINE_multi_string("set", [], "override a config key: section.key=value (repeatable), e.g. train.batch_size=8")
flags.DEFINE_integer("area", None, "test area to hold out (overrides data.areas; default: every area of the config)")
flags.DEFINE_string("data_dir", None, "prepared data folder (overrides data.data_dir)")
flags.DEFINE_string("workdir", None, "where checkpoints, TensorBoard logs and the config of the run go (required)")
flags.DEFINE_integer("epochs", None, "number of epochs (overrides train.epochs)")
flags.DEFINE_integer("batch_size", None, "global batch size over all replicas (overrides train.batch_size)")
flags.DEFINE_bool("verbose", True, "show a progress bar per epoch")
flags.DEFINE_bool(
    "validate", True,
    "after every epoch, semantic accuracy and loss on the validation data (data.validation_rooms, or ShapeNet's "
    "val split), which also choose best/ and early stopping; nothing happens without validation data",
)


def resolve_config():
    from jsnet_tf import config
    from jsnet_tf.cli import config_overrides

    return config.load(FLAGS.config, config_overrides(FLAGS.set, {
        "data.data_dir": FLAGS.data_dir or None,
        "data.areas": [FLAGS.area] if FLAGS.area is not None else None,
        "train.epochs": FLAGS.epochs,
        "train.batch_size": FLAGS.batch_size,
    }))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    logging.set_verbosity(logging.WARNING)  # TensorFlow's checkpoint INFO lines would interleave the progress bar
    from jsnet_tf.config import ConfigError
    from jsnet_tf.errors import UserError

    try:
        cfg = resolve_config()  # a bad config is refused before TensorFlow loads
        from jsnet_tf import training

        if cfg["data"]["dataset"] == "shapenet":
            if FLAGS.area is not None:
                raise ConfigError("--area: ShapeNet part has no areas (train split, val for validation, test for testing)")
            print(f"training on ShapeNet part -> {FLAGS.workdir}", flush=True)
            training.Trainer(cfg, FLAGS.workdir).fit(verbose=int(FLAGS.verbose), validate=FLAGS.validate)
            return
        if not cfg["data"]["areas"]:
            raise ConfigError(f"{FLAGS.config}: data.areas is empty: give the test area(s) to hold out, e.g. --area 5")
        for area in cfg["data"]["areas"]:
            workdir = pathlib.Path(FLAGS.workdir) / f"area{area}"
            print(f"training with area {area} held out -> {workdir}", flush=True)
            training.Trainer(cfg, workdir, area).fit(verbose=int(FLAGS.verbose), validate=FLAGS.validate)
    except UserError as error:
        sys.exit(f"train.py: error: {error}")


def cli():
    """The `jsnet-train` console script (also `python -m jsnet_tf.train`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__)


if __name__ == "__main__":
    cli()
