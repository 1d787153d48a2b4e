"""ShapeNet part segmentation metrics (the paper's Table 3), NumPy only.

The protocol of PointNet++ (part_seg/evaluate.py) and of the other papers of Table 3:

* a shape's category is known: its predicted parts are the argmax over the logits of that
  category's parts only (`restrict_to_category`);
* a shape's IoU is the mean, over the parts of its category, of the part's IoU between predicted
  and ground-truth points; a part absent from both counts 1;
* instance-averaged mIoU: the mean of the shape IoUs over all shapes (the "mIoU" of Table 3, where
  JSNet reports 85.8); class-averaged mIoU: the mean over the categories of the mean shape IoU of
  each category (categories without shapes are left out).

A predicted part outside the shape's category (possible only without the restriction) matches
no part of the category: it lowers the IoU of the point's ground-truth part.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jsnet_tf.data.shapenet import CATEGORIES, CATEGORY_NAMES, NUM_PARTS
from jsnet_tf.metrics import MetricsError, _labels

__all__ = [
    "PAPER_INSTANCE_MIOU", "PAPER_TABLE3", "PartEvaluator", "category_index", "category_parts", "format_table",
    "restrict_to_category", "shape_part_ious",
]

# The paper's Table 3: instance-averaged part mIoU on ShapeNet part, in percent, JSNet and the
# methods it compares with (the paper's own rows). Per-category values and a class-averaged mIoU are
# not reproduced here.
PAPER_INSTANCE_MIOU = 85.8
PAPER_TABLE3 = (("PointNet", 83.7), ("PointNet++", 84.9), ("ASIS", 85.0), ("JSNet", PAPER_INSTANCE_MIOU))


def category_index(category) -> int:
    """The index into CATEGORY_NAMES of a category given by name ("Airplane") or index."""
    if isinstance(category, str):
        if category not in CATEGORIES:
            raise MetricsError(f"unknown category {category!r} (expected one of "
                               f"{', '.join(CATEGORY_NAMES)})")
        return CATEGORY_NAMES.index(category)
    if isinstance(category, (bool, np.bool_)) or not isinstance(category, (int, np.integer)):
        raise MetricsError(f"a category is a name or an index 0..{len(CATEGORY_NAMES) - 1}, "
                           f"got {category!r}")
    if not 0 <= int(category) < len(CATEGORY_NAMES):
        raise MetricsError(f"category index {int(category)} is outside 0..{len(CATEGORY_NAMES) - 1}")
    return int(category)


def category_parts(category) -> tuple[int, ...]:
    """The global part ids of a category given by name or index."""
    return CATEGORIES[CATEGORY_NAMES[category_index(category)]].parts


def restrict_to_category(logits, category) -> np.ndarray:
    """The global part id (int64, shape logits.shape[:-1]) of the highest logit among the
    category's parts: logits (..., 50)."""
    logits = np.asarray(logits)
    if logits.ndim < 1 or logits.shape[-1] != NUM_PARTS:
        raise MetricsError(f"logits must have {NUM_PARTS} part scores in the last axis, got "
                           f"shape {logits.shape}")
    parts = category_parts(category)
    return parts[0] + np.argmax(logits[..., parts[0]:parts[-1] + 1], axis=-1).astype(np.int64)


def shape_part_ious(part_gt, part_pred, category, where: str = "shape") -> np.ndarray:
    """The IoU of each part of the category on one shape, float64 (parts of the category,): 1
    for a part absent from both ground truth and prediction.

    part_gt must lie in the category's parts (ShapeNet part labels do); part_pred in 0..49.
    """
    parts = category_parts(category)
    name = CATEGORY_NAMES[category_index(category)]
    gt = _labels("part_gt", part_gt, where)
    pred = _labels("part_pred", part_pred, where, gt.size)
    if gt.size == 0:
        raise MetricsError(f"{where}: a shape without points")
    outside = (gt < parts[0]) | (gt > parts[-1])
    if outside.any():
        i = int(np.argmax(outside))
        raise MetricsError(f"{where}: ground-truth part {gt[i]} at point {i} is not a part of "
                           f"{name} ({parts[0]}..{parts[-1]})")
    bad = (pred < 0) | (pred >= NUM_PARTS)
    if bad.any():
        i = int(np.argmax(bad))
        raise MetricsError(f"{where}: predicted part {pred[i]} at point {i} is outside "
                           f"0..{NUM_PARTS - 1}")
    count = len(parts)
    gt_local = gt - parts[0]
    pred_local = pred - parts[0]
    in_category = (pred_local >= 0) & (pred_local < count)
    intersection = np.bincount(gt_local[gt == pred], minlength=count)
    union = (np.bincount(gt_local, minlength=count)
             + np.bincount(pred_local[in_category], minlength=count) - intersection)
    iou = np.ones(count)
    np.divide(intersection, union, out=iou, where=union > 0)
    return iou


