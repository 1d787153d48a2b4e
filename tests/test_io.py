"""Point-cloud readers / writers and colour helpers (`jsnet_tf.io`).

plyfile, writing and reading on its own, is the independent reference for the PLY paths; text
files are written here with Python's own float formatting.
"""

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from jsnet_tf import io as pio
from jsnet_tf.data import s3dis
from jsnet_tf.data.s3dis import CLASSES


def _cloud(rng, n=50, dtype=np.float32):
    xyz = (rng.normal(size=(n, 3)) * 3).astype(dtype)
    rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    return xyz, rgb


def _write_plyfile(path, fields, text=False, byte_order="<", elements=()):
    """Writes a vertex element of `fields` (name -> array) straight with plyfile."""
    n = len(next(iter(fields.values())))
    vertex = np.empty(n, [(name, values.dtype.str) for name, values in fields.items()])
    for name, values in fields.items():
        vertex[name] = values
    PlyData([*elements, PlyElement.describe(vertex, "vertex")], text=text,
            byte_order=byte_order).write(str(path))


def _faces(count):
    faces = np.empty(count, [("vertex_indices", "O")])
    faces["vertex_indices"] = [np.array([0, 1, 2], np.int32)] * count
    return PlyElement.describe(faces, "face")


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------------------
# PLY round trips
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("binary", [True, False], ids=["binary", "ascii"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_rgb", [True, False], ids=["rgb", "no_rgb"])
def test_write_ply_round_trip(tmp_path, rng, binary, dtype, with_rgb):
    xyz, rgb = _cloud(rng, dtype=dtype)
    semantic = rng.integers(-1, 13, len(xyz))               # int64 in, fits int32
    instance = rng.integers(-1, 40, len(xyz)).astype(np.int32)
    score = rng.random(len(xyz)).astype(np.float32)
    path = tmp_path / "out.ply"
    pio.write_ply(path, xyz, rgb if with_rgb else None,
                  {"semantic": semantic, "instance": instance, "score": score}, binary=binary)

    cloud = pio.read_point_cloud(path)
    assert cloud.xyz.dtype == np.float64
    np.testing.assert_array_equal(cloud.xyz, xyz.astype(np.float64))
    if with_rgb:
        assert cloud.rgb.dtype == np.uint8
        np.testing.assert_array_equal(cloud.rgb, rgb)
    else:
        assert cloud.rgb is None
    assert list(cloud.extra) == ["semantic", "instance", "score"]
    np.testing.assert_array_equal(cloud.extra["semantic"], semantic)
    np.testing.assert_array_equal(cloud.extra["instance"], instance)
    np.testing.assert_array_equal(cloud.extra["score"], score)
    assert cloud.source == path and cloud.num_dropped == 0 and len(cloud) == len(xyz)

    # plyfile reads the same numbers with the declared types.
    ply = PlyData.read(str(path))
    assert ply.text is (not binary)
    if binary:
        assert ply.byte_order == "<"
    vertex = ply["vertex"].data
    assert vertex.dtype["x"] == np.dtype(dtype) and vertex.dtype["semantic"] == np.int32
    np.testing.assert_array_equal(np.stack([vertex[k] for k in "xyz"], 1), xyz)
    np.testing.assert_array_equal(vertex["semantic"], semantic)
    assert _leftovers(tmp_path) == []


def test_write_ply_extra_types(tmp_path, rng):
    n = 20
    extra = {"flag": rng.random(n) > 0.5, "u16": rng.integers(0, 60000, n).astype(np.uint16),
             "big": rng.integers(2**31, 2**32 - 1, n, dtype=np.int64),
             "f16": rng.random(n).astype(np.float16), "i8": rng.integers(-100, 100, n, np.int8)}
    path = tmp_path / "types.ply"
    pio.write_ply(path, rng.random((n, 3)), None, extra)
    vertex = PlyData.read(str(path))["vertex"]
    assert [(p.name, p.val_dtype) for p in vertex.properties][3:] == [
        ("flag", "u1"), ("u16", "u2"), ("big", "u4"), ("f16", "f4"), ("i8", "i1")]
    cloud = pio.read_point_cloud(path)
    for name, values in extra.items():
        np.testing.assert_array_equal(cloud.extra[name], values.astype(cloud.extra[name].dtype))
        assert cloud.extra[name].astype(values.dtype).tolist() == values.tolist()


@pytest.mark.parametrize("byte_order", ["<", ">", "ascii"])
@pytest.mark.parametrize("names", [("red", "green", "blue"), ("r", "g", "b"),
                                   ("diffuse_red", "diffuse_green", "diffuse_blue")])
def test_reads_plyfile_written_uchar_colours(tmp_path, rng, byte_order, names):
    xyz, rgb = _cloud(rng, dtype=np.float64)
    fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "nx": rng.random(len(xyz))}
    fields.update({name: rgb[:, k] for k, name in enumerate(names)})
    path = tmp_path / "cloud.ply"
    _write_plyfile(path, fields, text=byte_order == "ascii",
                   byte_order="<" if byte_order == "ascii" else byte_order)
    cloud = pio.read_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.rgb, rgb)
    np.testing.assert_array_equal(cloud.extra["nx"], fields["nx"])
    assert cloud.extra["nx"].dtype.isnative


