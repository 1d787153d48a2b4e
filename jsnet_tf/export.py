"""Exports a trained run as a SavedModel for TensorFlow Serving.

    python -m jsnet_tf.export --workdir runs/jsnet/area5 --out exported/jsnet [--version 1]

writes `<out>/<version>/`, the layout TF Serving watches (`--model_base_path=<out>`): a SavedModel
whose signature `serving_default` maps `points` float32 (batch, num_points, channels) to
`semantic_logits` (B, N, classes), `semantic_probabilities` (their softmax), `semantic_labels`
int32 (B, N) (their argmax) and `embeddings` (B, N, E), in inference mode. Batch and num_points
are dynamic (num_points at least the first encoder level's npoint); channels are the config's.

The graph is traced with the pure-TF twins of the point ops (`jsnet_tf.ops.reference`), so it
holds only TensorFlow's builtin ops: stock TF Serving, or any TensorFlow process, loads it without
our op library. The export checks that and refuses a graph holding any other op.

`assets.extra/` (which TF Serving ignores) records what a client needs to know: `jsnet_config.toml`
(the run's config, readable with `jsnet_tf.config.load`) and `jsnet_serving.json` (signature,
input layout and channels, class names, block size, the checkpoint exported).
"""

import json
import os
import pathlib
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: its INFO lines are no use here

import tensorflow as tf  # noqa: E402

from jsnet_tf import checkpoints, ops, tasks  # noqa: E402
from jsnet_tf import config as config_lib  # noqa: E402
from jsnet_tf.errors import UserError  # noqa: E402

SIGNATURE = "serving_default"
INPUT_NAME = "points"
OUTPUT_NAMES = ("semantic_logits", "semantic_probabilities", "semantic_labels", "embeddings")
EXTRA_DIR = "assets.extra"
CONFIG_FILE = "jsnet_config.toml"
METADATA_FILE = "jsnet_serving.json"
CUSTOM_OP_PREFIX = "Jsnet"  # every op of the compiled library (tf_ops/src/ops.cc)


class ExportError(UserError, ValueError):
    """An export that cannot be written where asked, or a graph TF Serving could not load."""


def serving_function(model):
    """The signature's function: points -> the four outputs, dynamic batch and num_points."""
    spec = tf.TensorSpec([None, None, model.input_channels], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(points):
        outputs = model(points, training=False)
        logits = outputs["semantic_logits"]
        return {
            "semantic_logits": logits,
            "semantic_probabilities": tf.nn.softmax(logits, axis=-1),
            "semantic_labels": tf.argmax(logits, axis=-1, output_type=tf.int32),
            "embeddings": outputs["embeddings"],
        }

    return serve


def trace_serving_function(model):
    """The concrete serving function, traced with the pure-TF twins of the point ops (the layers
    pick the implementation when they are traced, whatever is in force around the export)."""
    with ops.use_implementation("reference"):
        return serving_function(model).get_concrete_function()


def class_names(cfg):
    """Names of the semantic classes: the config's dataset's (its task's)."""
    return list(tasks.for_config(cfg).class_names)


def channel_names(cfg):
    """What each input channel holds (the layout of the prepared blocks the model was trained on)."""
    return list(tasks.for_config(cfg).channel_names)


def serving_metadata(cfg, checkpoint=None):
    """What a client needs to build requests and read the answers (jsnet_serving.json)."""
    channels, classes = cfg["model"]["input_channels"], class_names(cfg)
    return {
        "signature": SIGNATURE,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": [None, None, channels],
            "channels": channel_names(cfg),
            "num_points": cfg["data"]["num_points"],  # points per block in training
            "min_points": cfg["model"]["npoints"][0],  # fewer cannot be sampled by the first encoder level
            "block_size": cfg["data"]["block_size"],
        },
        "outputs": {
            "semantic_logits": {"dtype": "float32", "shape": [None, None, len(classes)]},
            "semantic_probabilities": {"dtype": "float32", "shape": [None, None, len(classes)]},
            "semantic_labels": {"dtype": "int32", "shape": [None, None]},
            "embeddings": {"dtype": "float32", "shape": [None, None, cfg["model"]["embedding_dim"]]},
        },
        "dataset": tasks.for_config(cfg).name,
        "class_names": classes,
        "checkpoint": None if checkpoint is None else str(checkpoint),
    }


