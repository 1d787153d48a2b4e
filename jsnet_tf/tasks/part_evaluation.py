"""ShapeNet part evaluation (the paper's Table 3) and per-shape segmentation.

Per shape: the network in inference mode on its points (xyz in the unit sphere, normals), the
predicted part of each point restricted to the shape's category (argmax over that category's
logits, `part_metrics.restrict_to_category`), and part instances by mean-shift on the shape's
embeddings (`clustering.postprocess.mean_shift`, bandwidth 0.6 as for S3DIS); each instance
takes the most frequent predicted part of its points (`postprocess.cluster_classes`). A shape
is one network input, so there is no block merging and no instance-size filter.

A shape of exactly `num_points` points (every prepared shape) is one network row, in its stored
order. Any other shape is labelled point by point as the S3DIS every-point protocol does: its
points shuffled and cut into rows of `num_points`, the last row topped up with repeats; each
point takes the outputs of its first row.

`evaluate_shapenet` runs a prepared split (jsnet_tf.data.shapenet) and writes, in `out_dir`:
  <h5 stem>.npz   per prepared h5 file, arrays (B, N): xyz, part_gt, part_pred, instance_gt,
                  instance_pred, and category (B,), shape_iou (B,); written when the file is
                  done, so an interrupted evaluation resumes (a file is reused only when the
                  weights, settings and h5 file are the ones it was made with)
  results.json    instance and class mIoU, the 16 categories, counts; the part instances'
                  mCov, mWCov, mPrec, mRec over the 50 parts (jsnet_tf.metrics.Evaluator, each
                  shape one "room")
  results.txt     the table, with the paper's Table 3 value beside ours
  pictures/       for the first `pictures` shapes: a coloured PLY per panel and one PNG of
                  Figure 5's four panels (part prediction / ground truth, instance prediction /
                  ground truth), seen along -z (x right, y up: the release's up axis)
Part colours are `shapenet.PALETTE` of the global part id: a category's parts are at most 6
consecutive ids, so they get distinct colours of its 13 colours.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
import zlib
from pathlib import Path

import numpy as np

from jsnet_tf import metrics
from jsnet_tf.clustering import postprocess
from jsnet_tf.data import shapenet
from jsnet_tf.errors import DataError
from jsnet_tf.evaluation import BatchedInference, EvaluationError, _chunks
from jsnet_tf.files import AtomicTarget, write_text_atomic
from jsnet_tf.tasks import part_metrics

__all__ = ["ShapePrediction", "ShapeSegmenter", "evaluate_shapenet", "format_results", "render_shape", "shape_panels"]

@dataclasses.dataclass
class ShapePrediction:
    """The labels of one shape's points."""

    part: np.ndarray  # (P,) int32 global part id 0..49
    instance: np.ndarray  # (P,) int32 mean-shift cluster 0..K-1 (cluster 0 the densest)
    score: np.ndarray  # (P,) float32 probability of the part among the allowed parts
    instance_part: np.ndarray  # (K,) int32 most frequent predicted part of each instance
    instance_confidence: np.ndarray  # (K,) float64 mean over its points of the probability of its part

    @property
    def instances(self):
        """The instance table (jsnet_tf.metrics.InstanceTable) of the shape."""
        return metrics.InstanceTable(np.arange(len(self.instance_part), dtype=np.int64), self.instance_part.astype(np.int64),
                                     self.instance_confidence, np.bincount(self.instance, minlength=len(self.instance_part)))


