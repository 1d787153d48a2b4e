"""The paper's evaluation of a set of rooms (S3DIS rooms, ScanNet scenes), flag-free.

For each room: the network over its sliding-window blocks, mean-shift and BlockMerging
(`jsnet_tf.evaluation.RoomSegmenter`), the room's outputs (the task's files, pictures), and a
compact `<room>.npz` written last, which marks the room done: an interrupted evaluation resumes,
reusing a room only when its npz was made with the same weights and settings (its fingerprint).
A process may evaluate a share of the rooms (`jsnet_tf.sharding`, dealt by file size); the share
that finds every room done (or the chief of a tf.distribute cluster, after a barrier) merges them
into `results.json`, `results.txt` and `confusion.png`, with the seconds of every stage.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time

import numpy as np

from jsnet_tf import sharding
from jsnet_tf.evaluation import RoomResult, RoomSegmenter
from jsnet_tf.files import AtomicTarget, write_text_atomic
from jsnet_tf.timing import StageTimer, format_summary, summarise

# The version of a room's stored outputs: rooms stored by an older version are run again.
OUTPUTS_VERSION = 2  # 2: instance tables (class, confidence) and the benchmark's submission files


@dataclasses.dataclass
class RoomSet:
    """The rooms one evaluation covers: `label` for messages ("area 5", "val split"), the room
    files, and the entries results.json records about them ({"area": 5}, {"split": "val"})."""

    label: str
    files: list
    info: dict


def fingerprint(prefix, cfg, mean_ins_size):
    """What a room's outputs depend on besides the room: reused rooms must share it."""
    index = pathlib.Path(str(prefix) + ".index")
    stamp = index.stat().st_mtime_ns if index.exists() else None
    return json.dumps({"outputs": OUTPUTS_VERSION, "weights": str(prefix), "written": stamp, "eval": cfg["eval"],
                       "mean_ins_size": [float(v) for v in mean_ins_size],
                       "num_points": cfg["data"]["num_points"], "block_size": cfg["data"]["block_size"]}, sort_keys=True)


def evaluate_rooms(task, model, cfg, rooms: RoomSet, out_dir, context, mean_ins_size, mean_size_source):
    """Evaluates this process's share of `rooms` (`context.shard`, default all) with `task`'s
    outputs and, when every room's outputs are there, merges them into results.json. Returns the
    Evaluator of all rooms, or None when this process does not merge."""
    shard = context.shard or sharding.Shard()
    eval_cfg = cfg["eval"]
    segmenter = RoomSegmenter(model, cfg["data"]["num_points"], mean_ins_size, eval_cfg, cfg["data"]["block_size"])
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = list(rooms.files)
    owners = sharding.deal([path.stat().st_size for path in files], shard.count)
    mine = [path for path, owner in zip(files, owners) if owner == shard.index]
    share = "" if shard.is_whole else f" ({shard.describe()}: {len(mine)} of them)"
    devices = ", ".join(segmenter.inference.devices)
    print(f"{rooms.label}: {len(files)} {task.item}s{share}, weights {context.weights} on {devices} -> {out_dir}", flush=True)

    stamp = fingerprint(context.weights, cfg, mean_ins_size)
    done = {}  # room name -> (RoomResult, timing record)
    todo = []
    for path in mine:
        found = None if context.overwrite else _stored_room(out_dir, path.stem, stamp)
        if found is not None:
            done[path.stem] = found
            continue
        if (out_dir / f"{path.stem}.npz").exists() and not context.overwrite:
            print(f"{path.stem}: its outputs in {out_dir} came from other weights or settings: running it again", flush=True)
        todo.append(path)
    bar = None
    if todo and context.progress:
        from tqdm import tqdm

        total = sum(segmenter.count_blocks(task.load_item(p)) for p in todo)
        bar = tqdm(total=total, unit="block", desc=rooms.label)
    started = time.time()
    failed = False
    try:
        for path in todo:
            if bar is not None:
                bar.set_postfix_str(path.stem)
            done[path.stem] = _run_room(task, segmenter, path, out_dir, eval_cfg["seed"], stamp, bar, context.pictures)
    except BaseException:
        failed = True
        raise
    finally:
        if bar is not None:
            bar.close()
        others_failed = context.barrier(int(failed)) - int(failed) if context.barrier is not None else 0
    if others_failed:
        raise sharding.ShardError(f"{rooms.label}: {others_failed} other task(s) of the cluster failed (see their output); "
                                  f"the {task.item}s they finished are kept in {out_dir}: run again to resume")
    if shard.cluster and shard.index != 0:
        print(f"{rooms.label}: {shard.describe()}: its {len(mine)} of {len(files)} {task.item}s done; the chief merges them",
              flush=True)
        return None
    for path in files:
        if path.stem not in done:
            found = None if context.overwrite else _stored_room(out_dir, path.stem, stamp)
            if found is not None:
                done[path.stem] = found
    missing = [path.stem for path in files if path.stem not in done]
    if missing:
        if shard.cluster:
            raise sharding.ShardError(f"{rooms.label}: the outputs of {len(missing)} {task.item}s of the other tasks are not in "
                                      f"{out_dir} (e.g. {missing[0]}): give every task the same --out, on a shared file system")
        print(f"{rooms.label}: {shard.describe()} done; {len(files) - len(missing)} of {len(files)} {task.item}s have outputs "
              f"in {out_dir}: the share that finishes last (or a run without --shard) writes results.json", flush=True)
        return None
    evaluator = task.new_evaluator()
    for path in files:
        result = done[path.stem][0]
        evaluator.add_room(result.semantic_gt, result.instance_gt, result.semantic_pred, result.instance_pred,
                           where=path.stem, instances=result.instances)
    task.finish_item_outputs(out_dir, [path.stem for path in files])
    timing = {"wall_seconds": round(time.time() - started, 1), "devices": segmenter.inference.devices,
              "shards": shard.count, **summarise({path.stem: done[path.stem][1] for path in files})}
    write_results(task, out_dir, evaluator, {
        **rooms.info,
        "weights": context.weights,
        "model_selection": context.selection,
        "mean_ins_size": mean_size_source,
        "protocol": "every point of every block" if eval_cfg["label_all_points"] else "one random sample per block (original)",
        "eval": eval_cfg,
        task.item + "s": [p.stem for p in files],
        "timing": timing,
    })
    print(format_summary(timing), flush=True)
    return evaluator


