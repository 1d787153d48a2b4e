"""What the datasets of rooms share (S3DIS rooms, ScanNet scenes): 1 m blocks of 9 channels, the
paper's test protocol (mean-shift and BlockMerging, the size filter of mean training instance
sizes), the evaluation outputs, the pictures, and predict on users' point clouds."""

from __future__ import annotations

import functools
import pathlib
import sys
import warnings

import numpy as np

from jsnet_tf.data import s3dis
from jsnet_tf.errors import DataError
from jsnet_tf.tasks.base import Predictor, Task

MEAN_INS_SIZE_FILE = "mean_ins_size.txt"  # in a run folder (jsnet-convert --mean_ins_size), as the original kept it
NAN_AS_INTEGER = float(-(2**63))  # what the original's `.astype(np.int)` makes of a class without instances

# The channels of a room block (s3dis.block_channels).
ROOM_CHANNELS = (
    "x - (block min x + block_size / 2)", "y - (block min y + block_size / 2)", "z",
    "red / 255", "green / 255", "blue / 255", "x / room max x", "y / room max y", "z / room max z",
)


class RoomTask(Task):
    """A dataset of rooms cut into blocks; subclasses give the data layout and the labels."""

    item = "room"
    channel_names = ROOM_CHANNELS
    predict_flags = ("mean_ins_size", "min_instance_points", "color_max", "color", "max_points_per_pass", "format",
                     "e57_scan")
    takes_mean_instance_sizes = True
    shardable = True

    def load_item(self, path) -> s3dis.Room:
        return s3dis.load_room(path)

    def new_evaluator(self):
        from jsnet_tf import metrics

        return metrics.Evaluator(self.num_classes, self.class_names, instance_classes=self.instance_classes,
                                 ignore_label=self.ignore_label)

    # -------------------------------------------------------------------------- instance sizes

    def mean_size_file(self, data_dir, fold) -> pathlib.Path:
        """The prepared mean training instance sizes of a fold's training data."""
        raise NotImplementedError

    def load_mean_instance_sizes(self, path) -> np.ndarray:
        """The mean instance size of each class from a file in the original's format (`np.savetxt`,
        one class a line): finite, non-negative numbers, one per class, else DataError naming the file."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such file (expected the mean instance sizes, one class a line)")
        with warnings.catch_warnings():  # an empty file is reported as 0 values, below
            warnings.simplefilter("ignore", UserWarning)
            sizes = s3dis.read_mean_ins_size(path, self.num_classes)
        bad = [c for c, size in enumerate(sizes) if not (np.isfinite(size) and size >= 0)]
        if bad:
            listed = ", ".join(f"{self.class_names[c]} {sizes[c]:g}" for c in bad)
            why = (" (the original writes the integer cast of NaN for a class without instances in its training data)"
                   if NAN_AS_INTEGER in sizes[bad] else "")
            raise DataError(f"{path}: mean instance sizes must be finite and non-negative, got {listed}{why}")
        return sizes

    def mean_instance_sizes(self, cfg, run_dir, fold):
        """(sizes, source file or None) for the size filter: the run folder's own (a converted
        original's), else the prepared data's; without either, zeros (nothing is filtered) and a
        warning."""
        stored = pathlib.Path(run_dir) / MEAN_INS_SIZE_FILE
        listed = self.mean_size_file(cfg["data"]["data_dir"], fold)
        source = stored if stored.exists() else listed if listed.exists() else None
        if source is None:
            print(f"evaluate: warning: {self.fold_description(fold)}: no mean instance sizes (neither {stored} nor {listed} "
                  "exists): instances are NOT filtered by size, unlike the paper's protocol", file=sys.stderr, flush=True)
            return np.zeros(self.num_classes), None
        return self.load_mean_instance_sizes(source), str(source)

    # -------------------------------------------------------------------------- evaluation

    def test_rooms(self, cfg, fold):
        """The jsnet_tf.room_evaluation.RoomSet a run of `fold` is tested on."""
        raise NotImplementedError

    def evaluate(self, model, cfg, run_dir, fold, context):
        from jsnet_tf import room_evaluation

        rooms = self.test_rooms(cfg, fold)
        sizes, source = self.mean_instance_sizes(cfg, run_dir, fold)
        out_dir = pathlib.Path(context.out_dir or pathlib.Path(run_dir) / "eval")
        return room_evaluation.evaluate_rooms(self, model, cfg, rooms, out_dir, context, sizes, source)

    def write_item_labels(self, out_dir, result) -> None:
        """The room's per-point label files in the dataset's own formats."""

    def write_item_outputs(self, out_dir, result, pictures) -> None:
        """Every file of one evaluated room: the dataset's label files, the instance list, the
        instances in the ScanNet benchmark's submission format, and the pictures."""
        from jsnet_tf import metrics

        out_dir = pathlib.Path(out_dir)
        self.write_item_labels(out_dir, result)
        metrics.write_instance_list(out_dir / f"{result.name}{metrics.INSTANCES_SUFFIX}", result.instances)
        metrics.write_benchmark_instances(out_dir, result.name, result.instance_pred, result.instances,
                                          result.semantic_gt, result.instance_gt, self.label_ids, self.instance_classes)
        if pictures:
            self.write_pictures(out_dir / "pictures", result)

    def finish_item_outputs(self, out_dir, names) -> None:
        """Files written once every room is done (e.g. S3DIS's output_filelist.txt)."""

    def write_pictures(self, folder, result) -> None:
        """Coloured PLYs (semantic / instance, predicted / ground truth) and one PNG of the four,
        the semantic panels with a legend of their classes."""
        from jsnet_tf import io, viz

        folder.mkdir(parents=True, exist_ok=True)
        colours = {
            "semantic ground truth": ("sem_gt", self.semantic_colors(result.semantic_gt)),
            "semantic prediction": ("sem_pred", self.semantic_colors(result.semantic_pred)),
            "instance ground truth": ("ins_gt", io.instance_colors(result.instance_gt)),
            "instance prediction": ("ins_pred", io.instance_colors(result.instance_pred)),
        }
        labels = {"semantic": result.semantic_pred, "instance": result.instance_pred}
        for suffix, rgb in colours.values():
            io.write_ply(folder / f"{result.name}_{suffix}.ply", result.xyz, rgb, extra=labels)
        z = result.xyz[:, 2]
        names = list(self.class_names)
        viz.render_segmentation_panel(
            folder / f"{result.name}.png", result.xyz, {title: rgb for title, (_, rgb) in colours.items()},
            title=f"{result.name} (top view below 85% of the height)", z_max=float(z.min() + 0.85 * (z.max() - z.min())),
            legends={"semantic ground truth": (result.semantic_gt, names), "semantic prediction": (result.semantic_pred, names)},
        )

    # -------------------------------------------------------------------------- predict

    def predict_instance_sizes(self, cfg, run_dir, fold, mean_ins_size_file=None, min_instance_points=None):
        """(mean instance size per class, size fraction, description) for predict's size filter,
        from --min_instance_points, --mean_ins_size, the run folder's mean_ins_size.txt (written by
        `jsnet-convert --mean_ins_size`) or the run's training data, the first given; with none of
        them, instances are not filtered by size and a warning says so."""
        from jsnet_tf.prediction import PredictError

        if min_instance_points is not None:
            if mean_ins_size_file:
                raise PredictError("give --mean_ins_size or --min_instance_points, not both")
            if min_instance_points < 0:
                raise PredictError(f"--min_instance_points must be >= 0, got {min_instance_points}")
            # size > 1.0 * (n - 0.5) keeps exactly the instances of at least n points.
            sizes = np.full(self.num_classes, max(min_instance_points - 0.5, 0.0))
            return sizes, 1.0, f"instances of fewer than {min_instance_points} points are dropped"
        stored = pathlib.Path(run_dir) / MEAN_INS_SIZE_FILE
        if mean_ins_size_file:
            path = pathlib.Path(mean_ins_size_file)
            if not path.exists():
                raise PredictError(f"--mean_ins_size {path}: no such file")
        elif stored.exists():
            path = stored
        else:
            path = self.mean_size_file(cfg["data"]["data_dir"], fold) if fold is not None or not self.has_folds else None
            if path is None or not path.exists():
                looked = f"{stored}" + (f" nor {path}" if path else "; give --area K for the run's training data lists")
                print(
                    f"predict: warning: no mean instance sizes (neither {looked} exists): instances are not filtered by "
                    "size; give --mean_ins_size FILE (e.g. the original's mean_ins_size.txt) or --min_instance_points N",
                    file=sys.stderr, flush=True,
                )
                return np.zeros(self.num_classes), 1.0, "instances are NOT filtered by size (no mean instance sizes)"
        sizes = self.load_mean_instance_sizes(path)
        fraction = cfg["eval"]["size_fraction"]
        return sizes, fraction, f"instances of at most {fraction:g} x their class's mean size in {path} are dropped"

    def predictor(self, model, cfg, run_dir, fold, options):
        from jsnet_tf import prediction
        from jsnet_tf.evaluation import RoomSegmenter

        extra = options.extra
        sizes, fraction, filter_text = self.predict_instance_sizes(
            cfg, run_dir, fold, extra.get("mean_ins_size"), extra.get("min_instance_points"))
        eval_cfg = {**cfg["eval"], "size_fraction": fraction, "label_all_points": True}
        segmenter = RoomSegmenter(
            model, cfg["data"]["num_points"], sizes, eval_cfg, cfg["data"]["block_size"],
            size_in_rows=extra.get("min_instance_points") is None,  # --min_instance_points counts points
        )
        cloud = prediction.CloudSegmenter(segmenter, extra.get("max_points_per_pass", prediction.DEFAULT_MAX_POINTS_PER_PASS))
        predict = functools.partial(prediction.predict_file, cloud_segmenter=cloud, class_names=list(self.class_names),
                                    palette=self.palette(), seed=eval_cfg["seed"], options=options)
        return Predictor(lambda path, out_dir: predict(path, out_dir=out_dir), filter_text)
