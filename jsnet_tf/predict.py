"""Segments your own point clouds with a trained JSNet.

  python -m jsnet_tf.predict --workdir RUN --out DIR INPUT [INPUT ...]

INPUT: `.ply` (ASCII or binary), `.txt` / `.xyz` / `.pts` (`x y z [r g b]` a line) or `.npy`
((N, 3) or (N, 6+)), coordinates in metres in any frame. Each cloud is shifted so that its
minimum corner is the origin, cut into the 1 m blocks of the S3DIS test protocol, run through the
network, clustered and merged into instances (jsnet_tf.evaluation.RoomSegmenter). Per INPUT
`<stem>` the outputs are, in the input's original coordinates, one row per point:
  <stem>_semantic.ply  coloured by class, with `semantic`, `instance` and `score` properties
  <stem>_instance.ply  coloured by instance (-1, no instance: grey), same properties
  <stem>_labels.txt    `x y z semantic instance score` a line
  <stem>_instances.txt the instances, `id class confidence points` a line (jsnet_tf.metrics: the class
                       is the most frequent class of the instance's points, the confidence the mean
                       over its points of the probability of that class)
  <stem>_labels.npz    xyz, semantic, instance, score, offset (the minimum corner), classes, and the
                       instance list as instance_ids, instance_classes, instance_confidences,
                       instance_points
  <stem>.png           top views coloured by class and by instance
A cloud's outputs appear together at the end or not at all. An input that fails (unreadable,
empty, no x/y/z, NaN points under --nan_policy=error, ...) is reported in one line and the
others are still processed; the exit status is then 1.

Clouds without colour get mid-grey (128/255) for every point and lose accuracy: the network was
trained with colour. Clouds of more than --max_points_per_pass points are cut into x-y tiles whose
edges lie on block edges, processed one after another; instances do not merge across tiles.

With a ShapeNet part run (data.dataset = "shapenet") every INPUT is one shape: `.txt` with
`x y z nx ny nz [part]` a line (part: a ground-truth part id 0..49, optional) or `.ply` with nx, ny
and nz vertex properties; normals are required. The shape is normalised to the unit sphere as
training does (jsnet_tf.data.shapenet.normalize_xyz), every point is labelled (rows of
data.num_points, the last topped up with repeats), its parts are predicted among the parts of
--category (default: among all 50) and its part instances found by mean-shift on its embeddings
(jsnet_tf.part_evaluation). Per INPUT `<stem>`, in the input's coordinates:
  <stem>_parts.ply      coloured by part, with `part`, `instance` and `score` properties
  <stem>_instances.ply  coloured by instance, same properties
  <stem>_labels.txt     `x y z part instance score` a line
  <stem>_instances.txt  the part instances, `id part confidence points` a line
  <stem>_labels.npz     xyz, normals, part, instance, score, instance_part (each instance's part),
                        instance_confidence, category, classes (part names); part_gt and shape_iou
                        with ground truth
  <stem>.png            views along -z (x right, y up: the release's up axis) coloured by part,
                        by ground-truth part (when given) and by instance
With ground-truth parts, the shape's part IoU (PointNet++'s protocol) over the parts of
--category, or of the category its parts belong to, is printed and stored.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from jsnet_tf.errors import UserError  # noqa: E402

GREY = 128  # the colour (0..255, all three channels) given to clouds without colour
DEFAULT_MAX_POINTS_PER_PASS = 10_000_000
OUTPUT_SUFFIXES = ("_semantic.ply", "_instance.ply", "_labels.txt", "_instances.txt", "_labels.npz", ".png")
SHAPE_OUTPUT_SUFFIXES = ("_parts.ply", "_instances.ply", "_labels.txt", "_instances.txt", "_labels.npz", ".png")
SHAPE_SUFFIXES = (".txt", ".ply")
S3DIS_ONLY_FLAGS = ("mean_ins_size", "min_instance_points", "color_max", "color", "max_points_per_pass")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a run folder (holding config.toml and weights), or train.py's workdir holding area<k>/ runs")
flags.DEFINE_integer("area", None, "with a train.py workdir: the area<k> run to use (needed when it holds several)")
flags.DEFINE_string(
    "which", "latest",
    "weights to load: latest (the last epoch, as the paper), best (lowest validation loss; runs with validation "
    "data only), or a checkpoint prefix",
)
flags.DEFINE_string("out", None, "output folder (created if missing)")
flags.DEFINE_string(
    "mean_ins_size", None,
    "file of the mean instance size per class of the training data (13 numbers); instances of at most a quarter "
    "of their class's mean are dropped. Default: the run folder's mean_ins_size.txt (jsnet_tf.convert "
    "--mean_ins_size), else the run's <data.data_dir>/lists/mean_ins_size_woArea<k>.txt, else no size filter",
)
flags.DEFINE_integer(
    "min_instance_points", None,
    "instead of --mean_ins_size: drop instances of fewer than this many points, whatever their class",
)
flags.DEFINE_enum(
    "nan_policy", "drop", ["drop", "error"],
    "points with a NaN or infinite coordinate or colour: drop them (their count is printed; the outputs hold the "
    "other points, in the input's order) or fail the file",
)
flags.DEFINE_float("color_max", None, "the full-intensity colour value of the inputs (1 or 255); default: detected")
flags.DEFINE_bool("color", True, "use the inputs' colours; --nocolor gives every point mid-grey, as for clouds without colour")
flags.DEFINE_integer(
    "max_points_per_pass", DEFAULT_MAX_POINTS_PER_PASS,
    "clouds with more points are cut into x-y tiles of at most this many points, processed one after another "
    "(about 300 bytes a point of working memory); instances do not merge across tiles. 0: never tile",
)
flags.DEFINE_integer("batch_size", None, "blocks per inference batch (overrides eval.batch_size)")
flags.DEFINE_integer("seed", None, "seed of the block chunking (overrides eval.seed)")
flags.DEFINE_multi_string("set", [], "override a config key: section.key=value (repeatable), e.g. eval.bandwidth=0.5")
flags.DEFINE_bool("txt", True, "write <stem>_labels.txt (--notxt saves time and disk on large clouds)")
flags.DEFINE_bool("pictures", True, "write the <stem>.png top views (ShapeNet shapes: views along -z)")
flags.DEFINE_bool("overwrite", False, "replace existing outputs (otherwise a cloud whose outputs exist is an error)")
flags.DEFINE_bool("verbose", True, "show a progress bar over the network blocks")
flags.DEFINE_string(
    "category", None,
    "ShapeNet part runs: the category of the input shapes (e.g. Airplane); their parts are predicted among that "
    "category's parts only, as the benchmark does. Default: among all 50 parts",
)


class PredictError(UserError, ValueError):
    """Bad input or set-up for prediction; the message names the file or flag."""


# ------------------------------------------------------------------------------------------------
# Tiling
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Tile:
    """A square of the cloud: its corner and side in shifted coordinates, and its points."""

    origin: np.ndarray  # (2,) float64, x and y of the corner, multiples of the side
    side: float  # a multiple of the tile unit
    indices: np.ndarray  # (n,) int64, ascending


def tile_unit(block_size, stride):
    """The smallest multiple of the block stride that is at least a block: tiles whose edges are
    multiples of it hold the blocks of the whole cloud's grid unchanged."""
    return stride * np.ceil(block_size / stride - 1e-9)


