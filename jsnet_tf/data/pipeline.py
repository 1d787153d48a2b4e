"""tf.data input pipelines over a prepared S3DIS folder (see `jsnet_tf.data.prepare_s3dis`).

Every dataset yields dicts of batches

    {"points": (B, N, 9) float32, "semantic": (B, N) int32, "instance": (B, N) int32}

`training_dataset` gives one epoch of training blocks from the rooms of every area but the test
area (`lists/train_file_list_woArea{k}.txt`, or the `rooms=` subset of it), in one of three
`sampling` modes (`SAMPLING_MODES`):

* "resample" (default): every room is cut into the 1 m sliding-window blocks at stride 0.5
  (`s3dis.test_block_origins`, the grid of the test blocks; windows with fewer than
  `min_points` points dropped) and each block's `num_points` points are drawn afresh every
  epoch. This is what the original's documented training command does (`--data_type numpy`,
  `room2blocks_plus_normalized` with `random_sample=False`) and the paper's "random sample"
  (RS) row. One epoch = every such window of every training room once (`epoch_blocks`).
* "fixed": the prepared HDF5 blocks of the same rooms (`blocks/<room>.h5`, the same windows with
  the points drawn once by `prepare_s3dis`): the same bytes every epoch, only their order
  changes. The original's `--data_type hdf5`, the paper's fixed-sample row. One epoch = every
  block of every training room's file once.
* "random_corners": `blocks_per_room` block corners drawn uniformly in each room every epoch
  (default: as many as 1 m cells cover the room, `s3dis.random_blocks`); corners whose block has
  fewer than `min_points` points are dropped, so an epoch has at most that many blocks. The
  original has this (`room2blocks(random_sample=True)`) but its training command does not use
  it; no paper row.

In every mode the room (file) order is a permutation seeded with (seed, epoch); "resample" and
"fixed" also permute the blocks within a room with a generator seeded with (seed, epoch,
crc32(room name)), which also draws the points of "resample" and the corners of
"random_corners". Deliberate differences from the original: blocks of consecutive rooms are
mixed in a seeded shuffle buffer of `shuffle_buffer` blocks (the original queued each room's
blocks whole); a window with more than `num_points` points keeps a random subset without
replacement (see `s3dis`); an epoch's last partial batch is dropped (`drop_remainder`) or kept
short, never carried into the next epoch as the original's batch queue does.

`fixed_dataset` reads the prepared blocks of a split (`split="test"`: the test area,
`lists/test_hdf5_file_list_Area{k}.txt`; `split="train"`: the other areas) or of explicit
files, in file order, optionally shuffled with a seed; `validation_dataset` reads the blocks of
named rooms in a fixed order. `split_rooms` holds validation rooms out of the training list and
`epoch_blocks` counts the blocks of one training epoch.

Files are read by `tf.numpy_function` maps running `num_parallel_calls` at a time (threads of
the tf.data runtime, no multiprocessing) with `deterministic=True`, and every shuffle is seeded:
the same (seed, epoch) gives the same batches whatever `num_parallel_calls` is, which is what an
exact resume relies on. Blocks are unbatched, shuffled (optional), batched (`drop_remainder`
optional) and prefetched (`tf.data.AUTOTUNE`). Missing or empty lists, missing files and files
that are not readable room / block files are a `DataError` naming the path when the dataset is
built (`check_files=True`, reads only the file headers); a file that goes bad later fails the
iteration with a TensorFlow error whose message names the path.
"""

from __future__ import annotations

import difflib
import numbers
import os
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
import tensorflow as tf

from jsnet_tf.data import prepare_s3dis, s3dis
from jsnet_tf.data.s3dis import NUM_CHANNELS, list_path  # noqa: F401 (list_path: part of this module's API)
from jsnet_tf.errors import DataError

DEFAULT_SHUFFLE_BUFFER = 512  # blocks (~ 180 kB each at 4096 points)
SAMPLING_MODES = ("resample", "fixed", "random_corners")


# ------------------------------------------------------------------------------------------------
# File lists
# ------------------------------------------------------------------------------------------------

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


def _check_block_file(path: Path, num_points: int | None) -> int:
    """Checks a block file's header; returns its number of blocks."""
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
    return int(shape[0])


def _area_of(name: str) -> int | None:
    parsed = s3dis.parse_room_file_name(f"{name}.npz")
    return parsed[0] if parsed else None


