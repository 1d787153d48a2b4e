"""Instance AP by the ScanNet benchmark's rules (jsnet_tf.metrics.InstanceAP), the instance table
(class and confidence of each predicted instance), the instance lists and the submission files:
hand-computed cases for every rule, and a brute-force scorer of the written files
(tests/instance_ap_reference.py) on random items."""

import json
import math

import numpy as np
import pytest

from jsnet_tf import metrics
from jsnet_tf.metrics import Evaluator, InstanceAP, InstanceTable, MetricsError
from tests import instance_ap_reference as reference

IGNORED = -1


class Item:
    """An item built by hand: ground-truth instances, ignored points and disjoint predictions,
    each a run of consecutive points."""

    def __init__(self):
        self.sem_gt, self.ins_gt = [], []
        self.ins_pred, self.pred_class, self.confidence = [], {}, {}

    def gt(self, cls, size, instance=None):
        """Adds a ground-truth instance of `size` points; returns the range of its points."""
        start = len(self.sem_gt)
        instance = max(self.ins_gt, default=-1) + 1 if instance is None else instance
        self.sem_gt += [cls] * size
        self.ins_gt += [instance] * size
        self.ins_pred += [-1] * size
        return range(start, start + size)

    def ignored(self, size):
        start = len(self.sem_gt)
        self.sem_gt += [IGNORED] * size
        self.ins_gt += [-1] * size
        self.ins_pred += [-1] * size
        return range(start, start + size)

    def pred(self, cls, confidence, *ranges):
        """A predicted instance of class `cls` over the given point ranges."""
        instance = len(self.pred_class)
        for points in ranges:
            for i in points:
                assert self.ins_pred[i] == -1, "predictions are disjoint"
                self.ins_pred[i] = instance
        self.pred_class[instance] = cls
        self.confidence[instance] = confidence
        return instance

    def table(self):
        ids = np.array(sorted(self.pred_class), np.int64)
        points = np.array([self.ins_pred.count(int(i)) for i in ids], np.int64)
        return InstanceTable(ids, np.array([self.pred_class[int(i)] for i in ids], np.int64),
                             np.array([self.confidence[int(i)] for i in ids], np.float64), points)

    def add_to(self, ap):
        return ap.add_item(self.sem_gt, self.ins_gt, self.ins_pred, self.table())


def per_threshold(items, num_classes=2, instance_classes=None):
    ap = InstanceAP(num_classes, instance_classes)
    for item in items:
        item.add_to(ap)
    return ap


def first(points, count):
    return range(points.start, points.start + count)


def rest(points, count):
    return range(points.start + count, points.stop)


# ------------------------------------------------------------------------------------ each rule


def test_a_match_needs_iou_strictly_above_the_threshold():
    """IoU exactly 0.5 (100 of a 200-point instance) is no match at 0.5, one at 0.25; 101 points
    are a match at 0.5."""
    item = Item()
    item.pred(0, 0.9, first(item.gt(0, 200), 100))
    ap = per_threshold([item])
    np.testing.assert_array_equal(ap.average_precisions()[0], [0.0] * 9 + [1.0])
    result = ap.result()
    assert (result["AP"], result["AP50"], result["AP25"]) == (0.0, 0.0, 1.0)

    item = Item()
    item.pred(0, 0.9, first(item.gt(0, 200), 101))  # IoU 0.505
    np.testing.assert_array_equal(per_threshold([item]).average_precisions()[0], [1.0] + [0.0] * 8 + [1.0])


def test_instances_under_100_points_are_left_out():
    # A 99-point ground truth predicted exactly: both left out, the class has no value.
    item = Item()
    item.pred(0, 0.9, item.gt(0, 99))
    assert per_threshold([item]).result()["per_class"]["ap"] == [None, None]
    # A 99-point prediction of a 150-point ground truth is left out: the ground truth is missed (AP 0).
    item = Item()
    item.pred(0, 0.9, first(item.gt(0, 150), 99))
    assert per_threshold([item]).result()["AP"] == 0.0
    # A prediction over a small ground truth of its class (IoU 99/150 > 0.5) is no false positive,
    # and at thresholds where it does not match, the small ground truth's points are ignored points.
    item = Item()
    item.pred(0, 0.5, item.gt(0, 200))
    small = item.gt(0, 99)
    item.pred(0, 0.9, small, item.ignored(51))
    assert per_threshold([item]).result()["AP"] == 1.0


