"""The original JSNet rebuilt as a TF1 graph, to prove the checkpoint converter and the training
step without the original files.

Written from the original's description (reference page, "Network" and "Details of the original
graph"), independently of our Keras layers: `tf.compat.v1` variable scopes and `get_variable`
reproduce the original checkpoint names, plain TensorFlow ops its math in inference and in
training mode. Batch norm keeps its moving statistics the original way, as
`ExponentialMovingAverage` shadows of the `moments` tensors, which is where names like
`S/bn/S/bn/moments/Squeeze/ExponentialMovingAverage` come from; in training mode it normalises
with `tf.nn.moments` and `tf.nn.batch_normalization`, as tf_util does. `original_loss` is the
original's loss (utils/loss.py), written anew.

The variables are float32, as in the original checkpoint, but the arithmetic is float64 (unless
`Mode` says float32), so the outputs are the exact result that a float32 implementation (the
original's or ours) approximates. Only index selection uses our point ops (farthest point
sampling, ball query, 3-NN; tested on their own); kNN is an exact float64 KD-tree, as in the
original; gathering, interpolation and the kernel density are plain TensorFlow here.

`write_checkpoint` fills the graph with random weights and random BN statistics, adds the Adam
slots, `beta1_power`, `beta2_power` and the step `batch` of a training checkpoint, saves it with
`tf.compat.v1.train.Saver` and returns the graph's inference outputs. `training_pass` restores
such a checkpoint and runs one training-mode step: outputs, loss terms, updated moving statistics
and the gradient of every trainable variable.
"""

import math

import numpy as np
import tensorflow as tf
from sklearn.neighbors import KDTree
from tensorflow.core.protobuf import rewriter_config_pb2

from jsnet_tf import ops

v1 = tf.compat.v1

EPSILON = 1e-3
DENSITY_SLOTS = 128
PI = 3.1415926  # the original's constant
MEAN_SUFFIX = "moments/Squeeze/ExponentialMovingAverage"
VARIANCE_SUFFIX = "moments/Squeeze_1/ExponentialMovingAverage"
ENCODER_MLPS = ([32, 32, 64], [64, 64, 128], [128, 128, 256], [256, 256, 512])
ENCODER_RADII = (0.1, 0.2, 0.4, 0.8)
DECODER_MLPS = ([512, 512], [256, 256], [256, 128])
FP_MLP = [128, 128, 128]
DELTA_V, DELTA_D = 0.5, 1.5  # the discriminative loss's margins (get_loss)


# ----------------------------------------------------------------------------- building blocks


class Mode:
    """The graph's run-time switches, and what its batch norms report.

    * `training` (a bool tensor, default false): every batch norm normalises with the moments of
      the batch (`tf.nn.moments`: two-pass, biased variance, in the compute dtype), as the
      original does in training, and `updates` lists each moving statistic beside its value after
      this pass, `m - (1 - decay) * (m - batch moment)` (the original's `ExponentialMovingAverage`
      update; computed, not assigned).
    * `calibrate` (a bool tensor, default false; only with an `rng`): the fixture's one addition
      to the original graph. Every batch norm normalises with its batch moments perturbed by fixed
      random factors (mean + 0.2 std * N(0, 1), variance * U(0.5, 2)) and lists them in `targets`
      next to its moving statistics. One run in this mode gives moving statistics that are random
      yet keep each layer in a trained network's range, given the layers before it.

    `dtype` is the arithmetic's: float64 gives the exact result that a float32 implementation
    approximates, float32 the original's own rounding (the variables are float32 either way).
    The statistics are chosen with `tf.where` where the original has `tf.cond`: the same values
    and gradients, and a graph that builds in two thirds of the time.
    """

    def __init__(self, dtype=tf.float64, decay=0.9, rng=None):
        self.dtype, self.decay, self.rng = dtype, decay, rng
        self.training = v1.placeholder_with_default(False, [], name="training")
        self.calibrate = v1.placeholder_with_default(False, [], name="calibrate") if rng is not None else None
        self.targets = []  # (moving statistic variable, its calibrated value as a tensor)
        self.updates = []  # (moving statistic variable, its value after a training-mode pass)

    def cast(self, x):
        return tf.cast(x, self.dtype)

    def perturb(self, mean, variance):
        shift = self.rng.normal(0.0, 0.2, mean.shape).astype(np.float32)
        scale = self.rng.uniform(0.5, 2.0, variance.shape).astype(np.float32)
        return mean + shift * tf.sqrt(variance), variance * scale


