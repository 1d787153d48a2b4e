"""The paper's test protocol on whole rooms: blocks -> network -> mean-shift -> BlockMerging.

A room is cut into the sliding-window blocks of the original (1 m, stride 0.5, serpentine
order). By default every point of every block is labelled: a block's points are shuffled and
split into chunks of `num_points` (the last one topped up with repeats of the block's points), so
the network sees blocks sampled like its training blocks while no point is left out; the original
instead labelled one random `num_points` sample per block (`label_all_points=False` keeps that
protocol, rows repeating points, for comparing with its numbers). Per block, the embeddings of its
points are clustered with mean-shift, each cluster takes the most frequent predicted class of its
points, and `RoomMerger` folds the clusters into room instances. Then every room point takes the
instance of its grid cell, the most probable class averaged over the blocks that hold it, and
instances of at most `size_fraction` of their class's mean training size are dropped. Mean sizes
are counted in rows of the training blocks (num_points samples per block, an instance counted in
every block it appears in, as the original's estimate), so an instance's size here is the number
of rows it would have had in the original's sampled test blocks: each point counts
num_points / (points of the block) for every block that holds it.

Every predicted instance gets a class (the most frequent predicted class of its points) and a
confidence (the mean over its points of the probability of that class, averaged over the blocks
that hold the point): `RoomResult.instances`, what the instance AP needs (jsnet_tf.metrics).

Everything is deterministic for a seed. Points in no block of at least `min_block_points` points
take the prediction of the nearest labelled point. Network outputs that no trained network gives
(NaN, inf, or beyond PLAUSIBLE_OUTPUT_LIMIT: an untrained or corrupted model) stop the room with
an EvaluationError before their batch is clustered.

Memory: the network runs in inference batches of `eval.batch_size` rows, and each block is
clustered and merged as soon as its last chunk is through; per point only float32 class-probability
sums and a visit count are accumulated, never the network outputs of the whole room. The working
memory grows with the room's points (about 200-300 bytes a point with the block index lists and
the result arrays), not with its network rows.
"""

import collections
import concurrent.futures
import dataclasses
import itertools

import numpy as np
import tensorflow as tf
from scipy.spatial import cKDTree

from jsnet_tf import metrics
from jsnet_tf.clustering import postprocess
from jsnet_tf.data import s3dis
from jsnet_tf.errors import UserError
from jsnet_tf.timing import null_stage

BLOCK_CHANNELS = s3dis.NUM_CHANNELS  # every point of a room block (s3dis.block_channels): xyz, rgb, normalised xyz


class EvaluationError(UserError, ValueError):
    """Input that the evaluation cannot use (named in the message)."""


# The largest |value| taken for a network output. Trained networks give logits of order 1 to 100
# and embeddings of order 1 (the discriminative loss's margins are 0.5 and 1.5); the tiny test
# network gave 7e3 after two epochs (4 steps) and 5e8 after its first two steps (moving statistics
# still a quarter short). A never-trained one in inference, whose batch norms divide by
# sqrt(0 + epsilon) at every layer, gives NaN, inf or finite values of 1e20 to 1e32; one training
# pass at decay 0.9 (statistics a tenth of the batch's) gave 4e11 to 2e19.
PLAUSIBLE_OUTPUT_LIMIT = 1e15

_UNUSABLE_OUTPUTS_CAUSE = (
    "the usual causes are an untrained model (moving statistics start at 0, as in the original, "
    "and blow up in inference) or corrupted weights; load trained weights"
)


def check_network_outputs(where, **outputs):
    """Raises EvaluationError, one line naming `where`, unless every output array (e.g.
    semantic_logits=..., embeddings=...) is finite and at most PLAUSIBLE_OUTPUT_LIMIT in
    magnitude: labels clustered from such outputs would look plausible and mean nothing."""
    for name, values in outputs.items():
        values = np.asarray(values)
        largest = np.abs(values).max(initial=0)  # NaN where any value is NaN
        if largest <= PLAUSIBLE_OUTPUT_LIMIT:
            continue
        if not np.isfinite(values).all():
            problem = f"the network's outputs are not finite ({name} hold NaN or infinite values)"
        else:
            problem = (f"{name} of up to {largest:.3g} in magnitude are not plausible network outputs (beyond "
                       f"{PLAUSIBLE_OUTPUT_LIMIT:g}; trained networks give logits of order 1 to 100)")
        raise EvaluationError(f"{where}: {problem}; {_UNUSABLE_OUTPUTS_CAUSE}")


