"""One task per dataset, found by name: every decision that depends on the dataset lives in its task.

A task (`jsnet_tf.tasks.base.Task`) owns its dataset's channels, class names, colours and
benchmark label ids, its `[data]` keys and their checks, its folds (S3DIS's test areas) and
run-folder layout, its training / validation / test inputs, how an item (room, shape, scene) is
segmented, evaluated, written and pictured, what predict reads and writes, and what an export
records. train, evaluate, predict, export, convert and experiments ask the task of a config
(`for_config`) and never name a dataset.

The registry holds import strings, so that a config can be checked (`get(name)` imports only the
task's module, which loads no TensorFlow) before TensorFlow loads. Adding a dataset is a new task
module, its entry here, configs and tests.
"""

import importlib

from jsnet_tf.tasks.base import EvaluationContext, PredictOptions, Task, TaskError, TrainingData  # noqa: F401

REGISTRY = {
    "s3dis": "jsnet_tf.tasks.s3dis:S3DISTask",
    "shapenet": "jsnet_tf.tasks.shapenet:ShapeNetTask",
    "scannet": "jsnet_tf.tasks.scannet:ScanNetTask",
}

_instances = {}


def names():
    """The registered datasets (the values data.dataset takes)."""
    return tuple(REGISTRY)


def get(name):
    """The task of dataset `name` (one instance per process)."""
    if name not in REGISTRY:
        from jsnet_tf.config import ConfigError

        raise ConfigError(f"data.dataset: unknown dataset {name!r} (known: {', '.join(REGISTRY)})")
    if name not in _instances:
        module, attribute = REGISTRY[name].split(":")
        _instances[name] = getattr(importlib.import_module(module), attribute)()
    return _instances[name]


def for_config(cfg):
    """The task of a config (its data.dataset)."""
    return get(cfg["data"]["dataset"])
