"""Room segmentation at test time: with an oracle network whose outputs encode the ground truth,
the whole chain (blocks, chunks, mean-shift, BlockMerging, room assignment, size filter) must give
back the ground-truth segmentation; outputs no trained network gives are refused before clustering."""

import json
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

from jsnet_tf import config, metrics, training
from jsnet_tf.clustering import postprocess
from jsnet_tf.data import pipeline, s3dis
from jsnet_tf.evaluation import (
    PLAUSIBLE_OUTPUT_LIMIT,
    BatchedInference,
    EvaluationError,
    RoomSegmenter,
    _chunks,
    check_network_outputs,
)
from tests.conftest import TINY_POINTS, tiny_overrides

NUM_POINTS = 256


class OracleNet:
    """Reads each point's class and instance from its colour channels (red = instance / 255,
    green = class / 255) and returns one-hot logits and embeddings 3 apart per instance."""

    input_channels, num_classes, embedding_dim = 9, 13, 5

    def __call__(self, points, training=False):
        instance = tf.round(points[..., 3] * 255.0)
        semantic = tf.cast(tf.round(points[..., 4] * 255.0), tf.int32)
        embeddings = tf.stack([instance * 3.0] + [tf.zeros_like(instance)] * 4, axis=-1)
        return {"semantic_logits": 10.0 * tf.one_hot(semantic, self.num_classes), "embeddings": embeddings}


def oracle_room(rng, name="Area_9_office_1"):
    """A 3 m x 2 m room: floor, two walls, three boxes (tables, a chair) and a small clutter object."""
    parts = []

    def box(lo, hi, count, semantic):
        xyz = rng.uniform(lo, hi, (count, 3))
        parts.append((xyz, semantic))

    box([0, 0, 0], [3, 2, 0.02], 6000, 1)  # floor
    box([0, 0, 0], [0.05, 2, 2.5], 2500, 2)  # wall
    box([0, 1.95, 0], [3, 2, 2.5], 2500, 2)  # wall
    box([0.5, 0.4, 0.6], [1.7, 1.0, 0.75], 2500, 7)  # table across blocks
    box([2.0, 0.3, 0.6], [2.8, 1.2, 0.75], 2000, 7)  # table
    box([1.9, 1.4, 0.0], [2.3, 1.8, 0.9], 1500, 8)  # chair
    xyz = np.concatenate([p for p, _ in parts]).astype(np.float32)
    semantic = np.concatenate([np.full(len(p), s) for p, s in parts]).astype(np.int32)
    instance = np.concatenate([np.full(len(p), i) for i, (p, _) in enumerate(parts)]).astype(np.int32)
    rgb = np.stack([instance, semantic, np.zeros_like(instance)], axis=1).astype(np.uint8)
    return s3dis.Room(name=name, xyz=xyz - xyz.min(axis=0), rgb=rgb, semantic=semantic, instance=instance)


def segmenter(num_points=NUM_POINTS, net=None, **eval_overrides):
    cfg = config.load(None, [f"eval.{k}={v}" for k, v in eval_overrides.items()])
    mean_size = np.full(13, 100.0)
    return RoomSegmenter(net or OracleNet(), num_points, mean_size, cfg["eval"])


def _matched_fraction(predicted, truth):
    """The share of points whose predicted instance is the one most of their true instance's
    points got, with that matching one-to-one."""
    matched, used = 0, set()
    for t in np.unique(truth):
        ids, counts = np.unique(predicted[truth == t], return_counts=True)
        best = ids[counts.argmax()]
        assert best not in used, f"two instances both became {best}"
        used.add(best)
        matched += counts.max()
    return matched / len(truth)


def test_chunks_cover_every_point_once_then_repeat(rng):
    indices = rng.choice(10_000, 700, replace=False)
    chunks = _chunks(indices, 256, rng)
    assert len(chunks) == 3 and all(len(c) == 256 for c in chunks)
    flat = np.concatenate(chunks)
    assert set(flat[:700]) == set(indices) and len(np.unique(flat[:700])) == 700
    assert set(flat[700:]) <= set(indices)