def graph_op_types(export_dir):
    """Every op type of a SavedModel's graphs, function library included (nested functions too)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(pathlib.Path(export_dir, "saved_model.pb").read_bytes())
    types = set()
    for meta_graph in saved.meta_graphs:
        types.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            types.update(node.op for node in function.node_def)
    return types


def foreign_ops(op_types):
    """The op types a stock TensorFlow cannot run: our library's, or any not registered here."""
    from tensorflow.python.framework import op_def_registry

    return sorted(t for t in op_types if t.startswith(CUSTOM_OP_PREFIX) or op_def_registry.get(t) is None)


def _target_folder(out_dir, version, overwrite):
    out_dir = pathlib.Path(out_dir)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"version must be a positive integer (TF Serving's version folder), got {version!r}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} is a file, not a folder")
    target = out_dir / str(version)
    if target.exists() and not overwrite and (not target.is_dir() or any(target.iterdir())):
        raise ExportError(f"{target} already exists; pass --overwrite to replace it (or choose another --version)")
    return target


def _move_into_place(staging, target):
    """Renames the finished export to its version folder; an old one is renamed away first."""
    old = None
    if target.exists() or target.is_symlink():
        old = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old)


def export_model(model, cfg, out_dir, version=1, overwrite=False, checkpoint=None):
    """Writes `model` (built, weights loaded) as SavedModel `<out_dir>/<version>/`; returns that path.

    The export is written to a hidden folder beside the version folder (TF Serving only looks at
    numeric names) and renamed at the end, so a watcher never sees half an export.
    """
    target = _target_folder(out_dir, version, overwrite)
    concrete = trace_serving_function(model)
    module = tf.Module()
    module.model_variables = [v.value for v in model.variables]  # the tf.Variables the graph reads
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as error:
        raise ExportError(f"cannot write to {target.parent}: {error.strerror or error}") from None
    try:
        tf.saved_model.save(module, str(staging), signatures={SIGNATURE: concrete})
        foreign = foreign_ops(graph_op_types(staging))
        if foreign:
            raise ExportError(f"the exported graph holds ops stock TensorFlow cannot run: {', '.join(foreign)}")
        extra = staging / EXTRA_DIR
        extra.mkdir()
        (extra / CONFIG_FILE).write_text(config_lib.to_toml(cfg))
        (extra / METADATA_FILE).write_text(json.dumps(serving_metadata(cfg, checkpoint), indent=2) + "\n")
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def export_run(workdir, out_dir, which="latest", version=1, overwrite=False):
    """Exports a run folder's weights (`which`: "latest", "best" or a checkpoint prefix)."""
    _target_folder(out_dir, version, overwrite)  # fail before loading anything
    run_dir, _ = checkpoints.resolve_run(workdir)
    model, cfg, prefix = checkpoints.load_run(run_dir, which)
    return export_model(model, cfg, out_dir, version, overwrite, checkpoint=prefix)


def define_flags():
    """The command line's flags; defined only when run as a program, so importing this module
    adds no flags that could clash."""
    from absl import flags

    from jsnet_tf import cli

    cli.define_shared("workdir", "which")
    flags.DEFINE_string("out", None, "Model base folder for TF Serving; the SavedModel goes to <out>/<version>/.")
    flags.DEFINE_integer("version", 1, "Version folder to write (TF Serving serves the highest).", lower_bound=1)
    flags.DEFINE_bool("overwrite", False, "Replace an existing <out>/<version>/ (refused by default).")


def main(argv):
    from absl import app, flags, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    if not FLAGS.workdir or not FLAGS.out:
        raise app.UsageError("--workdir and --out are required")
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines about writing the SavedModel
    target = export_run(FLAGS.workdir, FLAGS.out, FLAGS.which, FLAGS.version, FLAGS.overwrite)
    print(f"exported {FLAGS.workdir} -> {target} (signature {SIGNATURE}: {INPUT_NAME} -> {', '.join(OUTPUT_NAMES)})")


def cli():
    """The `jsnet-export` console script (also `python -m jsnet_tf.export`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__, define_flags, name="jsnet_tf.export")


if __name__ == "__main__":
    cli()
