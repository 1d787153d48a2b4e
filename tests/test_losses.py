"""jsnet_tf.losses against the float64 NumPy reference of the paper's formulas (3)-(4), plus
gradients, tf.function / XLA / tf.distribute and bad input."""

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import losses
from tests import losses_reference as ref

EMBED = 5
CLASSES = 13


def instance_batch(rng, instances_per_block, points=40, dtype=np.int64, id_range=(-(2**40), 2**40)):
    """Embeddings (B, N, E) and instance labels (B, N): block b has instances_per_block[b]
    instances with random, non-contiguous ids (each instance owns at least one point); every
    instance sits at a random centre so that some pairs of means are within the push margin 3 and
    others beyond it, and its points scatter around it across the pull margin 0.5."""
    embeddings, labels = [], []
    for count in instances_per_block:
        ids = rng.permutation(np.unique(rng.integers(*id_range, size=count + 8, dtype=np.int64)))[:count]
        assert len(ids) == count
        owner = np.concatenate([np.arange(count), rng.integers(0, count, points - count)])
        rng.shuffle(owner)
        centres = rng.uniform(-1.0, 1.0, (count, EMBED))
        spreads = rng.uniform(0.02, 0.4, count)
        embeddings.append(centres[owner] + spreads[owner, None] * rng.normal(0.0, 1.0, (points, EMBED)))
        labels.append(ids[owner])
    return np.stack(embeddings), np.stack(labels).astype(dtype)


def semantic_batch(rng, batch, points):
    return rng.normal(0.0, 2.0, (batch, points, CLASSES)), rng.integers(0, CLASSES, (batch, points))


def assert_losses(actual, expected, dtype):
    rtol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose([float(x) for x in actual], expected, rtol=rtol, atol=rtol)


# ------------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_discriminative_loss_matches_reference(rng, dtype):
    """Several blocks with different numbers of instances (one of them a single instance),
    large non-contiguous int64 ids, negative ones included."""
    embeddings, labels = instance_batch(rng, [1, 2, 5, 9, 3])
    expected = ref.discriminative_loss(embeddings.astype(dtype), labels)
    actual = losses.discriminative_loss(embeddings.astype(dtype), labels)
    assert all(x.dtype == dtype for x in actual)
    assert_losses(actual, expected, dtype)


def test_reference_covers_both_sides_of_the_margins(rng):
    """The random batches exercise the hinges on both sides (else the test above proves less)."""
    embeddings, labels = instance_batch(rng, [9, 9])
    pulls, pushes = [], []
    for e, l in zip(embeddings, labels):
        ids = np.unique(l)
        means = np.stack([e[l == i].mean(0) for i in ids])
        pushes.append(np.abs(means[:, None] - means[None]).sum(-1)[~np.eye(len(ids), dtype=bool)])
        pulls.append(np.abs(e - means[np.searchsorted(ids, l)]).sum(-1))
    pulls, pushes = np.concatenate(pulls), np.concatenate(pushes)
    assert (pulls < 0.5).any() and (pulls > 0.5).any()
    assert (pushes < 3.0).any() and (pushes > 3.0).any()


@pytest.mark.parametrize(
    "params", [dict(delta_v=0.2, delta_d=2.0, param_var=0.3, param_dist=2.5), dict(delta_v=1.0, delta_d=0.5)]
)
def test_margins_and_weights_are_arguments(rng, params):
    embeddings, labels = instance_batch(rng, [4, 6, 2])
    expected = ref.discriminative_loss(embeddings, labels, **params)
    assert_losses(losses.discriminative_loss(embeddings, labels, **params), expected, np.float64)


def test_single_instance_blocks_have_no_push(rng):
    embeddings, labels = instance_batch(rng, [1, 1, 1])
    disc, l_var, l_dist = losses.discriminative_loss(embeddings, labels)
    assert float(l_dist) == 0.0
    assert_losses((disc, l_var, l_dist), ref.discriminative_loss(embeddings, labels), np.float64)


