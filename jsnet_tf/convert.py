"""Converts a checkpoint of the original TF1 JSNet into a run folder of this port.

    python -m jsnet_tf.convert --checkpoint log/epoch_99.ckpt --workdir runs/original/area5 \
        [--mean_ins_size log/mean_ins_size.txt]

Reads the TF1 checkpoint (`tf.train.load_checkpoint`), maps every convolution kernel and bias,
batch-norm gamma and beta and the moving mean and variance (stored by the original as exponential
moving averages of its `moments` tensors) onto the Keras model the config describes, and writes
a run folder (config.toml, architecture.json, weights/) that evaluate.py loads and train.py
starts from. Optimizer slots (Adam, Momentum), `beta1_power`, `beta2_power` and the step `batch`
are skipped; a variable that is missing, left over or of another shape is an error that names
it, and nothing is written then.

`--mean_ins_size` takes the original's `mean_ins_size.txt` (its `estimate_mean_ins_size.py`
writes the mean point count of an instance of each class in the training blocks, one class a
line): checked (one finite, non-negative number per class of the config's dataset, which must be a
dataset of rooms) and stored in the run folder as `mean_ins_size.txt`, where `run_mean_ins_size`
finds it for the size filter of evaluate and predict, so a downloaded model needs none of our
prepared lists.

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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from jsnet_tf import checkpoints, config, tasks  # noqa: E402
from jsnet_tf.data import s3dis  # noqa: E402  (the mean instance size file's writer)
from jsnet_tf.errors import UserError  # noqa: E402
from jsnet_tf.model import build_model  # noqa: E402
from jsnet_tf.tasks.rooms import MEAN_INS_SIZE_FILE  # noqa: E402  (in a run folder, as the original kept it)

TRAINING_STATE_NAMES = ("beta1_power", "beta2_power", "batch")
OPTIMIZER_SLOTS = ("Adam", "Adam_1", "Momentum")
MOVING_STATISTICS = {"moving_mean": "Squeeze", "moving_variance": "Squeeze_1"}
SUB_SCOPES = re.compile(r"(weight_net|density_net)_(wconv|nonlinear)(\d+)")
SHOWN_PROBLEMS = 8


class ConversionError(UserError, ValueError):
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


def run_mean_ins_size(run_dir):
    """The mean instance sizes stored in a run folder (by `convert --mean_ins_size`), or None
    when it holds none; DataError naming the file when the stored one is bad."""
    path = pathlib.Path(run_dir) / MEAN_INS_SIZE_FILE
    if not path.exists():
        return None
    return tasks.for_config(checkpoints.load_config(run_dir)).load_mean_instance_sizes(path)


def _check_mean_ins_size(path, cfg):
    """The checked sizes of `--mean_ins_size`, for a model of a dataset of rooms (the size filter
    is that of the rooms' test protocol)."""
    task = tasks.for_config(cfg)
    if not getattr(task, "takes_mean_instance_sizes", False):
        takers = [tasks.get(name).title for name in tasks.names() if getattr(tasks.get(name), "takes_mean_instance_sizes", False)]
        raise ConversionError(
            f"--mean_ins_size {path}: mean instance sizes are for {' and '.join(takers)} models; the config describes "
            f"a {task.title} model"
        )
    return task.load_mean_instance_sizes(path)


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


def write_run(workdir, model, cfg, mean_ins_size=None):
    """Writes the run folder: config.toml, architecture.json, weights/ (replacing earlier
    weights only once the new ones are complete) and the mean instance sizes when given; an
    earlier conversion's sizes are removed otherwise, as they need not fit the new weights."""
    staging = workdir / ".weights.tmp"
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        checkpoints.save_weights(model, staging)
        shutil.rmtree(workdir / "weights", ignore_errors=True)
        os.replace(staging, workdir / "weights")
        checkpoints.write_run_files(workdir, cfg)
        if mean_ins_size is None:
            (workdir / MEAN_INS_SIZE_FILE).unlink(missing_ok=True)
        else:
            s3dis.write_mean_ins_size(workdir / MEAN_INS_SIZE_FILE, mean_ins_size)
    except (OSError, tf.errors.OpError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ConversionError(f"cannot write --workdir {workdir}: {reason}") from None


def run(checkpoint, workdir, cfg, overwrite=False, mean_ins_size=None):
    """Converts the original checkpoint into a run folder at `workdir` for the model of `cfg`,
    with the original's mean instance sizes file `mean_ins_size` when given; returns the
    checkpoint prefix read. Everything is checked before anything is written."""
    workdir = pathlib.Path(workdir)
    _check_workdir(workdir, overwrite)
    sizes = None if mean_ins_size is None else _check_mean_ins_size(mean_ins_size, cfg)
    model = build_model(cfg)
    model.build((None, cfg["data"]["num_points"], cfg["model"]["input_channels"]))
    prefix = convert(checkpoint, model)
    write_run(workdir, model, cfg, sizes)
    return prefix


FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags; defined only when run as a program, so importing this module
    adds no flags that could clash with a script's."""
    flags.DEFINE_string("checkpoint", None, "original TF1 checkpoint (required): a prefix such as log/epoch_99.ckpt, "
                        "or a folder, meaning its latest checkpoint")
    flags.DEFINE_string("workdir", None, "run folder to write (required): config.toml, architecture.json and weights/; "
                        "for `train.py --workdir W --area K` to start from the weights, convert into W/areaK")
    flags.DEFINE_string("config", "s3dis_area5", "experiment config describing the original model: a TOML file or a shipped config's name")
    from jsnet_tf import cli

    cli.define_shared("set")
    flags.DEFINE_bool("overwrite", False, "replace the weights of an earlier conversion in --workdir")
    flags.DEFINE_string("mean_ins_size", None, "the original's mean_ins_size.txt (its estimate_mean_ins_size.py "
                        "writes it into the log folder: one number per class, one class a line): stored in --workdir as "
                        f"{MEAN_INS_SIZE_FILE}, the sizes evaluate.py and predict filter instances with")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("checkpoint", "workdir"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required")
    logging.set_verbosity(logging.WARNING)  # no INFO lines from TensorFlow's checkpoint writer
    cfg = config.load(FLAGS.config, FLAGS.set)
    tasks.for_config(cfg).check_config(cfg, FLAGS.config)
    prefix = run(FLAGS.checkpoint, FLAGS.workdir, cfg, FLAGS.overwrite, FLAGS.mean_ins_size)
    workdir = pathlib.Path(FLAGS.workdir)
    if FLAGS.mean_ins_size:
        sizes = f"mean instance sizes {FLAGS.mean_ins_size} -> {workdir / MEAN_INS_SIZE_FILE}"
    else:
        sizes = ("no mean instance sizes (give --mean_ins_size, the original's mean_ins_size.txt, for the size "
                 "filter of evaluate.py and predict)")
    print(f"converted {prefix} -> {workdir / 'weights'}; {sizes}")


def cli():
    """The `jsnet-convert` console script (also `python -m jsnet_tf.convert`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__, define_flags, name="convert")


if __name__ == "__main__":
    cli()
