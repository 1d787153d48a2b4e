"""jsnet_tf.tasks.part_evaluation: a network that reads the ground truth from its input must score part
mIoU 1.0 and perfect part instances once predictions are restricted to each shape's category; the
outputs, resumption, pictures; a network with NaN outputs is refused with nothing written."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import config, io
from jsnet_tf.data import shapenet
from jsnet_tf.errors import DataError
from jsnet_tf.evaluation import EvaluationError
from jsnet_tf.files import write_text_atomic
from jsnet_tf.tasks.part_evaluation import ShapeSegmenter, evaluate_shapenet

NUM_POINTS = 512  # big enough for some part instances of the 100 points the AP counts
DECOY_PART = 22  # a Knife part: not in the tiny set, so only restriction to the category removes it
CATEGORIES = ("Airplane", "Mug", "Table")


class PartOracle(keras.Model):
    """Reads each point's part (channel 3 = part / 100) and instance (channel 4 = instance / 100)
    from its normals; the highest logit is always DECOY_PART, the second the true part.
    Embeddings are 3 apart per instance (bandwidth 0.6)."""

    def __init__(self, fill=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.input_channels, self.fill = shapenet.NUM_PARTS, shapenet.NUM_CHANNELS, fill

    def call(self, points, training=False):
        part = tf.cast(tf.round(points[..., 3] * 100.0), tf.int32)
        instance = tf.round(points[..., 4] * 100.0)
        logits = 10.0 * tf.one_hot(part, self.num_classes) + 20.0 * tf.one_hot(DECOY_PART, self.num_classes)
        embeddings = tf.stack([instance * 3.0] + [tf.zeros_like(instance)] * 4, axis=-1)
        if self.fill is not None:  # e.g. NaN: an untrained network in inference mode
            logits = logits + self.fill
        return {"semantic_logits": logits, "embeddings": embeddings}


def encoded_shape(category, rng, num_points=NUM_POINTS):
    """(points (N, 6), part, instance) of a synthetic shape, its labels written into channels 3, 4."""
    rows = shapenet.synthetic_shape_points(category, rng, 2048)[:num_points]
    xyz = shapenet.normalize_xyz(rows[:, :3])
    part = rows[:, 6].astype(np.int32)
    instance = shapenet.part_instances(xyz, part)
    points = np.column_stack([xyz, part / 100.0, instance / 100.0, np.zeros(num_points)]).astype(np.float32)
    return points, part, instance


def write_split(folder, rng, files=((0, 1, 2), (1, 2)), split="test"):
    """A prepared split: one h5 file per tuple of category indices. Returns the shapes' arrays."""
    names = []
    arrays = []
    for k, categories in enumerate(files):
        shapes = [encoded_shape(CATEGORIES[c], rng) for c in categories]
        data, part, instance = (np.stack(column) for column in zip(*shapes))
        category = np.array([shapenet.CATEGORY_NAMES.index(CATEGORIES[c]) for c in categories], np.int32)
        name = f"shapenet_{split}_{k}.h5"
        shapenet.write_shapenet_h5(folder / name, data, part, instance, category)
        names.append(name)
        arrays.append((data, part, instance, category))
    write_text_atomic(shapenet.list_file(folder, split), "".join(n + "\n" for n in names))
    return arrays