def _batch_norm(x, moment_axes, mode):
    """tf_util's batch norm; the moving statistics are EMA shadows of the `moments` tensors,
    float32 variables as in the original."""
    with v1.variable_scope("bn"):
        channels = x.shape[-1]
        beta = v1.get_variable("beta", initializer=tf.zeros([channels]))
        gamma = v1.get_variable("gamma", initializer=tf.ones([channels]))
        mean, variance = tf.nn.moments(tf.cast(x, tf.float32), moment_axes, name="moments")
        averages = v1.train.ExponentialMovingAverage(decay=0.9)
        averages.apply([mean, variance])  # creates the shadow variables (the update op is never run)
        moving = averages.average(mean), averages.average(variance)
        batch = tf.nn.moments(x, moment_axes, name="batch_moments")
        mode.updates.extend((m, mode.cast(m) - (1.0 - mode.decay) * (mode.cast(m) - b)) for m, b in zip(moving, batch))
        statistics = [tf.where(mode.training, b, mode.cast(m)) for b, m in zip(batch, moving)]
        if mode.calibrate is not None:
            calibrated = mode.perturb(mean, variance)
            mode.targets.extend(zip(moving, calibrated))
            statistics = [tf.where(mode.calibrate, mode.cast(c), s) for c, s in zip(calibrated, statistics)]
        mean, variance = statistics
        return tf.nn.batch_normalization(x, mean, variance, mode.cast(beta), mode.cast(gamma), EPSILON)


def _conv(x, units, scope, mode, kernel_width=1, bn=True, activation=tf.nn.relu):
    """tf_util.conv2d (4-D input, [1, kernel_width] kernel) or conv1d (3-D input), VALID."""
    with v1.variable_scope(scope):
        if x.shape.rank == 4:
            shape = [1, kernel_width, x.shape[-1], units]
            kernel = v1.get_variable("weights", shape, initializer=v1.glorot_uniform_initializer())
            y = tf.nn.conv2d(x, mode.cast(kernel), [1, 1, 1, 1], "VALID")
        else:
            shape = [1, x.shape[-1], units]
            kernel = v1.get_variable("weights", shape, initializer=v1.glorot_uniform_initializer())
            y = tf.nn.conv1d(x, mode.cast(kernel), 1, "VALID")
        biases = v1.get_variable("biases", [units], initializer=v1.zeros_initializer())
        y = tf.nn.bias_add(y, mode.cast(biases))
        if bn:
            y = _batch_norm(y, list(range(x.shape.rank - 1)), mode)
        return activation(y) if activation is not None else y


def _knn(k, xyz, queries):
    """Indices (B, M, k) of the k nearest xyz points of every query: float64 KD-tree."""

    def search(points, centres):
        return np.stack(
            [KDTree(p.astype(np.float64)).query(c.astype(np.float64), k=k)[1] for p, c in zip(points, centres)]
        ).astype(np.int32)

    idx = tf.numpy_function(search, [xyz, queries], tf.int32)
    return tf.ensure_shape(idx, [xyz.shape[0], queries.shape[1], k])


def _gather(points, idx):
    """points (B, N, ...) at idx (B, ...) of each block: one flat gather (whose gradient graph
    builds several times faster than that of `batch_dims=1`)."""
    batch, count = points.shape[0], points.shape[1]
    offsets = tf.reshape(tf.range(batch) * count, [batch] + [1] * (idx.shape.rank - 1))
    return tf.gather(tf.reshape(points, [batch * count, *points.shape[2:]]), idx + offsets)


def _offsets(xyz, idx, centres, dtype):
    """Grouped xyz minus the centre, in `dtype`: (B, M, K, 3)."""
    return tf.cast(_gather(xyz, idx), dtype) - tf.cast(centres, dtype)[:, :, None, :]