class PartEvaluator:
    """Accumulates shape IoUs per category; `result()` gives instance and class mIoU.

    `add_shape` adds one shape, `add_shapes` a batch (B, N) with categories (B,), `merge`
    another evaluator's shapes.
    """

    def __init__(self):
        self.iou_sum = np.zeros(len(CATEGORY_NAMES), np.float64)   # sum of shape IoUs
        self.shapes = np.zeros(len(CATEGORY_NAMES), np.int64)      # shapes per category

    def add_shape(self, part_gt, part_pred, category, where: str = "shape") -> float:
        """Adds one shape (per-point ground-truth and predicted global part ids); returns its IoU."""
        iou = float(shape_part_ious(part_gt, part_pred, category, where).mean())
        index = category_index(category)
        self.iou_sum[index] += iou
        self.shapes[index] += 1
        return iou

    def add_shapes(self, part_gt, part_pred, categories: Sequence, where: str = "shapes") -> np.ndarray:
        """Adds a batch: part_gt and part_pred (B, N), categories (B,); returns the B shape IoUs."""
        part_gt, part_pred = np.asarray(part_gt), np.asarray(part_pred)
        categories = list(categories)
        if part_gt.ndim != 2 or part_pred.shape != part_gt.shape or len(categories) != len(part_gt):
            raise MetricsError(f"{where}: expected part_gt and part_pred (B, N) and categories (B,), "
                               f"got {part_gt.shape}, {part_pred.shape} and {len(categories)}")
        return np.array([self.add_shape(g, p, c, f"{where}: shape {i}")
                         for i, (g, p, c) in enumerate(zip(part_gt, part_pred, categories))])

    def merge(self, other: PartEvaluator) -> PartEvaluator:
        """Adds the shapes of another evaluator to this one."""
        self.iou_sum += other.iou_sum
        self.shapes += other.shapes
        return self

    @property
    def num_shapes(self) -> int:
        return int(self.shapes.sum())

    def result(self) -> dict:
        """instance_mIoU, class_mIoU (fractions, None without shapes), per_category (None for a
        category without shapes), shapes_per_category, num_shapes and the counts behind them."""
        held = self.shapes > 0
        per_category = np.full(len(CATEGORY_NAMES), np.nan)
        per_category[held] = self.iou_sum[held] / self.shapes[held]
        total = self.num_shapes
        return {
            "instance_mIoU": float(self.iou_sum.sum() / total) if total else None,
            "class_mIoU": float(per_category[held].mean()) if held.any() else None,
            "per_category": {name: None if np.isnan(v) else float(v)
                             for name, v in zip(CATEGORY_NAMES, per_category)},
            "shapes_per_category": {name: int(n) for name, n in zip(CATEGORY_NAMES, self.shapes)},
            "num_shapes": total,
            "counts": {"iou_sum": self.iou_sum.tolist(), "shapes": self.shapes.tolist()},
        }


def format_table(result: dict) -> str:
    """A printable table of a `PartEvaluator.result()` in percent, the paper's Table 3 value
    beside ours ('-' where the paper gives none here)."""

    def cell(value, width=8):
        return f"{'-' if value is None else format(100.0 * value, '.1f'):>{width}}"

    rows = [("instance mIoU", result["num_shapes"], result["instance_mIoU"], PAPER_INSTANCE_MIOU / 100),
            ("class mIoU", result["num_shapes"], result["class_mIoU"], None)]
    rows += [(name, result["shapes_per_category"][name], result["per_category"][name], None)
             for name in CATEGORY_NAMES]
    width = max(len(name) for name, *_ in rows)
    header = f"{'part IoU (%)':<{width}}{'shapes':>8}{'ours':>8}{'JSNet paper (Table 3)':>23}"
    lines = [header, "-" * len(header)]
    for k, (name, shapes, ours, paper) in enumerate(rows):
        lines.append(f"{name:<{width}}{shapes:>8}{cell(ours)}{cell(paper, 23)}")
        if k == 1:
            lines.append("-" * len(header))
    lines.append("instance mIoU: mean over shapes (Table 3's mIoU); class mIoU: mean over categories")
    lines.append("the paper's Table 3 (instance mIoU): " + ", ".join(f"{name} {value:.1f}" for name, value in PAPER_TABLE3)
                 + f"; ours {cell(result['instance_mIoU'], 0).strip()}")
    return "\n".join(lines)
