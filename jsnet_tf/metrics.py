"""The paper's seven S3DIS metrics, from arrays or from the original's per-room output files.

A port of the original evaluator (models/JISS/eval_iou_accuracy.py), vectorised: the numbers are
the same on normal inputs. NumPy only.

Semantic, over all points of all rooms (from a C x C confusion matrix):
  oAcc = correct points / points; per class acc = correct / ground-truth points of the class and
  IoU = correct / (ground-truth + predicted - correct points); mAcc, mIoU their means.

Instance, per room, exactly as the original counts them:
  - a predicted instance is the set of points sharing one id of `ins_pred`, except -1 (no
    instance); a ground-truth instance is the set of points sharing one id of `ins_gt`, every id
    counting (-1 included, which S3DIS ground truth never has);
  - an instance's class is the most frequent class of its points (`sem_pred` for predicted
    instances, `sem_gt` for ground-truth ones), the lowest class on a tie (as scipy.stats.mode);
  - instances are only compared with instances of the same class, by IoU of their point sets;
  - Cov of a room and class = mean over its ground-truth instances of the best IoU with a predicted
    instance (0 if none); WCov = the same weighted by ground-truth instance size;
  - a predicted instance is a true positive when its best IoU with a ground-truth instance is at
    least 0.5, without one-to-one matching: predictions are disjoint, so two of them can only
    match one ground-truth instance if each is exactly half of it; both then count (and recall
    can exceed 1), as in the original.
Over the rooms: per class, Cov and WCov are the mean over the rooms that hold ground truth of the
class of the room's value (the original averages per room, not per instance); precision = true
positives / predicted instances and recall = true positives / ground-truth instances, counted over
all rooms. mCov, mWCov, mPrec and mRec are their means over the classes.

Undefined values: where the original divides by zero (a class with no ground-truth points: acc;
neither ground-truth nor predicted points: IoU; no ground-truth instance: Cov, WCov, recall; no
predicted instance: precision) it gets nan and a nan mean. Here such a per-class value is None in
`result()` and the means are taken over the classes whose value is defined (so they equal the
original's whenever the original's are not nan). A class predicted but absent from the ground
truth has IoU 0 and counts in mIoU, as in the original. A mean over no class is None.

Instance AP (beyond the paper; what every instance-segmentation paper since 2020 reports):
`InstanceAP` computes AP (IoU 0.50:0.90), AP50 and AP25 by the rules of the ScanNet benchmark's
evaluate_semantic_instance.py (AP_RULES; the class docstring lists them). It needs a confidence for
every predicted instance: `instance_table` gives each instance the most frequent predicted class
of its points and, as confidence, the mean over its points of the softmax probability of that class
(CONFIDENCE_RULE). `Evaluator.add_room(..., instances=table)` adds a room to both, and
`result()` holds AP, AP50 and AP25 beside the seven metrics. `write_benchmark_instances` writes an
item in the benchmark's submission format (instances/<item>.txt, instances/pred_mask/, and
instances_gt/<item>.txt), which the official script scores directly; `write_instance_list` the
item's `<room>_instances.txt` (id class confidence points) beside its `_pred.txt`.

6-fold: the original has no aggregation code (its README: "6 fold CV can be conducted in a similar
way"); its evaluator run over the union of the six areas' test rooms gives the 6-fold numbers, and
so does `Evaluator.merge` of the six areas' evaluators, or `evaluate_filelist` given the six lists.

Files (written by the original's test.py and by `write_room_outputs`): `<room>_pred.txt` holds
`x y z r g b score sem ins` a line ('%f %f %f %d %d %d %f %d %d'), `<room>_gt.txt` `sem ins`
('%d %d'), and `output_filelist.txt` one `_pred.txt` path a line. They are parsed by vectorised
byte arithmetic when written in that canonical shape (single spaces, '\\n' line ends, '%d' and '%f'
numbers), and line by line otherwise (any whitespace, blank lines, exponents), which also names the
first bad line of a malformed file. `read_room_outputs` parses every column; the evaluation reads
the label columns and checks only the shape of the others (field count, characters), as their
values do not enter the metrics.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jsnet_tf.errors import UserError
from jsnet_tf.files import AtomicTarget

__all__ = [
    "AP_MIN_POINTS", "AP_THRESHOLDS", "Evaluator", "IOU_THRESHOLD", "InstanceAP", "InstanceTable", "MetricsError",
    "RoomOutputs", "benchmark_gt_ids", "check_instance_table", "evaluate_filelist", "format_table",
    "gt_path_for", "instance_table", "read_instance_list", "read_room_outputs", "write_benchmark_instances",
    "write_instance_list", "write_room_outputs",
]

IOU_THRESHOLD = 0.5
# The ScanNet benchmark's IoU thresholds, computed as evaluate_semantic_instance.py computes them
# (np.arange(0.5, 0.95, 0.05) and 0.25), so that the strict comparisons see the same float values.
AP_THRESHOLDS = np.append(np.arange(0.5, 0.95, 0.05), 0.25)
AP_MIN_POINTS = 100  # the benchmark's minimum region size: smaller instances are left out

PRED_LAYOUT = ("x", "y", "z", "r", "g", "b", "score", "sem", "ins")
GT_LAYOUT = ("sem", "ins")
PRED_KINDS = "fffiiifii"  # f: '%f' float, i: '%d' integer
GT_KINDS = "ii"
PRED_SUFFIX = "_pred.txt"
GT_SUFFIX = "_gt.txt"

# Above this many (ground-truth x predicted) instance pairs per point, overlaps are counted with
# np.unique on the pair keys instead of a dense bincount table.
_DENSE_PAIRS_PER_POINT = 4


class MetricsError(UserError, ValueError):
    """Bad evaluation input: the message names the file or argument and the problem."""


# ------------------------------------------------------------------------------------- evaluation


def _dense_ids(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """(ids renumbered 0..count-1 in increasing order of value, count)."""
    if ids.size == 0:
        return np.zeros(0, np.intp), 0
    low, high = int(ids.min()), int(ids.max())
    if high - low < max(4 * ids.size, 1 << 16):
        offsets = ids - low
        present = np.zeros(high - low + 1, bool)
        present[offsets] = True
        renumber = np.cumsum(present) - 1
        return renumber[offsets], int(renumber[-1]) + 1
    unique, inverse = np.unique(ids, return_inverse=True)
    return inverse.reshape(-1), len(unique)


def _instances(ids: np.ndarray, sem: np.ndarray, num_classes: int):
    """(instance index of every point, class of every instance, size of every instance)."""
    index, count = _dense_ids(ids)
    votes = np.bincount(index * num_classes + sem, minlength=count * num_classes)
    votes = votes.reshape(count, num_classes)
    return index, votes.argmax(axis=1), votes.sum(axis=1)


def _overlaps(gt_index, pred_index, num_gt, num_pred):
    """(gt instance, pred instance, points in common) for every pair that shares points."""
    keys = gt_index.astype(np.int64) * num_pred + pred_index
    if keys.size == 0:
        return keys, keys, keys
    if num_gt * num_pred <= _DENSE_PAIRS_PER_POINT * max(keys.size, 1 << 16):
        counts = np.bincount(keys, minlength=num_gt * num_pred)
        keys = np.flatnonzero(counts)
        counts = counts[keys]
    else:
        keys, counts = np.unique(keys, return_counts=True)
    return keys // num_pred, keys % num_pred, counts


def _ratio(numerator, denominator) -> np.ndarray:
    """numerator / denominator as float64, nan where the denominator is 0 (without a warning)."""
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _labels(name: str, values, where: str, size: int | None = None) -> np.ndarray:
    """values as a flat int64 array (integer-valued floats accepted)."""
    array = np.asarray(values)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                   or np.issubdtype(array.dtype, np.floating)):
        raise MetricsError(f"{where}: {name} must hold integer labels, got dtype {array.dtype}")
    array = array.reshape(-1)
    if size is not None and array.size != size:
        raise MetricsError(f"{where}: {name} has {array.size} points, expected {size}")
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            i = int(np.argmax(bad))
            raise MetricsError(f"{where}: {name} holds {float(array[i])} at point {i}, "
                               "not an integer")
    return array.astype(np.int64)


def _check_classes(name: str, labels: np.ndarray, num_classes: int, where: str,
                   in_file: bool = False) -> None:
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        at = f"on data line {i + 1}" if in_file else f"at point {i}"
        raise MetricsError(f"{where}: {name} {labels[i]} {at} is outside the classes "
                           f"0..{num_classes - 1}")


class Evaluator:
    """Accumulates the metrics over rooms, one room at a time, without keeping their points.

    `add_room` adds a room's labels, `merge` another evaluator's rooms (e.g. the six areas of a
    6-fold run), `result()` the metrics as a JSON-serialisable dict, and `from_result` rebuilds an
    evaluator from such a dict (its "counts"), so that saved per-area results can be merged later.

    Rooms added with their predicted instances' table (`instances=`, see `instance_table`) also
    count for the instance AP, AP50 and AP25 of the ScanNet benchmark (`InstanceAP`, over
    `instance_classes`, default all classes); `result()` holds them when every room had its table.
    """

    def __init__(self, num_classes: int = 13, class_names: Sequence[str] | None = None,
                 instance_classes: Sequence[int] | None = None, ap_min_points: int = AP_MIN_POINTS,
                 ignore_label: int | None = None):
        if int(num_classes) < 1:
            raise MetricsError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        if class_names is None:
            class_names = [f"class_{c}" for c in range(self.num_classes)]
        if len(class_names) != self.num_classes:
            raise MetricsError(f"class_names has {len(class_names)} names for "
                               f"{self.num_classes} classes")
        self.class_names = [str(name) for name in class_names]
        c = self.num_classes
        self.num_rooms = 0
        self.confusion = np.zeros((c, c), np.int64)   # [ground truth, prediction] point counts
        self.gt_instances = np.zeros(c, np.int64)
        self.pred_instances = np.zeros(c, np.int64)
        self.true_positives = np.zeros(c, np.int64)
        self.cov_rooms = np.zeros(c, np.int64)       # rooms holding a ground-truth instance
        self.cov_sum = np.zeros(c, np.float64)       # sum over those rooms of the room's Cov
        self.wcov_sum = np.zeros(c, np.float64)      # ... and of its WCov
        self.ap = InstanceAP(c, instance_classes, ap_min_points)
        self.ap_rooms = 0                             # rooms added with their instance table
        # The classes with instances: the instance metrics are over them (default all).
        self.instance_classes = list(self.ap.instance_classes)
        self.ignore_label = None if ignore_label is None else int(ignore_label)

    def add_room(self, sem_gt, ins_gt, sem_pred, ins_pred, where: str = "room",
                 instances: InstanceTable | None = None) -> Evaluator:
        """Adds one room: four arrays of per-point integer labels of the same length.

        sem_* are classes in 0..num_classes-1; ins_* arbitrary integer ids (-1 in ins_pred: no
        instance). With an `ignore_label` (ScanNet's -1: unannotated points), points whose sem_gt is
        it are left out of every metric but the AP (which counts them as the benchmark does), and
        ins_gt -1 is no instance. `instances`: the table of the predicted instances (ids, classes,
        confidences, points; checked against ins_pred), for the instance AP. `where` names the room
        in error messages.
        """
        c = self.num_classes
        sem_gt = _labels("sem_gt", sem_gt, where)
        size = sem_gt.size
        ins_gt = _labels("ins_gt", ins_gt, where, size)
        sem_pred = _labels("sem_pred", sem_pred, where, size)
        ins_pred = _labels("ins_pred", ins_pred, where, size)
        _check_classes("sem_pred", sem_pred, c, where)
        if instances is not None:
            self.ap.add_item(np.where(sem_gt == self.ignore_label, -1, sem_gt), ins_gt, ins_pred, instances, where)
            self.ap_rooms += 1
        if self.ignore_label is not None:
            kept = sem_gt != self.ignore_label
            sem_gt, ins_gt, sem_pred, ins_pred = sem_gt[kept], ins_gt[kept], sem_pred[kept], ins_pred[kept]
        _check_classes("sem_gt", sem_gt, c, where)

        self.confusion += np.bincount(sem_gt * c + sem_pred, minlength=c * c).reshape(c, c)

        gt_index, gt_class, gt_size = _instances(ins_gt, sem_gt, c)
        if self.ignore_label is not None:  # ins_gt -1 is no instance: its points match nothing
            none = np.flatnonzero(np.unique(ins_gt) == -1)
            gt_class = gt_class.copy()
            gt_class[none] = -1
        predicted = ins_pred != -1
        pred_index, pred_class, pred_size = _instances(ins_pred[predicted], sem_pred[predicted], c)
        g, p, common = _overlaps(gt_index[predicted], pred_index, gt_size.size, pred_size.size)
        same = gt_class[g] == pred_class[p]
        g, p, common = g[same], p[same], common[same]
        iou = common / (gt_size[g] + pred_size[p] - common)
        best_for_gt = np.zeros(gt_size.size)
        np.maximum.at(best_for_gt, g, iou)
        best_for_pred = np.zeros(pred_size.size)
        np.maximum.at(best_for_pred, p, iou)

        # Only instance classes count (e.g. not ScanNet's wall and floor).
        counted = np.zeros(c, bool)
        counted[self.instance_classes] = True
        is_gt = gt_class >= 0
        is_gt[is_gt] = counted[gt_class[is_gt]]
        gt_class, gt_size, best_for_gt = gt_class[is_gt], gt_size[is_gt], best_for_gt[is_gt]
        is_pred = counted[pred_class]
        pred_class, best_for_pred = pred_class[is_pred], best_for_pred[is_pred]

        gt_count = np.bincount(gt_class, minlength=c)
        held = gt_count > 0
        cov = np.bincount(gt_class, best_for_gt, minlength=c)
        wcov = np.bincount(gt_class, best_for_gt * gt_size, minlength=c)
        gt_points = np.bincount(gt_class, gt_size.astype(np.float64), minlength=c)
        self.cov_sum[held] += cov[held] / gt_count[held]
        self.wcov_sum[held] += wcov[held] / gt_points[held]
        self.cov_rooms += held
        self.gt_instances += gt_count
        self.pred_instances += np.bincount(pred_class, minlength=c)
        self.true_positives += np.bincount(pred_class[best_for_pred >= IOU_THRESHOLD], minlength=c)
        self.num_rooms += 1
        return self

    def add_room_files(self, pred_path, gt_path=None) -> Evaluator:
        """Adds the room of a `<room>_pred.txt` file and its `<room>_gt.txt` (derived if None)."""
        pred_path = Path(pred_path)
        gt_path = gt_path_for(pred_path) if gt_path is None else Path(gt_path)
        sem_pred, ins_pred = _read_table(pred_path, PRED_LAYOUT, PRED_KINDS, wanted=(7, 8))
        sem_gt, ins_gt = _read_table(gt_path, GT_LAYOUT, GT_KINDS, wanted=(0, 1))
        _check_same_length(pred_path, sem_pred.size, gt_path, sem_gt.size)
        _check_classes("sem", sem_pred, self.num_classes, str(pred_path), in_file=True)
        _check_classes("sem", sem_gt, self.num_classes, str(gt_path), in_file=True)
        listed = instance_list_path_for(pred_path)
        instances = None
        if listed.exists():  # ours; the original's test.py wrote none (no AP then)
            instances = check_instance_table(read_instance_list(listed), ins_pred, self.num_classes,
                                             f"{listed} (for {pred_path.name})")
        return self.add_room(sem_gt, ins_gt, sem_pred, ins_pred, where=str(pred_path), instances=instances)

    def add_filelist(self, filelist, base_dir=None) -> Evaluator:
        """Adds every room listed in an `output_filelist.txt` (see `evaluate_filelist`)."""
        for pred_path in _listed_rooms(filelist, base_dir):
            self.add_room_files(pred_path)
        return self

    def merge(self, other: Evaluator) -> Evaluator:
        """Adds the rooms of another evaluator (same classes) to this one."""
        if (other.num_classes, other.instance_classes, other.ignore_label) != (
                self.num_classes, self.instance_classes, self.ignore_label):
            raise MetricsError(f"cannot merge an evaluator of {other.num_classes} classes (instance classes "
                               f"{other.instance_classes}, ignored label {other.ignore_label}) into one of "
                               f"{self.num_classes} (instance classes {self.instance_classes}, ignored label "
                               f"{self.ignore_label})")
        for name in ("confusion", "gt_instances", "pred_instances", "true_positives",
                     "cov_rooms", "cov_sum", "wcov_sum"):
            getattr(self, name)[...] += getattr(other, name)
        self.ap.merge(other.ap)
        self.ap_rooms += other.ap_rooms
        self.num_rooms += other.num_rooms
        return self

    def result(self) -> dict:
        """The metrics (as fractions; None where undefined) and the counts behind them."""
        confusion = self.confusion
        correct = np.diag(confusion)
        gt_points, pred_points = confusion.sum(axis=1), confusion.sum(axis=0)
        per_class = {
            "acc": _ratio(correct, gt_points),
            "iou": _ratio(correct, gt_points + pred_points - correct),
            "cov": _ratio(self.cov_sum, self.cov_rooms),
            "wcov": _ratio(self.wcov_sum, self.cov_rooms),
            "precision": _ratio(self.true_positives, self.pred_instances),
            "recall": _ratio(self.true_positives, self.gt_instances),
        }
        means = {"mAcc": "acc", "mIoU": "iou", "mCov": "cov", "mWCov": "wcov",
                 "mPrec": "precision", "mRec": "recall"}
        total = int(confusion.sum())
        with_ap = 0 < self.ap_rooms == self.num_rooms  # AP only where every room had its instances
        ap = self.ap.result() if with_ap else {
            "AP": None, "AP50": None, "AP25": None, "per_class": {k: [None] * self.num_classes for k in ("ap", "ap50", "ap25")},
        }
        return {
            "oAcc": float(correct.sum() / total) if total else None,
            **{key: _mean(per_class[name]) for key, name in means.items()},
            "AP": ap["AP"],
            "AP50": ap["AP50"],
            "AP25": ap["AP25"],
            "class_names": list(self.class_names),
            "per_class": {**{name: _nullable(values) for name, values in per_class.items()}, **ap["per_class"]},
            "instance_ap": {**self.ap.settings(), "rooms": self.ap_rooms} if with_ap else
                           {"rooms": self.ap_rooms, "note": "not computed: rooms without predicted instance tables"},
            "instance_classes": list(self.instance_classes),
            "ignore_label": self.ignore_label,
            "num_rooms": self.num_rooms,
            "num_points": total,
            "counts": {
                "confusion": confusion.tolist(),
                "gt_instances": self.gt_instances.tolist(),
                "pred_instances": self.pred_instances.tolist(),
                "true_positives": self.true_positives.tolist(),
                "cov_rooms": self.cov_rooms.tolist(),
                "cov_sum": self.cov_sum.tolist(),
                "wcov_sum": self.wcov_sum.tolist(),
                "ap_rooms": self.ap_rooms,
                "ap": self.ap.counts(),
            },
        }

    @classmethod
    def from_result(cls, result: dict) -> Evaluator:
        """The evaluator whose `result()` is `result` (e.g. read back from a metrics JSON)."""
        try:
            counts = result["counts"]
            evaluator = cls(len(result["class_names"]), result["class_names"], result.get("instance_classes"),
                            ignore_label=result.get("ignore_label"))
            c = evaluator.num_classes
            evaluator.confusion[...] = np.asarray(counts["confusion"], np.int64).reshape(c, c)
            for name in ("gt_instances", "pred_instances", "true_positives", "cov_rooms"):
                getattr(evaluator, name)[...] = np.asarray(counts[name], np.int64).reshape(c)
            for name in ("cov_sum", "wcov_sum"):
                getattr(evaluator, name)[...] = np.asarray(counts[name], np.float64).reshape(c)
            evaluator.num_rooms = int(result["num_rooms"])
            if "ap" in counts:
                evaluator.ap = InstanceAP.from_counts(c, counts["ap"])
                evaluator.ap_rooms = int(counts["ap_rooms"])
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise MetricsError(f"not an evaluation result with counts: {e!r}") from None
        return evaluator


def _mean(values: np.ndarray) -> float | None:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else None


def _nullable(values: np.ndarray) -> list:
    return [None if np.isnan(v) else float(v) for v in values]


# ------------------------------------------------------------------------------------ instance AP

_AP_RANGE = ~np.isclose(AP_THRESHOLDS, 0.25)  # AP: 0.50, 0.55, ..., 0.90
_AP50 = int(np.flatnonzero(np.isclose(AP_THRESHOLDS, 0.5))[0])
_AP25 = int(np.flatnonzero(np.isclose(AP_THRESHOLDS, 0.25))[0])
AP_RULES = (
    "instance AP by the ScanNet benchmark's evaluate_semantic_instance.py rules: IoU thresholds "
    "0.50:0.05:0.90 (AP) and 0.25 (AP25); a match needs IoU strictly above the threshold and the same "
    "class; ground-truth and predicted instances under the minimum size left out; a ground truth "
    "matched twice makes the lower-confidence prediction a false positive; an unmatched prediction "
    "whose share of ignored points exceeds the threshold is not a false positive; precision-recall "
    "points per distinct confidence plus (recall 0, precision 1), no envelope, integrated by recall "
    "steps; a class with ground truth but no prediction scores 0, a class without ground truth is "
    "left out of the means"
)
CONFIDENCE_RULE = (
    "an instance's class is the most frequent predicted class of its points; its confidence is the "
    "mean over its points of the softmax probability of that class"
)


class InstanceTable(NamedTuple):
    """The predicted instances of one item (room, scene, shape), a row each, ids ascending."""

    ids: np.ndarray          # (K,) int64 instance ids, as in the per-point predictions
    classes: np.ndarray      # (K,) int64 class of each instance
    confidences: np.ndarray  # (K,) float64 in [0, 1]
    points: np.ndarray       # (K,) int64 points (rows) of each instance


def instance_table(ins_pred, sem_pred, probabilities, where: str = "item", num_classes=None) -> InstanceTable:
    """The instances of an item's predictions with a class and a confidence each (CONFIDENCE_RULE):
    the points sharing an id of `ins_pred` (-1: no instance) form an instance; its class is the most
    frequent of their `sem_pred` classes (ties to the lowest, as `Evaluator` counts); its confidence
    is the mean over its points of `probabilities[:, class]` ((N, C) softmax probabilities), the
    score bottom-up methods without a score head give their instances (Pointcept's PointGroup).

    For clouds whose (N, C) probabilities are not held whole, `probabilities` may be a function
    `(rows, classes) -> probabilities[rows, classes]`; `num_classes` then says C."""
    if callable(probabilities):
        if num_classes is None:
            raise MetricsError(f"{where}: give num_classes with a function of the probabilities")
        size, pick = len(ins_pred), probabilities
    else:
        probabilities = np.asarray(probabilities)
        if probabilities.ndim != 2 or probabilities.shape[1] < 1:
            raise MetricsError(f"{where}: probabilities must have shape (N, C), got {probabilities.shape}")
        size, num_classes = probabilities.shape

        def pick(rows, classes):
            return probabilities[rows, classes]

    ins = _labels("ins_pred", ins_pred, where, size)
    sem = _labels("sem_pred", sem_pred, where, size)
    _check_classes("sem_pred", sem, num_classes, where)
    held = np.flatnonzero(ins != -1)
    ids, index = np.unique(ins[held], return_inverse=True)
    index = index.reshape(-1)
    votes = np.bincount(index * num_classes + sem[held], minlength=ids.size * num_classes)
    votes = votes.reshape(ids.size, num_classes)
    classes = votes.argmax(axis=1) if ids.size else np.zeros(0, np.int64)
    points = votes.sum(axis=1)
    chosen = np.asarray(pick(held, classes[index])).astype(np.float64)
    confidences = np.bincount(index, chosen, minlength=ids.size) / np.maximum(points, 1)
    return InstanceTable(ids.astype(np.int64), classes.astype(np.int64), confidences, points.astype(np.int64))


def check_instance_table(table: InstanceTable, ins_pred, num_classes: int, where: str) -> InstanceTable:
    """`table` as int64 / float64 arrays, checked against the per-point ids it describes: one row
    per id of `ins_pred` (other than -1), ids ascending, the same point counts, classes in
    0..num_classes-1, confidences in [0, 1]. MetricsError naming `where` otherwise."""
    try:
        ids, classes, confidences, points = (np.asarray(column).reshape(-1) for column in table)
    except (TypeError, ValueError):
        raise MetricsError(f"{where}: not an instance list (id, class, confidence, points)") from None
    if not ids.size == classes.size == confidences.size == points.size:
        raise MetricsError(f"{where}: the instance list's columns have different lengths")
    ins = np.asarray(ins_pred).reshape(-1)
    present, counts = np.unique(ins[ins != -1], return_counts=True)
    mismatch = "does not match its point file"
    if ids.size != present.size or not np.array_equal(ids, present):
        extra = np.setdiff1d(ids, present)
        missing = np.setdiff1d(present, ids)
        detail = (f"instance {int(extra[0])} holds no point" if extra.size else
                  f"instance {int(missing[0])} of the points is not listed" if missing.size else
                  "its ids are not in ascending order")
        raise MetricsError(f"{where}: the instance list {mismatch}: {detail}")
    if not np.array_equal(points, counts):
        k = int(np.argmax(points != counts))
        raise MetricsError(f"{where}: the instance list {mismatch}: instance {int(ids[k])} lists {int(points[k])} "
                           f"points, the point file holds {int(counts[k])}")
    if ((classes < 0) | (classes >= num_classes)).any():
        k = int(np.argmax((classes < 0) | (classes >= num_classes)))
        raise MetricsError(f"{where}: instance {int(ids[k])} has class {int(classes[k])}, outside 0..{num_classes - 1}")
    confidences = confidences.astype(np.float64)
    bad = ~((confidences >= 0) & (confidences <= 1))
    if bad.any():
        k = int(np.argmax(bad))
        raise MetricsError(f"{where}: instance {int(ids[k])} has confidence {confidences[k]}, outside [0, 1]")
    return InstanceTable(ids.astype(np.int64), classes.astype(np.int64), confidences, points.astype(np.int64))


class InstanceAP:
    """Instance AP, AP50 and AP25 by the ScanNet benchmark's rules (AP_RULES), accumulated over items.

    A port of the rules of `evaluate_semantic_instance.py` (ScanNet's BenchmarkScripts/3d_evaluation),
    not of its lines. Per item, ground-truth instances are the points sharing a (class, id) pair of
    `sem_gt`, `ins_gt` whose class is one of `instance_classes` and whose id is not -1 (what the
    benchmark's `label id * 1000 + instance id + 1` encoding holds); every other point is ignored
    (unlabelled: class -1; classes without instances, e.g. ScanNet's wall and floor; id -1). Per
    class and IoU threshold t:
      - ground-truth and predicted instances of fewer than `min_points` points are left out;
      - ground-truth instances are taken in ascending id, and each is matched by the predictions of
        its class whose IoU with it is strictly above t and that no earlier ground truth took: the
        first (in the item's instance order) is marked taken; the ground truth is a true positive
        with the highest confidence among them, every other one a false positive;
      - a prediction whose IoU with no ground truth of its class (small ones included) is above t is a
        false positive unless its share of ignored points (ignored points, and points of small
        ground truths of its class) is above t;
      - unmatched ground truths count as false negatives.
    Over all items, per class and threshold: precision and recall at every distinct confidence
    (predictions at or above it), plus the point (recall 0, precision 1), integrated by recall steps
    without a monotone envelope. A class with ground truth but no kept prediction scores 0, including
    when every prediction is unmatched and ignored (the benchmark's script crashes there); a class
    without ground truth has no value. Per class, AP is the mean over 0.50:0.90, AP50 and AP25 the
    values at 0.5 and 0.25; the averages AP, AP50, AP25 are means over the classes that have a value.

    Where the benchmark's script (Python 2) takes predictions in the unspecified order of a dict, the
    order is the item's instance order (ascending id, the order of the submission file we write); it
    matters only when a prediction overlaps two ground truths above t, which needs t < 0.5.
    """

    def __init__(self, num_classes: int, instance_classes: Sequence[int] | None = None,
                 min_points: int = AP_MIN_POINTS):
        self.num_classes = int(num_classes)
        counted = range(self.num_classes) if instance_classes is None else instance_classes
        self.instance_classes = sorted({int(c) for c in counted})
        if any(not 0 <= c < self.num_classes for c in self.instance_classes):
            raise MetricsError(f"instance classes {self.instance_classes} outside 0..{self.num_classes - 1}")
        self.counted = np.zeros(self.num_classes, bool)
        self.counted[self.instance_classes] = True
        self.min_points = int(min_points)
        c, t = self.num_classes, len(AP_THRESHOLDS)
        self.num_items = 0
        self.has_gt = np.zeros(c, bool)
        self.has_pred = np.zeros(c, bool)
        self.false_negatives = np.zeros((c, t), np.int64)  # unmatched ground truths
        self._scores = [[[] for _ in range(t)] for _ in range(c)]  # confidences of the counted predictions
        self._true = [[[] for _ in range(t)] for _ in range(c)]    # 1 true positive, 0 false positive

    def add_item(self, sem_gt, ins_gt, ins_pred, instances: InstanceTable, where: str = "item") -> InstanceAP:
        """Adds one item: per point its ground-truth class (-1: ignored) and instance id (-1: none)
        and its predicted instance id (-1: none), and the predicted instances' table (`instance_table`)."""
        sem_gt = _labels("sem_gt", sem_gt, where)
        size = sem_gt.size
        ins_gt = _labels("ins_gt", ins_gt, where, size)
        ins_pred = _labels("ins_pred", ins_pred, where, size)
        bad = (sem_gt < -1) | (sem_gt >= self.num_classes)
        if bad.any():
            i = int(np.argmax(bad))
            raise MetricsError(f"{where}: sem_gt {sem_gt[i]} at point {i} is outside -1..{self.num_classes - 1}")
        table = check_instance_table(instances, ins_pred, self.num_classes, where)

        # Ground-truth instances: (class, id) pairs of the counted points, ascending.
        valid = (sem_gt >= 0) & (ins_gt >= 0)
        valid[valid] = self.counted[sem_gt[valid]]
        key_base = int(ins_gt[valid].max(initial=0)) + 1
        gt_keys, gt_index = np.unique(sem_gt[valid] * key_base + ins_gt[valid], return_inverse=True)
        gt_class, gt_size = gt_keys // key_base, np.bincount(gt_index.reshape(-1), minlength=gt_keys.size)
        gt_of_point = np.full(size, -1, np.int64)
        gt_of_point[valid] = gt_index.reshape(-1)

        # Predictions: the table's rows; those of counted classes and at least min_points points are kept.
        row_of_point = np.full(size, -1, np.int64)
        predicted = ins_pred != -1
        row_of_point[predicted] = np.searchsorted(table.ids, ins_pred[predicted])
        kept = self.counted[table.classes] & (table.points >= self.min_points)
        on_void = predicted & ~valid
        void = np.bincount(row_of_point[on_void], minlength=table.ids.size)
        both = predicted & valid
        p_pairs, g_pairs, common = _overlaps(row_of_point[both], gt_of_point[both], table.ids.size, gt_keys.size)

        for c in self.instance_classes:
            gts = np.flatnonzero(gt_class == c)
            preds = np.flatnonzero(kept & (table.classes == c))
            big = gt_size[gts] >= self.min_points
            self.has_gt[c] |= bool(big.any())
            self.has_pred[c] |= preds.size > 0
            if preds.size == 0:
                self.false_negatives[c] += int(big.sum())
                continue
            inter = np.zeros((preds.size, gts.size))
            local_p, local_g = np.full(table.ids.size, -1), np.full(gt_keys.size, -1)
            local_p[preds], local_g[gts] = np.arange(preds.size), np.arange(gts.size)
            pair = (local_p[p_pairs] >= 0) & (local_g[g_pairs] >= 0)
            inter[local_p[p_pairs[pair]], local_g[g_pairs[pair]]] = common[pair]
            pred_size = table.points[preds].astype(np.float64)
            iou = inter / (pred_size[:, None] + gt_size[gts][None, :] - inter)
            ignored = (void[preds] + inter[:, ~big].sum(axis=1)) / pred_size
            confidence = table.confidences[preds]
            for t, threshold in enumerate(AP_THRESHOLDS):
                self._add_threshold(c, t, threshold, iou, big, ignored, confidence)
        self.num_items += 1
        return self

    def _add_threshold(self, c, t, threshold, iou, big, ignored, confidence):
        above = iou > threshold
        taken = np.zeros(len(confidence), bool)
        scores, true = [], []
        for g in np.flatnonzero(big):
            candidates = np.flatnonzero(above[:, g] & ~taken)
            if candidates.size == 0:
                self.false_negatives[c, t] += 1
                continue
            taken[candidates[0]] = True
            matched = np.sort(confidence[candidates])
            scores.append(matched)
            true.append(np.arange(matched.size) == matched.size - 1)  # the highest is the true positive
        false = ~above.any(axis=1) & (ignored <= threshold)
        scores.append(confidence[false])
        true.append(np.zeros(int(false.sum()), bool))
        self._scores[c][t].append(np.concatenate(scores))
        self._true[c][t].append(np.concatenate(true))

    def merge(self, other: InstanceAP) -> InstanceAP:
        """Adds the items of another accumulator (same classes and minimum size)."""
        if (other.num_classes, other.instance_classes, other.min_points) != (
                self.num_classes, self.instance_classes, self.min_points):
            raise MetricsError("cannot merge instance AP of other classes or another minimum size")
        self.num_items += other.num_items
        self.has_gt |= other.has_gt
        self.has_pred |= other.has_pred
        self.false_negatives += other.false_negatives
        for c in range(self.num_classes):
            for t in range(len(AP_THRESHOLDS)):
                self._scores[c][t] += other._scores[c][t]
                self._true[c][t] += other._true[c][t]
        return self

    def _arrays(self, c, t):
        scores = np.concatenate(self._scores[c][t]) if self._scores[c][t] else np.zeros(0)
        true = np.concatenate(self._true[c][t]) if self._true[c][t] else np.zeros(0, bool)
        return scores.astype(np.float64), true.astype(bool)

    def average_precisions(self) -> np.ndarray:
        """(classes, thresholds) AP values, nan where a class has no value."""
        ap = np.full((self.num_classes, len(AP_THRESHOLDS)), np.nan)
        for c in self.instance_classes:
            if not self.has_gt[c]:
                continue
            for t in range(len(AP_THRESHOLDS)):
                ap[c, t] = _average_precision(*self._arrays(c, t), self.false_negatives[c, t]) if self.has_pred[c] else 0.0
        return ap

    def result(self) -> dict:
        """AP, AP50, AP25 (fractions; None without a class that has a value), per class, settings."""
        ap = self.average_precisions()
        counted = ap[self.counted]
        with np.errstate(invalid="ignore"):
            per_class = {
                "ap": _row_means(ap[:, _AP_RANGE]),
                "ap50": ap[:, _AP50],
                "ap25": ap[:, _AP25],
            }
        return {
            "AP": _mean(counted[:, _AP_RANGE].reshape(-1)),
            "AP50": _mean(counted[:, _AP50]),
            "AP25": _mean(counted[:, _AP25]),
            "per_class": {name: _nullable(values) for name, values in per_class.items()},
        }

    def settings(self) -> dict:
        return {"rules": AP_RULES, "thresholds": [float(t) for t in AP_THRESHOLDS], "min_points": self.min_points,
                "instance_classes": list(self.instance_classes), "confidence": CONFIDENCE_RULE}

    def counts(self) -> dict:
        """Everything `from_counts` needs (JSON-serialisable; confidences exact as Python floats)."""
        entries = [[self._arrays(c, t) for t in range(len(AP_THRESHOLDS))] for c in range(self.num_classes)]
        return {
            "num_items": self.num_items,
            "min_points": self.min_points,
            "instance_classes": list(self.instance_classes),
            "has_gt": self.has_gt.tolist(),
            "has_pred": self.has_pred.tolist(),
            "false_negatives": self.false_negatives.tolist(),
            "scores": [[scores.tolist() for scores, _ in row] for row in entries],
            "true": [[true.astype(int).tolist() for _, true in row] for row in entries],
        }

    @classmethod
    def from_counts(cls, num_classes: int, counts: dict) -> InstanceAP:
        ap = cls(num_classes, counts["instance_classes"], counts["min_points"])
        c, t = ap.num_classes, len(AP_THRESHOLDS)
        ap.num_items = int(counts["num_items"])
        ap.has_gt[...] = np.asarray(counts["has_gt"], bool).reshape(c)
        ap.has_pred[...] = np.asarray(counts["has_pred"], bool).reshape(c)
        ap.false_negatives[...] = np.asarray(counts["false_negatives"], np.int64).reshape(c, t)
        for i in range(c):
            for j in range(t):
                ap._scores[i][j] = [np.asarray(counts["scores"][i][j], np.float64)]
                ap._true[i][j] = [np.asarray(counts["true"][i][j], bool)]
        return ap


def _row_means(values: np.ndarray) -> np.ndarray:
    """Mean of each row, nan for a row of nan (a class without ground truth has nan throughout)."""
    return np.where(np.isnan(values).all(axis=1), np.nan, np.nan_to_num(values).mean(axis=1))


def _average_precision(scores: np.ndarray, true: np.ndarray, false_negatives: int) -> float:
    """The benchmark's AP of one class at one threshold: precision and recall of the predictions at
    or above each distinct confidence, then (recall 0, precision 1), summed with the recall steps
    0.5 * (r[i-1] - r[i+1]) (r[-1] = r[0], r[n+1] = 0). No prediction counted: 0."""
    if scores.size == 0:
        return 0.0
    order = np.argsort(scores, kind="stable")
    ranked, true = scores[order], true[order].astype(np.int64)
    below = np.concatenate([[0], np.cumsum(true)])  # true positives among the first k predictions
    _, first = np.unique(ranked, return_index=True)
    tp = below[-1] - below[first]
    fp = scores.size - first - tp
    fn = below[first] + false_negatives
    precision = np.append(tp / (tp + fp), 1.0)
    recall = np.append(tp / np.maximum(tp + fn, 1), 0.0)
    padded = np.concatenate([recall[:1], recall, [0.0]])
    return float(np.dot(precision, 0.5 * (padded[:-2] - padded[2:])))


def benchmark_gt_ids(sem_gt, ins_gt, label_ids: Sequence[int], instance_classes: Sequence[int],
                     where: str = "item") -> np.ndarray:
    """The benchmark's ground-truth ids of an item's points: `label id * 1000 + k + 1` for a point of
    an instance class with an instance id (k numbers the class's instances of the item 0.., in
    ascending id), 0 for every ignored point (class -1, a class without instances, id -1)."""
    sem_gt = _labels("sem_gt", sem_gt, where)
    ins_gt = _labels("ins_gt", ins_gt, where, sem_gt.size)
    label_ids = np.asarray(label_ids, np.int64)
    counted = np.zeros(label_ids.size, bool)
    counted[list(instance_classes)] = True
    valid = (sem_gt >= 0) & (sem_gt < label_ids.size) & (ins_gt >= 0)
    valid[valid] = counted[sem_gt[valid]]
    out = np.zeros(sem_gt.size, np.int64)
    base = int(ins_gt[valid].max(initial=0)) + 1
    keys, index = np.unique(sem_gt[valid] * base + ins_gt[valid], return_inverse=True)
    classes = keys // base
    rank = np.arange(keys.size) - np.searchsorted(classes, classes)  # 0.. within each class
    if rank.size and rank.max() >= 999:
        c = int(classes[int(np.argmax(rank))])
        raise MetricsError(f"{where}: class {c} has more than 999 instances: the benchmark's ids cannot hold them")
    out[valid] = (label_ids[classes] * 1000 + rank + 1)[index.reshape(-1)]
    return out


def format_table(result: dict, class_names: Sequence[str] | None = None) -> str:
    """A printable table of a `result()`: one row a class, then the means, in percent."""
    names = list(class_names if class_names is not None else result["class_names"])
    columns = (("Acc", "acc", "mAcc"), ("IoU", "iou", "mIoU"), ("Cov", "cov", "mCov"),
               ("WCov", "wcov", "mWCov"), ("Prec", "precision", "mPrec"),
               ("Rec", "recall", "mRec"), ("AP", "ap", "AP"), ("AP50", "ap50", "AP50"),
               ("AP25", "ap25", "AP25"))
    width = max(len(name) for name in names + ["class"])

    def cell(value):
        return f"{'-' if value is None else format(100.0 * value, '.1f'):>7}"

    header = f"{'class':<{width}}" + "".join(f"{title:>7}" for title, _, _ in columns)
    lines = [header, "-" * len(header)]
    for c, name in enumerate(names):
        lines.append(f"{name:<{width}}" + "".join(cell(result["per_class"][key][c])
                                                   for _, key, _ in columns))
    lines.append("-" * len(header))
    lines.append(f"{'mean':<{width}}" + "".join(cell(result[mean]) for _, _, mean in columns))
    lines.append(f"oAcc {cell(result['oAcc']).strip()}   rooms {result['num_rooms']}   "
                 f"points {result['num_points']}")
    lines.append("AP, AP50, AP25: instance AP by the ScanNet benchmark's rules (IoU 0.50:0.90, 0.5, 0.25; "
                 "beyond the paper)" + ("" if result.get("AP50") is not None else
                                        "; not computed: no predicted instance tables"))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ file lists


def gt_path_for(pred_path) -> Path:
    """`<room>_gt.txt` beside `<room>_pred.txt` (the original strips the suffix's characters one by
    one, which also eats the end of a room name ending in one of them; this replaces the suffix)."""
    pred_path = Path(pred_path)
    if not pred_path.name.endswith(PRED_SUFFIX):
        raise MetricsError(f"{pred_path}: a prediction file name must end in {PRED_SUFFIX}")
    return pred_path.with_name(pred_path.name[:-len(PRED_SUFFIX)] + GT_SUFFIX)


def _listed_rooms(filelist, base_dir=None) -> list[Path]:
    """The `_pred.txt` paths of an output file list; relative ones resolved against base_dir
    (default: the list's folder)."""
    filelist = Path(filelist)
    try:
        text = filelist.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise MetricsError(f"{filelist}: cannot read the file list ({e})") from None
    base = Path(base_dir) if base_dir is not None else filelist.parent
    rooms = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        if not entry.endswith(PRED_SUFFIX):
            raise MetricsError(f"{filelist}:{number}: {entry!r} does not end in {PRED_SUFFIX}")
        rooms.append(base / entry)  # an absolute entry replaces base
    if not rooms:
        raise MetricsError(f"{filelist}: lists no rooms")
    return rooms


def evaluate_filelist(filelists, num_classes: int = 13, class_names: Sequence[str] | None = None,
                      base_dir=None) -> dict:
    """Evaluates the rooms of one `output_filelist.txt`, or of several (6-fold: the union of the
    areas' rooms), and returns `Evaluator.result()`.

    Each line is a `<room>_pred.txt` path whose `<room>_gt.txt` lies beside it; a relative path is
    resolved against `base_dir`, by default the folder of its list (the original's test.py wrote
    paths relative to its working directory: pass that folder as base_dir for its lists).
    """
    if isinstance(filelists, (str, os.PathLike)):
        filelists = [filelists]
    evaluator = Evaluator(num_classes, class_names)
    for filelist in filelists:
        evaluator.add_filelist(filelist, base_dir)
    return evaluator.result()



# ------------------------------------------------------------------------------- instance lists

INSTANCES_SUFFIX = "_instances.txt"
INSTANCE_LIST_HEADER = "# id class confidence points"


def instance_list_path_for(pred_path) -> Path:
    """`<room>_instances.txt` beside `<room>_pred.txt`."""
    pred_path = Path(pred_path)
    return pred_path.with_name(pred_path.name[:-len(PRED_SUFFIX)] + INSTANCES_SUFFIX)


def write_instance_list(path, table: InstanceTable, header: str = INSTANCE_LIST_HEADER) -> None:
    """An item's predicted instances, one line each (`id class confidence points`) under a
    `# id class confidence points` line, atomically; confidences written exactly (shortest
    round-trip digits), so that scores computed from the files equal those of the run."""
    lines = [header] + [
        f"{int(i)} {int(c)} {float(q)!r} {int(n)}"
        for i, c, q, n in zip(table.ids, table.classes, table.confidences, table.points)
    ]
    _write_atomic(path, ("\n".join(lines) + "\n").encode())


def read_instance_list(path) -> InstanceTable:
    """The table written by `write_instance_list` (MetricsError naming the file and line otherwise;
    check it against its point file with `check_instance_table`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise MetricsError(f"{path}: cannot read the instance list ({e})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tokens = line.split()
        try:
            if len(tokens) != 4:
                raise ValueError
            row = (int(tokens[0]), int(tokens[1]), float(tokens[2]), int(tokens[3]))
        except ValueError:
            raise MetricsError(f"{path}:{number}: expected `id class confidence points`, found {line.strip()!r}") from None
        rows.append(row)
    columns = list(zip(*rows)) if rows else [(), (), (), ()]
    return InstanceTable(np.array(columns[0], np.int64), np.array(columns[1], np.int64),
                         np.array(columns[2], np.float64), np.array(columns[3], np.int64))


def write_benchmark_instances(out_dir, item: str, ins_pred, table: InstanceTable, sem_gt, ins_gt,
                              label_ids: Sequence[int], instance_classes: Sequence[int]) -> None:
    """One item in the ScanNet benchmark's submission format, which its evaluate_semantic_instance.py
    (given the dataset's class table) scores directly:

      <out_dir>/instances/<item>.txt            `pred_mask/<item>_<k>.txt <label id> <confidence>` a line,
                                                one per predicted instance of an instance class
      <out_dir>/instances/pred_mask/<item>_<k>.txt   one `0` / `1` line per point (row) of the item
      <out_dir>/instances_gt/<item>.txt         one id per point: `benchmark_gt_ids`

    Label ids are the dataset's own (`label_ids[class]`). Confidences are written exactly. Each file
    is written atomically, the item's list file after its masks; masks of the item left from an
    earlier run with more instances are removed."""
    out_dir = Path(out_dir)
    masks_dir = out_dir / "instances" / "pred_mask"
    masks_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "instances_gt").mkdir(parents=True, exist_ok=True)
    ins_pred = np.asarray(ins_pred).reshape(-1)
    counted = set(int(c) for c in instance_classes)
    lines, written = [], set()
    order = np.argsort(ins_pred, kind="stable")
    starts = np.searchsorted(ins_pred[order], table.ids)
    ends = np.searchsorted(ins_pred[order], table.ids, side="right")
    for k, (c, confidence, start, end) in enumerate(zip(table.classes, table.confidences, starts, ends)):
        if int(c) not in counted:
            continue
        name = f"{item}_{k}.txt"
        mask = np.full((ins_pred.size, 2), ord("\n"), np.uint8)
        mask[:, 0] = ord("0")
        mask[order[start:end], 0] = ord("1")
        _write_atomic(masks_dir / name, mask.tobytes())
        written.add(name)
        lines.append(f"pred_mask/{name} {int(label_ids[int(c)])} {float(confidence)!r}\n")
    for stale in masks_dir.glob(f"{item}_*.txt"):
        if stale.name not in written and stale.name[len(item) + 1:-4].isdigit():
            stale.unlink()
    gt = benchmark_gt_ids(sem_gt, ins_gt, label_ids, instance_classes, where=item)
    _write_atomic(out_dir / "instances_gt" / f"{item}.txt", format_lines([gt], "d"))
    _write_atomic(out_dir / "instances" / f"{item}.txt", "".join(lines).encode())

# ----------------------------------------------------------------------------------- room files


class RoomOutputs(NamedTuple):
    """The contents of a `<room>_pred.txt` / `<room>_gt.txt` pair, one row a point."""
    xyz: np.ndarray        # (N, 3) float64
    rgb: np.ndarray        # (N, 3) int64
    score: np.ndarray      # (N,) float64: probability of the predicted class
    sem_pred: np.ndarray   # (N,) int64
    ins_pred: np.ndarray   # (N,) int64, -1: no instance
    sem_gt: np.ndarray     # (N,) int64
    ins_gt: np.ndarray     # (N,) int64


def read_room_outputs(pred_path, gt_path=None) -> RoomOutputs:
    """Reads a room's `_pred.txt` (every column checked) and its `_gt.txt` (derived if None)."""
    pred_path = Path(pred_path)
    gt_path = gt_path_for(pred_path) if gt_path is None else Path(gt_path)
    columns = _read_table(pred_path, PRED_LAYOUT, PRED_KINDS, wanted=range(9))
    sem_gt, ins_gt = _read_table(gt_path, GT_LAYOUT, GT_KINDS, wanted=(0, 1))
    _check_same_length(pred_path, columns[0].size, gt_path, sem_gt.size)
    return RoomOutputs(xyz=np.stack(columns[0:3], axis=1), rgb=np.stack(columns[3:6], axis=1),
                       score=columns[6], sem_pred=columns[7], ins_pred=columns[8],
                       sem_gt=sem_gt, ins_gt=ins_gt)


def _check_same_length(pred_path, pred_count, gt_path, gt_count):
    if pred_count != gt_count:
        raise MetricsError(f"{pred_path} has {pred_count} points but {gt_path} has {gt_count}")


def _read_table(path: Path, layout, kinds: str, wanted) -> list[np.ndarray]:
    """The `wanted` columns of a numeric text table (int64 for 'i' columns, float64 for 'f')."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MetricsError(f"{path}: cannot read ({e.strerror or e})") from None
    wanted = list(wanted)
    text = np.frombuffer(data if data.endswith(b"\n") else data + b"\n", np.uint8)
    columns = _parse_canonical(text, kinds, wanted)
    if columns is None:
        columns = _parse_lines(path, data, layout, kinds, wanted)
    return columns


_POW10 = 10 ** np.arange(19, dtype=np.int64)
_MINUS, _DOT, _SLASH, _ZERO, _SPACE, _NEWLINE = (ord(c) for c in "-./0 \n")
_DECIMALS = 6  # '%f'
_MAX_WHOLE_DIGITS = 9  # whole * 10**6 + fraction stays below 2**53: exact in float64


def _parse_canonical(text: np.ndarray, kinds: str, wanted) -> list[np.ndarray] | None:
    """Vectorised parse of a table in the canonical shape, or None where the text is not in it.

    Canonical: every line (the last one too) ended by '\n', fields separated by one space, only
    the characters "-.0123456789"; integer fields are `-?digits`, float fields '%f' numbers
    (`-?digits.dddddd`). Columns not wanted are checked for this shape, not parsed.
    """
    num_columns = len(kinds)
    separators = np.flatnonzero(text <= _SPACE)  # spaces, newlines and any control character
    lines = separators.size // num_columns
    if separators.size != lines * num_columns or lines == 0:
        return None
    # Every separator is a space or, ending each line, a newline (lines * (columns - 1) spaces
    # plus `lines` newlines make up all the separators); numeric characters between them; no
    # empty field.
    if np.count_nonzero(text == _SPACE) != lines * (num_columns - 1):
        return None
    numeric = (np.count_nonzero((text - np.uint8(_MINUS)) <= _ZERO + 9 - _MINUS)
               - np.count_nonzero(text == _SLASH))
    if numeric + separators.size != text.size:
        return None
    if separators[0] < 1 or (np.diff(separators) < 2).any():
        return None
    separators = separators.reshape(lines, num_columns)
    if (text[separators[:, -1]] != _NEWLINE).any():
        return None
    columns = []
    for j in wanted:
        end = separators[:, j].copy()
        if j:
            start = separators[:, j - 1] + 1
        else:
            start = np.empty_like(end)
            start[0] = 0
            start[1:] = separators[:-1, -1] + 1
        values = (_parse_int if kinds[j] == "i" else _parse_fixed)(text, start, end)
        if values is None:
            return None
        columns.append(values)
    return columns


def _parse_digits(text, start, end, max_digits=18):
    """The non-negative integers written in text[start:end] (at least one digit each), or None."""
    length = end - start
    longest = int(length.max())
    if length.min() < 1 or longest > max_digits:
        return None
    value = np.zeros(start.size, np.int64)
    position = end - 1
    for k in range(longest):
        digit = text[position] - np.uint8(_ZERO)
        if k:
            digit *= length > k
        if (digit > 9).any():
            return None
        value += digit * _POW10[k]
        np.maximum(position - 1, start, out=position)
    return value


def _parse_int(text, start, end):
    negative = text[start] == _MINUS
    magnitude = _parse_digits(text, start + negative, end)
    return None if magnitude is None else np.where(negative, -magnitude, magnitude)


def _parse_fixed(text, start, end):
    """'%f' numbers: whole digits, a dot and six decimals, exactly converted (one division of
    two exact float64 values is correctly rounded, as strtod)."""
    dot = end - (_DECIMALS + 1)
    negative = text[start] == _MINUS
    first = start + negative
    if (dot <= first).any() or (text[dot] != _DOT).any():
        return None
    whole = _parse_digits(text, first, dot, _MAX_WHOLE_DIGITS)
    decimals = text[dot[:, None] + np.arange(1, _DECIMALS + 1)] - np.uint8(_ZERO)
    if whole is None or (decimals > 9).any():
        return None
    fraction = decimals @ _POW10[_DECIMALS - 1::-1]
    value = (whole * _POW10[_DECIMALS] + fraction) / float(_POW10[_DECIMALS])
    return np.where(negative, -value, value)


def _parse_lines(path: Path, data: bytes, layout, kinds: str, wanted) -> list[np.ndarray]:
    """Line-by-line parse of any whitespace-separated table (blank lines skipped); the error
    names the first bad line."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise MetricsError(f"{path}:{line}: not an ASCII text file") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != len(kinds):
            raise MetricsError(f"{path}:{number}: expected {len(kinds)} numbers "
                               f"({' '.join(layout)}), found {len(tokens)}: {line.strip()!r}")
        try:
            values = [float(token) for token in tokens]
        except ValueError:
            raise MetricsError(f"{path}:{number}: not a number in {line.strip()!r}") from None
        for name, kind, value in zip(layout, kinds, values):
            if not np.isfinite(value):
                raise MetricsError(f"{path}:{number}: {name} is not finite in {line.strip()!r}")
            if kind == "i" and (value != int(value) or abs(value) >= 2**53):
                raise MetricsError(f"{path}:{number}: {name} is not an integer in "
                                   f"{line.strip()!r}")
        rows.append(values)
    if not rows:
        raise MetricsError(f"{path}: no points")
    table = np.array(rows, np.float64)
    return [table[:, j].astype(np.int64) if kinds[j] == "i" else table[:, j] for j in wanted]


# ---------------------------------------------------------------------------------------- writers


def write_room_outputs(pred_path, gt_path, xyz, rgb, score, sem_pred, ins_pred, sem_gt,
                       ins_gt) -> None:
    """Writes a room's `_pred.txt` ('%f %f %f %d %d %d %f %d %d') and `_gt.txt` ('%d %d'),
    byte for byte as the original's per-line formatting (rgb truncated like '%d' of a float),
    each atomically, with `format_lines`. Non-finite xyz, rgb or score are refused (the reader
    refuses them too)."""
    xyz = np.asarray(xyz, np.float64)
    size = xyz.shape[0] if xyz.ndim == 2 else -1
    if xyz.shape != (size, 3) or size == 0:
        raise MetricsError(f"{pred_path}: xyz must have shape (N, 3) with N > 0, got {xyz.shape}")
    rgb = np.asarray(rgb)
    if rgb.shape != (size, 3):
        raise MetricsError(f"{pred_path}: rgb must have shape ({size}, 3), got {rgb.shape}")
    score = np.asarray(score, np.float64)
    if score.shape != (size,):
        raise MetricsError(f"{pred_path}: score must have shape ({size},), got {score.shape}")
    for name, values in (("xyz", xyz), ("rgb", rgb), ("score", score)):
        if not np.isfinite(np.asarray(values, np.float64)).all():
            raise MetricsError(f"{pred_path}: {name} must be finite")
    labels = {}
    for name, values in (("sem_pred", sem_pred), ("ins_pred", ins_pred), ("sem_gt", sem_gt),
                         ("ins_gt", ins_gt)):
        labels[name] = _labels(name, values, str(pred_path), size)
        if ((labels[name] <= -_POW10[18]) | (labels[name] >= _POW10[18])).any():
            raise MetricsError(f"{pred_path}: {name} holds ids of 19 or more digits")
    pred = format_lines([xyz[:, 0], xyz[:, 1], xyz[:, 2], rgb[:, 0], rgb[:, 1], rgb[:, 2], score,
                         labels["sem_pred"], labels["ins_pred"]], "fffdddfdd")
    gt = format_lines([labels["sem_gt"], labels["ins_gt"]], "dd")
    _write_atomic(pred_path, pred)
    _write_atomic(gt_path, gt)


def format_lines(columns, formats: str) -> bytes:
    """Text lines of the columns as Python's printf-style formatting (and so np.savetxt) writes
    them, one format character per column ('f': '%f', 'd': '%d', which truncates floats),
    separated by spaces; vectorised, for millions of rows.

    Every float is written exactly: rows holding a '%f' value of magnitude 2**52 / 1e6 (about
    4.5e9) or more, NaN or inf, or a '%d' value beyond int64, are formatted by Python, the others
    with digit arithmetic. A '%d' column of NaN or inf is a ValueError, as in Python."""
    if len(columns) != len(formats) or not set(formats) <= {"f", "d"}:
        raise ValueError(f"one format of 'f' or 'd' per column, got {formats!r} for "
                         f"{len(columns)} columns")
    columns = [np.asarray(c, np.float64) if kind == "f" else _integer_column(c)
               for c, kind in zip(columns, formats)]
    sizes = {c.shape for c in columns}
    if len(sizes) != 1 or len(next(iter(sizes))) != 1:
        raise ValueError(f"columns must be 1-D and of one length, got shapes {sorted(sizes)}")
    outside = np.zeros(columns[0].size, bool)
    for values, kind in zip(columns, formats):
        outside |= ~_vectorised(values, kind)
    if not outside.any():
        return _join_lines([_format_column(c, kind) for c, kind in zip(columns, formats)])
    inside = ~outside
    text = _join_lines([_format_column(c[inside], kind) for c, kind in zip(columns, formats)])
    line = " ".join(f"%{kind}" for kind in formats) + "\n"
    casts = [float if kind == "f" else int for kind in formats]
    return _insert_lines(text, np.flatnonzero(outside), lambda row: (line % tuple(
        cast(values[row]) for cast, values in zip(casts, columns))).encode())


_FIXED_LIMIT = 2.0**52 / 1e6  # below it x * 1e6 < 2**52, where every half-integer is a float64


def _integer_column(values) -> np.ndarray:
    """A '%d' column as int64 or uint64, or as float64 truncated (as '%d' truncates a float)."""
    values = np.asarray(values)
    if values.dtype == np.uint64:
        return values
    if values.dtype.kind in "biu":
        return values.astype(np.int64)
    if values.dtype.kind != "f":
        raise ValueError(f"a '%d' column must hold numbers, got dtype {values.dtype}")
    if not np.isfinite(values).all():
        raise ValueError("a '%d' column cannot hold NaN or infinite values")
    return np.trunc(values.astype(np.float64))


def _vectorised(values: np.ndarray, kind: str) -> np.ndarray:
    """Where the digit arithmetic formats a column exactly: '%f' values of magnitude below
    _FIXED_LIMIT (not NaN or inf), '%d' values whose magnitude fits int64."""
    if kind == "f":
        return np.abs(values) < _FIXED_LIMIT
    if values.dtype == np.int64:
        return values != np.iinfo(np.int64).min
    if values.dtype == np.uint64:
        return values <= np.iinfo(np.int64).max
    return np.abs(values) < 2.0**63


def _format_column(values: np.ndarray, kind: str) -> np.ndarray:
    return _format_float(values) if kind == "f" else _format_int(values)


def _insert_lines(text: bytes, rows: np.ndarray, line_of) -> bytes:
    """text (one line a row, the rows not in `rows`) with line_of(row) inserted for each of the
    ascending `rows`, at its place."""
    ends = np.flatnonzero(np.frombuffer(text, np.uint8) == _NEWLINE) + 1
    offsets = np.concatenate([[0], ends])[rows - np.arange(rows.size)]  # lines before each row
    pieces, previous = [], 0
    for row, offset in zip(rows.tolist(), offsets.tolist()):
        pieces += [text[previous:offset], line_of(row)]
        previous = offset
    pieces.append(text[previous:])
    return b"".join(pieces)


def _digits(magnitude: np.ndarray, negative: np.ndarray, width: int | None = None) -> np.ndarray:
    """Right-aligned decimal characters of non-negative int64 values, '-' where negative, padded
    on the left with NUL bytes (removed when the lines are joined); width digits if given."""
    if width is None:
        count = np.ones(magnitude.size, np.int64)
        largest = int(magnitude.max(initial=0))
        for k in range(1, 19):
            if _POW10[k] > largest:
                break
            count += magnitude >= _POW10[k]
    else:
        count = np.full(magnitude.size, width, np.int64)
    digits = int(count.max(initial=1))
    columns = digits + int(negative.any())
    chars = np.zeros((magnitude.size, columns), np.uint8)
    for k in range(digits):
        digit = (magnitude // _POW10[k]) % 10
        chars[:, columns - 1 - k] = np.where(k < count, digit + _ZERO, 0)
    rows = np.flatnonzero(negative)
    chars[rows, columns - 1 - count[rows]] = _MINUS
    return chars


def _format_int(values: np.ndarray) -> np.ndarray:
    """'%d' of every value (magnitudes below 2**63)."""
    values = np.asarray(values, np.int64)
    return _digits(np.abs(values), values < 0)


def _format_float(values: np.ndarray) -> np.ndarray:
    """'%f' of every value (finite, magnitudes below _FIXED_LIMIT): |x| * 1e6 correctly rounded
    to an integer, ties to even, as printf rounds the exact binary value.

    rint of the float64 product is that integer unless the product is exactly a half-integer:
    the exact product then lies above or below it by the product's rounding error, or is the tie
    itself when that error is 0. The error is computed exactly (Dekker's two-product)."""
    scaled = values * 1e6
    micro = np.rint(scaled)
    halves = np.flatnonzero(scaled - np.floor(scaled) == 0.5)
    if halves.size:
        half = scaled[halves]
        error = _product_error(values[halves], half)
        micro[halves] = np.where(error > 0, half + 0.5,
                                 np.where(error < 0, half - 0.5, micro[halves]))
    micro = np.abs(micro).astype(np.int64)
    negative = np.signbit(values)
    whole = _digits(micro // 1_000_000, negative)
    fraction = _digits(micro % 1_000_000, np.zeros(values.size, bool), width=6)
    dot = np.full((values.size, 1), _DOT, np.uint8)
    return np.concatenate([whole, dot, fraction], axis=1)


def _product_error(values: np.ndarray, products: np.ndarray) -> np.ndarray:
    """values * 1e6 - products exactly, where products = fl(values * 1e6) (no overflow or
    underflow): values split into a high part of 26 bits and a low part of 27 (Veltkamp), whose
    products with 1e6 (14 significant bits) are exact, so that Dekker's sum is exact."""
    split = values * 134217729.0  # 2**27 + 1
    high = split - (split - values)
    low = values - high
    return (high * 1e6 - products) + low * 1e6


def _join_lines(fields: list[np.ndarray]) -> bytes:
    """One line a row: the fields' characters separated by spaces, NUL padding dropped."""
    rows = fields[0].shape[0]
    width = sum(f.shape[1] for f in fields) + len(fields)
    table = np.empty((rows, width), np.uint8)
    offset = 0
    for i, chars in enumerate(fields):
        table[:, offset:offset + chars.shape[1]] = chars
        offset += chars.shape[1]
        table[:, offset] = _SPACE if i < len(fields) - 1 else _NEWLINE
        offset += 1
    return table.tobytes().replace(b"\0", b"")


def _write_atomic(path, data: bytes) -> None:
    with AtomicTarget(path) as tmp:
        Path(tmp).write_bytes(data)