@pytest.mark.parametrize("text", [False, True], ids=["binary", "ascii"])
def test_reads_float_and_wide_integer_colours(tmp_path, rng, text):
    xyz, rgb = _cloud(rng)
    fractions = (rgb / 255.0).astype(np.float32)
    path = tmp_path / "float.ply"
    _write_plyfile(path, {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "red": fractions[:, 0],
                          "green": fractions[:, 1], "blue": fractions[:, 2]}, text=text)
    np.testing.assert_array_equal(pio.read_point_cloud(path).rgb, rgb)

    path = tmp_path / "ushort.ply"
    wide = rgb.astype(np.uint16)
    _write_plyfile(path, {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "red": wide[:, 0],
                          "green": wide[:, 1], "blue": wide[:, 2]}, text=text, byte_order=">")
    np.testing.assert_array_equal(pio.read_point_cloud(path).rgb, rgb)


@pytest.mark.parametrize("byte_order", ["<", ">", "ascii"])
@pytest.mark.parametrize("vertex_first", [True, False])
def test_reads_vertices_of_a_mesh(tmp_path, rng, byte_order, vertex_first):
    """Faces after the vertices (the fast path) or before them (plyfile reads the file)."""
    xyz, rgb = _cloud(rng, n=10)
    vertex = np.empty(10, [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"),
                           ("green", "u1"), ("blue", "u1")])
    for k, name in enumerate("xyz"):
        vertex[name] = xyz[:, k]
    for k, name in enumerate(("red", "green", "blue")):
        vertex[name] = rgb[:, k]
    elements = [PlyElement.describe(vertex, "vertex"), _faces(4)]
    if not vertex_first:
        elements.reverse()
    path = tmp_path / "mesh.ply"
    PlyData(elements, text=byte_order == "ascii",
            byte_order="<" if byte_order == "ascii" else byte_order).write(str(path))
    cloud = pio.read_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz.astype(np.float64))
    np.testing.assert_array_equal(cloud.rgb, rgb)
    assert cloud.extra == {}


# ------------------------------------------------------------------------------------------------
# Text and .npy
# ------------------------------------------------------------------------------------------------

def _text_lines(xyz, rgb=None, sep=" ", rgb_format="{:d}"):
    lines = []
    for k, point in enumerate(xyz.tolist()):
        values = [repr(v) for v in point]
        if rgb is not None:
            values += [rgb_format.format(v) for v in rgb[k].tolist()]
        lines.append(sep.join(values))
    return lines


@pytest.mark.parametrize("suffix", [".txt", ".xyz", ".pts"])
@pytest.mark.parametrize("sep", [" ", ",", "\t", ", "])
def test_reads_text_xyz_rgb(tmp_path, rng, suffix, sep):
    xyz, rgb = _cloud(rng, dtype=np.float64)
    path = tmp_path / f"cloud{suffix}"
    path.write_text("# exported by a scanner\n\n" + "\n".join(_text_lines(xyz, rgb, sep)) + "\n")
    cloud = pio.read_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.rgb, rgb)


def test_reads_text_xyz_only_with_crlf_and_slash_comments(tmp_path, rng):
    xyz, _ = _cloud(rng, dtype=np.float64)
    path = tmp_path / "cloud.xyz"
    path.write_bytes(("//X,Y,Z\r\n" + "\r\n".join(_text_lines(xyz, sep=","))).encode())
    cloud = pio.read_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    assert cloud.rgb is None


