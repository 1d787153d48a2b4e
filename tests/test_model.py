"""The assembled JSNet: inventory equal to the original checkpoint, gradients, serialisation,
determinism, agreement of the two op implementations, ablations.

Most tests use the paper's channel table with fewer points (256 per block, npoint 128/64/32/16):
weights depend on channels only, so the inventory is the S3DIS network's, at a fraction of the cost.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import ops
from jsnet_tf.model import DECODER, ENCODER, JSNet

POINTS = 256
SMALL_ENCODER = [{**spec, "npoint": npoint} for spec, npoint in zip(ENCODER, (128, 64, 32, 16))]


def _points(rng, batch=2, n=POINTS):
    return np.concatenate([rng.random((batch, n, 3)), rng.random((batch, n, 6))], axis=-1).astype(np.float32)


def _model(**kwargs):
    return JSNet(encoder=kwargs.pop("encoder", SMALL_ENCODER), **kwargs)


def _calibrated(model, points):
    """Moving statistics from one training pass (decay 0), as training leaves them: with the
    original's zero-initialised statistics a fresh network overflows in inference."""
    model.set_bn_decay(0.0)
    model(points, training=True)
    model.set_bn_decay(0.9)
    return model


def _assert_finite(outputs):
    for key, value in outputs.items():
        assert np.isfinite(value.numpy()).all(), key


def _expected_inventory(encoder, decoder, input_channels=9, num_classes=13, embedding_dim=5):
    """Values and tensors of the original graph, derived from the layer table alone."""
    convs = []  # (kernel values, output channels, batch norm: "channel" | "scalar" | None)

    def conv(cin, cout, bn="channel", rows=1):
        convs.append((rows * cin * cout, cout, bn))

    feature_channels = input_channels - 3
    width = feature_channels
    for level, spec in enumerate(encoder, start=1):
        channels = 3 + width
        if level == 1:
            for out in spec["mlp"]:
                conv(channels, out)
                channels = out
        else:
            for out in spec["mlp"][:-1]:
                conv(channels, out)
                channels = out
            conv(3, 32)  # weight net
            conv(1, 16)  # density net
            conv(16, 1, bn=None)
            conv(32, spec["mlp"][-1], rows=channels)  # after_conv
        width = spec["mlp"][-1]
    skips = [encoder[2]["mlp"][-1], encoder[1]["mlp"][-1], encoder[0]["mlp"][-1], feature_channels]
    for _branch in ("sem", "ins"):
        coarse = encoder[3]["mlp"][-1]
        for level, spec in enumerate(decoder):
            if level < 3:
                grouped = 3 + coarse
                conv(3, 32)
                conv(32, grouped, bn=None)
                convs.append((0, grouped, "scalar"))  # sum-pool bias + scalar batch norm
                channels = grouped + skips[level]
            else:
                channels = coarse + skips[level]
            for out in spec["mlp"]:
                conv(channels, out)
                channels = out
            coarse = spec["mlp"][-1]
        conv(decoder[2]["mlp"][-1] + decoder[3]["mlp"][-1], 128, bn="channel")  # PCFF fc1
    conv(128, 128)  # sem_cache_1
    conv(256, 128)  # ins_cache_1
    conv(256, 128)  # ins_fc2
    conv(128, embedding_dim, bn=None)
    conv(256, 128)  # sem_fc2
    conv(128, num_classes, bn=None)
    trainable = sum(k + cout + (2 * cout if bn else 0) for k, cout, bn in convs)
    moving = sum(2 * cout if bn == "channel" else 2 if bn == "scalar" else 0 for _, cout, bn in convs)
    tensors = sum((1 if k else 0) + 1 + (4 if bn else 0) for k, _, bn in convs)
    return trainable, moving, tensors


def test_inventory_equals_the_original_checkpoint(rng):
    model = _model()
    model(_points(rng))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    moving = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert (trainable, moving, len(model.weights)) == _expected_inventory(ENCODER, DECODER)
    assert (trainable, moving, len(model.weights)) == (8_085_805, 15_276, 340)  # the reference page
    kinds = {}
    for w in model.weights:
        kinds[w.path.rsplit("/", 1)[1]] = kinds.get(w.path.rsplit("/", 1)[1], 0) + 1
    assert kinds == {"weights": 59, "biases": 65, "beta": 54, "gamma": 54, "moving_mean": 54, "moving_variance": 54}
    scalar_stats = [w.path for w in model.non_trainable_weights if w.shape == ()]
    assert len(scalar_stats) == 12 and all("fp_sumpool" in path for path in scalar_stats)


def test_outputs(rng):
    points = _points(rng, batch=3)
    out = _calibrated(_model(), points)(points)
    assert out["semantic_logits"].shape == (3, POINTS, 13) and out["embeddings"].shape == (3, POINTS, 5)
    _assert_finite(out)


