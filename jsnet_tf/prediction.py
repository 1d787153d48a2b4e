"""Labelling users' point clouds with a trained room model (S3DIS, ScanNet), flag-free: tiling,
the whole-cloud segmenter and the outputs. The program is `jsnet_tf.predict`; the task of the run
(`jsnet_tf.tasks`) builds the pieces and gives its class names and colours.

Each cloud is shifted so that its minimum corner is the origin, cut into the 1 m blocks of the
test protocol, run through the network, clustered and merged into instances
(jsnet_tf.evaluation.RoomSegmenter). Per input `<stem>` the outputs are, in the input's original
coordinates, one row per point, the label files in the formats asked (FORMAT_SUFFIXES):
  <stem>_semantic.ply  coloured by class, with `semantic`, `instance` and `score` properties
  <stem>_instance.ply  coloured by instance (-1, no instance: grey), same properties
  <stem>_labels.txt    `x y z semantic instance score` a line
  <stem>_labels.las / .laz  LAS 1.4 (jsnet_tf.scan_formats.LasLabelWriter): the class in
                       `classification` (64 + class), `instance`, `confidence` (of the point's
                       instance) and `score` extra dimensions; a LAS / LAZ input's points copied
  <stem>_instances.txt the instances, `id class confidence points` a line (jsnet_tf.metrics: the class
                       is the most frequent class of the instance's points, the confidence the mean
                       over its points of the probability of that class)
  <stem>_labels.npz    xyz, semantic, instance, score, offset (the minimum corner), classes, and the
                       instance list as instance_ids, instance_classes, instance_confidences,
                       instance_points
  <stem>.png           top views coloured by class and by instance
A cloud's outputs appear together at the end or not at all (`publish_outputs`). Clouds without
colour get mid-grey (128/255) for every point and lose accuracy: the networks were trained with
colour. Clouds of more than `max_points_per_pass` points are cut into x-y tiles whose edges lie on
block edges, processed one after another with the labels and instances of a single pass
(`CloudSegmenter`); LAS / LAZ inputs of that size are labelled out of core, their memory bounded
by the tile (jsnet_tf.out_of_core), the others are held in memory.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

from jsnet_tf.data import s3dis
from jsnet_tf.errors import UserError

GREY = 128  # the colour (0..255, all three channels) given to clouds without colour
DEFAULT_MAX_POINTS_PER_PASS = 10_000_000
OUTPUT_SUFFIXES = ("_semantic.ply", "_instance.ply", "_labels.txt", "_instances.txt", "_labels.npz", "_labels.las",
                   "_labels.laz", ".png")
# The label files each --format writes (<stem>_instances.txt and the picture come always).
FORMAT_SUFFIXES = {"ply": ("_semantic.ply", "_instance.ply"), "txt": ("_labels.txt",), "npz": ("_labels.npz",),
                   "las": ("_labels.las",), "laz": ("_labels.laz",)}
FORMATS = tuple(FORMAT_SUFFIXES)
DEFAULT_FORMATS = ("ply", "txt", "npz")
LAS_WRITE_CHUNK = 100_000  # points per chunk of LAS / LAZ output


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
    indices: np.ndarray | None  # (n,) int64, ascending; None for a cloud on disk (jsnet_tf.out_of_core)


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
    if max_points > 0 and len(xy) > max_points:
        side = tile_side(*np.unique(cells, axis=0, return_counts=True), max_points)
    else:
        side = int(cells.max(initial=0)) + 1  # in units: one tile holds everything
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


def tile_side(cells, counts, max_points):
    """The side, in units, of `plan_tiles`' tiles for the occupied unit cells `cells` ((K, 2) int)
    holding `counts` points: the largest a bisection finds for which no tile holds more than
    `max_points` (0: no limit), at least one unit."""
    side = int(cells.max(initial=0)) + 1  # in units: one tile holds everything
    if max_points > 0 and int(np.sum(counts)) > max_points:
        fits, side = 1, side - 1  # bisect between a unit (the fallback) and the largest side that may fit
        while fits < side:
            middle = (fits + side + 1) // 2
            if _largest_tile(cells, counts, middle) <= max_points:
                fits = middle
            else:
                side = middle - 1
        side = fits
    return side


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
    """Runs a `RoomSegmenter` over a whole user cloud, in tiles when it is large, with the labels of
    a single pass.

    A single pass cuts the cloud (shifted to its minimum corner) into the test blocks and merges
    their clusters into instances in the blocks' serpentine order. Tiled, each tile runs every
    block that holds one of its points (tiles overlap by up to a block and a stride: those blocks
    run twice), taking the blocks' channels relative to the whole cloud's extent and each block's
    points in the order of a seed of the block (RoomSegmenter.block_outputs), so a point gets the
    class probabilities of a single pass; each block's clusters are kept, as grid cells, by the
    tile of its first point, and all are merged into the cloud's instances in the single pass's
    order at the end. A tiled run therefore gives the single pass's labels and instances, while
    the network and mean-shift work on one tile at a time. Network outputs can differ in their
    last bits with the batch a block runs in, its size and the block's place in it (TensorFlow's
    kernels), which may move a label where two classes tie to that precision.

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
        self.stride = float(segmenter.cfg["stride"])
        self.unit = tile_unit(segmenter.block_size, self.stride)

    def plan(self, xyz):
        """(offset, tiles) of a cloud: its minimum corner and its tiles in shifted coordinates."""
        offset = xyz.min(axis=0)
        return offset, plan_tiles(xyz[:, :2] - offset[:2], self.max_points_per_pass, self.unit)

    def count_blocks(self, xyz, plan=None):
        """How many network blocks `segment` runs (for a progress bar)."""
        offset, tiles = self.plan(xyz) if plan is None else plan
        room = self._cloud_room(xyz, None, offset, "")
        tile_of = _tile_of(len(xyz), tiles)
        grid = self.segmenter.grid_shape(room.xyz.max(axis=0))
        num_points = self.segmenter.num_points
        count = 0
        for k, tile in enumerate(tiles):
            near = self.near_tile(room.xyz, tile)
            count += sum(-(-len(m) // num_points) for _, _, m in self._tile_blocks(_part(room, near), tile_of[near], grid,
                                                                                   tile, k))
        return count

    def segment(self, xyz, rgb, name="cloud", seed=0, progress=None, plan=None):
        """Labels every point of a cloud: xyz (N, 3) float64 metres, rgb (N, 3) uint8 or None.

        Points in no block of `eval.min_block_points` points take the class and score of the
        nearest labelled point and no instance; a cloud with no such block at all is an error.
        """
        from jsnet_tf import evaluation, metrics
        offset, tiles = self.plan(xyz) if plan is None else plan
        segmenter = self.segmenter
        room = self._cloud_room(xyz, rgb, offset, name)
        limit = s3dis.room_limit(room)
        grid = segmenter.grid_shape(room.xyz.max(axis=0))
        tile_of = _tile_of(len(xyz), tiles)
        num_classes = segmenter.model.num_classes
        semantic = np.zeros(len(room), np.int32)
        score = np.zeros(len(room), np.float32)
        covered = np.zeros(len(room), bool)
        rows_per_point = np.zeros(len(room), np.float64)
        merger = segmenter.new_merger()
        with tempfile.TemporaryDirectory(prefix="jsnet-tiles-") as spill:
            spill = pathlib.Path(spill)
            with KeptBlocks(spill / "blocks.bin", merger) as kept:
                for k, tile in enumerate(tiles):
                    near = self.near_tile(room.xyz, tile)
                    mean_p, visits, weights = self.run_tile(_part(room, near), tile_of[near], tile, k, grid, limit,
                                                            seed, progress, merger, kept)
                    semantic[tile.indices] = mean_p.argmax(axis=1)
                    score[tile.indices] = mean_p.max(axis=1)
                    covered[tile.indices] = visits > 0
                    rows_per_point[tile.indices] = weights
                    np.save(spill / f"{k}.npy", mean_p)
                    del mean_p
                self.merge_kept(kept, merger)
            # Points in no block take the probabilities of the nearest point in one, as in a single pass.
            source = np.arange(len(room))
            if not covered.all():
                source[~covered] = evaluation.nearest_covered(room.xyz, covered)
                semantic, score = semantic[source], score[source]
            normalised = s3dis.normalised_xyz(room.xyz, limit)
            instance = segmenter.room_instances(merger, normalised, semantic, rows_per_point).astype(np.int32)
            del normalised

            def probability(rows, classes):  # mean_p[rows, classes], read back one tile at a time
                rows = source[rows]
                chosen = np.empty(len(rows), np.float32)
                tile_of_rows = tile_of[rows]
                for k in np.unique(tile_of_rows):
                    picked = np.flatnonzero(tile_of_rows == k)
                    sums = np.load(spill / f"{k}.npy")
                    chosen[picked] = sums[np.searchsorted(tiles[k].indices, rows[picked]), classes[picked]]
                return chosen

            table = metrics.instance_table(instance, semantic, probability, where=f"cloud {name}", num_classes=num_classes)
        return CloudPrediction(semantic, instance, score, offset, len(tiles), table)

    def run_tile(self, part, tile_near, tile, k, grid, limit, seed, progress, merger, kept):
        """Runs tile k: `part` (an s3dis.Room) holds the cloud's points near it (`near_tile`), in
        the cloud's order, `tile_near` their tiles. Every block holding one of the tile's points
        runs; the blocks whose first point is the tile's go to `kept` (KeptBlocks) as grid cells of
        `merger`. Returns, for the tile's own points in order, their mean class probabilities
        ((n, C) float32), visits (int32) and row weights (float64: num_points / block points,
        summed over their blocks)."""
        segmenter = self.segmenter
        own = np.flatnonzero(tile_near == k)
        mean_p = np.zeros((len(own), segmenter.model.num_classes), np.float32)  # sums until divided below
        visits = np.zeros(len(own), np.int32)
        weights = np.zeros(len(own), np.float64)
        normalised = s3dis.normalised_xyz(part.xyz, limit)
        blocks = self._tile_blocks(part, tile_near, grid, tile, k)
        for (i, j, _), points, block_p, labels, classes in segmenter.block_outputs(part, blocks, seed, limit, progress):
            mine = tile_near[points] == k  # points: ascending, the block's first point is points[0]
            slots = np.searchsorted(own, points[mine])
            mean_p[slots] += block_p[mine]
            visits[slots] += 1
            weights[slots] += segmenter.num_points / len(points)
            if mine[0]:
                kept.add((i, j if i % 2 == 0 else -j), merger.cells(normalised[points]), labels, classes)
        mean_p /= np.maximum(visits, 1)[:, None]  # mean probabilities, as a single pass divides them
        return mean_p, visits, weights

    def merge_kept(self, kept, merger):
        """Merges every tile's kept blocks in the single pass's order; a cloud without any block
        is an error."""
        if not kept:
            size, needed = self.segmenter.block_size, self.segmenter.cfg["min_block_points"]
            raise PredictError(
                f"no block of {size} m x {size} m holds {needed} points (eval.min_block_points): nothing to label; "
                "are the coordinates in metres?"
            )
        kept.merge_into(merger)

    def tile_window(self, tile):
        """(low, high): the half-open ranges of block columns and rows (x, y) that may hold a point of
        the tile, as (2,) int64 each."""
        size, stride = self.segmenter.block_size, self.stride
        reach = int(np.ceil(size / stride - 1e-9)) + 1
        low = np.rint(tile.origin / stride).astype(np.int64) - reach
        high = np.rint((tile.origin + tile.side) / stride).astype(np.int64) + 2
        return low, high

    def near_tile(self, xyz, tile):
        """Which of the points (float32 shifted coordinates) lie near the tile: a superset of the
        points of the blocks that may hold one of its points (indices, ascending)."""
        low, high = self.tile_window(tile)
        size, stride = self.segmenter.block_size, self.stride
        # float32(t) rounds to nearest: no float32 x <= t lies above it.
        first, last = np.float32(low * stride), np.float32((high - 1) * stride + size)
        x, y = xyz[:, 0], xyz[:, 1]
        return np.flatnonzero((x >= first[0]) & (x <= last[0]) & (y >= first[1]) & (y <= last[1]))

    def _tile_blocks(self, part, tile_near, grid, tile, k):
        """The blocks ((i, j, members), members indices into `part`, the points near tile k) that
        hold one of the tile's points, in serpentine order."""
        low, high = self.tile_window(tile)
        blocks = self.segmenter.blocks(part, grid, (low[0], high[0]), (low[1], high[1]))
        return [(i, j, m) for i, j, m in blocks if (tile_near[m] == k).any()]

    @staticmethod
    def _cloud_room(xyz, rgb, offset, name):
        """The cloud as one room: float32 coordinates from its minimum corner, grey without colour."""
        count = len(xyz)
        colour = np.full((count, 3), GREY, np.uint8) if rgb is None else rgb
        return s3dis.Room(name=name, xyz=(xyz - offset).astype(np.float32), rgb=colour,
                          semantic=no_label(count), instance=no_label(count))


