"""JSNet's instance post-processing at test time, on the native extension.

Per block: mean-shift on the instance embeddings (`mean_shift`, the same clusters as
``sklearn.cluster.MeanShift(bandwidth, bin_seeding=True)``); each cluster takes the most frequent
predicted class of its points (`cluster_classes`); `RoomMerger.merge` folds the block's
clusters into room instances on a voxel grid of the room-normalised coordinates (SGPN's
BlockMerging). Per room: every point takes its cell's instance (`RoomMerger.assign`), and
`finalize_instances` renumbers the instances, gives each the most frequent class of its points
and drops the small ones. `postprocess_room` does all of it for a room's blocks.

Differences from the original (models/JISS/test.py, utils/test_utils.py), none of which changes
a result the original gets right:
  * no fixed tables of 100 block clusters x 300 room instances: any number of either works;
  * cluster label -1 (no cluster) is skipped instead of being counted into the last slot;
  * instance ids are int64 (the original's could be stored in the block-label dtype, uint8);
  * mean-shift, where no point lies within the bandwidth of any bin seed (sklearn raises
    "No point was within bandwidth"), seeds from the points themselves instead.
Kept, since they decide results: a cluster becomes a new instance with >= 30 points (the
original's `> 30` tests a counter that starts at 1); a smaller cluster that overlaps no
instance joins instance 0 (its argmax over an all-zero row); a new instance's id is one more
than the highest id written into the grid so far, so an id assigned but never written is
given out again.

Voxel cells are computed like the original's ``(pts / gap).astype(np.int32)`` on its float32
block arrays: coordinates are taken as float32, divided by float32(gap) and truncated.
Coordinates are the room-normalised ones (columns 6:9 of a block, in [0, 1]); a coordinate
whose cell falls outside the (int(1 / gap) + 1)^3 grid, where the original would index out of
its volume (or wrap around, for negative ones), is an error.
"""

import concurrent.futures
import numbers

import numpy as np

from jsnet_tf.clustering import library
from jsnet_tf.errors import UserError

_native = library.load()


class ClusteringError(UserError, ValueError):
    """Bad input to the instance post-processing."""


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ClusteringError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _non_negative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ClusteringError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _integers(name, values, ndim=1):
    values = np.asarray(values)
    if values.ndim != ndim:
        raise ClusteringError(f"{name} must be {ndim}-d, got shape {values.shape}")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ClusteringError(f"{name} must hold integers, got dtype {values.dtype}")
    return values.astype(np.int64, copy=False)


def _finite(name, values):
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        raise ClusteringError(f"{name} must be real numbers, got dtype {values.dtype}")
    if not np.isfinite(values).all():
        raise ClusteringError(f"{name} holds NaN or infinite values")
    return values


def _classes(name, semantic, num_classes):
    semantic = _integers(name, semantic)
    if semantic.size and (semantic.min() < 0 or semantic.max() >= num_classes):
        bad = semantic[(semantic < 0) | (semantic >= num_classes)][0]
        raise ClusteringError(f"{name} holds class {bad}, outside [0, {num_classes}) (the classes of mean_ins_size)")
    return semantic


def _mean_ins_size(mean_ins_size):
    mean_ins_size = _finite("mean_ins_size", mean_ins_size).astype(np.float64)
    if mean_ins_size.ndim != 1 or mean_ins_size.size == 0:
        raise ClusteringError(f"mean_ins_size must be 1-d with one value per class, got shape {mean_ins_size.shape}")
    if (mean_ins_size < 0).any():
        raise ClusteringError("mean_ins_size must not be negative")
    return mean_ins_size


# --------------------------------------------------------------------------------------------
# Block level
# --------------------------------------------------------------------------------------------


def mean_shift(embeddings, bandwidth=0.6, max_iter=300):
    """Flat-kernel mean-shift with bin seeding: ``sklearn.cluster.MeanShift(bandwidth,
    bin_seeding=True, max_iter=max_iter)``'s labels and centres (native, deterministic).

    Means are exact sums in fixed point, in float64; sklearn averages float32 input in float32,
    so centres agree to float32 precision, and a point at (nearly) exactly the bandwidth from a
    climbing mean can fall on the other side in rare cases.

    Args:
      embeddings: (N, E) real array, N >= 1.
    Returns:
      (labels int64 (N,), centres float64 (K, E)); cluster 0 is the densest, every point has a
      cluster (cluster_all=True).
    """
    embeddings = _finite("embeddings", embeddings)
    if embeddings.ndim != 2 or embeddings.shape[1] == 0:
        raise ClusteringError(f"embeddings must have shape (points, dims), got {embeddings.shape}")
    if embeddings.shape[0] == 0:
        raise ClusteringError("embeddings hold no points: mean-shift needs at least one")
    _positive("bandwidth", bandwidth)
    max_iter = _non_negative_int("max_iter", max_iter)
    points = np.ascontiguousarray(embeddings, dtype=np.float64)
    return _native.mean_shift(points, float(bandwidth), max_iter)