def plan_tiles(xy, max_points, unit):
    """Cuts points (x, y >= 0, shifted coordinates) into square tiles of at most `max_points`.

    The tile side is a multiple of `unit`, as large as a bisection finds for which no tile holds
    more than `max_points` points; a single `unit` square may still hold more (then it is one
    tile). `max_points` 0, or at least the number of points, means one tile. Every point lies in
    exactly one tile; empty tiles are left out.
    """
    xy = np.asarray(xy, np.float64)
    cells = np.floor(xy / unit).astype(np.int64)
    side = int(cells.max(initial=0)) + 1  # in units: one tile holds everything
    if max_points > 0 and len(xy) > max_points:
        occupied, counts = np.unique(cells, axis=0, return_counts=True)
        fits, side = 1, side - 1  # bisect between a unit (the fallback) and the largest side that may fit
        while fits < side:
            middle = (fits + side + 1) // 2
            if _largest_tile(occupied, counts, middle) <= max_points:
                fits = middle
            else:
                side = middle - 1
        side = fits
    keys = cells // side
    span = int(keys[:, 1].max(initial=0)) + 1
    flat = keys[:, 0] * span + keys[:, 1]
    order = np.argsort(flat, kind="stable")
    starts = np.flatnonzero(np.diff(flat[order], prepend=-1))
    tiles = []
    for indices in np.split(order, starts[1:]):
        key = keys[indices[0]]
        tiles.append(Tile(origin=key * side * unit, side=side * unit, indices=indices))
    return tiles


def _largest_tile(cells, counts, side):
    tiles = cells // side
    _, inverse = np.unique(tiles, axis=0, return_inverse=True)
    return int(np.bincount(inverse.reshape(-1), weights=counts).max())


# ------------------------------------------------------------------------------------------------
# Segmentation of a whole cloud
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CloudPrediction:
    """Per-point labels of a cloud, in the order of its points."""

    semantic: np.ndarray  # (N,) int32 class
    instance: np.ndarray  # (N,) int32, -1 = no instance; unique across tiles
    score: np.ndarray  # (N,) float32, mean probability of the class over the blocks holding the point
    offset: np.ndarray  # (3,) float64, the cloud's minimum corner (subtracted before the network)
    num_tiles: int
    instances: object  # jsnet_tf.metrics.InstanceTable: class, confidence and points of each instance


