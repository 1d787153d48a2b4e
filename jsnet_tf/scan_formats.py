"""Scanners' files: LAS / LAZ (laspy, lazrs backend), E57 (pye57) and PCD (pypcd4) in, LAS / LAZ out.

Reading gives what `jsnet_tf.io.read_point_cloud` returns for every format: float64 coordinates in
the file's own frame (georeferenced ones included: nothing is rounded to float32 here), colours and
the other per-point values.

- LAS / LAZ: coordinates are the file's integers times its scale plus its offset, in float64.
  Colour is the 16-bit `red green blue` of point formats 2, 3, 5, 7, 8, 10; values that all fit in
  0..255 are taken as 8-bit colours stored in 16-bit fields (as CloudCompare and others write),
  others are scaled by 255 / 65535. `intensity` is kept as an extra value, never taken as colour.
  A file whose header's point count disagrees with the points it holds, or that ends early
  (truncated LAZ), is an error. `las_chunks` streams a file for clouds larger than memory.
- E57: every scan of the file, each moved into the file's frame by its pose (rotation quaternion
  and translation, in float64), one after another; or one scan (`scan=k`). Points marked invalid
  are left out; spherical coordinates are converted. Colours are scaled from the scan's
  `colorLimits` (else its field limits) to 0..255; intensity is an extra value.
- PCD: ASCII, binary and binary_compressed files; `x y z` are required; colour from a packed
  `rgb` / `rgba` field or from `r g b` fields; other fields (intensity, ...) are extra values.

Writing (`LasLabelWriter`): LAS 1.4 (point format 6, 7 with colour, 8 with near infrared) or LAZ,
in chunks, the semantic class of each point in `classification` as `CLASS_CODE_BASE + class`
(the user-definable range of LAS 1.4, so no class reads as an ASPRS standard class such as
ground), the class names in the standard Classification Lookup VLR, and the extra dimensions
`instance` (int32, -1 = none), `confidence` (float32, the confidence of the point's instance, 0
for none) and `score` (float32, the probability of the point's class). A LAS input keeps its
scales and offsets and its points' other fields (intensity, returns, GPS time, colour, ...).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

LAS_SUFFIXES = (".las", ".laz")
E57_SUFFIX = ".e57"
PCD_SUFFIX = ".pcd"
SUFFIXES = LAS_SUFFIXES + (E57_SUFFIX, PCD_SUFFIX)

CLASS_CODE_BASE = 64  # classification = CLASS_CODE_BASE + class index (LAS 1.4: 64..255 user definable)
CLASS_CODE_COUNT = 256 - CLASS_CODE_BASE
READ_CHUNK_POINTS = 250_000
OUTPUT_SCALE = 0.001  # metres per LAS integer unit for outputs of inputs that are not LAS
EXTRA_DIMENSIONS = (("instance", np.int32, "instance id, -1 = none"),
                    ("confidence", np.float32, "instance's mean class prob."),
                    ("score", np.float32, "probability of its class"))  # descriptions: 32 bytes at most
_LOOKUP_DESCRIPTION_BYTES = 15
_NIR_FORMATS = (8, 10)


def _error(message):
    from jsnet_tf.io import PointCloudError

    return PointCloudError(message)


def read(path, color_max=None, e57_scan=None):
    """(xyz float64 (N, 3), colours uint8 (N, 3) or None, extra values) of a scanner's file, by
    its suffix; `color_max` is LAS / LAZ's colour scale (255 or 65535; default detected)."""
    suffix = Path(path).suffix.lower()
    if suffix in LAS_SUFFIXES:
        return read_las(path, color_max)
    if suffix == E57_SUFFIX:
        return read_e57(path, e57_scan)
    return read_pcd(path)


