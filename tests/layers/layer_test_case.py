"""The contract every jsnet_tf layer keeps, after keras-hub's `TestCase.run_layer_test`.

A `LayerCase` names a layer, its constructor arguments, a way to draw call inputs and what its
docstring promises (output shapes, weights from the documented widths). The `check_*` functions
each test one part of the contract; tests/layers/test_common_layer_contract.py runs every check on
every case (the point-op layers under both op implementations).

Weight counts come from the `*_counts` formulas below (conv: cin * cout + cout; batch norm:
2 * c trainable, 2 * c moving), written from the reference page, never read from the layers.
"""

import dataclasses
import inspect
import json
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tests.layers.numpy_layers import randomise_weights


@dataclasses.dataclass(frozen=True)
class Counts:
    """Scalars and variables, trainable and not, of a layer's weights."""

    trainable: int = 0
    non_trainable: int = 0
    trainable_variables: int = 0
    non_trainable_variables: int = 0

    def __add__(self, other):
        return Counts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    @classmethod
    def of(cls, layer):
        size = lambda weights: sum(int(np.prod(w.shape)) for w in weights)  # noqa: E731
        return cls(
            size(layer.trainable_weights),
            size(layer.non_trainable_weights),
            len(layer.trainable_weights),
            len(layer.non_trainable_weights),
        )


def batch_norm_counts(channels, scalar_moments=False):
    """gamma and beta per channel; moving mean and variance per channel (or one each)."""
    moving = 1 if scalar_moments else channels
    return Counts(2 * channels, 2 * moving, 2, 2)


def conv_counts(cin, cout, batch_norm=True):
    """Kernel cin * cout and bias cout, plus the batch norm of cout channels."""
    counts = Counts(cin * cout + cout, 0, 2, 0)
    return counts + batch_norm_counts(cout) if batch_norm else counts


def stack_counts(cin, widths):
    """1x1 conv + BN + ReLU per width, each fed by the previous one."""
    total = Counts()
    for width in widths:
        total, cin = total + conv_counts(cin, width), width
    return total


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """One layer configuration and its documented promises.

    make_inputs(rng) returns the positional call arguments (drawn under the op implementation in
    force, since some are neighbourhoods computed by the ops); output_shape is the docstring's
    shape for those inputs (a tuple of shapes for several outputs).
    """

    id: str
    cls: type
    init_kwargs: dict
    make_inputs: Callable
    output_shape: tuple
    counts: Counts

    def new(self):
        return self.cls(**self.init_kwargs)

    def output_shapes(self):
        """The documented output shapes as a list, one per output."""
        several = isinstance(self.output_shape[0], tuple)
        return list(self.output_shape) if several else [self.output_shape]


def _map(fn, structure):
    """fn over the arrays of a call-argument structure (tuples nest, None stays None)."""
    if isinstance(structure, (tuple, list)):
        return tuple(_map(fn, item) for item in structure)
    return None if structure is None else fn(structure)


def _flatten(structure):
    if isinstance(structure, (tuple, list)):
        return [leaf for item in structure for leaf in _flatten(item)]
    return [] if structure is None else [structure]


def _input_shapes(inputs):
    return _map(lambda x: tuple(x.shape), inputs)


def _output_shapes(outputs):
    return [tuple(t.shape) for t in _flatten(outputs)]


def _numpy(outputs):
    return [np.asarray(t) for t in _flatten(outputs)]


def _config_json(layer):
    return json.dumps(layer.get_config(), sort_keys=True)


def _attributes(layer):
    """The layer's attribute names; `__annotations__` comes and goes with Python's lazy
    annotations (keras-hub ignores it too)."""
    return set(dir(layer)) - {"__annotations__"}


