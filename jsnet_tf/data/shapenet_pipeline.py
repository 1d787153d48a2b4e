"""tf.data input over a prepared ShapeNet part folder (see `jsnet_tf.data.prepare_shapenet`).

`dataset` yields dicts of batches

    {"points": (B, N, 6) float32, "semantic": (B, N) int32 part ids 0..49,
     "instance": (B, N) int32, "category": (B,) int32 index into shapenet.CATEGORY_NAMES}

of the shapes listed in `<out>/<split>_hdf5_file_list.txt` ("trainval": train's, then val's).
Unshuffled, shapes come in the split json's order. Shuffled, the file order and the shape order
inside every file are permutations drawn from (seed, epoch, ...) and a seeded buffer mixes
neighbouring files; every map runs with `deterministic=True`, so one (seed, epoch) gives the same
batches whatever the parallelism, another epoch another order. Whole files are read by
`tf.numpy_function` maps (threads of the tf.data runtime), then unbatched, shuffled, batched and
prefetched. A missing or empty list and a missing or malformed file (wrong datasets, shapes or
points per shape, from the h5 headers) are a `DataError` naming the path when the dataset is
built; a file that goes bad later fails the iteration with a TensorFlow error naming it.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from jsnet_tf.data import shapenet
from jsnet_tf.data.pipeline import check_batch_args, seed_int
from jsnet_tf.data.shapenet import NUM_CHANNELS
from jsnet_tf.errors import DataError

DEFAULT_SHUFFLE_BUFFER = 1024  # shapes (~ 66 kB each at 2048 points)


def _file_sizes(out_dir: str | os.PathLike, split: str) -> list[tuple[str, int, int]]:
    """[(path, shapes, points per shape)] of the split's files, from the h5 headers."""
    return [(str(f), *shapenet.read_shapenet_h5_size(f))
            for f in shapenet.prepared_files(out_dir, split)]


def num_shapes(out_dir: str | os.PathLike, split: str) -> int:
    """Shapes in the prepared `split` (from the h5 headers, no data read); DataError naming the
    list or file at fault."""
    return sum(count for _, count, _ in _file_sizes(out_dir, split))


def dataset(out_dir: str | os.PathLike, split: str, batch_size: int, num_points: int = 2048,
            shuffle: bool = False, seed: int = 0, epoch: int = 0, drop_remainder: bool = False,
            shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, num_parallel_calls: int | None = None,
            prefetch: bool = True) -> tf.data.Dataset:
    """One epoch of the prepared `split` in batches of `batch_size` (see the module docstring).

    `num_points` must be the prepared points per shape (DataError naming the file otherwise).
    `shuffle`: order drawn from (seed, epoch), a `shuffle_buffer` of shapes mixing files.
    `num_parallel_calls` files are read at once (default tf.data.AUTOTUNE).
    """
    check_batch_args(batch_size, num_points)
    files = _file_sizes(out_dir, split)
    for path, _, points in files:
        if points != num_points:
            raise DataError(f"{path}: shapes of {points} points, expected {num_points}")
    paths = [path for path, _, _ in files]
    order = np.arange(len(paths))
    if shuffle:
        order = np.random.default_rng([int(seed), int(epoch), 1]).permutation(len(paths))

    def read(index):
        i = int(index)
        parts = shapenet.read_shapenet_h5(paths[i])
        if parts.data.shape[1] != num_points:
            raise DataError(f"{paths[i]}: shapes of {parts.data.shape[1]} points, expected "
                            f"{num_points}")
        rows = np.arange(len(parts.data))
        if shuffle:
            rows = np.random.default_rng([int(seed), int(epoch), 2, i]).permutation(rows)
        return (parts.data[rows], parts.part[rows], parts.instance[rows],
                parts.category[rows])

    def load(index):
        data, part, instance, category = tf.numpy_function(
            read, [index], (tf.float32, tf.int32, tf.int32, tf.int32), stateful=False)
        return {"points": tf.ensure_shape(data, (None, num_points, NUM_CHANNELS)),
                "semantic": tf.ensure_shape(part, (None, num_points)),
                "instance": tf.ensure_shape(instance, (None, num_points)),
                "category": tf.ensure_shape(category, (None,))}

    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    ds = tf.data.Dataset.from_tensor_slices(order.astype(np.int64))
    ds = ds.map(load, num_parallel_calls=parallel, deterministic=True).unbatch()
    if shuffle and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed_int(seed, epoch, 3),
                        reshuffle_each_iteration=False)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)