def _first_line(error):
    """The first line of a library's exception (libE57 and pydantic write several)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _library_errors():
    """The exceptions laspy and its LAZ backend raise on a malformed file."""
    import laspy
    import lazrs

    return (laspy.errors.LaspyException, lazrs.LazrsError, ValueError, EOFError, struct.error)


# ------------------------------------------------------------------------------------------------
# LAS / LAZ
# ------------------------------------------------------------------------------------------------

def las_has_rgb(point_format) -> bool:
    return {"red", "green", "blue"} <= set(point_format.dimension_names)


def las_colors(path, red, green, blue, color_max=None) -> np.ndarray:
    """16-bit LAS colours -> (N, 3) uint8: 8-bit values stored in 16-bit fields (every value at
    most 255) are kept, others scaled by 255 / 65535 and rounded; `color_max` (255 or 65535)
    overrides."""
    rgb = np.stack([np.asarray(red), np.asarray(green), np.asarray(blue)], axis=1)
    color_max = las_color_max(path, int(rgb.max(initial=0)), color_max)
    if color_max == 255:
        return rgb.astype(np.uint8)
    # rint(v * 255 / 65535) = rint(v / 257), in integers (no ties: 257 is odd).
    return ((rgb.astype(np.uint32) + 128) // 257).astype(np.uint8)


def las_color_max(path, largest, color_max=None):
    """The full-intensity value (255 or 65535) of LAS colours whose largest value is `largest`:
    `color_max` if given (checked), else 255 when every value fits 8 bits."""
    if color_max is None:
        color_max = 255 if largest <= 255 else 65535
    if color_max not in (255, 65535):
        raise _error(f"{path}: LAS colours are 8-bit (--color_max 255) or 16-bit (65535), not {color_max:g}")
    if largest > color_max:
        raise _error(f"{path}: colour value {largest} beyond --color_max {color_max:g}")
    return color_max


def open_las(path):
    """laspy's reader of a LAS / LAZ file, or a one-line error naming it."""
    import laspy

    try:
        return laspy.open(str(path))
    except _library_errors() as e:
        raise _error(f"{path}: not a readable LAS/LAZ file: {_first_line(e)}") from None


def las_chunk_columns(chunk, has_rgb):
    """(xyz (n, 3) float64 in the file's frame, rgb (n, 3) uint16 or None) of a laspy chunk."""
    xyz = np.stack([np.asarray(chunk[name], np.float64) for name in "xyz"], axis=1)
    if not has_rgb:
        return xyz, None
    return xyz, np.stack([np.asarray(chunk[name], np.uint16) for name in ("red", "green", "blue")], axis=1)


def las_chunks(path, chunk_points=READ_CHUNK_POINTS):
    """Yields (start index, laspy ScaleAwarePointRecord) chunks of a LAS / LAZ file; checks that
    the file holds exactly the points its header declares (a truncated LAZ, a wrong count: one
    line naming the file)."""
    with open_las(path) as reader:
        expected = int(reader.header.point_count)
        _check_uncompressed_size(path, reader.header)
        start = 0
        try:
            for chunk in reader.chunk_iterator(chunk_points):
                if len(chunk) == 0:
                    break
                yield start, chunk
                start += len(chunk)
        except _library_errors() as e:
            raise _error(f"{path}: truncated or corrupt LAS/LAZ point data after {start} of {expected} points: "
                         f"{_first_line(e)}") from None
    if start != expected:
        raise _error(f"{path}: the LAS header declares {expected} points, the file holds {start}")


def _check_uncompressed_size(path, header):
    """An uncompressed LAS holds exactly its declared points between the point data's offset and
    its extended VLRs or waveform packets (or the end): a header count smaller or larger than that
    is an error."""
    if header.are_points_compressed:
        return
    # The points end where the extended VLRs or internal waveform packets begin, else at the end.
    starts = [int(getattr(header, name, 0) or 0) for name in ("start_of_first_evlr", "start_of_waveform_data_packet_record")]
    end = min([start for start in starts if start > 0], default=Path(path).stat().st_size)
    size = header.point_format.size
    stored, remainder = divmod(end - int(header.offset_to_point_data), size)
    if stored != int(header.point_count) or remainder:
        whole = f"{stored}" + (f" and {remainder} bytes" if remainder else "")
        raise _error(f"{path}: the LAS header declares {int(header.point_count)} points, the file holds {whole}")


def las_header(path):
    """The header of a LAS / LAZ file (laspy.LasHeader), read without its points."""
    with open_las(path) as reader:
        return reader.header


