"""Labelling users' shapes with a trained ShapeNet part model, flag-free (the program is
`jsnet_tf.predict`, built by the ShapeNet task).

Every input is one shape: `.txt` with `x y z nx ny nz [part]` a line (part: a ground-truth part id
0..49, optional) or `.ply` with nx, ny and nz vertex properties; normals are required. The shape is
normalised to the unit sphere as training does (jsnet_tf.data.shapenet.normalize_xyz), every point
is labelled (rows of data.num_points, the last topped up with repeats), its parts are predicted
among the parts of its category (default: among all 50) and its part instances found by mean-shift
on its embeddings (jsnet_tf.tasks.part_evaluation). Per input `<stem>`, in the input's coordinates:
  <stem>_parts.ply      coloured by part, with `part`, `instance` and `score` properties
  <stem>_instances.ply  coloured by instance, same properties
  <stem>_labels.txt     `x y z part instance score` a line
  <stem>_instances.txt  the part instances, `id part confidence points` a line
  <stem>_labels.npz     xyz, normals, part, instance, score, instance_part (each instance's part),
                        instance_confidence, category, classes (part names); part_gt and shape_iou
                        with ground truth
  <stem>.png            views along -z (x right, y up: the release's up axis) coloured by part,
                        by ground-truth part (when given) and by instance
With ground-truth parts, the shape's part IoU (PointNet++'s protocol) over the parts of the
category, or of the category its parts belong to, is printed and stored.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np

from jsnet_tf.prediction import PredictError, output_paths, publish_outputs, write_labels_txt

SHAPE_OUTPUT_SUFFIXES = ("_parts.ply", "_instances.ply", "_labels.txt", "_instances.txt", "_labels.npz", ".png")
SHAPE_SUFFIXES = (".txt", ".ply")


@dataclasses.dataclass
class ShapeInput:
    """One shape read from a file, in the file's coordinates."""

    xyz: np.ndarray  # (P, 3) float64
    normals: np.ndarray  # (P, 3) float64
    part: np.ndarray | None  # (P,) int32 ground-truth part ids (a txt file's 7th column), or None
    num_dropped: int = 0  # points left out for NaN or infinite values


def shape_category(name):
    """The category name in CATEGORIES for a --category value (any case), or None for None."""
    from jsnet_tf.data import shapenet

    if name is None:
        return None
    by_lower = {category.lower(): category for category in shapenet.CATEGORY_NAMES}
    if name.lower() not in by_lower:
        raise PredictError(f"--category {name}: not a ShapeNet part category ({', '.join(shapenet.CATEGORY_NAMES)})")
    return by_lower[name.lower()]


def read_shape_input(path, nan_policy="drop", category=None):
    """Reads a shape: `.txt` with `x y z nx ny nz [part]` a line (blank lines and `#` / `//`
    comments skipped) or `.ply` with nx, ny, nz vertex properties. Points with a NaN or infinite
    value are dropped (counted) or, with nan_policy="error", an error. Ground-truth parts must be
    integers 0..49, and parts of `category` when it is given. PredictError (or io's
    PointCloudError) naming the file and line otherwise."""
    from jsnet_tf import io

    path = pathlib.Path(path)
    if path.suffix.lower() not in SHAPE_SUFFIXES:
        raise PredictError(
            f"{path}: a ShapeNet part run takes .txt shapes (x y z nx ny nz [part] a line) or .ply shapes with nx, ny "
            f"and nz properties, not {path.suffix or 'a file without a suffix'}"
        )
    dropped = 0
    if path.suffix.lower() == ".ply":
        cloud = io.read_point_cloud(path, nan_policy=nan_policy)
        missing = [name for name in ("nx", "ny", "nz") if name not in cloud.extra]
        if missing:
            raise PredictError(
                f"{path}: no normals ({', '.join(missing)} missing; properties: x, y, z"
                f"{''.join(', ' + name for name in cloud.extra)}): a ShapeNet part model needs nx, ny and nz"
            )
        table = np.column_stack([cloud.xyz] + [cloud.extra[name].astype(np.float64) for name in ("nx", "ny", "nz")])
        lines, dropped = None, cloud.num_dropped
    else:
        table, lines = _read_shape_txt(path)
    bad = ~np.isfinite(table).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        where = f"{path}:{lines[first]}" if lines is not None else f"{path}: point {first}"
        if nan_policy == "error":
            raise PredictError(f"{where}: a NaN or infinite value ({int(bad.sum())} of {len(table)} points have one); "
                               "pass --nan_policy=drop to leave them out")
        if bad.all():
            raise PredictError(f"{path}: all {len(table)} points have NaN or infinite values")
        table = table[~bad]
        lines = None if lines is None else lines[~bad]
        dropped += int(bad.sum())
    part = _shape_parts(path, table[:, 6], lines, category) if table.shape[1] == 7 else None
    return ShapeInput(table[:, :3], table[:, 3:6], part, dropped)