def cluster_classes(labels, semantic_pred, num_clusters):
    """The most frequent predicted class of each cluster's points, the lowest class among equals
    (as scipy.stats.mode); -1 for a cluster without points. Label -1 (no cluster) is ignored.

    Returns int64 (num_clusters,).
    """
    labels = _integers("labels", labels)
    semantic_pred = _integers("semantic_pred", semantic_pred)
    num_clusters = _non_negative_int("num_clusters", num_clusters)
    if labels.shape != semantic_pred.shape:
        raise ClusteringError(f"labels {labels.shape} and semantic_pred {semantic_pred.shape} differ in shape")
    if labels.size and (labels.min() < -1 or labels.max() >= num_clusters):
        raise ClusteringError(f"labels must lie in [-1, {num_clusters}), got [{labels.min()}, {labels.max()}]")
    if semantic_pred.size and semantic_pred.min() < 0:
        raise ClusteringError("semantic_pred must not be negative")
    member = labels >= 0
    num_classes = int(semantic_pred.max()) + 1 if semantic_pred.size else 1
    counts = np.bincount(labels[member] * num_classes + semantic_pred[member], minlength=num_clusters * num_classes)
    counts = counts.reshape(num_clusters, num_classes)
    return np.where(counts.any(axis=1), counts.argmax(axis=1), -1).astype(np.int64)


class RoomMerger:
    """Merges blocks' clusters into room instances (SGPN's BlockMerging), block by block.

    The room is a grid of (int(1 / gap) + 1)^3 cells over the normalised coordinates; each cell
    keeps the first (instance, class) written into it. `merge` a block's clusters in evaluation
    order, then `assign` every point of the room its cell's instance.

    Args:
      gap: cell size, in normalised room coordinates.
      min_overlap: a cluster joins the room instance it shares the most same-class cells with
        when they share at least this many.
      min_points: otherwise a cluster of at least this many points starts a new instance (the
        original's `> 30` compares a count that starts at 1, i.e. at least 30 points); smaller
        ones join the instance of the largest overlap anyway, instance 0 when nothing overlaps
        (the original's argmax over an all-zero row).
    """

    def __init__(self, gap=5e-3, min_overlap=7, min_points=30):
        self.gap = float(_positive("gap", gap))
        self.min_overlap = _non_negative_int("min_overlap", min_overlap)
        self.min_points = _non_negative_int("min_points", min_points)
        self.grid_size = int(1.0 / self.gap) + 1
        if self.grid_size**3 >= 2**62:
            raise ClusteringError(f"gap {gap} is too small: the grid would have {self.grid_size}^3 cells")
        self._merger = _native.RoomMerger(self.min_overlap, self.min_points)

    @property
    def num_instances(self):
        """One more than the highest instance id written so far (ids may have gaps)."""
        return self._merger.max_id + 1

    def cells(self, xyz, name="xyz"):
        """The grid cell of each point, as int64 keys (x * G + y) * G + z."""
        xyz = _finite(name, xyz)
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise ClusteringError(f"{name} must have shape (points, 3), got {xyz.shape}")
        scaled = xyz.astype(np.float32) / np.float32(self.gap)
        outside = (scaled <= -1) | (scaled >= self.grid_size)
        if outside.any():
            bad = xyz[outside.any(axis=1)][0]
            raise ClusteringError(
                f"{name} holds point {bad.tolist()} outside the room grid: coordinates must be "
                f"normalised to [0, 1] (cells of gap {self.gap})"
            )
        index = scaled.astype(np.int64)  # truncation, as the original's int32 cast
        return (index[:, 0] * self.grid_size + index[:, 1]) * self.grid_size + index[:, 2]

    def merge(self, block_xyz, block_labels, cluster_classes):
        """Folds one block's clusters into the room.

        Args:
          block_xyz: (N, 3) room-normalised coordinates of the block's points.
          block_labels: (N,) int cluster of each point, -1 for none.
          cluster_classes: (K,) int class of each cluster (`cluster_classes`); K > max label.
        Returns:
          int64 (N,): the room instance each point wrote into the grid, -1 where its cell was
          already taken (or its label is -1), as the original's BlockMerging returns.
        """
        return self.merge_cells(self.cells(block_xyz, "block_xyz"), block_labels, cluster_classes)

    def merge_cells(self, cells, block_labels, cluster_classes):
        """`merge` of a block whose points' grid cells (`cells`) are already known: a tiled cloud
        keeps the cells of its blocks' points to merge them later in the whole cloud's order."""
        cells = np.asarray(cells, np.int64)
        labels = _integers("block_labels", block_labels)
        classes = _integers("cluster_classes", cluster_classes)
        if labels.shape != cells.shape:
            raise ClusteringError(f"block_labels {labels.shape} do not match the block's {cells.shape} points")
        if labels.size and (labels.min() < -1 or labels.max() >= len(classes)):
            raise ClusteringError(
                f"block_labels must lie in [-1, {len(classes)}) (one class per cluster in "
                f"cluster_classes), got [{labels.min()}, {labels.max()}]"
            )
        return self._merger.merge(cells, labels, classes)

    def assign(self, xyz, points_per_call=1 << 18):
        """The room instance of each point's cell, -1 for cells no cluster wrote. int64 (N,).
        Large clouds go `points_per_call` points at a time (the cells' working memory)."""
        if len(xyz) <= points_per_call:
            return self._merger.assign(self.cells(xyz))
        return np.concatenate([self._merger.assign(self.cells(xyz[start : start + points_per_call]))
                               for start in range(0, len(xyz), points_per_call)])