@pytest.mark.parametrize("label_all_points", [True, False])
def test_an_oracle_network_gives_back_the_ground_truth(rng, label_all_points):
    room = oracle_room(rng)
    # The original's one sample per block needs S3DIS-like density for blocks to overlap in >= 7 cells.
    num_points = NUM_POINTS if label_all_points else 2048
    result = segmenter(num_points, label_all_points=str(label_all_points).lower()).segment(room, seed=3)
    np.testing.assert_array_equal(result.semantic_pred, result.semantic_gt)
    assert (result.instance_pred >= 0).all()
    # BlockMerging keeps one instance per grid cell (cells of 0.5% of the room) and, like the
    # original, gives a block's fragment of < 30 points without overlap to instance 0: a few
    # points where objects touch can take a neighbour's instance.
    assert _matched_fraction(result.instance_pred, result.instance_gt) > 0.995
    evaluator = metrics.Evaluator(13)
    evaluator.add_room(result.semantic_gt, result.instance_gt, result.semantic_pred, result.instance_pred,
                       instances=result.instances)
    numbers = evaluator.result()
    assert numbers["oAcc"] == 1.0 and numbers["mPrec"] == 1.0 and numbers["mRec"] == 1.0 and numbers["mCov"] > 0.99
    assert numbers["AP"] == numbers["AP50"] == numbers["AP25"] == 1.0
    if label_all_points:  # every room point once
        assert len(result.xyz) == len(room) and np.array_equal(result.semantic_gt, room.semantic)
    else:  # the original's rows: num_points per block
        assert len(result.xyz) % num_points == 0 and len(result.xyz) > len(room)


class ConfidentOracleNet(OracleNet):
    """The oracle, with logits 2 + instance apart: a point of instance i has the probability
    e^(2+i) / (e^(2+i) + 12) of its class."""

    def __call__(self, points, training=False):
        out = super().__call__(points, training)
        instance = tf.round(points[..., 3] * 255.0)
        return {**out, "semantic_logits": out["semantic_logits"] / 10.0 * (2.0 + instance[..., None])}


@pytest.mark.parametrize("label_all_points", [True, False])
def test_each_instance_takes_its_class_and_the_mean_probability_of_it_as_confidence(rng, label_all_points):
    room = oracle_room(rng)
    num_points = NUM_POINTS if label_all_points else 2048
    result = segmenter(num_points, ConfidentOracleNet(), label_all_points=str(label_all_points).lower()).segment(room)
    table = result.instances
    assert table.ids.tolist() == sorted(set(result.instance_pred.tolist()) - {-1})
    for i, c, confidence, points in zip(*table):
        members = result.instance_pred == i
        assert c == np.bincount(result.semantic_pred[members]).argmax() and points == members.sum()
        # each member's probability of class c, from the instance the oracle read at it (a member
        # of another class, where mean-shift mixed two objects, has the small one)
        gt, own_class = result.instance_gt[members], result.semantic_gt[members] == c
        scale = np.exp(2.0 + gt.astype(np.float64)) + 12
        expected = np.where(own_class, np.exp(2.0 + gt) / scale, 1 / scale).mean()
        assert confidence == pytest.approx(expected, rel=1e-4)


def test_instances_at_most_the_size_fraction_of_rows_are_dropped(rng):
    """Sizes count the rows the original's sampled blocks would give: every block holding a
    point adds num_points / (the block's points)."""
    room = oracle_room(rng)
    cfg = config.load(None)["eval"]
    mean_size = np.full(13, 100.0)
    seg = RoomSegmenter(OracleNet(), NUM_POINTS, mean_size, {**cfg, "size_fraction": 0.0})
    unfiltered = seg.segment(room).instance_pred
    rows = np.zeros(len(room))
    for members in seg.block_members(room):
        rows[members] += NUM_POINTS / len(members)
    ids, counts = np.unique(unfiltered[room.instance == 5], return_counts=True)
    chair = unfiltered == ids[counts.argmax()]
    size = rows[chair].sum()
    mean_size[8] = size / 0.25 * (1 + 1e-9)  # the chair instance just at the threshold: dropped
    at = RoomSegmenter(OracleNet(), NUM_POINTS, mean_size, cfg).segment(room).instance_pred
    assert (at[chair] == -1).all() and (at[~chair] >= 0).all()
    mean_size[8] = size / 0.25 * (1 - 1e-9)  # just above it: kept
    above = RoomSegmenter(OracleNet(), NUM_POINTS, mean_size, cfg).segment(room).instance_pred
    assert (above >= 0).all() and len(np.unique(above)) == len(np.unique(unfiltered))


