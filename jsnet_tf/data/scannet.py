"""ScanNet v2: the benchmark's 20 classes and colours, and readers of the release's files.

The release, as `download-scannet.py` writes it, holds a folder per scan:

    scans/<scene>/<scene>_vh_clean_2.ply                 the mesh (binary PLY): its vertices, with
                                                         their colour, are the points
    scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json  `segIndices`: a segment id per vertex
    scans/<scene>/<scene>.aggregation.json               `segGroups`: the annotated objects, each
                                                         a raw category (`label`) and `segments`
    scans_test/<scene>/<scene>_vh_clean_2.ply            the test scans: a mesh, no labels
    scannetv2-labels.combined.tsv                        raw category -> nyu40 id (and others)

The benchmark's splits, `scannetv2_{train,val,test}.txt` (1201 / 312 / 100 scenes), live in the
ScanNet repository (`Tasks/Benchmark/`), not in the download; they ship here, in
`scannet_splits/`.

A vertex's nyu40 id is that of the raw category of the object whose segments hold it (0 when no
object does). The benchmark scores 20 of the 40 ids (`NYU40_IDS`, classes `CLASSES`); every other
vertex (unannotated, or another id such as ceiling, 22) is ignored: class `IGNORE`. Instances are
the objects of the 18 classes other than wall and floor (`INSTANCE_CLASSES`).

Quirks of the release, and what `label_vertices` does with them:

* scene0217_00 lists its objects twice (ScanNet issue #51: the repeat starts at objectId 31, with
  the same labels and segments): an object whose label and set of segments equal an earlier
  object's is a repeat and is dropped (a `DataWarning` says how many).
* A segment named by two objects: it goes to the object listed last, for its class and its
  instance alike. That is the rule of the benchmark's instance ground truth
  (`export_train_mesh_for_evaluation.py` paints the objects in turn, a later one over an earlier
  one) and of Pointcept's preprocessing; the benchmark's export takes the class of such a vertex
  from whichever label its dictionary visits last, here class and instance come from one object.
  An object left without vertices is no instance (a `DataWarning` counts the shared segments).
* The label table has rows with empty trailing columns (`furnace` has no mpcat40) and a category
  with a trailing blank (`wardrobe `): it is read as TSV by column name, never by splitting
  stripped lines (which shifts the columns of such rows).
* `_vh_clean.aggregation.json` and `_vh_clean.segs.json` belong to the high-resolution mesh;
  these readers take the `_vh_clean_2` mesh's files, as the benchmark does.
* Labels come from the aggregation and the table's nyu40id column, as the benchmark's ground
  truth does, not from `_vh_clean_2.labels.ply` (which holds ids outside nyu40, 50 and 149, for
  some vertices of scene0270_00, scene0270_02 and scene0384_00: ScanNet issues #20 and #86).
  Classes go by nyu40 id, not by name (`classes_SemVoxLabel-nyu40id.txt` spells
  `refridgerator`, the evaluation scripts `refrigerator`).

A prepared scene (`save_scene` / `load_scene`) is an `s3dis.Room` file (so `s3dis.load_room`
reads it) with two more arrays: `offset`, the minimum corner subtracted from the release's
coordinates, and `nyu40`, each vertex's raw nyu40 id. Vertices keep the release's order.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jsnet_tf.data import s3dis
from jsnet_tf.data.s3dis import DataWarning
from jsnet_tf.errors import DataError

CLASSES = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
           "bookshelf", "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain",
           "toilet", "sink", "bathtub", "otherfurniture")
NUM_CLASSES = len(CLASSES)
# The nyu40 id of each class, as the benchmark's evaluation scripts list them.
NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
# Indices into CLASSES of the 18 instance classes: all but wall and floor.
INSTANCE_CLASSES = tuple(range(2, NUM_CLASSES))
NUM_CHANNELS = 9
IGNORE = -1
MAX_NYU40_ID = 40

# The benchmark's colours of the 20 classes (the nyu40 palette of the ScanNet repository's
# BenchmarkScripts/util.py at NYU40_IDS), RGB.
PALETTE = np.array([
    (174, 199, 232), (152, 223, 138), (31, 119, 180), (255, 187, 120), (188, 189, 34),
    (140, 86, 75), (255, 152, 150), (214, 39, 40), (197, 176, 213), (148, 103, 189),
    (196, 156, 148), (23, 190, 207), (247, 182, 210), (219, 219, 141), (255, 127, 14),
    (158, 218, 229), (44, 160, 44), (112, 128, 144), (227, 119, 194), (82, 84, 163),
], np.uint8)
PALETTE.flags.writeable = False

# nyu40 id (0..40) -> index into CLASSES, IGNORE for the ids the benchmark does not score.
NYU40_TO_CLASS = np.full(MAX_NYU40_ID + 1, IGNORE, np.int32)
NYU40_TO_CLASS[list(NYU40_IDS)] = np.arange(NUM_CLASSES, dtype=np.int32)
NYU40_TO_CLASS.flags.writeable = False

SPLITS = ("train", "val", "test")
LABELLED_SPLITS = ("train", "val")  # test scans come without annotation
MESH_SUFFIX = "_vh_clean_2.ply"
SEGMENTS_SUFFIX = "_vh_clean_2.0.010000.segs.json"
AGGREGATION_SUFFIX = ".aggregation.json"
LABEL_MAP_FILE = "scannetv2-labels.combined.tsv"
SPLIT_FILE = "scannetv2_{}.txt"
OFFICIAL_SPLIT_DIR = Path(__file__).resolve().parent / "scannet_splits"
# The release's scene folders: `scans/` (train and val) and `scans_test/`.
SCAN_FOLDERS = ("scans", "scans_test")

# Scene names become file names: no separators, blanks or leading dot (temp files are hidden).
_SCENE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_scene_name(name: str) -> bool:
    return bool(_SCENE_NAME.match(name))


# ------------------------------------------------------------------------------------------------
# Split lists and the label table
# ------------------------------------------------------------------------------------------------

def read_split_list(path: str | os.PathLike) -> list[str]:
    """The scene names of a `scannetv2_<split>.txt` list (one a line; blank lines skipped);
    DataError naming the file (and line) if it is unreadable, holds a bad name or a repeat."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read split list: {e}") from e
    scenes, seen = [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if not is_scene_name(name):
            raise DataError(f"{path}:{number}: not a scene name: {name!r}")
        if name in seen:
            raise DataError(f"{path}:{number}: scene {name} is listed twice")
        seen.add(name)
        scenes.append(name)
    return scenes


def read_splits(split_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """{split: scene names} of the three lists `scannetv2_{train,val,test}.txt` in `split_dir`
    (default: the official lists shipped with the package); DataError if one is missing or a
    scene is in two splits."""
    split_dir = OFFICIAL_SPLIT_DIR if split_dir is None else Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split folder does not exist")
    splits = {}
    for split in SPLITS:
        path = split_dir / SPLIT_FILE.format(split)
        if not path.is_file():
            raise DataError(f"{path}: missing split list (a split folder holds "
                            f"{', '.join(SPLIT_FILE.format(s) for s in SPLITS)})")
        splits[split] = read_split_list(path)
    owner: dict[str, str] = {}
    for split, scenes in splits.items():
        for scene in scenes:
            if scene in owner:
                raise DataError(f"{split_dir}: scene {scene} is in both the {owner[scene]} and "
                                f"the {split} list")
            owner[scene] = split
    return splits


@dataclasses.dataclass(frozen=True)
class LabelMap:
    """The label table: raw category -> nyu40 id, and the file it was read from (for errors)."""

    path: Path
    nyu40: dict[str, int]

    def nyu40_id(self, label: str, where: str) -> int:
        if label not in self.nyu40:
            raise DataError(f"{where}: label {label!r} is not in {self.path}")
        return self.nyu40[label]


def read_label_map(path: str | os.PathLike) -> LabelMap:
    """Reads `scannetv2-labels.combined.tsv` (tab-separated, a header row naming the columns;
    `raw_category` and `nyu40id` are used). DataError naming the file and line of a bad row."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read label table: {e}") from e
    if not rows:
        raise DataError(f"{path}: empty label table")
    header = rows[0]
    missing = [c for c in ("raw_category", "nyu40id") if c not in header]
    if missing:
        raise DataError(f"{path}:1: no {' or '.join(missing)} column in the header "
                        f"(expected the columns of {LABEL_MAP_FILE})")
    raw_col, nyu_col = header.index("raw_category"), header.index("nyu40id")
    table: dict[str, int] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(raw_col, nyu_col):
            raise DataError(f"{path}:{number}: {len(row)} columns, the header names "
                            f"{len(header)}")
        raw, value = row[raw_col], row[nyu_col].strip()
        try:
            nyu40 = int(value)
        except ValueError:
            nyu40 = -1
        if not 0 <= nyu40 <= MAX_NYU40_ID:
            raise DataError(f"{path}:{number}: nyu40id {value!r} of {raw!r} is not an integer "
                            f"0..{MAX_NYU40_ID}")
        if table.get(raw, nyu40) != nyu40:
            raise DataError(f"{path}:{number}: {raw!r} is listed again with another nyu40id "
                            f"({table[raw]}, then {nyu40})")
        table[raw] = nyu40
    return LabelMap(path, table)


# ------------------------------------------------------------------------------------------------
# A scan's files
# ------------------------------------------------------------------------------------------------

def scene_files(scene_dir: str | os.PathLike, scene: str | None = None) -> dict[str, Path]:
    """{"mesh", "segments", "aggregation"}: the files of a scan folder the benchmark uses."""
    scene_dir = Path(scene_dir)
    scene = scene or scene_dir.name
    return {"mesh": scene_dir / f"{scene}{MESH_SUFFIX}",
            "segments": scene_dir / f"{scene}{SEGMENTS_SUFFIX}",
            "aggregation": scene_dir / f"{scene}{AGGREGATION_SUFFIX}"}


def read_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(xyz (N, 3) float64, rgb (N, 3) uint8): a PLY mesh's vertices in the file's order.

    DataError naming the file if it is not a readable PLY, its vertices lack x, y, z or colour
    (red, green, blue), it has none, or a coordinate is not finite.
    """
    import plyfile

    path = Path(path)
    try:
        try:  # the release's faces are triangles: memory-mapped as fixed-length rows (fast)
            ply = plyfile.PlyData.read(path, known_list_len={"face": {"vertex_indices": 3}})
        except plyfile.PlyElementParseError:
            ply = plyfile.PlyData.read(path)
    except Exception as e:  # header / element parse errors, OSError, ...: all a bad file
        raise DataError(f"{path}: not a readable PLY mesh: {e}") from e
    if "vertex" not in ply:
        raise DataError(f"{path}: no vertex element")
    vertices = ply["vertex"].data
    names = vertices.dtype.names or ()
    missing = [k for k in "xyz" if k not in names]
    if missing:
        raise DataError(f"{path}: vertices have no {', '.join(missing)} coordinate")
    if not all(k in names for k in ("red", "green", "blue")):
        raise DataError(f"{path}: vertices have no colour (red, green, blue properties)")
    if len(vertices) == 0:
        raise DataError(f"{path}: the mesh has no vertices")
    xyz = np.stack([vertices[k] for k in "xyz"], axis=1).astype(np.float64)
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        raise DataError(f"{path}: non-finite coordinates at vertex {int(np.flatnonzero(bad)[0])}")
    rgb = np.stack([vertices[k] for k in ("red", "green", "blue")], axis=1)
    if rgb.dtype != np.uint8:
        values = rgb.astype(np.float64)
        if not (np.isfinite(values).all() and (values == np.round(values)).all()
                and values.min() >= 0 and values.max() <= 255):
            raise DataError(f"{path}: colours are not integers 0..255 ({rgb.dtype} properties)")
    return xyz, rgb.astype(np.uint8)


def _read_json(path: Path, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable {what}: {e}") from e


def _is_int_list(values) -> bool:
    return isinstance(values, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in values)


def read_segments(path: str | os.PathLike, num_vertices: int) -> np.ndarray:
    """(num_vertices,) int64: the segment id of each mesh vertex (`segIndices`); DataError if
    the file is unreadable, the ids are not integers or their count is not `num_vertices`."""
    path = Path(path)
    data = _read_json(path, "segments file")
    segments = data.get("segIndices") if isinstance(data, dict) else None
    if segments is None:
        raise DataError(f"{path}: no segIndices list")
    if not _is_int_list(segments):
        raise DataError(f"{path}: segIndices is not a list of integers")
    if len(segments) != num_vertices:
        raise DataError(f"{path}: {len(segments)} segment indices for a mesh of {num_vertices} "
                        f"vertices")
    return np.asarray(segments, np.int64).reshape(num_vertices)


@dataclasses.dataclass(frozen=True)
class AnnotatedObject:
    """One entry of an aggregation's `segGroups`."""

    object_id: int
    label: str                 # the raw category
    segments: tuple[int, ...]  # segment ids (`segIndices` values)


def read_aggregation(path: str | os.PathLike) -> list[AnnotatedObject]:
    """The annotated objects of an aggregation file, in its order; DataError if unreadable or
    an entry lacks a string `label` or a list of integer `segments`."""
    path = Path(path)
    data = _read_json(path, "aggregation file")
    groups = data.get("segGroups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise DataError(f"{path}: no segGroups list")
    objects = []
    for i, group in enumerate(groups):
        if not (isinstance(group, dict) and isinstance(group.get("label"), str)
                and _is_int_list(group.get("segments"))):
            raise DataError(f"{path}: segGroups[{i}] is not an object with a string label and "
                            f"a list of integer segments")
        object_id = group.get("objectId", i)
        if not isinstance(object_id, int) or isinstance(object_id, bool):
            raise DataError(f"{path}: segGroups[{i}] has a non-integer objectId {object_id!r}")
        objects.append(AnnotatedObject(object_id, group["label"], tuple(group["segments"])))
    return objects


@dataclasses.dataclass
class VertexLabels:
    """The labels of a scan's vertices (all (N,) int32) and the repairs made on the way."""

    nyu40: np.ndarray     # raw nyu40 id, 0 where no object holds the vertex
    semantic: np.ndarray  # index into CLASSES, IGNORE for the unscored ids and 0
    instance: np.ndarray  # 0..K-1 over the objects of INSTANCE_CLASSES, IGNORE elsewhere
    repeats: int          # objects dropped as repeats of earlier ones
    shared_segments: int  # segments named by more than one (kept) object


def label_vertices(segments: np.ndarray, objects: Sequence[AnnotatedObject], label_map: LabelMap,
                   aggregation: str | os.PathLike = "", segments_file: str | os.PathLike = ""
                   ) -> VertexLabels:
    """Labels every vertex from its segment id and the annotated objects (see the module
    docstring for repeated objects and shared segments). Instances are numbered in the
    objects' order, counting only objects of an instance class that keep a vertex.

    DataError (naming `aggregation`, the object and the table or `segments_file`) for a label
    missing from the table or a segment id that no vertex has.
    """
    segments = np.asarray(segments, np.int64)
    seen, kept = set(), []
    for obj in objects:
        key = (obj.label, frozenset(obj.segments))
        if key not in seen:
            seen.add(key)
            kept.append(obj)
    object_nyu40 = np.array(
        [label_map.nyu40_id(o.label, f"{aggregation}: object {o.object_id}") for o in kept]
        + [0], np.int32)  # the last entry: no object
    segment_ids, vertex_segment = np.unique(segments, return_inverse=True)
    owner = np.full(len(segment_ids), -1, np.int64)
    claims = np.zeros(len(segment_ids), np.int64)
    for k, obj in enumerate(kept):
        wanted = np.unique(np.asarray(obj.segments, np.int64))
        at = np.minimum(np.searchsorted(segment_ids, wanted), len(segment_ids) - 1)
        unknown = wanted[segment_ids[at] != wanted]
        if len(unknown):
            raise DataError(f"{aggregation}: object {obj.object_id} ({obj.label}) names segment "
                            f"{int(unknown[0])}, which no vertex of {segments_file} has")
        claims[at] += 1
        owner[at] = k  # a later object takes the segment
    vertex_owner = owner[vertex_segment.reshape(-1)]
    nyu40 = object_nyu40[vertex_owner]  # -1 (no object) picks the last entry, 0
    semantic = NYU40_TO_CLASS[nyu40]
    object_class = NYU40_TO_CLASS[object_nyu40[:-1]]
    holds_vertices = np.bincount(vertex_owner[vertex_owner >= 0], minlength=len(kept)) > 0
    numbered = np.isin(object_class, INSTANCE_CLASSES) & holds_vertices
    object_instance = np.append(np.where(numbered, np.cumsum(numbered) - 1, IGNORE), IGNORE)
    return VertexLabels(nyu40=nyu40.astype(np.int32), semantic=semantic.astype(np.int32),
                        instance=object_instance[vertex_owner].astype(np.int32),
                        repeats=len(objects) - len(kept),
                        shared_segments=int((claims > 1).sum()))


# ------------------------------------------------------------------------------------------------
# Scenes
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Scene(s3dis.Room):
    """A prepared ScanNet scan: an `s3dis.Room` (xyz shifted so that the minimum corner is the
    origin, semantic: index into CLASSES or IGNORE, instance: 0..K-1 or IGNORE) in the mesh's
    vertex order, plus the corner subtracted and each vertex's raw nyu40 id."""

    offset: np.ndarray  # (3,) float64: xyz + offset is the release's coordinate
    nyu40: np.ndarray   # (N,) int32, 0 where unannotated (and in test scans)


def read_scene(scene_dir: str | os.PathLike, label_map: LabelMap | None,
               name: str | None = None) -> Scene:
    """Reads a scan folder (`scene_files`); with `label_map` None (test scans) only the mesh,
    every vertex unlabelled. Repairs of the annotation (repeated objects, shared segments) are
    reported as a `DataWarning` naming the aggregation file."""
    scene_dir = Path(scene_dir)
    name = name or scene_dir.name
    files = scene_files(scene_dir, name)
    xyz, rgb = read_mesh(files["mesh"])
    n = len(xyz)
    if label_map is None:
        labels = VertexLabels(np.zeros(n, np.int32), np.full(n, IGNORE, np.int32),
                              np.full(n, IGNORE, np.int32), 0, 0)
    else:
        segments = read_segments(files["segments"], n)
        objects = read_aggregation(files["aggregation"])
        labels = label_vertices(segments, objects, label_map, files["aggregation"],
                                files["segments"])
        if labels.repeats:
            warnings.warn(f"{files['aggregation']}: dropped {labels.repeats} object(s) that "
                          f"repeat an earlier one (same label and segments)", DataWarning,
                          stacklevel=2)
        if labels.shared_segments:
            warnings.warn(f"{files['aggregation']}: {labels.shared_segments} segment(s) named by "
                          f"more than one object, each given to the object listed last",
                          DataWarning, stacklevel=2)
    offset = xyz.min(axis=0)
    return Scene(name=name, xyz=(xyz - offset).astype(np.float32), rgb=rgb,
                 semantic=labels.semantic, instance=labels.instance, offset=offset,
                 nyu40=labels.nyu40)


def save_scene(path: str | os.PathLike, scene: Scene) -> None:
    """Writes a scene atomically: `s3dis.save_room`'s keys plus `offset` and `nyu40`."""
    s3dis.save_room(path, scene, extra={"offset": np.asarray(scene.offset, np.float64),
                                        "nyu40": np.asarray(scene.nyu40, np.int32)})


def load_scene(path: str | os.PathLike) -> Scene:
    """Reads a scene written by `save_scene`; DataError naming the file if it is unreadable,
    lacks `offset` / `nyu40` or holds labels out of range."""
    path = Path(path)
    room = s3dis.load_room(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            offset, nyu40 = z["offset"], z["nyu40"]
    except Exception as e:  # KeyError for a room file of another data set, zip errors, ...
        raise DataError(f"{path}: not a prepared ScanNet scene: {e}") from e
    n = len(room)
    if offset.shape != (3,) or nyu40.shape != (n,):
        raise DataError(f"{path}: inconsistent scene arrays (offset {offset.shape}, nyu40 "
                        f"{nyu40.shape} for {n} vertices)")
    if n and (room.semantic.min() < IGNORE or room.semantic.max() >= NUM_CLASSES
              or room.instance.min() < IGNORE):
        raise DataError(f"{path}: labels out of range")
    fields = {f.name: getattr(room, f.name) for f in dataclasses.fields(room)}
    return Scene(**fields, offset=offset.astype(np.float64), nyu40=nyu40.astype(np.int32))


# ------------------------------------------------------------------------------------------------
# The prepared folder
# ------------------------------------------------------------------------------------------------

SCENES_DIR = "scenes"
MEAN_INS_SIZE_FILE = "mean_ins_size_train.txt"


def scene_path(out: str | os.PathLike, scene: str) -> Path:
    """`<out>/scenes/<scene>.npz`."""
    return Path(out) / SCENES_DIR / f"{scene}.npz"


def list_path(out: str | os.PathLike, split: str) -> Path:
    """`<out>/lists/<split>.txt`: the split's scene files, relative to `out` (read them with
    `s3dis.read_file_list`)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return Path(out) / "lists" / f"{split}.txt"


def mean_ins_size_path(out: str | os.PathLike) -> Path:
    """`<out>/lists/mean_ins_size_train.txt`: the mean instance size of each of the 20 classes
    over the train split (read it with `s3dis.read_mean_ins_size(path, NUM_CLASSES)`)."""
    return Path(out) / "lists" / MEAN_INS_SIZE_FILE


def instance_sizes(scene: s3dis.Room, num_points: int = 4096, rng=None) -> list[list[int]]:
    """Per class, the point count of each instance over the scene's sampled stride-0.5, 1 m
    blocks (`s3dis.test_blocks`): the unit of S3DIS's `mean_ins_size_woArea<k>.txt`, counting
    only points of an instance (instance >= 0)."""
    blocks = s3dis.test_blocks(scene, num_points=num_points, rng=rng)
    member = blocks.instance >= 0
    return s3dis.instance_sizes(blocks.semantic[member], blocks.instance[member], NUM_CLASSES)