def inference_devices():
    """The devices inference runs on: every visible GPU, else the CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in gpus] or ["/CPU:0"]


class BatchedInference:
    """The network in inference mode over `(key, (num_points, channels) row)` rows, in batches of
    `batch_size` rows spread over `devices` (default: every visible GPU, else the CPU), each device
    running its own copy of the weights.

    `outputs(rows)` yields `(key, logits, embeddings, probabilities)` per row, in row order. Up to
    one batch per device plus one more is in flight while the caller works on the rows already
    yielded, so the post-processing of one block overlaps the network's next batches. Outputs
    that no trained network gives raise EvaluationError naming `where` before their batch is
    yielded. Deterministic: a batch's outputs do not depend on the device that ran it (the same
    kernels) or on the order batches finish.

    Args:
      model: a built JSNet (or any callable with input_channels returning semantic_logits and
        embeddings); copied to the other devices with from_config / set_weights.
      num_points, channels: the rows' shape.
      batch_size: rows per network call.
      devices: device names (e.g. ["/GPU:0", "/GPU:1"]); None: `inference_devices()`.
    """

    def __init__(self, model, num_points, channels, batch_size, devices=None):
        self.batch_size = int(batch_size)
        self.devices = list(devices or inference_devices())
        self.models = [model] + [self._replica(model, d, num_points, channels) for d in self.devices[1:]]
        self._functions = [self._compiled(m, d, num_points, channels) for m, d in zip(self.models, self.devices)]

    @staticmethod
    def _replica(model, device, num_points, channels):
        with tf.device(device):
            copy = model.__class__.from_config(model.get_config())
            copy(tf.zeros([1, num_points, channels]), training=False)
        copy.set_weights(model.get_weights())
        return copy

    @staticmethod
    def _compiled(model, device, num_points, channels):
        @tf.function(input_signature=[tf.TensorSpec([None, num_points, channels], tf.float32)])
        def infer(points):
            with tf.device(device):
                out = model(points, training=False)
                logits = out["semantic_logits"]
                return logits, out["embeddings"], tf.nn.softmax(logits)

        def run(data):
            return tuple(t.numpy() for t in infer(tf.constant(data)))

        return run

    def outputs(self, rows, where, progress=None, stage=null_stage):
        """See the class docstring; `progress(n)` after each batch, `stage(name)` a context that
        times the work of the caller's thread ("blocks": making the rows) and of the network."""
        rows = iter(rows)
        in_flight = collections.deque()
        with concurrent.futures.ThreadPoolExecutor(len(self.devices), thread_name_prefix="jsnet-inference") as pool:
            submitted = 0

            def submit():
                nonlocal submitted
                with stage("blocks"):
                    batch = list(itertools.islice(rows, self.batch_size))
                    if not batch:
                        return False
                    keys, data = zip(*batch)
                    data = np.stack(data)
                run = self._functions[submitted % len(self._functions)]
                in_flight.append((keys, pool.submit(self._timed, run, data, stage)))
                submitted += 1
                return True

            try:
                while len(in_flight) <= len(self.devices) and submit():
                    pass
                while in_flight:
                    keys, future = in_flight.popleft()
                    logits, embeddings, probabilities = future.result()
                    check_network_outputs(where, semantic_logits=logits, embeddings=embeddings)
                    submit()
                    if progress is not None:
                        progress(len(keys))
                    yield from zip(keys, logits, embeddings, probabilities)
            finally:
                for _, future in in_flight:
                    future.cancel()

    @staticmethod
    def _timed(run, data, stage):
        with stage("network"):
            return run(data)


