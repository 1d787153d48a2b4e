"""Scanners' files (`jsnet_tf.scan_formats` through `jsnet_tf.io.read_point_cloud`): files written by
the reference libraries themselves (laspy, pye57, pypcd4) come back with their float64 coordinates,
colours and extra values; LAS / LAZ outputs read back with laspy; bad files are one line naming them."""

import struct

import laspy
import numpy as np
import pye57
import pypcd4
import pytest

from jsnet_tf import io as pio
from jsnet_tf import scan_formats

EAST, NORTH = 512_345.678, 4_100_200.125  # UTM-sized coordinates: float32 would lose the centimetres


def _las(path, rng, n=400, point_format=3, version="1.2", rgb_max=65535, scale=0.001):
    """A laspy-written LAS / LAZ at UTM coordinates; returns what laspy itself reads back."""
    header = laspy.LasHeader(point_format=point_format, version=version)
    header.scales = [scale] * 3
    header.offsets = [512_000.0, 4_100_000.0, 0.0]
    las = laspy.LasData(header)
    las.x = EAST + np.round(rng.uniform(0, 20, n), 3)
    las.y = NORTH + np.round(rng.uniform(0, 20, n), 3)
    las.z = np.round(rng.uniform(0, 3, n), 3)
    las.x[0] = EAST
    las.intensity = rng.integers(0, 65536, n)
    if scan_formats.las_has_rgb(header.point_format):
        for name in ("red", "green", "blue"):
            setattr(las, name, rng.integers(0, rgb_max + 1, n))
    las.write(str(path))
    return laspy.read(str(path))


def test_las_and_laz_come_back_in_float64_with_16_bit_colour_scaled_and_intensity_apart(tmp_path, rng):
    for suffix in (".las", ".laz"):
        reference = _las(tmp_path / f"scan{suffix}", rng)
        cloud = pio.read_point_cloud(tmp_path / f"scan{suffix}")
        expected = np.stack([np.asarray(reference.x), np.asarray(reference.y), np.asarray(reference.z)], axis=1)
        np.testing.assert_array_equal(cloud.xyz, expected)
        assert cloud.xyz.dtype == np.float64 and abs(cloud.xyz[0, 0] - EAST) < 5e-4  # to the millimetre
        rgb16 = np.stack([reference.red, reference.green, reference.blue], axis=1).astype(np.float64)
        np.testing.assert_array_equal(cloud.rgb, np.rint(rgb16 * 255 / 65535))
        np.testing.assert_array_equal(cloud.extra["intensity"], reference.intensity)


def test_8_bit_colours_stored_in_16_bit_fields_are_detected_and_color_max_overrides(tmp_path, rng):
    reference = _las(tmp_path / "cc.las", rng, rgb_max=255)  # as CloudCompare writes
    rgb = np.stack([reference.red, reference.green, reference.blue], axis=1)
    np.testing.assert_array_equal(pio.read_point_cloud(tmp_path / "cc.las").rgb, rgb)
    forced = pio.read_point_cloud(tmp_path / "cc.las", color_max=65535).rgb
    np.testing.assert_array_equal(forced, np.rint(rgb.astype(np.float64) * 255 / 65535))


@pytest.mark.parametrize("point_format", [6, 7, 8])
def test_laz_of_las_1_4_point_formats_6_to_8(tmp_path, rng, point_format):
    path = tmp_path / f"f{point_format}.laz"
    reference = _las(path, rng, point_format=point_format, version="1.4")
    assert laspy.open(str(path)).header.are_points_compressed
    cloud = pio.read_point_cloud(path)
    np.testing.assert_array_equal(cloud.xyz[:, 0], np.asarray(reference.x))
    np.testing.assert_array_equal(cloud.xyz[:, 2], np.asarray(reference.z))
    if point_format == 6:
        assert cloud.rgb is None
    else:
        np.testing.assert_array_equal(cloud.rgb[:, 1], np.rint(np.asarray(reference.green, np.float64) * 255 / 65535))


def test_a_las_with_extended_vlrs_after_its_points_reads_whole(tmp_path, rng):
    from laspy.vlrs.vlrlist import VLRList

    las = _las(tmp_path / "plain.las", rng, n=120, point_format=6, version="1.4")
    las.evlrs = VLRList([laspy.VLR("jsnet-test", 1, "after the points", b"\x01" * 500)])
    las.write(str(tmp_path / "evlr.las"))
    assert laspy.open(str(tmp_path / "evlr.las")).header.start_of_first_evlr > 0
    np.testing.assert_array_equal(pio.read_point_cloud(tmp_path / "evlr.las").xyz[:, 1], np.asarray(las.y))


