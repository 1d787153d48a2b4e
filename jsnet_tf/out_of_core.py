"""Labelling LAS / LAZ clouds larger than memory: the memory is bounded by the tile, not the cloud.

`predict_las` is `jsnet_tf.prediction.predict_file` for a LAS / LAZ input of more points than
`--max_points_per_pass`. It gives the labels of the in-memory path (`CloudSegmenter.segment`):
the same tiles, the same blocks with the same points in the same order, the same merge of their
clusters; everything per point goes through a scratch folder next to the outputs instead of
whole-cloud arrays:

1. `LasSpill` reads the file in laspy's chunks once, writing its float64 coordinates and colours
   to raw files and keeping the minimum corner and the largest colour value;
2. a pass over those files gives the float32 extent (the room-relative channels' divisor) and
   the histogram of the tile unit's cells, from which the tiles are planned (`tile_side`, as
   `plan_tiles` does); a second pass writes the points near each tile (row, float32 shifted
   coordinates, colour, tile) to a file of that tile (points near several tiles go to each);
3. each tile runs as in memory (`CloudSegmenter.run_tile`) from its file alone; its points'
   class, score, coverage and row weight go to row-ordered files on disk, its mean
   probabilities to a file of the tile, its blocks' clusters to `KeptBlocks`;
4. the clusters are merged in the single pass's order; points in no block take the labels of the
   nearest covered point (searched tile by tile); the instances (`kept_instance_ids`) and their
   classes and confidences come from passes over the row-ordered files that keep only
   per-instance sums;
5. the outputs are written from those files in the input's order, chunk by chunk, into the
   staging folder of `publish_outputs` (all of them or none). The picture is left out.

Held in memory: one chunk, one tile's points and network work, the merge grid, per-block and
per-instance tables, and the points that lie in no block (usually none). Sums over the cloud are
taken chunk by chunk, so an instance's size or confidence can differ from the in-memory path's in
the last bits of a float64 (a size exactly at its class's threshold could flip); nearest-point
ties between tiles go to the first tile.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
import time

import numpy as np

from jsnet_tf import prediction
from jsnet_tf.data import s3dis
from jsnet_tf.prediction import GREY, PredictError, Tile

CHUNK_POINTS = 100_000  # points per chunk of the passes over the cloud (their temporaries: less than a tile's)
SPILLED = np.dtype([("row", "<i8"), ("xyz", "<f4", (3,)), ("rgb", "u1", (3,)), ("tile", "<i4")])
# The row-ordered per-point results on disk.
COLUMNS = {"semantic": np.int32, "score": np.float32, "covered": np.bool_, "weight": np.float64,
           "instance": np.int32, "room_instance": np.int64}


class LasSpill:
    """A LAS / LAZ file's points in `folder`, read back chunk by chunk: float64 coordinates (in
    the file's frame) and uint8 colours (None without colour), as jsnet_tf.scan_formats.read_las
    gives them; `count`, `minimum` ((3,) float64) and `has_rgb` describe it."""

    def __init__(self, path, folder, color_max=None):
        from jsnet_tf import scan_formats

        self.path, self.folder = pathlib.Path(path), pathlib.Path(folder)
        header = scan_formats.las_header(path)
        if int(header.point_count) == 0:
            from jsnet_tf.io import PointCloudError

            raise PointCloudError(f"{path}: zero points (the LAS header declares none)")
        self.has_rgb = scan_formats.las_has_rgb(header.point_format)
        minimum, largest, count = np.full(3, np.inf), 0, 0
        with open(self.folder / "xyz.f64", "wb") as xyz_file, open(self.folder / "rgb.u16", "wb") as rgb_file:
            for _, chunk in scan_formats.las_chunks(path, CHUNK_POINTS):
                xyz, rgb = scan_formats.las_chunk_columns(chunk, self.has_rgb)
                xyz_file.write(xyz.tobytes())
                minimum = np.minimum(minimum, xyz.min(axis=0))
                count += len(xyz)
                if self.has_rgb:
                    rgb_file.write(rgb.tobytes())
                    largest = max(largest, int(rgb.max(initial=0)))
        self.count, self.minimum = count, minimum
        self.color_max = scan_formats.las_color_max(path, largest, color_max) if self.has_rgb else None

    def chunks(self, size=CHUNK_POINTS):
        """Yields (start, xyz (n, 3) float64, rgb (n, 3) uint8 or None) in the file's order."""
        from jsnet_tf import scan_formats

        with open(self.folder / "xyz.f64", "rb") as xyz_file, open(self.folder / "rgb.u16", "rb") as rgb_file:
            for start in range(0, self.count, size):
                xyz = np.fromfile(xyz_file, np.float64, 3 * min(size, self.count - start)).reshape(-1, 3)
                rgb = None
                if self.has_rgb:
                    rgb16 = np.fromfile(rgb_file, np.uint16, 3 * len(xyz)).reshape(-1, 3)
                    rgb = scan_formats.las_colors(self.path, rgb16[:, 0], rgb16[:, 1], rgb16[:, 2], self.color_max)
                yield start, xyz, rgb