def test_single_point_instances(rng):
    """Instances of one point (embedding == mean: no pull) and a block where every point is its
    own instance."""
    embeddings = rng.normal(0.0, 1.0, (2, 6, EMBED))
    labels = np.array([[7, 7, 7, 7, 7, 100], [0, 1, 2, 3, 4, 5]])
    expected = ref.discriminative_loss(embeddings, labels)
    assert_losses(losses.discriminative_loss(embeddings, labels), expected, np.float64)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_instance_ids_only_group_points(rng, dtype):
    """The loss depends on which points share an id within a block, not on the id values: small
    and huge ids, negative ones, a relabelling, and the same ids reused in every block all agree."""
    embeddings, labels = instance_batch(rng, [3, 6, 4], dtype=dtype, id_range=(-(2**31), 2**31 - 1))
    expected = ref.discriminative_loss(embeddings, labels)
    assert_losses(losses.discriminative_loss(embeddings, labels), expected, np.float64)
    dense = np.stack([np.unique(l, return_inverse=True)[1].reshape(-1) for l in labels]).astype(dtype)
    assert_losses(losses.discriminative_loss(embeddings, dense), expected, np.float64)  # 0..M-1 in every block
    assert_losses(losses.discriminative_loss(embeddings, 3 * dense + 11), expected, np.float64)
    relabel = rng.permutation(np.arange(-50, 50))[: dense.max() + 1] * 1000  # a random one-to-one map
    assert_losses(losses.discriminative_loss(embeddings, relabel[dense].astype(dtype)), expected, np.float64)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_instance_renumbering(rng, dtype):
    """Both renumberings (tf.unique: order of first appearance; sort: increasing ids)."""
    _, labels = instance_batch(rng, [1, 4, 7, 2], dtype=dtype, id_range=(-(2**31), 2**31 - 1))
    unique_ids, unique_counts = losses._instance_ids_unique(tf.constant(labels))
    sorted_ids, sorted_counts = losses._instance_ids_sorted(tf.constant(labels))
    for b, l in enumerate(labels):
        ids, first, inverse = np.unique(l, return_index=True, return_inverse=True)
        np.testing.assert_array_equal(sorted_ids[b], inverse.reshape(-1))
        appearance = np.argsort(np.argsort(first))  # rank of each id by first appearance
        np.testing.assert_array_equal(unique_ids[b], appearance[inverse.reshape(-1)])
        assert unique_counts[b] == sorted_counts[b] == len(ids)


@pytest.mark.parametrize("weighted", [False, True])
def test_semantic_loss_matches_log_softmax(rng, weighted):
    logits, labels = semantic_batch(rng, 3, 20)
    weights = rng.uniform(0.0, 2.0, labels.shape) * (rng.random(labels.shape) < 0.7) if weighted else None
    expected = ref.semantic_loss(logits, labels, weights)
    np.testing.assert_allclose(float(losses.semantic_loss(logits, labels, weights)), expected, rtol=1e-10)
    single = losses.semantic_loss(logits.astype(np.float32), labels, weights)
    np.testing.assert_allclose(float(single), expected, rtol=1e-5)


def test_semantic_loss_weights_like_tf1(rng):
    """Scalar weight w: w * mean; all-zero weights: 0 (TF1's SUM_BY_NONZERO_WEIGHTS)."""
    logits, labels = semantic_batch(rng, 2, 10)
    mean = ref.semantic_loss(logits, labels)
    np.testing.assert_allclose(float(losses.semantic_loss(logits, labels, 2.5)), 2.5 * mean, rtol=1e-12)
    assert float(losses.semantic_loss(logits, labels, np.zeros(labels.shape))) == 0.0


