"""S3DIS rooms, blocks and block files against tiny hand-built rooms."""

import os
import warnings

import h5py
import numpy as np
import pytest

from jsnet_tf.data import s3dis
from jsnet_tf.data.s3dis import Room
from jsnet_tf.errors import DataError


def write_anno(room_dir, name, rows, fmt="%.4f %.4f %.4f %d %d %d"):
    anno = room_dir / "Annotations"
    anno.mkdir(parents=True, exist_ok=True)
    path = anno / name
    np.savetxt(path, np.asarray(rows, np.float64).reshape(-1, 6), fmt=fmt)
    return path


def make_room(xy, z=None, rgb=None, semantic=None, instance=None, name="Area_1_test_1"):
    xy = np.asarray(xy, np.float64)
    n = len(xy)
    z = np.linspace(0.0, 3.0, n) if z is None else np.asarray(z)
    xyz = np.column_stack([xy, z]).astype(np.float32)
    rgb = np.tile(np.array([[10, 128, 255]], np.uint8), (n, 1)) if rgb is None else rgb
    semantic = (np.arange(n) % 13).astype(np.int32) if semantic is None else semantic
    instance = (np.arange(n) % 7).astype(np.int32) if instance is None else instance
    return Room(name, xyz, rgb, semantic, instance)


# --------------------------------------------------------------------------------- read_room

