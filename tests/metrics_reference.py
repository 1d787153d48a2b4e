"""A plain port of the original evaluator (models/JISS/eval_iou_accuracy.py), the reference for
`jsnet_tf.metrics`: the same loops over points, instances and pairs of instances, the same
`scipy.stats.mode` for an instance's class, the same sums and divisions (so a class without ground
truth gives nan here, as it does in the original). It shares no code with `jsnet_tf.metrics`.

`evaluate_rooms` takes the rooms as arrays; `evaluate_filelist` reads them as the original does
(np.loadtxt of `<room>_pred.txt` and `<room>_gt.txt`, paths taken as written in the list).
"""

import numpy as np
from scipy import stats

IOU_THRESHOLD = 0.5


def _mode(values):
    return int(np.asarray(stats.mode(values, keepdims=False)[0]))


def _instances_by_class(ids, sem, num_classes, skip_minus_one):
    """Per class, the point masks of the instances whose mode class is that class."""
    by_class = [[] for _ in range(num_classes)]
    for instance in np.unique(ids):
        if skip_minus_one and instance == -1:
            continue
        mask = ids == instance
        by_class[_mode(sem[mask])].append(mask)
    return by_class


def _iou(a, b):
    return float(np.sum(a & b)) / np.sum(a | b)


class OriginalEvaluator:
    """The original's accumulators, filled one room at a time."""

    def __init__(self, num_classes=13):
        c = num_classes
        self.num_classes = c
        self.true_positive_classes = np.zeros(c)
        self.positive_classes = np.zeros(c)
        self.gt_classes = np.zeros(c)
        self.total_gt_ins = np.zeros(c)
        self.tps = [[] for _ in range(c)]
        self.fps = [[] for _ in range(c)]
        self.room_cov = [[] for _ in range(c)]
        self.room_wcov = [[] for _ in range(c)]

    def add_room(self, sem_gt, ins_gt, sem_pred, ins_pred):
        c = self.num_classes
        for gt_label, pred_label in zip(sem_gt.tolist(), sem_pred.tolist()):
            self.gt_classes[gt_label] += 1
            self.positive_classes[pred_label] += 1
            self.true_positive_classes[gt_label] += int(gt_label == pred_label)

        pred_by_class = _instances_by_class(ins_pred, sem_pred, c, skip_minus_one=True)
        gt_by_class = _instances_by_class(ins_gt, sem_gt, c, skip_minus_one=False)

        for cls in range(c):
            gts, preds = gt_by_class[cls], pred_by_class[cls]
            cov_sum, weighted_sum, gt_points = 0.0, 0.0, 0
            for gt in gts:
                best = 0.0
                for pred in preds:
                    best = max(best, _iou(pred, gt))
                size = np.sum(gt)
                gt_points += size
                cov_sum += best
                weighted_sum += best * size
            if gts:
                self.room_cov[cls].append(cov_sum / len(gts))
                self.room_wcov[cls].append(weighted_sum / gt_points)

        for cls in range(c):
            gts, preds = gt_by_class[cls], pred_by_class[cls]
            self.total_gt_ins[cls] += len(gts)
            for pred in preds:
                best = -1.0
                for gt in gts:
                    best = max(best, _iou(pred, gt))
                self.tps[cls].append(1.0 if best >= IOU_THRESHOLD else 0.0)
                self.fps[cls].append(0.0 if best >= IOU_THRESHOLD else 1.0)

    def result(self):
        """The original's printed numbers: per-class arrays and their plain means (nan included)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            cov = np.array([np.mean(v) if v else np.nan for v in self.room_cov])
            wcov = np.array([np.mean(v) if v else np.nan for v in self.room_wcov])
            tp = np.array([np.sum(v) for v in self.tps])
            fp = np.array([np.sum(v) for v in self.fps])
            precision = tp / (tp + fp)
            recall = tp / self.total_gt_ins
            tpc, pc, gc = self.true_positive_classes, self.positive_classes, self.gt_classes
            iou = tpc / (gc + pc - tpc)
            acc = tpc / gc
            return {
                "cov": cov, "wcov": wcov, "precision": precision, "recall": recall,
                "acc": acc, "iou": iou,
                "mCov": np.mean(cov), "mWCov": np.mean(wcov),
                "mPrec": np.mean(precision), "mRec": np.mean(recall),
                "oAcc": np.sum(tpc) / np.sum(pc), "mAcc": np.mean(acc),
                "mIoU": np.sum(iou) / self.num_classes,
            }


def evaluate_rooms(rooms, num_classes=13):
    """rooms: (sem_gt, ins_gt, sem_pred, ins_pred) tuples -> the original's numbers."""
    evaluator = OriginalEvaluator(num_classes)
    for room in rooms:
        evaluator.add_room(*room)
    return evaluator.result()


def evaluate_filelist(filelist, num_classes=13):
    """The original script's reading: each listed `_pred.txt` and its `_gt.txt` with np.loadtxt."""
    evaluator = OriginalEvaluator(num_classes)
    pred_paths = [line.rstrip() for line in open(filelist)]
    for pred_path in pred_paths:
        # The original strips the characters of "_pred\.txt" from the right (a character set, not a
        # suffix); the rooms used with this reference end in a digit, where both agree.
        gt_path = pred_path.rstrip("_pred\\.txt") + "_gt.txt"  # noqa: B005 (the original's)
        pred = np.loadtxt(pred_path)
        gt = np.loadtxt(gt_path)
        evaluator.add_room(gt[:, -2].astype(int), gt[:, -1].astype(int),
                           pred[:, -2].astype(int), pred[:, -1].astype(int))
    return evaluator.result()


def synthetic_room(rng, points, instances, num_classes=13):
    """(sem_gt, ins_gt, sem_pred, ins_pred) of a random room whose predictions have IoUs on both
    sides of 0.5: ground-truth instances of uneven sizes (ids 0..instances-1, a few points of
    another class in each), predictions that keep, split, merge with a neighbour or drop (-1) each
    instance, then scatter some points; predicted classes flip on some points."""
    sizes = rng.dirichlet(np.full(instances, 0.7))
    ins_gt = rng.choice(instances, size=points, p=sizes)
    sem_gt = rng.integers(0, num_classes, instances)[ins_gt]
    noisy = rng.random(points) < 0.05
    sem_gt[noisy] = rng.integers(0, num_classes, noisy.sum())

    fate = rng.integers(0, 4, instances)  # 0 keep, 1 split, 2 merge, 3 drop
    ins_pred = ins_gt + 7  # non-contiguous ids
    split = (fate[ins_gt] == 1) & (rng.random(points) < rng.uniform(0.2, 0.8, instances)[ins_gt])
    ins_pred[split] += 1000
    merge = fate[ins_gt] == 2
    ins_pred[merge] = (ins_gt[merge] + 1) % instances + 7
    ins_pred[fate[ins_gt] == 3] = -1
    scattered = rng.random(points) < 0.1
    ins_pred[scattered] = rng.integers(-1, instances + 7, scattered.sum())

    sem_pred = sem_gt.copy()
    flipped = rng.random(points) < 0.15
    sem_pred[flipped] = rng.integers(0, num_classes, flipped.sum())
    return sem_gt, ins_gt, sem_pred, ins_pred