def test_the_same_seed_gives_the_same_labels(rng):
    room = oracle_room(rng)
    seg = segmenter(label_all_points="false")
    a, b = seg.segment(room, seed=5), seg.segment(room, seed=5)
    for key, value in a.arrays().items():
        if key != "name":
            np.testing.assert_array_equal(value, getattr(b, key), err_msg=key)


def test_points_of_skipped_sparse_blocks_take_the_nearest_label(rng):
    room = oracle_room(rng)
    lonely = s3dis.Room(  # a chair point far beyond the room's blocks of >= 100 points
        name=room.name,
        xyz=np.concatenate([room.xyz, [[5.5, 1.0, 0.5]]]).astype(np.float32),
        rgb=np.concatenate([room.rgb, [[5, 8, 0]]]).astype(np.uint8),
        semantic=np.concatenate([room.semantic, [8]]).astype(np.int32),
        instance=np.concatenate([room.instance, [5]]).astype(np.int32),
    )
    result = segmenter().segment(lonely)
    nearest = np.argmin(np.linalg.norm(room.xyz - lonely.xyz[-1], axis=1))
    assert result.semantic_pred[-1] == room.semantic[nearest]


def test_bad_rooms_are_named(rng):
    room = oracle_room(rng)
    empty = s3dis.Room(room.name, room.xyz[:0], room.rgb[:0], room.semantic[:0], room.instance[:0])
    with pytest.raises(EvaluationError, match="Area_9_office_1 holds no points"):
        segmenter().segment(empty)
    sparse = s3dis.Room(room.name, room.xyz[:50], room.rgb[:50], room.semantic[:50], room.instance[:50])
    with pytest.raises(EvaluationError, match="no block .* holds 100 points"):
        segmenter().segment(sparse)
    nan = s3dis.Room(room.name, room.xyz.copy(), room.rgb, room.semantic, room.instance)
    nan.xyz[7, 1] = np.nan
    with pytest.raises(EvaluationError, match="non-finite"):
        segmenter().segment(nan)


@pytest.mark.parametrize(
    "key, value, message",
    [("batch_size", 0, "eval.batch_size must be at least 1"), ("stride", 0.0, r"eval.stride must lie in \(0, 1.0\]"),
     ("min_block_points", 0, "eval.min_block_points"), ("bandwidth", -1.0, "eval.bandwidth must be positive")],
)
def test_settings_the_protocol_cannot_run_with_are_named(key, value, message):
    eval_cfg = {**config.load(None)["eval"], key: value}  # a dict past the config's own range checks
    with pytest.raises(EvaluationError, match=message):
        RoomSegmenter(OracleNet(), NUM_POINTS, np.full(13, 100.0), eval_cfg)


# ------------------------------------------------------------------------------ unusable outputs


UNTRAINED = (r"untrained model \(moving statistics start at 0, as in the original, and blow up in inference\) "
             "or corrupted weights")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_are_refused_in_one_line(value):
    embeddings = np.ones((2, 4, 5), np.float32)
    embeddings[1, 3, 2] = value
    with pytest.raises(EvaluationError, match=r"^room R: the network's outputs are not finite \(embeddings hold NaN "
                                              rf"or infinite values\); the usual causes are an {UNTRAINED}") as caught:
        check_network_outputs("room R", semantic_logits=np.zeros((2, 4, 13)), embeddings=embeddings)
    assert "\n" not in str(caught.value)


