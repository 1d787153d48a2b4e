"""tf.data input pipelines over a prepared S3DIS folder (see `jsnet_tf.data.prepare_s3dis`).

Two datasets, both yielding dicts of batches

    {"points": (B, N, 9) float32, "semantic": (B, N) int32, "instance": (B, N) int32}

* `training_dataset`: one epoch of *fresh random blocks* (the paper's "random sample" strategy)
  cut from the rooms of every area but the test area (`lists/train_file_list_woArea{k}.txt`).
  Each room's blocks come from a NumPy Generator seeded with (seed, epoch, crc32(room name)),
  the room order is a permutation seeded with (seed, epoch), the block shuffle buffer is seeded
  too, and every map runs with `deterministic=True`: the same (seed, epoch) gives the same
  batches whatever `num_parallel_calls` is; another epoch gives other blocks.
* `fixed_dataset`: the stride-0.5 blocks of the prepared HDF5 files (`split="test"`: the test
  area, `lists/test_hdf5_file_list_Area{k}.txt`; `split="train"`: the other areas), in file
  order, optionally shuffled with a seed.

Files are read by `tf.numpy_function` maps running `num_parallel_calls` at a time (threads of
the tf.data runtime, no multiprocessing); blocks are unbatched, shuffled (optional), batched
(`drop_remainder` optional) and prefetched (`tf.data.AUTOTUNE`). Missing or empty lists,
missing files and files that are not readable room / block files are a `DataError` naming the
path when the dataset is built (`check_files=True`, reads only the file headers); a file that
goes bad later fails the iteration with a TensorFlow error whose message names the path.
"""

from __future__ import annotations

import os
import threading
import zlib
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import tensorflow as tf

from jsnet_tf.data import s3dis
from jsnet_tf.data.s3dis import NUM_CHANNELS, DataError

DEFAULT_SHUFFLE_BUFFER = 512  # blocks (~ 180 kB each at 4096 points)
SPLITS = ("train", "test")


# ------------------------------------------------------------------------------------------------
# File lists
# ------------------------------------------------------------------------------------------------