def test_a_second_prediction_of_a_matched_ground_truth_is_a_false_positive():
    """At IoU 0.25, A (0.9) and B (0.8), each half of ground truth 1, both match it: A is the true
    positive, B a false positive (ranked above C, 0.7, the true positive of ground truth 2).
    Hand-computed: precision 2/3, 1/2, 1, 1 at recall 1, 1/2, 1/2, 0, steps 1/4 each: AP 19/24."""
    item = Item()
    one = item.gt(0, 200)
    item.pred(0, 0.9, first(one, 100))
    item.pred(0, 0.8, rest(one, 100))
    item.pred(0, 0.7, first(item.gt(0, 200), 150))
    ap = per_threshold([item]).average_precisions()[0]
    assert ap[-1] == pytest.approx(19 / 24, abs=1e-15)
    # At 0.5 the halves match nothing (IoU exactly 0.5) and are plain false positives, ground truth 1
    # a false negative: precision 1/3, 0, 0, 1 at recall 1/2, 0, 0, 0: AP 1/12.
    assert ap[0] == pytest.approx(1 / 12, abs=1e-15)


def test_an_unmatched_prediction_on_ignored_points_is_no_false_positive_up_to_its_share():
    """B (0.9) lies 144 of its 200 points on ignored points (share 0.72) and 56 on an unmatched
    ground truth: ignored at thresholds up to 0.7 and at 0.25 (AP 1/2), a false positive at 0.75
    and above (AP 1/8, hand-computed)."""
    item = Item()
    item.pred(0, 0.6, item.gt(0, 300))
    missed = item.gt(0, 300)
    item.pred(0, 0.9, item.ignored(144), first(missed, 56))
    ap = per_threshold([item])
    np.testing.assert_allclose(ap.average_precisions()[0], [0.5] * 5 + [0.125] * 4 + [0.5], rtol=0, atol=1e-15)
    result = ap.result()
    assert result["AP"] == pytest.approx((5 * 0.5 + 4 * 0.125) / 9)
    assert result["AP50"] == 0.5 and result["AP25"] == 0.5


def test_an_ignored_share_equal_to_the_threshold_is_still_a_false_positive():
    """Share 50/200 = 0.25 exactly at threshold 0.25: a false positive (the share must exceed it)."""
    item = Item()
    item.pred(0, 0.6, item.gt(0, 300))
    item.pred(0, 0.9, item.ignored(50), first(item.gt(0, 1000), 150))  # IoU 150/1050 with the big one
    assert per_threshold([item]).average_precisions()[0, -1] == pytest.approx(0.125, abs=1e-15)