def test_outputs_beyond_the_plausible_limit_are_refused():
    logits = np.full((1, 3, 13), 2.0, np.float32)
    logits[0, 1, 4] = -1e20
    expected = (r"^room R: semantic_logits of up to 1e\+20 in magnitude are not plausible network outputs "
                rf"\(beyond 1e\+15; .*\); the usual causes are an {UNTRAINED}")
    with pytest.raises(EvaluationError, match=expected):
        check_network_outputs("room R", semantic_logits=logits)
    at_limit = np.array([PLAUSIBLE_OUTPUT_LIMIT, -PLAUSIBLE_OUTPUT_LIMIT])
    check_network_outputs("room R", semantic_logits=at_limit, embeddings=np.zeros((0, 5)))
    with pytest.raises(EvaluationError, match="embeddings of up to"):
        check_network_outputs("room R", semantic_logits=at_limit, embeddings=np.nextafter(at_limit, np.inf) * [1, 0])


class CorruptNet(OracleNet):
    """The oracle, with `key`'s outputs replaced by `value` at the points whose normalised room x
    (channel 6) is at least `from_x`."""

    def __init__(self, key, value, from_x=0.0):
        self.key, self.value, self.from_x = key, value, from_x

    def __call__(self, points, training=False):
        out = super().__call__(points, training)
        hit = points[..., 6:7] >= self.from_x
        out[self.key] = tf.where(hit, tf.fill(tf.shape(out[self.key]), self.value), out[self.key])
        return out


@pytest.fixture
def clustered(monkeypatch):
    """The largest |embedding| of every block that mean-shift clusters."""
    seen = []
    mean_shift = postprocess.mean_shift

    def recording(embeddings, bandwidth):
        seen.append(float(np.abs(embeddings).max()))
        return mean_shift(embeddings, bandwidth)

    monkeypatch.setattr(postprocess, "mean_shift", recording)
    return seen


@pytest.mark.parametrize(
    "key, value, label_all_points, problem",
    [("semantic_logits", np.nan, "true", "the network's outputs are not finite"),
     ("semantic_logits", 1e20, "true", "semantic_logits of up to 1e\\+20 in magnitude are not plausible"),
     ("embeddings", np.inf, "false", "the network's outputs are not finite"),
     ("embeddings", -3e18, "false", "embeddings of up to 3e\\+18 in magnitude are not plausible")],
)
def test_a_room_of_unusable_outputs_is_refused_before_anything_is_clustered(rng, clustered, key, value,
                                                                            label_all_points, problem):
    """Even 1e20 logits give finite probabilities (softmax): the logits themselves are checked."""
    seg = segmenter(net=CorruptNet(key, value), label_all_points=label_all_points)
    with pytest.raises(EvaluationError, match=f"^room Area_9_office_1: {problem}.*{UNTRAINED}"):
        seg.segment(oracle_room(rng))
    assert clustered == []


def test_unusable_outputs_of_a_later_batch_stop_the_room_before_that_batch_is_clustered(rng, clustered):
    room = oracle_room(rng)
    cfg = config.load(None, ["eval.batch_size=4"])["eval"]
    seg = RoomSegmenter(CorruptNet("embeddings", np.nan, from_x=0.9), NUM_POINTS, np.full(13, 100.0), cfg)
    with pytest.raises(EvaluationError, match="room Area_9_office_1: the network's outputs are not finite"):
        seg.segment(room)
    assert clustered and max(clustered) < 100  # the earlier blocks only


@pytest.fixture
def eager():
    """tf.functions run eagerly: four training steps of a tiny network cost less than compiling them."""
    before = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(before)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Even though the `tf.config.experimental_run_functions_eagerly`")
def test_a_normally_trained_tiny_model_passes_the_check(tiny_s3dis, tmp_path, eager):
    """Two epochs of the training loop (four steps of its batch-norm decay schedule) on the tiny
    set give logits of about 1e4, far below PLAUSIBLE_OUTPUT_LIMIT: the check refuses untrained
    models, not young ones. Segmented: the test room's corner of 1.5 m x 1.5 m (7 blocks)."""
    cfg = config.load(None, tiny_overrides(tiny_s3dis) + ["eval.batch_size=16"])
    trainer = training.Trainer(cfg, tmp_path / "run", fold=2)
    trainer.fit(verbose=0, validate=False)
    room = s3dis.load_room(pipeline.area_files(tiny_s3dis, 2, "test", "rooms")[0])
    corner = (room.xyz[:, 0] < 1.5) & (room.xyz[:, 1] < 1.5)
    room = s3dis.Room(room.name, room.xyz[corner], room.rgb[corner], room.semantic[corner], room.instance[corner])
    mean_size = s3dis.read_mean_ins_size(tiny_s3dis / "lists" / "mean_ins_size_woArea2.txt")
    seg = RoomSegmenter(trainer.model, TINY_POINTS, mean_size, cfg["eval"], cfg["data"]["block_size"])
    result = seg.segment(room)
    assert len(result.semantic_pred) == len(room) and np.isfinite(result.score).all()