def _interpolate(fine_xyz, coarse_xyz, coarse_points):
    """Inverse squared-distance weighted mean of the 3 nearest coarse points (in their dtype)."""
    _, idx = ops.three_nn(fine_xyz, coarse_xyz)
    squared_distance = tf.reduce_sum(tf.square(_offsets(coarse_xyz, idx, fine_xyz, coarse_points.dtype)), axis=-1)
    inverse = 1.0 / tf.maximum(squared_distance, 1e-10)
    weights = inverse / tf.reduce_sum(inverse, axis=2, keepdims=True)
    return tf.reduce_sum(_gather(coarse_points, idx) * weights[..., None], axis=2)


def _density(xyz, radius, sigma, dtype):
    """Gaussian KDE over each point's ball of 128 slots, padding copies removed: (B, N, 1)."""
    idx, count = ops.query_ball_point(radius, DENSITY_SLOTS, xyz, xyz)
    std = math.sqrt(sigma)
    quadratic = tf.reduce_sum(tf.square(_offsets(xyz, idx, xyz, dtype) / std), axis=-1)
    pdf = tf.exp(-0.5 * quadratic - 3 * math.log(std) - 1.5 * math.log(2 * PI))
    count = tf.cast(count, dtype)[..., None]
    return (tf.reduce_sum(pdf, axis=2, keepdims=True) - pdf[:, :, :1] * (DENSITY_SLOTS - count)) / count


# ----------------------------------------------------------------------------- stages


def _set_abstraction(xyz, features, npoint, radius, nsample, mlp, scope, mode):
    with v1.variable_scope(scope):
        centres = _gather(xyz, ops.farthest_point_sample(npoint, xyz))
        idx, _ = ops.query_ball_point(radius, nsample, xyz, centres)
        x = tf.concat([_offsets(xyz, idx, centres, mode.dtype), _gather(features, idx)], axis=-1)
        for i, width in enumerate(mlp):
            x = _conv(x, width, f"conv{i}", mode)
        return centres, tf.reduce_max(x, axis=2)


def _pointconv_encoding(xyz, features, npoint, radius, sigma, k, mlp, scope, mode):
    with v1.variable_scope(scope):
        centres = xyz if xyz.shape[1] == npoint else _gather(xyz, ops.farthest_point_sample(npoint, xyz))
        idx = _knn(k, xyz, centres)
        grouped_xyz = _offsets(xyz, idx, centres, mode.dtype)
        grouped = tf.concat([grouped_xyz, _gather(features, idx)], axis=-1)
        inverse_density = _gather(1.0 / _density(xyz, radius, sigma, mode.dtype), idx)  # (B, M, K, 1)
        scale = inverse_density / tf.reduce_max(inverse_density, axis=2, keepdims=True)
        for i, width in enumerate(mlp[:-1]):
            grouped = _conv(grouped, width, f"conv{i}", mode)
        with v1.variable_scope("weight_net"):
            weights = _conv(grouped_xyz, 32, "wconv0", mode)
        with v1.variable_scope("density_net"):
            scale = _conv(scale, 16, "nonlinear0", mode)
            scale = _conv(scale, 1, "nonlinear1", mode, bn=False, activation=tf.sigmoid)
        x = tf.matmul(tf.transpose(grouped * scale, [0, 1, 3, 2]), weights)  # (B, M, C, 32)
        x = _conv(x, mlp[-1], "after_conv", mode, kernel_width=x.shape[2])
        return centres, tf.squeeze(x, [2])


def _depthwise_decoding(fine_xyz, coarse_xyz, skip, coarse, k, mlp, scope, mode):
    with v1.variable_scope(scope):
        interpolated = _interpolate(fine_xyz, coarse_xyz, coarse)
        idx = _knn(k, fine_xyz, fine_xyz)
        grouped_xyz = _offsets(fine_xyz, idx, fine_xyz, mode.dtype)
        grouped = tf.concat([grouped_xyz, _gather(interpolated, idx)], axis=-1)
        with v1.variable_scope("decode_weight_net"):
            weights = _conv(grouped_xyz, 32, "wconv0", mode)
            weights = _conv(weights, grouped.shape[-1], "wconv1", mode, bn=False, activation=None)
        with v1.variable_scope("fp_sumpool"):
            pooled = tf.reduce_sum(grouped * weights, axis=2)
            biases = v1.get_variable("biases", [pooled.shape[-1]], initializer=v1.zeros_initializer())
            pooled = tf.nn.bias_add(pooled, mode.cast(biases))
            pooled = tf.nn.relu(_batch_norm(pooled, [0, 1, 2], mode))  # rank 3: one scalar mean and variance
        x = tf.concat([pooled, skip], axis=-1)[:, :, None, :]
        for i, width in enumerate(mlp):
            x = _conv(x, width, f"conv_{i}", mode)
        return tf.squeeze(x, [2])