def test_tied_confidences_give_one_precision_recall_point():
    """Two true positives and one false positive, all at 0.5: one point (precision 2/3, recall 1),
    then (0, 1): AP 5/6 (ranking the false positive anywhere among them would give another value)."""
    item = Item()
    item.pred(0, 0.5, item.gt(0, 200))
    item.pred(0, 0.5, item.gt(0, 200))
    item.pred(0, 0.5, item.gt(1, 200))  # class 1 predicted as 0: a false positive of class 0
    ap = per_threshold([item]).average_precisions()
    np.testing.assert_allclose(ap[0], [5 / 6] * 10, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(ap[1], [0.0] * 10)  # class 1: ground truth, no prediction


def test_a_class_without_ground_truth_is_left_out_and_one_without_predictions_scores_0():
    item = Item()
    item.pred(0, 0.9, item.gt(0, 200))
    item.pred(1, 0.8, item.ignored(200))  # class 1: predictions, no ground truth
    result = per_threshold([item], num_classes=3).result()
    assert result["per_class"]["ap"] == [1.0, None, None]
    assert result["AP"] == 1.0
    item.gt(2, 150)  # class 2: ground truth, no prediction
    result = per_threshold([item], num_classes=3).result()
    assert result["per_class"]["ap"] == [1.0, None, 0.0]
    assert result["AP"] == 0.5 and result["AP50"] == 0.5 and result["AP25"] == 0.5


def test_every_prediction_unmatched_and_ignored_scores_0_without_a_crash():
    """The benchmark's script fails here (an empty precision-recall curve)."""
    item = Item()
    item.gt(0, 200)
    item.pred(0, 0.9, item.ignored(150))
    ap = per_threshold([item])
    assert ap.has_gt[0] and ap.has_pred[0]
    assert ap.result()["AP"] == 0.0 and ap.result()["AP25"] == 0.0


def test_only_the_instance_classes_count_and_their_other_points_are_ignored():
    """Class 1 (e.g. ScanNet's wall) is no instance class: its predictions are left out and its
    ground-truth points are ignored points for the predictions of class 0."""
    item = Item()
    item.pred(0, 0.6, item.gt(0, 200))
    item.pred(0, 0.9, item.gt(1, 200))  # lies on class 1: ignored share 1
    item.pred(1, 0.9, item.gt(1, 300))
    result = per_threshold([item], instance_classes=[0]).result()
    assert result["AP"] == 1.0 and result["per_class"]["ap"] == [1.0, None]
    assert per_threshold([item]).result()["per_class"]["ap"][0] < 1.0  # class 1 counting: a false positive


def test_ground_truth_instances_are_taken_in_ascending_id_and_a_taken_prediction_matches_once():
    """At 0.25, A (0.9) covers 120 points of ground truth 0 (IoU 120/360) and 160 of ground truth 1
    (IoU 160/320); B (0.8) the other 80 of ground truth 0 and 100 ignored points (IoU 80/300).
    Ground truth 0 comes first (ascending id, though its points come later): A and B match it, A is
    taken, B is a false positive, and ground truth 1 finds A taken: AP 1/2. (Ground truth 1 first
    would take A, leave B to ground truth 0 and give AP 1.)"""
    item = Item()
    g1 = item.gt(0, 200, instance=1)
    g0 = item.gt(0, 200, instance=0)
    item.pred(0, 0.9, first(g0, 120), first(g1, 160))
    item.pred(0, 0.8, rest(g0, 120), item.ignored(100))
    ap = per_threshold([item])
    assert ap.false_negatives[0, -1] == 1
    assert ap.average_precisions()[0, -1] == pytest.approx(0.5, abs=1e-15)


# ----------------------------------------------------------------------- against the brute force


def random_item(rng, num_classes, with_ignored=True):
    """Random ground truth (instances of 20-400 points, some ignored points) and predictions that
    split, merge, shift and duplicate it, with a few tied confidences."""
    sizes = rng.integers(20, 400, rng.integers(2, 9))
    sem = np.concatenate([[rng.integers(num_classes)] * s for s in sizes])
    ins = np.concatenate([[k + 3] * s for k, s in enumerate(sizes)])
    if with_ignored:
        ignored = rng.random(sem.size) < rng.uniform(0, 0.3)
        sem = np.where(ignored, -1, sem)
        ins = np.where(ignored & (rng.random(sem.size) < 0.5), -1, ins)
    order = rng.permutation(sem.size)
    sem, ins = sem[order], ins[order]
    pred = np.full(sem.size, -1)
    cuts = np.sort(rng.choice(np.arange(1, sem.size), rng.integers(1, 12), replace=False))
    for k, part in enumerate(np.split(np.argsort(ins * 7919 % 97 + rng.random(sem.size) * 3), cuts)):
        if rng.random() < 0.8:
            pred[part] = 10 * k + 5
    sem_pred = np.where(sem >= 0, sem, rng.integers(num_classes, size=sem.size))
    sem_pred = np.where(rng.random(sem.size) < 0.1, rng.integers(num_classes, size=sem.size), sem_pred)
    probabilities = rng.dirichlet(np.ones(num_classes), sem.size)
    probabilities = np.round(probabilities, 1)  # ties among confidences
    table = metrics.instance_table(pred, sem_pred, probabilities)
    return sem, ins, pred, table


@pytest.mark.parametrize("seed", range(12))
def test_instance_ap_equals_a_brute_force_scoring_of_the_written_submission_files(seed, tmp_path):
    rng = np.random.default_rng(seed)
    num_classes = 4
    instance_classes = [0, 1, 3] if seed % 2 else [0, 1, 2, 3]
    label_ids = [5, 7, 11, 40]
    ap = InstanceAP(num_classes, instance_classes)
    items = []
    for k in range(rng.integers(1, 5)):
        sem, ins, pred, table = random_item(rng, num_classes)
        ap.add_item(sem, ins, pred, table)
        metrics.write_benchmark_instances(tmp_path, f"scene_{k}", pred, table, sem, ins, label_ids, instance_classes)
        items.append(f"scene_{k}")
    expected = reference.score_folder(tmp_path, items, [label_ids[c] for c in instance_classes])
    ours = ap.average_precisions()
    for c in instance_classes:
        np.testing.assert_allclose(ours[c], expected[label_ids[c]], rtol=0, atol=1e-12)
    result = ap.result()
    for ours_value, theirs in zip((result["AP"], result["AP50"], result["AP25"]), reference.averages(expected)):
        assert (ours_value is None and theirs is None) or ours_value == pytest.approx(theirs, abs=1e-12)


def test_the_brute_force_reads_what_the_benchmark_script_reads(tmp_path):
    """Format of the written files: list lines, 0/1 masks of one line a point, ground-truth ids."""
    item = Item()
    item.pred(0, 0.25, item.gt(0, 3))
    item.gt(1, 2)
    item.ignored(1)
    table = item.table()
    metrics.write_benchmark_instances(tmp_path, "room", item.ins_pred, table, item.sem_gt, item.ins_gt, [1, 2], [0, 1])
    assert (tmp_path / "instances" / "room.txt").read_text() == "pred_mask/room_0.txt 1 0.25\n"
    assert (tmp_path / "instances" / "pred_mask" / "room_0.txt").read_text() == "1\n1\n1\n0\n0\n0\n"
    assert (tmp_path / "instances_gt" / "room.txt").read_text() == "1001\n1001\n1001\n2001\n2001\n0\n"


def test_stale_masks_of_an_item_are_removed_and_other_items_kept(tmp_path):
    masks = tmp_path / "instances" / "pred_mask"
    masks.mkdir(parents=True)
    for name in ("room_7.txt", "room_1_3.txt", "room_x.txt"):
        (masks / name).write_text("0\n")
    item = Item()
    item.pred(0, 0.5, item.gt(0, 2))
    metrics.write_benchmark_instances(tmp_path, "room", item.ins_pred, item.table(), item.sem_gt, item.ins_gt, [1], [0])
    assert sorted(p.name for p in masks.iterdir()) == ["room_0.txt", "room_1_3.txt", "room_x.txt"]


def test_more_than_999_instances_of_a_class_cannot_be_written():
    sem = np.zeros(1000, np.int64)
    with pytest.raises(MetricsError, match="more than 999 instances"):
        metrics.benchmark_gt_ids(sem, np.arange(1000), [1], [0], where="room")


# ------------------------------------------------------------------------ the instance table


def test_instance_table_takes_the_most_frequent_class_and_the_mean_probability_of_it():
    rng = np.random.default_rng(0)
    ins = rng.integers(-1, 6, 500)
    sem = rng.integers(0, 3, 500)
    probabilities = rng.dirichlet(np.ones(3), 500)
    table = metrics.instance_table(ins, sem, probabilities)
    assert table.ids.tolist() == sorted(set(ins.tolist()) - {-1})
    for i, c, q, n in zip(table.ids, table.classes, table.confidences, table.points):
        members = ins == i
        counts = np.bincount(sem[members], minlength=3)
        assert c == int(np.flatnonzero(counts == counts.max())[0])  # ties to the lowest class
        assert n == members.sum()
        assert q == pytest.approx(np.mean(probabilities[members, c]), rel=1e-12)


def test_instance_lists_round_trip_exactly_and_a_list_not_matching_its_points_is_one_line(tmp_path):
    table = InstanceTable(np.array([0, 4]), np.array([2, 1]), np.array([1 / 3, 0.123456789012345]), np.array([2, 1]))
    path = tmp_path / "room_instances.txt"
    metrics.write_instance_list(path, table)
    back = metrics.read_instance_list(path)
    for a, b in zip(table, back):
        np.testing.assert_array_equal(a, b)
    ins = np.array([0, 4, 0])
    metrics.check_instance_table(back, ins, 3, str(path))
    with pytest.raises(MetricsError, match=r"room_instances.txt: the instance list does not match its point file: "
                                           r"instance 0 lists 2 points, the point file holds 3"):
        metrics.check_instance_table(back, np.array([0, 4, 0, 0]), 3, str(path))
    with pytest.raises(MetricsError, match="instance 7 of the points is not listed"):
        metrics.check_instance_table(back, np.array([0, 4, 0, 7]), 3, str(path))
    with pytest.raises(MetricsError, match="instance 4 holds no point"):
        metrics.check_instance_table(back, np.array([0, 0]), 3, str(path))
    path.write_text("# id class confidence points\n0 2 0.5\n")
    with pytest.raises(MetricsError, match=r"room_instances.txt:2: expected `id class confidence points`"):
        metrics.read_instance_list(path)


# ----------------------------------------------------------------------------- the Evaluator


def evaluator_of(items, num_classes=4, split=None):
    evaluators = [Evaluator(num_classes), Evaluator(num_classes)]
    for k, (sem, ins, pred, table) in enumerate(items):
        target = evaluators[1] if split is not None and k >= split else evaluators[0]
        target.add_room(sem, ins, sem, pred, where=f"room {k}", instances=table)
    return evaluators


def test_evaluator_results_carry_ap_and_merge_and_round_trip_through_json():
    rng = np.random.default_rng(3)
    items = [random_item(rng, 4, with_ignored=False) for _ in range(5)]
    whole, _ = evaluator_of(items)
    result = whole.result()
    assert {"AP", "AP50", "AP25"} <= set(result) and result["AP50"] is not None
    assert len(result["per_class"]["ap"]) == 4
    first_part, second_part = evaluator_of(items, split=2)
    merged = Evaluator.from_result(json.loads(json.dumps(first_part.result())))
    merged.merge(Evaluator.from_result(json.loads(json.dumps(second_part.result()))))
    again = merged.result()
    for key in ("AP", "AP50", "AP25"):
        assert again[key] == result[key]
    assert again["per_class"]["ap"] == result["per_class"]["ap"]
    table = metrics.format_table(result)
    assert "AP50" in table.splitlines()[0] and "ScanNet benchmark's rules" in table


def test_evaluator_without_instance_tables_has_no_ap():
    evaluator = Evaluator(2)
    evaluator.add_room([0, 1], [0, 1], [0, 1], [0, 1])
    result = evaluator.result()
    assert result["AP"] is None and result["per_class"]["ap25"] == [None, None]
    assert "not computed" in metrics.format_table(result)


def test_evaluating_output_files_reads_the_instance_lists_beside_them(tmp_path):
    rng = np.random.default_rng(5)
    sem, ins, pred, table = random_item(rng, 13, with_ignored=False)
    xyz = rng.random((sem.size, 3))
    metrics.write_room_outputs(tmp_path / "r_pred.txt", tmp_path / "r_gt.txt", xyz, np.zeros((sem.size, 3)),
                               np.full(sem.size, 0.5), sem, pred, sem, ins)
    (tmp_path / "output_filelist.txt").write_text("r_pred.txt\n")
    assert metrics.evaluate_filelist(tmp_path / "output_filelist.txt")["AP"] is None
    metrics.write_instance_list(tmp_path / "r_instances.txt", table)
    expected = Evaluator(13).add_room(sem, ins, sem, pred, instances=table).result()
    result = metrics.evaluate_filelist(tmp_path / "output_filelist.txt")
    assert (result["AP"], result["AP50"], result["AP25"]) == (expected["AP"], expected["AP50"], expected["AP25"])
    shifted = table._replace(points=table.points + np.eye(table.ids.size, dtype=np.int64)[0])
    metrics.write_instance_list(tmp_path / "r_instances.txt", shifted)
    with pytest.raises(MetricsError, match="r_instances.txt .for r_pred.txt.: the instance list does not match"):
        metrics.evaluate_filelist(tmp_path / "output_filelist.txt")


def test_thresholds_are_the_benchmarks():
    assert len(metrics.AP_THRESHOLDS) == 10 and metrics.AP_THRESHOLDS[-1] == 0.25
    np.testing.assert_array_equal(metrics.AP_THRESHOLDS[:9], np.arange(0.5, 0.95, 0.05))
    assert not any(math.isclose(t, 0.95) for t in metrics.AP_THRESHOLDS)
