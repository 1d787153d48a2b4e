"""User errors: every error class of the package is a UserError (and still its built-in type), and
the programs print a UserError raised anywhere below them as one line, without a traceback."""

import ast
import importlib
import pathlib
import re
import subprocess
import sys

import pytest

from jsnet_tf.errors import UserError

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jsnet_tf"
TENSORFLOW_LOG_LINE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} \d\d:\d\d:\d\d)")

# (module, class, the built-in type it was before UserError existed and must stay)
USER_ERRORS = [
    ("jsnet_tf.errors", "DataError", ValueError),
    ("jsnet_tf.config", "ConfigError", ValueError),
    ("jsnet_tf.checkpoints", "CheckpointError", ValueError),
    ("jsnet_tf.metrics", "MetricsError", ValueError),
    ("jsnet_tf.evaluation", "EvaluationError", ValueError),
    ("jsnet_tf.clustering.postprocess", "ClusteringError", ValueError),
    ("jsnet_tf.clustering.library", "ExtensionError", ImportError),
    ("jsnet_tf.ops.library", "OpLibraryError", RuntimeError),
    ("jsnet_tf.viz", "VizError", ValueError),
    ("jsnet_tf.io", "PointCloudError", ValueError),
    ("jsnet_tf.export", "ExportError", ValueError),
    ("jsnet_tf.convert", "ConversionError", ValueError),
    ("jsnet_tf.prediction", "PredictError", ValueError),
    ("jsnet_tf.tasks.base", "TaskError", ValueError),
    ("jsnet_tf.experiments", "ExperimentError", ValueError),
    ("jsnet_tf.training", "TrainingError", RuntimeError),
    ("jsnet_tf.sharding", "ShardError", ValueError),
    ("jsnet_tf.layers.arithmetic", "UnknownArithmeticError", ValueError),
    ("jsnet_tf.ops", "UnknownImplementationError", ValueError),
]


@pytest.mark.parametrize("module, name, builtin", USER_ERRORS, ids=[name for _, name, _ in USER_ERRORS])
def test_each_listed_error_is_a_user_error_and_keeps_its_builtin_type(module, name, builtin):
    error = getattr(importlib.import_module(module), name)
    assert issubclass(error, UserError) and issubclass(error, builtin)
    with pytest.raises(builtin):  # `except ValueError` (etc.) written before UserError still catches it
        raise error("bad input")


def _error_classes_in_the_package():
    """(module, class) of every class named *Error defined in a module of jsnet_tf, found by
    reading the sources (not by importing them)."""
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                found.add((module.removesuffix(".__init__"), node.name))
    return found


def test_every_error_class_in_the_package_is_a_listed_user_error():
    found = _error_classes_in_the_package() - {("jsnet_tf.errors", "UserError")}
    assert len(found) >= len(USER_ERRORS)  # the scan sees the package's sources
    for module, name in sorted(found):
        error = getattr(importlib.import_module(module), name)
        assert issubclass(error, UserError), f"{module}.{name} is not a jsnet_tf.errors.UserError"
    unlisted = found - {(module, name) for module, name, _ in USER_ERRORS}
    assert not unlisted, f"add {sorted(unlisted)} to USER_ERRORS (with the built-in type each one keeps)"


# A program run with one library function replaced by one that raises a bare UserError, a type
# none of the programs names: it must still come out as the program's one-line error.
_RUN_WITH_A_REFUSING_LIBRARY = """
import importlib, sys
from jsnet_tf.errors import UserError

program = importlib.import_module(sys.argv[1])
library = importlib.import_module(sys.argv[2])

def refuse(*args, **kwargs):
    raise UserError("the library refused: bad input")

setattr(library, sys.argv[3], refuse)
sys.argv = [sys.argv[1], *sys.argv[4:]]
program.cli()
"""

PROGRAMS = {  # program: (module whose function is replaced, function, arguments, message prefix)
    "jsnet_tf.data.prepare_s3dis": ("jsnet_tf.data.prepare_s3dis", "prepare", ["--raw=raw", "--out=out"], "prepare_s3dis: error:"),
    "jsnet_tf.data.prepare_shapenet": ("jsnet_tf.data.prepare_shapenet", "prepare", ["--raw=raw", "--out=out"], "prepare_shapenet: error:"),
    "jsnet_tf.experiments": ("jsnet_tf.experiments", "run_table", ["table1", "--data_dir=d", "--workdir=w"], "experiments: error:"),
    "jsnet_tf.evaluate": ("jsnet_tf.evaluate", "evaluate_filelists", ["--filelist=list.txt"], "evaluate.py: error:"),
    "jsnet_tf.predict": ("jsnet_tf.predict", "build_predictor", ["--workdir=w", "--out=out", "cloud.ply"], "predict: error:"),
    "jsnet_tf.train": ("jsnet_tf.train", "resolve_config", ["--workdir=w"], "train.py: error:"),
    "jsnet_tf.export": ("jsnet_tf.export", "export_run", ["--workdir=w", "--out=o"], "jsnet_tf.export: error:"),
}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_a_user_error_from_a_library_is_one_line_without_traceback(program, tmp_path):
    library, function, args, prefix = PROGRAMS[program]
    result = subprocess.run([sys.executable, "-c", _RUN_WITH_A_REFUSING_LIBRARY, program, library, function, *args],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    # TensorFlow 2.21 prints its start-up lines whatever TF_CPP_MIN_LOG_LEVEL says: leave them out.
    ours = [line for line in result.stderr.strip().splitlines() if not TENSORFLOW_LOG_LINE.match(line)]
    assert ours == [f"{prefix} the library refused: bad input"]