# --------------------------------------------------------------------------------------------
# Room level
# --------------------------------------------------------------------------------------------


def finalize_instances(room_ids, semantic_pred, mean_ins_size, size_fraction=0.25, weights=None):
    """Renumbers room instances 0.. in increasing order of their ids, dropping (-1) those with
    at most `size_fraction` * mean_ins_size[class] points, where an instance's class is the
    most frequent predicted class of its points (the lowest among equals).

    Args:
      room_ids: (M,) int room instance of each point (`RoomMerger.assign`), -1 for none.
      semantic_pred: (M,) int predicted class of each point, in [0, C).
      mean_ins_size: (C,) mean number of points of an instance of each class (training set).
      weights: optional (M,) non-negative weight of each point: an instance's size, and its
        class votes, are then sums of weights instead of point counts (e.g. the number of rows a
        point stands for in the original's sampled blocks, the unit of mean_ins_size).
    Returns:
      int64 (M,) instance ids, -1 = no instance.
    """
    mean_ins_size = _mean_ins_size(mean_ins_size)
    num_classes = len(mean_ins_size)
    room_ids = _integers("room_ids", room_ids)
    semantic_pred = _classes("semantic_pred", semantic_pred, num_classes)
    if room_ids.shape != semantic_pred.shape:
        raise ClusteringError(f"room_ids {room_ids.shape} and semantic_pred {semantic_pred.shape} differ in shape")
    if room_ids.size and room_ids.min() < -1:
        raise ClusteringError("room_ids must be >= -1")
    if isinstance(size_fraction, bool) or not isinstance(size_fraction, numbers.Real) or not size_fraction >= 0:
        raise ClusteringError(f"size_fraction must be a non-negative number, got {size_fraction!r}")
    if weights is not None:
        weights = _finite("weights", weights).astype(np.float64)
        if weights.shape != room_ids.shape or (weights < 0).any():
            raise ClusteringError(f"weights must be {room_ids.shape} and non-negative")
    out = np.full(room_ids.shape, -1, np.int64)
    member = room_ids >= 0
    if not member.any():
        return out
    ids = room_ids[member]
    if ids.max() < 4 * len(ids):  # ids from RoomMerger are dense: count without sorting
        compact, num = ids, int(ids.max()) + 1
    else:
        present, compact = np.unique(ids, return_inverse=True)
        num = len(present)
    votes = np.bincount(compact * num_classes + semantic_pred[member],
                        weights=None if weights is None else weights[member], minlength=num * num_classes)
    votes = votes.reshape(num, num_classes)
    present = np.bincount(compact, minlength=num) > 0
    out[member] = kept_instance_ids(votes, present, mean_ins_size, size_fraction)[compact]
    return out