def tiny_cfg():
    return config.load(None, ['data.dataset="shapenet"', f"data.num_points={NUM_POINTS}", "model.num_classes=50",
                              "model.input_channels=6"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapenet_prepared")
    return folder, write_split(folder, np.random.default_rng(11))


@pytest.fixture(scope="module")
def evaluated(prepared, tmp_path_factory):
    folder, _ = prepared
    out = tmp_path_factory.mktemp("shapenet_eval") / "eval"
    result = evaluate_shapenet(PartOracle(), tiny_cfg(), folder, out, pictures=2, progress=False,
                               info={"weights": "oracle"})
    return out, result


def test_an_oracle_scores_one_once_restricted_to_the_category(evaluated):
    _, result = evaluated
    assert result["instance_mIoU"] == 1.0 and result["class_mIoU"] == 1.0
    assert result["part_accuracy"] == 1.0
    for name in shapenet.CATEGORY_NAMES:
        expected = 1.0 if name in CATEGORIES else None
        assert result["per_category"][name] == expected, name
    assert result["shapes_per_category"]["Mug"] == 2 and result["num_shapes"] == 5
    instances = result["instances"]
    assert instances["mCov"] == instances["mWCov"] == instances["mPrec"] == instances["mRec"] == 1.0
    # Every ground-truth instance (Airplane's two engines, Table's legs, ...) was found.
    assert instances["counts"]["gt_instances"] == instances["counts"]["true_positives"]
    assert sum(instances["counts"]["gt_instances"]) > 5 * 2


def test_the_outputs_hold_the_labels_the_metrics_and_the_papers_row(evaluated, prepared):
    out, result = evaluated
    _, arrays = prepared
    stored = json.loads((out / "results.json").read_text())
    assert stored == result
    for key in ("weights", "split", "instance_mIoU", "class_mIoU", "per_category", "shapes_per_category", "counts",
                "instances", "files", "bandwidth", "num_points"):
        assert key in stored, key
    assert stored["weights"] == "oracle" and stored["files"] == ["shapenet_test_0.h5", "shapenet_test_1.h5"]
    table = (out / "results.txt").read_text()
    assert "85.8" in table and "instance mIoU" in table and "mCov 100.0" in table
    for k, (data, part, instance, category) in enumerate(arrays):
        with np.load(out / f"shapenet_test_{k}.npz") as z:
            np.testing.assert_array_equal(z["xyz"], data[:, :, :3])
            np.testing.assert_array_equal(z["part_gt"], part)
            np.testing.assert_array_equal(z["part_pred"], part)
            np.testing.assert_array_equal(z["instance_gt"], instance)
            np.testing.assert_array_equal(z["category"], category)
            np.testing.assert_array_equal(z["shape_iou"], np.ones(len(category)))
            for i in range(len(category)):  # one predicted instance per ground-truth one
                pairs = np.unique(np.stack([z["instance_gt"][i], z["instance_pred"][i]]), axis=1)
                assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_part_instances_are_listed_scored_by_ap_and_written_for_the_benchmark(evaluated, prepared):
    """Every shape's instances (id, part, confidence, points) are listed per h5 file and written in
    the ScanNet benchmark's format (label id = part + 1), whose brute-force scoring gives the AP of
    results.json."""
    from tests import instance_ap_reference

    out, result = evaluated
    _, arrays = prepared
    items = []
    for k, (*_, category) in enumerate(arrays):
        lines = (out / f"shapenet_test_{k}_instances.txt").read_text().splitlines()
        assert lines[0] == "# shape id part confidence points"
        with np.load(out / f"shapenet_test_{k}.npz") as z:
            for row in lines[1:]:
                shape, instance, label, confidence, points = row.split()
                members = z["instance_pred"][int(shape)] == int(instance)
                assert int(points) == members.sum() and (z["part_pred"][int(shape)][members] == int(label)).all()
                assert 0 < float(confidence) <= 1
        items += [f"shapenet_test_{k}_{i}" for i in range(len(category))]
    scored = instance_ap_reference.score_folder(out, items, list(range(1, shapenet.NUM_PARTS + 1)))
    ap, ap50, ap25 = instance_ap_reference.averages(scored)
    instances = result["instances"]
    assert (instances["AP"], instances["AP50"], instances["AP25"]) == pytest.approx((ap, ap50, ap25), abs=1e-12)
    assert instances["AP50"] is not None and "ScanNet benchmark's AP rules" in (out / "results.txt").read_text()


def test_the_first_shapes_get_figure_5s_panels(evaluated, prepared):
    out, _ = evaluated
    _, arrays = prepared
    pictures = out / "pictures"
    names = sorted(p.name for p in pictures.iterdir())
    assert names == sorted(
        [f"shapenet_test_0_{i}_{c}.png" for i, c in ((0, "Airplane"), (1, "Mug"))]
        + [f"shapenet_test_0_{i}_{c}_{kind}.ply" for i, c in ((0, "Airplane"), (1, "Mug"))
           for kind in ("part_pred", "part_gt", "ins_pred", "ins_gt")]
    )
    data, part, instance, _ = arrays[0]
    ply = io.read_point_cloud(pictures / "shapenet_test_0_1_Mug_part_gt.ply")
    np.testing.assert_allclose(ply.xyz, data[1, :, :3])
    np.testing.assert_array_equal(ply.rgb, io.semantic_colors(part[1], shapenet.PALETTE))
    np.testing.assert_array_equal(ply.extra["part"], part[1])
    ply = io.read_point_cloud(pictures / "shapenet_test_0_0_Airplane_ins_gt.ply")
    np.testing.assert_array_equal(ply.rgb, io.instance_colors(instance[0]))


def test_a_second_run_reuses_finished_files_and_other_settings_run_again(evaluated, prepared, monkeypatch):
    out, result = evaluated
    folder, _ = prepared
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}

    def not_again(*args, **kwargs):
        raise AssertionError("a finished file was run again")

    with monkeypatch.context() as patch:
        patch.setattr(ShapeSegmenter, "segment_shapes", not_again)
        again = evaluate_shapenet(PartOracle(), tiny_cfg(), folder, out, pictures=2, progress=False,
                                  info={"weights": "oracle"})
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in result.items() if k != "seconds"}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")} == stamps
    evaluate_shapenet(PartOracle(), tiny_cfg(), folder, out, bandwidth=0.5, pictures=0, progress=False)
    changed = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    assert all(changed[name] != stamps[name] for name in stamps)
    evaluate_shapenet(PartOracle(), tiny_cfg(), folder, out, bandwidth=0.5, pictures=0, progress=False, overwrite=True)
    assert all(p.stat().st_mtime_ns != changed[p.name] for p in out.glob("*.npz"))


