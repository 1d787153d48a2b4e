"""Converts a checkpoint of the original TF1 JSNet into a run folder of this port.

    python -m jsnet_tf.convert --checkpoint log/epoch_99.ckpt --workdir runs/original/area5

Reads the TF1 checkpoint (`tf.train.load_checkpoint`), maps every convolution kernel and bias,
batch-norm gamma and beta and the moving mean and variance (stored by the original as exponential
moving averages of its `moments` tensors) onto the Keras model the config describes, and writes
a run folder (config.toml, architecture.json, weights/) that evaluate.py loads and train.py
starts from. Optimizer slots (Adam, Momentum), `beta1_power`, `beta2_power` and the step `batch`
are skipped; a variable that is missing, left over or of another shape is an error that names
it, and nothing is written then.

Names: our variable paths follow the original's scopes, except where a Keras layer stands for a
TF1 sub-scope (`weight_net_wconv0` for `weight_net/wconv0`), for the PCFF conv (`sem_pcff/fc1`
for `sem_fc1`) and for the JISS prefix (`jiss/sem_fc5` for `sem_fc5`); the moving statistics of
batch norm `S/bn` are `S/bn/S/bn/moments/Squeeze/ExponentialMovingAverage` (mean) and
`.../Squeeze_1/...` (variance) in the original.
"""

import os
import pathlib
import re
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from jsnet_tf import checkpoints, config  # noqa: E402
from jsnet_tf.model import build_model  # noqa: E402

TRAINING_STATE_NAMES = ("beta1_power", "beta2_power", "batch")
OPTIMIZER_SLOTS = ("Adam", "Adam_1", "Momentum")
MOVING_STATISTICS = {"moving_mean": "Squeeze", "moving_variance": "Squeeze_1"}
SUB_SCOPES = re.compile(r"(weight_net|density_net)_(wconv|nonlinear)(\d+)")
SHOWN_PROBLEMS = 8


class ConversionError(ValueError):
    """An original checkpoint that cannot be found or does not fit the model."""


def original_name(path):
    """The TF1 checkpoint name of a model variable, given its path without the model's name
    (`checkpoints.model_variables`): e.g. `jiss/sem_fc5/weights` -> `sem_fc5/weights`."""
    name = re.sub(r"^jiss/", "", path)
    name = re.sub(r"^(sem|ins)_pcff/fc1/", r"\1_fc1/", name)
    name = SUB_SCOPES.sub(r"\1/\2\3", name)
    scope, _, leaf = name.rpartition("/")
    if leaf in MOVING_STATISTICS:
        return f"{scope}/{scope}/moments/{MOVING_STATISTICS[leaf]}/ExponentialMovingAverage"
    return name


def is_training_state(name):
    """Whether a checkpoint entry is optimizer or loop state rather than a network weight."""
    return name in TRAINING_STATE_NAMES or name.rpartition("/")[2] in OPTIMIZER_SLOTS


def resolve_checkpoint(path):
    """The checkpoint prefix of `path`: a prefix (`.../epoch_99.ckpt`, also given with its
    `.index` or `.data-*` suffix) or a folder, which gives its latest checkpoint (by its
    `checkpoint` file, whose paths may predate a move, else its only one)."""
    path = pathlib.Path(path)
    if path.is_dir():
        state = tf.train.get_checkpoint_state(str(path))
        if state is not None:
            named = path / pathlib.Path(state.model_checkpoint_path).name
            if pathlib.Path(f"{named}.index").exists():
                return str(named)
        found = sorted(p.with_suffix("") for p in path.glob("*.index"))
        if len(found) == 1:
            return str(found[0])
        if not found:
            raise ConversionError(f"--checkpoint {path}: the folder holds no TF1 checkpoint (no *.index file)")
        names = ", ".join(p.name for p in found)
        raise ConversionError(f"--checkpoint {path}: the folder holds several checkpoints ({names}); name one")
    prefix = re.sub(r"\.(index|data-\d+-of-\d+|meta)$", "", str(path))
    if not pathlib.Path(f"{prefix}.index").exists():
        raise ConversionError(f"--checkpoint {path}: no such checkpoint ({prefix}.index does not exist)")
    return prefix


