"""S3DIS rooms, 1 m x 1 m blocks, block HDF5 files and per-area file lists (NumPy; h5py for the block files).

Ported from the original JSNet data preparation (collect step, `room2blocks_plus_normalized`,
`s3dis_gen_h5`, the list generators and `estimate_mean_ins_size`). Deliberate differences:

* instance ids are int32 (the original squeezed them through uint8, which wraps past 255);
* annotation files are read in sorted order, so instance ids are reproducible;
* a block with more points than `num_points` keeps a random subset *without* replacement (the
  original drew with replacement); a smaller block keeps all its points plus random duplicates,
  as the original did;
* a class name other than the 13 classes or `stairs` (mapped to clutter, as the original's
  collect step does) is an error instead of silently becoming clutter;
* a room narrower than the block in x or y still gets one block row/column;
* a class with no instance in the training areas gets mean instance size 0 (the original wrote
  the integer cast of NaN).

Nothing here imports TensorFlow; the tf.data pipeline lives in `jsnet_tf.data.pipeline`. h5py is
imported by the two block-file functions only, so that a module needing just the class names or
the room files (`jsnet_tf.io`, for one) does not load it.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jsnet_tf.errors import DataError
from jsnet_tf.files import AtomicTarget, parse_numbers, write_text_atomic

CLASSES = ("ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair",
           "sofa", "bookcase", "board", "clutter")
NUM_CLASSES = len(CLASSES)
CLASS_TO_LABEL = {name: i for i, name in enumerate(CLASSES)}
# Annotation class names outside CLASSES that the original folds into clutter.
CLASS_ALIASES = {"stairs": "clutter"}
NUM_CHANNELS = 9
# One colour per class (pictures, coloured PLYs, legends), distinct from each other, from the grey
# of unlabelled points (128, 128, 128) and from white.
_CLASS_COLORS = {
    "ceiling": (152, 223, 138), "floor": (140, 86, 75), "wall": (174, 199, 232),
    "beam": (255, 187, 120), "column": (148, 103, 189), "window": (23, 190, 207),
    "door": (214, 39, 40), "table": (44, 160, 44), "chair": (255, 127, 14),
    "sofa": (227, 119, 194), "bookcase": (31, 119, 180), "board": (188, 189, 34),
    "clutter": (57, 59, 121),
}
PALETTE = np.array([_CLASS_COLORS[name] for name in CLASSES], np.uint8)
PALETTE.flags.writeable = False

_ROOM_FILE_RE = re.compile(r"^Area_(\d+)_(.+)\.(npz|h5)$")
# ASCII control characters other than tab / newline / carriage return: the v1.2 release has one
# of these glued to a number in Area_5/hallway_6; such bytes are dropped with a DataWarning.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class DataWarning(UserWarning):
    """Input data was repaired while reading (e.g. a stray control character removed)."""


@dataclasses.dataclass
class Room:
    """One S3DIS room; `xyz` is shifted so that the room's minimum corner is the origin."""

    name: str                # e.g. "Area_1_office_2"
    xyz: np.ndarray          # (N, 3) float32, metres
    rgb: np.ndarray          # (N, 3) uint8
    semantic: np.ndarray     # (N,) int32, index into CLASSES
    instance: np.ndarray     # (N,) int32, one id per annotation file, 0.., unique in the room

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


class Blocks(NamedTuple):
    """Blocks cut from a room; unpacks as `data, semantic, instance, indices`."""

    data: np.ndarray       # (B, N, 9) float32
    semantic: np.ndarray   # (B, N) int32
    instance: np.ndarray   # (B, N) int32
    indices: np.ndarray | None  # (B, N) int32 point indices into the room (None if unknown)


# ------------------------------------------------------------------------------------------------
# Raw rooms
# ------------------------------------------------------------------------------------------------

def class_label(name: str, path: str | os.PathLike = "") -> int:
    """The label of an annotation class name (`stairs` -> clutter); DataError if unknown."""
    key = CLASS_ALIASES.get(name, name)
    if key not in CLASS_TO_LABEL:
        raise DataError(f"{path}: unknown class {name!r} (expected one of {', '.join(CLASSES)}"
                        f" or {', '.join(CLASS_ALIASES)})")
    return CLASS_TO_LABEL[key]