@pytest.mark.parametrize("disc_weight", [1.0, 0.25])
def test_jsnet_loss_total(rng, disc_weight):
    embeddings, instance_labels = instance_batch(rng, [2, 1, 6])
    logits, semantic_labels = semantic_batch(rng, 3, embeddings.shape[1])
    out = losses.jsnet_loss(logits, embeddings, semantic_labels, instance_labels, disc_weight=disc_weight)
    assert set(out) == {"total", "sem", "disc", "var", "dist"}
    disc, l_var, l_dist = ref.discriminative_loss(embeddings, instance_labels)
    sem = ref.semantic_loss(logits, semantic_labels)
    expected = [sem + disc_weight * disc, sem, disc_weight * disc, disc_weight * l_var, disc_weight * l_dist]
    assert_losses([out[k] for k in ("total", "sem", "disc", "var", "dist")], expected, np.float64)
    assert float(out["total"]) == float(out["sem"] + out["disc"])
    np.testing.assert_allclose(float(out["disc"]), float(out["var"] + out["dist"]), rtol=1e-15)


# ---------------------------------------------------------------------------------------- gradients


def test_gradients_finite(rng):
    """Including the non-differentiable points of |.|: a one-point instance (embedding == mean),
    two instances with the same mean, and a block with one instance."""
    embeddings, instance_labels = instance_batch(rng, [3, 1, 5])
    embeddings[0, :, :] = rng.normal(0.0, 1.0, EMBED)  # block 0: every point and every mean coincide
    instance_labels[2, :] = 9
    instance_labels[2, 0] = 4  # block 2: a one-point instance
    embeddings = tf.constant(embeddings, tf.float32)
    logits = tf.constant(semantic_batch(rng, 3, embeddings.shape[1])[0], tf.float32)
    semantic_labels = rng.integers(0, CLASSES, (3, embeddings.shape[1]))
    with tf.GradientTape() as tape:
        tape.watch([embeddings, logits])
        total = losses.jsnet_loss(logits, embeddings, semantic_labels, instance_labels)["total"]
    for grad in tape.gradient(total, [embeddings, logits]):
        assert grad is not None
        assert np.isfinite(grad.numpy()).all()
        assert np.abs(grad.numpy()).sum() > 0


def test_gradient_matches_finite_differences_of_the_reference(rng):
    embeddings, labels = instance_batch(rng, [3, 4], points=8)
    with tf.GradientTape() as tape:
        e = tf.constant(embeddings)
        tape.watch(e)
        disc = losses.discriminative_loss(e, labels)[0]
    gradient = tape.gradient(disc, e).numpy()
    h = 1e-6
    numerical = np.zeros_like(embeddings)
    for index in np.ndindex(embeddings.shape):
        step = np.zeros_like(embeddings)
        step[index] = h
        up, down = (ref.discriminative_loss(embeddings + sign * step, labels)[0] for sign in (1, -1))
        numerical[index] = (up - down) / (2 * h)
    np.testing.assert_allclose(gradient, numerical, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------- graphs, XLA, distribution


def test_tf_function_with_unknown_batch_and_points(rng):
    fn = tf.function(
        lambda logits, embeddings, sem, ins: losses.jsnet_loss(logits, embeddings, sem, ins),
        input_signature=[
            tf.TensorSpec([None, None, CLASSES], tf.float32),
            tf.TensorSpec([None, None, EMBED], tf.float32),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None], tf.int64),
        ],
    )
    for counts, points in (([2, 5], 30), ([1, 3, 8, 4], 17)):
        embeddings, instance_labels = instance_batch(rng, counts, points=points)
        logits, semantic_labels = semantic_batch(rng, len(counts), points)
        embeddings, logits = embeddings.astype(np.float32), logits.astype(np.float32)
        semantic_labels = semantic_labels.astype(np.int32)
        out = fn(logits, embeddings, semantic_labels, instance_labels)
        disc, l_var, l_dist = ref.discriminative_loss(embeddings, instance_labels)
        sem = ref.semantic_loss(logits, semantic_labels)
        expected = [sem + disc, sem, disc, l_var, l_dist]
        assert_losses([out[k] for k in ("total", "sem", "disc", "var", "dist")], expected, np.float32)