class CloudSegmenter:
    """Runs a `RoomSegmenter` over a whole user cloud, in tiles when it is large.

    Args:
      segmenter: a `jsnet_tf.evaluation.RoomSegmenter` labelling every point (eval.label_all_points).
      max_points_per_pass: tile clouds with more points; 0 never tiles.
    """

    def __init__(self, segmenter, max_points_per_pass=DEFAULT_MAX_POINTS_PER_PASS):
        if not segmenter.cfg["label_all_points"]:
            raise PredictError("prediction labels every point: eval.label_all_points must be true")
        if max_points_per_pass < 0:
            raise PredictError(f"--max_points_per_pass must be >= 0, got {max_points_per_pass}")
        self.segmenter = segmenter
        self.max_points_per_pass = int(max_points_per_pass)
        self.unit = tile_unit(segmenter.block_size, float(segmenter.cfg["stride"]))

    def plan(self, xyz):
        """(offset, tiles) of a cloud: its minimum corner and its tiles in shifted coordinates."""
        offset = xyz.min(axis=0)
        return offset, plan_tiles(xyz[:, :2] - offset[:2], self.max_points_per_pass, self.unit)

    def count_blocks(self, xyz, plan=None):
        """How many network blocks `segment` runs (for a progress bar)."""
        offset, tiles = self.plan(xyz) if plan is None else plan
        return sum(self.segmenter.count_blocks(self._tile_room(xyz, None, offset, t, "")) for t in tiles)

    def segment(self, xyz, rgb, name="cloud", seed=0, progress=None, plan=None):
        """Labels every point of a cloud: xyz (N, 3) float64 metres, rgb (N, 3) uint8.

        A tile with no block of `eval.min_block_points` points takes the class and score of the
        nearest labelled point and no instance; a cloud with no such block at all is an error.
        """
        offset, tiles = self.plan(xyz) if plan is None else plan
        from jsnet_tf import metrics

        semantic = np.full(len(xyz), -1, np.int32)
        instance = np.full(len(xyz), -1, np.int32)
        score = np.zeros(len(xyz), np.float32)
        tables = []
        next_instance = 0
        for tile in tiles:
            room = self._tile_room(xyz, rgb, offset, tile, name)
            if not self.segmenter.block_members(room):
                continue  # filled from the nearest labelled point below
            result = self.segmenter.segment(room, seed=seed, progress=progress)
            ids = result.instance_pred
            semantic[tile.indices] = result.semantic_pred
            instance[tile.indices] = np.where(ids >= 0, ids + next_instance, -1)
            score[tile.indices] = result.score
            tables.append(result.instances._replace(ids=result.instance_ids + next_instance))
            next_instance += int(ids.max(initial=-1)) + 1
        instances = metrics.InstanceTable(*(np.concatenate([t[k] for t in tables] + [np.zeros(0, dtype)])
                                            for k, dtype in enumerate((np.int64, np.int64, np.float64, np.int64))))
        unlabelled = semantic < 0
        if unlabelled.all():
            size, needed = self.segmenter.block_size, self.segmenter.cfg["min_block_points"]
            raise PredictError(
                f"no block of {size} m x {size} m holds {needed} points (eval.min_block_points): nothing to label; "
                "are the coordinates in metres?"
            )
        if unlabelled.any():
            from scipy.spatial import cKDTree

            labelled = np.flatnonzero(~unlabelled)
            nearest = labelled[cKDTree(xyz[labelled]).query(xyz[unlabelled])[1]]
            semantic[unlabelled] = semantic[nearest]
            score[unlabelled] = score[nearest]
        return CloudPrediction(semantic, instance, score, offset, len(tiles), instances)

    def _tile_room(self, xyz, rgb, offset, tile, name):
        from jsnet_tf.data import s3dis

        local = xyz[tile.indices] - offset
        local[:, :2] -= tile.origin
        count = len(tile.indices)
        colour = np.full((count, 3), GREY, np.uint8) if rgb is None else rgb[tile.indices]
        return s3dis.Room(
            name=name, xyz=local.astype(np.float32), rgb=colour,
            semantic=np.zeros(count, np.int32), instance=np.full(count, -1, np.int32),
        )


# ------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------


def output_paths(out_dir, stem, suffixes=OUTPUT_SUFFIXES):
    """The final output files of one input."""
    return [pathlib.Path(out_dir) / f"{stem}{suffix}" for suffix in suffixes]