def no_label(count):
    """-1 for every point, as a read-only view: no memory per point."""
    return np.broadcast_to(np.int32(-1), (count,))


def _part(room, near):
    """The points `near` of a room, as a room."""
    return s3dis.Room(room.name, room.xyz[near], room.rgb[near], no_label(len(near)), no_label(len(near)))


class KeptBlocks:
    """The clusters of the blocks each tile keeps, as grid cells of a RoomMerger, spilled to a file
    (`path`) until all are merged in the single pass's serpentine order (`merge_into`); only a
    small index per block is held. A context manager: its file is closed on leaving, merged or not."""

    def __init__(self, path, merger):
        self.path = pathlib.Path(path)
        self.cell_type = np.int32 if merger.grid_size**3 <= np.iinfo(np.int32).max else np.int64
        self._file = open(self.path, "wb")  # noqa: SIM115 -- closed by merge_into or on leaving the block
        self._index = []  # (serpentine position, offset, points, clusters) of every block

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def __len__(self):
        return len(self._index)

    def add(self, position, cells, labels, classes):
        self._index.append((position, self._file.tell(), len(cells), len(classes)))
        self._file.write(np.asarray(cells, self.cell_type).tobytes())
        self._file.write(np.asarray(labels, np.int32).tobytes())
        self._file.write(np.asarray(classes, np.int64).tobytes())

    def merge_into(self, merger):
        self._file.close()
        self._index.sort(key=lambda block: block[0])
        with open(self.path, "rb") as f:
            for _, offset, count, clusters in self._index:
                f.seek(offset)
                cells = np.fromfile(f, self.cell_type, count)
                labels = np.fromfile(f, np.int32, count)
                merger.merge_cells(cells, labels, np.fromfile(f, np.int64, clusters))
        self.path.unlink()