def kept_instance_ids(votes, present, mean_ins_size, size_fraction):
    """`finalize_instances`' new id of each room instance (-1: dropped) from its (K, C) class
    votes (point counts or weights) and whether it holds a point: kept when its size exceeds
    size_fraction * mean_ins_size[its most voted class], numbered in order. Clouds counted
    chunk by chunk give their sums here."""
    size = votes.sum(axis=1)
    keep = present & (size > size_fraction * mean_ins_size[votes.argmax(axis=1)])
    return np.where(keep, np.cumsum(keep) - 1, -1)


def _blocks(name, value, trailing):
    """A (B, N, ...) array or a list of (N_b, ...) arrays -> list of arrays."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 + trailing:
            raise ClusteringError(
                f"{name} must be {1 + trailing}-d (blocks, points, ...) or a list of blocks, got {value.shape}"
            )
        return list(value)
    if isinstance(value, (list, tuple)):
        return [np.asarray(block) for block in value]
    raise ClusteringError(f"{name} must be an array or a list of per-block arrays, got {type(value).__name__}")


def postprocess_room(room_xyz, embeddings, semantic_pred, mean_ins_size, bandwidth=0.6, gap=5e-3, min_overlap=7,
                     min_points=30, size_fraction=0.25, num_threads=1):
    """Instance ids of every point of a room from its blocks' network outputs.

    Args:
      room_xyz: (B, N, 3) room-normalised coordinates (block columns 6:9), or a list of
        (N_b, 3) arrays for blocks of different sizes.
      embeddings: (B, N, E) instance embeddings, or a list of (N_b, E).
      semantic_pred: (B, N) int predicted classes, or a list of (N_b,).
      mean_ins_size: (C,) mean instance size of each class (training set).
      bandwidth: mean-shift bandwidth; gap, min_overlap, min_points: `RoomMerger`;
        size_fraction: `finalize_instances`.
      num_threads: blocks clustered in parallel (the result does not depend on it).
    Returns:
      int64 (sum of N_b,) instance id of each point in block order, -1 = no instance.
    """
    mean_ins_size = _mean_ins_size(mean_ins_size)
    xyz_blocks = _blocks("room_xyz", room_xyz, 2)
    embedding_blocks = _blocks("embeddings", embeddings, 2)
    semantic_blocks = _blocks("semantic_pred", semantic_pred, 1)
    if not len(xyz_blocks) == len(embedding_blocks) == len(semantic_blocks):
        raise ClusteringError(
            f"room_xyz, embeddings and semantic_pred hold {len(xyz_blocks)}, {len(embedding_blocks)} and "
            f"{len(semantic_blocks)} blocks"
        )
    for b, (xyz, embedding, semantic) in enumerate(zip(xyz_blocks, embedding_blocks, semantic_blocks)):
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise ClusteringError(f"block {b}: room_xyz must have shape (points, 3), got {xyz.shape}")
        if embedding.ndim != 2:
            raise ClusteringError(f"block {b}: embeddings must have shape (points, dims), got {embedding.shape}")
        if not (len(xyz) == len(embedding) == len(semantic)):
            raise ClusteringError(
                f"block {b}: room_xyz, embeddings and semantic_pred hold {len(xyz)}, {len(embedding)} and "
                f"{len(semantic)} points"
            )
        semantic_blocks[b] = _classes(f"semantic_pred (block {b})", semantic, len(mean_ins_size))
    _positive("bandwidth", bandwidth)
    num_threads = _non_negative_int("num_threads", num_threads) or 1
    merger = RoomMerger(gap, min_overlap, min_points)

    def cluster(b):
        if len(embedding_blocks[b]) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        try:
            labels, centres = mean_shift(embedding_blocks[b], bandwidth)
        except ClusteringError as error:
            raise ClusteringError(f"block {b}: {error}") from None
        return labels, cluster_classes(labels, semantic_blocks[b], len(centres))

    with concurrent.futures.ThreadPoolExecutor(max_workers=num_threads) as pool:
        # map yields in block order: merging stays sequential and deterministic.
        for b, (labels, classes) in enumerate(pool.map(cluster, range(len(xyz_blocks)))):
            try:
                merger.merge(xyz_blocks[b], labels, classes)
            except ClusteringError as error:
                raise ClusteringError(f"block {b}: {error}") from None

    if not xyz_blocks:
        return np.zeros(0, np.int64)
    room_ids = merger.assign(np.concatenate([np.reshape(xyz, (-1, 3)) for xyz in xyz_blocks]))
    return finalize_instances(room_ids, np.concatenate(semantic_blocks), mean_ins_size, size_fraction)
