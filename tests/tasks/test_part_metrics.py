"""jsnet_tf.tasks.part_metrics: part IoU as PointNet++'s part_seg/evaluate.py computes it, against a plain
loop over random shapes of every category, and hand-computed shapes."""

import numpy as np
import pytest

from jsnet_tf.data.shapenet import CATEGORIES, CATEGORY_NAMES, NUM_PARTS
from jsnet_tf.metrics import MetricsError
from jsnet_tf.tasks.part_metrics import (
    PAPER_INSTANCE_MIOU,
    PartEvaluator,
    category_index,
    format_table,
    restrict_to_category,
    shape_part_ious,
)


def reference_shape_iou(gt, pred, parts):
    """PointNet++'s loop: per part of the category, IoU of the point sets; 1 if both are empty."""
    ious = []
    for part in parts:
        in_gt = [g == part for g in gt]
        in_pred = [p == part for p in pred]
        union = sum(a or b for a, b in zip(in_gt, in_pred))
        intersection = sum(a and b for a, b in zip(in_gt, in_pred))
        ious.append(1.0 if union == 0 else intersection / union)
    return sum(ious) / len(ious)


def reference_result(shapes):
    """(instance mIoU, class mIoU, {category: mean}) of [(gt, pred, category name)]."""
    by_category = {}
    for gt, pred, name in shapes:
        by_category.setdefault(name, []).append(reference_shape_iou(gt, pred, CATEGORIES[name].parts))
    every = [iou for ious in by_category.values() for iou in ious]
    means = {name: sum(ious) / len(ious) for name, ious in by_category.items()}
    return sum(every) / len(every), sum(means.values()) / len(means), means


def random_shapes(rng, categories, shapes_per_category=3):
    """Shapes whose ground truth uses a random subset of the category's parts; predictions from
    random logits over all 50 parts, restricted to the category, or unrestricted."""
    shapes = []
    for name in categories:
        parts = np.array(CATEGORIES[name].parts)
        for k in range(shapes_per_category):
            points = int(rng.integers(1, 40))
            used = rng.choice(parts, int(rng.integers(1, len(parts) + 1)), replace=False)
            gt = rng.choice(used, points)
            logits = rng.normal(size=(points, NUM_PARTS))
            logits[:, parts] += rng.uniform(0, 2)  # more points predicted in the category
            if k % 3 == 0:
                pred = restrict_to_category(logits, name)
            elif k % 3 == 1:
                pred = logits.argmax(axis=1)  # may leave the category
            else:
                pred = np.where(rng.uniform(size=points) < 0.6, gt, rng.choice(parts, points))
            shapes.append((gt, pred, name))
    return shapes


def test_part_iou_matches_a_plain_loop_on_random_shapes_of_every_category(rng):
    missing = set(rng.choice(CATEGORY_NAMES, 2, replace=False))
    present = [name for name in CATEGORY_NAMES if name not in missing]
    shapes = random_shapes(rng, present)
    order = rng.permutation(len(shapes))
    evaluator = PartEvaluator()
    for i in order:
        gt, pred, name = shapes[i]
        iou = evaluator.add_shape(gt, pred, name)
        assert iou == pytest.approx(reference_shape_iou(gt, pred, CATEGORIES[name].parts), rel=1e-12, abs=1e-12)
    result = evaluator.result()
    instance, per_class, means = reference_result(shapes)
    assert result["instance_mIoU"] == pytest.approx(instance, rel=1e-12)
    assert result["class_mIoU"] == pytest.approx(per_class, rel=1e-12)
    for name in CATEGORY_NAMES:
        if name in missing:
            assert result["per_category"][name] is None and result["shapes_per_category"][name] == 0
        else:
            assert result["per_category"][name] == pytest.approx(means[name], rel=1e-12)
            assert result["shapes_per_category"][name] == 3
    assert result["num_shapes"] == len(shapes)


def test_a_part_absent_from_both_sides_counts_one():
    # Airplane, parts 0..3: part 0 half right, part 1 half right, part 2 right, part 3 in neither.
    ious = shape_part_ious([0, 0, 1, 2], [0, 1, 1, 2], "Airplane")
    np.testing.assert_array_equal(ious, [0.5, 0.5, 1.0, 1.0])
    assert PartEvaluator().add_shape([0, 0, 1, 2], [0, 1, 1, 2], "Airplane") == 0.75


def test_a_category_with_one_part_predicted_everywhere():
    # Mug (36 body, 37 handle): 6 body and 2 handle points, all predicted body.
    np.testing.assert_array_equal(shape_part_ious([36] * 6 + [37] * 2, [36] * 8, "Mug"), [6 / 8, 0.0])
    # A mug of body points only, predicted body: the handle is absent from both, so 1.
    assert PartEvaluator().add_shape([36] * 5, [36] * 5, "Mug") == 1.0