def _check_room_names(out_dir: str | os.PathLike, area: int, train_names: Sequence[str],
                      names: Sequence[str], purpose: str) -> None:
    """DataError (one line) unless `names` are distinct rooms of the training list."""
    known = set(train_names)
    seen = set()
    for name in names:
        if not isinstance(name, str):
            raise DataError(f"{purpose} rooms must be room names such as Area_1_office_1, "
                            f"got {name!r}")
        if name in seen:
            raise DataError(f"{name} is listed twice in the {purpose} rooms")
        seen.add(name)
        if name in known:
            continue
        test_list = list_path(out_dir, area, "test", "rooms")
        test_names = [f.stem for f in s3dis.read_file_list(test_list)] \
            if test_list.is_file() else []
        if name in test_names or _area_of(name) == area:
            raise DataError(f"{name} is a room of test area {area}: "
                            f"it cannot be used for {purpose}")
        close = difflib.get_close_matches(name, list(train_names) + test_names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise DataError(f"{name} is not a room of the training list "
                        f"{list_path(out_dir, area, 'train', 'rooms')}{hint}")


def _training_files(out_dir: str | os.PathLike, area: int, kind: str,
                    rooms: Sequence[str] | None) -> list[Path]:
    """The training list's files of `kind` ("rooms" / "blocks"), all of them or those of the
    named rooms (in list order, so the result does not depend on the order of `rooms`)."""
    files = area_files(out_dir, area, "train", kind)
    if rooms is None:
        return files
    if isinstance(rooms, (str, bytes)):
        raise DataError(f"rooms must be a list of room names, got the string {rooms!r}")
    _check_room_names(out_dir, area, [f.stem for f in files], rooms, "training")
    if not rooms:
        raise DataError(f"no training rooms (rooms=[]) for test area {area} in {out_dir}")
    wanted = set(rooms)
    return [f for f in files if f.stem in wanted]


# ------------------------------------------------------------------------------------------------
# Validation rooms
# ------------------------------------------------------------------------------------------------

def split_rooms(out_dir: str | os.PathLike, area: int,
                validation_rooms: float | Sequence[str], seed: int
                ) -> tuple[list[str], list[str]]:
    """(training room names, validation room names) of the training list of test area `area`,
    both in list order.

    `validation_rooms` (config key data.validation_rooms) is either a fraction f in [0, 1):
    k = max(1, round-half-up(f * n)) of the n training rooms, drawn with a generator seeded by
    (seed, area) round-robin over the training areas (area order and each area's room order are
    seeded permutations) and never an area's last room; or a list of room names of the training
    list. 0.0 or [] holds nothing out. A fraction outside [0, 1), a name that is not a training
    room (a test-area room, an unknown name: with a close match), or a split that would leave a
    training area without rooms is a DataError, one line.
    """
    names = [f.stem for f in area_files(out_dir, area, "train", "rooms")]
    by_area: dict[int | None, list[str]] = {}
    for name in names:
        by_area.setdefault(_area_of(name), []).append(name)
    if isinstance(validation_rooms, numbers.Real) and not isinstance(validation_rooms, bool):
        fraction = float(validation_rooms)
        if not 0.0 <= fraction < 1.0:
            raise DataError(f"validation_rooms must be a fraction in [0, 1) or a list of room "
                            f"names, got {validation_rooms!r}")
        if fraction == 0.0:
            return names, []
        held = _draw_validation_rooms(by_area, fraction, len(names), seed, area)
    elif isinstance(validation_rooms, Sequence) and not isinstance(validation_rooms, (str, bytes)):
        _check_room_names(out_dir, area, names, validation_rooms, "validation")
        held = set(validation_rooms)
        for a, rooms in sorted(by_area.items(), key=lambda item: str(item[0])):
            if held.issuperset(rooms):
                raise DataError(f"validation_rooms takes every room of training area {a} "
                                f"({', '.join(rooms)}): at least one must stay for training")
    else:
        raise DataError(f"validation_rooms must be a fraction in [0, 1) or a list of room "
                        f"names, got {validation_rooms!r}")
    return [n for n in names if n not in held], [n for n in names if n in held]


def _draw_validation_rooms(by_area: dict, fraction: float, total: int, seed: int,
                           area: int) -> set[str]:
    count = max(1, int(np.floor(round(fraction * total, 9) + 0.5)))  # round(): 0.29 * 50 is 14.499999...
    spare = sum(len(rooms) - 1 for rooms in by_area.values())
    if count > spare:
        raise DataError(f"validation_rooms={fraction} asks for {count} of the {total} training "
                        f"rooms, but only {spare} can be held out keeping a room in every "
                        f"training area")
    rng = np.random.default_rng([int(seed), int(area)])
    areas = sorted(by_area, key=str)
    areas = [areas[i] for i in rng.permutation(len(areas))]
    queues = {a: [by_area[a][i] for i in rng.permutation(len(by_area[a]))] for a in areas}
    held: list[str] = []
    while len(held) < count:
        for a in areas:
            if len(held) < count and len(queues[a]) > 1:
                held.append(queues[a].pop())
    return set(held)


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

def seed_int(*parts: int) -> int:
    """A 31-bit integer seed derived from the parts (for tf.data ops)."""
    return int(np.random.default_rng([int(p) for p in parts]).integers(1, 2**31 - 1))


def _per_file(paths: Sequence[str], order: np.ndarray,
              produce: Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]],
              num_parallel_calls: int | None) -> tf.data.Dataset:
    """Files in `order`, each mapped by `produce(file index)` to (data, semantic, instance)
    arrays of its blocks; any failure is a DataError naming the file."""

    def run(index):
        i = int(index)
        try:
            return produce(i)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{paths[i]}: cannot read blocks: {e}") from e

    def load(index):
        return tf.numpy_function(run, [index], (tf.float32, tf.int32, tf.int32), stateful=False)

    parallel = tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(order, np.int64))
    return ds.map(load, num_parallel_calls=parallel, deterministic=True)


