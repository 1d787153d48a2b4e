"""The share of an evaluation's rooms one process runs, so that several processes (a Slurm job
array, or the workers of a tf.distribute cluster) evaluate disjoint shares of one area.

`--shard k/n` names the share plainly (k in 0 .. n-1, e.g. `--shard $SLURM_ARRAY_TASK_ID/$N` with
`--array=0-(N-1)`); `TF_CONFIG` describes the same cluster train.py trains on, each task (the
chief first, then the workers by index) taking the share of its rank. Rooms are dealt out by
size, largest first, each to the least loaded share (ties: the lower index), so every process,
seeing the same files, computes the same deal without talking to the others.
"""

import dataclasses
import json
import re

from jsnet_tf.errors import UserError


class ShardError(UserError, ValueError):
    """A --shard or TF_CONFIG that does not describe a share of the work, or shares that cannot be
    merged (a failed task, outputs not on a shared file system)."""


@dataclasses.dataclass(frozen=True)
class Shard:
    """Share `index` of `count`; `cluster`: the processes are tf.distribute workers (TF_CONFIG)
    that wait for each other before the chief (index 0) merges their outputs."""

    index: int = 0
    count: int = 1
    cluster: bool = False

    @property
    def is_whole(self):
        return self.count == 1

    def describe(self):
        kind = "tf.distribute task" if self.cluster else "shard"
        return f"{kind} {self.index}/{self.count}"


def parse(text):
    """The Shard of a `k/n` string; ShardError for anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise ShardError(f"--shard {text!r}: expected k/n, e.g. 0/4 (share k of n, k from 0 to n-1)")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise ShardError(f"--shard {text}: k must lie in 0 .. n-1 and n be at least 1")
    return Shard(index, count)


def from_tf_config(text):
    """The Shard of this task in a TF_CONFIG cluster (the chief first, then the workers), or None
    for an empty TF_CONFIG; ShardError for a cluster evaluation cannot share."""
    if not text or not text.strip():
        return None
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        task_type, task_index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ShardError(f"TF_CONFIG is not a tf.distribute cluster description ({error})") from None
    others = sorted(set(cluster) - {"chief", "worker"})
    if others:
        raise ShardError(f"TF_CONFIG: evaluation shares rooms among chief and worker tasks; it has {', '.join(others)} tasks")
    tasks = [("chief", i) for i in range(len(cluster.get("chief", [])))]
    tasks += [("worker", i) for i in range(len(cluster.get("worker", [])))]
    if (task_type, task_index) not in tasks:
        raise ShardError(f"TF_CONFIG: task {task_type} {task_index} is not in its cluster")
    return Shard(tasks.index((task_type, task_index)), len(tasks), cluster=True)


def deal(sizes, count):
    """The share index of each item of `sizes` among `count` shares: largest first, each to the
    least loaded share (ties by the lower share index, equal sizes by the lower item index)."""
    loads = [0] * count
    owners = [0] * len(sizes)
    for item in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        share = min(range(count), key=lambda s: (loads[s], s))
        owners[item] = share
        loads[share] += sizes[item]
    return owners