def read_las(path, color_max=None):
    """(xyz float64, colours uint8 or None, extra) of a whole LAS / LAZ file."""
    header = las_header(path)
    count = int(header.point_count)
    if count == 0:
        raise _error(f"{path}: zero points (the LAS header declares none)")
    has_rgb = las_has_rgb(header.point_format)
    xyz = np.empty((count, 3), np.float64)
    rgb = np.empty((count, 3), np.uint16) if has_rgb else None
    intensity = np.empty(count, np.uint16)
    for start, chunk in las_chunks(path):
        rows = slice(start, start + len(chunk))
        if rows.stop > count:  # more points than declared: las_chunks names the file below
            continue
        xyz[rows], chunk_rgb = las_chunk_columns(chunk, has_rgb)
        if has_rgb:
            rgb[rows] = chunk_rgb
        intensity[rows] = chunk.intensity
    colors = None if rgb is None else las_colors(path, rgb[:, 0], rgb[:, 1], rgb[:, 2], color_max)
    return xyz, colors, {"intensity": intensity}


# ------------------------------------------------------------------------------------------------
# E57
# ------------------------------------------------------------------------------------------------

def _e57_limits(header, field):
    """(min, max) of an E57 colour field: the scan's colorLimits, else the limits of the field's
    integer node, else 0..255."""
    from pye57 import libe57

    node = header.node
    low, high = f"{field}Minimum", f"{field}Maximum"
    if node.isDefined("colorLimits"):
        limits = node["colorLimits"]
        if limits.isDefined(low) and limits.isDefined(high):
            return float(limits[low].value()), float(limits[high].value())
    child = libe57.StructureNode(header.points.prototype()).get(field)
    for kind in (libe57.IntegerNode, libe57.ScaledIntegerNode):
        try:
            typed = kind(child)
        except Exception:  # noqa: BLE001, S112 -- libE57 tells a node's type only by refusing the cast
            continue
        return float(typed.minimum()), float(typed.maximum())
    return 0.0, 255.0


def _e57_read_fields(e57, header, fields, count):
    """Float64 arrays of the given point fields of one scan (libE57 converts and scales them)."""
    from pye57 import libe57

    data = {field: np.empty(count, np.float64) for field in fields}
    buffers = libe57.VectorSourceDestBuffer()
    for field, array in data.items():
        buffers.append(libe57.SourceDestBuffer(e57.image_file, field, array, count, True, True))
    reader = header.points.reader(buffers)
    try:
        read = reader.read()
    finally:
        reader.close()
    return {field: array[:read] for field, array in data.items()}


def read_e57(path, scan=None):
    """(xyz float64, colours uint8 or None, extra) of the scans of an E57 file, each with its
    pose applied: all of them (scan=None) or scan `scan`."""
    import pye57

    try:
        e57 = pye57.E57(str(path))
    except Exception as e:  # noqa: BLE001 -- libE57 raises its own exception types for malformed files
        raise _error(f"{path}: not a readable E57 file: {_first_line(e)}") from None
    try:
        count = e57.scan_count
        if count == 0:
            raise _error(f"{path}: the E57 file holds no scans (no points)")
        if scan is not None and not 0 <= scan < count:
            raise _error(f"{path}: --e57_scan {scan} does not exist: the file holds scans 0..{count - 1}")
        parts = [_read_e57_scan(path, e57, k) for k in ([scan] if scan is not None else range(count))]
    finally:
        e57.close()
    parts = [p for p in parts if len(p[0])]
    if not parts:
        raise _error(f"{path}: the E57 scans hold no valid points")
    xyz = np.concatenate([p[0] for p in parts])
    colors = None
    if all(p[1] is not None for p in parts):
        colors = np.concatenate([p[1] for p in parts])
    extra = {}
    if all("intensity" in p[2] for p in parts):
        extra["intensity"] = np.concatenate([p[2]["intensity"] for p in parts])
    return xyz, colors, extra