def _find_bad_line(path: Path, text: str) -> str | None:
    """Slow scan, used only after the fast parse failed: describe the first bad line."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.split():
            continue
        values, problem = parse_numbers(path, number, line, 6, "X Y Z R G B")
        if problem:
            return problem
        if not all(0.0 <= v <= 255.0 for v in values[3:]):
            return f"{path}:{number}: colour outside 0..255 in {line.strip()!r}"
    return None


def read_points_txt(path: str | os.PathLike) -> np.ndarray:
    """Reads one annotation file (`X Y Z R G B` a line) as an (N, 6) float64 array."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    stray = _CONTROL_CHARS.search(text)
    if stray is not None:
        line = text.count("\n", 0, stray.start()) + 1
        count = len(_CONTROL_CHARS.findall(text))
        warnings.warn(f"{path}:{line}: removed {count} stray control character(s) "
                      f"(first {stray.group()!r})", DataWarning, stacklevel=2)
        text = _CONTROL_CHARS.sub("", text)
    if not text.strip():
        raise DataError(f"{path}: empty annotation file (no points)")
    try:
        points = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=2, comments=None)
    except ValueError as e:
        raise DataError(_find_bad_line(path, text) or f"{path}: cannot parse: {e}") from None
    if (points.shape[1] != 6 or not np.isfinite(points).all()
            or points[:, 3:].min() < 0 or points[:, 3:].max() > 255):
        raise DataError(_find_bad_line(path, text) or f"{path}: expected 6 columns, "
                        f"found {points.shape[1]}")
    return points


def read_room(room_dir: str | os.PathLike, name: str | None = None) -> Room:
    """Reads `Area_k/<room>/Annotations/<class>_<i>.txt` into a Room.

    `name` defaults to `<area dir name>_<room dir name>`, e.g. "Area_1_office_2".
    """
    room_dir = Path(room_dir)
    if name is None:
        name = f"{room_dir.parent.name}_{room_dir.name}"
    anno_dir = room_dir / "Annotations"
    if not anno_dir.is_dir():
        raise DataError(f"{anno_dir}: missing Annotations folder")
    files = sorted(p for p in anno_dir.glob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"{anno_dir}: no annotation .txt files")
    chunks, semantic, instance = [], [], []
    for instance_id, f in enumerate(files):
        label = class_label(f.name.split("_")[0], f)
        points = read_points_txt(f)
        chunks.append(points)
        semantic.append(np.full(len(points), label, np.int32))
        instance.append(np.full(len(points), instance_id, np.int32))
    points = np.concatenate(chunks, 0)
    xyz = points[:, :3] - points[:, :3].min(axis=0)
    return Room(name=name, xyz=xyz.astype(np.float32),
                rgb=np.rint(points[:, 3:]).astype(np.uint8),
                semantic=np.concatenate(semantic), instance=np.concatenate(instance))


# ------------------------------------------------------------------------------------------------
# Room files
# ------------------------------------------------------------------------------------------------

def save_room(path: str | os.PathLike, room: Room,
              extra: Mapping[str, np.ndarray] | None = None) -> None:
    """Writes a room as .npz (xyz, rgb, semantic, instance, name), atomically; `extra` arrays
    (e.g. a ScanNet scene's `offset` and `nyu40`) are stored beside them under their keys."""
    with AtomicTarget(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, name=np.array(room.name), xyz=room.xyz.astype(np.float32),
                     rgb=room.rgb.astype(np.uint8), semantic=room.semantic.astype(np.int32),
                     instance=room.instance.astype(np.int32), **(extra or {}))


