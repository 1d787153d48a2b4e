"""ShapeNet part (`shapenetcore_partanno_segmentation_benchmark_v0_normal`): reader, instance
labels, sampling, prepared HDF5 files and a small synthetic part set (NumPy, SciPy, h5py only).

Dataset layout (the PointNet++ "normal" release)::

    <root>/synsetoffset2category.txt              "Airplane\t02691156" a line
    <root>/<synset>/<shape_id>.txt                "x y z nx ny nz part" a line, part in 0..49
                                                  (the part written as a float, "3.000000")
    <root>/train_test_split/shuffled_{train,val,test}_file_list.json
                                                  ["shape_data/<synset>/<shape_id>", ...]

Conventions (documented choices):

* the synset of each category is read from the release's own `synsetoffset2category.txt`
  (`read_category_file`); the code keeps only what the release does not carry: each category's
  range of global part ids 0..49 (`CATEGORIES`, the standard PointNet / PointNet++
  `seg_classes`). A part label outside its category's range is a DataError;
* xyz is normalised to the unit sphere as PointNet++'s `pc_normalize` does: centred on the mean
  of the shape's points, then divided by the largest distance to that centre (normals unchanged);
* instance labels: ShapeNet part has none. The JSNet paper follows SGPN, which makes instances
  of the connected components of each part: two points of the *same* part closer than `radius`
  (in the normalised unit-sphere coordinates, default `DEFAULT_INSTANCE_RADIUS` = 0.1) are
  connected, and every connected component is one instance (e.g. the four separate legs of a
  table are four instances of the part "leg"). Instance ids are 0.. and unique in the shape,
  ordered by part id, then by each component's first point;
* `sample_points` keeps a random subset *without* replacement when a shape has more points than
  asked, and all points plus random duplicates when it has fewer (as `s3dis.sample_indices`);
  `prepare_shapenet` draws each shape's sample from its own generator, seeded with (seed,
  category, shape id), so a shape's points do not depend on the order or the split it is in;
* prepared HDF5 files use the SGPN/JSNet block format: `data` (B, N, 6) float32 (normalised xyz,
  normals), `seglabels` (B, N) int32 part ids (semantic), `pid` (B, N) int32 instance ids and
  `category` (B,) int32 index into `CATEGORY_NAMES`. (In PointNet's own ShapeNet HDF5 files
  `pid` meant the *part* id; here, as in the S3DIS block files, it is the instance id.) A split's
  files, listed in `<out>/<split>_hdf5_file_list.txt`, hold its shapes in the split json's order.

Nothing here imports TensorFlow; the tf.data input is `jsnet_tf.data.shapenet_pipeline`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from jsnet_tf.data.s3dis import PALETTE as _BASE_PALETTE
from jsnet_tf.data.s3dis import sample_indices, write_blocks_h5
from jsnet_tf.errors import DataError
from jsnet_tf.files import AtomicTarget, parse_numbers, write_text_atomic

__all__ = [
    "CATEGORIES", "CATEGORY_NAMES", "Category", "DEFAULT_INSTANCE_RADIUS",
    "NUM_CATEGORIES", "NUM_CHANNELS", "NUM_PARTS", "PART_TO_CATEGORY", "PartSet",
    "RELEASE_SYNSETS", "SPLITS", "Shape", "is_split_file", "list_file", "normalize_xyz",
    "part_instances", "prepare_shapenet", "prepared_files", "read_category_file", "read_shape",
    "read_shapenet_h5", "read_shapenet_h5_size", "read_split", "sample_points",
    "write_shapenet_h5", "write_synthetic_partset",
]


class Category(NamedTuple):
    """What the code knows of a category: its range of global part ids."""

    parts: tuple[int, ...]   # global part ids, contiguous


def _cat(first: int, last: int) -> Category:
    return Category(tuple(range(first, last + 1)))


# The standard PointNet++ `seg_classes`: which global part ids belong to which category. The
# synsets are not here: they come from the release's synsetoffset2category.txt.
CATEGORIES: dict[str, Category] = {
    "Airplane": _cat(0, 3),
    "Bag": _cat(4, 5),
    "Cap": _cat(6, 7),
    "Car": _cat(8, 11),
    "Chair": _cat(12, 15),
    "Earphone": _cat(16, 18),
    "Guitar": _cat(19, 21),
    "Knife": _cat(22, 23),
    "Lamp": _cat(24, 27),
    "Laptop": _cat(28, 29),
    "Motorbike": _cat(30, 35),
    "Mug": _cat(36, 37),
    "Pistol": _cat(38, 40),
    "Rocket": _cat(41, 43),
    "Skateboard": _cat(44, 46),
    "Table": _cat(47, 49),
}
CATEGORY_NAMES = tuple(CATEGORIES)          # index order of the `category` dataset
CATEGORY_INDEX = {name: i for i, name in enumerate(CATEGORY_NAMES)}
NUM_CATEGORIES = len(CATEGORIES)            # 16
NUM_PARTS = 50
# Part colours: the 13 class colours of the S3DIS pictures, in turn over the 50 global part ids; a
# category's parts are at most 6 consecutive ids, so the parts of a shape get distinct colours.
PALETTE = np.resize(_BASE_PALETTE, (NUM_PARTS, 3))
PALETTE.flags.writeable = False
# The name of each global part id: "<Category>/part<k>", k its index among the category's parts.
PART_NAMES = tuple(f"{name}/part{i}" for name, category in CATEGORIES.items() for i in range(len(category.parts)))
NUM_CHANNELS = 6                            # x y z nx ny nz
PART_TO_CATEGORY = np.array([CATEGORY_INDEX[name] for name, c in CATEGORIES.items()
                             for _ in c.parts], np.int32)   # (50,)
DEFAULT_NUM_POINTS = 2048
DEFAULT_INSTANCE_RADIUS = 0.1               # unit-sphere units, see module docstring
DEFAULT_SHAPES_PER_FILE = 512               # ~33 MB per file at 2048 points
SPLITS = ("train", "val", "test")
SPLIT_FILE = "train_test_split/shuffled_{}_file_list.json"
CATEGORY_FILE = "synsetoffset2category.txt"
LIST_FILE = "{}_hdf5_file_list.txt"
H5_FILE = "shapenet_{}_{}.h5"

assert len(PART_TO_CATEGORY) == NUM_PARTS


@dataclasses.dataclass
class Shape:
    """One ShapeNet part shape."""

    category: str            # e.g. "Airplane"
    shape_id: str            # file stem, e.g. "1021a0914a7207aff927ed529ad90a11"
    points: np.ndarray       # (P, 6) float32: x y z (normalised unless read with normalize=False)
    part: np.ndarray         # (P,) int32 global part id 0..49
    instance: np.ndarray     # (P,) int32 connected part component, 0.., unique in the shape

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @property
    def category_index(self) -> int:
        return CATEGORY_INDEX[self.category]


class PartSet(NamedTuple):
    """Contents of a prepared HDF5 file; unpacks as `data, part, instance, category`."""

    data: np.ndarray         # (B, N, 6) float32
    part: np.ndarray         # (B, N) int32  (`seglabels`)
    instance: np.ndarray     # (B, N) int32  (`pid`)
    category: np.ndarray     # (B,) int32    (`category`)


def _category(category: str) -> Category:
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r} (expected one of "
                         f"{', '.join(CATEGORY_NAMES)})")
    return CATEGORIES[category]


# ------------------------------------------------------------------------------------------------
# Reading shapes
# ------------------------------------------------------------------------------------------------

def _find_bad_line(path: Path, text: str, parts: tuple[int, ...], category: str) -> str | None:
    """Slow scan, used only after the fast checks failed: describe the first bad line."""
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        values, problem = parse_numbers(path, number, line, 7, "x y z nx ny nz part")
        if problem:
            return problem
        label = values[6]
        if label != int(label):
            return f"{path}:{number}: part label {tokens[6]!r} is not an integer"
        if int(label) not in parts:
            return (f"{path}:{number}: part {int(label)} outside {category}'s parts "
                    f"{parts[0]}..{parts[-1]}")
    return None


def normalize_xyz(xyz: np.ndarray) -> np.ndarray:
    """PointNet++'s `pc_normalize`: centre on the mean point, scale by the largest distance to it
    (so the shape fits the unit sphere). A single point / all-equal points are only centred."""
    xyz = np.asarray(xyz, np.float64)
    centred = xyz - xyz.mean(axis=0)
    scale = np.sqrt((centred ** 2).sum(axis=1)).max() if len(xyz) else 0.0
    return centred / scale if scale > 0 else centred


def read_shape(path: str | os.PathLike, category: str, normalize: bool = True,
               radius: float | None = DEFAULT_INSTANCE_RADIUS) -> Shape:
    """Reads one `<synset>/<shape_id>.txt` file of `category` (a name in CATEGORIES).

    DataError (naming the file, and the line where one is at fault) for an unreadable or empty
    file, a line without 7 numbers, a non-finite value or a part id outside the category's range.
    xyz is normalised to the unit sphere unless `normalize` is False; instance ids are the
    connected part components for `radius` (computed after normalisation), or all 0 if `radius`
    is None.
    """
    path = Path(path)
    parts = _category(category).parts
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    if not text.strip():
        raise DataError(f"{path}: empty shape file (no points)")
    try:
        values = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=2, comments=None)
    except ValueError as e:
        raise DataError(_find_bad_line(path, text, parts, category)
                        or f"{path}: cannot parse: {e}") from None
    ok = values.shape[1] == 7 and np.isfinite(values).all()
    if ok:
        label = values[:, 6]
        ok = bool((label == np.rint(label)).all() and label.min() >= parts[0]
                  and label.max() <= parts[-1])
    if not ok:
        raise DataError(_find_bad_line(path, text, parts, category)
                        or f"{path}: expected 7 columns, found {values.shape[1]}")
    xyz = normalize_xyz(values[:, :3]) if normalize else values[:, :3]
    part = np.rint(values[:, 6]).astype(np.int32)
    instance = (part_instances(xyz, part, radius) if radius is not None
                else np.zeros(len(part), np.int32))
    points = np.concatenate([xyz, values[:, 3:6]], axis=1).astype(np.float32)
    return Shape(category=category, shape_id=path.stem, points=points, part=part,
                 instance=instance)


def part_instances(xyz: np.ndarray, part: np.ndarray,
                   radius: float = DEFAULT_INSTANCE_RADIUS) -> np.ndarray:
    """(P,) int32 instance ids: the connected components of each part's points, where two points
    of the same part are connected when their distance is at most `radius` (KD-tree radius graph,
    `scipy.sparse.csgraph.connected_components`). This is how SGPN, which the JSNet paper follows,
    made instances for ShapeNet part. Ids are 0.., ordered by part, then by first point."""
    xyz = np.asarray(xyz, np.float64)
    part = np.asarray(part)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or part.shape != (len(xyz),):
        raise ValueError(f"expected xyz (P, 3) and part (P,), got {xyz.shape}, {part.shape}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    instance = np.empty(len(xyz), np.int32)
    next_id = 0
    for p in np.unique(part):
        members = np.flatnonzero(part == p)
        pairs = cKDTree(xyz[members]).query_pairs(radius, output_type="ndarray")
        n = len(members)
        graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])),
                           shape=(n, n))
        count, labels = connected_components(graph, directed=False)
        # Renumber components by their first point, so ids don't depend on SciPy's order.
        _, first = np.unique(labels, return_index=True)
        order = np.empty(count, np.int64)
        order[np.argsort(first)] = np.arange(count)
        instance[members] = next_id + order[labels]
        next_id += count
    return instance


def sample_points(shape: Shape, num_points: int = DEFAULT_NUM_POINTS, rng=None) -> Shape:
    """A copy of `shape` with exactly `num_points` points: a random subset without replacement if
    it has more, all of its points plus random duplicates if it has fewer."""
    if len(shape) == 0:
        raise ValueError(f"shape {shape.shape_id} has no points")
    idx = sample_indices(len(shape), num_points, rng)
    return Shape(shape.category, shape.shape_id, shape.points[idx], shape.part[idx],
                 shape.instance[idx])


# ------------------------------------------------------------------------------------------------
# Category file and splits
# ------------------------------------------------------------------------------------------------

def read_category_file(root: str | os.PathLike) -> dict[str, str]:
    """`<root>/synsetoffset2category.txt` as {category name: synset}, in the file's order: the
    release's own synsets, followed as they are. DataError with file:line for a malformed line,
    a category without a part range in `CATEGORIES`, or a category or synset given twice."""
    path = Path(root) / CATEGORY_FILE
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from e
    result: dict[str, str] = {}
    seen_synsets: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2 or "/" in tokens[1]:
            raise DataError(f"{path}:{number}: expected '<category> <synset>', got {line!r}")
        name, synset = tokens
        if name not in CATEGORIES:
            raise DataError(f"{path}:{number}: unknown category {name!r} (part ranges are known "
                            f"for {', '.join(CATEGORY_NAMES)})")
        if name in result:
            raise DataError(f"{path}:{number}: category {name} listed twice")
        if synset in seen_synsets:
            raise DataError(f"{path}:{number}: synset {synset} listed twice "
                            f"({seen_synsets[synset]} and {name})")
        result[name] = synset
        seen_synsets[synset] = name
    if not result:
        raise DataError(f"{path}: no categories listed")
    return result


def _entry_line(text: str, entry) -> str:
    """':<line>' of a JSON string entry in `text` (the first place it occurs), or ''."""
    at = text.find(json.dumps(entry)) if isinstance(entry, str) else -1
    return f":{text.count(chr(10), 0, at) + 1}" if at >= 0 else ""


def read_split(root: str | os.PathLike, split: str, categories: Sequence[str] | None = None,
               synsets: dict[str, str] | None = None) -> list[tuple[str, Path]]:
    """[(category name, `<root>/<synset>/<shape_id>.txt`)] of a split, in the json's order.

    `split` is "train", "val", "test" or "trainval" (train then val). Entries look like
    "shape_data/<synset>/<shape_id>"; the synset is looked up in `synsets` ({category: synset},
    default: `read_category_file(root)`). A synset not in it or a malformed entry is a DataError
    naming the json (and its line). `categories` keeps only those categories. Shape files are
    not opened here.
    """
    root = Path(root)
    names = ("train", "val") if split == "trainval" else (split,)
    if any(n not in SPLITS for n in names):
        raise ValueError(f"unknown split {split!r} (expected train, val, test or trainval)")
    if categories is not None:
        for c in categories:
            _category(c)
    if synsets is None:
        synsets = read_category_file(root)
    synset_to_category = {synset: name for name, synset in synsets.items()}
    result = []
    for name in names:
        path = root / SPLIT_FILE.format(name)
        try:
            text = path.read_text()
            entries = json.loads(text)
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read split file: {e}") from e
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
        if not isinstance(entries, list):
            raise DataError(f"{path}: expected a JSON list of shape entries")
        for i, entry in enumerate(entries):
            pieces = entry.strip("/").split("/") if isinstance(entry, str) else []
            if len(pieces) < 2 or not pieces[-1] or not pieces[-2]:
                raise DataError(f"{path}{_entry_line(text, entry)}: entry {i}: expected "
                                f"'shape_data/<synset>/<id>', got {entry!r}")
            synset, shape_id = pieces[-2], pieces[-1]
            if synset not in synset_to_category:
                raise DataError(f"{path}{_entry_line(text, entry)}: entry {i}: unknown synset "
                                f"{synset!r} (not in {root / CATEGORY_FILE})")
            category = synset_to_category[synset]
            if categories is None or category in categories:
                result.append((category, root / synset / f"{shape_id}.txt"))
    return result


# ------------------------------------------------------------------------------------------------
# Prepared HDF5 files
# ------------------------------------------------------------------------------------------------

def write_shapenet_h5(path: str | os.PathLike, data: np.ndarray, part: np.ndarray,
                      instance: np.ndarray, category: np.ndarray) -> None:
    """Writes `data` f32 (B, N, 6), `seglabels` i32 (B, N), `pid` i32 (B, N), `category` i32
    (B,), atomically."""
    data = np.asarray(data, np.float32)
    if data.ndim != 3 or data.shape[2] != NUM_CHANNELS:
        raise ValueError(f"data must be (B, N, {NUM_CHANNELS}), got {data.shape}")
    b, n = data.shape[:2]
    if (np.shape(part) != (b, n) or np.shape(instance) != (b, n)
            or np.shape(category) != (b,)):
        raise ValueError(f"bad shapes: data {data.shape}, part {np.shape(part)}, instance "
                         f"{np.shape(instance)}, category {np.shape(category)}")
    write_blocks_h5(path, data, part, instance, extra={"category": category})


def read_shapenet_h5(path: str | os.PathLike) -> PartSet:
    """Reads a file written by `write_shapenet_h5`; DataError naming the file if it is missing,
    corrupt or inconsistent."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("data", "seglabels", "pid", "category") if k not in f]
            if missing:
                raise DataError(f"{path}: missing dataset(s) {', '.join(missing)}")
            result = PartSet(f["data"][()].astype(np.float32),
                             f["seglabels"][()].astype(np.int32),
                             f["pid"][()].astype(np.int32), f["category"][()].astype(np.int32))
    except DataError:
        raise
    except Exception as e:  # OSError for truncated / non-HDF5 files, ...
        raise DataError(f"{path}: not a readable ShapeNet part file: {e}") from e
    d = result.data
    if (d.ndim != 3 or d.shape[2] != NUM_CHANNELS or result.part.shape != d.shape[:2]
            or result.instance.shape != d.shape[:2] or result.category.shape != d.shape[:1]):
        raise DataError(f"{path}: inconsistent shapes: data {d.shape}, seglabels "
                        f"{result.part.shape}, pid {result.instance.shape}, category "
                        f"{result.category.shape}")
    return result