def test_xla_with_max_instances(rng):
    embeddings, labels = instance_batch(rng, [1, 6, 3])
    expected = ref.discriminative_loss(embeddings, labels)
    embeddings = tf.constant(embeddings)

    def loss_and_gradient(e, l, **kwargs):
        with tf.GradientTape() as tape:
            tape.watch(e)
            values = losses.discriminative_loss(e, l, **kwargs)
        return values, tape.gradient(values[0], e)

    xla = tf.function(lambda e, l: loss_and_gradient(e, l, max_instances=8), jit_compile=True)
    values, gradient = xla(embeddings, tf.constant(labels))
    assert_losses(values, expected, np.float64)
    # Outside XLA, with or without max_instances: the same losses and gradients.
    for kwargs in ({}, {"max_instances": 6}):
        other_values, other_gradient = loss_and_gradient(embeddings, labels, **kwargs)
        assert_losses(other_values, expected, np.float64)
        np.testing.assert_allclose(gradient, other_gradient, rtol=1e-10, atol=1e-12)


def test_xla_without_max_instances_says_what_to_do(rng):
    embeddings, labels = instance_batch(rng, [2, 3])
    fn = tf.function(lambda e, l: losses.discriminative_loss(e, l), jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_instances"):
        fn(tf.constant(embeddings), tf.constant(labels))


def test_too_many_instances(rng):
    """Asserted outside XLA; NaN under XLA (which drops assertions), never a silently wrong value."""
    embeddings, labels = instance_batch(rng, [2, 5])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"more instances than max_instances \(4\)"):
        losses.discriminative_loss(embeddings, labels, max_instances=4)
    fn = tf.function(lambda e, l: losses.discriminative_loss(e, l, max_instances=4), jit_compile=True)
    assert all(np.isnan(float(x)) for x in fn(tf.constant(embeddings), tf.constant(labels)))


def test_under_tf_distribute(rng):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    embeddings, labels = instance_batch(rng, [2, 4])

    @tf.function
    def step(e, l):
        return strategy.run(lambda e, l: losses.discriminative_loss(e, l)[0], args=(e, l))

    with strategy.scope():
        value = step(tf.constant(embeddings), tf.constant(labels))
    np.testing.assert_allclose(float(value), ref.discriminative_loss(embeddings, labels)[0], rtol=1e-10)


# ---------------------------------------------------------------------------------------- bad input

E2 = np.zeros((2, 6, EMBED), np.float32)
L2 = np.zeros((2, 6), np.int32)
LOGITS = np.zeros((2, 6, CLASSES), np.float32)

BAD = [
    ("embeddings rank", losses.discriminative_loss, (E2[0], L2), r"embeddings must have shape \(batch, points, embed"),
    ("labels rank", losses.discriminative_loss, (E2, L2[..., None]), r"instance_labels must have shape \(batch, po"),
    ("batch", losses.discriminative_loss, (E2, L2[:1]), r"batch sizes .*embeddings.*instance_labels"),
    ("points", losses.discriminative_loss, (E2, L2[:, :5]), r"numbers of points .*embeddings.*instance_labels"),
    ("no points", losses.discriminative_loss, (E2[:, :0], L2[:, :0]), r"embeddings has no points"),
    ("logits rank", losses.semantic_loss, (LOGITS[0], L2), r"logits must have shape \(batch, points, classes\)"),
    ("sem batch", losses.semantic_loss, (LOGITS, L2[:1]), r"batch sizes .*logits.*labels"),
    ("sem points", losses.semantic_loss, (LOGITS, L2[:, :4]), r"numbers of points .*logits.*labels"),
    ("sem class", losses.semantic_loss, (LOGITS, L2 + CLASSES), r"labels holds a class outside \[0, C\)"),
    ("sem negative", losses.semantic_loss, (LOGITS, L2 - 1), r"labels holds a class outside \[0, C\)"),
    ("jsnet points", losses.jsnet_loss, (LOGITS[:, :5], E2, L2[:, :5], L2), r"jsnet_loss: numbers of points .*logits"),
]


@pytest.mark.parametrize("name,fn,args,pattern", BAD, ids=[c[0] for c in BAD])
def test_bad_input(name, fn, args, pattern):
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        fn(*args)