class CountingNet(OracleNet):
    """OracleNet that counts its calls as they start (a py_function in the traced call)."""

    def __init__(self):
        self.calls = 0
        self._changed = threading.Condition()

    def _started(self):
        with self._changed:
            self.calls += 1
            self._changed.notify_all()
        return np.float32(0)

    def wait_for_calls(self, count, timeout=30):
        with self._changed:
            return self._changed.wait_for(lambda: self.calls >= count, timeout)

    def __call__(self, points, training=False):
        zero = tf.py_function(self._started, [], tf.float32)
        out = super().__call__(points, training)
        return {k: v + zero for k, v in out.items()}


def test_the_next_batch_runs_while_the_caller_works_on_the_last_one(rng):
    net = CountingNet()
    rows = [(i, rng.random((NUM_POINTS, 9)).astype(np.float32)) for i in range(8)]
    outputs = BatchedInference(net, NUM_POINTS, 9, batch_size=2, devices=["/CPU:0"]).outputs(rows, "room R")
    key, logits, embeddings, probabilities = next(outputs)  # the caller holds the first row ...
    assert net.wait_for_calls(2)  # ... while the second batch runs
    got = [(key, logits, embeddings, probabilities)] + list(outputs)
    assert [k for k, *_ in got] == list(range(8)) and net.calls == 4
    direct = OracleNet()(tf.constant(np.stack([row for _, row in rows])))
    np.testing.assert_array_equal(np.stack([g[1] for g in got]), direct["semantic_logits"])
    np.testing.assert_array_equal(np.stack([g[2] for g in got]), direct["embeddings"])
    np.testing.assert_allclose(np.stack([g[3] for g in got]), tf.nn.softmax(direct["semantic_logits"]), rtol=1e-6)


# Logical devices are configured before TensorFlow starts: a fresh process.
TWO_DEVICES = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from jsnet_tf import config
from jsnet_tf.evaluation import BatchedInference
from jsnet_tf.model import build_model
cfg = config.load(None, json.loads(sys.argv[1]))
model = build_model(cfg)
rng = np.random.default_rng(0)
points = rng.uniform(0, 1, (4, cfg["data"]["num_points"], 9)).astype(np.float32)
model.set_bn_decay(0.0)
model(points, training=True)
rows = [(i, rng.uniform(0, 1, (cfg["data"]["num_points"], 9)).astype(np.float32)) for i in range(7)]
results = {}
for name, devices in (("one", ["/CPU:0"]), ("two", ["/CPU:0", "/CPU:1"])):
    inference = BatchedInference(model, cfg["data"]["num_points"], 9, 2, devices)
    results[name] = [(k, l.tolist(), e.tolist()) for k, l, e, _ in inference.outputs(rows, "test")]
print("RESULT " + json.dumps({**results, "same": results["one"] == results["two"],
                               "replica_device": inference.models[1].weights[0].value.device,
                               "logits_of_other_rows_differ": results["one"][0][1] != results["one"][1][1]}))
"""


@pytest.mark.slow
def test_batches_spread_over_two_devices_give_the_one_device_outputs(tiny_s3dis):
    overrides = tiny_overrides(tiny_s3dis)
    result = subprocess.run([sys.executable, "-c", TWO_DEVICES, json.dumps(overrides)], capture_output=True, text=True,
                            timeout=600, cwd=pathlib.Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert [k for k, _, _ in found["two"]] == list(range(7))
    assert found["same"] and found["logits_of_other_rows_differ"]
    assert found["replica_device"].endswith("CPU:1")