def publish_outputs(out_dir, stem, suffixes, write):
    """Calls `write({suffix: path})` with paths in a hidden staging folder of `out_dir`, then
    renames the files it wrote into place (the npz last) and removes older outputs of `stem` that
    were not rewritten; on any error none of the new files is left behind (an output it replaced
    is gone). Returns the paths written."""
    out_dir = pathlib.Path(out_dir)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".tmp", dir=out_dir))
    moved = []
    try:
        staged = {suffix: staging / f"{stem}{suffix}" for suffix in suffixes}
        write(staged)
        for path in sorted(staged.values(), key=lambda p: p.suffix == ".npz"):  # the npz last
            if path.exists():
                os.replace(path, out_dir / path.name)
                moved.append(out_dir / path.name)
        for path in output_paths(out_dir, stem, suffixes):
            if path not in moved:
                path.unlink(missing_ok=True)
    except BaseException:
        for path in moved:
            path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return moved


def write_outputs(out_dir, stem, xyz, prediction, class_names, txt=True, pictures=True):
    """Writes one cloud's outputs (OUTPUT_SUFFIXES) all together or not at all (`publish_outputs`)."""
    from jsnet_tf import io, metrics

    def write(staged):
        labels = {"semantic": prediction.semantic, "instance": prediction.instance, "score": prediction.score}
        semantic_rgb = io.semantic_colors(prediction.semantic)
        instance_rgb = io.instance_colors(prediction.instance)
        io.write_ply(staged["_semantic.ply"], xyz, semantic_rgb, extra=labels)
        io.write_ply(staged["_instance.ply"], xyz, instance_rgb, extra=labels)
        if txt:
            write_labels_txt(staged["_labels.txt"], xyz, prediction.semantic, prediction.instance, prediction.score)
        table = prediction.instances
        metrics.write_instance_list(staged["_instances.txt"], table)
        with open(staged["_labels.npz"], "wb") as f:
            np.savez(
                f, xyz=xyz, semantic=prediction.semantic, instance=prediction.instance, score=prediction.score,
                offset=prediction.offset, classes=np.array(class_names), instance_ids=table.ids,
                instance_classes=table.classes, instance_confidences=table.confidences, instance_points=table.points,
            )
        if pictures:
            _write_picture(staged[".png"], xyz - prediction.offset, semantic_rgb, instance_rgb, stem,
                           prediction.semantic, class_names)

    return publish_outputs(out_dir, stem, OUTPUT_SUFFIXES, write)


def write_labels_txt(path, xyz, semantic, instance, score, rows_per_write=1_000_000,
                     header="x y z semantic instance score"):
    """`x y z semantic instance score` a line ('%f %f %f %d %d %f'), under a `# <header>` line;
    formatted with vectorised digit arithmetic, a million rows at a time."""
    from jsnet_tf.metrics import format_lines

    with open(path, "wb") as f:
        f.write(f"# {header}\n".encode())
        for start in range(0, len(xyz), rows_per_write):
            rows = slice(start, start + rows_per_write)
            columns = [xyz[rows, 0], xyz[rows, 1], xyz[rows, 2], semantic[rows], instance[rows], score[rows]]
            f.write(format_lines(columns, "fffddf"))


def _write_picture(path, local_xyz, semantic_rgb, instance_rgb, stem, semantic, class_names):
    from jsnet_tf import viz

    z = local_xyz[:, 2]
    viz.render_segmentation_panel(
        path, local_xyz, {"semantic": semantic_rgb, "instance": instance_rgb},
        title=f"{stem}: top view below 85% of the height, metres from the minimum corner",
        z_max=float(z.min() + 0.85 * (z.max() - z.min())), legends={"semantic": (semantic, class_names)},
    )


# ------------------------------------------------------------------------------------------------
# ShapeNet part shapes
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ShapeInput:
    """One shape read from a file, in the file's coordinates."""

    xyz: np.ndarray  # (P, 3) float64
    normals: np.ndarray  # (P, 3) float64
    part: np.ndarray | None  # (P,) int32 ground-truth part ids (a txt file's 7th column), or None
    num_dropped: int = 0  # points left out for NaN or infinite values


def shape_category(name):
    """The category name in CATEGORIES for a --category value (any case), or None for None."""
    from jsnet_tf.data import shapenet

    if name is None:
        return None
    by_lower = {category.lower(): category for category in shapenet.CATEGORY_NAMES}
    if name.lower() not in by_lower:
        raise PredictError(f"--category {name}: not a ShapeNet part category ({', '.join(shapenet.CATEGORY_NAMES)})")
    return by_lower[name.lower()]