def read_shapenet_h5_size(path: str | os.PathLike) -> tuple[int, int]:
    """(shapes, points per shape) of a prepared file, from its HDF5 headers only (cheap);
    DataError naming the file if it is missing, not HDF5, lacks a dataset or is inconsistent."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("data", "seglabels", "pid", "category") if k not in f]
            if missing:
                raise DataError(f"{path}: missing dataset(s) {', '.join(missing)}")
            shapes = {k: f[k].shape for k in ("data", "seglabels", "pid", "category")}
    except DataError:
        raise
    except Exception as e:  # OSError for truncated / non-HDF5 files, ...
        raise DataError(f"{path}: not a readable ShapeNet part file: {e}") from e
    d = shapes["data"]
    if (len(d) != 3 or d[2] != NUM_CHANNELS or shapes["seglabels"] != d[:2]
            or shapes["pid"] != d[:2] or shapes["category"] != d[:1]):
        raise DataError(f"{path}: inconsistent shapes: " +
                        ", ".join(f"{k} {v}" for k, v in shapes.items()))
    return int(d[0]), int(d[1])


def list_file(out: str | os.PathLike, split: str) -> Path:
    """`<out>/<split>_hdf5_file_list.txt`: the prepared files of a split, one name a line."""
    return Path(out) / LIST_FILE.format(split)


def prepared_files(out: str | os.PathLike, split: str) -> list[Path]:
    """The prepared h5 files of `split` in list order ("trainval": train's, then val's); names in
    the list are relative to `out`. DataError naming the list if it is missing or empty, or the
    first listed file that does not exist."""
    if split not in SPLITS + ("trainval",):
        raise ValueError(f"unknown split {split!r} (expected train, val, test or trainval)")
    files = []
    for name in ("train", "val") if split == "trainval" else (split,):
        path = list_file(out, name)
        try:
            lines = path.read_text().split()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read file list (is split {name!r} prepared in "
                            f"{out}?): {e}") from e
        if not lines:
            raise DataError(f"{path}: no files listed")
        for line in lines:
            if not (Path(out) / line).is_file():
                raise DataError(f"{Path(out) / line}: listed in {path} but missing")
            files.append(Path(out) / line)
    return files


def is_split_file(name: str, split: str) -> bool:
    """True for the name of a prepared h5 file of `split`, `shapenet_<split>_<k>.h5`."""
    stem = H5_FILE.format(split, "")[:-len(".h5")]
    return name.startswith(stem) and name.endswith(".h5") and name[len(stem):-3].isdigit()


def prepare_shapenet(root: str | os.PathLike, out: str | os.PathLike, split: str,
                     num_points: int = DEFAULT_NUM_POINTS, seed: int = 0,
                     radius: float = DEFAULT_INSTANCE_RADIUS,
                     shapes_per_file: int = DEFAULT_SHAPES_PER_FILE,
                     categories: Sequence[str] | None = None,
                     synsets: dict[str, str] | None = None, progress: bool = False) -> list[Path]:
    """Reads every shape of `split` (train, val or test), normalises, labels instances, samples
    `num_points` points and writes `out/shapenet_<split>_<k>.h5` (at most `shapes_per_file`
    shapes each, in the split's order) plus the list `out/<split>_hdf5_file_list.txt` (file
    names relative to `out`). Returns the h5 paths. Deterministic for a given `seed`;
    `synsets` as in `read_split`; `progress` shows a tqdm bar over the shapes (on stderr).

    All or nothing: the h5 files are written to temporary files and renamed into place only
    once every shape of the split has been read, so a bad shape (DataError naming file:line)
    leaves no file of the split behind, and a complete earlier output of it stays as it was.
    The old list is removed before the renames and the new one written after them, so a list
    never names files of another run; `shapenet_<split>_<k>.h5` files not in it are removed.
    """
    from tqdm import tqdm

    out = Path(out)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    if shapes_per_file < 1:
        raise ValueError(f"shapes_per_file must be >= 1, got {shapes_per_file}")
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    entries = read_split(root, split, categories, synsets)
    if not entries:
        raise DataError(f"{Path(root) / SPLIT_FILE.format(split)}: no shapes in split {split!r}")
    names = []
    bar = tqdm(total=len(entries), desc=f"ShapeNet {split}", unit="shape", disable=not progress,
               file=sys.stderr)
    try:
        with contextlib.ExitStack() as commit:
            for k, start in enumerate(range(0, len(entries), shapes_per_file)):
                datas, parts, instances, cats = [], [], [], []
                for category, path in entries[start:start + shapes_per_file]:
                    key = zlib.crc32(f"{category}/{path.stem}".encode())
                    shape = sample_points(read_shape(path, category, radius=radius), num_points,
                                          np.random.default_rng([seed, key]))
                    datas.append(shape.points)
                    parts.append(shape.part)
                    instances.append(shape.instance)
                    cats.append(shape.category_index)
                    bar.update()
                names.append(H5_FILE.format(split, k))
                tmp = commit.enter_context(AtomicTarget(out / names[-1]))
                write_shapenet_h5(tmp, np.stack(datas), np.stack(parts), np.stack(instances),
                                  np.array(cats, np.int32))
            list_file(out, split).unlink(missing_ok=True)
    except BaseException:
        bar.leave = False   # clear the bar: the error message takes its line
        raise
    finally:
        bar.close()
    write_text_atomic(list_file(out, split), "".join(name + "\n" for name in names))
    for stale in out.iterdir():
        if is_split_file(stale.name, split) and stale.name not in names:
            stale.unlink()
    return [out / name for name in names]


# ------------------------------------------------------------------------------------------------
# Synthetic part set
# ------------------------------------------------------------------------------------------------
# Primitives: (kind, params, part id). Surfaces are sampled uniformly by area, with exact normals.

def _box(centre, half):
    half = np.asarray(half, np.float64)
    return ("box", (np.asarray(centre, np.float64), half),
            8 * (half[0] * half[1] + half[1] * half[2] + half[0] * half[2]))


def _cylinder(centre, radius, half_length, axis):
    """Side surface of a cylinder along axis 0/1/2."""
    return ("cylinder", (np.asarray(centre, np.float64), radius, half_length, axis),
            2 * np.pi * radius * 2 * half_length)


def _handle(centre, major, minor):
    """Half torus in the x-z plane, on the +x side of `centre` (a mug handle)."""
    return ("handle", (np.asarray(centre, np.float64), major, minor),
            0.5 * 4 * np.pi ** 2 * major * minor)


def _sphere(centre, radius):
    return ("sphere", (np.asarray(centre, np.float64), radius), 4 * np.pi * radius ** 2)


def _sample_primitive(kind, params, n, rng):
    if kind == "box":
        centre, half = params
        areas = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]])
        axis = rng.choice(3, n, p=areas / areas.sum())
        sign = rng.choice([-1.0, 1.0], n)
        local = rng.uniform(-1, 1, (n, 3)) * half
        local[np.arange(n), axis] = sign * half[axis]
        normal = np.zeros((n, 3))
        normal[np.arange(n), axis] = sign
        return centre + local, normal
    if kind == "cylinder":
        centre, radius, half_length, axis = params
        theta = rng.uniform(0, 2 * np.pi, n)
        other = [a for a in range(3) if a != axis]
        normal = np.zeros((n, 3))
        normal[:, other[0]], normal[:, other[1]] = np.cos(theta), np.sin(theta)
        xyz = radius * normal
        xyz[:, axis] = rng.uniform(-half_length, half_length, n)
        return centre + xyz, normal
    if kind == "handle":
        centre, major, minor = params
        u = rng.uniform(-np.pi / 2, np.pi / 2, n)    # around the handle's arc (+x half)
        v = rng.uniform(0, 2 * np.pi, n)             # around the tube
        ring = np.stack([np.cos(u), np.zeros(n), np.sin(u)], axis=1)
        normal = np.cos(v)[:, None] * ring + np.sin(v)[:, None] * np.array([0.0, 1.0, 0.0])
        return centre + major * ring + minor * normal, normal
    if kind == "sphere":
        centre, radius = params
        normal = rng.normal(size=(n, 3))
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        return centre + radius * normal, normal
    raise AssertionError(kind)


def _airplane(rng, parts):
    body, wing, tail, engine = parts
    span = rng.uniform(0.7, 0.9)
    return [(_cylinder((0, 0, 0), 0.1, 1.0, 0), body),
            (_box((0.1, 0, 0), (0.15, span, 0.015)), wing),
            (_box((-0.9, 0, 0.2), (0.08, 0.015, 0.15)), tail),
            (_cylinder((0.15, 0.45, -0.1), 0.05, 0.15, 0), engine),
            (_cylinder((0.15, -0.45, -0.1), 0.05, 0.15, 0), engine)]


def _mug(rng, parts):
    body, handle = parts
    height = rng.uniform(0.45, 0.6)
    return [(_cylinder((0, 0, 0), 0.3, height, 2), body),
            (_handle((0.3, 0, 0), 0.25, 0.04), handle)]


def _table(rng, parts):
    top, leg, shelf = parts
    w, d = rng.uniform(0.7, 0.9), rng.uniform(0.45, 0.6)
    prims = [(_box((0, 0, 0.5), (w, d, 0.03)), top),
             (_box((0, 0, -0.2), (w - 0.14, d - 0.14, 0.02)), shelf)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            prims.append((_box((sx * (w - 0.1), sy * (d - 0.1), 0.0), (0.04, 0.04, 0.47)), leg))
    return prims


def _generic(rng, parts, category):
    """Any other category: a box body (first part) with one attachment per further part, taken
    from five slots (top knob, a pair of side posts, a pair of end blocks, a bottom bar, a front
    knob) in an order and with body proportions fixed per category, so categories differ."""
    look = np.random.default_rng(zlib.crc32(category.encode()))
    # A long, flat body: few enough square units that ~2048 points connect at radius 0.1.
    hx, hy, hz = look.uniform([0.45, 0.12, 0.05], [0.65, 0.3, 0.15]) * rng.uniform(0.9, 1.1, 3)
    r = rng.uniform(0.12, 0.18)
    slots = [
        [_sphere((0, 0, hz + 0.8 * r), r)],
        [_cylinder((0, s * (hy + 0.05), 0), 0.05, hz + 0.1, 2) for s in (-1, 1)],
        [_box((s * (hx + 0.07), 0, 0), (0.07, 0.6 * hy, 0.6 * hz)) for s in (-1, 1)],
        [_cylinder((0, 0, -(hz + 0.06)), 0.06, 0.7 * hx, 0)],
        [_sphere((0.6 * hx, 0, hz + 0.08), 0.1)],
    ]
    order = look.permutation(len(slots))
    prims = [(_box((0, 0, 0), (hx, hy, hz)), parts[0])]
    for part, slot in zip(parts[1:], order):
        prims.extend((prim, part) for prim in slots[slot])
    return prims


_GENERATORS = {"Airplane": _airplane, "Mug": _mug, "Table": _table}


def _primitives(category: str, rng) -> list:
    """[(primitive, part id)] of one random shape of `category`: every part of the category
    occurs, each primitive is one connected part instance."""
    parts = _category(category).parts
    if category in _GENERATORS:
        return _GENERATORS[category](rng, parts)
    return _generic(rng, parts, category)


# Number of connected part instances of every synthetic shape of a category (one per primitive;
# the count does not depend on the random draw). Used by tests and demos.
SYNTHETIC_INSTANCES = {name: len(_primitives(name, np.random.default_rng(0)))
                       for name in CATEGORY_NAMES}

# The synsets of the real release's synsetoffset2category.txt, used only to write the synthetic
# set in the real layout; readers always take the synsets from the data's own file.
RELEASE_SYNSETS = {
    "Airplane": "02691156", "Bag": "02773838", "Cap": "02954340", "Car": "02958343",
    "Chair": "03001627", "Earphone": "03261776", "Guitar": "03467517", "Knife": "03624134",
    "Lamp": "03636649", "Laptop": "03642806", "Motorbike": "03790512", "Mug": "03797390",
    "Pistol": "03948459", "Rocket": "04099429", "Skateboard": "04225987", "Table": "04379243",
}


def synthetic_shape_points(category: str, rng, num_points: int,
                           radius: float = DEFAULT_INSTANCE_RADIUS,
                           max_tries: int = 50) -> np.ndarray:
    """(num_points, 7) float64 rows `x y z nx ny nz part` of one parametric shape.

    Random sampling can leave a point with no same-part neighbour within `radius` (a spurious
    one-point instance); such draws are redrawn, so that `part_instances` on the normalised shape
    finds exactly one instance per primitive (`SYNTHETIC_INSTANCES`).
    """
    for _ in range(max_tries):
        prims = _primitives(category, rng)
        rows = _sample_shape(prims, rng, num_points)
        if part_instances(normalize_xyz(rows[:, :3]), rows[:, 6], radius).max() + 1 == len(prims):
            return rows
    raise RuntimeError(f"could not draw a {category} with {num_points} points whose parts are "
                       f"connected at radius {radius}")


def _sample_shape(prims, rng, num_points: int) -> np.ndarray:
    areas = np.array([p[0][2] for p in prims])
    counts = np.maximum(1, np.floor(num_points * areas / areas.sum()).astype(int))
    counts[np.argmax(counts)] += num_points - counts.sum()
    rows = []
    for ((kind, params, _), part), n in zip(prims, counts):
        xyz, normal = _sample_primitive(kind, params, n, rng)
        rows.append(np.column_stack([xyz, normal, np.full(n, part, np.float64)]))
    return np.concatenate(rows)[rng.permutation(num_points)]


def write_synthetic_partset(root: str | os.PathLike, seed: int = 0,
                            shapes_per_category: tuple[int, int, int] = (12, 3, 4),
                            categories: Sequence[str] = CATEGORY_NAMES,
                            points_range: tuple[int, int] = (2048, 3000),
                            synsets: dict[str, str] | None = None,
                            progress: bool = False) -> dict[str, list]:
    """Writes a synthetic ShapeNet part set in the real release's layout under `root`:
    `synsetoffset2category.txt` (every category of `synsets`, default `RELEASE_SYNSETS`),
    `<synset>/<id>.txt` shapes (`x y z nx ny nz part`, written with 6 decimals, the part as a
    float like the real files) and the three split jsons ("shape_data/<synset>/<id>" entries).

    Airplane: fuselage cylinder, one wing box, tail, two engines (2 instances of "engine");
    Mug: body cylinder + half-torus handle; Table: top, shelf and four legs (4 instances of
    "leg"); any other category: a box body with one attachment per further part (`_generic`),
    so every part id of every category occurs. Each shape has a random point count in
    `points_range` (real shapes differ in size too). `shapes_per_category` = (train, val,
    test) shapes of each category; each split's entries are shuffled. Deterministic per `seed`.
    `progress` shows a tqdm bar over the shapes (on stderr). Returns {split: [entries]}.
    """
    from tqdm import tqdm

    root = Path(root)
    synsets = RELEASE_SYNSETS if synsets is None else synsets
    if len(shapes_per_category) != len(SPLITS) or min(shapes_per_category) < 0:
        raise ValueError(f"shapes_per_category must be 3 counts (train, val, test) >= 0, got "
                         f"{shapes_per_category}")
    if not 1 <= points_range[0] <= points_range[1]:
        raise ValueError(f"points_range must be (min, max) with 1 <= min <= max, got "
                         f"{points_range}")
    missing = [c for c in categories if c not in synsets]
    if missing:
        raise ValueError(f"no synset for {', '.join(missing)}")
    rng = np.random.default_rng(seed)
    write_text_atomic(root / CATEGORY_FILE,
                      "".join(f"{name}\t{synset}\n" for name, synset in synsets.items()))
    splits: dict[str, list] = {s: [] for s in SPLITS}
    bar = tqdm(total=len(categories) * sum(shapes_per_category), desc="synthetic shapes",
               unit="shape", disable=not progress, file=sys.stderr)
    for category in categories:
        synset = synsets[category]
        for split, count in zip(SPLITS, shapes_per_category):
            for _ in range(count):
                shape_id = "".join(rng.choice(list("0123456789abcdef"), 32))
                num_points = int(rng.integers(points_range[0], points_range[1] + 1))
                rows = synthetic_shape_points(category, rng, num_points)
                # One %-format for the whole shape: np.savetxt's text, 2.5x faster.
                line = " ".join(["%.6f"] * 7) + "\n"
                text = (line * len(rows)) % tuple(rows.ravel().tolist())
                write_text_atomic(root / synset / f"{shape_id}.txt", text)
                splits[split].append(f"shape_data/{synset}/{shape_id}")
                bar.update()
    bar.close()
    for split, entries in splits.items():
        entries = [entries[j] for j in rng.permutation(len(entries))]
        splits[split] = entries
        write_text_atomic(root / SPLIT_FILE.format(split), json.dumps(entries))
    return splits