def _tile_of(count, tiles):
    """The tile of each point (int32)."""
    tile_of = np.empty(count, np.int32)
    for k, tile in enumerate(tiles):
        tile_of[tile.indices] = k
    return tile_of


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


def output_formats(formats, txt):
    """The label formats to write: `formats` without "txt" when `txt` is off (--notxt)."""
    return [f for f in formats if txt or f != "txt"]


def write_outputs(out_dir, stem, xyz, prediction, class_names, palette, txt=True, pictures=True,
                  formats=DEFAULT_FORMATS, rgb=None, las_source=None):
    """Writes one cloud's outputs, the label files of `formats` (FORMAT_SUFFIXES), the instance list
    and the picture, all together or not at all (`publish_outputs`); `class_names` and `palette`
    ((C, 3) colours) are the dataset's. LAS / LAZ outputs copy the points of `las_source` (the
    path of a LAS / LAZ input, read again chunk by chunk) or else hold `xyz` and `rgb`."""
    from jsnet_tf import io, metrics

    formats = output_formats(formats, txt)

    def write(staged):
        labels = {"semantic": prediction.semantic, "instance": prediction.instance, "score": prediction.score}
        if "ply" in formats or pictures:
            semantic_rgb = io.semantic_colors(prediction.semantic, palette)
            instance_rgb = io.instance_colors(prediction.instance)
        if "ply" in formats:
            io.write_ply(staged["_semantic.ply"], xyz, semantic_rgb, extra=labels)
            io.write_ply(staged["_instance.ply"], xyz, instance_rgb, extra=labels)
        if "txt" in formats:
            write_labels_txt(staged["_labels.txt"], xyz, prediction.semantic, prediction.instance, prediction.score)
        table = prediction.instances
        metrics.write_instance_list(staged["_instances.txt"], table)
        if "npz" in formats:
            with open(staged["_labels.npz"], "wb") as f:
                np.savez(
                    f, xyz=xyz, semantic=prediction.semantic, instance=prediction.instance, score=prediction.score,
                    offset=prediction.offset, classes=np.array(class_names), instance_ids=table.ids,
                    instance_classes=table.classes, instance_confidences=table.confidences,
                    instance_points=table.points,
                )
        if "las" in formats or "laz" in formats:
            confidence = instance_confidence_of_points(prediction.instance, prediction.instances)

            def point_labels(start, stop):
                return (prediction.semantic[start:stop], prediction.instance[start:stop], confidence[start:stop],
                        prediction.score[start:stop])

            for name in ("las", "laz"):
                if name in formats:
                    write_las_labels(staged[f"_labels.{name}"], class_names, point_labels, las_source, xyz, rgb)
        if pictures:
            _write_picture(staged[".png"], xyz - prediction.offset, semantic_rgb, instance_rgb, stem,
                           prediction.semantic, class_names)

    return publish_outputs(out_dir, stem, OUTPUT_SUFFIXES, write)


