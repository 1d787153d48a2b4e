import numpy as np
import pytest

from jsnet_tf.layers import JISS

EPS = 1e-3


def _randomise(layer, rng):
    for w in layer.weights:
        value = rng.standard_normal(w.shape).astype(np.float32) * 0.3
        w.assign(np.abs(value) + 0.5 if "variance" in w.path else value)


def _cbr(block, x, relu=True):
    y = x @ block.kernel.numpy().reshape(x.shape[-1], -1) + block.bias.numpy()
    if block.bn is not None:
        bn = block.bn
        y = bn.gamma.numpy() * (y - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + EPS) + bn.beta.numpy()
    return np.maximum(y, 0) if relu else y


def _attention(x):
    return x / (1 + np.exp(-x.mean(-1, keepdims=True)))


def test_matches_the_papers_equations(rng):
    """Eqs. (5)-(11) in float64, eval mode, random weights and moving statistics."""
    layer = JISS(num_classes=13, embedding_dim=5)
    f_ss = rng.standard_normal((2, 50, 128)).astype(np.float32)
    f_is = rng.standard_normal((2, 50, 128)).astype(np.float32)
    layer(f_ss, f_is)
    _randomise(layer, rng)
    logits, embeddings = [t.numpy() for t in layer(f_ss, f_is)]
    ss, is_ = f_ss.astype(np.float64), f_is.astype(np.float64)
    f_issr = _attention(np.concatenate([is_, is_ + _cbr(layer.sem_cache, ss)], -1))
    f_isst = _cbr(layer.ins_cache, f_issr).mean(axis=1, keepdims=True)
    f_ssir = _attention(np.concatenate([ss, ss + f_isst], -1))
    want_embeddings = _cbr(layer.ins_fc5, _cbr(layer.ins_fc2, f_issr), relu=False)
    want_logits = _cbr(layer.sem_fc5, _cbr(layer.sem_fc2, f_ssir), relu=False)
    np.testing.assert_allclose(embeddings, want_embeddings, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-3, atol=1e-3)


def test_semantic_cache_couples_the_points_of_a_block(rng):
    layer = JISS(num_classes=4)
    f_ss = rng.standard_normal((1, 20, 128)).astype(np.float32)
    f_is = rng.standard_normal((1, 20, 128)).astype(np.float32)
    logits = layer(f_ss, f_is).__getitem__(0).numpy()
    changed = f_is.copy()
    changed[0, 19] += 5.0  # another point's instance features change this point's logits
    assert not np.allclose(layer(f_ss, changed)[0].numpy()[0, 0], logits[0, 0])


@pytest.mark.parametrize("instance_fusion,semantic_fusion,caches", [(True, True, 2), (False, True, 1), (True, False, 1), (False, False, 0)])
def test_ablation_switches(rng, instance_fusion, semantic_fusion, caches):
    layer = JISS(num_classes=6, instance_fusion=instance_fusion, semantic_fusion=semantic_fusion)
    f = rng.standard_normal((1, 10, 128)).astype(np.float32)
    logits, embeddings = layer(f, f)
    assert logits.shape == (1, 10, 6) and embeddings.shape == (1, 10, 5)
    assert sum(block is not None for block in (layer.sem_cache, layer.ins_cache)) == caches


def test_dropout_only_in_training(rng):
    layer = JISS(num_classes=3)
    f = rng.standard_normal((1, 30, 128)).astype(np.float32)
    np.testing.assert_array_equal(layer(f, f)[0].numpy(), layer(f, f)[0].numpy())
    assert not np.allclose(layer(f, f, training=True)[1].numpy(), layer(f, f, training=True)[1].numpy())