def read_shape_input(path, nan_policy="drop", category=None):
    """Reads a shape: `.txt` with `x y z nx ny nz [part]` a line (blank lines and `#` / `//`
    comments skipped) or `.ply` with nx, ny, nz vertex properties. Points with a NaN or infinite
    value are dropped (counted) or, with nan_policy="error", an error. Ground-truth parts must be
    integers 0..49, and parts of `category` when it is given. PredictError (or io's
    PointCloudError) naming the file and line otherwise."""
    from jsnet_tf import io

    path = pathlib.Path(path)
    if path.suffix.lower() not in SHAPE_SUFFIXES:
        raise PredictError(
            f"{path}: a ShapeNet part run takes .txt shapes (x y z nx ny nz [part] a line) or .ply shapes with nx, ny "
            f"and nz properties, not {path.suffix or 'a file without a suffix'}"
        )
    dropped = 0
    if path.suffix.lower() == ".ply":
        cloud = io.read_point_cloud(path, nan_policy=nan_policy)
        missing = [name for name in ("nx", "ny", "nz") if name not in cloud.extra]
        if missing:
            raise PredictError(
                f"{path}: no normals ({', '.join(missing)} missing; properties: x, y, z"
                f"{''.join(', ' + name for name in cloud.extra)}): a ShapeNet part model needs nx, ny and nz"
            )
        table = np.column_stack([cloud.xyz] + [cloud.extra[name].astype(np.float64) for name in ("nx", "ny", "nz")])
        lines, dropped = None, cloud.num_dropped
    else:
        table, lines = _read_shape_txt(path)
    bad = ~np.isfinite(table).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        where = f"{path}:{lines[first]}" if lines is not None else f"{path}: point {first}"
        if nan_policy == "error":
            raise PredictError(f"{where}: a NaN or infinite value ({int(bad.sum())} of {len(table)} points have one); "
                               "pass --nan_policy=drop to leave them out")
        if bad.all():
            raise PredictError(f"{path}: all {len(table)} points have NaN or infinite values")
        table = table[~bad]
        lines = None if lines is None else lines[~bad]
        dropped += int(bad.sum())
    part = _shape_parts(path, table[:, 6], lines, category) if table.shape[1] == 7 else None
    return ShapeInput(table[:, :3], table[:, 3:6], part, dropped)


def _read_shape_txt(path):
    """(table (P, 6 or 7) float64, the line number of each row) of a shape's text file."""
    from jsnet_tf import io

    try:
        data = path.read_bytes()
    except OSError as e:
        raise PredictError(f"{path}: cannot read: {e.strerror or e}") from None
    if not data.strip():
        raise PredictError(f"{path}: empty file (no points)")
    data = data.replace(b"\r", b"")
    first = io._first_data_line(data)
    if first is None:
        raise PredictError(f"{path}: no points (the file is blank or only comments)")
    number, start, end = first
    count = len(data[start:end].split())
    if count not in (6, 7):
        hint = ": normals are required" if count < 6 else ""
        raise PredictError(f"{path}:{number}: expected 6 (x y z nx ny nz) or 7 (x y z nx ny nz part) numbers, "
                           f"found {count}{hint}")
    try:
        table = np.loadtxt(data.decode("latin-1").splitlines(), dtype=np.float64, ndmin=2, comments=("#", "//"))
    except ValueError as e:
        raise PredictError(io._first_bad_text_line(path, data, count, number) or f"{path}: cannot parse: {e}") from None
    lines = np.array([k for k, line in enumerate(data.split(b"\n"), start=1)
                      if line.strip() and not io._is_comment(line.strip())])
    return table, lines


def _shape_parts(path, values, lines, category):
    """Ground-truth part ids from a txt file's 7th column, checked."""
    from jsnet_tf.data import shapenet

    part = np.rint(values)
    bad = (values != part) | (part < 0) | (part >= shapenet.NUM_PARTS)
    expected = f"a part id 0..{shapenet.NUM_PARTS - 1}"
    if category is not None:
        parts = shapenet.CATEGORIES[category].parts
        bad |= (part < parts[0]) | (part > parts[-1])
        expected = f"a part of {category} ({parts[0]}..{parts[-1]})"
    if bad.any():
        k = int(np.argmax(bad))
        raise PredictError(f"{path}:{lines[k]}: part {values[k]:g} is not {expected}")
    return part.astype(np.int32)


def _iou_category(shape, category):
    """The category whose parts the shape's IoU is taken over: --category, else the one category
    its ground-truth parts belong to; None without ground truth or when they span several."""
    from jsnet_tf.data import shapenet

    if shape.part is None:
        return None
    if category is not None:
        return category
    owners = np.unique(shapenet.PART_TO_CATEGORY[shape.part])
    return shapenet.CATEGORY_NAMES[owners[0]] if len(owners) == 1 else None