def _read_e57_scan(path, e57, index):
    from pye57.e57 import convert_spherical_to_cartesian

    try:
        header = e57.get_header(index)
        fields = set(header.point_fields)
        count = int(header.point_count)
        if {"cartesianX", "cartesianY", "cartesianZ"} <= fields:
            coordinates, invalid = ["cartesianX", "cartesianY", "cartesianZ"], "cartesianInvalidState"
        elif {"sphericalRange", "sphericalAzimuth", "sphericalElevation"} <= fields:
            coordinates, invalid = ["sphericalRange", "sphericalAzimuth", "sphericalElevation"], "sphericalInvalidState"
        else:
            raise _error(f"{path}: E57 scan {index} has neither cartesian nor spherical coordinates "
                         f"(fields: {', '.join(sorted(fields)) or 'none'})")
        if count == 0:
            return np.zeros((0, 3)), None, {}
        colour_fields = ["colorRed", "colorGreen", "colorBlue"]
        wanted = coordinates + [f for f in colour_fields + ["intensity", invalid] if f in fields]
        data = _e57_read_fields(e57, header, wanted, count)
        if len(data[coordinates[0]]) != count:
            raise _error(f"{path}: E57 scan {index} declares {count} points, {len(data[coordinates[0]])} could be read")
        keep = data[invalid] == 0 if invalid in data else np.ones(count, bool)
        xyz = np.stack([data[f][keep] for f in coordinates], axis=1)
        if invalid.startswith("spherical"):
            xyz = convert_spherical_to_cartesian(xyz)
        if header.has_pose():
            xyz = xyz @ np.asarray(header.rotation_matrix, np.float64).T + np.asarray(header.translation, np.float64)
        colors = None
        if all(f in data for f in colour_fields):
            channels = []
            for field in colour_fields:
                low, high = _e57_limits(header, field)
                values = (data[field][keep] - low) * (255.0 / (high - low) if high > low else 0.0)
                channels.append(np.clip(np.rint(values), 0, 255))
            colors = np.stack(channels, axis=1).astype(np.uint8)
        extra = {"intensity": data["intensity"][keep].astype(np.float32)} if "intensity" in data else {}
    except Exception as e:
        from jsnet_tf.io import PointCloudError

        if isinstance(e, PointCloudError):
            raise
        raise _error(f"{path}: cannot read E57 scan {index}: {_first_line(e)}") from None
    return xyz, colors, extra


# ------------------------------------------------------------------------------------------------
# PCD
# ------------------------------------------------------------------------------------------------

def read_pcd(path):
    """(xyz float64, colours uint8 or None, extra) of a PCD file."""
    import pypcd4

    try:
        cloud = pypcd4.PointCloud.from_path(str(path))
    except Exception as e:  # noqa: BLE001 -- pypcd4 raises ValueError, KeyError, pydantic and lzf errors
        raise _error(f"{path}: not a readable PCD file: {_first_line(e)}") from None
    fields = list(cloud.fields)
    missing = [name for name in "xyz" if name not in fields]
    if missing:
        raise _error(f"{path}: no {'/'.join(missing)} field in the PCD file (fields: {', '.join(fields) or 'none'})")
    columns = {name: np.asarray(cloud.pc_data[name]) for name in fields}
    xyz = np.stack([columns[name].astype(np.float64) for name in "xyz"], axis=1)
    colors = None
    packed = next((name for name in ("rgb", "rgba") if name in columns), None)
    if packed is not None:
        colors = pypcd4.PointCloud.decode_rgb(columns[packed]).astype(np.uint8)
    elif all(name in columns for name in "rgb"):
        colors = np.stack([columns[name] for name in "rgb"], axis=1)
    used = set("xyz") | ({packed} if packed else set("rgb") if colors is not None else set())
    extra = {name: values for name, values in columns.items() if name not in used and values.ndim == 1}
    if len(xyz) == 0:
        raise _error(f"{path}: zero points (the PCD file declares none)")
    return xyz, colors, extra


# ------------------------------------------------------------------------------------------------
# LAS / LAZ output
# ------------------------------------------------------------------------------------------------

def classification_lookup_vlr(class_names):
    """The LAS 1.4 Classification Lookup VLR (LASF_Spec, record 0): 256 entries of a class code
    and a 15-byte name."""
    import laspy

    if len(class_names) > CLASS_CODE_COUNT:
        raise _error(f"{len(class_names)} classes do not fit the LAS classification codes "
                     f"{CLASS_CODE_BASE}..255")
    record = bytearray()
    for code in range(256):
        k = code - CLASS_CODE_BASE
        name = class_names[k] if 0 <= k < len(class_names) else ""
        record += struct.pack("<B15s", code, name.encode("ascii", "replace")[:_LOOKUP_DESCRIPTION_BYTES])
    vlr = laspy.VLR(user_id="LASF_Spec", record_id=0, description="Classification Lookup",
                    record_data=bytes(record))
    return vlr


