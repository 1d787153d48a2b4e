"""The interface every dataset's task implements (in the manner of TF Model Garden's `Task` and
Open3D-ML's dataset classes): the programs call these methods and never ask which dataset it is.

Nothing here imports TensorFlow at module level: configs are checked before it loads.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from jsnet_tf.errors import UserError


class TaskError(UserError, ValueError):
    """A request the dataset's task cannot serve (a flag or setting of another dataset...)."""


@dataclasses.dataclass
class TrainingData:
    """What training reads for one run, planned (and checked) before anything is written.

    `dataset(epoch, batch_size)` gives one epoch of training batches (deterministic for the seed and
    epoch); `validation_dataset(batch_size)` the validation batches, or is None without validation
    data. `record` is what run.json keeps about the data (dataset, sampling, blocks per epoch,
    validation items, how the model is selected). `exact_steps`: whether epoch_blocks // batch is
    the step count of every epoch (random block corners drop some).
    """

    record: dict
    epoch_blocks: int
    dataset: Callable
    validation_dataset: Callable | None
    describe: Callable  # batch size -> one line printed at the start of training
    exact_steps: bool = True


@dataclasses.dataclass
class EvaluationContext:
    """How an evaluation runs, from the program's flags (the task supplies the rest)."""

    out_dir: pathlib.Path | None = None  # default: <run folder>/eval
    which: str = "latest"
    weights: str = ""  # the checkpoint prefix evaluated
    selection: dict = dataclasses.field(default_factory=dict)  # how the weights were chosen
    shard: object = None  # jsnet_tf.sharding.Shard (None: the whole)
    barrier: Callable | None = None  # tf.distribute tasks: waits for the others
    pictures: bool = True
    overwrite: bool = False
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """How predict reads its inputs and writes their outputs (the command line's flags)."""

    overwrite: bool = False  # replace existing outputs
    nan_policy: str = "drop"  # points with NaN / infinite values: "drop" or "error"
    color_max: float | None = None  # the colour scale of the inputs (None: detected)
    color: bool = True  # use the inputs' colours (False: mid-grey everywhere)
    txt: bool = True  # write <stem>_labels.txt
    pictures: bool = True  # write <stem>.png
    progress: bool = True  # a progress bar per input
    # Task-specific choices, by flag name (e.g. {"category": "Mug"}, {"min_instance_points": 100}).
    extra: dict = dataclasses.field(default_factory=dict)