def test_a_network_with_nan_outputs_is_refused_before_anything_is_written(prepared, tmp_path):
    folder, _ = prepared
    with pytest.raises(EvaluationError, match="NaN or infinite values.*untrained model"):
        evaluate_shapenet(PartOracle(fill=float("nan")), tiny_cfg(), folder, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_bad_shapes_are_a_data_error_naming_the_file_and_shape(tmp_path, rng):
    (data, part, instance, category), = write_split(tmp_path, rng, files=((0, 1),))
    part[1, 5] = 3  # an Airplane part in a Mug
    shapenet.write_shapenet_h5(tmp_path / "shapenet_test_0.h5", data, part, instance, category)
    with pytest.raises(DataError, match=r"shapenet_test_0.h5: shape 1 \(Mug\) has part 3 at point 5, not a part of Mug"):
        evaluate_shapenet(PartOracle(), tiny_cfg(), tmp_path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    part[1, 5] = 36
    data[0, 7, 2] = np.nan
    shapenet.write_shapenet_h5(tmp_path / "shapenet_test_0.h5", data, part, instance, category)
    with pytest.raises(DataError, match="shapenet_test_0.h5: shape 0 holds NaN or infinite values"):
        evaluate_shapenet(PartOracle(), tiny_cfg(), tmp_path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="val_hdf5_file_list.txt"):
        evaluate_shapenet(PartOracle(), tiny_cfg(), tmp_path, tmp_path / "out", split="val", progress=False)


def test_shapes_of_other_sizes_are_labelled_point_by_point(rng):
    points, part, instance = encoded_shape("Table", rng, num_points=300)
    segmenter = ShapeSegmenter(PartOracle(), 128, batch_size=2)
    assert segmenter.count_rows(300) == 3
    prediction = segmenter.segment(points, "Table", rng=np.random.default_rng(0))
    np.testing.assert_array_equal(prediction.part, part)
    assert prediction.score.min() == pytest.approx(1.0, abs=1e-3)  # 10 logits ahead of the other Table parts
    # The mean-shift clusters are the ground-truth instances, each of its ground-truth part.
    clusters = {(g, p) for g, p in zip(instance, prediction.instance)}
    assert len(clusters) == len(np.unique(instance)) == len(prediction.instance_part)
    for g, p in clusters:
        assert prediction.instance_part[p] == part[instance == g][0]
    # Without a category all 50 parts are allowed: the decoy wins everywhere.
    unrestricted = segmenter.segment(points, None, rng=np.random.default_rng(0))
    assert set(unrestricted.part.tolist()) == {DECOY_PART}


def test_models_that_do_not_fit_shapenet_are_refused():
    class S3disSized(PartOracle):
        def __init__(self):
            super().__init__()
            self.num_classes = 13

    with pytest.raises(EvaluationError, match="13 classes; ShapeNet part has 50 parts"):
        ShapeSegmenter(S3disSized(), NUM_POINTS)
    with pytest.raises(EvaluationError, match="bandwidth must be positive"):
        ShapeSegmenter(PartOracle(), NUM_POINTS, bandwidth=0)


def test_a_mean_shift_centre_without_points_leaves_no_gap_in_the_instance_numbers(rng, monkeypatch):
    """sklearn's MeanShift can return a centre that is no point's nearest (seen on a trained-for-
    one-step network): the instances are renumbered 0..K-1 over the centres that hold points."""
    from jsnet_tf.tasks import part_evaluation

    points, part, _ = encoded_shape("Mug", rng)
    labels = np.where(np.arange(NUM_POINTS) < 40, 0, 2)  # centre 1 of 3 holds no point
    monkeypatch.setattr(part_evaluation.postprocess, "mean_shift", lambda e, bandwidth: (labels, np.zeros((3, 5))))
    prediction = ShapeSegmenter(PartOracle(), NUM_POINTS).segment(points, "Mug")
    np.testing.assert_array_equal(prediction.instance, np.where(np.arange(NUM_POINTS) < 40, 0, 1))
    expected = [np.bincount(part[labels == k], minlength=shapenet.NUM_PARTS).argmax() for k in (0, 2)]
    np.testing.assert_array_equal(prediction.instance_part, expected)