def test_text_colours_in_unit_range_are_scaled(tmp_path, rng):
    xyz, rgb = _cloud(rng, dtype=np.float64)
    path = tmp_path / "unit.txt"
    path.write_text("\n".join(_text_lines(xyz, rgb / 255.0, rgb_format="{!r}")))
    np.testing.assert_array_equal(pio.read_point_cloud(path).rgb, rgb)


def test_text_colour_scale_can_be_forced(tmp_path):
    path = tmp_path / "ambiguous.txt"
    path.write_text("0 0 0 1 0 1\n1 1 1 0 1 0\n")
    np.testing.assert_array_equal(pio.read_point_cloud(path).rgb, [[255, 0, 255], [0, 255, 0]])
    np.testing.assert_array_equal(pio.read_point_cloud(path, color_max=255).rgb,
                                  [[1, 0, 1], [0, 1, 0]])


def test_reads_leica_pts_with_count_and_intensity(tmp_path, rng):
    xyz, rgb = _cloud(rng, n=5, dtype=np.float64)
    intensity = rng.integers(-2048, 2048, 5)
    lines = [f"{a!r} {b!r} {c!r} {i} {r} {g} {bl}"
             for (a, b, c), i, (r, g, bl) in zip(xyz.tolist(), intensity, rgb.tolist())]
    path = tmp_path / "scan.pts"
    path.write_text("5\n" + "\n".join(lines) + "\n")
    cloud = pio.read_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.rgb, rgb)
    np.testing.assert_array_equal(cloud.extra["intensity"], intensity)


@pytest.mark.parametrize("columns", [3, 6, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_reads_npy(tmp_path, rng, columns, dtype):
    array = rng.integers(0, 256, (30, columns)).astype(dtype)
    path = tmp_path / "cloud.npy"
    np.save(path, array)
    cloud = pio.read_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz, array[:, :3].astype(np.float64))
    if columns == 3:
        assert cloud.rgb is None
    else:
        np.testing.assert_array_equal(cloud.rgb, array[:, 3:6])
    assert sorted(cloud.extra) == [f"column_{k}" for k in range(6, columns)]
    for k in range(6, columns):
        np.testing.assert_array_equal(cloud.extra[f"column_{k}"], array[:, k])


# ------------------------------------------------------------------------------------------------
# NaN / Inf
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".ply", ".txt", ".npy"])
def test_nan_policy(tmp_path, rng, suffix):
    xyz, rgb = _cloud(rng, n=40, dtype=np.float64)
    bad = np.sort(rng.choice(40, 7, replace=False))
    xyz[bad[:4], rng.integers(0, 3, 4)] = np.nan
    xyz[bad[4:], 2] = [np.inf, -np.inf, np.inf]
    path = tmp_path / f"holes{suffix}"
    if suffix == ".ply":
        _write_plyfile(path, {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                              "red": rgb[:, 0], "green": rgb[:, 1], "blue": rgb[:, 2]})
    elif suffix == ".txt":
        path.write_text("\n".join(_text_lines(xyz, rgb)))
    else:
        np.save(path, np.concatenate([xyz, rgb], 1))

    with pytest.raises(pio.PointCloudError, match=rf"{path.name}: 7 of 40 points .*point {bad[0]}"):
        pio.read_point_cloud(path)
    cloud = pio.read_point_cloud(path, nan_policy="drop")
    keep = np.setdiff1d(np.arange(40), bad)
    assert cloud.num_dropped == 7
    np.testing.assert_array_equal(cloud.xyz, xyz[keep])
    np.testing.assert_array_equal(cloud.rgb, rgb[keep])


def test_nan_colour_counts_and_all_nan_is_an_error(tmp_path):
    path = tmp_path / "colours.txt"
    path.write_text("0 0 0 nan 0 0\n1 1 1 10 20 30\n")
    cloud = pio.read_point_cloud(path, nan_policy="drop")
    assert cloud.num_dropped == 1 and cloud.rgb.tolist() == [[10, 20, 30]]
    path.write_text("nan 0 0\n1 inf 1\n")
    with pytest.raises(pio.PointCloudError, match="colours.txt: all 2 points"):
        pio.read_point_cloud(path, nan_policy="drop")


