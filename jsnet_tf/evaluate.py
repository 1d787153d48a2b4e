"""Evaluates JSNet the way the paper does: `python evaluate.py --area 5 --data_dir DIR --workdir DIR`.

For each test room of the area: the network over the room's sliding-window blocks, mean-shift on
each block's embeddings, BlockMerging into room instances (jsnet_tf.evaluation), then the paper's
metrics over all rooms: oAcc, mAcc, mIoU; mCov, mWCov, mPrec, mRec (jsnet_tf.metrics).

The weights come from `<workdir>/area<k>` (train.py's run of that area) or from `--workdir` itself
when it is a run folder (e.g. converted weights). By default the last epoch, as the paper does
(`epoch_99.ckpt`); `--which best` takes the checkpoint of the lowest validation loss of runs that
had validation rooms, and refuses one chosen on the test area unless `--select_on_test_area`.
`results.json` records which weights were used and how they were selected. The
evaluation settings come from the run's config (`[eval]`), `--set eval.key=value` overrides them.
Outputs go to `<run>/eval` (or `--out`): per room `<room>_pred.txt` (x y z r g b score sem ins)
and `<room>_gt.txt` (sem ins) in the original's formats with `output_filelist.txt`, a compact
`<room>.npz`, coloured PLYs and a PNG of each room, `results.json`, `results.txt` and a
confusion-matrix PNG. A room whose `.npz` exists is not run again: an interrupted evaluation
resumes. Several areas (`--area` repeated or the config's `data.areas`) are also evaluated
together (6-fold with all six) into `results_areas_<...>.json`.

The network runs on every visible GPU (else the CPU), one batch ahead of the post-processing
(jsnet_tf.evaluation.BatchedInference). The seconds of each stage (reading, blocks, network,
mean-shift, merging, files) per room and the points per second are printed at the end and kept in
results.json's `timing`. `--shard k/n`, or the task of a TF_CONFIG cluster (the one train.py
trains on), evaluates a disjoint share of every area's rooms (jsnet_tf.sharding) into the same
`--out`; the share that finishes last (with TF_CONFIG: the chief, once every task is done)
merges them into the results.json one process writes.

A ShapeNet part run (`train.py --config configs/shapenet_part.toml`, whose run folder is the
workdir itself) is evaluated on the prepared test split instead: part IoU per shape over its
category's parts, instance- and class-averaged mIoU and the 16 categories beside the paper's
Table 3, part instances by mean-shift per shape (jsnet_tf.part_evaluation).

`--filelist` evaluates existing outputs (ours or the original test.py's) without a model.
"""

