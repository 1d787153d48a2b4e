"""Point-cloud files in and out: PLY, text (`.txt` / `.xyz` / `.pts`) and `.npy`; colour helpers.

`read_point_cloud` turns a user's file into float64 coordinates plus optional uint8 colours;
`write_ply` writes our outputs (coordinates, colours and per-point labels) atomically. NumPy and
plyfile only here; scanners' files (LAS / LAZ, E57, PCD) are read by jsnet_tf.scan_formats.

Colours stored as numbers that may be fractions (text, `.npy`, float PLY properties) are read as
0..255 unless every colour value lies in [0, 1], in which case they are fractions of full
intensity and are scaled by 255. A file whose 0..255 colours are all 0 or 1 is therefore read
as fractions; pass `color_max=255` (or `color_max=1`) to say which one a file uses.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import plyfile

from jsnet_tf import scan_formats
from jsnet_tf.errors import UserError
from jsnet_tf.files import AtomicTarget

TEXT_SUFFIXES = (".txt", ".xyz", ".pts")
SUFFIXES = (".ply", ".npy") + TEXT_SUFFIXES + scan_formats.SUFFIXES
NAN_POLICIES = ("error", "drop")

# Colour property names in PLY vertex elements, most common first.
_PLY_COLOR_NAMES = (("red", "green", "blue"), ("r", "g", "b"),
                    ("diffuse_red", "diffuse_green", "diffuse_blue"))
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_PLY_BYTE_ORDERS = {"ascii": "<", "binary_little_endian": "<", "binary_big_endian": ">"}
_RESERVED_NAMES = frozenset("xyz").union(*_PLY_COLOR_NAMES)
_MAX_HEADER_LINES = 10_000
_PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PointCloudError(UserError, ValueError):
    """A point-cloud file or array that cannot be read or written; the message names it."""


@dataclasses.dataclass
class PointCloud:
    """Points read from a file.

    `extra` holds the other per-point values the file had (PLY vertex properties such as
    `semantic` or `nx`, the intensity column of a `.pts` file, `.npy` columns past the sixth
    as `column_6`, ...). `num_dropped` counts points removed by `nan_policy="drop"`.
    """

    xyz: np.ndarray                 # (N, 3) float64
    rgb: np.ndarray | None          # (N, 3) uint8, or None if the file has no colours
    source: Path | None = None
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    num_dropped: int = 0

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------

def read_point_cloud(path: str | os.PathLike, nan_policy: str = "error",
                     color_max: float | None = None, e57_scan: int | None = None) -> PointCloud:
    """Reads a `.ply`, `.txt` / `.xyz` / `.pts`, `.npy`, `.las` / `.laz`, `.e57` or `.pcd` point cloud.

    Text files hold `x y z` or `x y z r g b` per line, separated by blanks or commas; lines
    starting with `#` or `//` are comments. `.pts` files may also start with a point-count line
    and hold `x y z intensity [r g b]` (Leica PTS). `.npy` files hold an (N, 3) or (N, 6+)
    array. A point with a NaN or infinite coordinate or colour is an error, or is left out
    (counted in `num_dropped`) with `nan_policy="drop"`. `color_max` overrides the colour
    scale detection described in the module docstring (for LAS / LAZ: 255 or 65535). Scanners'
    files are read as jsnet_tf.scan_formats says (E57: every scan with its pose, or `e57_scan`).
    """
    path = Path(path)
    if nan_policy not in NAN_POLICIES:
        raise PointCloudError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    if color_max is not None and not color_max > 0:
        raise PointCloudError(f"color_max must be positive, got {color_max!r}")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise PointCloudError(f"{path}: unknown point-cloud file type {path.suffix!r} "
                              f"(expected one of {', '.join(SUFFIXES)})")
    if not path.exists():
        raise PointCloudError(f"{path}: no such file")
    if not path.is_file():
        raise PointCloudError(f"{path}: not a file")
    try:
        if path.stat().st_size == 0:
            raise PointCloudError(f"{path}: empty file (no points)")
        if suffix in scan_formats.SUFFIXES:
            xyz, colors, extra = scan_formats.read(path, color_max, e57_scan)
            color_max = None  # applied: the colours are 0..255 now
        elif suffix == ".ply":
            xyz, colors, extra = _read_ply(path)
        elif suffix == ".npy":
            xyz, colors, extra = _read_npy(path)
        else:
            xyz, colors, extra = _read_text(path, path.read_bytes(), is_pts=suffix == ".pts")
    except OSError as e:
        raise PointCloudError(f"{path}: cannot read: {e}") from e
    if len(xyz) == 0:
        raise PointCloudError(f"{path}: zero points")
    xyz, colors, extra, num_dropped = _apply_nan_policy(path, xyz, colors, extra, nan_policy)
    rgb = None if colors is None else _colors_to_uint8(path, colors, color_max)
    return PointCloud(xyz=xyz, rgb=rgb, source=path, extra=extra, num_dropped=num_dropped)


def _apply_nan_policy(path, xyz, colors, extra, nan_policy):
    bad = ~np.isfinite(xyz).all(axis=1)
    if colors is not None and colors.dtype.kind == "f":
        bad |= ~np.isfinite(colors).all(axis=1)
    count = int(bad.sum())
    if count == 0:
        return xyz, colors, extra, 0
    if nan_policy == "error":
        raise PointCloudError(
            f"{path}: {count} of {len(xyz)} points have a NaN or infinite coordinate or colour "
            f"(first: point {int(np.argmax(bad))}); pass nan_policy='drop' to leave them out")
    if count == len(xyz):
        raise PointCloudError(f"{path}: all {count} points have NaN or infinite values")
    keep = ~bad
    return (xyz[keep], None if colors is None else colors[keep],
            {name: values[keep] for name, values in extra.items()}, count)


def _colors_to_uint8(path, colors: np.ndarray, color_max: float | None) -> np.ndarray:
    """(N, 3) colours of any numeric type -> uint8, scaled per the module docstring."""
    if color_max is None:
        if colors.dtype.kind in "iub":
            color_max = 255.0
        else:
            color_max = 1.0 if colors.min() >= 0 and colors.max() <= 1 else 255.0
    low, high = colors.min(), colors.max()
    if low < 0 or high > color_max:
        bad = int(np.argmax(((colors < 0) | (colors > color_max)).any(axis=1)))
        raise PointCloudError(
            f"{path}: colour out of range 0..{color_max:g} at point {bad}: "
            f"{colors[bad].tolist()} (values span {low:g}..{high:g})")
    if color_max == 255 and colors.dtype == np.uint8:
        return np.ascontiguousarray(colors)
    return np.rint(colors.astype(np.float64) * (255.0 / color_max)).astype(np.uint8)


def _split_columns(path, columns: Mapping[str, np.ndarray]):
    """Named per-point arrays -> (xyz float64, colours or None, extra)."""
    missing = [name for name in "xyz" if name not in columns]
    if missing:
        raise PointCloudError(f"{path}: no {'/'.join(missing)} coordinate property "
                              f"(found {', '.join(columns) or 'none'})")
    xyz = np.stack([columns[name].astype(np.float64) for name in "xyz"], axis=1)
    color_names = None
    for names in _PLY_COLOR_NAMES:
        present = [name for name in names if name in columns]
        if len(present) == 3:
            color_names = names
            break
        if present:
            raise PointCloudError(f"{path}: colour property {present[0]!r} without "
                                  f"{' and '.join(n for n in names if n not in present)}")
    colors = None
    if color_names is not None:
        colors = np.stack([columns[name] for name in color_names], axis=1)
        colors = colors.astype(colors.dtype.newbyteorder("="))
    used = set("xyz") | set(color_names or ())
    extra = {name: values.astype(values.dtype.newbyteorder("="))
             for name, values in columns.items() if name not in used}
    return xyz, colors, extra


# PLY ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _PlyElementHeader:
    name: str
    count: int
    properties: list[tuple[str, str | None]]  # (name, numpy type), None for list properties


def _read_ply_header(path, stream) -> tuple[str, list[_PlyElementHeader]]:
    """Parses the header of an open PLY file: (format, elements); leaves `stream` at the data."""
    if stream.readline().strip() != b"ply":
        raise PointCloudError(f"{path}: not a PLY file (the first line is not 'ply')")
    fmt, elements = None, []
    for number in range(2, _MAX_HEADER_LINES):
        raw = stream.readline()
        if not raw:
            raise PointCloudError(f"{path}: PLY header has no 'end_header' line")
        words = raw.decode("ascii", errors="replace").split()
        problem = None
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format":
            if len(words) != 3 or words[1] not in _PLY_BYTE_ORDERS:
                problem = "unknown format"
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(_PlyElementHeader(words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1].properties.append((words[2], _PLY_TYPES[words[1]]))
            elif (len(words) == 5 and words[1] == "list" and words[2] in _PLY_TYPES
                  and words[3] in _PLY_TYPES):
                elements[-1].properties.append((words[4], None))
            else:
                problem = "bad property"
        else:
            problem = "unexpected line"
        if problem:
            raise PointCloudError(f"{path}:{number}: {problem} in PLY header: {raw.strip()!r}")
    else:
        raise PointCloudError(f"{path}: PLY header longer than {_MAX_HEADER_LINES} lines")
    if fmt is None:
        raise PointCloudError(f"{path}: PLY header has no 'format' line")
    return fmt, elements


def _read_ply(path: Path):
    with open(path, "rb") as stream:
        fmt, elements = _read_ply_header(path, stream)
        vertex = next((e for e in elements if e.name == "vertex"), None)
        if vertex is None:
            raise PointCloudError(f"{path}: PLY file has no 'vertex' element (elements: "
                                  f"{', '.join(e.name for e in elements) or 'none'})")
        scalar = {name: dtype for name, dtype in vertex.properties if dtype is not None}
        # Check the property names (x/y/z, colour sets) before reading any data.
        _split_columns(path, {name: np.zeros(0, dtype) for name, dtype in scalar.items()})
        if vertex.count == 0:
            raise PointCloudError(f"{path}: zero points (the PLY vertex element is empty)")
        # Fast path: the vertex block is the first data in the file and has a fixed layout.
        if elements[0] is vertex and len(scalar) == len(vertex.properties):
            data = _read_first_ply_block(path, stream, fmt, vertex)
        else:
            data = None
    if data is None:
        try:
            data = plyfile.PlyData.read(str(path))["vertex"].data
        except (plyfile.PlyParseError, ValueError) as e:
            raise PointCloudError(f"{path}: malformed PLY data: {e}") from None
    return _split_columns(path, {name: np.asarray(data[name]) for name in scalar})


def _read_first_ply_block(path, stream, fmt, element) -> np.ndarray:
    """The element right after the header, as a structured array (fixed-size rows only)."""
    order = _PLY_BYTE_ORDERS[fmt]
    dtype = np.dtype([(name, order + t) for name, t in element.properties])
    if fmt == "ascii":
        try:
            table = np.loadtxt(stream, dtype=np.float64, ndmin=2, comments=None,
                               max_rows=element.count)
        except ValueError as e:
            raise PointCloudError(f"{path}: malformed ASCII PLY vertex data: {e}") from None
        if table.shape[1] != len(dtype.names):
            raise PointCloudError(f"{path}: ASCII PLY vertex rows have {table.shape[1]} values, "
                                  f"the header declares {len(dtype.names)} properties")
        data = np.empty(len(table), dtype)
        for column, name in enumerate(dtype.names):
            data[name] = table[:, column]
    else:
        data = np.fromfile(stream, dtype=dtype, count=element.count)
    if len(data) < element.count:
        raise PointCloudError(f"{path}: truncated PLY: the header declares {element.count} "
                              f"vertices, the file holds {len(data)}")
    return data


# Text --------------------------------------------------------------------------------------------

def _is_comment(line: bytes) -> bool:
    return line.startswith(b"#") or line.startswith(b"//")


def _first_data_line(data: bytes) -> tuple[int, int, int] | None:
    """(line number, start, end) of the first line that is neither blank nor a comment."""
    start, number = 0, 1
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        line = data[start:end].strip()
        if line and not _is_comment(line):
            return number, start, end
        start, number = end + 1, number + 1
    return None


def _text_layout(path, count: int, number: int, is_pts: bool) -> str:
    layouts = {3: "x y z", 6: "x y z r g b"}
    if is_pts:
        layouts.update({4: "x y z intensity", 7: "x y z intensity r g b"})
    if count not in layouts:
        expected = " or ".join(f"{k} ({v})" for k, v in sorted(layouts.items()))
        raise PointCloudError(f"{path}:{number}: expected {expected} values, found {count}")
    return layouts[count]


def _first_bad_text_line(path, data: bytes, count: int, first: int) -> str | None:
    """Slow scan, run only after the fast parse failed: describes the first malformed line."""
    for number, line in enumerate(data.split(b"\n"), start=1):
        line = line.strip()
        if not line or _is_comment(line):
            continue
        tokens = line.split()
        if len(tokens) != count:
            return (f"{path}:{number}: expected {count} values (as on line {first}), "
                    f"found {len(tokens)}")
        for token in tokens:
            try:
                float(token)
            except ValueError:
                hint = " (a header line? start it with '#')" if number == first else ""
                return f"{path}:{number}: not a number: {token.decode('latin-1')!r}{hint}"
    return None


def _read_text(path, data: bytes, is_pts: bool):
    if b"," in data:
        data = data.replace(b",", b" ")
    first = _first_data_line(data)
    if first is not None and is_pts:
        # A PTS file may start with its point count; blank that line (keeping line numbers).
        number, start, end = first
        if data[start:end].strip().isdigit():
            data = data[:start] + data[end:]
            first = _first_data_line(data)
    if first is None:
        raise PointCloudError(f"{path}: no points (the file is blank or only comments)")
    number, start, end = first
    count = len(data[start:end].split())
    layout = _text_layout(path, count, number, is_pts).split()
    comments = ("#", "//") if b"//" in data else "#"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(io.BytesIO(data), dtype=np.float64, ndmin=2, comments=comments)
    except ValueError as e:
        problem = _first_bad_text_line(path, data, count, number)
        raise PointCloudError(problem or f"{path}: cannot parse: {e}") from None
    return _split_columns(path, {name: table[:, k] for k, name in enumerate(layout)})


# NumPy -------------------------------------------------------------------------------------------

def _read_npy(path: Path):
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as e:
        raise PointCloudError(f"{path}: not a readable .npy array: {e}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf" or array.ndim != 2:
        raise PointCloudError(f"{path}: expected an (N, 3) or (N, 6+) numeric array, found "
                              f"{getattr(array, 'shape', '?')} of {getattr(array, 'dtype', '?')}")
    if array.shape[1] < 3 or array.shape[1] in (4, 5):
        raise PointCloudError(f"{path}: expected 3 (x y z) or at least 6 (x y z r g b ...) "
                              f"columns, found {array.shape[1]}")
    columns = {name: array[:, k] for k, name in enumerate("xyz")}
    if array.shape[1] >= 6:
        columns.update(red=array[:, 3], green=array[:, 4], blue=array[:, 5])
        columns.update({f"column_{k}": array[:, k] for k in range(6, array.shape[1])})
    return _split_columns(path, columns)


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------

def write_ply(path: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray | None = None,
              extra: Mapping[str, np.ndarray] | None = None, binary: bool = True) -> None:
    """Writes points as a PLY file (binary little-endian, or ASCII), atomically.

    `xyz` is written as `float` if it is float32, else as `double`; `rgb` as `uchar` (integers
    0..255 required); `extra` maps property names to per-point integer, boolean or float arrays
    (e.g. `{"semantic": labels, "instance": ids}`), each kept in its own type (bool -> uchar,
    64-bit integers -> int/uint when the values fit).
    """
    path = Path(path)
    vertex = _vertex_array(path, xyz, rgb, extra or {})
    element = plyfile.PlyElement.describe(vertex, "vertex")
    with AtomicTarget(path) as tmp:
        with open(tmp, "wb") as stream:
            if binary:
                plyfile.PlyData([element], text=False, byte_order="<").write(stream)
            else:
                header = plyfile.PlyData([element], text=True).header
                stream.write(header.encode("ascii") + b"\n")
                _write_ascii_rows(stream, vertex)


def write_ply_chunks(path: str | os.PathLike, count: int, chunks) -> None:
    """Writes a binary little-endian PLY of `count` vertices given in chunks, each a dict of
    per-vertex arrays (`x`, `y`, `z`, then `rgb` (n, 3) uint8 as red / green / blue, then other
    properties), the layout `write_ply` gives the same arrays; for clouds not held whole."""
    names = {np.dtype(t).str[1:]: name for name, t in reversed(_PLY_TYPES.items())}  # the short names
    chunks = iter(chunks)
    first = next(chunks)

    def vertex(chunk):
        columns = [(name, values) for name, values in chunk.items() if name != "rgb"]
        if "rgb" in chunk:
            colours = [(name, chunk["rgb"][:, k]) for k, name in enumerate(("red", "green", "blue"))]
            columns = columns[:3] + colours + columns[3:]
        array = np.empty(len(columns[0][1]), [(name, np.asarray(values).dtype.newbyteorder("<")) for name, values
                                               in columns])
        for name, values in columns:
            array[name] = values
        return array

    layout = vertex(first).dtype
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {count}"]
    header += [f"property {names[layout[name].str[1:]]} {name}" for name in layout.names] + ["end_header\n"]
    written = 0
    with AtomicTarget(path) as tmp, open(tmp, "wb") as stream:
        stream.write("\n".join(header).encode("ascii"))
        for chunk in itertools.chain([first], chunks):
            data = vertex(chunk).astype(layout, copy=False)
            stream.write(data.tobytes())
            written += len(data)
        if written != count:
            raise PointCloudError(f"{path}: {written} vertices written, {count} declared")


def write_npz_chunks(path: str | os.PathLike, arrays) -> None:
    """An `.npz` (as np.savez writes, np.load reads) of arrays each given whole or as
    `(shape, dtype, chunks)`: C-ordered pieces filling it row block by row block, so that no
    array is held whole."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            if isinstance(value, tuple):
                shape, dtype, chunks = value
            else:
                value = np.asarray(value)
                shape, dtype, chunks = value.shape, value.dtype, [value]
            dtype = np.dtype(dtype)
            if dtype.hasobject:
                raise ValueError(f"{path}: {name} is an array of Python objects; .npz files here hold plain data")
            with archive.open(f"{name}.npy", "w", force_zip64=True) as stream:
                np.lib.format.write_array_header_1_0(stream, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                              "fortran_order": False, "shape": tuple(shape)})
                written = 0
                for chunk in chunks:
                    chunk = np.ascontiguousarray(chunk, dtype)
                    stream.write(chunk.tobytes())
                    written += chunk.size
            if written != int(np.prod(shape)):
                raise PointCloudError(f"{path}: {written} values of {name} written, {int(np.prod(shape))} declared")