def _feature_propagation(fine_xyz, coarse_xyz, skip, coarse, mlp, scope, mode):
    with v1.variable_scope(scope):
        x = tf.concat([_interpolate(fine_xyz, coarse_xyz, coarse), skip], axis=-1)[:, :, None, :]
        for i, width in enumerate(mlp):
            x = _conv(x, width, f"conv_{i}", mode)
        return tf.squeeze(x, [2])


def _attention(x):
    return x * tf.sigmoid(tf.reduce_mean(x, axis=-1, keepdims=True))


def jsnet(points, mode, num_classes, npoints, embedding_dim=5, sigma=0.05, radii=ENCODER_RADII):
    """The graph of models/JISS/model.py: points (B, N, 3 + C) -> (logits, embeddings), in
    inference or training mode as `mode` says, without dropout (the identity in inference; compare
    training with a dropout rate of 0). As in the original's `get_model`, the first three channels
    are xyz and the other C the features of layer1 (6 on S3DIS, the 3 of the normal on ShapeNet
    part); `npoints`, `radii` and `sigma` are the encoder's layer table, which the original fixes
    at S3DIS's (the defaults)."""
    l0_xyz, l0 = points[:, :, :3], mode.cast(points[:, :, 3:])
    levels = [(l0_xyz, l0)]
    levels.append(_set_abstraction(l0_xyz, l0, npoints[0], radii[0], 32, ENCODER_MLPS[0], "layer1", mode))
    for i in (1, 2, 3):  # layer2..4: sigma 2, 4, 8 times the unit
        spec = npoints[i], radii[i], 2**i * sigma, 32, ENCODER_MLPS[i]
        levels.append(_pointconv_encoding(*levels[-1], *spec, f"layer{i + 1}", mode))
    (l0_xyz, l0), (l1_xyz, l1), (l2_xyz, l2), (l3_xyz, l3), (l4_xyz, l4) = levels

    heads = {}
    for branch in ("sem", "ins"):
        scope = f"{branch}_fa_layer"
        d3 = _depthwise_decoding(l3_xyz, l4_xyz, l3, l4, 16, DECODER_MLPS[0], scope + "1", mode)
        d2 = _depthwise_decoding(l2_xyz, l3_xyz, l2, d3, 16, DECODER_MLPS[1], scope + "2", mode)
        d1 = _depthwise_decoding(l1_xyz, l2_xyz, l1, d2, 16, DECODER_MLPS[2], scope + "3", mode)
        d0 = _feature_propagation(l0_xyz, l1_xyz, l0, d1, FP_MLP, scope + "4", mode)
        fused = tf.concat([d0, _interpolate(l0_xyz, l1_xyz, d1)], axis=-1) + _interpolate(l0_xyz, l2_xyz, d2)
        heads[branch] = _conv(fused, 128, f"{branch}_fc1", mode)

    semantic, instance = heads["sem"], heads["ins"]
    adapted = instance + _conv(semantic, 128, "sem_cache_1", mode)
    instance = _attention(tf.concat([instance, adapted], axis=-1))
    cache = tf.reduce_mean(_conv(instance, 128, "ins_cache_1", mode), axis=1, keepdims=True)
    semantic = _attention(tf.concat([semantic, semantic + cache], axis=-1))
    output = dict(mode=mode, bn=False, activation=None)
    embeddings = _conv(_conv(instance, 128, "ins_fc2", mode), embedding_dim, "ins_fc5", **output)
    logits = _conv(_conv(semantic, 128, "sem_fc2", mode), num_classes, "sem_fc5", **output)
    return logits, embeddings


# ----------------------------------------------------------------------------- checkpoint