def write_shape_outputs(out_dir, stem, shape, normalised, prediction, class_names, category=None, shape_iou=None,
                        txt=True, pictures=True):
    """Writes one shape's outputs (SHAPE_OUTPUT_SUFFIXES) all together or not at all
    (`publish_outputs`): `shape` a ShapeInput, `normalised` its unit-sphere xyz, `prediction` a
    part_evaluation.ShapePrediction."""
    from jsnet_tf import io, metrics
    from jsnet_tf.part_evaluation import render_shape, shape_panels

    def write(staged):
        labels = {"part": prediction.part, "instance": prediction.instance, "score": prediction.score}
        panels = shape_panels(prediction.part, prediction.instance, shape.part)
        io.write_ply(staged["_parts.ply"], shape.xyz, panels["part prediction"][1], extra=labels)
        io.write_ply(staged["_instances.ply"], shape.xyz, panels["instance prediction"][1], extra=labels)
        if txt:
            write_labels_txt(staged["_labels.txt"], shape.xyz, prediction.part, prediction.instance, prediction.score,
                             header="x y z part instance score")
        metrics.write_instance_list(staged["_instances.txt"], prediction.instances,
                                    header=metrics.INSTANCE_LIST_HEADER.replace("class", "part"))
        arrays = {
            "xyz": shape.xyz, "normals": shape.normals, "part": prediction.part, "instance": prediction.instance,
            "score": prediction.score, "instance_part": prediction.instance_part,
            "instance_confidence": prediction.instance_confidence, "category": np.array(category or ""),
            "classes": np.array(class_names),
        }
        if shape.part is not None:
            arrays["part_gt"] = shape.part
        if shape_iou is not None:
            arrays["shape_iou"] = np.array(shape_iou)
        with open(staged["_labels.npz"], "wb") as f:
            np.savez(f, **arrays)
        if pictures:
            scored = "" if shape_iou is None else f", part IoU {100 * shape_iou:.1f}"
            render_shape(staged[".png"], normalised, panels,
                         f"{stem} ({category or 'all 50 parts'}{scored}): unit sphere seen along -z (x right, y up)",
                         class_names)

    return publish_outputs(out_dir, stem, SHAPE_OUTPUT_SUFFIXES, write)


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """How predict reads its inputs and writes their outputs (the command line's flags)."""

    overwrite: bool = False  # replace existing outputs
    nan_policy: str = "drop"  # points with NaN / infinite values: "drop" or "error"
    color_max: float | None = None  # the colour scale of the inputs (None: detected)
    color: bool = True  # use the inputs' colours (False: mid-grey everywhere)
    txt: bool = True  # write <stem>_labels.txt
    pictures: bool = True  # write <stem>.png
    progress: bool = True  # a progress bar per input


def predict_shape_file(path, segmenter, class_names, seed, out_dir, category=None, options=InputOptions()):
    """Reads, segments and writes one shape of a ShapeNet part run; returns a one-line summary."""
    from jsnet_tf import part_metrics
    from jsnet_tf.data import shapenet

    started = time.time()
    existing = [p for p in output_paths(out_dir, path.stem, SHAPE_OUTPUT_SUFFIXES) if p.exists()]
    if existing and not options.overwrite:
        raise PredictError(f"{existing[0]} exists (pass --overwrite to replace it)")
    shape = read_shape_input(path, options.nan_policy, category)
    notes = [f"{len(shape.xyz)} points"]
    if shape.num_dropped:
        notes.append(f"dropped {shape.num_dropped} with NaN or infinite values")
    notes.append(f"{segmenter.count_rows(len(shape.xyz))} network rows of {segmenter.num_points} points")
    print(f"{path}: " + "; ".join(notes), flush=True)
    normalised = shapenet.normalize_xyz(shape.xyz)
    points = np.concatenate([normalised, shape.normals], axis=1).astype(np.float32)
    prediction = segmenter.segment(points, category, rng=np.random.default_rng(seed))
    iou_category = _iou_category(shape, category)
    shape_iou = None
    if iou_category is not None:
        shape_iou = float(part_metrics.shape_part_ious(shape.part, prediction.part, iou_category, str(path)).mean())
    written = write_shape_outputs(out_dir, path.stem, shape, normalised, prediction, class_names, category, shape_iou,
                                  options.txt, options.pictures)
    parts, counts = np.unique(prediction.instance_part, return_counts=True)
    instances = ", ".join(f"{n} x {class_names[p]}" for p, n in zip(parts, counts))
    scored = "" if shape_iou is None else f"; part IoU {100 * shape_iou:.1f} over {iou_category}'s parts"
    return (f"{path}: parts predicted: {len(np.unique(prediction.part))}; instances: {len(prediction.instance_part)} "
            f"({instances}){scored} -> {', '.join(p.name for p in written)} ({time.time() - started:.1f} s)")


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def instance_sizes(cfg, run_dir, area, mean_ins_size_file=None, min_instance_points=None):
    """(mean instance size per class, size fraction, description) for the size filter, from
    --min_instance_points, --mean_ins_size, the run folder's mean_ins_size.txt (written by
    `jsnet_tf.convert --mean_ins_size`) or the run's training data lists, the first given; with
    none of them, instances are not filtered by size and a warning says so."""
    from jsnet_tf import convert

    num_classes = cfg["model"]["num_classes"]
    if min_instance_points is not None:
        if mean_ins_size_file:
            raise PredictError("give --mean_ins_size or --min_instance_points, not both")
        if min_instance_points < 0:
            raise PredictError(f"--min_instance_points must be >= 0, got {min_instance_points}")
        # size > 1.0 * (n - 0.5) keeps exactly the instances of at least n points.
        sizes = np.full(num_classes, max(min_instance_points - 0.5, 0.0))
        return sizes, 1.0, f"instances of fewer than {min_instance_points} points are dropped"
    stored = pathlib.Path(run_dir) / convert.MEAN_INS_SIZE_FILE
    if mean_ins_size_file:
        path = pathlib.Path(mean_ins_size_file)
        if not path.exists():
            raise PredictError(f"--mean_ins_size {path}: no such file")
    elif stored.exists():
        path = stored
    else:
        if area is None and len(cfg["data"]["areas"]) == 1:
            area = cfg["data"]["areas"][0]
        lists = pathlib.Path(cfg["data"]["data_dir"]) / "lists"
        path = None if area is None else lists / f"mean_ins_size_woArea{area}.txt"
        if path is None or not path.exists():
            looked = f"{stored}" + (f" nor {path}" if path else "; give --area K for the run's training data lists")
            print(
                f"predict: warning: no mean instance sizes (neither {looked} exists): instances are not filtered by "
                "size; give --mean_ins_size FILE (e.g. the original's mean_ins_size.txt) or --min_instance_points N",
                file=sys.stderr, flush=True,
            )
            return np.zeros(num_classes), 1.0, "instances are NOT filtered by size (no mean instance sizes)"
    sizes = convert.load_mean_ins_size(path)
    if len(sizes) != num_classes:
        raise PredictError(f"{path}: {len(sizes)} classes, the model predicts {num_classes}")
    fraction = cfg["eval"]["size_fraction"]
    return sizes, fraction, f"instances of at most {fraction:g} x their class's mean size in {path} are dropped"


