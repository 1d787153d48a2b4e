"""The ops inside Keras 3 layers: static shapes reach the functional model, both implementations
give the same model outputs, and a training step runs (XLA off for the compiled ops)."""

import keras
import numpy as np

from jsnet_tf import ops


class KnnGrouping(keras.layers.Layer):
    """Groups each sampled centre's k nearest points, relative to the centre: (B, N, 3) -> (B, M, k, 3)."""

    def __init__(self, npoint, k, **kwargs):
        super().__init__(**kwargs)
        self.npoint, self.k = npoint, k
        self.supports_jit = ops.implementation() == "reference"

    def call(self, xyz):
        centres = ops.gather_point(xyz, ops.farthest_point_sample(self.npoint, xyz))
        _, idx = ops.knn_point(self.k, xyz, centres)
        return ops.group_point(xyz, idx) - centres[:, :, None, :]


def _model():
    inputs = keras.Input(shape=(128, 3))
    grouped = KnnGrouping(32, 8)(inputs)
    features = keras.layers.Dense(4)(grouped)
    return keras.Model(inputs, keras.layers.GlobalMaxPooling2D()(features))


def test_static_shapes_reach_the_functional_model(impl):
    inputs = keras.Input(shape=(128, 3))
    assert tuple(KnnGrouping(32, 8)(inputs).shape) == (None, 32, 8, 3)


def test_same_outputs_with_both_implementations(rng):
    ops.library.load()
    xyz = rng.random((2, 128, 3), dtype=np.float32)
    keras.utils.set_random_seed(0)
    with ops.use_implementation("custom"):
        model = _model()
        custom = model.predict(xyz, verbose=0)
    with ops.use_implementation("reference"):
        twin_model = _model()
        twin_model.set_weights(model.get_weights())
        reference = twin_model.predict(xyz, verbose=0)
    np.testing.assert_allclose(custom, reference, rtol=1e-6, atol=1e-6)


def test_training_step_runs_and_updates_weights(impl, rng):
    keras.utils.set_random_seed(0)
    model = _model()
    model.compile(optimizer="adam", loss="mse")  # jit_compile="auto" follows supports_jit
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(rng.random((4, 128, 3), dtype=np.float32), np.zeros((4, 4)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
