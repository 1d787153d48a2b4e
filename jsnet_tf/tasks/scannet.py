"""ScanNet v2 (Dai et al. 2017), the benchmark every instance-segmentation method since 2020 reports:
scenes (mesh vertices with colour) of the official train / val / test splits, 20 benchmark classes
of which 18 have instances (not wall, not floor), unannotated vertices ignored. One model (the run
folder is the workdir itself) trained as the paper trains on S3DIS (1 m blocks at stride 0.5 of
the train scenes, points drawn afresh every epoch, 9 channels), validated on scenes carved from
train (never on val, the reported split), evaluated on val with the benchmark's instance protocol
(AP / AP50 / AP25 over the 18 classes, instances of at least 100 vertices) and mIoU over the 20,
JSNet's own mCov / mWCov / mPrec / mRec beside them, every mesh vertex labelled in the release's
order and written in the benchmark's submission formats."""

from __future__ import annotations

import numbers
import pathlib

import numpy as np

from jsnet_tf.data import s3dis, scannet
from jsnet_tf.errors import DataError
from jsnet_tf.tasks.base import TaskError, TrainingData, check_model_selection
from jsnet_tf.tasks.rooms import RoomTask

# Training blocks need this many labelled points (the original's rule, counted on labelled points).
MIN_LABELLED_POINTS = 100


