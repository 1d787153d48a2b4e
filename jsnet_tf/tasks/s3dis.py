"""S3DIS (Armeni et al. 2016), the paper's dataset: rooms of six areas, one model per held-out test
area (`<workdir>/area<k>`), 13 classes that all have instances, the original's test protocol and
output files (`<room>_pred.txt`, `<room>_gt.txt`, `output_filelist.txt`), 6-fold by merging areas."""

from __future__ import annotations

import pathlib

from jsnet_tf.data import s3dis
from jsnet_tf.tasks.base import TaskError, TrainingData, check_model_selection
from jsnet_tf.tasks.rooms import RoomTask

SAMPLING_DESCRIPTIONS = {
    "resample": "every stride-0.5 block of every training room, points drawn afresh (the original's; paper: RS)",
    "fixed": "the prepared h5 blocks, the same points every epoch (paper: fixed sample)",
    "random_corners": "random block corners, ceil(x) * ceil(y) per room (an upper bound)",
}


class S3DISTask(RoomTask):
    name = "s3dis"
    title = "S3DIS"
    item = "room"
    class_names = s3dis.CLASSES
    label_ids = tuple(range(1, len(s3dis.CLASSES) + 1))  # class index + 1 in the benchmark's files
    instance_classes = tuple(range(len(s3dis.CLASSES)))  # all 13, as the modern S3DIS evaluations count
    data_keys = frozenset({"data_dir", "areas", "num_points", "block_size", "sampling", "blocks_per_room",
                           "validation_rooms"})
    predict_flags = RoomTask.predict_flags + ("area",)  # --area picks a run of train.py's workdir
    prepare_command = "jsnet-prepare-s3dis"
    start_config = "s3dis_area5"
    has_folds = True

    def palette(self):
        return s3dis.PALETTE

    # -------------------------------------------------------------------------- folds and runs

    def training_folds(self, cfg, requested=None):
        if requested is not None:
            return [int(requested)]
        if not cfg["data"]["areas"]:
            raise TaskError("data.areas is empty: give the test area(s) to hold out, e.g. --area 5")
        return list(cfg["data"]["areas"])

    def run_dir(self, workdir, fold):
        return pathlib.Path(workdir) / f"area{fold}"

    def fold_description(self, fold):
        return "S3DIS" if fold is None else f"area {fold}"

    def evaluation_runs(self, workdir, requested):
        """The runs to evaluate: the area a run folder held out in training (and only that one:
        a run's config lists every area of its experiment), or train.py's area<k>/ runs."""
        from jsnet_tf import checkpoints

        workdir = pathlib.Path(workdir)
        if checkpoints.is_run_folder(workdir):
            recorded = checkpoints.run_area(workdir)
            if requested:
                if len(requested) > 1:
                    raise TaskError(f"{workdir} holds one model: give one --area, or train.py's workdir for several")
                if recorded is not None and requested[0] != recorded:
                    raise TaskError(f"{workdir} is the model of area {recorded}: area {requested[0]} was part of its training data")
                return [(requested[0], workdir)]
            if recorded is not None:
                return [(recorded, workdir)]
            areas = checkpoints.load_config(workdir)["data"]["areas"]
            if len(areas) != 1:
                raise TaskError(f"{workdir} does not record its test area: give --area")
            return [(areas[0], workdir)]
        if requested:
            return [(area, checkpoints.resolve_run(workdir, area)[0]) for area in requested]
        runs = checkpoints.area_runs(workdir)
        if not runs:
            raise TaskError(f"{workdir} holds no run (no area<k>/config.toml): give --area and a trained --workdir")
        return list(runs.items())

    def merged_results_name(self, folds):
        return "results_areas_" + "-".join(str(a) for a in folds)

    # -------------------------------------------------------------------------- training

    def training_data(self, cfg, fold):
        from jsnet_tf.data import pipeline

        d, t = cfg["data"], cfg["train"]
        if fold is None:
            raise TaskError("S3DIS training needs a test area to hold out (data.areas or --area)")
        check_model_selection(cfg, bool(d["validation_rooms"]))
        if d["blocks_per_room"] and d["sampling"] != "random_corners":
            raise TaskError(
                f"data.blocks_per_room={d['blocks_per_room']} applies to data.sampling=\"random_corners\" only "
                f"(this config has {d['sampling']!r}, whose epoch is every stride-0.5 block)"
            )
        blocks_per_room = (d["blocks_per_room"] or None) if d["sampling"] == "random_corners" else None
        train_rooms, validation_rooms = pipeline.split_rooms(d["data_dir"], fold, d["validation_rooms"], t["seed"])
        epoch_blocks = pipeline.epoch_blocks(
            d["data_dir"], fold, sampling=d["sampling"], num_points=d["num_points"], block_size=d["block_size"],
            blocks_per_room=blocks_per_room, rooms=train_rooms,
        )
        if validation_rooms:
            selection = f"validation rooms ({len(validation_rooms)} of the training areas)"
        elif t["select_on_test_area"]:
            selection = f"test area {fold} (train.select_on_test_area=true: leaks the reported data)"
        else:
            selection = "none (the last epoch is the model)"

        def dataset(epoch, batch_size):
            return pipeline.training_dataset(
                d["data_dir"], fold, batch_size, num_points=d["num_points"], seed=t["seed"], epoch=epoch,
                sampling=d["sampling"], blocks_per_room=blocks_per_room, block_size=d["block_size"], rooms=train_rooms,
            )

        def validation(batch_size):
            if validation_rooms:
                return pipeline.validation_dataset(d["data_dir"], validation_rooms, batch_size, num_points=d["num_points"])
            return pipeline.fixed_dataset(d["data_dir"], fold, batch_size, num_points=d["num_points"])

        def describe(batch_size):
            steps = epoch_blocks // batch_size
            return (f"sampling {d['sampling']}: {epoch_blocks} blocks per epoch from {len(train_rooms)} rooms, "
                    f"{steps} steps at batch {batch_size} ({SAMPLING_DESCRIPTIONS[d['sampling']]}); model selection: {selection}")

        record = {"dataset": self.name, "sampling": d["sampling"], "epoch_blocks": epoch_blocks,
                  "training_rooms": len(train_rooms), "validation_rooms": list(validation_rooms),
                  "selection": selection, "selected_on_test_area": bool(t["select_on_test_area"])}
        has_validation = bool(validation_rooms) or t["select_on_test_area"]
        return TrainingData(record, epoch_blocks, dataset, validation if has_validation else None, describe,
                            exact_steps=d["sampling"] != "random_corners")

    # -------------------------------------------------------------------------- evaluation

    def mean_size_file(self, data_dir, fold):
        return s3dis.mean_ins_size_path(data_dir, fold)

    def test_rooms(self, cfg, fold):
        from jsnet_tf.data import pipeline
        from jsnet_tf.room_evaluation import RoomSet

        return RoomSet(f"area {fold}", pipeline.area_files(cfg["data"]["data_dir"], fold, "test", "rooms"), {"area": fold})

    def write_item_labels(self, out_dir, result):
        """`<room>_pred.txt` (x y z r g b score sem ins) and `<room>_gt.txt` (sem ins), the original's
        formats, which its evaluator reads."""
        from jsnet_tf import metrics

        metrics.write_room_outputs(
            out_dir / f"{result.name}_pred.txt", out_dir / f"{result.name}_gt.txt", result.xyz, result.rgb,
            result.score, result.semantic_pred, result.instance_pred, result.semantic_gt, result.instance_gt,
        )

    def finish_item_outputs(self, out_dir, names):
        from jsnet_tf.files import write_text_atomic

        write_text_atomic(pathlib.Path(out_dir) / "output_filelist.txt", "".join(f"{name}_pred.txt\n" for name in names))

    # -------------------------------------------------------------------------- experiments

    # A tiny synthetic S3DIS for quick experiments: two rooms an area, so that ES rows can hold one
    # out for validation; sparse, so that few blocks reach the 100 points a block needs (about 240
    # training blocks for area 5).
    QUICK_SYNTHETIC = ("--areas", "6", "--rooms_per_area", "2", "--points_per_m2", "30", "--seed", "0")

    def quick_data_commands(self, data_dir, num_points):
        """The commands that generate a tiny synthetic set and prepare it in `data_dir`."""
        import sys

        raw = pathlib.Path(data_dir) / "synthetic_raw"
        return [
            [sys.executable, "-m", "jsnet_tf.data.synthetic", "--out", str(raw), *self.QUICK_SYNTHETIC],
            [sys.executable, "-m", "jsnet_tf.data.prepare_s3dis", "--raw", str(raw), "--out", str(data_dir),
             "--num_points", str(num_points), "--noprogress"],
        ]

    def prepared_num_points(self, data_dir, fold):
        """Points per block of the prepared blocks (quick runs train on blocks of that size)."""
        import h5py

        from jsnet_tf.data import pipeline

        with h5py.File(pipeline.area_files(data_dir, fold, "train", "blocks")[0], "r") as f:
            return int(f["data"].shape[1])

    def run_cost(self, cfg, fold):
        """(training steps at most, test blocks) of a run, from the prepared data."""
        import h5py

        from jsnet_tf.data import pipeline

        d, t = cfg["data"], cfg["train"]
        train_rooms, _ = pipeline.split_rooms(d["data_dir"], fold, d["validation_rooms"], t["seed"])
        blocks = pipeline.epoch_blocks(
            d["data_dir"], fold, sampling=d["sampling"], num_points=d["num_points"], block_size=d["block_size"],
            blocks_per_room=d["blocks_per_room"] or None, rooms=train_rooms,
        )
        test_blocks = 0
        for path in pipeline.area_files(d["data_dir"], fold, "test", "blocks"):
            with h5py.File(path, "r") as f:
                test_blocks += int(f["data"].shape[0])
        return t["epochs"] * (blocks // t["batch_size"]), test_blocks

    def missing_data(self, data_dir, folds):
        wanted = []
        for area in folds:
            wanted += [s3dis.list_path(data_dir, area, split, kind) for split in ("train", "test") for kind in ("rooms", "blocks")]
            wanted.append(s3dis.mean_ins_size_path(data_dir, area))
        return [path for path in wanted if not path.is_file()]