def test_read_room_shifts_labels_and_instances(tmp_path):
    room_dir = tmp_path / "Area_2" / "office_3"
    write_anno(room_dir, "wall_1.txt", [[5, 6, 7, 1, 2, 3], [6, 7, 8, 4, 5, 6]])
    write_anno(room_dir, "chair_1.txt", [[5.5, 6.5, 7.5, 255, 0, 128]])
    write_anno(room_dir, "stairs_1.txt", [[10, 9, 8, 0, 0, 0]])
    room = s3dis.read_room(room_dir)
    assert room.name == "Area_2_office_3"
    assert room.xyz.dtype == np.float32 and room.rgb.dtype == np.uint8
    assert room.semantic.dtype == np.int32 and room.instance.dtype == np.int32
    np.testing.assert_allclose(room.xyz.min(axis=0), 0)
    # sorted file order: chair_1, stairs_1, wall_1
    np.testing.assert_array_equal(room.semantic, [8, 12, 2, 2])
    np.testing.assert_array_equal(room.instance, [0, 1, 2, 2])
    np.testing.assert_allclose(room.xyz[0], [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(room.rgb[0], [255, 0, 128])


def test_stray_control_character_is_removed_with_a_warning(tmp_path):
    room_dir = tmp_path / "Area_5" / "hallway_6"
    path = write_anno(room_dir, "ceiling_1.txt", [[0, 0, 0, 1, 2, 3]] * 3)
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace(" 2 ", " 185\x10 ")
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(s3dis.DataWarning, match=r"ceiling_1\.txt:2"):
        room = s3dis.read_room(room_dir)
    assert room.rgb[1, 1] == 185 and len(room) == 3


@pytest.mark.parametrize("case, content, pattern", [
    ("empty", "", r"wall_1\.txt: empty"),
    ("blank", "\n \n", r"wall_1\.txt: empty"),
    ("five", "0 0 0 1 2 3\n0 0 0 1 2 3\n0 0 0 1 2\n", r"wall_1\.txt:3: expected 6 numbers"),
    ("seven", "0 0 0 1 2 3 4\n", r"wall_1\.txt:1: expected 6 numbers"),
    ("nan", "0 0 0 1 2 3\nnan 0 0 1 2 3\n", r"wall_1\.txt:2: non-finite"),
    ("word", "0 0 0 1 2 3\n0 zero 0 1 2 3\n", r"wall_1\.txt:2: not a number"),
    ("colour", "0 0 0 1 2 300\n", r"wall_1\.txt:1: colour"),
])
def test_malformed_annotation_names_file_and_line(tmp_path, case, content, pattern):
    room_dir = tmp_path / "Area_1" / "office_1"
    (room_dir / "Annotations").mkdir(parents=True)
    (room_dir / "Annotations" / "wall_1.txt").write_text(content)
    with pytest.raises(DataError, match=pattern):
        s3dis.read_room(room_dir)


def test_missing_annotations_and_unknown_class(tmp_path):
    room_dir = tmp_path / "Area_1" / "office_1"
    room_dir.mkdir(parents=True)
    with pytest.raises(DataError, match="office_1/Annotations: missing Annotations"):
        s3dis.read_room(room_dir)
    (room_dir / "Annotations").mkdir()
    with pytest.raises(DataError, match="no annotation"):
        s3dis.read_room(room_dir)
    write_anno(room_dir, "lamp_1.txt", [[0, 0, 0, 1, 2, 3]])
    with pytest.raises(DataError, match=r"lamp_1\.txt: unknown class 'lamp'"):
        s3dis.read_room(room_dir)
    assert issubclass(DataError, ValueError)


def test_room_npz_round_trip_and_corrupt_file(tmp_path):
    room = make_room(np.random.default_rng(0).uniform(0, 2, (50, 2)))
    path = tmp_path / "rooms" / "r.npz"
    s3dis.save_room(path, room)
    assert os.listdir(tmp_path / "rooms") == ["r.npz"]
    back = s3dis.load_room(path)
    assert back.name == room.name
    for field in ("xyz", "rgb", "semantic", "instance"):
        np.testing.assert_array_equal(getattr(back, field), getattr(room, field))
        assert getattr(back, field).dtype == getattr(room, field).dtype
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="r.npz"):
        s3dis.load_room(path)


# --------------------------------------------------------------------------------- blocks

def test_serpentine_grid_order():
    origins = s3dis.test_block_origins([2.0, 1.5], 1.0, 0.5)
    np.testing.assert_allclose(origins, [[0, 0], [0, 0.5], [0.5, 0.5], [0.5, 0], [1, 0],
                                         [1, 0.5]])
    # ceil((limit - 1) / stride) + 1 blocks per axis
    assert len(s3dis.test_block_origins([3.2, 1.0], 1.0, 0.5)) == 6 * 1
    assert len(s3dis.test_block_origins([0.3, 0.3], 1.0, 0.5)) == 1


def dense_grid(nx, ny, x1, y1):
    gx, gy = np.meshgrid(np.linspace(0, x1, nx), np.linspace(0, y1, ny), indexing="ij")
    return np.column_stack([gx.ravel(), gy.ravel()])


def test_test_blocks_channels_labels_and_order():
    xy = dense_grid(41, 31, 2.0, 1.5)  # 1271 points, 0.05 m spacing
    room = make_room(xy, semantic=(xy[:, 0] * 4).astype(np.int32) % 13,
                     instance=(xy[:, 1] * 10).astype(np.int32) + 300)
    data, sem, ins, idx = s3dis.test_blocks(room, num_points=512, rng=np.random.default_rng(1))
    assert data.shape == (6, 512, 9) and data.dtype == np.float32
    assert sem.shape == ins.shape == idx.shape == (6, 512)
    assert sem.dtype == ins.dtype == idx.dtype == np.int32
    assert ins.max() > 255  # no uint8 wrap
    xyz = room.xyz.astype(np.float64)
    origins = s3dis.test_block_origins([2.0, 1.5])
    for b, (x0, y0) in enumerate(origins):
        p = xyz[idx[b]]
        assert (p[:, 0] >= x0 - 1e-6).all() and (p[:, 0] <= x0 + 1 + 1e-6).all()
        assert (p[:, 1] >= y0 - 1e-6).all() and (p[:, 1] <= y0 + 1 + 1e-6).all()
        # every in-window point is in the block (441 or 231 points <= 512: all kept)
        inside = ((xyz[:, 0] >= x0) & (xyz[:, 0] <= x0 + 1) & (xyz[:, 1] >= y0)
                  & (xyz[:, 1] <= y0 + 1))
        assert set(idx[b].tolist()) == set(np.flatnonzero(inside).tolist())
        np.testing.assert_allclose(data[b, :, 0], p[:, 0] - (p[:, 0].min() + 0.5), atol=1e-6)
        np.testing.assert_allclose(data[b, :, 1], p[:, 1] - (p[:, 1].min() + 0.5), atol=1e-6)
        np.testing.assert_allclose(data[b, :, 2], p[:, 2], atol=1e-6)
        np.testing.assert_allclose(data[b, :, 3:6], np.tile([10 / 255, 128 / 255, 1.0],
                                                            (512, 1)), atol=1e-6)
        np.testing.assert_allclose(data[b, :, 6:9], p / [2.0, 1.5, 3.0], atol=1e-6)
        np.testing.assert_array_equal(sem[b], room.semantic[idx[b]])
        np.testing.assert_array_equal(ins[b], room.instance[idx[b]])
    assert data[..., :2].min() >= -0.5 - 1e-6 and data[..., :2].max() <= 0.5 + 1e-6
    assert data[..., 3:].min() >= 0 and data[..., 3:].max() <= 1 + 1e-6
    # exact value of one known point: (2.0, 1.5) lies in the last block (origin (1.0, 0.5))
    last = np.flatnonzero((xyz[idx[5], 0] == 2.0) & (np.isclose(xyz[idx[5], 1], 1.5)))[0]
    np.testing.assert_allclose(data[5, last, [0, 1, 6, 7]], [0.5, 0.5, 1.0, 1.0], atol=1e-6)


def test_sparse_blocks_dropped_and_sampling():
    rng = np.random.default_rng(2)
    dense = np.column_stack([rng.uniform(0, 0.99, 400), rng.uniform(0, 0.9, 400)])
    sparse = np.column_stack([rng.uniform(1.6, 2.0, 50), rng.uniform(0, 0.9, 50)])
    sparse[0] = [2.0, 0.9]
    room = make_room(np.vstack([dense, sparse]))
    blocks = s3dis.test_blocks(room, num_points=4096, rng=rng)
    # x origins 0, 0.5, 1.0; the last holds only the 50 sparse points -> dropped
    assert blocks.data.shape == (2, 4096, 9)
    x = room.xyz[:, 0]
    members = np.flatnonzero(x <= 1.0)
    first = blocks.indices[0]
    np.testing.assert_array_equal(np.sort(first[:len(members)]), members)  # all points first
    assert set(first[len(members):].tolist()) <= set(members.tolist())   # then duplicates
    few = s3dis.test_blocks(room, num_points=128, rng=rng)
    assert few.data.shape == (2, 128, 9)
    assert all(len(np.unique(row)) == 128 for row in few.indices)  # no replacement
    # fewer than min_points everywhere -> no block at all
    none = s3dis.test_blocks(make_room(sparse), num_points=64)
    assert none.data.shape == (0, 64, 9) and none.semantic.shape == (0, 64)


def test_random_blocks():
    xy = dense_grid(41, 41, 3.0, 3.0)
    room = make_room(xy)
    data, sem, ins, idx = s3dis.random_blocks(room, 30, num_points=256,
                                              rng=np.random.default_rng(3))
    assert 0 < len(data) <= 30 and data.shape[1:] == (256, 9)
    for b in range(len(data)):
        p = room.xyz[idx[b]]
        assert np.ptp(p[:, 0]) <= 1 + 1e-6 and np.ptp(p[:, 1]) <= 1 + 1e-6
        assert len(np.unique(idx[b])) >= 100
        np.testing.assert_array_equal(sem[b], room.semantic[idx[b]])
    assert data[..., :2].min() >= -0.5 - 1e-6 and data[..., :2].max() <= 0.5 + 1e-6
    assert data[..., 6:].min() >= 0 and data[..., 6:].max() <= 1 + 1e-6
    # default count: ceil(3) * ceil(3)
    assert len(s3dis.random_blocks(room, num_points=64, rng=0).data) <= 9


# --------------------------------------------------------------------------------- h5

def test_h5_round_trip_alias_and_truncation(tmp_path):
    rng = np.random.default_rng(4)
    data = rng.normal(size=(3, 16, 9)).astype(np.float32)
    sem = rng.integers(0, 13, (3, 16)).astype(np.int32)
    ins = rng.integers(0, 1000, (3, 16)).astype(np.int32)
    path = tmp_path / "blocks" / "Area_1_x.h5"
    s3dis.write_blocks_h5(path, data, sem, ins)
    assert os.listdir(path.parent) == ["Area_1_x.h5"]
    with h5py.File(path, "r") as f:
        assert f["data"].dtype == np.float32 and f["seglabels"].dtype == np.int32
        assert f["pid"].dtype == np.int32
    back = s3dis.read_blocks_h5(path)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_array_equal(back.semantic, sem)
    np.testing.assert_array_equal(back.instance, ins)
    assert back.indices is None

    alias = tmp_path / "alias.h5"
    with h5py.File(alias, "w") as f:
        f["data"], f["seglabel"], f["pid"] = data, sem.astype(np.uint8), ins
    np.testing.assert_array_equal(s3dis.read_blocks_h5(alias).semantic, sem)

    idx = np.arange(48, dtype=np.int32).reshape(3, 16)
    s3dis.write_blocks_h5(path, data, sem, ins, idx)
    np.testing.assert_array_equal(s3dis.read_blocks_h5(path).indices, idx)

    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="Area_1_x.h5"):
        s3dis.read_blocks_h5(path)
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(DataError, match="Area_1_x.h5"):
        s3dis.read_blocks_h5(path)
    with h5py.File(alias, "w") as f:
        f["data"] = data
    with pytest.raises(DataError, match="alias.h5: missing dataset"):
        s3dis.read_blocks_h5(alias)
    with pytest.raises(DataError, match="nope.h5"):
        s3dis.read_blocks_h5(tmp_path / "nope.h5")


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        s3dis.write_blocks_h5(tmp_path / "bad.h5", np.zeros((2, 4, 9)), np.zeros((2, 3)),
                              np.zeros((2, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------- sizes

def test_instance_sizes_and_mean():
    sem = np.array([[2, 2, 2, 8], [8, 8, 0, 0]])
    ins = np.array([[0, 0, 0, 1], [1, 1, 2, 2]])
    sizes = s3dis.instance_sizes(sem, ins)
    assert sizes[2] == [3] and sizes[8] == [3] and sizes[0] == [2]
    other = [[] for _ in range(13)]
    other[2] = [4]
    mean = s3dis.mean_instance_size([sizes, other])
    assert mean.shape == (13,)
    assert mean[2] == 3.0 and mean[8] == 3.0 and mean[0] == 2.0 and mean[5] == 0.0
    # a tie goes to the lower class, as scipy.stats.mode did
    assert s3dis.instance_sizes([3, 5], [0, 0])[3] == [2]