def _vertex_array(path, xyz, rgb, extra) -> np.ndarray:
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.dtype.kind not in "iuf":
        raise PointCloudError(f"{path}: xyz must be an (N, 3) numeric array, "
                              f"got shape {xyz.shape} of {xyz.dtype}")
    n = len(xyz)
    if n == 0:
        raise PointCloudError(f"{path}: no points to write")
    bad = int((~np.isfinite(xyz).all(axis=1)).sum())
    if bad:
        raise PointCloudError(f"{path}: refusing to write {bad} of {n} points with NaN or "
                              f"infinite coordinates")
    coordinate_type = "f4" if xyz.dtype == np.float32 else "f8"
    fields = [(name, coordinate_type, xyz[:, k]) for k, name in enumerate("xyz")]
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (n, 3) or rgb.dtype.kind not in "iu":
            raise PointCloudError(f"{path}: rgb must be an ({n}, 3) integer array (0..255), "
                                  f"got shape {rgb.shape} of {rgb.dtype}")
        if rgb.min() < 0 or rgb.max() > 255:
            raise PointCloudError(f"{path}: rgb values must lie in 0..255, "
                                  f"found {rgb.min()}..{rgb.max()}")
        fields += [(name, "u1", rgb[:, k]) for k, name in enumerate(("red", "green", "blue"))]
    for name, values in extra.items():
        if not isinstance(name, str) or not _PROPERTY_NAME.match(name):
            raise PointCloudError(f"{path}: extra property name {name!r} is not a plain "
                                  f"identifier")
        if name in _RESERVED_NAMES or name in {f[0] for f in fields}:
            raise PointCloudError(f"{path}: extra property {name!r} clashes with a coordinate "
                                  f"or colour property name, or is given twice")
        values = np.asarray(values)
        if values.shape != (n,):
            raise PointCloudError(f"{path}: extra property {name!r} must have shape ({n},), "
                                  f"got {values.shape}")
        fields.append((name, _ply_type_for(path, name, values), values))
    vertex = np.empty(n, [(name, dtype) for name, dtype, _ in fields])
    for name, _, values in fields:
        vertex[name] = values
    return vertex