class DiskColumns:
    """Row-ordered per-point arrays (COLUMNS) of a cloud in files of `folder`: written at scattered
    rows a tile at a time, read in chunks of consecutive rows."""

    def __init__(self, folder, count):
        self.folder, self.count = pathlib.Path(folder), int(count)
        for name, dtype in COLUMNS.items():
            with open(self._path(name), "wb") as f:  # reserved, not sparse: a full disk is an OSError here,
                size = self.count * np.dtype(dtype).itemsize  # not a SIGBUS when a mapped page is written
                if size:
                    os.posix_fallocate(f.fileno(), 0, size)

    def _path(self, name):
        return self.folder / f"{name}.column"

    def put(self, name, rows, values):
        """Writes values at rows (ascending); only the pages of those rows are mapped, then released."""
        if len(rows):
            column = np.memmap(self._path(name), COLUMNS[name], "r+", shape=(self.count,))
            column[rows] = values
            column.flush()
            del column

    def take(self, name, rows):
        column = np.memmap(self._path(name), COLUMNS[name], "r", shape=(self.count,))
        values = np.array(column[rows])
        del column
        return values

    def read(self, name, start, stop):
        dtype = np.dtype(COLUMNS[name])
        with open(self._path(name), "rb") as f:
            f.seek(start * dtype.itemsize)
            return np.fromfile(f, dtype, stop - start)


class LargeCloudPrediction:
    """The labels of a cloud segmented out of core, on disk: `offset`, `num_tiles`, `instances`
    (metrics.InstanceTable), `class_counts` (points per class) and `labels(start, stop)`."""

    def __init__(self, columns, offset, num_tiles, instances, class_counts):
        self.columns, self.offset, self.num_tiles = columns, offset, num_tiles
        self.instances, self.class_counts = instances, class_counts

    def labels(self, start, stop):
        """(semantic, instance, confidence, score) of rows start..stop."""
        instance = self.columns.read("instance", start, stop)
        return (self.columns.read("semantic", start, stop), instance,
                prediction.instance_confidence_of_points(instance, self.instances),
                self.columns.read("score", start, stop))