def _overrides():
    """The run's config changes the flags ask for (every point is labelled)."""
    from jsnet_tf.cli import config_overrides

    return config_overrides(FLAGS.set, {"eval.label_all_points": True, "eval.batch_size": FLAGS.batch_size,
                                        "eval.seed": FLAGS.seed})


def _input_options():
    return InputOptions(overwrite=FLAGS.overwrite, nan_policy=FLAGS.nan_policy, color_max=FLAGS.color_max,
                        color=FLAGS.color, txt=FLAGS.txt, pictures=FLAGS.pictures, progress=FLAGS.verbose)


def _build(out_dir):
    """The function that predicts one input (path -> summary line), from the flags."""
    from jsnet_tf import checkpoints
    from jsnet_tf.data import s3dis
    from jsnet_tf.evaluation import RoomSegmenter

    run_dir, area = checkpoints.resolve_run(FLAGS.workdir, FLAGS.area)
    if checkpoints.load_config(run_dir)["data"]["dataset"] == "shapenet":
        return _build_shapenet(run_dir, out_dir)
    if FLAGS.category is not None:
        raise PredictError("--category is for ShapeNet part runs; this run is of S3DIS")
    model, cfg, prefix = checkpoints.load_run(run_dir, FLAGS.which, _overrides())
    sizes, fraction, filter_text = instance_sizes(cfg, run_dir, area, FLAGS.mean_ins_size, FLAGS.min_instance_points)
    eval_cfg = {**cfg["eval"], "size_fraction": fraction}
    segmenter = RoomSegmenter(
        model, cfg["data"]["num_points"], sizes, eval_cfg, cfg["data"]["block_size"],
        size_in_rows=FLAGS.min_instance_points is None,  # --min_instance_points counts points
    )
    num_classes = cfg["model"]["num_classes"]
    class_names = list(s3dis.CLASSES) if num_classes == len(s3dis.CLASSES) else [str(c) for c in range(num_classes)]
    print(f"weights {prefix}; {filter_text}; outputs -> {out_dir}", flush=True)
    return functools.partial(
        predict_file, cloud_segmenter=CloudSegmenter(segmenter, FLAGS.max_points_per_pass), class_names=class_names,
        seed=cfg["eval"]["seed"], out_dir=out_dir, options=_input_options(),
    )