def test_every_trainable_weight_gets_a_finite_gradient(rng):
    model = _model()
    points = _points(rng)
    with tf.GradientTape() as tape:
        out = model(points, training=True)
        loss = tf.reduce_mean(out["semantic_logits"] ** 2) + tf.reduce_mean(out["embeddings"] ** 2)
    grads = tape.gradient(loss, model.trainable_weights)
    missing = [w.path for w, g in zip(model.trainable_weights, grads) if g is None]
    assert not missing
    bad = [w.path for w, g in zip(model.trainable_weights, grads) if not np.isfinite(g.numpy()).all()]
    assert not bad


def test_training_call_updates_moving_statistics_with_the_scheduled_decay(rng):
    model = _model()
    points = _points(rng)
    model(points)
    bn = next(layer for layer in model._flatten_layers() if layer.name == "bn")
    assert not bn.moving_mean.numpy().any()  # zero-initialised, eval calls do not update
    model.set_bn_decay(0.5)
    model(points, training=True)
    first = bn.moving_mean.numpy()
    assert first.any()
    model.set_bn_decay(1.0)  # decay 1: frozen
    model(points, training=True)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), first)


def test_fresh_network_blows_up_in_inference_like_the_original(rng):
    """Zero-initialised moving statistics (the original's) blow a never-trained network up in eval
    mode: every batch norm multiplies by up to 1 / sqrt(1e-3), so logits reach 1e29 or overflow,
    depending on the input; one training pass brings them back to a sane range (the reason for
    `_calibrated`)."""
    points = _points(rng)
    model = _model()
    fresh = model(points)["semantic_logits"].numpy()
    assert not np.isfinite(fresh).all() or np.abs(fresh).max() > 1e20
    calibrated = _calibrated(model, points)(points)
    _assert_finite(calibrated)
    assert np.abs(calibrated["semantic_logits"].numpy()).max() < 1e6


def test_inference_is_deterministic(rng):
    points = _points(rng)
    model = _calibrated(_model(), points)
    a, b = model(points), model(points)
    _assert_finite(a)
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


def _randomise_statistics(model, rng):
    for w in model.non_trainable_weights:
        w.assign(rng.random(w.shape).astype(np.float32) + (0.5 if "variance" in w.path else 0.0))


def test_config_round_trip_gives_identical_outputs(rng):
    model = _model(num_classes=7, embedding_dim=4)
    points = _points(rng)
    model(points)
    _randomise_statistics(model, rng)
    clone = JSNet.from_config(model.get_config())
    clone(points)
    clone.set_weights(model.get_weights())
    _assert_finite(model(points))
    for key, value in model(points).items():
        np.testing.assert_array_equal(clone(points)[key].numpy(), value.numpy())


def test_keras_file_round_trip_gives_identical_outputs(rng, tmp_path):
    model = _model()
    points = _points(rng)
    model(points)
    _randomise_statistics(model, rng)
    model.save(tmp_path / "jsnet.keras")
    loaded = keras.saving.load_model(tmp_path / "jsnet.keras")
    assert isinstance(loaded, JSNet) and len(loaded.weights) == 340
    _assert_finite(model(points))
    for key, value in model(points).items():
        np.testing.assert_array_equal(loaded(points)[key].numpy(), value.numpy())


def test_both_op_implementations_give_the_same_outputs(rng):
    ops.library.load()
    points = _points(rng)
    with ops.use_implementation("custom"):
        custom = _calibrated(_model(), points)
        custom_out = custom(points)
        _assert_finite(custom_out)
        assert not custom.layers[0].supports_jit
    with ops.use_implementation("reference"):
        twin = _model()
        twin(points)
        twin.set_weights(custom.get_weights())
        twin_out = twin(points)
        assert twin.layers[0].supports_jit
    for key in custom_out:
        np.testing.assert_allclose(twin_out[key].numpy(), custom_out[key].numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "switches",
    [
        {"backbone": "pointnet2"},
        {"pcff": False},
        {"instance_fusion": False},
        {"semantic_fusion": False},
        {"instance_fusion": False, "semantic_fusion": False, "pcff": False},
    ],
    ids=["base-network", "no-pcff", "no-instance-fusion", "no-semantic-fusion", "backbone-only"],
)
def test_ablations_run(rng, switches):
    model = _model(**switches)
    out = model(_points(rng))
    assert out["semantic_logits"].shape == (2, POINTS, 13)
    assert JSNet.from_config(model.get_config()).get_config() == model.get_config()


def test_bad_configuration_and_input_are_clear_errors(rng):
    with pytest.raises(ValueError, match="unknown backbone 'pointnet'"):
        JSNet(backbone="pointnet")
    with pytest.raises(ValueError, match=r"expects points of shape \(batch, num_points, 9\)"):
        _model()(_points(rng)[..., :6])
