"""jsnet_tf.tasks: the registry finds every dataset's task by name without loading TensorFlow, each
task describes its dataset consistently and refuses configs that do not fit it in one line, and no
module outside the task modules and data/ decides anything by dataset (an `ast` scan)."""

import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jsnet_tf import config, tasks
from jsnet_tf.config import ConfigError

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "jsnet_tf"
# Where dataset decisions live: the task modules (jsnet_tf/tasks/, with the ShapeNet task's part
# metrics, evaluation and prediction) and the data modules (jsnet_tf/data/).
OWNERS = ("tasks/", "data/")
# Names of the data modules' per-dataset constants: class and channel counts, class lists.
DATASET_CONSTANTS = ("CLASSES", "NUM_CLASSES", "NUM_PARTS", "NUM_CHANNELS", "NUM_CATEGORIES")


def _branches_on_the_dataset(path):
    """[(line, what)] of the places in a module that decide by dataset. The rule: a comparison, and a
    condition (if, conditional expression, while, comprehension filter, match), may not mention a dataset's name, a
    config's data.dataset (`["dataset"]`), a data module's per-dataset constant, or test a class or
    channel count for equality with a number above 1 (range checks such as `input_channels < 3` are
    fine); and no dict may dispatch on dataset names (keys naming two datasets or more)."""
    tree = ast.parse(path.read_text(), str(path))
    names = set(tasks.names())
    found = []

    def offending(node):
        for part in ast.walk(node):
            if isinstance(part, ast.Constant) and part.value in names:
                return f"the dataset name {part.value!r}"
            if isinstance(part, ast.Subscript) and isinstance(part.slice, ast.Constant) and part.slice.value == "dataset":
                return "data.dataset"
            if isinstance(part, ast.Attribute) and part.attr.endswith(DATASET_CONSTANTS):
                return f"the dataset constant {ast.unparse(part)}"
            if isinstance(part, ast.Name) and part.id.endswith(DATASET_CONSTANTS):
                return f"the dataset constant {part.id}"
            if isinstance(part, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in part.ops):
                text = ast.unparse(part)
                counts = any(word in text for word in ("num_classes", "input_channels"))
                numbers = [c.value for c in ast.walk(part) if isinstance(c, ast.Constant) and type(c.value) is int]
                if counts and any(n > 1 for n in numbers):
                    return f"a class or channel count tested for a value: {text}"
        return None

    for node in ast.walk(tree):
        tests = []
        if isinstance(node, ast.Compare):  # a comparison of the dataset is a decision wherever it is
            tests = [node]
        elif isinstance(node, (ast.If, ast.IfExp, ast.While)):
            tests = [node.test]
        elif isinstance(node, ast.comprehension):
            tests = node.ifs
        elif isinstance(node, ast.Match):
            tests = [node.subject] + [case.pattern for case in node.cases]
        elif isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if len(keys & names) >= 2:
                found.append((node.lineno, f"a dict keyed by dataset names ({', '.join(sorted(keys & names))})"))
        for test in tests:
            what = offending(test)
            if what:
                found.append((test.lineno, what))
    return found


def test_no_module_outside_the_tasks_and_data_branches_on_the_dataset():
    modules = [p for p in sorted(PACKAGE.rglob("*.py")) if not p.relative_to(PACKAGE).as_posix().startswith(OWNERS)]
    assert len(modules) > 20  # the scan sees the package
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {what}" for path in modules
             for line, what in _branches_on_the_dataset(path)]
    assert not found, "decide by dataset in the task instead:\n" + "\n".join(found)


def test_the_rule_catches_what_it_is_meant_to(tmp_path):
    """The scan itself: each form of branching is found, a declaration is not."""
    source = tmp_path / "program.py"
    source.write_text(
        'DEFAULT = "s3dis"\n'
        'def f(cfg, model, s3dis):\n'
        '    if cfg["data"]["dataset"] == "shapenet":\n'
        '        return 1\n'
        '    x = 2 if model.num_classes == 13 else 3\n'
        '    y = {"s3dis": 1, "scannet": 2}[cfg]\n'
        '    z = [c for c in range(3) if model.input_channels != s3dis.NUM_CHANNELS]\n'
        '    return x, y, z\n'
    )
    found = dict(_branches_on_the_dataset(source))
    assert sorted(found) == [3, 5, 6, 7]
    assert found[3] in ("data.dataset", "the dataset name 'shapenet'") and "13" in found[5] and "dataset names" in found[6]
    assert "NUM_CHANNELS" in found[7]


def test_every_dataset_is_found_by_name_and_scannet_is_the_third():
    assert tasks.names() == ("s3dis", "shapenet", "scannet")
    assert config.CHOICES[("data", "dataset")] == tasks.names()
    scannet = tasks.get("scannet")
    assert scannet.name == "scannet" and scannet.title == "ScanNet v2" and tasks.get("scannet") is scannet
    assert tasks.for_config(config.load("scannet")) is scannet
    with pytest.raises(ConfigError, match="unknown dataset 'matterport'"):
        tasks.get("matterport")


def test_the_registry_loads_no_tensorflow():
    code = ("import sys\nfrom jsnet_tf import config, tasks\n"
            "for name in tasks.names():\n    task = tasks.get(name)\n    cfg = config.load(task.start_config)\n"
            "    task.check_config(cfg)\nassert 'tensorflow' not in sys.modules, 'tensorflow was loaded'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("name", tasks.names())
def test_each_task_describes_its_dataset_consistently(name):
    task = tasks.get(name)
    count = task.num_classes
    assert len(set(task.class_names)) == count and len(task.label_ids) == count == len(task.palette())
    assert task.palette().dtype == np.uint8 and len({tuple(c) for c in task.palette()}) >= min(count, 13)
    assert set(task.instance_classes) <= set(range(count)) and len(task.label_ids) == len(set(task.label_ids))
    assert task.input_channels == len(task.channel_names) >= 3
    cfg = config.load(task.start_config)
    task.check_config(cfg, task.start_config)  # its own config fits
    assert (cfg["model"]["num_classes"], cfg["model"]["input_channels"]) == (count, task.input_channels)


def test_a_config_that_does_not_fit_its_dataset_is_one_line():
    scannet = tasks.get("scannet")
    with pytest.raises(ConfigError, match=r"^x.toml: data.dataset='scannet' feeds 9 channels and 20 classes, the model has "
                                          r"model.input_channels=9 and model.num_classes=13: start from the scannet config$"):
        scannet.check_config(config.load("s3dis_area5", ['data.dataset="scannet"', "data.areas=[]"]), "x.toml")
    with pytest.raises(ConfigError, match=r"data.areas=\[5\]: ScanNet v2 has no areas .*set data.areas = \[\]"):
        scannet.check_config(config.load("scannet", ["data.areas=[5]"]))
    shapenet = tasks.get("shapenet")
    with pytest.raises(ConfigError, match=r"data.sampling: not settings of ShapeNet part"):
        shapenet.check_config(config.load("shapenet_part", ['data.sampling="fixed"']))
