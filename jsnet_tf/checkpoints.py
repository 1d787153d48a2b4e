"""Trained runs on disk: where a run's weights are and how a model is rebuilt from them.

A run folder (`<workdir>/area<k>` of train.py, or the output of `python -m jsnet_tf.convert`)
holds `config.toml` (the experiment it ran), `architecture.json` and TensorFlow checkpoints:
`checkpoints/` (every epoch, with the optimizer state), `best/` (lowest validation loss, only
when the run had validation data) and `weights/` (model only, from the converter). `run.json`
records the test area a run holds out and how its model was selected. Checkpoints list the model variables by their Keras
path minus the model's own name, because TensorFlow's object graph does not descend into the
Keras lists and dicts that hold JSNet's layers.
"""

import json
import pathlib

import tensorflow as tf

from jsnet_tf import config as config_lib
from jsnet_tf.errors import UserError
from jsnet_tf.files import write_text_atomic
from jsnet_tf.model import JSNet, build_model

# Where each choice of weights looks, in order. "latest" (the default everywhere) is the last
# epoch, as the paper evaluates it; "best" is only ever the validation choice.
WEIGHT_FOLDERS = {"latest": ("checkpoints", "weights"), "best": ("best",)}


class CheckpointError(UserError, ValueError):
    """A run folder without usable weights, or weights that do not fit the model."""


def model_variables(model):
    """The model's variables keyed by their path without the model's name (stable across processes)."""
    return {v.path.split("/", 1)[1]: v for v in model.variables}


def architecture(cfg):
    """The config keys a checkpoint depends on."""
    return {"model": cfg["model"], "num_points": cfg["data"]["num_points"]}


def write_run_files(run_dir, cfg, area=None, extra=None):
    """Records the config and architecture of a run (atomically), and in `run.json` the test
    area it holds out when it has one (the config's data.areas lists every area of an
    experiment) with `extra` facts (sampling, validation rooms, model selection)."""
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "architecture.json", json.dumps(architecture(cfg), indent=2) + "\n")
    write_text_atomic(run_dir / "config.toml", config_lib.to_toml(cfg))
    record = {**({"area": int(area)} if area is not None else {}), **(extra or {})}
    if record:
        write_text_atomic(run_dir / "run.json", json.dumps(record, indent=2) + "\n")


def run_record(run_dir):
    """The run's `run.json` (empty when it has none, e.g. converted weights)."""
    path = pathlib.Path(run_dir) / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_area(run_dir):
    """The test area a run folder holds out, or None when it does not record one."""
    return run_record(run_dir).get("area")


def is_run_folder(path):
    """Whether `path` holds one run (its config.toml): one area of train.py, converted weights."""
    return (pathlib.Path(path) / "config.toml").exists()


def area_runs(workdir):
    """{area: run folder} of the `area<k>/` runs in train.py's `workdir`, by area."""
    workdir = pathlib.Path(workdir)
    runs = {int(p.name[4:]): p for p in workdir.glob("area*") if p.name[4:].isdigit() and is_run_folder(p)}
    return dict(sorted(runs.items()))


def resolve_run(workdir, area=None):
    """(run folder, area) of a program's --workdir [--area]: `<workdir>/area<k>` of train.py or
    the run folder `workdir` itself; the area is None when only the run's config can tell."""
    workdir = pathlib.Path(workdir)
    if not workdir.is_dir():
        raise CheckpointError(f"--workdir {workdir}: no such folder")
    if area is not None:
        candidate = workdir / f"area{area}"
        if is_run_folder(candidate) or not is_run_folder(workdir):
            return candidate, area
        return workdir, area
    if is_run_folder(workdir):
        return workdir, run_area(workdir)
    runs = area_runs(workdir)
    if len(runs) == 1:
        return next(iter(runs.values())), next(iter(runs))
    if not runs:
        raise CheckpointError(f"--workdir {workdir}: not a run folder (no config.toml) and holds no area<k>/ run of train.py")
    raise CheckpointError(f"--workdir {workdir} holds runs of areas {', '.join(map(str, runs))}: choose one with --area")