def test_restriction_to_the_category_changes_predictions_outside_it():
    # Laptop (28, 29); the highest logit of every point is part 5 (a Bag part).
    logits = np.zeros((3, NUM_PARTS))
    logits[:, 5] = 10.0
    logits[0, 28], logits[0, 29] = 1.0, 3.0
    logits[1, 28], logits[1, 29] = 2.0, -1.0
    logits[2, 28], logits[2, 29] = -4.0, -3.0
    gt = [29, 28, 28]
    assert logits.argmax(axis=1).tolist() == [5, 5, 5]
    restricted = restrict_to_category(logits, "Laptop")
    assert restricted.tolist() == [29, 28, 29]
    assert restrict_to_category(logits, CATEGORY_NAMES.index("Laptop")).tolist() == [29, 28, 29]
    # Unrestricted, every point is wrong and both parts have IoU 0; restricted, 28: 1/2, 29: 1/2.
    assert PartEvaluator().add_shape(gt, logits.argmax(axis=1), "Laptop") == 0.0
    np.testing.assert_array_equal(shape_part_ious(gt, restricted, "Laptop"), [0.5, 0.5])
    # Batched logits (B, N, 50) keep their leading axes.
    assert restrict_to_category(np.stack([logits, logits]), "Laptop").shape == (2, 3)


def test_instance_and_class_averages_differ_on_a_hand_case():
    evaluator = PartEvaluator()
    evaluator.add_shape([4, 4, 5, 5], [4, 4, 5, 5], "Bag")  # 1
    evaluator.add_shape([4, 5], [4, 5], "Bag")  # 1
    evaluator.add_shape([4, 4, 5, 5], [4, 4, 4, 4], "Bag")  # (2/4 + 0) / 2 = 0.25
    evaluator.add_shape([22, 23], [22, 22], "Knife")  # (1/2 + 0) / 2 = 0.25
    result = evaluator.result()
    assert result["instance_mIoU"] == pytest.approx((1 + 1 + 0.25 + 0.25) / 4)
    assert result["per_category"]["Bag"] == pytest.approx(0.75)
    assert result["per_category"]["Knife"] == pytest.approx(0.25)
    assert result["class_mIoU"] == pytest.approx((0.75 + 0.25) / 2)  # the 14 empty categories left out
    assert result["counts"]["shapes"][CATEGORY_NAMES.index("Bag")] == 3


def test_batches_and_merges_give_the_same_result_as_shape_by_shape(rng):
    shapes = [(rng.choice(CATEGORIES[n].parts, 20), rng.choice(CATEGORIES[n].parts, 20), n)
              for n in rng.choice(CATEGORY_NAMES, 10)]
    one = PartEvaluator()
    for gt, pred, name in shapes:
        one.add_shape(gt, pred, name)
    first, second = PartEvaluator(), PartEvaluator()
    gt, pred, names = (list(column) for column in zip(*shapes))
    ious = first.add_shapes(np.stack(gt[:6]), np.stack(pred[:6]), [category_index(n) for n in names[:6]])
    second.add_shapes(np.stack(gt[6:]), np.stack(pred[6:]), names[6:])
    assert ious.tolist() == [reference_shape_iou(g, p, CATEGORIES[n].parts) for g, p, n in shapes[:6]]
    merged = first.merge(second).result()
    expected = one.result()
    assert merged["shapes_per_category"] == expected["shapes_per_category"]
    for key in ("instance_mIoU", "class_mIoU"):
        assert merged[key] == pytest.approx(expected[key], rel=1e-12)


def test_no_shapes_means_no_values():
    result = PartEvaluator().result()
    assert result["instance_mIoU"] is None and result["class_mIoU"] is None and result["num_shapes"] == 0
    assert set(result["per_category"].values()) == {None}


def test_bad_input_names_the_shape_and_the_problem():
    evaluator = PartEvaluator()
    with pytest.raises(MetricsError, match=r"shape 7: ground-truth part 5 at point 1 is not a part of Mug \(36\.\.37\)"):
        evaluator.add_shape([36, 5], [36, 36], "Mug", where="shape 7")
    with pytest.raises(MetricsError, match="predicted part 50 at point 0 is outside 0..49"):
        evaluator.add_shape([36], [50], "Mug")
    with pytest.raises(MetricsError, match="part_pred has 1 points, expected 2"):
        evaluator.add_shape([36, 37], [36], "Mug")
    with pytest.raises(MetricsError, match="unknown category 'mug'"):
        evaluator.add_shape([36], [36], "mug")
    with pytest.raises(MetricsError, match="category index 16 is outside 0..15"):
        restrict_to_category(np.zeros((2, NUM_PARTS)), 16)
    with pytest.raises(MetricsError, match="50 part scores in the last axis"):
        restrict_to_category(np.zeros((2, 13)), "Mug")
    assert evaluator.num_shapes == 0


def test_the_table_puts_the_papers_instance_miou_beside_ours_and_the_papers_comparison_rows_below():
    evaluator = PartEvaluator()
    evaluator.add_shape([0, 0, 1, 2], [0, 1, 1, 2], "Airplane")
    lines = format_table(evaluator.result()).splitlines()
    assert PAPER_INSTANCE_MIOU == 85.8
    instance_row = next(line for line in lines if line.startswith("instance mIoU"))
    assert instance_row.split()[-3:] == ["1", "75.0", "85.8"]
    assert next(line for line in lines if line.startswith("class mIoU")).split()[-2:] == ["75.0", "-"]
    assert next(line for line in lines if line.startswith("Airplane")).split() == ["Airplane", "1", "75.0", "-"]
    assert next(line for line in lines if line.startswith("Table")).split() == ["Table", "0", "-", "-"]
    assert sum("85.8" in line for line in lines) == 2  # the instance row and the paper's Table 3 line
    assert lines[-1] == ("the paper's Table 3 (instance mIoU): PointNet 83.7, PointNet++ 84.9, ASIS 85.0, JSNet 85.8; "
                         "ours 75.0")
