"""Synthetic rooms for the post-processing tests and benchmark.

A room of box-shaped objects (floor, ceiling, walls, furniture), cut into 1 m x 1 m blocks at
stride 0.5 m like the S3DIS test blocks (neighbouring blocks overlap), with per-block network
outputs that look trained: each instance in a block has its own embedding centre, centres at
least delta_d = 1.5 apart, its points within delta_v = 0.5 of it; a few noise points; predicted
classes right except for a few flips.
"""

import dataclasses

import numpy as np

NUM_CLASSES = 13


@dataclasses.dataclass
class Room:
    xyz: list  # per block (N_b, 3) float32 room-normalised coordinates
    embeddings: list  # per block (N_b, E) float32
    semantic: list  # per block (N_b,) int64 predicted classes
    instance: list  # per block (N_b,) int64 true room instance
    mean_ins_size: np.ndarray  # (NUM_CLASSES,) mean points per instance in a block, per class


def embedding_centres(rng, count, dim=5, delta_d=1.5):
    """`count` points at least delta_d apart (rejection sampling in a box that fits them)."""
    side = max(3.0, 1.2 * delta_d * count ** (1.0 / dim) + 1.0)
    centres = []
    while len(centres) < count:
        candidate = rng.uniform(-side / 2, side / 2, dim)
        if all(np.linalg.norm(candidate - c) >= delta_d for c in centres):
            centres.append(candidate)
    return np.array(centres).reshape(count, dim)


def embed(rng, labels, dim=5, spread=0.15, delta_v=0.5, delta_d=1.5, noise=0.01):
    """Embeddings of points with the given instance labels: a centre per label, Gaussian spread
    per dimension clipped to delta_v from it, a fraction `noise` of points anywhere."""
    unique, inverse = np.unique(labels, return_inverse=True)
    centres = embedding_centres(rng, len(unique), dim, delta_d)
    offset = rng.normal(0.0, spread, (len(labels), dim))
    norm = np.linalg.norm(offset, axis=1, keepdims=True)
    offset *= np.minimum(1.0, delta_v / np.maximum(norm, 1e-12))
    points = centres[inverse] + offset
    stray = rng.random(len(labels)) < noise
    low, high = centres.min(axis=0) - 1.0, centres.max(axis=0) + 1.0
    points[stray] = rng.uniform(low, high, (int(stray.sum()), dim))
    return points.astype(np.float32)


def room_objects(rng, size_x, size_y, height, num_furniture):
    """(lo, hi, class) boxes: floor, ceiling, four walls, furniture on the floor."""
    t = 0.05
    boxes = [
        ((0, 0, 0), (size_x, size_y, t), 1),  # floor
        ((0, 0, height - t), (size_x, size_y, height), 0),  # ceiling
        ((0, 0, 0), (t, size_y, height), 2),
        ((size_x - t, 0, 0), (size_x, size_y, height), 2),
        ((0, 0, 0), (size_x, t, height), 2),
        ((0, size_y - t, 0), (size_x, size_y, height), 2),
    ]
    for _ in range(num_furniture):
        w, d, h = (rng.uniform(0.3, min(1.5, 0.9 * size_x)), rng.uniform(0.3, min(1.5, 0.9 * size_y)),
                   rng.uniform(0.3, 1.8))
        x, y = rng.uniform(0, size_x - w), rng.uniform(0, size_y - d)
        boxes.append(((x, y, t), (x + w, y + d, t + h), int(rng.integers(3, NUM_CLASSES))))
    return boxes


def make_room(rng, blocks_x=3, blocks_y=3, points_per_block=2048, num_furniture=None, room_points=None,
              embedding_dim=5, noise=0.01, flip=0.03, ragged=False):
    """A room of blocks_x * blocks_y blocks (stride 0.5, 1 m blocks). ragged=True: blocks hold
    their own numbers of points (0.5x to 1.5x points_per_block)."""
    size_x, size_y, height = 0.5 * (blocks_x - 1) + 1.0, 0.5 * (blocks_y - 1) + 1.0, 3.0
    if num_furniture is None:
        num_furniture = max(2, int(4 * size_x * size_y))
    boxes = room_objects(rng, size_x, size_y, height, num_furniture)
    if room_points is None:
        room_points = points_per_block * blocks_x * blocks_y // 3
    volumes = np.array([np.prod(np.subtract(hi, lo)) for lo, hi, _ in boxes])
    per_box = np.maximum(1, np.round(room_points * volumes / volumes.sum())).astype(int)
    xyz = np.concatenate([rng.uniform(lo, hi, (n, 3)) for (lo, hi, _), n in zip(boxes, per_box)])
    instance = np.repeat(np.arange(len(boxes)), per_box)
    cls = np.array([c for _, _, c in boxes])[instance]
    normalised = (xyz / xyz.max(axis=0)).astype(np.float32)

    blocks = Room([], [], [], [], np.zeros(NUM_CLASSES))
    sizes = [[] for _ in range(NUM_CLASSES)]
    for i in range(blocks_x):
        for j in range(blocks_y):
            x0, y0 = 0.5 * i, 0.5 * j
            inside = np.flatnonzero((xyz[:, 0] >= x0) & (xyz[:, 0] <= x0 + 1)
                                    & (xyz[:, 1] >= y0) & (xyz[:, 1] <= y0 + 1))
            if len(inside) == 0:
                continue
            n = points_per_block if not ragged else int(rng.integers(points_per_block // 2, 3 * points_per_block // 2))
            chosen = inside[rng.choice(len(inside), n, replace=len(inside) < n)]
            semantic = cls[chosen].copy()
            flipped = rng.random(n) < flip
            semantic[flipped] = rng.integers(0, NUM_CLASSES, int(flipped.sum()))
            blocks.xyz.append(normalised[chosen])
            blocks.embeddings.append(embed(rng, instance[chosen], embedding_dim, noise=noise))
            blocks.semantic.append(semantic.astype(np.int64))
            blocks.instance.append(instance[chosen].astype(np.int64))
            for g in np.unique(instance[chosen]):
                sizes[cls[g == instance][0]].append(int(np.sum(instance[chosen] == g)))
    blocks.mean_ins_size = np.array([np.mean(s) if s else 1.0 for s in sizes])
    return blocks