def find_weights(run_dir, which="latest", allow_test_area_selection=False):
    """The checkpoint prefix to load from a run folder: `which` is "latest" (the last epoch,
    else converted weights), "best" (the lowest validation loss), or a checkpoint prefix /
    folder. A best/ checkpoint the run chose on its test area is refused, however it is named,
    unless `allow_test_area_selection`."""
    run_dir = pathlib.Path(run_dir)
    if which not in WEIGHT_FOLDERS:
        explicit = pathlib.Path(which)
        prefix = tf.train.latest_checkpoint(str(explicit)) if explicit.is_dir() else str(explicit)
        if not (prefix and tf.io.gfile.exists(prefix + ".index")):
            raise CheckpointError(f"no checkpoint at {which}")
    else:
        if not run_dir.is_dir():
            raise CheckpointError(f"run folder {run_dir} does not exist")
        prefix = next(filter(None, (tf.train.latest_checkpoint(str(run_dir / f)) for f in WEIGHT_FOLDERS[which])), None)
        if prefix is None and which == "best":
            raise CheckpointError(
                f"{run_dir} has no best/ checkpoint: only runs with validation data (data.validation_rooms, ShapeNet's "
                "val split) choose one; use --which latest (the last epoch)"
            )
        if prefix is None:
            raise CheckpointError(
                f"{run_dir} holds no weights (looked in {', '.join(f + '/' for f in WEIGHT_FOLDERS[which])}): "
                "train with train.py or convert an original checkpoint with python -m jsnet_tf.convert"
            )
    if selected_on_test_area(run_dir, prefix) and not allow_test_area_selection:
        raise CheckpointError(
            f"{run_dir}: its best/ checkpoint was chosen on the test area (train.select_on_test_area=true), the data "
            "the results are reported on; use --which latest, or --select_on_test_area to accept the leak"
        )
    return prefix


def selected_on_test_area(run_dir, prefix):
    """Whether `prefix` is a best/ checkpoint that the run chose on its test area."""
    run_dir = pathlib.Path(run_dir)
    in_best = pathlib.Path(prefix).resolve().parent == (run_dir / "best").resolve()
    return in_best and bool(run_record(run_dir).get("selected_on_test_area"))


def save_weights(model, directory):
    """Writes the model's variables (no optimizer) as a checkpoint in `directory`; returns its prefix."""
    checkpoint = tf.train.Checkpoint(model=model_variables(model))
    manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=1)
    return manager.save()


def restore_weights(model, prefix):
    """Loads every model variable from a checkpoint prefix (extra entries such as the optimizer
    state are ignored); a variable missing from the file or of another shape is an error."""
    wanted = model_variables(model)
    reader = tf.train.load_checkpoint(prefix)
    stored = reader.get_variable_to_shape_map()
    problems = []
    for name, variable in wanted.items():
        key = "model/" + name.replace(".", "..").replace("/", ".S") + "/.ATTRIBUTES/VARIABLE_VALUE"  # TF's escaping
        if key not in stored:
            problems.append(f"{name} is missing")
        elif list(stored[key]) != list(variable.shape):
            problems.append(f"{name} has shape {stored[key]} in the file, the model needs {list(variable.shape)}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointError(f"checkpoint {prefix} does not fit this model: {shown}")
    tf.train.Checkpoint(model=wanted).restore(prefix).expect_partial()
    return prefix


def load_config(run_dir):
    """The experiment config a run recorded."""
    path = pathlib.Path(run_dir) / "config.toml"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run folder: {path.name} is missing (train.py or jsnet_tf.convert write it)")
    return config_lib.load(path)


def load_run(run_dir, which="latest", overrides=(), allow_test_area_selection=False):
    """(model, config, checkpoint prefix) of a run folder, the model built and its weights loaded."""
    cfg = config_lib.apply_overrides(load_config(run_dir), overrides)
    prefix = find_weights(run_dir, which, allow_test_area_selection)
    model = build_model(cfg)
    model.build((None, cfg["data"]["num_points"], cfg["model"]["input_channels"]))
    restore_weights(model, prefix)
    return model, cfg, prefix


__all__ = [
    "CheckpointError",
    "JSNet",
    "architecture",
    "find_weights",
    "load_config",
    "load_run",
    "model_variables",
    "restore_weights",
    "run_area",
    "run_record",
    "save_weights",
    "selected_on_test_area",
    "write_run_files",
]