def _stored_room(out_dir, name, stamp):
    """(RoomResult, timing record) of a room finished earlier with the same weights and settings,
    else None."""
    stored = pathlib.Path(out_dir) / f"{name}.npz"
    if not stored.exists():
        return None
    with np.load(stored) as z:
        if "fingerprint" not in z.files or str(z["fingerprint"]) != stamp:
            return None
        result = RoomResult(name=name, **{k: z[k] for k in z.files if k not in ("fingerprint", "timing")})
        timing = json.loads(str(z["timing"])) if "timing" in z.files else {"points": len(result.xyz), "seconds": 0.0, "stages": {}}
    return result, timing


def _run_room(task, segmenter, path, out_dir, seed, stamp, bar, pictures):
    """Segments one room file and writes its outputs; (RoomResult, timing record)."""
    timer = StageTimer()
    start = time.perf_counter()
    with timer.stage("reading"):
        room = task.load_item(path)
    result = segmenter.segment(room, seed=seed, progress=bar.update if bar else None, timer=timer)
    with timer.stage("files"):
        task.write_item_outputs(out_dir, result, pictures)
    timing = {"points": len(result.xyz), "seconds": time.perf_counter() - start, "stages": timer.seconds()}
    _store_room(out_dir, result, stamp, timing)
    return result, timing


def _store_room(out_dir, result, stamp, timing):
    """The room's .npz, written last: its presence marks the room done."""
    with AtomicTarget(pathlib.Path(out_dir) / f"{result.name}.npz") as tmp:
        with open(tmp, "wb") as f:
            arrays = {k: v for k, v in result.arrays().items() if k != "name"}
            np.savez_compressed(f, fingerprint=np.array(stamp), timing=np.array(json.dumps(timing)), **arrays)


def write_results(task, out_dir, evaluator, info, name="results"):
    """<name>.json (the metrics and `info`), <name>.txt (the table) and, for the whole set,
    confusion.png; prints the table."""
    from jsnet_tf import metrics, viz

    out_dir = pathlib.Path(out_dir)
    result = evaluator.result()
    write_text_atomic(out_dir / f"{name}.json", json.dumps({"dataset": task.name, **info, **result}, indent=2) + "\n")
    table = metrics.format_table(result, task.class_names)
    write_text_atomic(out_dir / f"{name}.txt", table + "\n")
    if name == "results":
        viz.render_confusion_matrix(out_dir / "confusion.png", result["counts"]["confusion"], list(task.class_names))
    print(table, flush=True)
    print(f"results: {out_dir / (name + '.json')}", flush=True)
    return result


def warn(message):
    print(f"evaluate: warning: {message}", file=sys.stderr, flush=True)
