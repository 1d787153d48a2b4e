"""The JSNet training loss: semantic cross entropy plus the discriminative instance loss.

Shapes: B blocks of N points; ``logits`` (B, N, C) and ``semantic_labels`` (B, N) in [0, C);
``embeddings`` (B, N, E) and ``instance_labels`` (B, N), arbitrary integers (any values, not
necessarily contiguous: the points of a block that share an id form one instance of that block;
the same id in two blocks means two unrelated instances).

For one block with M instances, instance m holding the N_m embeddings e_n with mean mu_m, the
paper's formulas (3) and (4) (L1 distances, [x]_+ = max(0, x)):

    (3) L_pull = 1/M * sum_m 1/N_m * sum_{n in m} [ ||mu_m - e_n||_1 - delta_v ]_+^2
    (4) L_push = 1/(M (M - 1)) * sum_{i != j} [ 2 delta_d - ||mu_i - mu_j||_1 ]_+^2,
        and L_push = 0 for a block with a single instance,

with delta_v = 0.5 and delta_d = 1.5. The discriminative loss of the block is
param_var * L_pull + param_dist * L_push (both weights 1), and the batch's is the mean over its
blocks, as are the reported pull (``var``) and push (``dist``) components. The semantic loss is the
sparse softmax cross entropy averaged over all B * N points, and

    total = sem + disc_weight * disc.

Everything is vectorised over the batch, without a loop over blocks: the ids of each block are
renumbered 0..M_b - 1 (so every instance of every block has its own segment), the instance means
and the pull term come from segment sums over all points of the batch at once, and the push term
from a padded (B, K, K) layout of the instance means, K being the largest number of instances of a
block in the batch. Plain TensorFlow ops only: it runs eagerly, in tf.function with unknown batch
and point counts, and per replica under tf.distribute; its gradients are finite everywhere
(the derivative of |x| at 0 is taken as 0).

XLA (``jit_compile=True``): neither tf.unique (which renumbers the ids by default) nor the
data-dependent size K compiles. Pass a static ``max_instances``: the ids are then renumbered with a
sort per block and K is max_instances, which XLA compiles (the result is the same). A block with
more instances than max_instances fails a run-time assertion outside XLA and, since XLA drops
assertions, turns the losses into NaN under XLA rather than into a silently wrong value. Without
max_instances, tracing the loss under XLA raises an InvalidArgumentError that says so; the
alternative is to keep the loss out of XLA (e.g. Keras' ``compile(jit_compile=False)``).
"""

import tensorflow as tf

from jsnet_tf.ops import checks

__all__ = ["discriminative_loss", "jsnet_loss", "semantic_loss"]

DELTA_V = 0.5
DELTA_D = 1.5


# ------------------------------------------------------------------------------------ input checks