def _ply_type_for(path, name: str, values: np.ndarray) -> str:
    """The PLY-representable numpy type that holds `values` exactly."""
    kind, size = values.dtype.kind, values.dtype.itemsize
    if kind == "b":
        return "u1"
    if kind == "f":
        return "f4" if size <= 4 else "f8"
    if kind in "iu" and size <= 4:
        return values.dtype.str[1:]
    if kind in "iu":
        low, high = values.min(), values.max()
        for candidate in ("i4", "u4"):
            limits = np.iinfo(candidate)
            if limits.min <= low and high <= limits.max:
                return candidate
        raise PointCloudError(f"{path}: extra property {name!r} has values {low}..{high}, "
                              f"beyond PLY's 32-bit integers")
    raise PointCloudError(f"{path}: extra property {name!r} has unsupported type "
                          f"{values.dtype} (need integers, booleans or floats)")


def _write_ascii_rows(stream, vertex: np.ndarray, chunk: int = 65_536) -> None:
    """One text line per vertex; floats with enough digits to read back bit-exactly."""
    formats = {"f4": "%.9g", "f8": "%.17g"}
    row = " ".join(formats.get(vertex.dtype[name].str[1:], "%d")
                   for name in vertex.dtype.names) + "\n"
    for start in range(0, len(vertex), chunk):
        part = vertex[start:start + chunk]
        columns = [part[name].tolist() for name in vertex.dtype.names]
        values = tuple(v for point in zip(*columns) for v in point)
        stream.write(((row * len(part)) % values).encode("ascii"))


