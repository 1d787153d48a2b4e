"""A brute-force scorer of instance AP written from the rules of the ScanNet benchmark's
`evaluate_semantic_instance.py`, the reference for `jsnet_tf.metrics.InstanceAP`.

It reads the benchmark's submission files as the official script does (a list file per item of
`<mask path> <label id> <confidence>` lines, 0/1 mask files, ground-truth ids `label * 1000 +
instance + 1`), holds every instance as a boolean point mask, counts every intersection with
np.count_nonzero, walks the matches with plain loops over dicts and builds each precision-recall
curve point by point. It shares no code with jsnet_tf.metrics (it never sees our arrays: only the
files our writer produced, or ones a test wrote by hand).
"""

import math
import pathlib

import numpy as np

OVERLAPS = list(np.arange(0.5, 0.95, 0.05)) + [0.25]
MIN_REGION = 100


def read_item(pred_list, gt_file):
    """(gt ids, [(mask, label id, confidence), ...]) of one item's files."""
    gt_ids = np.array([int(line) for line in pathlib.Path(gt_file).read_text().splitlines()], np.int64)
    predictions = []
    folder = pathlib.Path(pred_list).parent
    for line in pathlib.Path(pred_list).read_text().splitlines():
        if not line.strip():
            continue
        relative, label, confidence = line.split(" ")
        mask = np.array([int(v) for v in (folder / relative).read_text().splitlines()]) != 0
        predictions.append((mask, int(float(label)), float(confidence)))
    return gt_ids, predictions


def match_item(gt_ids, predictions, valid_labels):
    """Per label: ground-truth dicts (with the predictions touching them) and prediction dicts
    (with the ground truths they touch)."""
    gt = {label: [] for label in valid_labels}
    for value in np.unique(gt_ids):
        if value == 0 or value // 1000 not in valid_labels:
            continue
        gt[value // 1000].append({"id": int(value), "count": int(np.count_nonzero(gt_ids == value)), "preds": []})
    void = np.array([value // 1000 not in valid_labels for value in gt_ids])
    preds = {label: [] for label in valid_labels}
    for number, (mask, label, confidence) in enumerate(predictions):
        if label not in valid_labels:
            continue
        count = int(np.count_nonzero(mask))
        if count < MIN_REGION:
            continue
        pred = {"number": number, "count": count, "confidence": confidence,
                "void": int(np.count_nonzero(void & mask)), "gts": []}
        for g in gt[label]:
            common = int(np.count_nonzero((gt_ids == g["id"]) & mask))
            if common > 0:
                g["preds"].append((pred, common))
                pred["gts"].append((g, common))
        preds[label].append(pred)
    return gt, preds


def average_precision(scores, true, hard_false_negatives):
    """The precision-recall points at each distinct score (those at or above it), then (0, 1),
    integrated with the steps 0.5 * (r[i-1] - r[i+1])."""
    if not scores:
        return 0.0
    thresholds = sorted(set(scores))
    precision, recall = [], []
    total_true = sum(true)
    for threshold in thresholds:
        tp = sum(t for s, t in zip(scores, true) if s >= threshold)
        fp = sum(1 - t for s, t in zip(scores, true) if s >= threshold)
        below_true = total_true - tp
        fn = below_true + hard_false_negatives
        precision.append(tp / (tp + fp))
        recall.append(tp / (tp + fn))
    precision.append(1.0)
    recall.append(0.0)
    ap = 0.0
    for i in range(len(recall)):
        before = recall[i - 1] if i > 0 else recall[0]
        after = recall[i + 1] if i + 1 < len(recall) else 0.0
        ap += precision[i] * 0.5 * (before - after)
    return ap


def score(items, valid_labels):
    """{label: [AP at each of OVERLAPS]} (nan: no ground truth) of `items` [(gt ids, predictions)]."""
    matched = [match_item(gt_ids, predictions, valid_labels) for gt_ids, predictions in items]
    result = {}
    for label in valid_labels:
        values = []
        for overlap in OVERLAPS:
            taken = set()
            scores, true = [], []
            misses = 0
            has_gt = has_pred = False
            for item, (gt, preds) in enumerate(matched):
                big = [g for g in gt[label] if g["count"] >= MIN_REGION]
                has_gt |= bool(big)
                has_pred |= bool(preds[label])
                for g in big:
                    best = None
                    for pred, common in g["preds"]:
                        if (item, pred["number"]) in taken:
                            continue
                        if common / (g["count"] + pred["count"] - common) > overlap:
                            if best is None:
                                best = pred["confidence"]
                                taken.add((item, pred["number"]))
                            else:
                                scores.append(min(best, pred["confidence"]))
                                true.append(0)
                                best = max(best, pred["confidence"])
                    if best is None:
                        misses += 1
                    else:
                        scores.append(best)
                        true.append(1)
                for pred in preds[label]:
                    if any(common / (g["count"] + pred["count"] - common) > overlap for g, common in pred["gts"]):
                        continue
                    ignored = pred["void"] + sum(common for g, common in pred["gts"] if g["count"] < MIN_REGION)
                    if ignored / pred["count"] <= overlap:
                        scores.append(pred["confidence"])
                        true.append(0)
            if has_gt and has_pred:
                values.append(average_precision(scores, true, misses))
            elif has_gt:
                values.append(0.0)
            else:
                values.append(math.nan)
        result[label] = values
    return result


def averages(per_label):
    """(AP, AP50, AP25): means over the labels and thresholds with a value."""
    def mean(values):
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else None

    return (mean([v for values in per_label.values() for v in values[:9]]),
            mean([values[0] for values in per_label.values()]),
            mean([values[9] for values in per_label.values()]))


def score_folder(out_dir, items, valid_labels):
    """Scores the submission files of `items` written under `out_dir` (instances/, instances_gt/)."""
    out_dir = pathlib.Path(out_dir)
    loaded = [read_item(out_dir / "instances" / f"{item}.txt", out_dir / "instances_gt" / f"{item}.txt") for item in items]
    return score(loaded, valid_labels)