def _float_tensor(op, name, x):
    """x as a float32 / float64 tensor (half precision is promoted to float32)."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise checks.invalid(op, f"{name} must be a floating-point tensor, got {x.dtype.name}")
    return x if x.dtype in (tf.float32, tf.float64) else tf.cast(x, tf.float32)


def _int_tensor(op, name, x):
    x = tf.convert_to_tensor(x)
    if x.dtype not in (tf.int32, tf.int64):
        raise checks.invalid(op, f"{name} must be an int32 or int64 tensor, got {x.dtype.name}")
    return x


def _shaped(op, name, x, rank, layout):
    """x of rank `rank`: checked statically when its rank is known, else asserted at run time."""
    checks.check_rank(op, name, x, rank, layout)
    return checks.ensure_shape(op, name, x, [None] * rank, layout)


def _same_points(op, a_name, a, b_name, b):
    """a and b agree on their first two dimensions (batch, points).

    Returns the run-time assertions needed when the static shapes cannot prove it (raises at once
    when they prove a mismatch)."""
    assertions = []
    for axis, what in ((0, "batch sizes"), (1, "numbers of points")):
        da, db = a.shape[axis], b.shape[axis]
        if da is not None and db is not None:
            if da != db:
                raise checks.invalid(op, f"{what} differ: {a_name} {a.shape} vs {b_name} {b.shape}")
        else:
            assertions.append(
                tf.debugging.assert_equal(
                    tf.shape(a)[axis], tf.shape(b)[axis], message=f"{op}: {what} of {a_name} and {b_name} differ"
                )
            )
    return assertions


def _some_points(op, name, x):
    """A block without points has no instance and no loss: refuse N == 0."""
    if x.shape[1] is not None:
        if x.shape[1] == 0:
            raise checks.invalid(op, f"{name} has no points (N = 0), got {x.shape}")
        return []
    return [tf.debugging.assert_positive(tf.shape(x)[1], message=f"{op}: {name} has no points (N = 0)")]


def _in_xla_context():
    """Whether ops are being traced for XLA (a jit_compile tf.function, e.g. Keras' jit_compile)."""
    try:
        from tensorflow.python.ops import control_flow_util  # private, hence the fallback
    except ImportError:  # pragma: no cover
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


# ------------------------------------------------------------------------------------------ losses


def _instance_ids_unique(instance_labels):
    """Renumbers the instance ids of every block 0..M_b - 1 in order of first appearance.

    instance_labels: (B, N) int32 / int64, arbitrary values, N >= 1. Returns ``ids`` (B, N) int32,
    the index of each point's instance within its block, and ``num_instances`` (B,) int32, M_b.
    Two hash-based tf.unique over the whole batch: fast, but not compilable by XLA.
    """
    shape = tf.shape(instance_labels)
    batch, points = shape[0], shape[1]
    _, label_index = tf.unique(tf.reshape(instance_labels, [-1]))  # (B*N,) in [0, U)
    block = tf.repeat(tf.range(batch), points)  # (B*N,)
    key = tf.cast(block, tf.int64) * tf.cast(tf.reduce_max(label_index) + 1, tf.int64) + tf.cast(label_index, tf.int64)
    _, instance = tf.unique(key)  # one index per (block, id), numbered in order of first appearance
    # The points are scanned block by block, so the instances of block b hold consecutive indices.
    first = tf.math.unsorted_segment_min(instance, block, batch)
    num_instances = tf.math.unsorted_segment_max(instance, block, batch) - first + 1
    return tf.reshape(instance - tf.gather(first, block), shape), num_instances


def _instance_ids_sorted(instance_labels):
    """As `_instance_ids_unique`, numbering the instances of a block in increasing order of their
    ids, with a sort per block (slower than tf.unique on CPU, but compilable by XLA)."""
    shape = tf.shape(instance_labels)
    batch, points = shape[0], shape[1]
    order = tf.argsort(instance_labels, axis=1)  # (B, N)
    sorted_labels = tf.gather(instance_labels, order, batch_dims=1)
    first = tf.concat([tf.ones([batch, 1], tf.bool), sorted_labels[:, 1:] != sorted_labels[:, :-1]], axis=1)
    sorted_ids = tf.cumsum(tf.cast(first, tf.int32), axis=1) - 1  # dense ids in sorted order
    # Back to the points' order: point order[b, k] gets sorted_ids[b, k].
    flat_positions = tf.reshape(order + points * tf.range(batch)[:, None], [-1, 1])
    ids = tf.reshape(tf.scatter_nd(flat_positions, tf.reshape(sorted_ids, [-1]), [batch * points]), shape)
    return ids, sorted_ids[:, -1] + 1


def discriminative_loss(
    embeddings,
    instance_labels,
    delta_v=DELTA_V,
    delta_d=DELTA_D,
    param_var=1.0,
    param_dist=1.0,
    max_instances=None,
    ignore_label=None,
):
    """The discriminative loss of JSNet, formulas (3) (pull) and (4) (push), mean over the blocks.

    Args:
      embeddings: (B, N, E) float, the instance embedding of every point.
      instance_labels: (B, N) int32 / int64, the instance id of every point: any integers; the
        points of a block that share an id form one instance (the same id in two blocks denotes
        two instances).
      delta_v: the pull margin: an embedding closer than delta_v (L1) to its instance's mean is not
        pulled.
      delta_d: the push margin: two instance means further apart than 2 * delta_d (L1) are not
        pushed.
      param_var, param_dist: the weights of the pull and push terms.
      max_instances: None (default), or a Python int bounding the number of instances of any
        block: required under XLA, slower elsewhere (see the module docstring).
      ignore_label: None (default: every id is an instance), or the id of points that belong to no
        instance (ScanNet's unannotated points and classes without instances: -1). Such points
        are left out; M counts the block's other instances, and a block without any has no loss.

    Returns:
      (disc, l_var, l_dist), float scalars (float64 for float64 embeddings, else float32):
      l_var = param_var * mean over blocks of L_pull, l_dist = param_dist * mean over blocks of
      L_push (0 for a block with one instance), disc = l_var + l_dist.
    """
    op = "discriminative_loss"
    embeddings = _shaped(op, "embeddings", _float_tensor(op, "embeddings", embeddings), 3, "(batch, points, embedding)")
    labels = _shaped(op, "instance_labels", _int_tensor(op, "instance_labels", instance_labels), 2, "(batch, points)")
    assertions = _same_points(op, "embeddings", embeddings, "instance_labels", labels)
    assertions += _some_points(op, "embeddings", embeddings)
    if max_instances is not None:
        max_instances = checks.check_positive_int(op, "max_instances", max_instances)
    elif _in_xla_context():
        raise checks.invalid(
            op,
            "the number of instances per block is data-dependent, which XLA cannot compile: pass a static "
            "max_instances (an upper bound on the instances of a block) or run the loss without jit_compile",
        )
    embeddings, labels = checks.after(assertions, embeddings, labels)
    dtype = embeddings.dtype

    batch = tf.shape(labels)[0]
    if max_instances is None:
        ids, num_instances = _instance_ids_unique(labels)  # (B, N), (B,)
        width = tf.reduce_max(num_instances)
        overflow = None
    else:
        ids, num_instances = _instance_ids_sorted(labels)
        width = max_instances
        overflow = tf.reduce_any(num_instances > width)
        (ids,) = checks.after(
            [
                tf.debugging.assert_less_equal(
                    num_instances,
                    width,
                    message=f"{op}: a block has more instances than max_instances ({max_instances})",
                )
            ],
            ids,
        )

    # One segment per (block, instance): segment b * K + m; instances past K (max_instances
    # exceeded) go to the extra segment B * K, which is dropped.
    slots = batch * width
    segments = tf.where(ids < width, ids + width * tf.range(batch)[:, None], slots)
    if ignore_label is not None:  # to the dropped segment
        segments = tf.where(labels == tf.cast(ignore_label, labels.dtype), slots, segments)
    segments = tf.reshape(segments, [-1])
    flat = tf.reshape(embeddings, [batch * tf.shape(ids)[1], -1])  # (B*N, E)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(segments, dtype), segments, slots + 1)[:slots]
    sums = tf.math.unsorted_segment_sum(flat, segments, slots + 1)[:slots]
    means = sums / tf.maximum(counts, 1)[:, None]  # (B*K, E); empty slots: 0

    # (3) pull: mean over instances of the mean over their points of the hinged L1 distance.
    point_means = tf.gather(tf.concat([means, tf.zeros_like(means[:1])], 0), segments)
    pull = tf.square(tf.nn.relu(tf.reduce_sum(tf.abs(flat - point_means), axis=1) - delta_v))  # (B*N,)
    pull = tf.math.unsorted_segment_sum(pull, segments, slots + 1)[:slots] / tf.maximum(counts, 1)
    valid = tf.range(width)[None, :] < num_instances[:, None]  # (B, K): the slots of the instances
    if ignore_label is not None:  # the ignored points' id holds a slot but no point: not an instance
        valid = tf.logical_and(valid, tf.reshape(counts > 0, [batch, width]))
        num_instances = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
    m = tf.cast(num_instances, dtype)  # M_b (>= 1 unless every point is ignored)
    l_var = tf.reduce_sum(tf.reshape(pull, [batch, width]), axis=1) / tf.maximum(m, 1)  # (B,)

    # (4) push: mean over ordered pairs of distinct instances of the hinged L1 distance of means.
    means = tf.reshape(means, [batch, width, -1])  # (B, K, E)
    distances = tf.reduce_sum(tf.abs(means[:, :, None, :] - means[:, None, :, :]), axis=-1)  # (B, K, K)
    push = tf.square(tf.nn.relu(2.0 * delta_d - distances))
    pairs = tf.logical_and(valid[:, :, None], valid[:, None, :])
    pairs = tf.logical_and(pairs, tf.logical_not(tf.eye(width, dtype=tf.bool))[None])
    push = tf.reduce_sum(push * tf.cast(pairs, dtype), axis=[1, 2])
    num_pairs = m * (m - 1)
    l_dist = tf.where(num_pairs > 0, push / tf.maximum(num_pairs, 1), tf.zeros_like(push))  # (B,)

    l_var = param_var * tf.reduce_mean(l_var)
    l_dist = param_dist * tf.reduce_mean(l_dist)
    disc = l_var + l_dist
    if overflow is not None:
        nan = tf.constant(float("nan"), dtype)
        disc, l_var, l_dist = (tf.where(overflow, nan, x) for x in (disc, l_var, l_dist))
    return disc, l_var, l_dist


def semantic_loss(logits, labels, weights=None):
    """Sparse softmax cross entropy of logits (B, N, C) against labels (B, N) in [0, C).

    Without weights: the mean over all B * N points. With weights (broadcastable to (B, N)), as
    TF1's tf.losses.sparse_softmax_cross_entropy: sum(weights * loss) / (number of nonzero
    weights), 0 when every weight is 0. Returns a float scalar (float64 for float64 logits).
    """
    op = "semantic_loss"
    logits = _shaped(op, "logits", _float_tensor(op, "logits", logits), 3, "(batch, points, classes)")
    labels = _shaped(op, "labels", _int_tensor(op, "labels", labels), 2, "(batch, points)")
    assertions = _same_points(op, "logits", logits, "labels", labels)
    message = f"{op}: labels holds a class outside [0, C) of logits"
    assertions += [
        tf.debugging.assert_non_negative(labels, message=message),
        tf.debugging.assert_less(labels, tf.cast(tf.shape(logits)[2], labels.dtype), message=message),
    ]
    logits, labels = checks.after(assertions, logits, labels)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)  # (B, N)
    if weights is None:
        return tf.reduce_mean(losses)
    weights = tf.broadcast_to(tf.cast(weights, losses.dtype), tf.shape(losses))
    nonzero = tf.reduce_sum(tf.cast(tf.not_equal(weights, 0), losses.dtype))
    return tf.math.divide_no_nan(tf.reduce_sum(weights * losses), nonzero)