def instance_confidence_of_points(instance, table):
    """Each point's instance's confidence (float32), 0 for points without an instance; `table` the
    instances (metrics.InstanceTable)."""
    ids = np.asarray(table.ids)
    confidence = np.zeros(len(instance), np.float32)
    held = instance >= 0
    if held.any():
        confidence[held] = np.asarray(table.confidences)[np.searchsorted(ids, instance[held])]
    return confidence


def write_las_labels(path, class_names, labels, las_source=None, xyz=None, rgb=None):
    """A LAS / LAZ output (jsnet_tf.scan_formats.LasLabelWriter), written LAS_WRITE_CHUNK points at a
    time: the points of the LAS / LAZ file `las_source`, copied, or `xyz` (float64, at
    millimetres from its rounded minimum corner) and `rgb`; `labels(start, stop)` gives the
    (semantic, instance, confidence, score) of those points."""
    from jsnet_tf import scan_formats

    if las_source is not None:
        header = scan_formats.las_header(las_source)
        with scan_formats.LasLabelWriter(path, class_names, source_header=header) as writer:
            for start, chunk in scan_formats.las_chunks(las_source, LAS_WRITE_CHUNK):
                writer.write(*labels(start, start + len(chunk)), source_points=chunk)
        return
    with scan_formats.LasLabelWriter(path, class_names, origin=xyz.min(axis=0), has_rgb=rgb is not None) as writer:
        for start in range(0, len(xyz), LAS_WRITE_CHUNK):
            rows = slice(start, start + LAS_WRITE_CHUNK)
            writer.write(*labels(start, start + LAS_WRITE_CHUNK), xyz=xyz[rows], rgb=None if rgb is None else rgb[rows])