class Task:
    """A dataset: its data, its labels and how its items are trained on, evaluated and predicted.

    Class attributes describe the dataset; subclasses implement the methods. `fold` is what one
    trained model holds out (S3DIS: a test area; None where the dataset has fixed splits).
    """

    name: str = ""  # data.dataset
    title: str = ""  # for messages and tables
    item: str = "item"  # what one evaluated unit is called: room, shape, scene
    class_names: tuple[str, ...] = ()
    channel_names: tuple[str, ...] = ()  # what each input channel holds (serving metadata)
    # The benchmark label id of each class (the ScanNet benchmark's files, its evaluation scripts).
    label_ids: tuple[int, ...] = ()
    # Classes with instances (instance metrics and AP are over these).
    instance_classes: tuple[int, ...] = ()
    # The ground-truth label of ignored points (ScanNet's unannotated ones: -1), or None: losses and
    # metrics leave them out.
    ignore_label: int | None = None
    # The [data] keys this dataset reads; any other keeps its default (refused otherwise).
    data_keys: frozenset = frozenset()
    # predict's dataset-specific flags this task takes (the others are refused when given).
    predict_flags: tuple[str, ...] = ()
    prepare_command: str = ""  # the program that prepares its data
    start_config: str = ""  # the shipped config to start from
    has_folds: bool = False  # runs hold out a fold (train.py's <workdir>/area<k>)
    shardable: bool = False  # evaluation can share its items between processes

    # -------------------------------------------------------------------------- classes

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_channels(self) -> int:
        return len(self.channel_names)

    def palette(self) -> np.ndarray:
        """(C, 3) uint8 colours of the classes (pictures, coloured PLYs, legends)."""
        raise NotImplementedError

    def semantic_colors(self, labels) -> np.ndarray:
        """(N, 3) uint8 colours of per-point classes (-1 and unknown: grey)."""
        from jsnet_tf import io

        return io.semantic_colors(labels, self.palette())

    # -------------------------------------------------------------------------- config

    def check_config(self, cfg: dict, source: str = "config") -> None:
        """Raises ConfigError (one line naming `source` and the keys) where the config does not fit
        the dataset: the model's channels and classes, [data] keys of other datasets."""
        from jsnet_tf import config as config_lib

        model = cfg["model"]
        wanted = (self.input_channels, self.num_classes)
        if (model["input_channels"], model["num_classes"]) != wanted:
            hint = f": start from the {self.start_config} config" if self.start_config else ""
            raise config_lib.ConfigError(
                f"{source}: data.dataset={self.name!r} feeds {wanted[0]} channels and {wanted[1]} classes, the model has "
                f"model.input_channels={model['input_channels']} and model.num_classes={model['num_classes']}{hint}"
            )
        if not self.has_folds and cfg["data"]["areas"]:
            raise config_lib.ConfigError(
                f"{source}: data.areas={cfg['data']['areas']}: {self.title} has no areas ({self.fold_description(None)}); "
                "set data.areas = []"
            )
        foreign = [f"data.{key}" for key, value in cfg["data"].items()
                   if key not in self.data_keys and key != "dataset" and value != config_lib.DEFAULTS["data"][key]]
        if foreign:
            raise config_lib.ConfigError(
                f"{source}: {', '.join(foreign)}: not settings of {self.title} (it reads "
                f"{', '.join(sorted('data.' + k for k in self.data_keys))})"
            )

    # -------------------------------------------------------------------------- folds and runs

    def training_folds(self, cfg: dict, requested=None) -> list:
        """The folds train.py trains (one model each): `requested` (the --area flag) or the config's."""
        if requested is not None:
            raise TaskError(f"--area: {self.title} has no areas ({self.fold_description(None)})")
        return [None]

    def run_dir(self, workdir, fold) -> pathlib.Path:
        """Where train.py puts the run of `fold` under its --workdir."""
        return pathlib.Path(workdir)

    def fold_description(self, fold) -> str:
        """What a run of `fold` trains and tests on, for messages."""
        raise NotImplementedError

    def evaluation_runs(self, workdir, requested: Sequence[int] | None) -> list[tuple[object, pathlib.Path]]:
        """[(fold, run folder)] that evaluate.py evaluates for --workdir (and --area)."""
        if requested:
            raise TaskError(f"--area: {self.title} has no areas ({self.fold_description(None)})")
        return [(None, pathlib.Path(workdir))]

    # -------------------------------------------------------------------------- training

    def training_data(self, cfg: dict, fold) -> TrainingData:
        raise NotImplementedError

    # -------------------------------------------------------------------------- evaluation

    def new_evaluator(self):
        """An empty jsnet_tf.metrics.Evaluator of this dataset's classes."""
        from jsnet_tf import metrics

        return metrics.Evaluator(self.num_classes, self.class_names, instance_classes=self.instance_classes)

    def evaluate(self, model, cfg: dict, run_dir, fold, context: EvaluationContext):
        """Evaluates a run on its test data and writes the outputs; returns the Evaluator of the
        results (None when this process does not merge: another share of a sharded run does)."""
        raise NotImplementedError

    def merged_results_name(self, folds) -> str:
        """The file stem of the results of several folds evaluated together (6-fold)."""
        raise TaskError(f"{self.title} has no folds to evaluate together")

    # -------------------------------------------------------------------------- predict

    def predictor(self, model, cfg: dict, run_dir, fold, options: PredictOptions) -> Predictor:
        """The `Predictor` of a loaded run."""
        raise NotImplementedError

    # -------------------------------------------------------------------------- experiments

    def missing_data(self, data_dir, folds) -> list[pathlib.Path]:
        """The prepared files that training and evaluating `folds` need but `data_dir` lacks."""
        raise NotImplementedError


def check_model_selection(cfg: dict, has_split: bool) -> None:
    """train.select_on_test_area=true needs a dataset without a validation split: both at once are
    refused (TaskError)."""
    if cfg["train"]["select_on_test_area"] and has_split:
        raise TaskError(
            "train.select_on_test_area=true and a validation split (data.validation_rooms, or ShapeNet's val split) "
            "exclude each other: choose one"
        )


class Predictor:
    """predict's callable for one run: `(path, out_dir) -> one-line summary`, labelling one input
    file and writing its outputs; `describe()`: its settings, printed before the first input."""

    def __init__(self, predict: Callable, description: str):
        self._predict, self._description = predict, description

    def __call__(self, path, out_dir) -> str:
        return self._predict(pathlib.Path(path), pathlib.Path(out_dir))

    def describe(self) -> str:
        return self._description


def refuse_foreign_predict_flags(task: Task, given: Sequence[str], run_dir) -> None:
    """One line naming the predict flags given that are for other datasets, and whose they are."""
    from jsnet_tf import tasks

    owners: dict[str, list[str]] = {}
    for other in tasks.names():
        for name in tasks.get(other).predict_flags:
            owners.setdefault(name, []).append(tasks.get(other).title)
    used = [name for name in given if name in owners and name not in task.predict_flags]
    if used:
        groups: dict[tuple, list[str]] = {}
        for name in used:
            groups.setdefault(tuple(owners[name]), []).append(f"--{name}")
        whose = "; ".join(f"{', '.join(flags)} {'is' if len(flags) == 1 else 'are'} for {' and '.join(titles)} runs"
                          for titles, flags in groups.items())
        raise TaskError(f"{whose}; {run_dir} is a {task.title} run")
