"""The ShapeNet part tf.data input on a small prepared synthetic set spread over several files."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from jsnet_tf.data import shapenet, shapenet_pipeline  # noqa: E402
from jsnet_tf.errors import DataError  # noqa: E402

NP = 64
CATEGORIES = ("Airplane", "Mug", "Table", "Chair")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """20 train shapes in 5 files of 4, 4 val and 4 test shapes (one file each), 64 points."""
    root = tmp_path_factory.mktemp("shapenet_pipeline")
    raw, out = root / "raw", root / "out"
    shapenet.write_synthetic_partset(raw, seed=1, shapes_per_category=(5, 1, 1),
                                     categories=CATEGORIES, points_range=(2048, 2100))
    for split in shapenet.SPLITS:
        shapenet.prepare_shapenet(raw, out, split, num_points=NP, shapes_per_file=4)
    return out


def collect(ds):
    batches = [{k: v.numpy() for k, v in b.items()} for b in ds]
    return batches, {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def expected_split(out, split):
    """The split's shapes straight from the h5 files, in list order."""
    sets = [shapenet.read_shapenet_h5(f) for f in shapenet.prepared_files(out, split)]
    return {"points": np.concatenate([s.data for s in sets]),
            "semantic": np.concatenate([s.part for s in sets]),
            "instance": np.concatenate([s.instance for s in sets]),
            "category": np.concatenate([s.category for s in sets])}


def test_shapes_dtypes_and_order(prepared):
    out = prepared
    assert len(shapenet.prepared_files(out, "train")) == 5
    assert shapenet_pipeline.num_shapes(out, "train") == 20
    assert shapenet_pipeline.num_shapes(out, "trainval") == 24
    ds = shapenet_pipeline.dataset(out, "train", batch_size=6, num_points=NP)
    spec = ds.element_spec
    assert spec["points"].shape.as_list() == [None, NP, 6] and spec["points"].dtype == tf.float32
    assert spec["semantic"].shape.as_list() == spec["instance"].shape.as_list() == [None, NP]
    assert spec["category"].shape.as_list() == [None]
    assert spec["semantic"].dtype == spec["instance"].dtype == spec["category"].dtype == tf.int32
    batches, everything = collect(ds)
    assert [len(b["points"]) for b in batches] == [6, 6, 6, 2]
    for b in batches:
        assert b["points"].dtype == np.float32 and b["category"].dtype == np.int32
    expected = expected_split(out, "train")
    for key, values in expected.items():
        np.testing.assert_array_equal(everything[key], values)
    assert (shapenet.PART_TO_CATEGORY[everything["semantic"]]
            == everything["category"][:, None]).all()
    dropped = shapenet_pipeline.dataset(out, "train", batch_size=6, num_points=NP,
                                        drop_remainder=True)
    assert dropped.element_spec["points"].shape.as_list() == [6, NP, 6]
    assert len(list(dropped)) == 3
    _, trainval = collect(shapenet_pipeline.dataset(out, "trainval", 8, num_points=NP))
    np.testing.assert_array_equal(trainval["points"], np.concatenate(
        [expected["points"], expected_split(out, "val")["points"]]))


def order_of(everything, reference):
    """Index into `reference` of each yielded shape (shapes matched by their points)."""
    keys = {r.tobytes(): i for i, r in enumerate(reference["points"])}
    return [keys[p.tobytes()] for p in everything["points"]]


def test_shuffle_deterministic_per_seed_and_epoch(prepared):
    out = prepared
    reference = expected_split(out, "train")

    def run(seed, epoch, **kw):
        _, everything = collect(shapenet_pipeline.dataset(out, "train", 4, num_points=NP,
                                                          shuffle=True, seed=seed, epoch=epoch,
                                                          **kw))
        order = order_of(everything, reference)
        # Rows stay together: every shape's labels and category came with its points.
        for key in ("semantic", "instance", "category"):
            np.testing.assert_array_equal(everything[key], reference[key][order])
        return order

    first = run(0, 0)
    assert sorted(first) == list(range(20)) and first != list(range(20))
    assert run(0, 0, num_parallel_calls=1) == first
    assert run(0, 0, shuffle_buffer=1) != first      # the buffer mixes shapes across files
    assert run(0, 1) != first
    assert run(1, 0) != first
    # An epoch's order is fixed: iterating the same dataset twice gives it twice.
    ds = shapenet_pipeline.dataset(out, "train", 4, num_points=NP, shuffle=True, seed=2)
    assert order_of(collect(ds)[1], reference) == order_of(collect(ds)[1], reference)


def test_errors_name_the_path(prepared, tmp_path):
    out = prepared
    with pytest.raises(DataError, match=rf"{tmp_path / 'train_hdf5_file_list.txt'}: cannot read"):
        shapenet_pipeline.dataset(tmp_path, "train", 2, num_points=NP)
    with pytest.raises(DataError, match=rf"{out / 'shapenet_train_0.h5'}: shapes of 64 points, "
                                        r"expected 128"):
        shapenet_pipeline.dataset(out, "train", 2, num_points=128)
    (tmp_path / "test_hdf5_file_list.txt").write_text("gone.h5\n")
    with pytest.raises(DataError, match=rf"{tmp_path / 'gone.h5'}: listed in "
                                        rf"{tmp_path / 'test_hdf5_file_list.txt'} but missing"):
        shapenet_pipeline.num_shapes(tmp_path, "test")
    (tmp_path / "val_hdf5_file_list.txt").write_text("bad.h5\n")
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=rf"{tmp_path / 'bad.h5'}: not a readable"):
        shapenet_pipeline.dataset(tmp_path, "val", 2, num_points=NP)
    with h5py.File(tmp_path / "nocat.h5", "w") as f:
        for key in ("data", "seglabels", "pid"):
            f[key] = np.zeros((1, NP, 6) if key == "data" else (1, NP), np.float32)
    (tmp_path / "val_hdf5_file_list.txt").write_text("nocat.h5\n")
    with pytest.raises(DataError, match=r"nocat\.h5: missing dataset\(s\) category"):
        shapenet_pipeline.dataset(tmp_path, "val", 2, num_points=NP)
    with pytest.raises(ValueError, match="batch_size"):
        shapenet_pipeline.dataset(out, "train", 0, num_points=NP)
