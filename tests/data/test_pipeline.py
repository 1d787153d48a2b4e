"""The tf.data pipelines on a tiny prepared data set whose labels are functions of the points."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from jsnet_tf.data import pipeline, s3dis  # noqa: E402
from jsnet_tf.errors import DataError  # noqa: E402

NP = 128  # points per block
ROOMS = {1: ["office_1", "hallway_1"], 2: ["office_1"], 3: ["office_1", "storage_1"]}


def make_room(name, room_id, rng, n=3000):
    """xyz on a 2.5 x 2 x 1.2 m room; semantic = floor(10 z) (z on a 0.1 grid + 0.05), instance
    = a random id also written into blue; red = 10 * room_id, so a block point tells its room."""
    xyz = np.column_stack([rng.uniform(0, 2.5, n), rng.uniform(0, 2.0, n),
                           0.05 + 0.1 * rng.integers(0, 12, n)]).astype(np.float32)
    xyz[0] = 0.0  # the room's minimum corner is the origin
    xyz[0, 2] = 0.05
    semantic = np.floor(xyz[:, 2] * 10).astype(np.int32)
    instance = rng.integers(0, 200, n).astype(np.int32)
    rgb = np.column_stack([np.full(n, 10 * room_id), rng.integers(0, 256, n), instance])
    return s3dis.Room(name, xyz, rgb.astype(np.uint8), semantic, instance)


def prepare_rooms(out, rooms, rng, num_points=NP, min_points=10):
    """Writes the rooms (Room objects) as a prepared folder: rooms/, blocks/ (their stride-0.5
    blocks of `num_points` points, windows under `min_points` dropped) and lists/."""
    for room in rooms:
        s3dis.save_room(out / "rooms" / f"{room.name}.npz", room)
        b = s3dis.test_blocks(room, num_points=num_points, min_points=min_points, rng=rng)
        s3dis.write_blocks_h5(out / "blocks" / f"{room.name}.h5", *b)
    s3dis.write_area_lists(out)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    rng = np.random.default_rng(0)
    ids, rooms = {}, []
    for area, names in ROOMS.items():
        for name in names:
            full = f"Area_{area}_{name}"
            ids[full] = len(ids) + 1
            rooms.append(make_room(full, ids[full], rng))
    prepare_rooms(out, rooms, rng)
    return out, ids


def collect(ds):
    batches = [{k: v.numpy() for k, v in b.items()} for b in ds]
    return batches, {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def room_ids(points):
    return set(np.unique(np.rint(points[..., 3] * 255).astype(int) // 10).tolist())


def check_aligned(points, semantic, instance):
    np.testing.assert_array_equal(np.floor(points[..., 2] * 10).astype(np.int32), semantic)
    np.testing.assert_array_equal(np.rint(points[..., 5] * 255).astype(np.int32), instance)


def test_training_shapes_alignment_and_areas(dataset):
    out, ids = dataset
    ds = pipeline.training_dataset(out, area=1, batch_size=4, num_points=NP, min_points=10)
    spec = ds.element_spec
    assert spec["points"].shape.as_list() == [4, NP, 9] and spec["points"].dtype == tf.float32
    assert spec["semantic"].dtype == tf.int32 and spec["instance"].dtype == tf.int32
    batches, allb = collect(ds)
    assert len(batches) >= 3
    for b in batches:
        assert b["points"].shape == (4, NP, 9) and b["semantic"].shape == (4, NP)
        assert b["points"].dtype == np.float32 and b["instance"].dtype == np.int32
    check_aligned(allb["points"], allb["semantic"], allb["instance"])
    train_ids = {v for k, v in ids.items() if not k.startswith("Area_1_")}
    assert room_ids(allb["points"]) == train_ids
    # block-centred x, y in [-0.5, 0.5]
    assert np.abs(allb["points"][..., :2]).max() <= 0.5 + 1e-6


def test_training_deterministic_per_seed_and_epoch(dataset):
    out, _ = dataset
    kw = dict(area=2, batch_size=3, num_points=NP, min_points=10, shuffle_buffer=50,
              sampling="random_corners")
    a = collect(pipeline.training_dataset(out, seed=5, epoch=1, num_parallel_calls=1, **kw))[1]
    cache = pipeline.RoomCache()
    b = collect(pipeline.training_dataset(out, seed=5, epoch=1, num_parallel_calls=4,
                                          cache_rooms=cache, **kw))[1]
    c = collect(pipeline.training_dataset(out, seed=5, epoch=1, cache_rooms=cache, **kw))[1]
    assert len(cache) == 4
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(a[k], c[k])
    d = collect(pipeline.training_dataset(out, seed=5, epoch=2, **kw))[1]
    e = collect(pipeline.training_dataset(out, seed=6, epoch=1, cache_rooms=False, **kw))[1]
    for other in (d, e):
        n = min(len(a["points"]), len(other["points"]))
        assert not np.array_equal(a["points"][:n], other["points"][:n])
    # iterating the same dataset twice gives the same epoch
    ds = pipeline.training_dataset(out, seed=5, epoch=1, **kw)
    np.testing.assert_array_equal(collect(ds)[1]["points"], collect(ds)[1]["points"])


def test_training_blocks_per_room_and_remainder(dataset):
    out, _ = dataset
    kw = dict(area=3, num_points=NP, min_points=1, blocks_per_room=7, sampling="random_corners")
    total = collect(pipeline.training_dataset(out, batch_size=1, **kw))[1]["points"].shape[0]
    assert total <= 3 * 7 and total >= 3 * 5  # 3 training rooms; few empty corners dropped
    kept = collect(pipeline.training_dataset(out, batch_size=4, drop_remainder=False, **kw))
    assert kept[1]["points"].shape[0] == total
    dropped = collect(pipeline.training_dataset(out, batch_size=4, **kw))
    assert dropped[1]["points"].shape[0] == total // 4 * 4


def test_fixed_dataset_in_order_and_shuffled(dataset):
    out, ids = dataset
    files = s3dis.read_file_list(out / "lists" / "test_hdf5_file_list_Area3.txt")
    want = [s3dis.read_blocks_h5(f) for f in files]
    want_points = np.concatenate([w.data for w in want])
    ds = pipeline.fixed_dataset(out, area=3, batch_size=5, num_points=NP)
    batches, got = collect(ds)
    assert [len(b["points"]) for b in batches[:-1]] == [5] * (len(batches) - 1)
    np.testing.assert_array_equal(got["points"], want_points)
    np.testing.assert_array_equal(got["semantic"], np.concatenate([w.semantic for w in want]))
    np.testing.assert_array_equal(got["instance"], np.concatenate([w.instance for w in want]))
    assert room_ids(got["points"]) == {v for k, v in ids.items() if k.startswith("Area_3_")}
    check_aligned(got["points"], got["semantic"], got["instance"])

    sh = [collect(pipeline.fixed_dataset(out, 3, 5, num_points=NP, shuffle=True, seed=s,
                                         num_parallel_calls=p))[1]
          for s, p in ((1, 1), (1, 3), (2, None))]
    np.testing.assert_array_equal(sh[0]["points"], sh[1]["points"])
    assert not np.array_equal(sh[0]["points"], want_points)
    assert not np.array_equal(sh[0]["points"], sh[2]["points"])
    order = np.lexsort(sh[0]["points"].reshape(len(want_points), -1).T)
    ref = np.lexsort(want_points.reshape(len(want_points), -1).T)
    np.testing.assert_array_equal(sh[0]["points"][order], want_points[ref])
    check_aligned(sh[0]["points"], sh[0]["semantic"], sh[0]["instance"])

    train = collect(pipeline.fixed_dataset(out, 3, 8, split="train", num_points=NP))[1]
    assert room_ids(train["points"]) == {v for k, v in ids.items() if not k.startswith("Area_3")}


def test_errors(dataset, tmp_path):
    out, _ = dataset
    with pytest.raises(DataError, match="test_hdf5_file_list_Area9.txt"):
        pipeline.fixed_dataset(out, area=9, batch_size=2, num_points=NP)
    with pytest.raises(DataError, match="train_file_list_woArea9.txt"):
        pipeline.training_dataset(out, area=9, batch_size=2, num_points=NP)
    with pytest.raises(DataError, match="lists"):
        pipeline.training_dataset(tmp_path, area=1, batch_size=2)
    with pytest.raises(ValueError, match="split"):
        pipeline.fixed_dataset(out, area=1, batch_size=2, split="val")
    with pytest.raises(DataError, match="expected"):  # wrong points per block
        pipeline.fixed_dataset(out, area=1, batch_size=2, num_points=NP * 2)

    # a copy of the prepared folder with an empty list, a missing and a corrupt file
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "lists" / "test_hdf5_file_list_Area2.txt").write_text("\n")
    with pytest.raises(DataError, match="no files"):
        pipeline.fixed_dataset(bad, area=2, batch_size=2, num_points=NP)
    (bad / "rooms" / "Area_2_office_1.npz").unlink()
    with pytest.raises(DataError, match="Area_2_office_1.npz"):
        pipeline.training_dataset(bad, area=1, batch_size=2, num_points=NP)
    (bad / "blocks" / "Area_1_office_1.h5").write_bytes(b"\x89HDF truncated")
    with pytest.raises(DataError, match="Area_1_office_1.h5"):
        pipeline.fixed_dataset(bad, area=1, batch_size=2, num_points=NP)
    (bad / "rooms" / "Area_3_office_1.npz").write_bytes(b"PK not a zip")
    with pytest.raises(DataError, match="Area_3_office_1.npz"):
        pipeline.training_dataset(bad, area=2, batch_size=2, num_points=NP)
    # without the up-front check, the iteration fails naming the file
    ds = pipeline.training_dataset(bad, area=2, batch_size=2, num_points=NP, min_points=10,
                                   check_files=False)
    with pytest.raises(tf.errors.OpError, match="Area_3_office_1.npz"):
        collect(ds)
