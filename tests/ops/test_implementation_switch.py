"""Choosing the implementation: JSNET_OPS, set_implementation, use_implementation, the default."""

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.ops import library


@pytest.fixture(autouse=True)
def clean_state(monkeypatch):
    monkeypatch.delenv("JSNET_OPS", raising=False)
    yield
    ops.set_implementation(None)


def _ran_custom_kernel(fn):
    graph = tf.function(fn).get_concrete_function().graph
    return any(o.type.startswith("Jsnet") for o in graph.get_operations())


def test_default_is_custom_when_the_library_is_built():
    library.load()
    assert ops.implementation() == "custom"


@pytest.mark.parametrize("value", ["reference", "custom", " Reference "])
def test_environment_variable(monkeypatch, value):
    monkeypatch.setenv("JSNET_OPS", value)
    assert ops.implementation() == value.strip().lower()


def test_unknown_environment_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("JSNET_OPS", "cuda")
    with pytest.raises(ValueError, match="JSNET_OPS: unknown op implementation 'cuda'"):
        ops.implementation()


def test_context_manager_nests_and_restores(monkeypatch):
    monkeypatch.setenv("JSNET_OPS", "custom")
    with ops.use_implementation("reference"):
        assert ops.implementation() == "reference"
        with ops.use_implementation("custom"):
            assert ops.implementation() == "custom"
        assert ops.implementation() == "reference"
    assert ops.implementation() == "custom"


def test_set_implementation_overrides_environment(monkeypatch):
    monkeypatch.setenv("JSNET_OPS", "custom")
    ops.set_implementation("reference")
    assert ops.implementation() == "reference"
    with pytest.raises(ValueError, match="unknown op implementation"):
        ops.set_implementation("fast")


def test_choice_decides_the_graph():
    library.load()
    xyz = tf.constant(np.random.default_rng(0).random((1, 64, 3), dtype=np.float32))
    with ops.use_implementation("reference"):
        assert not _ran_custom_kernel(lambda: ops.knn_point(4, xyz, xyz))
    with ops.use_implementation("custom"):
        assert _ran_custom_kernel(lambda: ops.knn_point(4, xyz, xyz))


def test_missing_library_falls_back_or_explains(monkeypatch, tmp_path):
    monkeypatch.setattr(library, "LIB_PATH", tmp_path / "libjsnet_ops.so")
    monkeypatch.setattr(library, "_module", None)
    monkeypatch.setattr(library, "_failure", None)
    assert ops.implementation() == "reference"
    xyz = np.zeros((1, 4, 3), np.float32)
    assert ops.farthest_point_sample(2, xyz).shape == (1, 2)  # works through the twins
    with ops.use_implementation("custom"):
        with pytest.raises(ops.OpLibraryError, match=r"not built; build it with `python tf_ops/build.py`"):
            ops.farthest_point_sample(2, xyz)