def write_labels_txt(path, xyz, semantic, instance, score, rows_per_write=1_000_000,
                     header="x y z semantic instance score"):
    """`x y z semantic instance score` a line ('%f %f %f %d %d %f'), under a `# <header>` line;
    formatted with vectorised digit arithmetic, a million rows at a time."""
    chunks = ([xyz[rows, 0], xyz[rows, 1], xyz[rows, 2], semantic[rows], instance[rows], score[rows]]
              for rows in (slice(start, start + rows_per_write) for start in range(0, len(xyz), rows_per_write)))
    write_labels_txt_chunks(path, chunks, header)


def write_labels_txt_chunks(path, chunks, header="x y z semantic instance score"):
    """`write_labels_txt` of a cloud given as chunks of its six columns (x, y, z, semantic,
    instance, score), in order."""
    from jsnet_tf.metrics import format_lines

    with open(path, "wb") as f:
        f.write(f"# {header}\n".encode())
        for columns in chunks:
            f.write(format_lines(columns, "fffddf"))


def _write_picture(path, local_xyz, semantic_rgb, instance_rgb, stem, semantic, class_names):
    from jsnet_tf import viz

    z = local_xyz[:, 2]
    viz.render_segmentation_panel(
        path, local_xyz, {"semantic": semantic_rgb, "instance": instance_rgb},
        title=f"{stem}: top view below 85% of the height, metres from the minimum corner",
        z_max=float(z.min() + 0.85 * (z.max() - z.min())), legends={"semantic": (semantic, class_names)},
    )