def load_room(path: str | os.PathLike) -> Room:
    """Reads a room written by `save_room`; DataError naming the file if it is unreadable."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            room = Room(name=str(z["name"]), xyz=z["xyz"], rgb=z["rgb"],
                        semantic=z["semantic"], instance=z["instance"])
    except Exception as e:  # zipfile / KeyError / OSError / ValueError: all mean a bad file
        raise DataError(f"{path}: not a readable room file: {e}") from e
    n = len(room.xyz)
    if (room.xyz.shape != (n, 3) or room.rgb.shape != (n, 3) or room.semantic.shape != (n,)
            or room.instance.shape != (n,)):
        raise DataError(f"{path}: inconsistent room arrays")
    return room


# ------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------

def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def sample_indices(count: int, num_points: int, rng=None) -> np.ndarray:
    """Indices 0..count-1 to keep `num_points` of a block's points.

    More points: a random subset without replacement. Fewer: all of them, then random duplicates.
    """
    rng = _rng(rng)
    if count >= num_points:
        return rng.choice(count, num_points, replace=False) if count > num_points \
            else np.arange(count)
    return np.concatenate([np.arange(count), rng.choice(count, num_points - count)])


def test_block_origins(limit_xy: Sequence[float], block_size: float = 1.0,
                       stride: float = 0.5) -> np.ndarray:
    """(B, 2) block corners of the sliding-window grid, in the original's serpentine order:
    x-major, y ascending in even columns and descending in odd ones."""
    if stride > block_size:
        raise ValueError(f"stride {stride} > block_size {block_size}")
    nx, ny = (max(1, int(np.ceil((float(lim) - block_size) / stride)) + 1)
              for lim in limit_xy[:2])
    origins = []
    for i in range(nx):
        js = range(ny) if i % 2 == 0 else range(ny - 1, -1, -1)
        origins.extend((i * stride, j * stride) for j in js)
    return np.asarray(origins, np.float64).reshape(-1, 2)


def room_limit(room: Room) -> np.ndarray:
    """The room's max x, y, z (float64), 1 where it is 0: the divisor of the normalised channels."""
    return extent_limit(room.xyz.astype(np.float64).max(axis=0) if len(room) else np.ones(3))


def extent_limit(top: np.ndarray) -> np.ndarray:
    """`room_limit` of a cloud whose max x, y, z is `top` (float64)."""
    return np.where(top > 0, top, 1.0)