def output_point_format(source_format_id: int | None, has_rgb: bool) -> int:
    """The LAS 1.4 point format of an output: 8 for sources with near infrared, 7 with colour, else 6."""
    if source_format_id in _NIR_FORMATS:
        return 8
    return 7 if has_rgb else 6


class LasLabelWriter:
    """Writes labelled points to a LAS / LAZ file in chunks (`write` per chunk, then `close`).

    Args:
      path: the file (`.laz` compresses).
      class_names: the classes (their codes CLASS_CODE_BASE + k and names in the lookup VLR).
      source_header: the laspy header of a LAS / LAZ input: its scales, offsets, CRS and other
        VLRs are kept and its points' fields copied; None for other inputs (then `origin`).
      origin: (3,) float64 for inputs that are not LAS: the offsets (rounded to whole metres),
        coordinates written at OUTPUT_SCALE.
      has_rgb: the input has colours.
    """

    def __init__(self, path, class_names, source_header=None, origin=None, has_rgb=False):
        import laspy

        self.path = Path(path)
        source_format = source_header.point_format.id if source_header is not None else None
        if source_header is not None:
            has_rgb = las_has_rgb(source_header.point_format)
        header = laspy.LasHeader(point_format=output_point_format(source_format, has_rgb), version="1.4")
        if source_header is not None:
            header.scales = np.asarray(source_header.scales, np.float64)
            header.offsets = np.asarray(source_header.offsets, np.float64)
            header.vlrs.extend(v for v in source_header.vlrs
                               if not (v.user_id == "LASF_Spec" and v.record_id == 0)
                               and not (v.user_id == "LASF_Spec" and v.record_id == 4)  # extra-bytes VLR: rebuilt
                               and v.user_id != "laszip encoded")
        else:
            header.scales = np.full(3, OUTPUT_SCALE)
            header.offsets = np.floor(np.asarray(origin, np.float64))
        for name, dtype, description in EXTRA_DIMENSIONS:
            header.add_extra_dim(laspy.ExtraBytesParams(name=name, type=dtype, description=description))
        header.vlrs.append(classification_lookup_vlr(list(class_names)))
        header.global_encoding.wkt = True  # LAS 1.4 point formats 6-10 describe any CRS in WKT
        self.header = header
        self.has_rgb = has_rgb
        self.source_header = source_header
        self._writer = laspy.open(str(self.path), mode="w", header=header,
                                  do_compress=self.path.suffix.lower() == ".laz")

    def write(self, semantic, instance, confidence, score, xyz=None, rgb=None, source_points=None):
        """Appends points: `source_points` (a laspy record of a LAS input: every field copied,
        X Y Z as integers, i.e. exactly) or `xyz` (N, 3) float64 with `rgb` (N, 3) uint8 or None."""
        import laspy

        n = len(semantic)
        record = laspy.ScaleAwarePointRecord.zeros(n, header=self.header)
        if source_points is not None:
            names = set(self.header.point_format.dimension_names)
            for name in source_points.point_format.dimension_names:
                if name in names and name not in ("classification",) + tuple(d[0] for d in EXTRA_DIMENSIONS):
                    record[name] = np.asarray(source_points[name])
        else:
            scales, offsets = self.header.scales, self.header.offsets
            integers = np.rint((np.asarray(xyz, np.float64) - offsets) / scales)
            limits = np.iinfo(np.int32)
            if integers.size and (integers.min() < limits.min or integers.max() > limits.max):
                raise _error(f"{self.path}: coordinates span more than LAS integers hold at scale {scales[0]:g} m")
            record.X, record.Y, record.Z = (integers[:, k].astype(np.int32) for k in range(3))
            if rgb is not None and self.has_rgb:
                rgb16 = np.asarray(rgb, np.uint16) * 257  # 0..255 -> 0..65535
                record.red, record.green, record.blue = rgb16[:, 0], rgb16[:, 1], rgb16[:, 2]
        record.classification = (np.asarray(semantic, np.int64) + CLASS_CODE_BASE).astype(np.uint8)
        record.instance = np.asarray(instance, np.int32)
        record.confidence = np.asarray(confidence, np.float32)
        record.score = np.asarray(score, np.float32)
        self._writer.write_points(record)

    def close(self):
        self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