class ShapeSegmenter:
    """Runs a trained JSNet over shapes and turns its outputs into part and instance labels.

    Args:
      model: a built JSNet (or any callable model with `num_classes` = 50 and `input_channels`
        attributes, returning {"semantic_logits", "embeddings"}).
      num_points: points per network row (the training shapes' size).
      bandwidth: mean-shift bandwidth on the embeddings.
      batch_size: rows per inference batch.
      devices: where the network runs (BatchedInference; default every visible GPU, else the CPU).
    """

    def __init__(self, model, num_points, bandwidth=0.6, batch_size=8, devices=None):
        if model.num_classes != shapenet.NUM_PARTS:
            raise EvaluationError(f"the model predicts {model.num_classes} classes; ShapeNet part has {shapenet.NUM_PARTS} parts")
        if model.input_channels != shapenet.NUM_CHANNELS:
            raise EvaluationError(
                f"the model takes {model.input_channels} channels per point; ShapeNet shapes have "
                f"{shapenet.NUM_CHANNELS} (x y z nx ny nz)"
            )
        if not int(num_points) >= 1 or not int(batch_size) >= 1:
            raise EvaluationError(f"num_points and batch_size must be at least 1, got {num_points} and {batch_size}")
        if not bandwidth > 0:
            raise EvaluationError(f"the mean-shift bandwidth must be positive, got {bandwidth}")
        self.model = model
        self.num_points = int(num_points)
        self.bandwidth = float(bandwidth)
        self.batch_size = int(batch_size)

        self.inference = BatchedInference(model, self.num_points, shapenet.NUM_CHANNELS, self.batch_size, devices)

    def count_rows(self, num_points):
        """Network rows for a shape of `num_points` points."""
        return -(-int(num_points) // self.num_points)

    def segment(self, points, category=None, rng=None):
        """A `ShapePrediction` of one shape: points (P, 6), category a name / index or None (all
        50 parts allowed); `rng` shuffles shapes of other than num_points points."""
        ((_, prediction),) = self.segment_shapes([(None, points, category)], rng)
        return prediction

    def segment_shapes(self, shapes, rng=None):
        """Yields `(key, ShapePrediction)` for each `(key, points (P, 6), category or None)` of
        `shapes`, in order; the rows of consecutive shapes share inference batches."""
        rng = np.random.default_rng(rng)
        pending = {}

        def rows():
            for number, (key, points, category) in enumerate(shapes):
                points = np.asarray(points, np.float32)
                if points.ndim != 2 or points.shape[1] != shapenet.NUM_CHANNELS or len(points) == 0:
                    raise EvaluationError(f"shape {key}: expected points (P, {shapenet.NUM_CHANNELS}) with P > 0, got {points.shape}")
                if not np.isfinite(points).all():
                    raise EvaluationError(f"shape {key}: its points hold NaN or infinite values")
                pending[number] = (key, category)
                indices = np.arange(len(points))
                chunks = [indices] if len(points) == self.num_points else _chunks(indices, self.num_points, rng)
                for chunk in chunks:
                    yield (number, chunk), points[chunk]

        for number, shape_rows in itertools.groupby(self._network_outputs(rows()), key=lambda row: row[0][0]):
            shape_rows = list(shape_rows)
            key, category = pending.pop(number)
            # Each point once, in point order: the first row holding it.
            _, first = np.unique(np.concatenate([chunk for (_, chunk), _, _ in shape_rows]), return_index=True)
            logits = np.concatenate([row_logits for _, row_logits, _ in shape_rows])[first]
            embeddings = np.concatenate([row_embeddings for _, _, row_embeddings in shape_rows])[first]
            yield key, self._label(logits, embeddings, category)

    def _network_outputs(self, rows):
        """(key, logits, embeddings) of each `(key, row)`, in order (BatchedInference)."""
        for key, logits, embeddings, _ in self.inference.outputs(rows, "ShapeNet part inference"):
            yield key, logits, embeddings

    def _label(self, logits, embeddings, category):
        if category is None:
            allowed = logits
            part = logits.argmax(axis=1)
        else:
            parts = part_metrics.category_parts(category)
            allowed = logits[:, parts[0] : parts[-1] + 1]
            part = part_metrics.restrict_to_category(logits, category)
        allowed = allowed.astype(np.float64)
        exponentials = np.exp(allowed - allowed.max(axis=1, keepdims=True))
        probabilities = np.zeros((len(part), shapenet.NUM_PARTS))  # softmax among the allowed parts
        first = 0 if category is None else part_metrics.category_parts(category)[0]
        probabilities[:, first:first + allowed.shape[1]] = exponentials / exponentials.sum(axis=1, keepdims=True)
        score = probabilities[np.arange(len(part)), part]
        instance, _ = postprocess.mean_shift(embeddings, self.bandwidth)
        # sklearn's MeanShift can keep a centre that is no point's nearest: instances are numbered
        # 0..K-1 over the centres that hold points, in the centres' order.
        held, instance = np.unique(instance, return_inverse=True)
        instance_part = postprocess.cluster_classes(instance, part, len(held))
        table = metrics.instance_table(instance, part, probabilities)  # the same parts: the mode, ties lowest
        return ShapePrediction(part.astype(np.int32), instance.astype(np.int32), score.astype(np.float32),
                               instance_part.astype(np.int32), table.confidences)


# ------------------------------------------------------------------------------------------------
# Pictures
# ------------------------------------------------------------------------------------------------


def shape_panels(part_pred, instance_pred, part_gt=None, instance_gt=None):
    """{panel title: (file suffix, uint8 colours, part ids or None)} in Figure 5's order: part
    prediction, part ground truth, instance prediction, instance ground truth (ground truth
    where given). The part panels keep their part ids for their legends; instance panels hold None."""
    from jsnet_tf import io

    panels = {"part prediction": ("part_pred", io.semantic_colors(part_pred, shapenet.PALETTE), part_pred)}
    if part_gt is not None:
        panels["part ground truth"] = ("part_gt", io.semantic_colors(part_gt, shapenet.PALETTE), part_gt)
    panels["instance prediction"] = ("ins_pred", io.instance_colors(instance_pred), None)
    if instance_gt is not None:
        panels["instance ground truth"] = ("ins_gt", io.instance_colors(instance_gt), None)
    return panels


def render_shape(path, xyz, panels, title, part_names=None):
    """One PNG of the panels (`shape_panels`) side by side, the shape seen along -z (x right,
    y up); with `part_names` (a name per part id, e.g. "Mug/part0"), a legend of the parts
    drawn below each part panel."""
    from jsnet_tf import viz

    legends = {} if part_names is None else {
        name: (parts, part_names) for name, (_, _, parts) in panels.items() if parts is not None
    }
    viz.render_segmentation_panel(path, xyz, {name: rgb for name, (_, rgb, _) in panels.items()}, title=title,
                                  legends=legends)


def _write_pictures(folder, name, xyz, labels, title, part_names):
    """A coloured PLY per panel (with the predicted labels as properties) and the PNG."""
    from jsnet_tf import io

    panels = shape_panels(labels["part_pred"], labels["instance_pred"], labels["part_gt"], labels["instance_gt"])
    extra = {"part": labels["part_pred"], "instance": labels["instance_pred"]}
    for suffix, rgb, _ in panels.values():
        io.write_ply(folder / f"{name}_{suffix}.ply", xyz, rgb, extra=extra)
    render_shape(folder / f"{name}.png", xyz, panels, title, part_names)


# ------------------------------------------------------------------------------------------------
# Evaluation of a prepared split
# ------------------------------------------------------------------------------------------------


def _weights_digest(model):
    """A digest of every model variable's value: reused outputs must come from these weights."""
    digest = hashlib.sha256()
    for variable in model.variables:
        digest.update(variable.path.encode())
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    return digest.hexdigest()


def _check_shapes(path, parts):
    """Finite points, known categories and ground-truth parts of the shape's category (DataError
    naming the file and shape otherwise)."""
    finite = np.isfinite(parts.data).all(axis=(1, 2))
    if not finite.all():
        raise DataError(f"{path}: shape {int(np.argmax(~finite))} holds NaN or infinite values")
    if parts.category.size and (parts.category.min() < 0 or parts.category.max() >= shapenet.NUM_CATEGORIES):
        bad = int(np.argmax((parts.category < 0) | (parts.category >= shapenet.NUM_CATEGORIES)))
        raise DataError(f"{path}: shape {bad} has category {parts.category[bad]}, outside 0..{shapenet.NUM_CATEGORIES - 1}")
    part = parts.part
    in_range = (part >= 0) & (part < shapenet.NUM_PARTS)
    owner = shapenet.PART_TO_CATEGORY[np.where(in_range, part, 0)]
    bad = ~in_range | (owner != parts.category[:, None])
    if bad.any():
        shape, point = np.unravel_index(int(np.argmax(bad)), bad.shape)
        name = shapenet.CATEGORY_NAMES[parts.category[shape]]
        raise DataError(f"{path}: shape {shape} ({name}) has part {part[shape, point]} at point {point}, "
                        f"not a part of {name}")


def _segment_file(segmenter, path, parts, seed, bar):
    """The arrays of one h5 file's npz: every shape through the network and mean-shift."""
    rng = np.random.default_rng([int(seed), zlib.crc32(path.name.encode())])
    shapes = ((i, points, int(category)) for i, (points, category) in enumerate(zip(parts.data, parts.category)))
    part_pred = np.empty(parts.part.shape, np.int32)
    instance_pred = np.empty(parts.part.shape, np.int32)
    tables = []
    for i, prediction in segmenter.segment_shapes(shapes, rng):
        part_pred[i] = prediction.part
        instance_pred[i] = prediction.instance
        tables.append(prediction.instances)
        if bar is not None:
            bar.update(1)
    return {
        "xyz": parts.data[:, :, :3], "part_gt": parts.part, "part_pred": part_pred,
        "instance_gt": parts.instance, "instance_pred": instance_pred, "category": parts.category,
        **_stack_tables(tables),
    }


# The instance tables of a file's shapes, stacked: one row per instance, `instance_shape` its shape.
TABLE_KEYS = ("instance_shape", "instance_id", "instance_part", "instance_confidence", "instance_points")


def _stack_tables(tables):
    shape = np.concatenate([np.full(t.ids.size, i, np.int64) for i, t in enumerate(tables)] + [np.zeros(0, np.int64)])
    columns = [np.concatenate([column[k] for column in tables] + [np.zeros(0)]) for k in range(4)]
    return dict(zip(TABLE_KEYS, [shape, columns[0].astype(np.int64), columns[1].astype(np.int64), columns[2],
                                 columns[3].astype(np.int64)]))


def shape_tables(arrays, count):
    """The instance table of each of a file's `count` shapes, from its stacked arrays."""
    shape = arrays["instance_shape"]
    return [metrics.InstanceTable(*(arrays[key][shape == i] for key in TABLE_KEYS[1:])) for i in range(count)]


def _write_instance_lists(out_dir, stem, arrays, count):
    """`<h5 stem>_instances.txt` (shape, id, part, confidence, points a line, confidences exact)
    and every shape in the ScanNet benchmark's submission format (item `<h5 stem>_<shape>`,
    label id = part + 1, every part an instance class)."""
    from jsnet_tf.files import write_text_atomic

    lines = ["# shape id part confidence points"] + [
        f"{int(s)} {int(i)} {int(p)} {float(q)!r} {int(n)}" for s, i, p, q, n in zip(*(arrays[key] for key in TABLE_KEYS))
    ]
    write_text_atomic(out_dir / f"{stem}{metrics.INSTANCES_SUFFIX}", "\n".join(lines) + "\n")
    for i, table in enumerate(shape_tables(arrays, count)):
        metrics.write_benchmark_instances(
            out_dir, f"{stem}_{i}", arrays["instance_pred"][i], table, arrays["part_gt"][i], arrays["instance_gt"][i],
            label_ids=range(1, shapenet.NUM_PARTS + 1), instance_classes=range(shapenet.NUM_PARTS),
        )


def _stored(path, fingerprint):
    """The arrays of a finished file's npz made with `fingerprint`, else None."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            if "fingerprint" in z.files and str(z["fingerprint"]) == fingerprint:
                return {k: z[k] for k in z.files if k != "fingerprint"}
    except (OSError, ValueError, EOFError):
        pass  # unreadable: run the file again
    return None


def evaluate_shapenet(model, cfg, data_dir, out_dir, split="test", batch_size=8, bandwidth=0.6, pictures=4, seed=0,
                      progress=True, info=None, overwrite=False):
    """Part mIoU of `model` on the prepared `split` in `data_dir`; writes the outputs listed in
    the module docstring into `out_dir` and returns the results.json dict.

    `cfg` is the run's config (data.num_points: points per network row); `pictures`: how many
    of the first shapes get pictures; `seed`: the shuffling of shapes of other than num_points
    points (prepared shapes have exactly num_points: nothing is random then); `info`: extra
    entries for results.json (e.g. the weights); `overwrite`: run every file again, even those
    with finished outputs of the same weights and settings. Network outputs that are not finite are an
    EvaluationError raised before the h5 file they occur in writes anything (with an untrained
    network, before anything is written).
    """
    from tqdm import tqdm

    started = time.time()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if isinstance(pictures, bool) or not isinstance(pictures, int) or pictures < 0:
        raise EvaluationError(f"pictures must be a number of shapes >= 0, got {pictures!r}")
    files = shapenet.prepared_files(data_dir, split)
    sizes = [shapenet.read_shapenet_h5_size(path)[0] for path in files]  # DataError for a missing file
    num_points = cfg["data"]["num_points"]
    segmenter = ShapeSegmenter(model, num_points, bandwidth, batch_size)
    part_names = list(shapenet.PART_NAMES)
    part_evaluator = part_metrics.PartEvaluator()
    instance_evaluator = metrics.Evaluator(shapenet.NUM_PARTS, part_names)
    settings = {"outputs": 2, "num_points": num_points, "bandwidth": float(bandwidth), "seed": int(seed),
                "weights": _weights_digest(model)}  # outputs 2: instance tables and submission files
    bar = tqdm(total=sum(sizes), unit="shape", desc=f"ShapeNet {split}") if progress else None
    shape_count = 0
    try:
        for path in files:
            stat = path.stat()
            fingerprint = json.dumps({**settings, "h5": [path.name, stat.st_size, stat.st_mtime_ns]}, sort_keys=True)
            stored = out_dir / f"{path.stem}.npz"
            arrays = None if overwrite else _stored(stored, fingerprint)
            fresh = arrays is None
            if fresh:
                parts = shapenet.read_shapenet_h5(path)
                _check_shapes(path, parts)
                if bar is not None:
                    bar.set_postfix_str(path.name)
                arrays = _segment_file(segmenter, path, parts, seed, bar)
            elif bar is not None:
                bar.update(len(arrays["category"]))
            count = len(arrays["category"])
            shape_iou = np.array([
                part_evaluator.add_shape(arrays["part_gt"][i], arrays["part_pred"][i], int(arrays["category"][i]),
                                         f"{path}: shape {i}")
                for i in range(count)
            ])
            for i, table in enumerate(shape_tables(arrays, count)):
                instance_evaluator.add_room(arrays["part_gt"][i], arrays["instance_gt"][i], arrays["part_pred"][i],
                                            arrays["instance_pred"][i], where=f"{path}: shape {i}", instances=table)
            if fresh:  # its instance lists and pictures, then its npz (which marks the file done)
                _write_instance_lists(out_dir, path.stem, arrays, count)
                for i in range(min(count, max(pictures - shape_count, 0))):
                    name = shapenet.CATEGORY_NAMES[arrays["category"][i]]
                    labels = {k: arrays[k][i] for k in ("part_pred", "part_gt", "instance_pred", "instance_gt")}
                    _write_pictures(out_dir / "pictures", f"{path.stem}_{i}_{name}", arrays["xyz"][i], labels,
                                    f"{path.name} shape {i} ({name}): part IoU {100 * shape_iou[i]:.1f}", part_names)
                with AtomicTarget(stored) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez_compressed(f, fingerprint=np.array(fingerprint), shape_iou=shape_iou, **arrays)
            shape_count += count
    finally:
        if bar is not None:
            bar.close()

    instances = instance_evaluator.result()
    result = {
        **(info or {}),
        "split": split,
        "data_dir": str(data_dir),
        "files": [p.name for p in files],
        "num_points": num_points,
        "bandwidth": float(bandwidth),
        "seed": int(seed),
        **part_evaluator.result(),
        "part_accuracy": instances["oAcc"],
        "instances": {
            "protocol": "mean-shift per shape on the embeddings; each shape one room of jsnet_tf.metrics.Evaluator, "
                        "means over the parts that have ground-truth (Cov, WCov, recall) or predicted (precision) instances",
            **{key: instances[key] for key in ("mCov", "mWCov", "mPrec", "mRec", "AP", "AP50", "AP25")},
            "part_names": part_names,
            "per_part": {key: instances["per_class"][key] for key in ("cov", "wcov", "precision", "recall", "ap", "ap50", "ap25")},
            "instance_ap": instances["instance_ap"],
            "counts": {key: instances["counts"][key] for key in ("gt_instances", "pred_instances", "true_positives")},
        },
        "seconds": round(time.time() - started, 1),
    }
    write_text_atomic(out_dir / "results.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out_dir / "results.txt", format_results(result) + "\n")
    return result


def format_results(result):
    """results.txt: the part IoU table with the paper's value, then the part instances' metrics."""

    def percent(value):
        return "-" if value is None else f"{100 * value:.1f}"

    instances = result["instances"]
    return "\n".join([
        part_metrics.format_table(result),
        f"points with the right part: {percent(result['part_accuracy'])}%",
        f"part instances (mean-shift, bandwidth {result['bandwidth']:g}; means over the {shapenet.NUM_PARTS} parts): "
        + "  ".join(f"{key} {percent(instances[key])}" for key in ("mCov", "mWCov", "mPrec", "mRec")),
        f"part instances, beyond the paper (the ScanNet benchmark's AP rules, instances of at least "
        f"{metrics.AP_MIN_POINTS} points): " + "  ".join(f"{key} {percent(instances[key])}" for key in ("AP", "AP50", "AP25")),
    ])