def segment_las(cloud_segmenter, spill, use_color, name, seed=0, progress=None, log=None):
    """Labels every point of a spilled LAS / LAZ cloud (`LasSpill`) as `CloudSegmenter.segment`
    does, a tile at a time; `use_color` False gives every point grey. `log(text)` hears the plan.
    Returns a LargeCloudPrediction whose files lie in the spill's folder."""
    from jsnet_tf import metrics

    segmenter, folder = cloud_segmenter.segmenter, spill.folder
    offset = spill.minimum
    top, tiles, tile_keys, span, side = _plan(cloud_segmenter, spill, offset)
    limit = s3dis.extent_limit(top)
    grid = segmenter.grid_shape(top.astype(np.float32))
    if log is not None:
        log(offset, top, len(tiles))
    _spill_tiles(cloud_segmenter, spill, offset, tiles, tile_keys, span, side, use_color)
    columns = DiskColumns(folder, spill.count)
    merger = segmenter.new_merger()
    uncovered = []  # (tile, slots in the tile, xyz) of points in no block
    with prediction.KeptBlocks(folder / "blocks.bin", merger) as kept:
        for k, tile in enumerate(tiles):
            spilled = _tile_points(folder, k)
            part = _spilled_room(spilled, name)
            mean_p, visits, weights = cloud_segmenter.run_tile(part, spilled["tile"], tile, k, grid, limit, seed,
                                                               progress, merger, kept)
            own = spilled["tile"] == k
            rows = spilled["row"][own]
            columns.put("semantic", rows, mean_p.argmax(axis=1))
            columns.put("score", rows, mean_p.max(axis=1))
            columns.put("covered", rows, visits > 0)
            columns.put("weight", rows, weights)
            np.save(folder / f"tile{k}.rows.npy", rows)
            np.save(folder / f"tile{k}.p.npy", mean_p)
            if not (visits > 0).all():
                slots = np.flatnonzero(visits == 0)
                uncovered.append((k, slots, spilled["xyz"][own][slots]))
            del spilled, part, mean_p
        cloud_segmenter.merge_kept(kept, merger)
    if uncovered:
        _label_uncovered(folder, columns, tiles, uncovered)
    num_classes = segmenter.model.num_classes
    renumbered, class_counts = _room_instances(segmenter, spill, columns, merger, offset, limit, num_classes)
    # The instances' classes (most frequent of their points') and confidences (mean probability of it).
    votes = np.zeros((max(renumbered.max(initial=-1) + 1, 0), num_classes), np.int64)
    for start in range(0, spill.count, CHUNK_POINTS):
        stop = min(start + CHUNK_POINTS, spill.count)
        merged = columns.read("room_instance", start, stop)
        instance = np.full(stop - start, -1, np.int32)
        instance[merged >= 0] = renumbered[merged[merged >= 0]]
        columns.put("instance", np.arange(start, stop), instance)
        held = instance >= 0
        votes += np.bincount(instance[held] * num_classes + columns.read("semantic", start, stop)[held],
                             minlength=votes.size).reshape(votes.shape)
    classes, points = votes.argmax(axis=1), votes.sum(axis=1)
    chosen = np.zeros(len(votes), np.float64)
    for k in range(len(tiles)):
        rows = np.load(folder / f"tile{k}.rows.npy")
        instance = columns.take("instance", rows)
        held = np.flatnonzero(instance >= 0)
        mean_p = np.load(folder / f"tile{k}.p.npy")
        picked = mean_p[held, classes[instance[held]]].astype(np.float64)
        chosen += np.bincount(instance[held], picked, minlength=len(votes))
    table = metrics.InstanceTable(np.arange(len(votes), dtype=np.int64), classes.astype(np.int64),
                                  chosen / np.maximum(points, 1), points.astype(np.int64))
    return LargeCloudPrediction(columns, offset, len(tiles), table, class_counts)