def build_graph(batch_size, num_points, npoints, num_classes, rng, channels=9, radii=ENCODER_RADII, sigma=0.05):
    """The original network with the state of a training checkpoint: Adam slots for the trainable
    variables, `beta1_power`, `beta2_power` and the step `batch`, as the original train.py adds
    them; points of `channels` channels (xyz first: 9 on S3DIS, 6 on ShapeNet part). Returns
    (graph, points placeholder, outputs {logits, embeddings}, mode (float64, with the calibration
    switch))."""
    graph = tf.Graph()
    with graph.as_default():
        points = v1.placeholder(tf.float32, [batch_size, num_points, channels], name="points")
        mode = Mode(rng=rng)
        logits, embeddings = jsnet(points, mode, num_classes, list(npoints), sigma=sigma, radii=radii)
        step = v1.Variable(0, name="batch", trainable=False)
        gradients = [(tf.zeros_like(v), v) for v in v1.trainable_variables()]  # only to create the slots
        v1.train.AdamOptimizer(1e-3).apply_gradients(gradients, global_step=step)
    return graph, points, {"logits": logits, "embeddings": embeddings}, mode


def _random_value(name, shape, rng):
    """A random value for a checkpoint tensor (the moving statistics are calibrated afterwards)."""
    if name.endswith("/gamma"):
        return rng.uniform(0.5, 1.5, shape)
    if name.endswith(("/beta", "/biases")):
        return rng.normal(0.0, 0.1, shape)
    if name.endswith("/weights"):  # Xavier, as the original initialises them
        receptive = int(np.prod(shape[:-2]))
        limit = math.sqrt(6.0 / (receptive * (shape[-2] + shape[-1])))
        return rng.uniform(-limit, limit, shape)
    if name == "batch":
        return rng.integers(1, 10**6)
    return rng.normal(0.0, 0.01, shape)  # optimizer slots and beta powers


def _session(graph):
    """A session without Grappler's graph rewrites, which made the first training-mode run of
    this graph take 17 s instead of 2.4 s (and float64 arithmetic gains nothing from them)."""
    rewrites = rewriter_config_pb2.RewriterConfig(disable_meta_optimizer=True)
    return v1.Session(graph=graph, config=v1.ConfigProto(graph_options=v1.GraphOptions(rewrite_options=rewrites)))


def _load(session, values):
    """Assigns {variable: value} in one run (Variable.load costs a slow run per variable)."""
    feeds, assigns = {}, []
    for variable, value in values.items():
        placeholder = v1.placeholder(variable.dtype.base_dtype, variable.shape)
        feeds[placeholder] = np.asarray(value, placeholder.dtype.as_numpy_dtype)
        assigns.append(variable.assign(placeholder))
    session.run(assigns, feeds)


def block_points(rng, batch_size, num_points):
    """Random block points (B, N, 9): xyz in a 1 m cube centred in x and y, 6 channels in [0, 1]."""
    xyz = rng.uniform([-0.5, -0.5, 0.0], [0.5, 0.5, 1.0], (batch_size, num_points, 3))
    return np.concatenate([xyz, rng.uniform(0, 1, (batch_size, num_points, 6))], axis=-1).astype(np.float32)


def write_checkpoint(prefix, rng, points, npoints=(1024, 256, 64, 32), num_classes=13, radii=ENCODER_RADII, sigma=0.05):
    """Saves the original graph with random values at `prefix` (a training checkpoint, as
    `tf.compat.v1.train.Saver` writes it); returns (logits, embeddings): the graph's
    inference-mode outputs on `points` (B, N, C), whose channel count C the graph takes. Weights, biases, gamma, beta and the training
    state are random, the moving statistics random around the moments of these points
    (`Mode.calibrate`), so the outputs vary from point to point as a trained network's do instead of
    collapsing or blowing up through twenty layers of mismatched statistics."""
    batch_size, num_points, channels = points.shape
    graph, points_pl, outputs, mode = build_graph(batch_size, num_points, npoints, num_classes, rng, channels, radii, sigma)
    with graph.as_default(), _session(graph) as session:
        session.run(v1.global_variables_initializer())
        _load(session, {v: _random_value(v.op.name, v.shape.as_list(), rng) for v in v1.global_variables()})
        targets = [value for _, value in mode.targets]
        statistics = session.run(targets, {points_pl: points, mode.calibrate: True})
        _load(session, {variable: value for (variable, _), value in zip(mode.targets, statistics)})
        v1.train.Saver().save(session, str(prefix))
        logits, embeddings = session.run([outputs["logits"], outputs["embeddings"]], {points_pl: points})
    return logits, embeddings