def predict_file(path, cloud_segmenter, class_names, palette, seed, out_dir, options):
    """Reads, segments and writes one input (options: jsnet_tf.tasks.base.PredictOptions); returns a
    one-line summary."""
    from jsnet_tf import io

    started = time.time()
    outputs = output_paths(out_dir, path.stem)
    existing = [p for p in outputs if p.exists()]
    if existing and not options.overwrite:
        raise PredictError(f"{existing[0]} exists (pass --overwrite to replace it)")
    from jsnet_tf import scan_formats

    if path.suffix.lower() in scan_formats.LAS_SUFFIXES and _larger_than_a_pass(path, cloud_segmenter):
        from jsnet_tf import out_of_core

        return out_of_core.predict_las(path, cloud_segmenter, class_names, palette, seed, out_dir, options)
    cloud = io.read_point_cloud(path, nan_policy=options.nan_policy, color_max=options.color_max,
                                e57_scan=options.extra.get("e57_scan"))
    las_source = path if path.suffix.lower() in scan_formats.LAS_SUFFIXES else None
    notes = [f"{len(cloud)} points"]
    if cloud.num_dropped:
        notes.append(f"dropped {cloud.num_dropped} with NaN or infinite values")
    rgb = cloud.rgb if options.color else None
    if rgb is None:
        warn_grey(path, cloud.rgb is not None)
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
    written = write_outputs(out_dir, path.stem, cloud.xyz, prediction, class_names, palette, options.txt, options.pictures,
                            options.extra.get("format", DEFAULT_FORMATS), cloud.rgb, las_source)
    classes = len(np.unique(prediction.semantic))
    instances = len(np.unique(prediction.instance[prediction.instance >= 0]))
    return (f"{path}: {classes} classes, {instances} instances -> {', '.join(p.name for p in written)} "
            f"({time.time() - started:.1f} s)")


def warn_grey(path, has_colour):
    """The warning of a cloud labelled without colour (`has_colour`: it had some, --nocolor)."""
    why = "colours ignored (--nocolor)" if has_colour else "no colours"
    print(f"predict: warning: {path}: {why}: every point gets mid-grey ({GREY}/255); expect lower accuracy, "
          "the network was trained with colour", file=sys.stderr, flush=True)


def _larger_than_a_pass(path, cloud_segmenter):
    """Whether a LAS / LAZ file declares more points than one pass takes (then it is labelled out of
    core, jsnet_tf.out_of_core); a file that cannot be opened is left to the reader's errors."""
    from jsnet_tf import scan_formats

    limit = cloud_segmenter.max_points_per_pass
    try:
        if limit == 0 or not path.is_file() or path.stat().st_size == 0:
            return False
        return int(scan_formats.las_header(path).point_count) > limit
    except OSError:
        return False