def _plan(cloud_segmenter, spill, offset):
    """(float32 extent (3,) float64, tiles (Tile, indices None), their (x, y) keys, the key span,
    the side in units): the tiles `CloudSegmenter.plan` cuts, from a histogram of unit cells."""
    unit = cloud_segmenter.unit
    top = np.zeros(3)
    occupied, counts = np.zeros((0, 2), np.int64), np.zeros(0, np.int64)  # the histogram so far
    for _, xyz, _ in spill.chunks():
        top = np.maximum(top, (xyz - offset).astype(np.float32).max(axis=0))
        cells = np.floor((xyz[:, :2] - offset[:2]) / unit).astype(np.int64)
        occupied, inverse = np.unique(np.concatenate([occupied, cells]), axis=0, return_inverse=True)
        weights = np.concatenate([counts, np.ones(len(cells), np.int64)])
        counts = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(occupied)).astype(np.int64)
    side = prediction.tile_side(occupied, counts, cloud_segmenter.max_points_per_pass)
    keys = np.unique(occupied // side, axis=0)  # ordered as plan_tiles orders its tiles
    span = int(keys[:, 1].max(initial=0)) + 1
    tiles = [Tile(origin=key * side * unit, side=side * unit, indices=None) for key in keys]
    return top, tiles, keys[:, 0] * span + keys[:, 1], span, side


def _spill_tiles(cloud_segmenter, spill, offset, tiles, tile_keys, span, side, use_color):
    """Writes the points near each tile (`near_tile`) to its file: row, float32 shifted coordinates,
    the colour the network sees, the point's own tile."""
    unit = cloud_segmenter.unit
    neighbours = _neighbouring_tiles(cloud_segmenter, tiles, tile_keys, span)
    for k in range(len(tiles)):
        _tile_path(spill.folder, k).touch()
    for start, xyz, rgb in spill.chunks():
        records = np.empty(len(xyz), SPILLED)
        records["row"] = np.arange(start, start + len(xyz))
        records["xyz"] = (xyz - offset).astype(np.float32)
        records["rgb"] = rgb if use_color and rgb is not None else GREY
        keys = np.floor((xyz[:, :2] - offset[:2]) / unit).astype(np.int64) // side
        records["tile"] = np.searchsorted(tile_keys, keys[:, 0] * span + keys[:, 1])
        # A tile's window is tested on the points of the tiles it can reach only (its neighbours),
        # kept in the chunk's order.
        by_tile = np.argsort(records["tile"], kind="stable")
        bounds = np.searchsorted(records["tile"][by_tile], np.arange(len(tiles) + 1))
        for k in np.unique(np.concatenate([neighbours[j] for j in np.unique(records["tile"])])):
            candidates = np.sort(np.concatenate([by_tile[bounds[j]:bounds[j + 1]] for j in neighbours[k]]))
            near = candidates[cloud_segmenter.near_tile(records["xyz"][candidates], tiles[k])]
            if len(near):
                with open(_tile_path(spill.folder, k), "ab") as f:
                    f.write(records[near].tobytes())


def _neighbouring_tiles(cloud_segmenter, tiles, tile_keys, span):
    """For each tile, the tiles (itself included) whose points can lie in its window (`tile_window`),
    a symmetric relation: the window reaches past the tile's edges by less than (reach + 1) tiles."""
    size, stride = cloud_segmenter.segmenter.block_size, cloud_segmenter.stride
    length, origin = tiles[0].side, tiles[0].origin  # every tile has the same side and window reach
    low, high = cloud_segmenter.tile_window(tiles[0])
    beyond = max(float((origin - low * stride).max()), float(((high - 1) * stride + size - origin - length).max()))
    reach = int(np.floor(beyond / length + 1e-6)) + 1
    kx, ky = tile_keys // span, tile_keys % span
    found = [[] for _ in tiles]
    for dx in range(-reach, reach + 1):
        for dy in range(-reach, reach + 1):
            wanted = (kx + dx) * span + (ky + dy)
            slot = np.minimum(np.searchsorted(tile_keys, wanted), len(tiles) - 1)
            hit = (tile_keys[slot] == wanted) & (ky + dy >= 0) & (ky + dy < span)
            for k in np.flatnonzero(hit):
                found[k].append(slot[k])
    return [np.array(sorted(f), np.int64) for f in found]


def _tile_path(folder, k):
    return folder / f"tile{k}.points"


def _tile_points(folder, k):
    return np.fromfile(_tile_path(folder, k), SPILLED)


def _spilled_room(spilled, name):
    count = len(spilled)
    return s3dis.Room(name, np.ascontiguousarray(spilled["xyz"]), np.ascontiguousarray(spilled["rgb"]),
                      prediction.no_label(count), prediction.no_label(count))


def _label_uncovered(folder, columns, tiles, uncovered):
    """Gives each point in no block the probabilities, class and score of the nearest covered
    point (as evaluation.nearest_covered), searching one tile's covered points at a time."""
    from scipy.spatial import cKDTree

    xyz = np.concatenate([points for _, _, points in uncovered])
    best = np.full(len(xyz), np.inf)
    source_tile = np.zeros(len(xyz), np.int64)
    source_slot = np.zeros(len(xyz), np.int64)
    for k in range(len(tiles)):
        spilled = _tile_points(folder, k)
        own = spilled["xyz"][spilled["tile"] == k]
        covered = np.flatnonzero(columns.take("covered", np.load(folder / f"tile{k}.rows.npy")))
        if not len(covered):
            continue
        distance, nearest = cKDTree(own[covered]).query(xyz)
        closer = distance < best
        best[closer], source_tile[closer], source_slot[closer] = distance[closer], k, covered[nearest[closer]]
    probabilities = None
    for k in np.unique(source_tile):
        picked = source_tile == k
        mean_p = np.load(folder / f"tile{k}.p.npy")
        if probabilities is None:
            probabilities = np.zeros((len(xyz), mean_p.shape[1]), np.float32)
        probabilities[picked] = mean_p[source_slot[picked]]
    first = 0
    for k, slots, _ in uncovered:
        mine = probabilities[first:first + len(slots)]
        first += len(slots)
        mean_p = np.load(folder / f"tile{k}.p.npy")
        mean_p[slots] = mine
        np.save(folder / f"tile{k}.p.npy", mean_p)
        rows = np.load(folder / f"tile{k}.rows.npy")[slots]
        columns.put("semantic", rows, mine.argmax(axis=1))
        columns.put("score", rows, mine.max(axis=1))


def _room_instances(segmenter, spill, columns, merger, offset, limit, num_classes):
    """(new id of each merged instance, points per class): `RoomSegmenter.room_instances` chunk by
    chunk, each point's merged instance written to the `room_instance` column."""
    from jsnet_tf.clustering import postprocess

    size = merger.num_instances
    votes = np.zeros(size * num_classes, np.float64)
    present = np.zeros(size, bool)
    class_counts = np.zeros(num_classes, np.int64)
    for start, xyz, _ in spill.chunks():
        stop = start + len(xyz)
        normalised = s3dis.normalised_xyz((xyz - offset).astype(np.float32), limit)
        room_ids = merger.assign(normalised)
        columns.put("room_instance", np.arange(start, stop), room_ids)
        semantic = columns.read("semantic", start, stop)
        class_counts += np.bincount(semantic, minlength=num_classes)
        member = room_ids >= 0
        weights = columns.read("weight", start, stop)[member] if segmenter.size_in_rows else None
        votes += np.bincount(room_ids[member] * num_classes + semantic[member], weights=weights, minlength=votes.size)
        present[room_ids[member]] = True
    renumbered = postprocess.kept_instance_ids(votes.reshape(size, num_classes), present, segmenter.mean_ins_size,
                                               segmenter.cfg["size_fraction"])
    return renumbered, class_counts


# ------------------------------------------------------------------------------------------------
# Outputs, streamed
# ------------------------------------------------------------------------------------------------


def write_large_outputs(out_dir, stem, spill, result, class_names, palette, formats, las_source):
    """The label files of `formats` and the instance list of a cloud segmented out of core, written
    in the input's order chunk by chunk, all together or not at all (`publish_outputs`)."""
    from jsnet_tf import io, metrics

    def chunks():  # (start, stop, xyz, rgb, semantic, instance, confidence, score)
        for start, xyz, rgb in spill.chunks():
            yield (start, start + len(xyz), xyz, rgb, *result.labels(start, start + len(xyz)))

    def write(staged):
        metrics.write_instance_list(staged["_instances.txt"], result.instances)
        if "ply" in formats:
            for suffix, colours in (("_semantic.ply", lambda s, i: io.semantic_colors(s, palette)),
                                    ("_instance.ply", lambda s, i: io.instance_colors(i))):
                io.write_ply_chunks(staged[suffix], spill.count, (
                    {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "rgb": colours(semantic, instance),
                     "semantic": semantic, "instance": instance, "score": score}
                    for _, _, xyz, _, semantic, instance, _, score in chunks()))
        if "txt" in formats:
            prediction.write_labels_txt_chunks(staged["_labels.txt"], (
                [xyz[:, 0], xyz[:, 1], xyz[:, 2], semantic, instance, score]
                for _, _, xyz, _, semantic, instance, _, score in chunks()))
        for name in ("las", "laz"):
            if name in formats:
                prediction.write_las_labels(staged[f"_labels.{name}"], class_names, result.labels, las_source)
        if "npz" in formats:
            table = result.instances
            count = spill.count
            io.write_npz_chunks(staged["_labels.npz"], {
                "xyz": ((count, 3), np.float64, (c[2] for c in chunks())),
                "semantic": ((count,), np.int32, (c[4] for c in chunks())),
                "instance": ((count,), np.int32, (c[5] for c in chunks())),
                "score": ((count,), np.float32, (c[7] for c in chunks())),
                "offset": result.offset, "classes": np.array(class_names), "instance_ids": table.ids,
                "instance_classes": table.classes, "instance_confidences": table.confidences,
                "instance_points": table.points,
            })

    return prediction.publish_outputs(out_dir, stem, prediction.OUTPUT_SUFFIXES, write)


def predict_las(path, cloud_segmenter, class_names, palette, seed, out_dir, options):
    """`prediction.predict_file` of a LAS / LAZ input larger than one pass, out of core; returns
    its one-line summary."""
    started = time.time()
    out_dir = pathlib.Path(out_dir)
    _remove_abandoned_scratch(out_dir, path.stem)
    folder = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.stem}.", suffix=".spill", dir=out_dir))
    (folder / "owner").write_text(str(os.getpid()))
    try:
        with _as_user_error(path):
            spill = LasSpill(path, folder, options.color_max)
            result, written = _predict_spilled(path, spill, cloud_segmenter, class_names, palette, seed, out_dir,
                                               options)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    classes = int((result.class_counts > 0).sum())
    return (f"{path}: {classes} classes, {len(result.instances.ids)} instances -> "
            f"{', '.join(p.name for p in written)} ({time.time() - started:.1f} s)")