# ----------------------------------------------------------------------------- training


def _block_discriminative_loss(embeddings, labels):
    """utils/loss.py's loss of one block: (N, E), (N,) -> (pull + push, pull, push); instances by
    `tf.unique_with_counts`, L1 norms, hinges as `clip_by_value(x, 0, x)`, the push term over the
    M * M tiled pairs with the diagonal masked out, and 0 for a single instance."""
    dtype = embeddings.dtype
    instances, index, counts = tf.unique_with_counts(labels)
    count = tf.size(instances)
    counts = tf.cast(counts, dtype)
    means = tf.math.unsorted_segment_sum(embeddings, index, count) / counts[:, None]
    pull = tf.norm(embeddings - tf.gather(means, index), ord=1, axis=1) - DELTA_V
    pull = tf.square(tf.clip_by_value(pull, 0.0, pull))
    pull = tf.reduce_sum(tf.math.unsorted_segment_sum(pull, index, count) / counts) / tf.cast(count, dtype)
    first = tf.reshape(tf.tile(means, [1, count]), [count * count, embeddings.shape[-1]])
    second = tf.tile(means, [count, 1])
    distinct = tf.reshape(tf.equal(tf.eye(count, dtype=dtype), 0.0), [-1])
    push = 2.0 * DELTA_D - tf.norm(tf.boolean_mask(first - second, distinct), ord=1, axis=1)
    push = tf.square(tf.clip_by_value(push, 0.0, push))
    push = tf.cond(tf.equal(count, 1), lambda: tf.zeros([], dtype), lambda: tf.reduce_mean(push))
    return pull + push, pull, push


def original_loss(logits, embeddings, semantic_labels, instance_labels, disc_weight=1.0):
    """The original training loss (models/JISS/model.py `get_loss`, utils/loss.py), in the dtype
    of its inputs: TF1's sparse softmax cross entropy (mean over the points, weights 1) plus the
    discriminative loss averaged over the blocks (a Python loop over the static batch where the
    original has a `tf.while_loop`: the same arithmetic). Returns the five terms of
    `jsnet_tf.losses.jsnet_loss`: total, sem, disc, var, dist."""
    sem = v1.losses.sparse_softmax_cross_entropy(labels=semantic_labels, logits=logits)
    blocks = [
        _block_discriminative_loss(e, l) for e, l in zip(tf.unstack(embeddings), tf.unstack(instance_labels))
    ]
    disc, var, dist = (tf.reduce_mean(tf.stack(terms)) * disc_weight for terms in zip(*blocks))
    return {"total": sem + disc, "sem": sem, "disc": disc, "var": var, "dist": dist}


def training_pass(
    prefix, points, semantic_labels, instance_labels, npoints, num_classes=13, decay=0.9, dtype=tf.float64
):
    """One training-mode pass of the original graph with the weights of the checkpoint at `prefix`
    (as `write_checkpoint` saves it): batch-norm batch moments, `original_loss` on labels (B, N),
    gradients of its total, arithmetic in `dtype`. Returns a dict of NumPy values keyed by the
    checkpoint's names: `outputs` {logits, embeddings}, `losses` (the five terms), `moving` {moving
    statistic: its value after this pass's update with `decay`} and `gradients` {trainable
    variable: d total / d variable}."""
    graph = tf.Graph()
    with graph.as_default():
        points_pl = v1.placeholder(tf.float32, points.shape, name="points")
        mode = Mode(dtype=dtype, decay=decay)
        logits, embeddings = jsnet(points_pl, mode, num_classes, list(npoints))
        losses = original_loss(logits, embeddings, semantic_labels, instance_labels)
        trainable = v1.trainable_variables()
        gradients = tf.gradients(losses["total"], trainable)
        fetches = {
            "outputs": {"logits": logits, "embeddings": embeddings},
            "losses": losses,
            "moving": {variable.op.name: value for variable, value in mode.updates},
            "gradients": {variable.op.name: gradient for variable, gradient in zip(trainable, gradients)},
        }
        with _session(graph) as session:
            v1.train.Saver(v1.global_variables()).restore(session, str(prefix))
            return session.run(fetches, {points_pl: points, mode.training: True})