def jsnet_loss(
    logits,
    embeddings,
    semantic_labels,
    instance_labels,
    disc_weight=1.0,
    weights=None,
    delta_v=DELTA_V,
    delta_d=DELTA_D,
    param_var=1.0,
    param_dist=1.0,
    max_instances=None,
    ignore_label=None,
):
    """The JSNet loss: total = sem + disc_weight * disc.

    Args:
      logits: (B, N, C) float, the semantic logits.
      embeddings: (B, N, E) float, the instance embeddings.
      semantic_labels: (B, N) int, classes in [0, C).
      instance_labels: (B, N) int, instance ids (any integers, per block).
      disc_weight: the weight of the discriminative loss.
      weights: optional per-point weights of the semantic loss (see `semantic_loss`).
      delta_v, delta_d, param_var, param_dist, max_instances: see `discriminative_loss`.
      ignore_label: None (default), or the label of ignored points (ScanNet's -1) in
        semantic_labels and instance_labels: the semantic loss is the mean over the other points
        (0 when there are none), and the discriminative loss leaves them out.

    Returns:
      dict of float scalars: ``total``, ``sem``, and ``disc``, ``var``, ``dist`` each already
      multiplied by disc_weight (as the original reports them), so total = sem + disc and
      disc = var + dist.
    """
    op = "jsnet_loss"
    logits = _shaped(op, "logits", _float_tensor(op, "logits", logits), 3, "(batch, points, classes)")
    embeddings = _shaped(op, "embeddings", _float_tensor(op, "embeddings", embeddings), 3, "(batch, points, embedding)")
    (logits, embeddings) = checks.after(_same_points(op, "logits", logits, "embeddings", embeddings), logits, embeddings)
    if ignore_label is not None:
        semantic_labels = _int_tensor(op, "semantic_labels", semantic_labels)
        labelled = tf.not_equal(semantic_labels, tf.cast(ignore_label, semantic_labels.dtype))
        weights = tf.cast(labelled, logits.dtype) * (1.0 if weights is None else tf.cast(weights, logits.dtype))
        semantic_labels = tf.where(labelled, semantic_labels, tf.zeros_like(semantic_labels))
    sem = semantic_loss(logits, semantic_labels, weights)
    disc, var, dist = discriminative_loss(
        embeddings, instance_labels, delta_v, delta_d, param_var, param_dist, max_instances=max_instances,
        ignore_label=ignore_label,
    )
    disc, var, dist = (tf.cast(x, sem.dtype) * disc_weight for x in (disc, var, dist))
    return {"total": sem + disc, "sem": sem, "disc": disc, "var": var, "dist": dist}