def normalised_xyz(xyz: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Room coordinates (float32) divided by `limit` in float64, as float32: the normalised channels."""
    return (np.asarray(xyz).astype(np.float64) / limit).astype(np.float32)


def block_channels(room: Room, chosen: np.ndarray, limit: np.ndarray, block_size: float = 1.0) -> np.ndarray:
    """The 9 network channels of the chosen room points, (len(chosen), 9) float32: x, y minus
    (their min + block_size / 2); z; RGB / 255; x, y, z divided by `limit` (`room_limit`), as
    `room2blocks_plus_normalized`."""
    p = room.xyz[chosen].astype(np.float64)
    block = np.empty((len(chosen), NUM_CHANNELS), np.float64)
    block[:, 0] = p[:, 0] - (p[:, 0].min() + block_size / 2)
    block[:, 1] = p[:, 1] - (p[:, 1].min() + block_size / 2)
    block[:, 2] = p[:, 2]
    block[:, 3:6] = room.rgb[chosen].astype(np.float64) / 255.0
    block[:, 6:9] = p / limit
    return block.astype(np.float32)


def blocks_at(room: Room, origins: np.ndarray, num_points: int = 4096, block_size: float = 1.0,
              min_points: int = 100, rng=None, count_labelled: bool = False) -> Blocks:
    """Cuts blocks with the given (x, y) corners; blocks with < min_points points (with
    `count_labelled`, labelled points: semantic >= 0, ScanNet's training rule) are dropped.

    Channels: `block_channels` of the block's sampled points (all of them, labelled or not).
    """
    rng = _rng(rng)
    xyz = room.xyz.astype(np.float64)
    limit = room_limit(room)
    datas, sems, inss, idxs = [], [], [], []
    for x0, y0 in np.asarray(origins, np.float64).reshape(-1, 2):
        inside = ((xyz[:, 0] >= x0) & (xyz[:, 0] <= x0 + block_size)
                  & (xyz[:, 1] >= y0) & (xyz[:, 1] <= y0 + block_size))
        members = np.flatnonzero(inside)
        counted = np.count_nonzero(room.semantic[members] >= 0) if count_labelled else len(members)
        if counted < min_points:
            continue
        chosen = members[sample_indices(len(members), num_points, rng)]
        datas.append(block_channels(room, chosen, limit, block_size))
        sems.append(room.semantic[chosen])
        inss.append(room.instance[chosen])
        idxs.append(chosen.astype(np.int32))
    if not datas:
        return Blocks(np.zeros((0, num_points, NUM_CHANNELS), np.float32),
                      np.zeros((0, num_points), np.int32), np.zeros((0, num_points), np.int32),
                      np.zeros((0, num_points), np.int32))
    return Blocks(np.stack(datas), np.stack(sems).astype(np.int32),
                  np.stack(inss).astype(np.int32), np.stack(idxs))


def test_blocks(room: Room, num_points: int = 4096, block_size: float = 1.0,
                stride: float = 0.5, min_points: int = 100, rng=None, count_labelled: bool = False) -> Blocks:
    """The sliding-window blocks of a room (evaluation / the prepared HDF5 files / resampled
    training blocks); `count_labelled`: see `blocks_at`."""
    limit = room.xyz.max(axis=0) if len(room) else np.zeros(3)
    return blocks_at(room, test_block_origins(limit, block_size, stride), num_points, block_size,
                     min_points, rng, count_labelled)


test_blocks.__test__ = False  # not a pytest test, despite the name


def window_point_counts(room: Room, block_size: float = 1.0,
                        stride: float = 0.5, count_labelled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(origins (B, 2), counts (B,)): the sliding-window corners of `test_blocks` and how many
    room points (with `count_labelled`, labelled points) each window holds, by the same
    closed-interval test as `blocks_at` but without cutting or sampling (points sorted by x, then
    by y within each column of windows)."""
    limit = room.xyz.max(axis=0) if len(room) else np.zeros(3)
    origins = test_block_origins(limit, block_size, stride)
    xyz = room.xyz.astype(np.float64)
    if count_labelled:
        xyz = xyz[room.semantic >= 0]
    by_x = np.argsort(xyz[:, 0])
    xs, ys = xyz[by_x, 0], xyz[by_x, 1]
    counts = np.zeros(len(origins), np.int64)
    for x0 in np.unique(origins[:, 0]):
        column = origins[:, 0] == x0
        lo = np.searchsorted(xs, x0, side="left")
        hi = np.searchsorted(xs, x0 + block_size, side="right")
        column_ys = np.sort(ys[lo:hi])
        y0 = origins[column, 1]
        counts[column] = (np.searchsorted(column_ys, y0 + block_size, side="right")
                          - np.searchsorted(column_ys, y0, side="left"))
    return origins, counts


def random_block_count(room: Room, block_size: float = 1.0) -> int:
    """The default number of random block corners of a room: as many as block_size cells cover
    its x-y extent, ceil(max_x / block_size) * ceil(max_y / block_size), at least 1."""
    limit = room.xyz.max(axis=0).astype(np.float64) if len(room) else np.zeros(3)
    return max(1, int(np.ceil(limit[0] / block_size)) * int(np.ceil(limit[1] / block_size)))


def random_blocks(room: Room, count: int | None = None, num_points: int = 4096,
                  block_size: float = 1.0, min_points: int = 100, rng=None) -> Blocks:
    """Training blocks: `count` corners drawn uniformly in [-block_size, room max) in x and y
    (default count: `random_block_count`); blocks with fewer than `min_points` points are
    dropped, so up to `count` blocks come back."""
    rng = _rng(rng)
    limit = room.xyz.max(axis=0).astype(np.float64) if len(room) else np.zeros(3)
    if count is None:
        count = random_block_count(room, block_size)
    origins = np.stack([rng.uniform(-block_size, limit[0], count),
                        rng.uniform(-block_size, limit[1], count)], axis=1)
    return blocks_at(room, origins, num_points, block_size, min_points, rng)


# ------------------------------------------------------------------------------------------------
# Block HDF5 files (original format: data / seglabels / pid, plus `indices` when known)
# ------------------------------------------------------------------------------------------------

def write_blocks_h5(path: str | os.PathLike, data: np.ndarray, semantic: np.ndarray,
                    instance: np.ndarray, indices: np.ndarray | None = None,
                    extra: dict | None = None) -> None:
    """Writes blocks as HDF5 (`data` float32, `seglabels` int32, `pid` int32, optional
    `indices` int32, and any `extra` int32 datasets), atomically."""
    data = np.asarray(data, np.float32)
    if data.ndim != 3:
        raise ValueError(f"block data must be (B, N, C), got {data.shape}")
    b, n = data.shape[:2]
    if np.shape(semantic) != (b, n) or np.shape(instance) != (b, n):
        raise ValueError(f"bad block shapes: data {data.shape}, semantic {np.shape(semantic)}, "
                         f"instance {np.shape(instance)}")
    import h5py

    with AtomicTarget(path) as tmp:
        with h5py.File(tmp, "w") as f:
            opts = dict(compression="gzip", compression_opts=1) if b else {}
            f.create_dataset("data", data=data, **opts)
            f.create_dataset("seglabels", data=np.asarray(semantic, np.int32), **opts)
            f.create_dataset("pid", data=np.asarray(instance, np.int32), **opts)
            if indices is not None:
                f.create_dataset("indices", data=np.asarray(indices, np.int32), **opts)
            for name, values in (extra or {}).items():
                f.create_dataset(name, data=np.asarray(values, np.int32))


def read_blocks_h5(path: str | os.PathLike) -> Blocks:
    """Reads a block file (`seglabels` or `seglabel`); DataError naming the file if it is
    missing, truncated, corrupt or inconsistent. `indices` is None when the file has none."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("data", "pid") if k not in f]
            sem_key = "seglabels" if "seglabels" in f else "seglabel" if "seglabel" in f else None
            if missing or sem_key is None:
                raise DataError(f"{path}: missing dataset(s) "
                                f"{', '.join(missing + ([] if sem_key else ['seglabels']))}")
            data = f["data"][()].astype(np.float32)
            semantic = f[sem_key][()].astype(np.int32)
            instance = f["pid"][()].astype(np.int32)
            indices = f["indices"][()].astype(np.int32) if "indices" in f else None
    except DataError:
        raise
    except Exception as e:  # OSError for truncated / non-HDF5 files, KeyError, ...
        raise DataError(f"{path}: not a readable block file: {e}") from e
    if (data.ndim != 3 or data.shape[2] != NUM_CHANNELS or semantic.shape != data.shape[:2]
            or instance.shape != data.shape[:2]
            or (indices is not None and indices.shape != data.shape[:2])):
        raise DataError(f"{path}: inconsistent shapes: data {data.shape}, semantic "
                        f"{semantic.shape}, pid {instance.shape}")
    return Blocks(data, semantic, instance, indices)


# ------------------------------------------------------------------------------------------------
# Per-area lists and mean instance sizes
# ------------------------------------------------------------------------------------------------

def parse_room_file_name(path: str | os.PathLike) -> tuple[int, str] | None:
    """(area, room) of `Area_<k>_<room>.npz|h5`, or None for any other name (temp files...)."""
    m = _ROOM_FILE_RE.match(Path(path).name)
    return (int(m.group(1)), m.group(2)) if m else None


def instance_sizes(semantic: np.ndarray, instance: np.ndarray,
                   num_classes: int = NUM_CLASSES) -> list[list[int]]:
    """Per class, the point count of every instance (its class: the mode of its labels, ties to
    the lowest), counted over all blocks of one file as `estimate_mean_ins_size` does."""
    semantic = np.asarray(semantic).reshape(-1)
    instance = np.asarray(instance).reshape(-1)
    sizes: list[list[int]] = [[] for _ in range(num_classes)]
    for g in np.unique(instance):
        mask = instance == g
        label = int(np.argmax(np.bincount(semantic[mask], minlength=num_classes)))
        sizes[label].append(int(mask.sum()))
    return sizes


def mean_instance_size(per_file_sizes: Iterable[list[list[int]]],
                       num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(num_classes,) float64: per class, the integer part of the mean instance size (0 where a
    class has no instance)."""
    pooled: list[list[int]] = [[] for _ in range(num_classes)]
    for sizes in per_file_sizes:
        for c in range(num_classes):
            pooled[c].extend(sizes[c])
    return np.array([float(int(np.mean(s))) if s else 0.0 for s in pooled])


def write_mean_ins_size(path: str | os.PathLike, sizes: np.ndarray) -> None:
    """The original's format: `np.savetxt`, one class a line."""
    buf = io.StringIO()
    np.savetxt(buf, np.asarray(sizes, np.float64))
    write_text_atomic(path, buf.getvalue())


def read_mean_ins_size(path: str | os.PathLike, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """The `num_classes` sizes written by `write_mean_ins_size`; DataError naming the file."""
    path = Path(path)
    try:
        sizes = np.loadtxt(path, ndmin=1)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable mean instance size file: {e}") from e
    if sizes.shape != (num_classes,):
        raise DataError(f"{path}: expected {num_classes} values, found {sizes.size}")
    return sizes


def read_file_list(path: str | os.PathLike) -> list[Path]:
    """Reads a list written by `write_area_lists`: entries are relative to the dataset root (the
    folder holding `lists/`); absolute entries are kept as they are."""
    path = Path(path)
    root = path.parent.parent
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read file list: {e}") from e
    return [p if p.is_absolute() else root / p for p in (Path(s.strip()) for s in lines
                                                          if s.strip())]


SPLITS = ("train", "test")  # of an area's lists: the other areas / the area itself


def list_path(out_dir: str | os.PathLike, area: int, split: str, kind: str) -> Path:
    """`lists/` file of the prepared folder: kind "rooms" (npz) or "blocks" (h5); split
    "train" (every area but `area`) or "test" (`area`)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if kind not in ("rooms", "blocks"):
        raise ValueError(f"kind must be 'rooms' or 'blocks', got {kind!r}")
    mid = "hdf5_file_list" if kind == "blocks" else "file_list"
    name = f"train_{mid}_woArea{area}.txt" if split == "train" else f"test_{mid}_Area{area}.txt"
    return Path(out_dir) / "lists" / name


def mean_ins_size_path(out_dir: str | os.PathLike, area: int) -> Path:
    """`lists/mean_ins_size_woArea{k}.txt`: the mean instance size of each class over the training
    blocks of test area k (every other area), the sizes the evaluation's size filter uses."""
    return Path(out_dir) / "lists" / f"mean_ins_size_woArea{area}.txt"


def write_area_lists(out_dir: str | os.PathLike) -> dict[int, dict[str, Path]]:
    """Writes, under `out_dir/lists/`, for every area k that has block files in `out_dir/blocks`:

    * `train_hdf5_file_list_woArea{k}.txt` / `test_hdf5_file_list_Area{k}.txt`: block files
      (`blocks/Area_j_<room>.h5`) of all other areas / of area k;
    * `train_file_list_woArea{k}.txt` / `test_file_list_Area{k}.txt`: the same for room files
      (`rooms/Area_j_<room>.npz`), for random training blocks;
    * `mean_ins_size_woArea{k}.txt`: per-class mean instance size over the training block files.

    Entries are relative to `out_dir`, sorted. Returns {k: {kind: path}}.
    """
    out_dir = Path(out_dir)
    lists_dir = out_dir / "lists"
    lists_dir.mkdir(parents=True, exist_ok=True)
    by_area: dict[int, list[str]] = {}
    for h5 in sorted((out_dir / "blocks").glob("Area_*.h5")):
        parsed = parse_room_file_name(h5)
        if parsed is not None:
            by_area.setdefault(parsed[0], []).append(h5.stem)
    sizes = {}
    for stems in by_area.values():
        for stem in stems:
            blocks = read_blocks_h5(out_dir / "blocks" / f"{stem}.h5")
            sizes[stem] = instance_sizes(blocks.semantic, blocks.instance)
    written: dict[int, dict[str, Path]] = {}
    for k in sorted(by_area):
        train = sorted(s for a, stems in by_area.items() if a != k for s in stems)
        test = sorted(by_area[k])
        files = {
            "train_h5": (list_path(out_dir, k, "train", "blocks"), [f"blocks/{s}.h5" for s in train]),
            "test_h5": (list_path(out_dir, k, "test", "blocks"), [f"blocks/{s}.h5" for s in test]),
            "train_rooms": (list_path(out_dir, k, "train", "rooms"), [f"rooms/{s}.npz" for s in train]),
            "test_rooms": (list_path(out_dir, k, "test", "rooms"), [f"rooms/{s}.npz" for s in test]),
        }
        written[k] = {}
        for kind, (path, entries) in files.items():
            write_text_atomic(path, "".join(e + "\n" for e in entries))
            written[k][kind] = path
        mean_path = mean_ins_size_path(out_dir, k)
        write_mean_ins_size(mean_path, mean_instance_size(sizes[s] for s in train))
        written[k]["mean_ins_size"] = mean_path
    return written