@dataclasses.dataclass
class RoomResult:
    """The labels of a room's points (or, with the original's sampling, of its block rows)."""

    name: str
    xyz: np.ndarray  # (M, 3) float32, room coordinates in metres (min corner at the origin)
    rgb: np.ndarray  # (M, 3) uint8
    semantic_pred: np.ndarray  # (M,) int32
    instance_pred: np.ndarray  # (M,) int32, -1 = no instance
    score: np.ndarray  # (M,) float32, probability of the predicted class
    semantic_gt: np.ndarray  # (M,) int32
    instance_gt: np.ndarray  # (M,) int32
    # The predicted instances (metrics.instance_table: class, confidence, rows), ids ascending.
    instance_ids: np.ndarray  # (K,) int64
    instance_classes: np.ndarray  # (K,) int64
    instance_confidences: np.ndarray  # (K,) float64
    instance_points: np.ndarray  # (K,) int64

    @property
    def instances(self) -> metrics.InstanceTable:
        return metrics.InstanceTable(self.instance_ids, self.instance_classes, self.instance_confidences,
                                     self.instance_points)

    def arrays(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class RoomSegmenter:
    """Runs a trained JSNet over rooms and turns its outputs into semantic and instance labels.

    Args:
      model: a built JSNet with trained weights.
      num_points: points per network block (the training blocks' size).
      mean_ins_size: (C,) mean instance size per class of the training set.
      eval_cfg: the `[eval]` section of a config (jsnet_tf.config.DEFAULTS["eval"]).
      block_size: block edge in metres.
      size_in_rows: mean_ins_size counts rows of sampled training blocks (the original's
        estimate; default) and instance sizes are measured likewise; False: both count points.
      devices: where the network runs (BatchedInference; default every visible GPU, else the CPU).
    """

    def __init__(self, model, num_points, mean_ins_size, eval_cfg, block_size=1.0, size_in_rows=True, devices=None):
        self.model = model
        self.size_in_rows = size_in_rows
        self.num_points = int(num_points)
        self.mean_ins_size = np.asarray(mean_ins_size, np.float64)
        self.cfg = dict(eval_cfg)
        self.block_size = float(block_size)
        channels = model.input_channels
        if channels != BLOCK_CHANNELS:
            raise EvaluationError(f"the model takes {channels} channels per point; room blocks have {BLOCK_CHANNELS}")
        if len(self.mean_ins_size) != model.num_classes:
            raise EvaluationError(
                f"mean instance sizes hold {len(self.mean_ins_size)} classes, the model predicts {model.num_classes}"
            )
        _check_settings(self.cfg, self.block_size)
        self.inference = BatchedInference(model, self.num_points, channels, self.cfg["batch_size"], devices)

    # ------------------------------------------------------------------------------ network

    def _network_outputs(self, rows, where, progress, stage):
        """`(key, probabilities, embeddings)` of each `(key, (num_points, 9) block)` row, in order
        (BatchedInference: the next batches run while the caller clusters)."""
        for key, _, embeddings, probabilities in self.inference.outputs(rows, where, progress, stage):
            yield key, probabilities, embeddings

    def new_merger(self):
        """An empty BlockMerging grid of the room, with this segmenter's gap and overlap rules."""
        return postprocess.RoomMerger(self.cfg["gap"], self.cfg["min_overlap"], self.cfg["min_new_points"])

    def _cluster_into(self, merger, normalised_xyz, embeddings, semantic, stage):
        """Mean-shift on one block's embeddings, then BlockMerging into the room."""
        with stage("mean-shift"):
            labels, centres = postprocess.mean_shift(embeddings, self.cfg["bandwidth"])
        with stage("merging"):
            classes = postprocess.cluster_classes(labels, semantic, len(centres))
            merger.merge(normalised_xyz, labels, classes)

    # ------------------------------------------------------------------------------ rooms

    def block_members(self, room):
        """The point indices (ascending) of each test block of at least `min_block_points` points,
        in the blocks' serpentine order (`blocks` without the block positions)."""
        return [members for _, _, members in self.blocks(room)]

    def grid_shape(self, limit):
        """(columns, rows): how many sliding windows cover x and y up to `limit` (a room's max)."""
        size, stride = self.block_size, float(self.cfg["stride"])
        return tuple(max(1, int(np.ceil((float(lim) - size) / stride)) + 1) for lim in np.asarray(limit)[:2])

    def blocks(self, room, grid=None, columns=None, rows=None):
        """`(i, j, members)` of each test block of at least `min_block_points` points, in the
        blocks' serpentine order: the block's corner is (i, j) x eval.stride, `members` its point
        indices, ascending.

        The same blocks as testing every corner of `s3dis.test_block_origins`, but only the block
        columns and rows that hold points are visited (a sorted sweep): a cloud of large, mostly
        empty extent costs no more than a dense one. A tile of a larger cloud (its points in the
        cloud's frame) gives `grid`, the cloud's (columns, rows) (`grid_shape`), and may restrict
        the windows to `columns` and `rows`, half-open index ranges.
        """
        size, stride = self.block_size, float(self.cfg["stride"])
        if stride > size:
            raise EvaluationError(f"eval.stride {stride} is larger than the block size {size}")
        if len(room) == 0:
            return []
        needed = max(1, self.cfg["min_block_points"])
        x = room.xyz[:, 0].astype(np.float64)
        y = room.xyz[:, 1].astype(np.float64)
        num_columns, num_rows = self.grid_shape(room.xyz.max(axis=0)) if grid is None else grid
        by_x = np.argsort(x, kind="stable")
        sorted_x = x[by_x]
        found = []
        for i in _occupied_windows(x, size, stride, num_columns, columns):
            x0 = i * stride
            column = by_x[np.searchsorted(sorted_x, x0, "left") : np.searchsorted(sorted_x, x0 + size, "right")]
            if len(column) < needed:
                continue
            column_y = y[column]
            by_y = np.argsort(column_y, kind="stable")
            sorted_y = column_y[by_y]
            windows = _occupied_windows(column_y, size, stride, num_rows, rows)
            for j in windows if i % 2 == 0 else windows[::-1]:
                y0 = j * stride
                lo, hi = np.searchsorted(sorted_y, y0, "left"), np.searchsorted(sorted_y, y0 + size, "right")
                if hi - lo >= needed:
                    found.append((int(i), int(j), np.sort(column[by_y[lo:hi]])))
        return found

    def segment(self, room, seed=0, progress=None, timer=None):
        """A `RoomResult` for one room (`s3dis.Room`). `progress(n)` is called as blocks finish;
        `timer` (a jsnet_tf.timing.StageTimer) collects the seconds of blocks, network, mean-shift
        and merging."""
        _check_room(room)
        stage = timer.stage if timer is not None else null_stage
        if self.cfg["label_all_points"]:
            return self._segment_every_point(room, seed, progress, stage)
        return self._segment_sampled(room, seed, progress, stage)

    def count_blocks(self, room):
        """How many network blocks `segment` runs for a room (for progress bars)."""
        members = self.block_members(room)
        if not self.cfg["label_all_points"]:
            return len(members)
        return sum(-(-len(m) // self.num_points) for m in members)

    def _nothing_to_label(self, room):
        return EvaluationError(
            f"room {room.name}: no block of {self.block_size} m holds {self.cfg['min_block_points']} points "
            "(eval.min_block_points); nothing to label"
        )

    def _segment_every_point(self, room, seed, progress, stage):
        with stage("blocks"):
            blocks = self.blocks(room)
        if not blocks:
            raise self._nothing_to_label(room)
        limit = s3dis.room_limit(room)
        normalised = _normalised(room, limit)
        mean_p = np.zeros((len(room), self.model.num_classes), np.float32)  # sums until divided below
        visits = np.zeros(len(room), np.int32)
        rows_per_point = np.zeros(len(room), np.float64)
        merger = self.new_merger()
        for _, points, block_p, labels, classes in self.block_outputs(room, blocks, seed, limit, progress, stage):
            with stage("merging"):
                merger.merge(normalised[points], labels, classes)
                mean_p[points] += block_p
                visits[points] += 1
                # The original's rows: a block of m points gave num_points sampled rows.
                rows_per_point[points] += self.num_points / len(points)
        with stage("merging"):
            return self._finish_every_point(room, normalised, merger, mean_p, visits, rows_per_point)

    def block_outputs(self, room, blocks, seed, limit, progress=None, stage=null_stage):
        """Runs `blocks` ((i, j, members) of `blocks`) through the network and mean-shift; yields
        per block, in order, `((i, j, members), points, probabilities, cluster labels, cluster
        classes)`: its points each once (ascending), their class probabilities and clusters.

        A block's points are shuffled by a generator seeded with (seed, i, j), its own: a block
        gets the same rows whichever other blocks run, e.g. in a tile of a larger cloud; `limit`
        divides the normalised channels (`s3dis.room_limit` of the whole cloud)."""

        def rows():  # ((test block, point indices), network input) of every chunk, block by block
            for b, (i, j, indices) in enumerate(blocks):
                rng = np.random.default_rng([int(seed), 1, i, j])
                for chunk in _chunks(indices, self.num_points, rng):
                    yield (b, chunk), s3dis.block_channels(room, chunk, limit, self.block_size)

        outputs = self._network_outputs(rows(), f"room {room.name}", progress, stage)
        for b, block_rows in itertools.groupby(outputs, key=lambda row: row[0][0]):
            block_rows = list(block_rows)
            with stage("merging"):
                # A block's points, each once: the first row of every point in its chunks.
                points, first = np.unique(np.concatenate([chunk for (_, chunk), _, _ in block_rows]), return_index=True)
                block_p = np.concatenate([p for _, p, _ in block_rows])[first]
                block_e = np.concatenate([e for _, _, e in block_rows])[first]
            with stage("mean-shift"):
                labels, centres = postprocess.mean_shift(block_e, self.cfg["bandwidth"])
            classes = postprocess.cluster_classes(labels, block_p.argmax(axis=1), len(centres))
            yield blocks[b], points, block_p, labels, classes

    def _finish_every_point(self, room, normalised, merger, mean_p, visits, rows_per_point):
        """Room labels from the blocks' sums: mean probabilities, room instances, size filter."""
        covered = visits > 0
        mean_p /= np.maximum(visits, 1)[:, None]
        if not covered.all():  # points only in skipped sparse blocks: the nearest labelled point's
            mean_p[~covered] = mean_p[nearest_covered(room.xyz, covered)]
        semantic = mean_p.argmax(axis=1)
        instance = self.room_instances(merger, normalised, semantic, rows_per_point)
        return _room_result(room.name, room.xyz, room.rgb, semantic, instance, mean_p, room.semantic, room.instance)

    def room_instances(self, merger, normalised, semantic, rows_per_point):
        """Every point's instance once all blocks are merged: its grid cell's, renumbered, those of
        at most size_fraction of their class's mean size dropped (postprocess.finalize_instances)."""
        return postprocess.finalize_instances(
            merger.assign(normalised), semantic, self.mean_ins_size, self.cfg["size_fraction"],
            weights=rows_per_point if self.size_in_rows else None,
        )

    def _segment_sampled(self, room, seed, progress, stage):
        """The original's protocol: one random num_points sample per block, rows with repeats."""
        with stage("blocks"):
            blocks = s3dis.test_blocks(
                room, self.num_points, self.block_size, self.cfg["stride"], self.cfg["min_block_points"],
                rng=np.random.default_rng([int(seed), 2]),
            )
        if len(blocks.data) == 0:
            raise self._nothing_to_label(room)
        merger = self.new_merger()
        probabilities = []
        block_rows = ((b, block) for b, block in enumerate(blocks.data))
        for b, p, e in self._network_outputs(block_rows, f"room {room.name}", progress, stage):
            probabilities.append(p)
            self._cluster_into(merger, blocks.data[b, :, 6:9], e, p.argmax(axis=1), stage)
        rows = blocks.indices.reshape(-1)
        probabilities = np.concatenate(probabilities)
        semantic = probabilities.argmax(axis=1)
        with stage("merging"):
            instance = postprocess.finalize_instances(
                merger.assign(blocks.data[:, :, 6:9].reshape(-1, 3)), semantic, self.mean_ins_size, self.cfg["size_fraction"]
            )
            return _room_result(room.name, room.xyz[rows], room.rgb[rows], semantic, instance, probabilities,
                                blocks.semantic.reshape(-1), blocks.instance.reshape(-1))


def nearest_covered(xyz, covered):
    """The index of the nearest covered point (`covered`: a boolean mask) of each other point."""
    return np.flatnonzero(covered)[cKDTree(xyz[covered]).query(xyz[~covered])[1]]


def _room_result(name, xyz, rgb, semantic, instance, probabilities, semantic_gt, instance_gt):
    """The RoomResult of labelled rows: probabilities (M, C) of each row's classes give its score
    (the probability of its class) and its instance's confidence (metrics.instance_table)."""
    table = metrics.instance_table(instance, semantic, probabilities, where=f"room {name}")
    return RoomResult(
        name=name,
        xyz=xyz.astype(np.float32, copy=False),
        rgb=rgb.astype(np.uint8, copy=False),
        semantic_pred=semantic.astype(np.int32),
        instance_pred=instance.astype(np.int32),
        score=probabilities.max(axis=1).astype(np.float32, copy=False),
        semantic_gt=semantic_gt.astype(np.int32, copy=False),
        instance_gt=instance_gt.astype(np.int32, copy=False),
        instance_ids=table.ids,
        instance_classes=table.classes,
        instance_confidences=table.confidences,
        instance_points=table.points,
    )


def _check_settings(cfg, block_size):
    """The [eval] values the protocol can run with (the config only checks their types)."""
    problems = []
    if cfg["batch_size"] < 1:
        problems.append(f"eval.batch_size must be at least 1, got {cfg['batch_size']}")
    if not 0 < cfg["stride"] <= block_size:
        problems.append(f"eval.stride must lie in (0, {block_size}] (the block size), got {cfg['stride']}")
    if cfg["min_block_points"] < 1:
        problems.append(f"eval.min_block_points must be at least 1, got {cfg['min_block_points']}")
    if not cfg["bandwidth"] > 0:
        problems.append(f"eval.bandwidth must be positive, got {cfg['bandwidth']}")
    if not 0 < cfg["gap"] < 1:
        problems.append(f"eval.gap must lie in (0, 1) (normalised room coordinates), got {cfg['gap']}")
    if cfg["min_overlap"] < 0 or cfg["min_new_points"] < 0 or cfg["size_fraction"] < 0:
        problems.append("eval.min_overlap, eval.min_new_points and eval.size_fraction must not be negative")
    if problems:
        raise EvaluationError("; ".join(problems))


def _check_room(room):
    if len(room) == 0:
        raise EvaluationError(f"room {room.name} holds no points")
    if not np.isfinite(room.xyz).all():
        raise EvaluationError(f"room {room.name} holds non-finite coordinates")


def _occupied_windows(values, size, stride, count, within=None):
    """Ascending indices k < count (and in the half-open range `within`, if given) of the windows
    [k * stride, k * stride + size] that may hold one of the values (a superset: membership is
    decided exactly by the caller)."""
    cells = np.unique(np.floor(values / stride).astype(np.int64))
    reach = int(np.ceil(size / stride)) + 1
    candidates = np.unique((cells[:, None] + np.arange(-reach, 2)[None, :]).reshape(-1))
    low, high = (0, count) if within is None else (max(0, within[0]), min(count, within[1]))
    return candidates[(candidates >= low) & (candidates < high)]


def _normalised(room, limit=None):
    """Room coordinates divided by the room's max per axis (the blocks' channels 6:9), or by
    `limit`, a larger cloud's."""
    return s3dis.normalised_xyz(room.xyz, s3dis.room_limit(room) if limit is None else limit)


def _chunks(indices, num_points, rng):
    """A block's points shuffled and split into num_points chunks, the last topped up with
    random repeats of the block's points."""
    shuffled = rng.permutation(indices)
    count = -(-len(shuffled) // num_points)
    missing = count * num_points - len(shuffled)
    if missing:
        shuffled = np.concatenate([shuffled, rng.choice(indices, missing, replace=missing > len(indices))])
    return np.split(shuffled, count)
