"""Plain-Python reference of the original's instance post-processing, the test oracle.

A straightforward port of models/JISS/test.py (per-block clustering, final filtering) and of
BlockMerging in utils/test_utils.py, with dicts where the original has fixed tables: the room
grid is a dict cell -> instance, overlaps are counted per (cluster, instance) without limit.
`block_merging_tables` keeps the original's tables (100 block clusters x 300 room instances,
numpy volumes), to show that the dict version gives the original's answer wherever those
tables do not overflow. Slow on purpose: loops over points, as the original.
"""

import numpy as np
from scipy import stats
from sklearn.cluster import MeanShift


def voxel_index(xyz, gap):
    """(N, 3) int cells: float32 coordinates / gap, truncated (the original's int32 cast)."""
    return (np.asarray(xyz, np.float32) / np.float32(gap)).astype(np.int32)


def block_merging(volume, volume_seg, xyz, labels, cluster_class, gap=5e-3, min_overlap=7, min_points=30):
    """BlockMerging on dicts: updates volume / volume_seg (cell tuple -> instance / class) and
    returns each point's written instance (-1 where its cell was taken or its label is -1)."""
    cells = [tuple(int(v) for v in cell) for cell in voxel_index(xyz, gap)]
    labels = [int(label) for label in labels]
    overlap = {}  # cluster -> {room instance -> same-class cells of the cluster's points in it}
    counter = {}  # cluster -> 1 + its number of points (the original's counter starts at 1)
    for cell, label in zip(cells, labels):
        if label == -1:
            continue
        counter[label] = counter.get(label, 1) + 1
        if cell in volume and volume_seg[cell] == cluster_class[label]:
            per_room = overlap.setdefault(label, {})
            per_room[volume[cell]] = per_room.get(volume[cell], 0) + 1
    target = {}
    current_max = max(volume.values(), default=-1)
    for label in range(len(cluster_class)):
        best_room, best_count = 0, 0  # argmax of an all-zero row is 0
        for room, count in sorted(overlap.get(label, {}).items()):
            if count > best_count:
                best_room, best_count = room, count
        if best_count < min_overlap and counter.get(label, 1) > min_points:
            current_max += 1
            best_room = current_max
        target[label] = best_room
    written = []
    for cell, label in zip(cells, labels):
        if label != -1 and cell not in volume:
            volume[cell] = target[label]
            volume_seg[cell] = cluster_class[label]
            written.append(target[label])
        else:
            written.append(-1)
    return np.array(written, np.int64)


def block_merging_tables(volume, volume_seg, xyz, labels, cluster_class, gap=5e-3):
    """The original's BlockMerging with its fixed tables and int32 numpy volumes (-1 = empty):
    overlaps beyond 100 clusters x 300 instances are dropped, label -1 counts into slot 99, a
    label >= 100 raises IndexError."""
    overlaps = np.zeros([100, 300])
    counter = np.ones(100)
    cells = voxel_index(xyz, gap)
    for (x, y, z), label in zip(cells, labels):
        if label != -1 and volume[x, y, z] != -1 and volume_seg[x, y, z] == cluster_class[label]:
            try:
                overlaps[label, volume[x, y, z]] += 1
            except IndexError:
                pass
        counter[label] += 1
    target = np.argmax(overlaps, axis=1)
    best = np.max(overlaps, axis=1)
    current_max = np.max(volume)
    for label in range(100):
        if best[label] < 7 and counter[label] > 30:
            current_max += 1
            target[label] = current_max
    written = -np.ones(len(cells), np.int64)
    for i, ((x, y, z), label) in enumerate(zip(cells, labels)):
        if label != -1 and volume[x, y, z] == -1:
            volume[x, y, z] = target[label]
            volume_seg[x, y, z] = cluster_class[label]
            written[i] = target[label]
    return written


def cluster_block(embeddings, semantic_pred, bandwidth=0.6):
    """sklearn mean-shift and each cluster's class (scipy mode; -1 for an empty cluster, where
    the original's int(mode) would fail)."""
    model = MeanShift(bandwidth=bandwidth, bin_seeding=True).fit(embeddings)
    labels = model.labels_
    classes = []
    for k in range(len(model.cluster_centers_)):
        members = semantic_pred[labels == k]
        classes.append(int(stats.mode(members, keepdims=False).mode) if len(members) else -1)
    return labels, classes


def assign_and_filter(volume, xyz, written, semantic_pred, mean_ins_size, gap=5e-3, size_fraction=0.25):
    """The end of the original's room loop: points take their cell's instance, instances are
    renumbered in increasing id order, and those with <= size_fraction * mean size dropped."""
    group_pred = np.array(written, np.int64)
    for i, cell in enumerate(voxel_index(xyz, gap)):
        room = volume.get(tuple(int(v) for v in cell), -1)
        if room != -1:
            group_pred[i] = room
    final = -np.ones_like(group_pred)
    count = 0
    for g in np.unique(group_pred):
        if g == -1:
            continue
        members = group_pred == g
        cls = int(stats.mode(semantic_pred[members], keepdims=False).mode)
        if np.sum(members) > size_fraction * mean_ins_size[cls]:
            final[members] = count
            count += 1
    return final


def postprocess_room(blocks_xyz, blocks_embeddings, blocks_semantic, mean_ins_size, bandwidth=0.6, gap=5e-3,
                     min_overlap=7, min_points=30, size_fraction=0.25):
    """The original's room post-processing: sklearn + block_merging + assign_and_filter."""
    volume, volume_seg = {}, {}
    written = []
    for xyz, embeddings, semantic in zip(blocks_xyz, blocks_embeddings, blocks_semantic):
        labels, classes = cluster_block(embeddings, semantic, bandwidth)
        written.append(block_merging(volume, volume_seg, xyz, labels, classes, gap, min_overlap, min_points))
    return assign_and_filter(volume, np.concatenate(blocks_xyz), np.concatenate(written),
                             np.concatenate(blocks_semantic), mean_ins_size, gap, size_fraction)