def _read_shape_txt(path):
    """(table (P, 6 or 7) float64, the line number of each row) of a shape's text file."""
    from jsnet_tf import io

    try:
        data = path.read_bytes()
    except OSError as e:
        raise PredictError(f"{path}: cannot read: {e.strerror or e}") from None
    if not data.strip():
        raise PredictError(f"{path}: empty file (no points)")
    data = data.replace(b"\r", b"")
    first = io._first_data_line(data)
    if first is None:
        raise PredictError(f"{path}: no points (the file is blank or only comments)")
    number, start, end = first
    count = len(data[start:end].split())
    if count not in (6, 7):
        hint = ": normals are required" if count < 6 else ""
        raise PredictError(f"{path}:{number}: expected 6 (x y z nx ny nz) or 7 (x y z nx ny nz part) numbers, "
                           f"found {count}{hint}")
    try:
        table = np.loadtxt(data.decode("latin-1").splitlines(), dtype=np.float64, ndmin=2, comments=("#", "//"))
    except ValueError as e:
        raise PredictError(io._first_bad_text_line(path, data, count, number) or f"{path}: cannot parse: {e}") from None
    lines = np.array([k for k, line in enumerate(data.split(b"\n"), start=1)
                      if line.strip() and not io._is_comment(line.strip())])
    return table, lines


def _shape_parts(path, values, lines, category):
    """Ground-truth part ids from a txt file's 7th column, checked."""
    from jsnet_tf.data import shapenet

    part = np.rint(values)
    bad = (values != part) | (part < 0) | (part >= shapenet.NUM_PARTS)
    expected = f"a part id 0..{shapenet.NUM_PARTS - 1}"
    if category is not None:
        parts = shapenet.CATEGORIES[category].parts
        bad |= (part < parts[0]) | (part > parts[-1])
        expected = f"a part of {category} ({parts[0]}..{parts[-1]})"
    if bad.any():
        k = int(np.argmax(bad))
        raise PredictError(f"{path}:{lines[k]}: part {values[k]:g} is not {expected}")
    return part.astype(np.int32)


def _iou_category(shape, category):
    """The category whose parts the shape's IoU is taken over: --category, else the one category
    its ground-truth parts belong to; None without ground truth or when they span several."""
    from jsnet_tf.data import shapenet

    if shape.part is None:
        return None
    if category is not None:
        return category
    owners = np.unique(shapenet.PART_TO_CATEGORY[shape.part])
    return shapenet.CATEGORY_NAMES[owners[0]] if len(owners) == 1 else None