def _read_blocks(path: str, num_points: int) -> s3dis.Blocks:
    blocks = s3dis.read_blocks_h5(path)
    if blocks.data.shape[1] != num_points:
        raise DataError(f"{path}: blocks of {blocks.data.shape[1]} points, expected {num_points}")
    return blocks


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


def check_batch_args(batch_size: int, num_points: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")


def _check_sampling(sampling: str, block_size: float, stride: float,
                    blocks_per_room: int | None) -> None:
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLING_MODES)}, "
                         f"got {sampling!r}")
    if blocks_per_room is not None and sampling != "random_corners":
        raise ValueError(f"blocks_per_room={blocks_per_room} applies to sampling="
                         f"'random_corners' only; sampling={sampling!r} takes every window")
    if not block_size > 0:
        raise ValueError(f"block_size must be > 0, got {block_size}")
    if sampling == "resample" and not 0 < stride <= block_size:
        raise ValueError(f"stride must be in (0, block_size={block_size}], got {stride}")


def training_dataset(out_dir: str | os.PathLike, area: int, batch_size: int,
                     num_points: int = 4096, seed: int = 0, epoch: int = 0,
                     sampling: str = "resample", block_size: float = 1.0, stride: float = 0.5,
                     blocks_per_room: int | None = None, min_points: int = 100,
                     rooms: Sequence[str] | None = None,
                     shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, drop_remainder: bool = True,
                     num_parallel_calls: int | None = None,
                     cache_rooms: bool | RoomCache = True, check_files: bool = True,
                     prefetch: bool = True, files: Sequence[str | os.PathLike] | None = None,
                     count_labelled: bool = False) -> tf.data.Dataset:
    """One epoch of training blocks from every area but `area`, in `sampling` mode (see the
    module docstring): "resample" (stride-`stride` windows of `block_size`, points drawn
    afresh), "fixed" (the prepared h5 blocks; `block_size`, `stride` and `min_points` are those
    of the preparation) or "random_corners" (`blocks_per_room` random corners a room, default
    `s3dis.random_block_count`; `blocks_per_room` is refused in the other modes).

    `rooms`: names of training-list rooms (e.g. "Area_1_office_1") to train on, default all.
    `files`: room files to train on instead of an area's lists (datasets without areas, e.g.
    ScanNet's train scenes; `area` and `rooms` are then unused). `count_labelled`: `min_points`
    counts labelled points (semantic >= 0) only, as ScanNet's training does.
    Windows / corners with fewer than `min_points` points are dropped. Blocks are shuffled in a
    buffer of `shuffle_buffer` and batched. `num_parallel_calls` rooms are processed at once
    (default tf.data.AUTOTUNE); results are deterministic for (seed, epoch) regardless.
    `cache_rooms` ("resample", "random_corners"): True keeps the rooms loaded by this dataset in
    memory (a new RoomCache), a RoomCache shares them (e.g. across epochs), False reloads each
    room every time.
    """
    check_batch_args(batch_size, num_points)
    _check_sampling(sampling, block_size, stride, blocks_per_room)
    fixed = sampling == "fixed"
    files = _given_files(files, fixed) if files is not None else \
        _training_files(out_dir, area, "blocks" if fixed else "rooms", rooms)
    if check_files:
        for f in files:
            _check_block_file(f, num_points) if fixed else _check_room_file(f)
    cache = cache_rooms if isinstance(cache_rooms, RoomCache) else \
        RoomCache() if cache_rooms else None
    paths = [str(f) for f in files]
    crcs = [zlib.crc32(Path(p).stem.encode()) for p in paths]
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(len(paths))

    def produce(i):
        rng = np.random.default_rng([int(seed), int(epoch), crcs[i]])
        if fixed:
            blocks = _read_blocks(paths[i], num_points)
        else:
            room = cache.get(paths[i]) if cache is not None else s3dis.load_room(paths[i])
            if sampling == "random_corners":
                blocks = s3dis.random_blocks(room, blocks_per_room, num_points, block_size,
                                             min_points, rng)
                return blocks.data, blocks.semantic, blocks.instance
            blocks = s3dis.test_blocks(room, num_points, block_size, stride, min_points, rng,
                                       count_labelled)
        within = rng.permutation(len(blocks.data))
        return blocks.data[within], blocks.semantic[within], blocks.instance[within]

    ds = _per_file(paths, order, produce, num_parallel_calls)
    return _finish(ds, num_points, batch_size, drop_remainder, True, shuffle_buffer,
                   seed_int(seed, epoch, 1), prefetch)