def _build_shapenet(run_dir, out_dir):
    """`_build` for a ShapeNet part run."""
    from jsnet_tf import checkpoints, export
    from jsnet_tf.part_evaluation import ShapeSegmenter

    given = [f"--{name}" for name in S3DIS_ONLY_FLAGS + ("area",) if FLAGS[name].present]
    if given:
        raise PredictError(f"{', '.join(given)}: for S3DIS runs only; {run_dir} is a ShapeNet part run")
    category = shape_category(FLAGS.category)
    model, cfg, prefix = checkpoints.load_run(run_dir, FLAGS.which, _overrides())
    eval_cfg = cfg["eval"]
    segmenter = ShapeSegmenter(model, cfg["data"]["num_points"], eval_cfg["bandwidth"], eval_cfg["batch_size"])
    among = f"the parts of {category}" if category else "all 50 parts (no --category)"
    print(f"weights {prefix}; parts among {among}; outputs -> {out_dir}", flush=True)
    return functools.partial(
        predict_shape_file, segmenter=segmenter, class_names=export.class_names(cfg), seed=eval_cfg["seed"],
        out_dir=out_dir, category=category, options=_input_options(),
    )


def predict_file(path, cloud_segmenter, class_names, seed, out_dir, options=InputOptions()):
    """Reads, segments and writes one input; returns a one-line summary."""
    from jsnet_tf import io

    started = time.time()
    outputs = output_paths(out_dir, path.stem)
    existing = [p for p in outputs if p.exists()]
    if existing and not options.overwrite:
        raise PredictError(f"{existing[0]} exists (pass --overwrite to replace it)")
    cloud = io.read_point_cloud(path, nan_policy=options.nan_policy, color_max=options.color_max)
    notes = [f"{len(cloud)} points"]
    if cloud.num_dropped:
        notes.append(f"dropped {cloud.num_dropped} with NaN or infinite values")
    rgb = cloud.rgb if options.color else None
    if rgb is None:
        why = "colours ignored (--nocolor)" if cloud.rgb is not None else "no colours"
        print(
            f"predict: warning: {path}: {why}: every point gets mid-grey ({GREY}/255); expect lower accuracy, "
            "the network was trained with colour", file=sys.stderr, flush=True,
        )
    plan = cloud_segmenter.plan(cloud.xyz)
    offset, tiles = plan
    extent = cloud.xyz.max(axis=0) - offset
    notes.append("extent " + " x ".join(f"{e:.2f}" for e in extent) + " m")
    notes.append("minimum corner (" + ", ".join(f"{o:.3f}" for o in offset) + ") moved to the origin")
    if len(tiles) > 1:
        notes.append(f"{len(tiles)} tiles (more than --max_points_per_pass={cloud_segmenter.max_points_per_pass} points)")
    print(f"{path}: " + "; ".join(notes), flush=True)
    bar = None
    if options.progress:
        from tqdm import tqdm

        bar = tqdm(total=cloud_segmenter.count_blocks(cloud.xyz, plan), unit="block", desc=path.stem)
    try:
        prediction = cloud_segmenter.segment(cloud.xyz, rgb, path.stem, seed, bar.update if bar else None, plan)
    finally:
        if bar is not None:
            bar.close()
    written = write_outputs(out_dir, path.stem, cloud.xyz, prediction, class_names, options.txt, options.pictures)
    classes = len(np.unique(prediction.semantic))
    instances = len(np.unique(prediction.instance[prediction.instance >= 0]))
    return (f"{path}: {classes} classes, {instances} instances -> {', '.join(p.name for p in written)} "
            f"({time.time() - started:.1f} s)")


def main(argv):
    inputs = [pathlib.Path(a) for a in argv[1:]]
    if not inputs:
        raise app.UsageError("give at least one INPUT point cloud (.ply, .txt, .xyz, .pts or .npy)")
    if not FLAGS.workdir or not FLAGS.out:
        raise app.UsageError("--workdir and --out are required")
    if FLAGS.color_max is not None and not FLAGS.color_max > 0:
        raise app.UsageError(f"--color_max must be positive, got {FLAGS.color_max}")
    logging.set_verbosity(logging.WARNING)
    out_dir = pathlib.Path(FLAGS.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        predict_one = _build(out_dir)
    except (UserError, OSError) as error:
        sys.exit(f"predict: error: {error}")
    failed, first_of_stem = 0, {}
    for path in inputs:
        try:
            if path.stem in first_of_stem:
                other = first_of_stem[path.stem]
                raise PredictError(f"{path}: its outputs would take the names of {other}'s ({path.stem}_*); rename one")
            first_of_stem[path.stem] = path
            print(predict_one(path), flush=True)
        except (UserError, MemoryError, OSError) as error:
            failed += 1
            print(f"predict: error: {_describe(path, error)}", file=sys.stderr, flush=True)
    if failed:
        sys.exit(f"predict: {failed} of {len(inputs)} inputs failed; their outputs were not written")


def _describe(path, error):
    """One line for an input's failure, naming the file."""
    if isinstance(error, MemoryError):
        return f"{path}: out of memory: lower --max_points_per_pass (now {FLAGS.max_points_per_pass})"
    text = str(error) or type(error).__name__
    return text if str(path) in text else f"{path}: {text}"


def cli():
    """The `jsnet-predict` console script (also `python -m jsnet_tf.predict`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__)


if __name__ == "__main__":
    cli()