def write_shape_outputs(out_dir, stem, shape, normalised, prediction, class_names, category=None, shape_iou=None,
                        txt=True, pictures=True):
    """Writes one shape's outputs (SHAPE_OUTPUT_SUFFIXES) all together or not at all
    (`publish_outputs`): `shape` a ShapeInput, `normalised` its unit-sphere xyz, `prediction` a
    part_evaluation.ShapePrediction."""
    from jsnet_tf import io, metrics
    from jsnet_tf.tasks.part_evaluation import render_shape, shape_panels

    def write(staged):
        labels = {"part": prediction.part, "instance": prediction.instance, "score": prediction.score}
        panels = shape_panels(prediction.part, prediction.instance, shape.part)
        io.write_ply(staged["_parts.ply"], shape.xyz, panels["part prediction"][1], extra=labels)
        io.write_ply(staged["_instances.ply"], shape.xyz, panels["instance prediction"][1], extra=labels)
        if txt:
            write_labels_txt(staged["_labels.txt"], shape.xyz, prediction.part, prediction.instance, prediction.score,
                             header="x y z part instance score")
        metrics.write_instance_list(staged["_instances.txt"], prediction.instances,
                                    header=metrics.INSTANCE_LIST_HEADER.replace("class", "part"))
        arrays = {
            "xyz": shape.xyz, "normals": shape.normals, "part": prediction.part, "instance": prediction.instance,
            "score": prediction.score, "instance_part": prediction.instance_part,
            "instance_confidence": prediction.instance_confidence, "category": np.array(category or ""),
            "classes": np.array(class_names),
        }
        if shape.part is not None:
            arrays["part_gt"] = shape.part
        if shape_iou is not None:
            arrays["shape_iou"] = np.array(shape_iou)
        with open(staged["_labels.npz"], "wb") as f:
            np.savez(f, **arrays)
        if pictures:
            scored = "" if shape_iou is None else f", part IoU {100 * shape_iou:.1f}"
            render_shape(staged[".png"], normalised, panels,
                         f"{stem} ({category or 'all 50 parts'}{scored}): unit sphere seen along -z (x right, y up)",
                         class_names)

    return publish_outputs(out_dir, stem, SHAPE_OUTPUT_SUFFIXES, write)


def predict_shape_file(path, segmenter, class_names, seed, out_dir, options, category=None):
    """Reads, segments and writes one shape of a ShapeNet part run (options:
    jsnet_tf.tasks.base.PredictOptions); returns a one-line summary."""
    from jsnet_tf.data import shapenet
    from jsnet_tf.tasks import part_metrics

    started = time.time()
    existing = [p for p in output_paths(out_dir, path.stem, SHAPE_OUTPUT_SUFFIXES) if p.exists()]
    if existing and not options.overwrite:
        raise PredictError(f"{existing[0]} exists (pass --overwrite to replace it)")
    shape = read_shape_input(path, options.nan_policy, category)
    notes = [f"{len(shape.xyz)} points"]
    if shape.num_dropped:
        notes.append(f"dropped {shape.num_dropped} with NaN or infinite values")
    notes.append(f"{segmenter.count_rows(len(shape.xyz))} network rows of {segmenter.num_points} points")
    print(f"{path}: " + "; ".join(notes), flush=True)
    normalised = shapenet.normalize_xyz(shape.xyz)
    points = np.concatenate([normalised, shape.normals], axis=1).astype(np.float32)
    prediction = segmenter.segment(points, category, rng=np.random.default_rng(seed))
    iou_category = _iou_category(shape, category)
    shape_iou = None
    if iou_category is not None:
        shape_iou = float(part_metrics.shape_part_ious(shape.part, prediction.part, iou_category, str(path)).mean())
    written = write_shape_outputs(out_dir, path.stem, shape, normalised, prediction, class_names, category, shape_iou,
                                  options.txt, options.pictures)
    parts, counts = np.unique(prediction.instance_part, return_counts=True)
    instances = ", ".join(f"{n} x {class_names[p]}" for p, n in zip(parts, counts))
    scored = "" if shape_iou is None else f"; part IoU {100 * shape_iou:.1f} over {iou_category}'s parts"
    return (f"{path}: parts predicted: {len(np.unique(prediction.part))}; instances: {len(prediction.instance_part)} "
            f"({instances}){scored} -> {', '.join(p.name for p in written)} ({time.time() - started:.1f} s)")