# ------------------------------------------------------------------------------------------------
# Colours
# ------------------------------------------------------------------------------------------------

NO_LABEL_COLOR = np.array([128, 128, 128], np.uint8)  # label / instance -1
NO_LABEL_COLOR.flags.writeable = False


def _labels_array(values, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        raise PointCloudError(f"{what} must be integers, got {values.dtype}")
    if values.size and values.min() < -1:
        raise PointCloudError(f"{what} must be >= -1 (-1 = none), found {values.min()}")
    return values


def semantic_colors(labels, palette) -> np.ndarray:
    """uint8 colours (..., 3) for class labels: label k -> palette[k % len(palette)], -1 -> grey.
    The palette is the dataset's (its task's `palette()`)."""
    labels = _labels_array(labels, "labels")
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) == 0:
        raise PointCloudError(f"palette must be a (K, 3) array of colours, got {palette.shape}")
    palette = palette.astype(np.uint8)
    colors = palette[np.where(labels < 0, 0, labels) % len(palette)]
    colors[labels < 0] = NO_LABEL_COLOR
    return colors


def instance_colors(ids, seed: int = 0) -> np.ndarray:
    """uint8 colours (..., 3) for instance ids, -1 -> grey.

    The colour is a function of (id, seed) alone, so an instance keeps its colour whatever
    other ids a room holds. Hues follow the golden-ratio sequence (neighbouring ids far apart
    on the colour wheel); saturation and brightness vary with a hash of the id.
    """
    ids = _labels_array(ids, "instance ids")
    with np.errstate(over="ignore"):
        key = ids.astype(np.int64).astype(np.uint64)
        offset = _mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
        hue = (key * np.uint64(0x9E3779B97F4A7C15) + offset) >> np.uint64(11)
        bits = _mix64(key ^ offset)
    hue = hue.astype(np.float64) / 2.0 ** 53
    saturation = 0.55 + 0.40 * ((bits & np.uint64(0xFFFF)).astype(np.float64) / 0xFFFF)
    value = 0.70 + 0.30 * (((bits >> np.uint64(16)) & np.uint64(0xFFFF)).astype(np.float64)
                           / 0xFFFF)
    colors = np.rint(_hsv_to_rgb(hue, saturation, value) * 255).astype(np.uint8)
    colors[ids < 0] = NO_LABEL_COLOR
    return colors


def _mix64(x):
    """SplitMix64 finaliser: a well-spread 64-bit hash of each value (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _hsv_to_rgb(h, s, v) -> np.ndarray:
    """HSV in [0, 1] -> RGB in [0, 1], shape (..., 3)."""
    sector = np.floor(h * 6.0)
    f = h * 6.0 - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = sector.astype(np.int64) % 6
    choices = [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v),
                                         (t, p, v), (v, p, q))]
    return np.choose(sector[..., None], choices)