def _predict_spilled(path, spill, cloud_segmenter, class_names, palette, seed, out_dir, options):
    """(LargeCloudPrediction, paths written) of a spilled input: the plan printed, the cloud
    segmented, the outputs written."""
    use_color = options.color and spill.has_rgb
    if not use_color:
        prediction.warn_grey(path, spill.has_rgb)

    def log(offset, top, num_tiles):
        notes = [f"{spill.count} points", "extent " + " x ".join(f"{e:.2f}" for e in top) + " m",
                 "minimum corner (" + ", ".join(f"{o:.3f}" for o in offset) + ") moved to the origin",
                 f"{num_tiles} tiles (more than --max_points_per_pass={cloud_segmenter.max_points_per_pass} "
                 "points), out of core"]
        if options.pictures:
            notes.append("no picture (out of core)")
        print(f"{path}: " + "; ".join(notes), flush=True)

    bar = None
    if options.progress:
        from tqdm import tqdm

        bar = tqdm(unit="block", desc=path.stem)
    try:
        result = segment_las(cloud_segmenter, spill, use_color, path.stem, seed, bar.update if bar else None, log)
    finally:
        if bar is not None:
            bar.close()
    formats = prediction.output_formats(options.extra.get("format", prediction.DEFAULT_FORMATS), options.txt)
    return result, write_large_outputs(out_dir, path.stem, spill, result, class_names, palette, formats, path)


def _remove_abandoned_scratch(out_dir, stem):
    """Removes the scratch folders of earlier runs on `stem` that were killed (their process is gone)."""
    for folder in out_dir.glob(f".{stem}.*.spill"):
        try:
            owner = int((folder / "owner").read_text())
            os.kill(owner, 0)  # raises ProcessLookupError when no such process runs
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):  # no owner file yet (a run just starting), or not ours to judge
            continue


@contextlib.contextmanager
def _as_user_error(path):
    """An OSError reading the input or writing the scratch files or outputs (a full disk, ...) as
    one line naming the input."""
    try:
        yield
    except OSError as e:
        raise PredictError(f"{path}: {e}") from None