import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from jsnet_tf.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "train.py's workdir (holding area<k>/), or one run folder (ShapeNet: the workdir)")
flags.DEFINE_string(
    "config", None,
    "the experiment config the run was trained with (optional: the run's own config.toml is used; when given, "
    "a run of another dataset or architecture than it describes with the --set overrides is refused)",
)
flags.DEFINE_multi_integer("area", None, "test area(s) to evaluate (default: the run's data.areas)")
flags.DEFINE_string("data_dir", None, "prepared data folder (default: the run's data.data_dir)")
flags.DEFINE_string("out", None, "output folder (default: <run folder>/eval; with several areas <out>/area<k>)")
flags.DEFINE_string(
    "which", "latest",
    "weights to load: latest (the last epoch, as the paper), best (lowest validation loss; runs with "
    "validation data only: data.validation_rooms, ShapeNet's val split), or a checkpoint prefix",
)
flags.DEFINE_bool(
    "select_on_test_area", False,
    "accept --which best of a run that chose it on its test area (train.select_on_test_area=true): this "
    "leaks the reported data into model selection, and results.json says so",
)
flags.DEFINE_multi_string("set", [], "override a config key: section.key=value (repeatable), e.g. eval.bandwidth=0.5")
flags.DEFINE_float("bandwidth", None, "mean-shift bandwidth (overrides eval.bandwidth, 0.6)")
flags.DEFINE_integer("batch_size", None, "blocks per inference batch (overrides eval.batch_size)")
flags.DEFINE_bool(
    "label_all_points", None,
    "label every point of every block (default); --nolabel_all_points keeps the original's one random "
    "num_points sample per block, whose numbers change with the seed",
)
flags.DEFINE_integer("seed", None, "seed of the block sampling and chunking (overrides eval.seed)")
flags.DEFINE_bool("pictures", True, "write coloured PLYs and PNG pictures of every room")
flags.DEFINE_bool("overwrite", False, "run rooms again even when their outputs exist")
flags.DEFINE_multi_string("filelist", [], "evaluate existing output_filelist.txt file(s) (no model); several: together")
flags.DEFINE_string("filelist_base", None, "folder that relative paths in --filelist are relative to (default: the list's)")
flags.DEFINE_bool("verbose", True, "show a progress bar")
flags.DEFINE_string(
    "shard", None,
    "k/n: evaluate share k (0 .. n-1) of every area's rooms, e.g. one task of a job array (--shard "
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


def _run_folder(workdir, area):
    """The run folder of `area`: train.py's <workdir>/area<k>, or the workdir itself."""
    from jsnet_tf import checkpoints

    return checkpoints.resolve_run(workdir, area)[0]


def _areas(workdir):
    """The areas to evaluate. A run folder holds one model: the area it held out in training (a
    run's config lists every area of its experiment, not the one this model may be tested on)."""
    from jsnet_tf import checkpoints

    workdir = pathlib.Path(workdir)
    if checkpoints.is_run_folder(workdir):
        recorded = checkpoints.run_area(workdir)
        if FLAGS.area:
            if len(FLAGS.area) > 1:
                raise app.UsageError(f"{workdir} holds one model: give one --area, or train.py's workdir for several")
            if recorded is not None and FLAGS.area[0] != recorded:
                raise app.UsageError(
                    f"{workdir} is the model of area {recorded}: area {FLAGS.area[0]} was part of its training data"
                )
            return list(FLAGS.area)
        if recorded is not None:
            return [recorded]
        areas = checkpoints.load_config(workdir)["data"]["areas"]
        if len(areas) != 1:
            raise app.UsageError(f"{workdir} does not record its test area: give --area")
        return areas
    if FLAGS.area:
        return list(FLAGS.area)
    runs = checkpoints.area_runs(workdir)
    if not runs:
        raise app.UsageError(f"{workdir} holds no run (no area<k>/config.toml): give --area and a trained --workdir")
    return list(runs)


# The version of a room's stored outputs: rooms stored by an older version are run again.
OUTPUTS_VERSION = 2  # 2: instance tables (class, confidence) and the benchmark's submission files


def _fingerprint(prefix, cfg, mean_ins_size):
    """What a room's outputs depend on besides the room: reused rooms must share it."""
    index = pathlib.Path(prefix + ".index")
    stamp = index.stat().st_mtime_ns if index.exists() else None
    return json.dumps({"outputs": OUTPUTS_VERSION, "weights": str(prefix), "written": stamp, "eval": cfg["eval"],
                       "mean_ins_size": [float(v) for v in mean_ins_size],
                       "num_points": cfg["data"]["num_points"], "block_size": cfg["data"]["block_size"]}, sort_keys=True)


def evaluate_area(area, out_dir, shard=None, barrier=None):
    """Evaluates this process's share of one area's rooms (`shard`, a jsnet_tf.sharding.Shard;
    default all of them) and, when every room's outputs are there, merges them into results.json.
    `barrier(failed)` (tf.distribute tasks) waits for every task to finish its share and returns
    how many failed. Returns the area's Evaluator, or None when this process does not merge."""
    import numpy as np

    from jsnet_tf import checkpoints, metrics, sharding
    from jsnet_tf.data import pipeline, s3dis
    from jsnet_tf.evaluation import RoomSegmenter
    from jsnet_tf.files import write_text_atomic
    from jsnet_tf.timing import format_summary, summarise

    shard = shard or sharding.Shard()
    run_dir = _run_folder(FLAGS.workdir, area)
    overrides = _overrides()
    model, cfg, prefix = checkpoints.load_run(run_dir, FLAGS.which, overrides, FLAGS.select_on_test_area)
    data_dir = pathlib.Path(cfg["data"]["data_dir"])
    rooms = pipeline.area_files(data_dir, area, "test", "rooms")
    from jsnet_tf import convert

    stored = run_dir / convert.MEAN_INS_SIZE_FILE  # a converted original's own sizes come first
    listed = data_dir / "lists" / f"mean_ins_size_woArea{area}.txt"
    mean_size_path = stored if stored.exists() else listed if listed.exists() else None
    if mean_size_path is None:
        print(f"evaluate: warning: area {area}: no mean instance sizes (neither {stored} nor {listed} exists): "
              "instances are NOT filtered by size, unlike the paper's protocol", file=sys.stderr, flush=True)
        mean_ins_size = np.zeros(cfg["model"]["num_classes"])
    else:
        mean_ins_size = convert.load_mean_ins_size(mean_size_path)
    eval_cfg = cfg["eval"]
    segmenter = RoomSegmenter(model, cfg["data"]["num_points"], mean_ins_size, eval_cfg, cfg["data"]["block_size"])
    class_names = list(s3dis.CLASSES) if cfg["model"]["num_classes"] == len(s3dis.CLASSES) else None
    out_dir = pathlib.Path(out_dir or run_dir / "eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    owners = sharding.deal([path.stat().st_size for path in rooms], shard.count)
    mine = [path for path, owner in zip(rooms, owners) if owner == shard.index]
    share = "" if shard.is_whole else f" ({shard.describe()}: {len(mine)} of them)"
    devices = ", ".join(segmenter.inference.devices)
    print(f"area {area}: {len(rooms)} rooms{share}, weights {prefix} on {devices} -> {out_dir}", flush=True)

    fingerprint = _fingerprint(prefix, cfg, mean_ins_size)
    done = {}  # room name -> (RoomResult, timing record)
    todo = []
    for path in mine:
        found = _stored_room(out_dir, path.stem, fingerprint)
        if found is not None:
            done[path.stem] = found
            continue
        if (out_dir / f"{path.stem}.npz").exists() and not FLAGS.overwrite:
            print(f"{path.stem}: its outputs in {out_dir} came from other weights or settings: running it again", flush=True)
        todo.append(path)
    bar = None
    if todo and FLAGS.verbose:
        from tqdm import tqdm

        total = sum(segmenter.count_blocks(s3dis.load_room(p)) for p in todo)
        bar = tqdm(total=total, unit="block", desc=f"area {area}")
    started = time.time()
    failed = False
    try:
        for path in todo:
            if bar is not None:
                bar.set_postfix_str(path.stem)
            done[path.stem] = _run_room(segmenter, path, out_dir, eval_cfg["seed"], class_names, fingerprint, bar)
    except BaseException:
        failed = True
        raise
    finally:
        if bar is not None:
            bar.close()
        others_failed = barrier(int(failed)) - int(failed) if barrier is not None else 0
    if others_failed:
        raise sharding.ShardError(f"area {area}: {others_failed} other task(s) of the cluster failed (see their output); "
                            f"the rooms they finished are kept in {out_dir}: run again to resume")
    if shard.cluster and shard.index != 0:
        print(f"area {area}: {shard.describe()}: its {len(mine)} of {len(rooms)} rooms done; the chief merges them", flush=True)
        return None
    for path in rooms:
        if path.stem not in done:
            found = _stored_room(out_dir, path.stem, fingerprint)
            if found is not None:
                done[path.stem] = found
    missing = [path.stem for path in rooms if path.stem not in done]
    if missing:
        if shard.cluster:
            raise sharding.ShardError(f"area {area}: the outputs of {len(missing)} rooms of the other tasks are not in {out_dir} "
                                f"(e.g. {missing[0]}): give every task the same --out, on a shared file system")
        print(f"area {area}: {shard.describe()} done; {len(rooms) - len(missing)} of {len(rooms)} rooms have outputs in "
              f"{out_dir}: the share that finishes last (or a run without --shard) writes results.json", flush=True)
        return None
    evaluator = metrics.Evaluator(cfg["model"]["num_classes"], class_names)
    for path in rooms:
        result = done[path.stem][0]
        evaluator.add_room(result.semantic_gt, result.instance_gt, result.semantic_pred, result.instance_pred, where=path.stem,
                           instances=result.instances)
    filelist = "".join(f"{path.stem}_pred.txt\n" for path in rooms)
    write_text_atomic(out_dir / "output_filelist.txt", filelist)
    timing = {"wall_seconds": round(time.time() - started, 1), "devices": segmenter.inference.devices,
              "shards": shard.count, **summarise({path.stem: done[path.stem][1] for path in rooms})}
    _write_results(out_dir, evaluator, class_names, {
        "area": area,
        "weights": prefix,
        "model_selection": _selection(run_dir, FLAGS.which, prefix),
        "mean_ins_size": str(mean_size_path) if mean_size_path else None,
        "protocol": "every point of every block" if eval_cfg["label_all_points"] else "one random sample per block (original)",
        "eval": eval_cfg,
        "rooms": [p.stem for p in rooms],
        "timing": timing,
    })
    print(format_summary(timing), flush=True)
    return evaluator


def _stored_room(out_dir, name, fingerprint):
    """(RoomResult, timing record) of a room finished earlier with the same weights and settings,
    else None (also with --overwrite)."""
    import numpy as np

    from jsnet_tf.evaluation import RoomResult

    stored = pathlib.Path(out_dir) / f"{name}.npz"
    if FLAGS.overwrite or not stored.exists():
        return None
    with np.load(stored) as z:
        if "fingerprint" not in z.files or str(z["fingerprint"]) != fingerprint:
            return None
        result = RoomResult(name=name, **{k: z[k] for k in z.files if k not in ("fingerprint", "timing")})
        timing = json.loads(str(z["timing"])) if "timing" in z.files else {"points": len(result.xyz), "seconds": 0.0, "stages": {}}
    return result, timing


def _run_room(segmenter, path, out_dir, seed, class_names, fingerprint, bar):
    """Segments one room file and writes its outputs; (RoomResult, timing record)."""
    from jsnet_tf.data import s3dis
    from jsnet_tf.timing import StageTimer

    timer = StageTimer()
    start = time.perf_counter()
    with timer.stage("reading"):
        room = s3dis.load_room(path)
    result = segmenter.segment(room, seed=seed, progress=bar.update if bar else None, timer=timer)
    with timer.stage("files"):
        _write_room_files(out_dir, result, class_names, FLAGS.pictures, segmenter.model.num_classes)
    timing = {"points": len(result.xyz), "seconds": time.perf_counter() - start, "stages": timer.seconds()}
    _store_room(out_dir, result, fingerprint, timing)
    return result, timing


def _selection(run_dir, which, prefix):
    """How the evaluated weights were chosen, for results.json."""
    from jsnet_tf import checkpoints

    in_best = pathlib.Path(prefix).resolve().parent == (pathlib.Path(run_dir) / "best").resolve()
    if in_best:
        chosen = checkpoints.run_record(run_dir).get("selection", "lowest validation loss")
    else:
        chosen = "nothing (the last epoch)" if which == "latest" else "the given checkpoint"
    return {"which": which, "chosen_on": chosen, "selected_on_test_area": checkpoints.selected_on_test_area(run_dir, prefix)}


def _write_room_files(out_dir, result, class_names, pictures, num_classes):
    """The room's txt outputs in the original's formats, its instance list, its instances in the
    ScanNet benchmark's submission format (label ids: class + 1, every class an instance class),
    and its pictures."""
    from jsnet_tf import metrics

    metrics.write_room_outputs(
        out_dir / f"{result.name}_pred.txt", out_dir / f"{result.name}_gt.txt", result.xyz, result.rgb,
        result.score, result.semantic_pred, result.instance_pred, result.semantic_gt, result.instance_gt,
    )
    metrics.write_instance_list(out_dir / f"{result.name}{metrics.INSTANCES_SUFFIX}", result.instances)
    metrics.write_benchmark_instances(
        out_dir, result.name, result.instance_pred, result.instances, result.semantic_gt, result.instance_gt,
        label_ids=range(1, num_classes + 1), instance_classes=range(num_classes),
    )
    if pictures:
        _write_pictures(out_dir / "pictures", result, class_names)


def _store_room(out_dir, result, fingerprint, timing):
    """The room's .npz, written last: its presence marks the room done."""
    import numpy as np

    from jsnet_tf.files import AtomicTarget

    with AtomicTarget(out_dir / f"{result.name}.npz") as tmp:
        with open(tmp, "wb") as f:
            arrays = {k: v for k, v in result.arrays().items() if k != "name"}
            np.savez_compressed(f, fingerprint=np.array(fingerprint), timing=np.array(json.dumps(timing)), **arrays)


def _write_pictures(folder, result, class_names=None):
    """Coloured PLYs (semantic / instance, predicted / ground truth) and one PNG of the four, the
    semantic panels with a legend of their classes (`class_names`, else the class ids)."""
    from jsnet_tf import io, viz

    folder.mkdir(parents=True, exist_ok=True)
    colours = {
        "semantic ground truth": ("sem_gt", io.semantic_colors(result.semantic_gt)),
        "semantic prediction": ("sem_pred", io.semantic_colors(result.semantic_pred)),
        "instance ground truth": ("ins_gt", io.instance_colors(result.instance_gt)),
        "instance prediction": ("ins_pred", io.instance_colors(result.instance_pred)),
    }
    labels = {"semantic": result.semantic_pred, "instance": result.instance_pred}
    for suffix, rgb in colours.values():
        io.write_ply(folder / f"{result.name}_{suffix}.ply", result.xyz, rgb, extra=labels)
    z = result.xyz[:, 2]
    names = class_names or [str(c) for c in range(1 + max(int(result.semantic_gt.max()), int(result.semantic_pred.max()), 0))]
    viz.render_segmentation_panel(
        folder / f"{result.name}.png", result.xyz, {title: rgb for title, (_, rgb) in colours.items()},
        title=f"{result.name} (top view below 85% of the height)", z_max=float(z.min() + 0.85 * (z.max() - z.min())),
        legends={"semantic ground truth": (result.semantic_gt, names), "semantic prediction": (result.semantic_pred, names)},
    )


def _write_results(out_dir, evaluator, class_names, info):
    from jsnet_tf import metrics, viz
    from jsnet_tf.files import write_text_atomic

    result = evaluator.result()
    write_text_atomic(out_dir / "results.json", json.dumps({**info, **result}, indent=2) + "\n")
    table = metrics.format_table(result, class_names)
    write_text_atomic(out_dir / "results.txt", table + "\n")
    names = class_names or [str(c) for c in range(len(result["counts"]["confusion"]))]
    viz.render_confusion_matrix(out_dir / "confusion.png", result["counts"]["confusion"], names)
    print(table, flush=True)
    print(f"results: {out_dir / 'results.json'}", flush=True)


def _check_against_config(run_dir):
    """With --config: the run must be of that config's dataset and architecture."""
    if not FLAGS.config:
        return
    from jsnet_tf import checkpoints, config

    wanted, recorded = config.load(FLAGS.config, FLAGS.set), checkpoints.load_config(run_dir)
    if wanted["data"]["dataset"] != recorded["data"]["dataset"]:
        raise config.ConfigError(
            f"{run_dir} holds a {recorded['data']['dataset']} run, --config {FLAGS.config} is {wanted['data']['dataset']}"
        )
    if checkpoints.architecture(wanted) != checkpoints.architecture(recorded):
        changes = config.differences(checkpoints.architecture(recorded), checkpoints.architecture(wanted))
        raise config.ConfigError(f"{run_dir} was trained with another architecture than --config {FLAGS.config} ({changes})")


def evaluate_shapenet(run_dir):
    """Part mIoU of a ShapeNet part run on the prepared test split."""
    from jsnet_tf import checkpoints, part_evaluation

    overrides = _overrides()
    model, cfg, prefix = checkpoints.load_run(run_dir, FLAGS.which, overrides, FLAGS.select_on_test_area)
    out_dir = pathlib.Path(FLAGS.out or pathlib.Path(run_dir) / "eval")
    eval_cfg = cfg["eval"]
    print(f"ShapeNet part test split, weights {prefix} -> {out_dir}", flush=True)
    result = part_evaluation.evaluate_shapenet(
        model, cfg, cfg["data"]["data_dir"], out_dir, split="test", batch_size=eval_cfg["batch_size"],
        bandwidth=eval_cfg["bandwidth"], pictures=4 if FLAGS.pictures else 0, seed=eval_cfg["seed"],
        progress=FLAGS.verbose, info={"weights": prefix, "model_selection": _selection(run_dir, FLAGS.which, prefix)},
        overwrite=FLAGS.overwrite,
    )
    print(part_evaluation.format_results(result), flush=True)
    print(f"results: {out_dir / 'results.json'}", flush=True)
    return result


def _is_shapenet_run(workdir):
    from jsnet_tf import checkpoints

    return checkpoints.is_run_folder(workdir) and checkpoints.load_config(workdir)["data"]["dataset"] == "shapenet"


def evaluate_filelists():
    from jsnet_tf import metrics
    from jsnet_tf.data import s3dis
    from jsnet_tf.files import write_text_atomic

    result = metrics.evaluate_filelist(FLAGS.filelist, class_names=list(s3dis.CLASSES), base_dir=FLAGS.filelist_base)
    print(metrics.format_table(result, list(s3dis.CLASSES)))
    if FLAGS.out:
        out = pathlib.Path(FLAGS.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "results.json", json.dumps({"filelists": FLAGS.filelist, **result}, indent=2) + "\n")
        print(f"results: {out / 'results.json'}")


def _shard():
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
    try:
        if FLAGS.filelist:
            evaluate_filelists()
            return
        if not FLAGS.workdir:
            raise app.UsageError("--workdir is required (or --filelist to evaluate existing outputs)")
        shard, barrier = _shard()
        if _is_shapenet_run(FLAGS.workdir):
            if FLAGS.area:
                raise app.UsageError("--area: a ShapeNet part run has no areas (it is evaluated on the test split)")
            if not shard.is_whole:
                raise app.UsageError(f"{shard.describe()}: a ShapeNet part evaluation runs in one process")
            _check_against_config(FLAGS.workdir)
            evaluate_shapenet(FLAGS.workdir)
            return
        areas = _areas(FLAGS.workdir)
        if FLAGS.config:
            for area in areas:
                _check_against_config(_run_folder(FLAGS.workdir, area))
        several = len(areas) > 1
        evaluators = []
        for area in areas:
            out = pathlib.Path(FLAGS.out) / f"area{area}" if FLAGS.out and several else FLAGS.out
            evaluators.append(evaluate_area(area, out, shard, barrier))
        if several and all(e is not None for e in evaluators):
            combined = evaluators[0]
            for other in evaluators[1:]:
                combined = combined.merge(other)
            out_dir = pathlib.Path(FLAGS.out or FLAGS.workdir)
            name = "results_areas_" + "-".join(str(a) for a in areas)
            from jsnet_tf import metrics
            from jsnet_tf.files import write_text_atomic

            result = combined.result()
            write_text_atomic(out_dir / f"{name}.json", json.dumps({"areas": areas, **result}, indent=2) + "\n")
            print(f"areas {areas} together:\n{metrics.format_table(result, result.get('class_names'))}")
            print(f"results: {out_dir / (name + '.json')}")
    except Exception as error:
        # TensorFlow's OpError (e.g. a corrupt checkpoint file) is consulted only once TensorFlow is loaded.
        tensorflow = sys.modules.get("tensorflow")
        op_errors = (tensorflow.errors.OpError,) if tensorflow else ()
        if not isinstance(error, (UserError, OSError) + op_errors):
            raise
        sys.exit(f"evaluate.py: error: {error}")


def cli():
    """The `jsnet-evaluate` console script (also `python -m jsnet_tf.evaluate`)."""
    from jsnet_tf.cli import run_program

    run_program(main, __name__)


if __name__ == "__main__":
    cli()
