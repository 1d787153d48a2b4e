"""ShapeNet part (Yi et al. 2016), the paper's Table 3: shapes of 16 categories with 50 parts, the
official train / val / test splits (one model, the run folder is the workdir itself), part IoU by
PointNet++'s protocol, part instances by mean-shift per shape (jsnet_tf.tasks.part_evaluation)."""

from __future__ import annotations

import pathlib

from jsnet_tf.data import shapenet
from jsnet_tf.tasks.base import Predictor, Task, TrainingData, check_model_selection

SHAPE_CHANNELS = ("x", "y", "z", "normal x", "normal y", "normal z")  # xyz in the unit sphere


class ShapeNetTask(Task):
    name = "shapenet"
    title = "ShapeNet part"
    item = "shape"
    class_names = shapenet.PART_NAMES
    channel_names = SHAPE_CHANNELS
    label_ids = tuple(range(1, shapenet.NUM_PARTS + 1))  # part id + 1 in the benchmark's files
    instance_classes = tuple(range(shapenet.NUM_PARTS))  # part instances per part
    data_keys = frozenset({"data_dir", "areas", "num_points"})
    predict_flags = ("category",)
    prepare_command = "jsnet-prepare-shapenet"
    start_config = "shapenet_part"

    def palette(self):
        return shapenet.PALETTE

    def fold_description(self, fold):
        return "the train split, val for validation, test for testing"

    # -------------------------------------------------------------------------- training

    def training_data(self, cfg, fold):
        from jsnet_tf.data import shapenet_pipeline

        d, t = cfg["data"], cfg["train"]
        check_model_selection(cfg, True)  # the val split
        epoch_blocks = shapenet_pipeline.num_shapes(d["data_dir"], "train")
        shapenet_pipeline.num_shapes(d["data_dir"], "val")  # the validation split must be there too

        def dataset(epoch, batch_size):
            return shapenet_pipeline.dataset(d["data_dir"], "train", batch_size, num_points=d["num_points"], shuffle=True,
                                             seed=t["seed"], epoch=epoch, drop_remainder=True)

        def validation(batch_size):
            return shapenet_pipeline.dataset(d["data_dir"], "val", batch_size, num_points=d["num_points"])

        def describe(batch_size):
            return f"ShapeNet part: {epoch_blocks} training shapes per epoch; validation and best/: the val split"

        record = {"dataset": self.name, "sampling": "fixed (the prepared train split)", "epoch_blocks": epoch_blocks,
                  "selection": "validation split (val)"}
        return TrainingData(record, epoch_blocks, dataset, validation, describe)

    # -------------------------------------------------------------------------- evaluation

    def evaluate(self, model, cfg, run_dir, fold, context):
        """Part mIoU on the prepared test split (jsnet_tf.tasks.part_evaluation); returns the part
        instances' Evaluator."""
        from jsnet_tf.tasks import part_evaluation

        out_dir = pathlib.Path(context.out_dir or pathlib.Path(run_dir) / "eval")
        eval_cfg = cfg["eval"]
        print(f"ShapeNet part test split, weights {context.weights} -> {out_dir}", flush=True)
        result = part_evaluation.evaluate_shapenet(
            model, cfg, cfg["data"]["data_dir"], out_dir, split="test", batch_size=eval_cfg["batch_size"],
            bandwidth=eval_cfg["bandwidth"], pictures=4 if context.pictures else 0, seed=eval_cfg["seed"],
            progress=context.progress, info={"dataset": self.name, "weights": context.weights,
                                             "model_selection": context.selection},
            overwrite=context.overwrite,
        )
        print(part_evaluation.format_results(result), flush=True)
        print(f"results: {out_dir / 'results.json'}", flush=True)
        return None

    # -------------------------------------------------------------------------- predict

    def predictor(self, model, cfg, run_dir, fold, options):
        from jsnet_tf.tasks import part_prediction
        from jsnet_tf.tasks.part_evaluation import ShapeSegmenter

        category = part_prediction.shape_category(options.extra.get("category"))
        eval_cfg = cfg["eval"]
        segmenter = ShapeSegmenter(model, cfg["data"]["num_points"], eval_cfg["bandwidth"], eval_cfg["batch_size"])

        def predict(path, out_dir):
            return part_prediction.predict_shape_file(path, segmenter, list(self.class_names), eval_cfg["seed"], out_dir,
                                                      options, category)

        among = f"the parts of {category}" if category else "all 50 parts (no --category)"
        return Predictor(predict, f"parts among {among}")

    # -------------------------------------------------------------------------- experiments

    def missing_data(self, data_dir, folds):
        return [path for path in (shapenet.list_file(data_dir, split) for split in ("train", "val", "test"))
                if not path.is_file()]
