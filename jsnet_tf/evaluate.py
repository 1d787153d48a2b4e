"""Evaluates JSNet the way the paper does: `jsnet-evaluate --workdir DIR [--area 5] [--data_dir DIR]`
(also `python evaluate.py` in the repository, or `python -m jsnet_tf.evaluate`).

The run's dataset (its task, jsnet_tf.tasks) decides what is evaluated and how:
- S3DIS: each test room of the area through the network over its sliding-window blocks,
  mean-shift on each block's embeddings, BlockMerging into room instances (jsnet_tf.evaluation),
  then the paper's metrics over all rooms: oAcc, mAcc, mIoU; mCov, mWCov, mPrec, mRec
  (jsnet_tf.metrics), and beyond the paper the instance AP, AP50, AP25 of the ScanNet benchmark's
  rules. Outputs per room: `<room>_pred.txt` (x y z r g b score sem ins) and `<room>_gt.txt`
  (sem ins) in the original's formats with `output_filelist.txt`, `<room>_instances.txt`, the
  instances in the benchmark's submission format (instances/, instances_gt/), a compact
  `<room>.npz`, coloured PLYs and a PNG. Several areas (`--area` repeated or the runs of train.py's
  workdir) are also evaluated together (6-fold with all six) into `results_areas_<...>.json`.
- ScanNet v2: the val scenes, every mesh vertex labelled, the benchmark's AP / AP50 / AP25 over its
  18 instance classes and mIoU over its 20 classes beside JSNet's own metrics, outputs in the
  benchmark's formats.
- ShapeNet part: the test split, part IoU per shape over its category's parts, instance- and
  class-averaged mIoU beside the paper's Table 3, part instances by mean-shift per shape
  (jsnet_tf.tasks.part_evaluation).
Everywhere: `results.json`, `results.txt` and a confusion-matrix PNG in `<run>/eval` (or `--out`).
An item whose outputs exist and were made with the same weights and settings is reused, so an
interrupted evaluation resumes.

The weights come from `<workdir>/area<k>` (train.py's run of that area) or from `--workdir` itself
when it is a run folder (e.g. converted weights). By default the last epoch, as the paper does
(`epoch_99.ckpt`); `--which best` takes the checkpoint of the lowest validation loss of runs that
had validation data, and refuses one chosen on the test area unless `--select_on_test_area`.
`results.json` records which weights were used and how they were selected. The evaluation
settings come from the run's config (`[eval]`), `--set eval.key=value` overrides them.

The network runs on every visible GPU (else the CPU), one batch ahead of the post-processing
(jsnet_tf.evaluation.BatchedInference). The seconds of each stage (reading, blocks, network,
mean-shift, merging, files) per room and the points per second are printed at the end and kept in
results.json's `timing`. `--shard k/n`, or the task of a TF_CONFIG cluster (the one train.py
trains on), evaluates a disjoint share of the rooms (jsnet_tf.sharding) into the same `--out`; the
share that finishes last (with TF_CONFIG: the chief, once every task is done) merges them into the
results.json one process writes.

`--filelist` evaluates existing outputs (ours or the original test.py's) without a model.
"""

