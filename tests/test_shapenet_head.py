"""Export with the ShapeNet part head (50 part classes, 6 input channels): the SavedModel
reproduces the Keras model and describes its inputs and classes."""

import json
import zlib

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import checkpoints, config, export, ops
from jsnet_tf.data import shapenet
from jsnet_tf.model import build_model
from tests.conftest import BASE_SEED

NUM_POINTS = 256
NPOINTS = [128, 64, 32, 16]


def shapes(rng, batch, num_points=NUM_POINTS, grid=64):
    """Unit-sphere shapes with unit normals; xyz on a 1/grid grid (exact float32 distances, so
    our op implementations agree), or anywhere when grid is None (no ties among neighbour
    distances, which a KD-tree and our kNN op would break differently)."""
    xyz = rng.uniform(-0.7, 0.7, (batch, num_points, 3))
    if grid is not None:
        xyz = np.round(xyz * grid) / grid
    normals = rng.normal(size=(batch, num_points, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return np.concatenate([xyz, normals], axis=-1).astype(np.float32)


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng([BASE_SEED, zlib.crc32(b"tests/test_shapenet_head.py")])


@pytest.mark.slow
def test_a_shapenet_run_exports_and_the_savedmodel_reproduces_it(rng, tmp_path):
    cfg = config.load("shapenet_part", [f"data.num_points={NUM_POINTS}", f"model.npoints={NPOINTS}"])
    tf.keras.utils.set_random_seed(int(rng.integers(2**31)))
    model = build_model(cfg)
    model.build((None, NUM_POINTS, 6))
    model.set_bn_decay(0.0)  # moving statistics := this batch's
    model(shapes(rng, 4), training=True)
    run_dir = tmp_path / "run"
    checkpoints.write_run_files(run_dir, cfg)
    checkpoints.save_weights(model, run_dir / "weights")

    out = tmp_path / "served"
    export.export_run(run_dir, out)
    points = shapes(rng, 2)
    with ops.use_implementation("reference"):
        expected = model(points, training=False)
    served = tf.saved_model.load(str(out / "1")).signatures["serving_default"](points=tf.constant(points))
    assert served["semantic_logits"].shape == (2, NUM_POINTS, 50) and served["embeddings"].shape == (2, NUM_POINTS, 5)
    scale = float(np.abs(expected["semantic_logits"]).max())
    np.testing.assert_allclose(served["semantic_logits"].numpy(), expected["semantic_logits"].numpy(), atol=1e-4 * scale)
    description = json.loads((out / "1" / "assets.extra" / "jsnet_serving.json").read_text())
    assert description["input"]["shape"] == [None, None, 6]
    assert len(description["class_names"]) == 50 and description["class_names"][0] == "Airplane/part0"
    assert description["class_names"][-1] == f"Table/part{len(shapenet.CATEGORIES['Table'].parts) - 1}"
