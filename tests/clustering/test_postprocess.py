"""postprocess_room and finalize_instances against the original's way (sklearn + reference)."""

import numpy as np
import pytest

from jsnet_tf.clustering import ClusteringError, finalize_instances, postprocess_room
from tests.clustering import reference
from tests.clustering.rooms import make_room


@pytest.mark.slow
def test_room_matches_the_original_pipeline(rng):
    room = make_room(rng, 3, 2, points_per_block=2048)
    ours = postprocess_room(np.stack(room.xyz), np.stack(room.embeddings), np.stack(room.semantic),
                            room.mean_ins_size)
    expected = reference.postprocess_room(room.xyz, room.embeddings, room.semantic, room.mean_ins_size)
    np.testing.assert_array_equal(ours, expected)
    assert ours.dtype == np.int64 and ours.shape == (6 * 2048,)
    assert ours.max() >= 5  # the room's objects were found


@pytest.mark.slow
def test_blocks_of_different_sizes_match_the_original_pipeline(rng):
    room = make_room(rng, 2, 2, points_per_block=1500, ragged=True)
    assert len({len(x) for x in room.xyz}) > 1
    ours = postprocess_room(room.xyz, room.embeddings, room.semantic, room.mean_ins_size)
    expected = reference.postprocess_room(room.xyz, room.embeddings, room.semantic, room.mean_ins_size)
    np.testing.assert_array_equal(ours, expected)


def test_threads_do_not_change_the_result(rng):
    room = make_room(rng, 3, 3, points_per_block=800, ragged=True)
    args = (room.xyz, room.embeddings, room.semantic, room.mean_ins_size)
    np.testing.assert_array_equal(postprocess_room(*args, num_threads=1), postprocess_room(*args, num_threads=3))


def test_parameters_reach_every_stage(rng):
    room = make_room(rng, 2, 2, points_per_block=1000)
    args = (room.xyz, room.embeddings, room.semantic, room.mean_ins_size)
    default = postprocess_room(*args)
    assert not np.array_equal(default, postprocess_room(*args, bandwidth=2.0))
    assert not np.array_equal(default, postprocess_room(*args, gap=0.05))
    assert not np.array_equal(default, postprocess_room(*args, size_fraction=10.0))
    assert np.all(postprocess_room(*args, min_points=10**6, min_overlap=0) <= 0)  # nothing new after instance 0


def test_empty_room_and_empty_blocks(rng):
    assert postprocess_room([], [], [], np.ones(13)).shape == (0,)
    room = make_room(rng, 2, 1, points_per_block=600)
    with_empty = ([room.xyz[0], np.zeros((0, 3), np.float32), room.xyz[1]],
                  [room.embeddings[0], np.zeros((0, 5), np.float32), room.embeddings[1]],
                  [room.semantic[0], np.zeros(0, np.int64), room.semantic[1]])
    np.testing.assert_array_equal(postprocess_room(*with_empty, room.mean_ins_size),
                                  postprocess_room(room.xyz, room.embeddings, room.semantic, room.mean_ins_size))


def test_finalize_hand_computed():
    # instance 7: 4 points, classes 1,1,2,2 -> class 1 (lowest of the tie), 4 > 0.25 * 12 = 3: kept
    # instance 3: 3 points of class 2, 3 > 0.25 * 12 = 3 is false: dropped
    # instance 9: 2 points of class 0, 2 > 0.25 * 4 = 1: kept
    room_ids = np.array([7, 7, 7, 7, 3, 3, 3, 9, 9, -1])
    semantic = np.array([1, 2, 1, 2, 2, 2, 2, 0, 0, 1])
    mean_ins_size = np.array([4.0, 12.0, 12.0])
    np.testing.assert_array_equal(finalize_instances(room_ids, semantic, mean_ins_size),
                                  [0, 0, 0, 0, -1, -1, -1, 1, 1, -1])


def test_finalize_matches_reference_on_sparse_ids(rng):
    room_ids = rng.choice([-1, 5, 17, 10**9, 42], 400)
    semantic = rng.integers(0, 4, 400)
    mean_ins_size = rng.uniform(50, 400, 4)
    expected = reference.assign_and_filter({}, np.zeros((400, 3)), room_ids, semantic, mean_ins_size)
    np.testing.assert_array_equal(finalize_instances(room_ids, semantic, mean_ins_size), expected)


def bad_room():
    xyz = np.random.default_rng(0).random((2, 50, 3)).astype(np.float32)
    return [xyz, np.zeros((2, 50, 5), np.float32), np.zeros((2, 50), np.int64), np.ones(13)]


def replaced(index, value):
    args = bad_room()
    args[index] = value
    return args


@pytest.mark.parametrize(
    "args, message",
    [
        (replaced(2, np.full((2, 50), 13)), r"semantic_pred \(block 0\) holds class 13, outside \[0, 13\)"),
        (replaced(2, np.full((2, 50), -1)), "outside"),
        (replaced(1, np.zeros((3, 50, 5))), "hold 2, 3 and 2 blocks"),
        (replaced(1, [np.zeros((50, 5)), np.zeros((49, 5))]), "block 1: .* 50, 49 and 50 points"),
        (replaced(1, np.full((2, 50, 5), np.nan)), "block 0: embeddings holds NaN"),
        (replaced(0, np.full((2, 50, 3), 2.0)), "block 0: block_xyz holds point .* outside the room grid"),
        (replaced(0, np.zeros((2, 50))), "room_xyz must be 3-d"),
        (replaced(0, [np.zeros((50, 3)), np.zeros((50, 2))]), r"block 1: room_xyz must have shape \(points, 3\)"),
        (replaced(1, [np.zeros((50, 5)), np.zeros(50)]), r"block 1: embeddings must have shape"),
        (replaced(3, np.ones((2, 13))), "mean_ins_size must be 1-d"),
        (replaced(3, -np.ones(13)), "must not be negative"),
        (replaced(0, "room"), "must be an array or a list"),
    ],
)
def test_bad_input_raises(args, message):
    with pytest.raises(ClusteringError, match=message):
        postprocess_room(*args)


def test_weighted_sizes_and_votes_decide_the_instances():
    room_ids = np.array([0, 0, 0, 1, 1, 1, -1])
    semantic = np.array([2, 2, 1, 1, 1, 1, 0])
    weights = np.array([0.5, 0.5, 3.0, 1.0, 1.0, 1.0, 9.0])
    mean_ins_size = np.array([1.0, 16.0, 4.0])
    # instance 0: class 1 by weight (3 > 1), size 4 <= 0.25 * 16: dropped; instance 1: size 3 <= 4: dropped
    np.testing.assert_array_equal(finalize_instances(room_ids, semantic, mean_ins_size, weights=weights), [-1] * 7)
    mean_ins_size[1] = 11.9  # 0.25 * 11.9 = 2.975: both kept, renumbered 0 and 1
    np.testing.assert_array_equal(
        finalize_instances(room_ids, semantic, mean_ins_size, weights=weights), [0, 0, 0, 1, 1, 1, -1]
    )
    # without weights instance 0 is class 2 (two votes of three), size 3 > 0.25 * 4: kept
    np.testing.assert_array_equal(finalize_instances(room_ids, semantic, np.array([1.0, 16.0, 4.0]))[:3], [0, 0, 0])
    with pytest.raises(ClusteringError, match="weights"):
        finalize_instances(room_ids, semantic, mean_ins_size, weights=-weights)