@pytest.mark.parametrize("name,fn,args,pattern", BAD, ids=[c[0] for c in BAD])
def test_bad_input_in_tf_function_with_unknown_shapes(name, fn, args, pattern):
    graph_fn = tf.function(fn, input_signature=[tf.TensorSpec(None, tf.as_dtype(a.dtype)) for a in args])
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        graph_fn(*args)


@pytest.mark.parametrize(
    "args,pattern",
    [
        ((L2, L2), r"embeddings must be a floating-point tensor"),
        ((E2, E2[..., 0]), r"instance_labels must be an int32 or int64"),
    ],
)
def test_bad_dtypes(args, pattern):
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        losses.discriminative_loss(*args)


# --------------------------------------------------------------------------- ignored points (ScanNet)


def _reference_with_ignored(logits, embeddings, semantic, instance, ignore=-1):
    """The float64 NumPy loss of the points that are not ignored: cross entropy over the labelled
    points, the discriminative loss over the points with an instance (a block without any: 0)."""
    logits, semantic = np.asarray(logits, np.float64), np.asarray(semantic)
    labelled = semantic != ignore
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    ce = -np.take_along_axis(log_p, np.where(labelled, semantic, 0)[..., None], axis=-1)[..., 0]
    sem = ce[labelled].mean() if labelled.any() else 0.0
    pulls, pushes = [], []
    for e, l in zip(embeddings, instance):
        kept = l != ignore
        pull, push = ref.block_losses(e[kept], l[kept]) if kept.any() else (0.0, 0.0)
        pulls.append(pull)
        pushes.append(push)
    return sem, float(np.mean(pulls)), float(np.mean(pushes))


def test_ignored_points_leave_both_losses():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(3, 40, 5))
    embeddings = rng.normal(size=(3, 40, 4))
    semantic = rng.integers(0, 5, (3, 40))
    instance = rng.integers(0, 4, (3, 40))
    ignored = rng.random((3, 40)) < 0.3
    semantic[ignored] = -1
    instance[ignored | (rng.random((3, 40)) < 0.2)] = -1  # also points of classes without instances
    semantic[2], instance[2] = -1, -1  # a block of only ignored points
    result = losses.jsnet_loss(logits, embeddings, semantic, instance, ignore_label=-1)
    sem, var, dist = _reference_with_ignored(logits, embeddings, semantic, instance)
    np.testing.assert_allclose([float(result["sem"]), float(result["var"]), float(result["dist"])], [sem, var, dist],
                               rtol=1e-10)
    assert float(result["total"]) == pytest.approx(sem + var + dist, rel=1e-10)


def test_a_block_of_only_ignored_points_gives_zero_loss_and_finite_gradients():
    embeddings = tf.Variable(np.random.default_rng(1).normal(size=(1, 16, 5)).astype(np.float32))
    logits = tf.Variable(np.random.default_rng(2).normal(size=(1, 16, 3)).astype(np.float32))
    labels = -np.ones((1, 16), np.int32)
    with tf.GradientTape() as tape:
        result = losses.jsnet_loss(logits, embeddings, labels, labels, ignore_label=-1)
    assert {k: float(v) for k, v in result.items()} == {"total": 0.0, "sem": 0.0, "disc": 0.0, "var": 0.0, "dist": 0.0}
    for gradient in tape.gradient(result["total"], [logits, embeddings]):
        assert np.isfinite(gradient.numpy()).all() and not gradient.numpy().any()


def test_without_ignored_points_the_ignore_label_changes_nothing():
    rng = np.random.default_rng(3)
    logits, embeddings = rng.normal(size=(2, 30, 4)), rng.normal(size=(2, 30, 5))
    semantic, instance = rng.integers(0, 4, (2, 30)), rng.integers(0, 3, (2, 30))
    plain = losses.jsnet_loss(logits, embeddings, semantic, instance)
    ignoring = losses.jsnet_loss(logits, embeddings, semantic, instance, ignore_label=-1)
    for key in plain:
        assert float(ignoring[key]) == pytest.approx(float(plain[key]), rel=1e-12)