def _quaternion_matrix(w, x, y, z):
    """The rotation of a unit quaternion, written out (the reference for pye57's pose)."""
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _e57(path, rng, scans):
    """A pye57-written E57 of scans in their own frames (float32-exact local coordinates, as
    pye57 stores single precision) with UTM-sized pose translations; returns each scan's points
    in the file's frame by float64 NumPy, and its colours."""
    e57 = pye57.E57(str(path), mode="w")
    expected = []
    for count, quaternion, translation in scans:
        local = rng.uniform(-5, 5, (count, 3)).astype(np.float32).astype(np.float64)
        colours = rng.integers(0, 256, (count, 3)).astype(np.uint8)
        data = {"cartesianX": local[:, 0], "cartesianY": local[:, 1], "cartesianZ": local[:, 2],
                "colorRed": colours[:, 0], "colorGreen": colours[:, 1], "colorBlue": colours[:, 2],
                "intensity": rng.uniform(0, 1, count).astype(np.float32)}
        e57.write_scan_raw(data, rotation=np.asarray(quaternion, np.float64), translation=np.asarray(translation))
        expected.append((local @ _quaternion_matrix(*quaternion).T + translation, colours))
    e57.close()
    return expected


def test_e57_scans_come_back_with_their_poses_applied_one_or_all(tmp_path, rng):
    half = np.sqrt(0.5)
    scans = [(300, (half, 0.0, 0.0, half), (EAST, NORTH, 12.5)), (200, (1.0, 0.0, 0.0, 0.0), (EAST + 30, NORTH, 0.0))]
    expected = _e57(tmp_path / "site.e57", rng, scans)
    cloud = pio.read_point_cloud(tmp_path / "site.e57")
    np.testing.assert_allclose(cloud.xyz, np.concatenate([e[0] for e in expected]), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(cloud.rgb, np.concatenate([e[1] for e in expected]))
    assert cloud.extra["intensity"].shape == (500,)
    second = pio.read_point_cloud(tmp_path / "site.e57", e57_scan=1)
    np.testing.assert_allclose(second.xyz, expected[1][0], rtol=0, atol=1e-6)
    with pytest.raises(pio.PointCloudError, match=r"site.e57: --e57_scan 2 does not exist: the file holds scans 0..1"):
        pio.read_point_cloud(tmp_path / "site.e57", e57_scan=2)


class _ColourDepth:
    """pye57's libe57 writing other colour depths than its fixed 8 bits: the scan's colorLimits
    maxima (IntegerNode(imf, 255)) become `limits`, the colour fields' own integer bounds
    (IntegerNode(imf, 0, 0, 255)) `bounds`."""

    def __init__(self, limits, bounds):
        self.limits, self.bounds = limits, bounds

    def __getattr__(self, name):
        return getattr(pye57.libe57, name)

    def IntegerNode(self, imf, *values):  # noqa: N802 -- libe57's name
        if values == (255,):
            values = (self.limits,)
        elif values == (0, 0, 255):
            values = (0, 0, self.bounds)
        return pye57.libe57.IntegerNode(imf, *values)


def test_e57_colours_of_other_depths_are_scaled_by_the_scans_colour_limits(tmp_path, rng, monkeypatch):
    """12-bit colours (colorLimits 0..4095) in 16-bit fields come back as round(v * 255 / 4095):
    the scan's colorLimits, not the fields' bounds, give the scale."""
    monkeypatch.setattr(pye57.e57, "libe57", _ColourDepth(limits=4095, bounds=65535))
    for field in ("colorRed", "colorGreen", "colorBlue"):
        monkeypatch.setitem(pye57.e57.SUPPORTED_POINT_FIELDS, field, "H")
    count = 50
    colours = rng.integers(0, 4096, (count, 3)).astype(np.uint16)
    colours[0] = (0, 4095, 2048)
    local = rng.uniform(-5, 5, (count, 3)).astype(np.float32).astype(np.float64)
    e57 = pye57.E57(str(tmp_path / "deep.e57"), mode="w")
    e57.write_scan_raw({"cartesianX": local[:, 0], "cartesianY": local[:, 1], "cartesianZ": local[:, 2],
                        "colorRed": colours[:, 0], "colorGreen": colours[:, 1], "colorBlue": colours[:, 2]})
    e57.close()
    monkeypatch.undo()
    cloud = pio.read_point_cloud(tmp_path / "deep.e57")
    np.testing.assert_array_equal(cloud.rgb, np.rint(colours * (255 / 4095)).astype(np.uint8))
    np.testing.assert_array_equal(cloud.rgb[0], [0, 255, 128])


@pytest.mark.parametrize("encoding", [pypcd4.Encoding.ASCII, pypcd4.Encoding.BINARY, pypcd4.Encoding.BINARY_COMPRESSED])
def test_pcd_in_every_encoding_keeps_float64_coordinates_packed_colour_and_intensity(tmp_path, rng, encoding):
    n = 150
    xyz = np.stack([EAST + rng.uniform(0, 9, n), NORTH + rng.uniform(0, 9, n), rng.uniform(0, 3, n)], axis=1)
    rgb = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    intensity = rng.uniform(0, 100, n).astype(np.float32)
    packed = pypcd4.PointCloud.encode_rgb(rgb)
    if encoding == pypcd4.Encoding.ASCII:  # PCL's packed colour as an integer (U): text keeps every bit
        packed = packed.view(np.uint32)
    cloud = pypcd4.PointCloud.from_points(
        [xyz[:, 0], xyz[:, 1], xyz[:, 2], intensity, packed], ("x", "y", "z", "intensity", "rgb"),
        (np.float64, np.float64, np.float64, np.float32, packed.dtype))
    path = tmp_path / f"scan_{encoding.value}.pcd"
    cloud.save(str(path), encoding=encoding)
    read = pio.read_point_cloud(path)
    if encoding == pypcd4.Encoding.ASCII:  # pypcd4 writes ASCII with its own float formatting
        np.testing.assert_allclose(read.xyz, xyz, rtol=0, atol=5e-4)
    else:
        np.testing.assert_array_equal(read.xyz, xyz)
    np.testing.assert_array_equal(read.rgb, rgb)
    np.testing.assert_allclose(read.extra["intensity"], intensity, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Bad files: one line naming the file
# ------------------------------------------------------------------------------------------------


def _expect_error(path, pattern, **kwargs):
    with pytest.raises(pio.PointCloudError) as caught:
        pio.read_point_cloud(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert pattern in message, message


def test_bad_scanner_files_are_one_line_naming_them(tmp_path, rng):
    _las(tmp_path / "whole.laz", rng, n=5000)
    data = (tmp_path / "whole.laz").read_bytes()
    (tmp_path / "cut.laz").write_bytes(data[: len(data) // 2])
    _expect_error(tmp_path / "cut.laz", "truncated or corrupt LAS/LAZ point data")

    _las(tmp_path / "count.las", rng, n=300)
    data = bytearray((tmp_path / "count.las").read_bytes())
    struct.pack_into("<I", data, 107, 350)  # LAS 1.2's point count: 50 more than the file holds
    (tmp_path / "count.las").write_bytes(bytes(data))
    _expect_error(tmp_path / "count.las", "the LAS header declares 350 points, the file holds 300")
    struct.pack_into("<I", data, 107, 250)  # and 50 fewer
    (tmp_path / "count.las").write_bytes(bytes(data))
    _expect_error(tmp_path / "count.las", "the LAS header declares 250 points, the file holds 300")
    (tmp_path / "tail.las").write_bytes(bytes(data[:-10]))
    _expect_error(tmp_path / "tail.las", "the LAS header declares 250 points, the file holds 299 and")

    pye57.E57(str(tmp_path / "empty.e57"), mode="w").close()
    _expect_error(tmp_path / "empty.e57", "holds no scans")

    pypcd4.PointCloud.from_points([np.ones(4), np.ones(4)], ("a", "b"), (np.float32, np.float32)).save(
        str(tmp_path / "noxyz.pcd"))
    _expect_error(tmp_path / "noxyz.pcd", "no x/y/z field in the PCD file (fields: a, b)")

    (tmp_path / "junk.las").write_bytes(b"LASF" + b"\0" * 50)
    _expect_error(tmp_path / "junk.las", "not a readable LAS/LAZ file")
    (tmp_path / "junk.e57").write_bytes(b"not an e57 file" * 10)
    _expect_error(tmp_path / "junk.e57", "not a readable E57 file")


def test_nan_coordinates_in_a_pcd_are_dropped_or_an_error(tmp_path, rng):
    xyz = rng.uniform(0, 5, (40, 3)).astype(np.float32)
    xyz[[3, 17], 1] = np.nan  # organised clouds from ROS mark missing returns so
    pypcd4.PointCloud.from_xyz_points(xyz).save(str(tmp_path / "holes.pcd"))
    _expect_error(tmp_path / "holes.pcd", "2 of 40 points have a NaN")
    dropped = pio.read_point_cloud(tmp_path / "holes.pcd", nan_policy="drop")
    assert dropped.num_dropped == 2 and len(dropped) == 38


# ------------------------------------------------------------------------------------------------
# LAS / LAZ outputs
# ------------------------------------------------------------------------------------------------

CLASSES = ("ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa", "bookcase",
           "board", "clutter")


def classification_lookup(header):
    """{code: name} of a LAS header's Classification Lookup VLR, decoded by the LAS 1.4 spec's
    layout (user LASF_Spec, record 0: 256 x (uint8 class, 15 chars))."""
    (vlr,) = [v for v in header.vlrs if v.user_id == "LASF_Spec" and v.record_id == 0]
    data = vlr.record_data_bytes()
    assert len(data) == 256 * 16
    entries = (struct.unpack_from("<B15s", data, 16 * k) for k in range(256))
    return {code: raw.rstrip(b"\0").decode() for code, raw in entries if raw.strip(b"\0")}


def _labels(rng, n):
    return (rng.integers(0, len(CLASSES), n), rng.integers(-1, 9, n), rng.uniform(0, 1, n).astype(np.float32),
            rng.uniform(0, 1, n).astype(np.float32))


@pytest.mark.parametrize("suffix", [".las", ".laz"])
def test_a_las_input_comes_back_with_its_scale_offset_fields_and_the_labels(tmp_path, rng, suffix):
    source = _las(tmp_path / "in.las", rng, n=500, point_format=3)
    semantic, instance, confidence, score = _labels(rng, 500)
    header = scan_formats.las_header(tmp_path / "in.las")
    with scan_formats.LasLabelWriter(tmp_path / f"out{suffix}", CLASSES, source_header=header) as writer:
        for start, chunk in scan_formats.las_chunks(tmp_path / "in.las", chunk_points=128):
            rows = slice(start, start + len(chunk))
            writer.write(semantic[rows], instance[rows], confidence[rows], score[rows], source_points=chunk)
    out = laspy.read(str(tmp_path / f"out{suffix}"))
    assert out.header.point_format.id == 7 and out.header.version == "1.4"
    np.testing.assert_array_equal(out.header.scales, source.header.scales)
    np.testing.assert_array_equal(out.header.offsets, source.header.offsets)
    for name in ("X", "Y", "Z", "intensity", "red", "green", "blue"):
        np.testing.assert_array_equal(out[name], source[name])
    assert abs(out.x[0] - EAST) < 5e-4
    np.testing.assert_array_equal(out.classification, semantic + 64)
    np.testing.assert_array_equal(out.instance, instance)
    np.testing.assert_array_equal(out.confidence, confidence)
    np.testing.assert_array_equal(out.score, score)
    names = classification_lookup(out.header)
    assert names == {64 + k: name for k, name in enumerate(CLASSES)}


def test_other_inputs_are_written_to_the_millimetre_with_their_colours(tmp_path, rng):
    n = 300
    xyz = np.stack([EAST + rng.uniform(0, 50, n), NORTH + rng.uniform(0, 50, n), rng.uniform(-2, 3, n)], axis=1)
    rgb = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    semantic, instance, confidence, score = _labels(rng, n)
    with scan_formats.LasLabelWriter(tmp_path / "out.laz", CLASSES, origin=xyz.min(axis=0), has_rgb=True) as writer:
        writer.write(semantic, instance, confidence, score, xyz=xyz, rgb=rgb)
    out = laspy.read(str(tmp_path / "out.laz"))
    np.testing.assert_allclose(np.stack([out.x, out.y, out.z], axis=1), xyz, rtol=0, atol=5e-4 + 1e-9)
    np.testing.assert_array_equal(out.header.offsets, np.floor(xyz.min(axis=0)))
    np.testing.assert_array_equal(np.stack([out.red, out.green, out.blue], axis=1), rgb.astype(np.uint16) * 257)
    np.testing.assert_array_equal(out.classification, semantic + 64)
    np.testing.assert_array_equal(out.instance, instance)
