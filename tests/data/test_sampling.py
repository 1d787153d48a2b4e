"""The three training sampling modes, epoch_blocks, split_rooms and validation_dataset, on rooms
small enough to count their windows by hand (1 m windows at stride 0.5, test area 3)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jsnet_tf.data import pipeline, s3dis  # noqa: E402
from jsnet_tf.errors import DataError  # noqa: E402
from tests.data.test_pipeline import NP, collect, make_room, prepare_rooms  # noqa: E402

MIN_POINTS = 10
TEST_AREA = 3
# name: (points, extent of the uniform points, the far corner pinned by one point)
SHAPES = {
    "Area_1_office_1": (2000, (2.0, 1.5), (2.0, 1.5)),
    "Area_1_hallway_1": (400, (1.0, 1.0), (3.0, 1.0)),
    "Area_2_office_1": (300, (1.0, 1.0), (1.0, 1.0)),
    "Area_2_storage_1": (1500, (2.0, 1.5), (2.0, 1.5)),
    "Area_3_office_1": (500, (1.5, 1.0), (1.5, 1.0)),
}
GRID_2x15 = [(0, 0), (0, .5), (.5, 0), (.5, .5), (1, 0), (1, .5)]
# Every window of the grid, by hand: nx = ceil((max_x - 1) / 0.5) + 1 (at least 1), same in y.
WINDOWS = {
    "Area_1_office_1": GRID_2x15,                                # 3 x 2
    "Area_1_hallway_1": [(0, 0), (.5, 0), (1, 0), (1.5, 0), (2, 0)],  # 5 x 1
    "Area_2_office_1": [(0, 0)],                                  # 1 x 1
    "Area_2_storage_1": GRID_2x15,
    "Area_3_office_1": [(0, 0), (.5, 0)],                         # 2 x 1
}
# The hallway's points lie in x < 1 but for the corner point at x = 3: its windows from x = 1 on
# hold 0, 0 and 1 points and are dropped.
KEPT = {name: [w for w in windows if not (name == "Area_1_hallway_1" and w[0] >= 1)]
        for name, windows in WINDOWS.items()}
TRAIN_ROOMS = [n for n in SHAPES if not n.startswith(f"Area_{TEST_AREA}_")]
HAND_COUNT = 6 + 2 + 1 + 6  # kept windows of the training rooms
CORNER_COUNT = 2 * 2 + 3 * 1 + 1 * 1 + 2 * 2  # ceil(max_x) * ceil(max_y) per training room


def shaped_room(name, room_id, rng):
    """`make_room` squeezed into its extent, with point 1 pinned at the far corner."""
    n, (dense_x, dense_y), corner = SHAPES[name]
    room = make_room(name, room_id, rng, n=n)
    room.xyz[:, 0] *= dense_x / 2.5
    room.xyz[:, 1] *= dense_y / 2.0
    room.xyz[1, :2] = corner
    return room


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("sampling")
    rng = np.random.default_rng(0)
    rooms = {name: shaped_room(name, i + 1, rng) for i, name in enumerate(SHAPES)}
    prepare_rooms(out, rooms.values(), rng, num_points=NP, min_points=MIN_POINTS)
    return out, rooms


def identify(points, rooms):
    """Per block: (room name, window corner, drawn room point indices). The room comes from the
    red channel, each point from its normalised-location channels (matched exactly against the
    room's own), the window is the one with the fewest points among the room's hand-listed
    windows (float64 closed-interval test) that hold every drawn point: the hallway's window at
    x = 0.5 holds a subset of the one at x = 0, whose blocks are told apart by their points in
    x < 0.5. Fails if no window, or two of the same size, hold the block."""
    names = list(rooms)
    lookup = {}
    for name, room in rooms.items():
        xyz = room.xyz.astype(np.float64)
        normalised = (xyz / xyz.max(axis=0)).astype(np.float32)
        lookup[name] = {row.tobytes(): i for i, row in enumerate(normalised)}
    found = []
    for block in points:
        room_id = set((np.rint(block[:, 3] * 255).astype(int) // 10).tolist())
        assert len(room_id) == 1
        name = names[room_id.pop() - 1]
        xyz = rooms[name].xyz.astype(np.float64)
        drawn = np.array([lookup[name][row.tobytes()] for row in block[:, 6:9]])
        p = xyz[drawn]
        holders = sorted((len(window_members(rooms[name], w)), w) for w in WINDOWS[name]
                         if (p[:, 0] >= w[0]).all() and (p[:, 0] <= w[0] + 1).all()
                         and (p[:, 1] >= w[1]).all() and (p[:, 1] <= w[1] + 1).all())
        assert holders and (len(holders) == 1 or holders[0][0] < holders[1][0]), (name, holders)
        found.append((name, holders[0][1], drawn))
    return found


def window_members(room, corner):
    xyz = room.xyz.astype(np.float64)
    x0, y0 = corner
    return np.flatnonzero((xyz[:, 0] >= x0) & (xyz[:, 0] <= x0 + 1)
                          & (xyz[:, 1] >= y0) & (xyz[:, 1] <= y0 + 1))


def block_multiset(arrays):
    """Each block's points, semantic and instance bytes, sorted: the epoch as a multiset."""
    return sorted(p.tobytes() + s.tobytes() + i.tobytes()
                  for p, s, i in zip(arrays["points"], arrays["semantic"], arrays["instance"]))


def epoch(out, **kw):
    kw = dict(area=TEST_AREA, batch_size=1, num_points=NP, min_points=MIN_POINTS,
              drop_remainder=False, **kw)
    return collect(pipeline.training_dataset(out, **kw))[1]


def test_resample_visits_every_window_once_with_fresh_points(prepared):
    out, rooms = prepared
    want = sorted((name, w) for name in TRAIN_ROOMS for w in KEPT[name])
    assert len(want) == HAND_COUNT
    drawn = {}
    for e in (0, 1):
        found = identify(epoch(out, seed=4, epoch=e)["points"], rooms)
        assert sorted((name, w) for name, w, _ in found) == want  # every window once
        for name, corner, points in found:
            members = window_members(rooms[name], corner)
            assert len(members) > NP  # every window here has more points than a block holds
            assert len(set(points.tolist())) == NP  # drawn without replacement
            assert set(points.tolist()) <= set(members.tolist())
        drawn[e] = {(name, w): frozenset(p.tolist()) for name, w, p in found}
    assert all(drawn[0][key] != drawn[1][key] for key in drawn[0])  # drawn afresh


def test_fixed_reads_the_prepared_blocks_every_epoch(prepared):
    out, _ = prepared
    files = [out / "blocks" / f"{name}.h5" for name in TRAIN_ROOMS]
    stored = [s3dis.read_blocks_h5(f) for f in files]
    want = block_multiset({"points": np.concatenate([b.data for b in stored]),
                           "semantic": np.concatenate([b.semantic for b in stored]),
                           "instance": np.concatenate([b.instance for b in stored])})
    assert len(want) == HAND_COUNT
    first, second = (epoch(out, sampling="fixed", seed=1, epoch=e) for e in (0, 1))
    assert block_multiset(first) == want and block_multiset(second) == want
    assert not np.array_equal(first["points"], second["points"])  # another order


@pytest.mark.parametrize("sampling", ["resample", "fixed"])
def test_same_seed_and_epoch_same_bytes(prepared, sampling):
    out, _ = prepared
    kw = dict(sampling=sampling, seed=7, epoch=3, shuffle_buffer=4)
    a = epoch(out, num_parallel_calls=1, **kw)
    b = epoch(out, num_parallel_calls=4, cache_rooms=False, **kw)
    c = epoch(out, **kw)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(a[k], c[k])
    assert not np.array_equal(a["points"], epoch(out, sampling=sampling, seed=7, epoch=4,
                                                 shuffle_buffer=4)["points"])


def test_epoch_blocks_matches_hand_count_and_epoch(prepared):
    out, _ = prepared
    kw = dict(num_points=NP, min_points=MIN_POINTS)
    for sampling in ("resample", "fixed"):
        count = pipeline.epoch_blocks(out, TEST_AREA, sampling, **kw)
        assert count == HAND_COUNT
        assert len(epoch(out, sampling=sampling)["points"]) == count
    corners = pipeline.epoch_blocks(out, TEST_AREA, "random_corners", **kw)
    assert corners == CORNER_COUNT
    assert len(epoch(out, sampling="random_corners")["points"]) <= corners
    assert pipeline.epoch_blocks(out, TEST_AREA, "random_corners", blocks_per_room=5,
                                 **kw) == 5 * len(TRAIN_ROOMS)
    subset = ["Area_2_office_1", "Area_1_hallway_1"]
    for sampling in ("resample", "fixed"):
        assert pipeline.epoch_blocks(out, TEST_AREA, sampling, rooms=subset, **kw) == 2 + 1
        got = epoch(out, sampling=sampling, rooms=subset)["points"]
        assert len(got) == 3
        reds = set((np.rint(got[..., 3] * 255).astype(int) // 10).ravel().tolist())
        assert reds == {list(SHAPES).index(n) + 1 for n in subset}


def test_window_point_counts_closed_intervals(rng):
    # points on a 0.25 grid, so many lie exactly on window edges
    xyz = np.column_stack([rng.integers(0, 11, 400) * 0.25, rng.integers(0, 7, 400) * 0.25,
                           rng.uniform(0, 1, 400)]).astype(np.float32)
    room = s3dis.Room("Area_1_grid", xyz, np.zeros((400, 3), np.uint8),
                      np.zeros(400, np.int32), np.zeros(400, np.int32))
    for block_size, stride in ((1.0, 0.5), (1.0, 1.0), (0.75, 0.25)):
        origins, counts = s3dis.window_point_counts(room, block_size, stride)
        np.testing.assert_array_equal(
            origins, s3dis.test_block_origins(xyz.max(axis=0), block_size, stride))
        p = xyz.astype(np.float64)
        brute = [int(((p[:, 0] >= x0) & (p[:, 0] <= x0 + block_size) & (p[:, 1] >= y0)
                      & (p[:, 1] <= y0 + block_size)).sum()) for x0, y0 in origins]
        np.testing.assert_array_equal(counts, brute)


def test_split_rooms_fraction(prepared):
    out, _ = prepared
    splits = set()
    for seed in range(12):
        train, val = pipeline.split_rooms(out, TEST_AREA, 0.5, seed)
        assert pipeline.split_rooms(out, TEST_AREA, 0.5, seed) == (train, val)
        assert len(val) == 2  # round(0.5 * 4); round-robin: one of each training area
        assert sorted(name[:6] for name in val) == ["Area_1", "Area_2"]
        assert sorted(train + val) == sorted(TRAIN_ROOMS) and not set(train) & set(val)
        assert train == [n for n in sorted(TRAIN_ROOMS) if n not in val]
        splits.add(tuple(val))
    assert len(splits) > 1  # the seed chooses
    assert len(pipeline.split_rooms(out, TEST_AREA, 0.1, 0)[1]) == 1  # max(1, round(0.4))
    assert pipeline.split_rooms(out, TEST_AREA, 0.0, 0) == (sorted(TRAIN_ROOMS), [])
    assert pipeline.split_rooms(out, TEST_AREA, [], 0) == (sorted(TRAIN_ROOMS), [])
    # test area 1: training areas 2 (two rooms) and 3 (one room, never taken)
    for seed in range(12):
        train, val = pipeline.split_rooms(out, 1, 0.3, seed)  # round(0.9) = 1 room
        assert len(val) == 1 and val[0].startswith("Area_2_")
        assert "Area_3_office_1" in train and not any(n.startswith("Area_1_") for n in train)


def test_split_rooms_list(prepared):
    out, _ = prepared
    train, val = pipeline.split_rooms(out, TEST_AREA, ["Area_2_storage_1", "Area_1_hallway_1"], 9)
    assert val == ["Area_1_hallway_1", "Area_2_storage_1"]
    assert train == ["Area_1_office_1", "Area_2_office_1"]
    # the training rooms of the split feed training_dataset: no block of a validation room
    got = epoch(out, rooms=train)["points"]
    assert set((np.rint(got[..., 3] * 255).astype(int) // 10).ravel().tolist()) == {1, 3}


@pytest.mark.parametrize("area, value, message", [
    (TEST_AREA, ["Area_3_office_1"],
     "Area_3_office_1 is a room of test area 3: it cannot be used for validation"),
    (TEST_AREA, ["Area_1_ofice_1"], "did you mean Area_1_office_1"),
    (TEST_AREA, ["Area_1_office_1", "Area_1_hallway_1"], "every room of training area 1"),
    (TEST_AREA, ["Area_2_office_1", "Area_2_office_1"], "listed twice"),
    (TEST_AREA, 0.75, "asks for 3 of the 4 training rooms, but only 2 can be held out"),
    (1, 0.5, "asks for 2 of the 3 training rooms, but only 1 can be held out"),
    (TEST_AREA, 1.0, r"fraction in \[0, 1\)"),
    (TEST_AREA, -0.1, r"fraction in \[0, 1\)"),
    (TEST_AREA, True, r"fraction in \[0, 1\)"),
    (TEST_AREA, "Area_1_office_1", r"fraction in \[0, 1\)"),
    (9, 0.2, "train_file_list_woArea9.txt"),
])
def test_split_rooms_errors(prepared, area, value, message):
    out, _ = prepared
    with pytest.raises(DataError, match=message) as e:
        pipeline.split_rooms(out, area, value, 0)
    assert "\n" not in str(e.value)


def test_training_dataset_argument_errors(prepared):
    out, _ = prepared
    kw = dict(area=TEST_AREA, batch_size=2, num_points=NP)
    with pytest.raises(ValueError, match="resample, fixed, random_corners, got 'rs'") as e:
        pipeline.training_dataset(out, sampling="rs", **kw)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="random_corners' only"):
        pipeline.training_dataset(out, blocks_per_room=4, **kw)
    with pytest.raises(ValueError, match="random_corners' only"):
        pipeline.epoch_blocks(out, TEST_AREA, "fixed", blocks_per_room=4)
    with pytest.raises(DataError, match="test area 3: it cannot be used for training"):
        pipeline.training_dataset(out, rooms=["Area_1_office_1", "Area_3_office_1"], **kw)
    with pytest.raises(DataError, match="no training rooms"):
        pipeline.training_dataset(out, rooms=[], **kw)
    with pytest.raises(DataError, match="did you mean Area_2_storage_1"):
        pipeline.epoch_blocks(out, TEST_AREA, rooms=["Area_2_storag_1"])


def test_validation_dataset_fixed_order(prepared):
    out, _ = prepared
    names = ["Area_2_storage_1", "Area_1_office_1"]
    stored = [s3dis.read_blocks_h5(out / "blocks" / f"{n}.h5") for n in names]
    for _ in range(2):
        batches, got = collect(pipeline.validation_dataset(out, names, batch_size=4,
                                                           num_points=NP))
        assert [len(b["points"]) for b in batches] == [4, 4, 4]  # 12 blocks, none dropped
        np.testing.assert_array_equal(got["points"], np.concatenate([b.data for b in stored]))
        np.testing.assert_array_equal(got["semantic"],
                                      np.concatenate([b.semantic for b in stored]))
        np.testing.assert_array_equal(got["instance"],
                                      np.concatenate([b.instance for b in stored]))
    with pytest.raises(DataError, match="no validation rooms"):
        pipeline.validation_dataset(out, [], batch_size=4, num_points=NP)
    with pytest.raises(DataError, match="Area_1_nowhere_1.h5: block file missing"):
        pipeline.validation_dataset(out, ["Area_1_nowhere_1"], batch_size=4, num_points=NP)