def _constructor_arguments(values, cls, defaults=False):
    """`values` of every named argument of cls.__init__ (its defaults where `defaults` and not
    given), through JSON: a get_config that drops an argument loses it even at its default."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    named = [p for p in parameters if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
    missing = inspect.Parameter.empty
    chosen = {p.name: values.get(p.name, p.default if defaults else missing) for p in named}
    return json.loads(json.dumps({name: value for name, value in chosen.items() if value is not missing}))


def _built(layer, inputs):
    layer.build(*_input_shapes(inputs))
    return layer


def check_serialization(case, rng):
    """get_config holds every constructor argument, with its value; get_config -> from_config and
    serialize_keras_object -> JSON -> deserialize give a layer of the same config and the same
    attributes (keras-hub's run_serialization_test)."""
    layer = case.new()
    config, attributes = _config_json(layer), _attributes(layer)
    given = _constructor_arguments(case.init_kwargs, case.cls, defaults=True)
    assert _constructor_arguments(layer.get_config(), case.cls) == given
    revived = case.cls.from_config(json.loads(json.dumps(layer.get_config())))
    assert _config_json(revived) == config
    assert _attributes(revived) == attributes
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    assert serialized["registered_name"] == f"jsnet_tf>{case.cls.__name__}"
    deserialized = keras.saving.deserialize_keras_object(serialized)
    assert type(deserialized) is case.cls
    assert _config_json(deserialized) == config
    assert _attributes(deserialized) == attributes


def check_build(case, rng):
    """build() from the input shapes alone creates exactly the documented weights (what
    JSNet.build and loading a `.keras` file without data rely on)."""
    layer = _built(case.new(), case.make_inputs(rng))
    assert layer.built
    assert Counts.of(layer) == case.counts


def check_eager_call_and_round_trip(case, rng):
    """An eval-mode call of a built layer (random weights) creates no weights and gives the
    documented shapes, float32, finite values. A layer revived from its config (then built), or
    from its Keras serialization (built from the recorded shapes), has the same weights under the
    same names (checkpoints map by name) and, with their values copied, the same outputs."""
    inputs = case.make_inputs(rng)
    layer = _built(case.new(), inputs)
    randomise_weights(layer, rng)
    outputs = layer(*inputs)
    assert Counts.of(layer) == case.counts
    assert _output_shapes(outputs) == case.output_shapes()
    want = _numpy(outputs)
    for value, expected in zip(_flatten(outputs), want):
        assert value.dtype == layer.compute_dtype
        assert np.all(np.isfinite(expected))
    revived = case.cls.from_config(layer.get_config())
    revivals = {"from_config": _built(revived, inputs), "deserialize": _deserialized(layer)}
    for how, clone in revivals.items():
        assert clone.built and Counts.of(clone) == case.counts, how
        assert [w.path for w in clone.weights] == [w.path for w in layer.weights], how
        clone.set_weights(layer.get_weights())
        for got, expected in zip(_numpy(clone(*inputs)), want):
            np.testing.assert_array_equal(got, expected, err_msg=how)


def _deserialized(layer):
    """The layer through Keras serialization and JSON, as in a `.keras` file: built again from
    the recorded input shapes."""
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    return keras.saving.deserialize_keras_object(serialized)


def check_symbolic_call(case, rng):
    """Keras tensors with an unknown batch (a functional model's inputs) build the documented
    weights and give the documented shapes, float32."""
    inputs = case.make_inputs(rng)
    symbolic = _map(lambda x: keras.KerasTensor((None, *x.shape[1:]), dtype=x.dtype.name), inputs)
    layer = case.new()
    outputs = layer(*symbolic)
    assert _output_shapes(outputs) == [(None, *shape[1:]) for shape in case.output_shapes()]
    assert {t.dtype for t in _flatten(outputs)} == {layer.compute_dtype}
    assert Counts.of(layer) == case.counts


def check_training_call(case, rng):
    """training=True: finite outputs, every moving statistic changes (elementwise), and the
    gradient of a loss reaches every trainable weight, finite."""
    inputs = case.make_inputs(rng)
    layer = _built(case.new(), inputs)
    randomise_weights(layer, rng)
    before = [w.numpy().copy() for w in layer.non_trainable_weights]
    with tf.GradientTape() as tape:
        outputs = _flatten(layer(*inputs, training=True))
        projections = [rng.standard_normal(t.shape).astype(np.float32) for t in outputs]
        loss = tf.add_n([tf.reduce_sum(t * p) for t, p in zip(outputs, projections)])
    for value in outputs:
        assert np.all(np.isfinite(value.numpy()))
    gradients = tape.gradient(loss, layer.trainable_weights)
    for weight, gradient in zip(layer.trainable_weights, gradients):
        assert gradient is not None, f"no gradient reaches {weight.path}"
        assert np.all(np.isfinite(tf.convert_to_tensor(gradient).numpy())), weight.path
    assert any(np.any(tf.convert_to_tensor(g).numpy() != 0) for g in gradients)
    for weight, old in zip(layer.non_trainable_weights, before):
        assert np.all(weight.numpy() != old), f"{weight.path} did not move in training mode"


CHECKS = {
    "serialization": check_serialization,
    "build": check_build,
    "eager_call_and_round_trip": check_eager_call_and_round_trip,
    "symbolic_call": check_symbolic_call,
    "training_call": check_training_call,
}