class ScanNetTask(RoomTask):
    name = "scannet"
    title = "ScanNet v2"
    item = "scene"
    class_names = scannet.CLASSES
    label_ids = scannet.NYU40_IDS  # the benchmark's files hold nyu40 ids
    instance_classes = scannet.INSTANCE_CLASSES  # the 18 classes with instances
    ignore_label = scannet.IGNORE
    data_keys = frozenset({"data_dir", "areas", "num_points", "block_size", "sampling", "validation_rooms"})
    prepare_command = "jsnet-prepare-scannet"
    start_config = "scannet"

    def palette(self):
        return scannet.PALETTE

    def fold_description(self, fold):
        return "the train split, scenes carved from it for validation, val for testing"

    # -------------------------------------------------------------------------- training

    def scene_files(self, data_dir, split):
        """The prepared scene files of a split (DataError naming the list or a missing file)."""
        path = scannet.list_path(data_dir, split)
        if not path.is_file():
            raise DataError(f"{path}: scene list missing (is ScanNet prepared in {data_dir}? {self.prepare_command})")
        files = s3dis.read_file_list(path)
        if not files:
            raise DataError(f"{path}: no scenes")
        for file in files:
            if not file.is_file():
                raise DataError(f"{file}: listed in {path} but missing")
        return files

    def split_validation(self, files, validation, seed):
        """(training files, validation files) of the train split: `validation` (data.validation_rooms)
        a fraction f in [0, 1) (max(1, round-half-up(f * n)) scenes drawn with a generator seeded by
        `seed`) or a list of train scene names; 0 or [] holds nothing out."""
        names = [f.stem for f in files]
        if isinstance(validation, numbers.Real) and not isinstance(validation, bool):
            if not 0.0 <= validation < 1.0:
                raise DataError(f"data.validation_rooms must be a fraction in [0, 1) or scene names, got {validation!r}")
            if validation == 0:
                return list(files), []
            count = max(1, int(np.floor(round(validation * len(files), 9) + 0.5)))
            if count >= len(files):
                raise DataError(f"data.validation_rooms={validation} would hold out all {len(files)} train scenes")
            held = set(np.random.default_rng([int(seed), 3]).choice(len(files), count, replace=False).tolist())
        else:
            unknown = [name for name in validation if name not in names]
            if unknown:
                raise DataError(f"data.validation_rooms: {unknown[0]} is not a scene of the train split")
            held = {names.index(name) for name in validation}
            if len(held) == len(files):
                raise DataError("data.validation_rooms takes every train scene: at least one must stay for training")
        return ([f for i, f in enumerate(files) if i not in held], [f for i, f in enumerate(files) if i in held])

    def training_data(self, cfg, fold):
        from jsnet_tf.data import pipeline

        d, t = cfg["data"], cfg["train"]
        if d["sampling"] != "resample":
            raise TaskError(f"data.sampling={d['sampling']!r}: ScanNet trains on the resampled blocks of its scenes "
                            "(\"resample\"); it prepares no fixed blocks")
        check_model_selection(cfg, bool(d["validation_rooms"]))
        train, held_out = self.split_validation(self.scene_files(d["data_dir"], "train"), d["validation_rooms"], t["seed"])
        block = {"num_points": d["num_points"], "block_size": d["block_size"], "min_points": MIN_LABELLED_POINTS,
                 "count_labelled": True}
        epoch_blocks = pipeline.epoch_blocks(None, None, files=train, **block)
        if held_out:
            selection = f"validation scenes ({len(held_out)} of the train split)"
            validation_files = held_out
        elif t["select_on_test_area"]:
            selection = "the val split (train.select_on_test_area=true: leaks the reported data)"
            validation_files = self.scene_files(d["data_dir"], "val")
        else:
            selection = "none (the last epoch is the model)"
            validation_files = None

        def dataset(epoch, batch_size):
            return pipeline.training_dataset(None, None, batch_size, seed=t["seed"], epoch=epoch, files=train, **block)

        def validation(batch_size):
            return pipeline.room_blocks_dataset(validation_files, batch_size, seed=t["seed"], **block)

        def describe(batch_size):
            return (f"ScanNet v2: {epoch_blocks} blocks per epoch (every stride-0.5 block of {len(train)} train scenes with "
                    f"{MIN_LABELLED_POINTS}+ labelled points, points drawn afresh), {epoch_blocks // batch_size} steps at "
                    f"batch {batch_size}; model selection: {selection}")

        record = {"dataset": self.name, "sampling": "resample", "epoch_blocks": epoch_blocks, "training_scenes": len(train),
                  "validation_rooms": [f.stem for f in held_out], "selection": selection,
                  "selected_on_test_area": bool(t["select_on_test_area"])}
        return TrainingData(record, epoch_blocks, dataset, validation if validation_files else None, describe)

    # -------------------------------------------------------------------------- evaluation

    def mean_size_file(self, data_dir, fold):
        return scannet.mean_ins_size_path(data_dir)

    def test_rooms(self, cfg, fold):
        from jsnet_tf.room_evaluation import RoomSet

        if not cfg["eval"]["label_all_points"]:
            raise TaskError("ScanNet is evaluated on every mesh vertex (the benchmark's protocol): eval.label_all_points "
                            "must be true")
        return RoomSet("ScanNet val", self.scene_files(cfg["data"]["data_dir"], "val"), {"split": "val"})

    def write_item_labels(self, out_dir, result):
        """`semantic/<scene>.txt`: the nyu40 id of every mesh vertex's predicted class, one a line,
        the benchmark's semantic label format (its evaluate_semantic_label.py)."""
        from jsnet_tf.files import write_text_atomic
        from jsnet_tf.metrics import format_lines

        folder = pathlib.Path(out_dir) / "semantic"
        folder.mkdir(parents=True, exist_ok=True)
        ids = np.asarray(self.label_ids, np.int64)[result.semantic_pred]
        write_text_atomic(folder / f"{result.name}.txt", format_lines([ids], "d").decode())

    # -------------------------------------------------------------------------- experiments

    def quick_data_commands(self, data_dir, num_points):
        """The commands that generate a tiny synthetic release and prepare it in `data_dir`."""
        import sys

        raw = pathlib.Path(data_dir) / "synthetic_raw"
        return [
            [sys.executable, "-m", "jsnet_tf.data.synthetic_scannet", "--out", str(raw), "--seed", "0"],
            [sys.executable, "-m", "jsnet_tf.data.prepare_scannet", "--raw", str(raw), "--out", str(data_dir),
             "--split_dir", str(raw / "splits"), "--num_points", str(num_points), "--noprogress"],
        ]

    def prepared_num_points(self, data_dir, fold):
        import json

        return int(json.loads((pathlib.Path(data_dir) / "prepare.json").read_text())["num_points"])

    def run_cost(self, cfg, fold):
        """(training steps, val scenes' blocks) of a run, from the prepared data."""
        from jsnet_tf.data import pipeline

        d, t = cfg["data"], cfg["train"]
        train, _ = self.split_validation(self.scene_files(d["data_dir"], "train"), d["validation_rooms"], t["seed"])
        blocks = pipeline.epoch_blocks(None, None, files=train, num_points=d["num_points"], block_size=d["block_size"],
                                       min_points=MIN_LABELLED_POINTS, count_labelled=True)
        test_blocks = pipeline.epoch_blocks(None, None, files=self.scene_files(d["data_dir"], "val"),
                                            num_points=d["num_points"], block_size=d["block_size"])
        return t["epochs"] * (blocks // t["batch_size"]), test_blocks

    def missing_data(self, data_dir, folds):
        wanted = [scannet.list_path(data_dir, "train"), scannet.list_path(data_dir, "val"), scannet.mean_ins_size_path(data_dir)]
        return [path for path in wanted if not path.is_file()]