def _summary(problems):
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    return shown + (f"; and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else "")


def read_original(prefix, model):
    """{model variable path: value} from the TF1 checkpoint at `prefix` for a built model; every
    model variable must be there with its shape, and every other entry must be training state."""
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise ConversionError(f"cannot read checkpoint {prefix}: {str(error).splitlines()[0]}") from None
    stored = reader.get_variable_to_shape_map()
    if "_CHECKPOINTABLE_OBJECT_GRAPH" in stored:
        raise ConversionError(
            f"{prefix} is a TF2 object-based checkpoint (e.g. written by train.py), not one of the original "
            "TF1 code: load it with evaluate.py / train.py directly"
        )
    wanted = {original_name(path): (path, variable) for path, variable in checkpoints.model_variables(model).items()}
    missing = [f"{name} is missing" for name in wanted if name not in stored]
    unused = sorted(name for name in stored if name not in wanted and not is_training_state(name))
    extra = [f"{name} is not part of the model" for name in unused]
    shapes = [
        f"{name} has shape {list(stored[name])} in the checkpoint, the model needs {list(variable.shape)}"
        for name, (_, variable) in wanted.items()
        if name in stored and list(stored[name]) != list(variable.shape)
    ]
    problems = missing + shapes + extra
    if problems:
        raise ConversionError(
            f"checkpoint {prefix} does not fit the model: {_summary(problems)} "
            "(the config, --config and --set, must describe the network that wrote it)"
        )
    return {path: reader.get_tensor(name) for name, (path, _) in wanted.items()}


def convert(checkpoint, model):
    """Loads the original checkpoint (prefix or folder) into a built model; returns the prefix."""
    prefix = resolve_checkpoint(checkpoint)
    values = read_original(prefix, model)
    variables = checkpoints.model_variables(model)
    for path, value in values.items():
        variables[path].assign(value.astype(variables[path].dtype))
    return prefix


def _check_workdir(workdir, overwrite):
    """Refuses a workdir whose weights would be lost, or would shadow the converted ones."""
    trained = [name + "/" for name in ("best", "checkpoints") if (workdir / name).exists()]
    if trained:
        raise ConversionError(
            f"--workdir {workdir} holds a training run ({', '.join(trained)}), whose weights evaluate.py and "
            "train.py would prefer over converted ones: use another --workdir"
        )
    if (workdir / "weights").exists() and not overwrite:
        raise ConversionError(f"--workdir {workdir} already holds converted weights: pass --overwrite to replace them")


def write_run(workdir, model, cfg):
    """Writes the run folder: config.toml, architecture.json and weights/ (replacing earlier
    weights only once the new ones are complete)."""
    staging = workdir / ".weights.tmp"
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        checkpoints.save_weights(model, staging)
        shutil.rmtree(workdir / "weights", ignore_errors=True)
        os.replace(staging, workdir / "weights")
        checkpoints.write_run_files(workdir, cfg)
    except (OSError, tf.errors.OpError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ConversionError(f"cannot write --workdir {workdir}: {reason}") from None


def run(checkpoint, workdir, cfg, overwrite=False):
    """Converts the original checkpoint into a run folder at `workdir` for the model of `cfg`;
    returns the checkpoint prefix read. Everything is checked before anything is written."""
    workdir = pathlib.Path(workdir)
    _check_workdir(workdir, overwrite)
    model = build_model(cfg)
    model.build((None, cfg["data"]["num_points"], cfg["model"]["input_channels"]))
    prefix = convert(checkpoint, model)
    write_run(workdir, model, cfg)
    return prefix


FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags; defined only when run as a program, so importing this module
    adds no flags that could clash with a script's."""
    flags.DEFINE_string("checkpoint", None, "original TF1 checkpoint (required): a prefix such as log/epoch_99.ckpt, "
                        "or a folder, meaning its latest checkpoint")
    flags.DEFINE_string("workdir", None, "run folder to write (required): config.toml, architecture.json and weights/; "
                        "for `train.py --workdir W --area K` to start from the weights, convert into W/areaK")
    flags.DEFINE_string("config", "configs/s3dis_area5.toml", "experiment config (TOML) describing the original model")
    flags.DEFINE_multi_string("set", [], "override a config key: section.key=value (repeatable), "
                              "e.g. model.num_classes=50")
    flags.DEFINE_bool("overwrite", False, "replace the weights of an earlier conversion in --workdir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("checkpoint", "workdir"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required")
    logging.set_verbosity(logging.WARNING)  # no INFO lines from TensorFlow's checkpoint writer
    try:
        cfg = config.load(FLAGS.config, FLAGS.set)
        prefix = run(FLAGS.checkpoint, FLAGS.workdir, cfg, FLAGS.overwrite)
    except (config.ConfigError, ConversionError) as error:
        sys.exit(f"convert: error: {error}")
    print(f"converted {prefix} -> {pathlib.Path(FLAGS.workdir) / 'weights'}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