# ------------------------------------------------------------------------------------------------
# Errors: each names the file and the problem
# ------------------------------------------------------------------------------------------------

def _expect_error(path, pattern, **kwargs):
    with pytest.raises(pio.PointCloudError, match=pattern) as info:
        pio.read_point_cloud(path, **kwargs)
    assert str(path) in str(info.value)


def test_error_missing_directory_and_unknown_extension(tmp_path):
    _expect_error(tmp_path / "absent.ply", "no such file")
    (tmp_path / "folder.ply").mkdir()
    _expect_error(tmp_path / "folder.ply", "not a file")
    (tmp_path / "cloud.dxf").write_bytes(b"0\nSECTION")
    _expect_error(tmp_path / "cloud.dxf", r"unknown point-cloud file type '.dxf'")



def test_error_unreadable(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("1 2 3\n")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(path), "read_bytes", refuse)
    _expect_error(path, "cannot read: .*Permission denied")


@pytest.mark.parametrize("suffix", [".ply", ".txt", ".npy"])
def test_error_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    _expect_error(path, "empty file")


def test_error_zero_points(tmp_path):
    path = tmp_path / "comments.txt"
    path.write_text("# nothing here\n\n   \n")
    _expect_error(path, "no points")
    path = tmp_path / "none.ply"
    _write_plyfile(path, {"x": np.zeros(0, "f4"), "y": np.zeros(0, "f4"), "z": np.zeros(0, "f4")})
    _expect_error(path, "zero points")
    path = tmp_path / "none.npy"
    np.save(path, np.zeros((0, 3)))
    _expect_error(path, "zero points")


def test_error_ply_without_vertex_or_coordinates(tmp_path):
    path = tmp_path / "faces.ply"
    PlyData([_faces(3)]).write(str(path))
    _expect_error(path, "no 'vertex' element .*face")
    path = tmp_path / "flat.ply"
    _write_plyfile(path, {"x": np.zeros(3, "f4"), "y": np.zeros(3, "f4")}, text=True)
    _expect_error(path, "no z coordinate property")
    path = tmp_path / "half_colour.ply"
    _write_plyfile(path, {"x": np.zeros(3, "f4"), "y": np.zeros(3, "f4"),
                          "z": np.zeros(3, "f4"), "red": np.zeros(3, "u1")})
    _expect_error(path, "'red' without green and blue")


def test_error_malformed_ply(tmp_path, rng):
    path = tmp_path / "fake.ply"
    path.write_text("1 2 3\n")
    _expect_error(path, "not a PLY file")
    path.write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\n")
    _expect_error(path, "no 'end_header'")
    path.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty quad x\nend_header\n1\n")
    _expect_error(path, r":4: bad property in PLY header")
    xyz, _ = _cloud(rng, n=10)
    pio.write_ply(path, xyz)
    path.write_bytes(path.read_bytes()[:-5])
    _expect_error(path, "truncated PLY: the header declares 10 vertices, the file holds 9")
    pio.write_ply(path, xyz, binary=False)
    path.write_bytes(b"\n".join(path.read_bytes().split(b"\n")[:-3]) + b"\n")
    _expect_error(path, "truncated PLY: the header declares 10 vertices, the file holds 8")


def test_error_text_column_counts(tmp_path):
    path = tmp_path / "four.txt"
    path.write_text("# header\n1 2 3 4\n")
    _expect_error(path, r"four.txt:2: expected 3 \(x y z\) or 6 \(x y z r g b\) values, found 4")
    path = tmp_path / "changes.xyz"
    path.write_text("1 2 3\n4 5 6\n\n7 8\n")
    _expect_error(path, r"changes.xyz:4: expected 3 values \(as on line 1\), found 2")