def epoch_blocks(out_dir: str | os.PathLike, area: int, sampling: str = "resample",
                 num_points: int = 4096, block_size: float = 1.0, stride: float = 0.5,
                 blocks_per_room: int | None = None, min_points: int = 100,
                 rooms: Sequence[str] | None = None, files: Sequence[str | os.PathLike] | None = None,
                 count_labelled: bool = False) -> int:
    """The number of blocks one `training_dataset` epoch with these arguments yields (before
    batching). Exact for "resample" (the windows holding >= `min_points` points, counted by
    `s3dis.window_point_counts` without sampling; loads every room once) and "fixed" (the
    blocks of the h5 files, read from their headers, checked to hold `num_points` points). For
    "random_corners" it is the number of corners drawn, an upper bound: corners whose block
    has fewer than `min_points` points are dropped while the epoch is cut.
    """
    _check_sampling(sampling, block_size, stride, blocks_per_room)
    fixed = sampling == "fixed"
    files = _given_files(files, fixed) if files is not None else \
        _training_files(out_dir, area, "blocks" if fixed else "rooms", rooms)
    if fixed:
        return sum(_check_block_file(f, num_points) for f in files)
    if sampling == "random_corners" and blocks_per_room is not None:
        return blocks_per_room * len(files)
    total = 0
    for f in files:
        room = s3dis.load_room(f)
        if sampling == "random_corners":
            total += s3dis.random_block_count(room, block_size)
        else:
            total += int((s3dis.window_point_counts(room, block_size, stride, count_labelled)[1]
                          >= min_points).sum())
    return total


def _given_files(files: Sequence[str | os.PathLike], fixed: bool) -> list[Path]:
    """Explicit training files, each checked to exist (DataError naming it)."""
    paths = [Path(f) for f in files]
    if not paths:
        raise DataError("no training files")
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: {'block' if fixed else 'room'} file missing")
    return paths


def room_blocks_dataset(files: Sequence[str | os.PathLike], batch_size: int, num_points: int = 4096,
                        block_size: float = 1.0, stride: float = 0.5, min_points: int = 100,
                        seed: int = 0, count_labelled: bool = False,
                        num_parallel_calls: int | None = None) -> tf.data.Dataset:
    """The stride-`stride` blocks of the given room files, their points drawn with generators
    seeded by (seed, room): the same batches every time, room after room in the given order,
    blocks in the serpentine order, the last batch kept (validation on rooms without prepared
    block files, e.g. ScanNet's validation scenes)."""
    check_batch_args(batch_size, num_points)
    paths = [str(p) for p in _given_files(files, fixed=False)]
    for path in paths:
        _check_room_file(Path(path))
    crcs = [zlib.crc32(Path(p).stem.encode()) for p in paths]

    def produce(i):
        blocks = s3dis.test_blocks(s3dis.load_room(paths[i]), num_points, block_size, stride, min_points,
                                   np.random.default_rng([int(seed), crcs[i]]), count_labelled)
        return blocks.data, blocks.semantic, blocks.instance

    ds = _per_file(paths, np.arange(len(paths)), produce, num_parallel_calls)
    return _finish(ds, num_points, batch_size, False, False, 0, 0, True)


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
    check_batch_args(batch_size, num_points)
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

    def produce(i):
        blocks = _read_blocks(paths[i], num_points)
        return blocks.data, blocks.semantic, blocks.instance

    ds = _per_file(paths, order, produce, num_parallel_calls)
    return _finish(ds, num_points, batch_size, drop_remainder, shuffle, shuffle_buffer,
                   seed_int(seed, 3), prefetch)


def validation_dataset(out_dir: str | os.PathLike, rooms: Sequence[str], batch_size: int,
                       num_points: int = 4096) -> tf.data.Dataset:
    """The prepared blocks (`blocks/<room>.h5`) of the named rooms, room after room in the
    given order, blocks in file order, the last batch kept: the same batches every time."""
    if isinstance(rooms, (str, bytes)):
        raise DataError(f"validation rooms must be a list of room names, got {rooms!r}")
    names = list(rooms)
    if not names:
        raise DataError(f"validation_dataset: no validation rooms for {out_dir}")
    files = [prepare_s3dis.room_outputs(out_dir, name)[1] for name in names]
    return fixed_dataset(out_dir, 0, batch_size, num_points=num_points, files=files)