def list_path(out_dir: str | os.PathLike, area: int, split: str, kind: str) -> Path:
    """`lists/` file of the prepared folder: kind "rooms" (npz) or "blocks" (h5)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if kind not in ("rooms", "blocks"):
        raise ValueError(f"kind must be 'rooms' or 'blocks', got {kind!r}")
    mid = "hdf5_file_list" if kind == "blocks" else "file_list"
    name = f"train_{mid}_woArea{area}.txt" if split == "train" else f"test_{mid}_Area{area}.txt"
    return Path(out_dir) / "lists" / name


def area_files(out_dir: str | os.PathLike, area: int, split: str, kind: str) -> list[Path]:
    """The files of a split; DataError naming the list if it is missing or empty, or naming
    the first listed file that does not exist."""
    path = list_path(out_dir, area, split, kind)
    if not path.is_file():
        raise DataError(f"{path}: file list missing (is area {area} prepared in {out_dir}?)")
    files = s3dis.read_file_list(path)
    if not files:
        raise DataError(f"{path}: no files for {split} split of area {area}")
    for f in files:
        if not f.is_file():
            raise DataError(f"{f}: listed in {path} but missing")
    return files


def _check_room_file(path: Path) -> None:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
    except Exception as e:
        raise DataError(f"{path}: not a readable room file: {e}") from e
    missing = {"xyz", "rgb", "semantic", "instance"} - keys
    if missing:
        raise DataError(f"{path}: not a room file, missing {', '.join(sorted(missing))}")


def _check_block_file(path: Path, num_points: int | None) -> None:
    try:
        with h5py.File(path, "r") as f:
            if "data" not in f or "pid" not in f or not ("seglabels" in f or "seglabel" in f):
                raise DataError(f"{path}: not a block file (needs data, seglabels, pid)")
            shape = f["data"].shape
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: not a readable block file: {e}") from e
    if len(shape) != 3 or shape[2] != NUM_CHANNELS or (num_points and shape[1] != num_points):
        raise DataError(f"{path}: block data has shape {shape}, expected "
                        f"(B, {num_points or 'N'}, {NUM_CHANNELS})")


# ------------------------------------------------------------------------------------------------
# Room cache
# ------------------------------------------------------------------------------------------------

class RoomCache:
    """Thread-safe in-memory cache of loaded rooms, keyed by path. Pass the same instance to the
    `training_dataset` of every epoch to load each room once."""

    def __init__(self):
        self._rooms: dict[str, s3dis.Room] = {}
        self._lock = threading.Lock()

    def get(self, path: str | os.PathLike) -> s3dis.Room:
        key = str(path)
        with self._lock:
            room = self._rooms.get(key)
        if room is None:
            room = s3dis.load_room(key)
            with self._lock:
                room = self._rooms.setdefault(key, room)
        return room

    def __len__(self) -> int:
        return len(self._rooms)

    def clear(self) -> None:
        with self._lock:
            self._rooms.clear()


# ------------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------------

def _seed_int(*parts: int) -> int:
    """A 31-bit integer seed derived from the parts (for tf.data ops)."""
    return int(np.random.default_rng([int(p) for p in parts]).integers(1, 2**31 - 1))


def _finish(ds: tf.data.Dataset, num_points: int, batch_size: int, drop_remainder: bool,
            shuffle: bool, shuffle_buffer: int, shuffle_seed: int, prefetch: bool):
    """(data, semantic, instance) of whole files -> shuffled, batched dicts."""

    def to_dict(data, semantic, instance):
        data = tf.ensure_shape(data, (None, num_points, NUM_CHANNELS))
        return {"points": data, "semantic": tf.ensure_shape(semantic, (None, num_points)),
                "instance": tf.ensure_shape(instance, (None, num_points))}

    ds = ds.map(to_dict).unbatch()
    if shuffle and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


def _check_common(batch_size: int, num_points: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")


def training_dataset(out_dir: str | os.PathLike, area: int, batch_size: int,
                     num_points: int = 4096, seed: int = 0, epoch: int = 0,
                     blocks_per_room: int | None = None, block_size: float = 1.0,
                     min_points: int = 100, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                     drop_remainder: bool = True, num_parallel_calls: int | None = None,
                     cache_rooms: bool | RoomCache = True, check_files: bool = True,
                     prefetch: bool = True, rooms: Sequence[str | os.PathLike] | None = None,
                     ) -> tf.data.Dataset:
    """One epoch of random training blocks from every area but `area`.

    Every room gives `blocks_per_room` random block corners (default: as many as 1 m cells
    cover the room, `s3dis.random_blocks`); corners whose block has fewer than `min_points`
    points are dropped. Blocks of rooms taken in a (seed, epoch) order are shuffled in a buffer
    of `shuffle_buffer` blocks and batched. `num_parallel_calls` rooms are cut at once (default
    tf.data.AUTOTUNE); results are deterministic for (seed, epoch) regardless.
    `cache_rooms`: True keeps the rooms loaded by this dataset in memory (a new RoomCache), a
    RoomCache shares them (e.g. across epochs), False reloads each room every time.
    `rooms`: explicit room files instead of the training list (then `area` is unused).
    """
    _check_common(batch_size, num_points)
    if rooms is None:
        files = area_files(out_dir, area, "train", "rooms")
    else:
        files = [Path(r) for r in rooms]
        if not files:
            raise DataError("training_dataset: empty room list")
        for f in files:
            if not f.is_file():
                raise DataError(f"{f}: room file missing")
    if check_files:
        for f in files:
            _check_room_file(f)
    cache = cache_rooms if isinstance(cache_rooms, RoomCache) else \
        RoomCache() if cache_rooms else None
    paths = [str(f) for f in files]
    crcs = [zlib.crc32(Path(p).stem.encode()) for p in paths]
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(len(paths))

    def cut(index):
        i = int(index)
        path = paths[i]
        try:
            room = cache.get(path) if cache is not None else s3dis.load_room(path)
            rng = np.random.default_rng([int(seed), int(epoch), crcs[i]])
            blocks = s3dis.random_blocks(room, blocks_per_room, num_points, block_size,
                                         min_points, rng)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{path}: cannot cut random blocks: {e}") from e
        return blocks.data, blocks.semantic, blocks.instance

    def load(index):
        return tf.numpy_function(cut, [index], (tf.float32, tf.int32, tf.int32), stateful=False)

    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    ds = tf.data.Dataset.from_tensor_slices(order.astype(np.int64))
    ds = ds.map(load, num_parallel_calls=parallel, deterministic=True)
    return _finish(ds, num_points, batch_size, drop_remainder, True, shuffle_buffer,
                   _seed_int(seed, epoch, 1), prefetch)


def fixed_dataset(out_dir: str | os.PathLike, area: int, batch_size: int, split: str = "test",
                  num_points: int = 4096, shuffle: bool = False, seed: int = 0,
                  shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, drop_remainder: bool = False,
                  num_parallel_calls: int | None = None, check_files: bool = True,
                  prefetch: bool = True, files: Sequence[str | os.PathLike] | None = None,
                  ) -> tf.data.Dataset:
    """The prepared stride-0.5 blocks (HDF5) of `split` ("test": area `area`; "train": the
    other areas), file after file in list order, blocks in file order unless `shuffle` (then
    the file order and a `shuffle_buffer` of blocks are shuffled with `seed`).
    `files`: explicit block files instead of the list (then `area` and `split` are unused).
    """
    _check_common(batch_size, num_points)
    if files is None:
        paths = area_files(out_dir, area, split, "blocks")
    else:
        paths = [Path(f) for f in files]
        if not paths:
            raise DataError("fixed_dataset: empty file list")
        for f in paths:
            if not f.is_file():
                raise DataError(f"{f}: block file missing")
    if check_files:
        for f in paths:
            _check_block_file(f, num_points)
    paths = [str(p) for p in paths]
    order = np.arange(len(paths))
    if shuffle:
        order = np.random.default_rng([int(seed), 2]).permutation(len(paths))

    def read(index):
        path = paths[int(index)]
        blocks = s3dis.read_blocks_h5(path)
        if blocks.data.shape[1] != num_points:
            raise DataError(f"{path}: blocks of {blocks.data.shape[1]} points, "
                            f"expected {num_points}")
        return blocks.data, blocks.semantic, blocks.instance

    def load(index):
        return tf.numpy_function(read, [index], (tf.float32, tf.int32, tf.int32), stateful=False)

    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    ds = tf.data.Dataset.from_tensor_slices(order.astype(np.int64))
    ds = ds.map(load, num_parallel_calls=parallel, deterministic=True)
    return _finish(ds, num_points, batch_size, drop_remainder, shuffle, shuffle_buffer,
                   _seed_int(seed, 3), prefetch)