def test_error_text_not_a_number(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("1 2 3\n4 5 6\n7 eight 9\n")
    _expect_error(path, r"words.txt:3: not a number: 'eight'")
    path = tmp_path / "header.txt"
    path.write_text("x y z\n1 2 3\n")
    _expect_error(path, r"header.txt:1: not a number: 'x' \(a header line\?")


@pytest.mark.parametrize("row", ["1 2 3 256 0 0", "1 2 3 -1 0 0", "1 2 3 0 0 300.5"])
def test_error_colour_out_of_range(tmp_path, row):
    path = tmp_path / "bright.txt"
    path.write_text("0 0 0 10 10 10\n" + row + "\n")
    _expect_error(path, r"colour out of range 0..255 at point 1")


def test_error_colour_out_of_range_ply_and_forced_scale(tmp_path):
    path = tmp_path / "wide.ply"
    _write_plyfile(path, {"x": np.zeros(2, "f4"), "y": np.zeros(2, "f4"), "z": np.zeros(2, "f4"),
                          "red": np.array([0, 1000], "u2"), "green": np.zeros(2, "u2"),
                          "blue": np.zeros(2, "u2")})
    _expect_error(path, "colour out of range 0..255 at point 1")
    path = tmp_path / "scaled.txt"
    path.write_text("0 0 0 0.5 1 2\n")
    _expect_error(path, "colour out of range 0..1 at point 0", color_max=1)


def test_error_npy_shapes(tmp_path):
    for name, array in [("flat", np.zeros(9)), ("four", np.zeros((3, 4))),
                        ("strings", np.array([["a", "b", "c"]]))]:
        path = tmp_path / f"{name}.npy"
        np.save(path, array)
        _expect_error(path, "expected .*(N, 3)|expected 3 .* found 4")
    path = tmp_path / "junk.npy"
    path.write_bytes(b"not numpy at all")
    _expect_error(path, "not a readable .npy array")


def test_bad_arguments():
    with pytest.raises(pio.PointCloudError, match="nan_policy"):
        pio.read_point_cloud("x.ply", nan_policy="ignore")
    with pytest.raises(pio.PointCloudError, match="color_max"):
        pio.read_point_cloud("x.ply", color_max=0)


# ------------------------------------------------------------------------------------------------
# Writer errors and atomicity
# ------------------------------------------------------------------------------------------------

def test_write_ply_refuses_non_finite_and_keeps_old_file(tmp_path, rng):
    xyz, rgb = _cloud(rng)
    path = tmp_path / "result.ply"
    pio.write_ply(path, xyz, rgb)
    before = path.read_bytes()
    broken = xyz.copy()
    broken[[3, 8], 1] = [np.nan, np.inf]
    with pytest.raises(pio.PointCloudError, match="result.ply: refusing to write 2 of 50"):
        pio.write_ply(path, broken, rgb)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("rgb, extra, pattern", [
    ("float", None, r"rgb must be an \(50, 3\) integer array"),
    ("big", None, r"rgb values must lie in 0..255"),
    (None, {"label": np.zeros(49)}, r"extra property 'label' must have shape \(50,\)"),
    (None, {"red": np.zeros(50)}, "clashes"),
    (None, {"two words": np.zeros(50)}, "not a plain identifier"),
    (None, {"huge": np.full(50, 2**40)}, "beyond PLY's 32-bit integers"),
    (None, {"text": np.array(["a"] * 50)}, "unsupported type"),
])
def test_write_ply_input_errors(tmp_path, rng, rgb, extra, pattern):
    xyz, colours = _cloud(rng)
    too_bright = colours.astype(int)
    too_bright[7, 1] = 256
    rgb = {"float": colours / 255.0, "big": too_bright}.get(rgb)
    with pytest.raises(pio.PointCloudError, match=pattern):
        pio.write_ply(tmp_path / "bad.ply", xyz, rgb, extra)
    assert list(tmp_path.iterdir()) == []


def test_write_ply_shape_errors(tmp_path):
    with pytest.raises(pio.PointCloudError, match=r"xyz must be an \(N, 3\)"):
        pio.write_ply(tmp_path / "a.ply", np.zeros((4, 2)))
    with pytest.raises(pio.PointCloudError, match="no points to write"):
        pio.write_ply(tmp_path / "a.ply", np.zeros((0, 3)))


# ------------------------------------------------------------------------------------------------
# Colours
# ------------------------------------------------------------------------------------------------

def _min_distance(colors):
    colors = colors.astype(np.float64)
    distance = np.linalg.norm(colors[:, None] - colors[None], axis=-1)
    return distance[~np.eye(len(colors), dtype=bool)].min()


def test_semantic_palette_is_distinct_and_readable():
    palette = s3dis.PALETTE
    assert palette.shape == (len(CLASSES), 3) == (13, 3) and palette.dtype == np.uint8
    assert _min_distance(palette) > 60
    assert np.linalg.norm(palette.astype(float) - pio.NO_LABEL_COLOR, axis=1).min() > 60
    assert np.linalg.norm(palette.astype(float) - 255, axis=1).min() > 60  # on white paper
    assert not palette.flags.writeable


def test_semantic_colors():
    labels = np.array([[0, 12], [13, -1], [27, 5]])
    colors = pio.semantic_colors(labels, s3dis.PALETTE)
    palette = s3dis.PALETTE
    assert colors.shape == (3, 2, 3) and colors.dtype == np.uint8
    expected = [[palette[0], palette[12]], [palette[0], pio.NO_LABEL_COLOR],
                [palette[1], palette[5]]]
    np.testing.assert_array_equal(colors, expected)
    custom = np.array([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(pio.semantic_colors(np.array([0, 1, 2, 3]), custom),
                                  [[1, 2, 3], [4, 5, 6], [1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize("values", [np.array([0.0, 1.0]), np.array([0, -2])])
def test_label_colour_errors(values):
    with pytest.raises(pio.PointCloudError, match="labels"):
        pio.semantic_colors(values, s3dis.PALETTE)
    with pytest.raises(pio.PointCloudError, match="instance ids"):
        pio.instance_colors(values)


def test_instance_colors_are_stable_and_distinct(rng):
    ids = np.arange(100)
    colors = pio.instance_colors(ids)
    assert colors.dtype == np.uint8 and colors.shape == (100, 3)
    assert len(np.unique(colors, axis=0)) == 100
    # Neighbouring ids (instances of one room) are far apart.
    assert np.linalg.norm(np.diff(colors.astype(float), axis=0), axis=1).min() > 100
    assert np.linalg.norm(colors.astype(float) - pio.NO_LABEL_COLOR, axis=1).min() > 50
    # An id's colour does not depend on the other ids present, nor on the call.
    subset = rng.choice(np.arange(-1, 100), 30)
    np.testing.assert_array_equal(pio.instance_colors(subset),
                                  np.where((subset < 0)[:, None], pio.NO_LABEL_COLOR,
                                           colors[subset]))
    np.testing.assert_array_equal(pio.instance_colors(ids), colors)
    np.testing.assert_array_equal(pio.instance_colors(np.int64(7)), colors[7])
    big = np.array([2**40, 2**62, 7], np.int64)
    np.testing.assert_array_equal(pio.instance_colors(big)[2], colors[7])
    # The seed changes the colours (for most ids).
    other = pio.instance_colors(ids, seed=1)
    assert (other != colors).any(axis=1).mean() > 0.9
    np.testing.assert_array_equal(pio.instance_colors(ids, seed=1), other)


def test_npz_and_ply_written_in_chunks_read_back_as_numpy_and_plyfile_read_whole_files(tmp_path):
    rng = np.random.default_rng(0)
    xyz, label = rng.normal(size=(10, 3)), rng.integers(0, 13, 10).astype(np.int32)
    pio.write_npz_chunks(tmp_path / "a.npz", {"xyz": ((10, 3), np.float64, (xyz[:4], xyz[4:])),
                                              "label": ((10,), np.int32, (label[:7], label[7:])),
                                              "classes": np.array(["wall", "door"])})
    with np.load(tmp_path / "a.npz") as loaded:
        np.testing.assert_array_equal(loaded["xyz"], xyz)
        np.testing.assert_array_equal(loaded["label"], label)
        assert list(loaded["classes"]) == ["wall", "door"]
    pio.write_ply_chunks(tmp_path / "a.ply", 10, ({"x": xyz[s, 0], "y": xyz[s, 1], "z": xyz[s, 2], "label": label[s]}
                                                  for s in (slice(0, 3), slice(3, 10))))
    vertex = PlyData.read(str(tmp_path / "a.ply"))["vertex"]
    np.testing.assert_array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1), xyz.astype(vertex["x"].dtype))
    np.testing.assert_array_equal(vertex["label"], label)


def test_chunks_short_of_the_declared_size_are_an_error_naming_the_file(tmp_path):
    with pytest.raises(pio.PointCloudError, match=r"a\.npz: 7 values of label written, 10 declared"):
        pio.write_npz_chunks(tmp_path / "a.npz", {"label": ((10,), np.int32, (np.arange(7),))})