import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags (defined when run as a program)."""
    from jsnet_tf import cli

    cli.define_shared("workdir", "which", "set", "data_dir", "batch_size", "seed", "verbose", "pictures")
    flags.DEFINE_string(
        "config", None,
        "the experiment config the run was trained with (optional: the run's own config.toml is used; when given, "
        "a run of another dataset or architecture than it describes with the --set overrides is refused; with "
        "--filelist: the dataset of the outputs, default s3dis_area5)",
    )
    flags.DEFINE_multi_integer("area", None, "S3DIS: test area(s) to evaluate (default: the run's data.areas)")
    flags.DEFINE_string("out", None, "output folder (default: <run folder>/eval; with several areas <out>/area<k>)")
    flags.DEFINE_bool(
        "select_on_test_area", False,
        "accept --which best of a run that chose it on its test area (train.select_on_test_area=true): this "
        "leaks the reported data into model selection, and results.json says so",
    )
    flags.DEFINE_float("bandwidth", None, "mean-shift bandwidth (overrides eval.bandwidth, 0.6)")
    flags.DEFINE_bool(
        "label_all_points", None,
        "label every point of every block (default); --nolabel_all_points keeps the original's one random "
        "num_points sample per block, whose numbers change with the seed",
    )
    flags.DEFINE_bool("overwrite", False, "run rooms again even when their outputs exist")
    flags.DEFINE_multi_string("filelist", [], "evaluate existing output_filelist.txt file(s) (no model); several: together")
    flags.DEFINE_string("filelist_base", None, "folder that relative paths in --filelist are relative to (default: the list's)")
    flags.DEFINE_string(
        "shard", None,
        "k/n: evaluate share k (0 .. n-1) of the rooms, e.g. one task of a job array (--shard "
        "$SLURM_ARRAY_TASK_ID/N); all shares write into the same --out, and the one that finishes last (or a run "
        "without --shard) merges them into results.json. With TF_CONFIG set (train.py's tf.distribute cluster) every "
        "task takes its share by itself and the chief merges; the tasks need one --out on a shared file system",
    )


def _overrides():
    """The run's config changes the flags ask for: --set, the eval flags and --data_dir."""
    from jsnet_tf.cli import config_overrides

    return config_overrides(FLAGS.set, {
        "eval.bandwidth": FLAGS.bandwidth, "eval.batch_size": FLAGS.batch_size, "eval.seed": FLAGS.seed,
        "eval.label_all_points": FLAGS.label_all_points, "data.data_dir": FLAGS.data_dir or None,
    })


def workdir_task(workdir, areas=None):
    """The task of the runs in --workdir: a run folder's, or that of train.py's area<k>/ runs."""
    from jsnet_tf import checkpoints, tasks

    workdir = pathlib.Path(workdir)
    if checkpoints.is_run_folder(workdir):
        return tasks.for_config(checkpoints.load_config(workdir))
    run_dir, _ = checkpoints.resolve_run(workdir, areas[0] if areas else None) if areas else (None, None)
    if run_dir is None:
        runs = checkpoints.area_runs(workdir)
        if not runs:
            raise checkpoints.CheckpointError(
                f"{workdir} holds no run (no config.toml, no area<k>/config.toml): give a trained --workdir")
        run_dir = next(iter(runs.values()))
    return tasks.for_config(checkpoints.load_config(run_dir))


def selection(run_dir, which, prefix):
    """How the evaluated weights were chosen, for results.json."""
    from jsnet_tf import checkpoints

    in_best = pathlib.Path(prefix).resolve().parent == (pathlib.Path(run_dir) / "best").resolve()
    if in_best:
        chosen = checkpoints.run_record(run_dir).get("selection", "lowest validation loss")
    else:
        chosen = "nothing (the last epoch)" if which == "latest" else "the given checkpoint"
    return {"which": which, "chosen_on": chosen, "selected_on_test_area": checkpoints.selected_on_test_area(run_dir, prefix)}


def check_against_config(task, run_dir):
    """With --config: the run must be of that config's dataset and architecture."""
    if not FLAGS.config:
        return
    from jsnet_tf import checkpoints, config, tasks

    wanted, recorded = config.load(FLAGS.config, FLAGS.set), checkpoints.load_config(run_dir)
    if tasks.for_config(wanted) is not task:
        raise config.ConfigError(f"{run_dir} holds a {task.name} run, --config {FLAGS.config} is {tasks.for_config(wanted).name}")
    if checkpoints.architecture(wanted) != checkpoints.architecture(recorded):
        changes = config.differences(checkpoints.architecture(recorded), checkpoints.architecture(wanted))
        raise config.ConfigError(f"{run_dir} was trained with another architecture than --config {FLAGS.config} ({changes})")


def evaluate_run(task, fold, run_dir, out_dir, shard, barrier):
    """Evaluates one run folder; its Evaluator, or None when another share merges."""
    from jsnet_tf import checkpoints
    from jsnet_tf.tasks.base import EvaluationContext

    model, cfg, prefix = checkpoints.load_run(run_dir, FLAGS.which, _overrides(), FLAGS.select_on_test_area)
    context = EvaluationContext(
        out_dir=out_dir, which=FLAGS.which, weights=prefix, selection=selection(run_dir, FLAGS.which, prefix),
        shard=shard, barrier=barrier, pictures=FLAGS.pictures, overwrite=FLAGS.overwrite, progress=FLAGS.verbose,
    )
    return task.evaluate(model, cfg, run_dir, fold, context)


def evaluate_filelists():
    """The metrics of existing outputs in the original's formats (no model)."""
    from jsnet_tf import config, metrics, tasks
    from jsnet_tf.files import write_text_atomic

    task = tasks.for_config(config.load(FLAGS.config or "s3dis_area5", FLAGS.set))
    evaluator = task.new_evaluator()
    for filelist in FLAGS.filelist:
        evaluator.add_filelist(filelist, FLAGS.filelist_base)
    result = evaluator.result()
    print(metrics.format_table(result, task.class_names))
    if FLAGS.out:
        out = pathlib.Path(FLAGS.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "results.json", json.dumps({"filelists": FLAGS.filelist, **result}, indent=2) + "\n")
        print(f"results: {out / 'results.json'}")


def shard_of_process():
    """(Shard, barrier or None) of this process: --shard, else TF_CONFIG's task, else the whole.
    A tf.distribute task creates its MultiWorkerMirroredStrategy here, before TensorFlow runs
    anything (collectives are configured at start-up), and meets the others in `barrier`."""
    from jsnet_tf import sharding

    if FLAGS.shard:
        return sharding.parse(FLAGS.shard), None
    shard = sharding.from_tf_config(os.environ.get("TF_CONFIG"))
    if shard is None or shard.is_whole:
        return sharding.Shard(), None
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    def barrier(failed):
        """Waits for every task; returns how many reported failure."""
        per_task = strategy.run(lambda: tf.constant(float(failed)))
        return int(strategy.reduce(tf.distribute.ReduceOp.SUM, per_task, axis=None).numpy())

    return shard, barrier


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    if FLAGS.filelist:
        evaluate_filelists()
        return
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required (or --filelist to evaluate existing outputs)")
    from jsnet_tf import room_evaluation

    task = workdir_task(FLAGS.workdir, FLAGS.area)
    runs = task.evaluation_runs(FLAGS.workdir, FLAGS.area)
    shard, barrier = shard_of_process()
    if not shard.is_whole and not task.shardable:
        raise app.UsageError(f"{shard.describe()}: a {task.title} evaluation runs in one process")
    for _, run_dir in runs:
        check_against_config(task, run_dir)
    several = len(runs) > 1
    evaluators = []
    for fold, run_dir in runs:
        out = pathlib.Path(FLAGS.out) / f"area{fold}" if FLAGS.out and several else FLAGS.out
        evaluators.append(evaluate_run(task, fold, run_dir, out, shard, barrier))
    if several and all(e is not None for e in evaluators):
        combined = evaluators[0]
        for other in evaluators[1:]:
            combined = combined.merge(other)
        folds = [fold for fold, _ in runs]
        print(f"areas {folds} together:")
        room_evaluation.write_results(task, pathlib.Path(FLAGS.out or FLAGS.workdir), combined, {"areas": folds},
                                      name=task.merged_results_name(folds))


def cli():
    """The `jsnet-evaluate` console script (also `python -m jsnet_tf.evaluate`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__, define_flags, name="evaluate.py")


if __name__ == "__main__":
    cli()
