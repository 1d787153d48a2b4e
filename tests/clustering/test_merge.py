"""RoomMerger (native BlockMerging) against the plain reference port."""

import numpy as np
import pytest

from jsnet_tf.clustering import ClusteringError, RoomMerger, cluster_classes, mean_shift
from tests.clustering import reference
from tests.clustering.rooms import make_room


def merge_both(blocks, gap=5e-3, min_overlap=7, min_points=30):
    """Streams (xyz, labels, classes) blocks through RoomMerger and the reference; returns the
    per-block outputs of both, the merger and the reference volume."""
    merger = RoomMerger(gap, min_overlap, min_points)
    volume, volume_seg = {}, {}
    ours, theirs = [], []
    for xyz, labels, classes in blocks:
        ours.append(merger.merge(xyz, labels, classes))
        theirs.append(reference.block_merging(volume, volume_seg, xyz, labels, list(classes), gap, min_overlap,
                                              min_points))
    return ours, theirs, merger, volume


def room_ids_reference(volume, xyz, gap=5e-3):
    return np.array([volume.get(tuple(int(v) for v in c), -1) for c in reference.voxel_index(xyz, gap)])


def random_block(rng, num_points, num_clusters, num_classes=4, centre=None, extent=0.1, unlabelled=0.05):
    """Points in a small box of the room (so blocks overlap), clusters as spatial blobs."""
    centre = rng.uniform(0.1, 0.9, 3) if centre is None else centre
    seeds = rng.uniform(-extent, extent, (num_clusters, 3))
    labels = rng.integers(0, num_clusters, num_points)
    xyz = np.clip(centre + seeds[labels] + rng.normal(0, extent / 4, (num_points, 3)), 0, 1).astype(np.float32)
    labels[rng.random(num_points) < unlabelled] = -1
    classes = rng.integers(0, num_classes, num_clusters)
    return xyz, labels, classes


def test_random_rooms_match_reference_exactly(rng):
    for _ in range(3):
        centre = rng.uniform(0.2, 0.8, 3)
        blocks = [random_block(rng, int(rng.integers(200, 3000)), int(rng.integers(1, 30)),
                               centre=centre + rng.normal(0, 0.03, 3)) for _ in range(8)]
        ours, theirs, merger, volume = merge_both(blocks)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)
        everything = np.concatenate([xyz for xyz, _, _ in blocks])
        np.testing.assert_array_equal(merger.assign(everything), room_ids_reference(volume, everything))


def test_parameters_match_reference(rng):
    centre = rng.uniform(0.2, 0.8, 3)
    blocks = [random_block(rng, 1500, 12, centre=centre) for _ in range(5)]
    for gap, min_overlap, min_points in [(1e-2, 3, 10), (2e-2, 20, 100), (5e-3, 0, 0)]:
        ours, theirs, _, _ = merge_both(blocks, gap, min_overlap, min_points)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)


def test_overlapping_s3dis_like_blocks_match_reference(rng):
    """Blocks of a room at stride 0.5 (neighbours overlap), clustered by mean-shift."""
    room = make_room(rng, 3, 3, points_per_block=1500)
    blocks = []
    for xyz, embeddings, semantic in zip(room.xyz, room.embeddings, room.semantic):
        labels, centres = mean_shift(embeddings, 0.6)
        blocks.append((xyz, labels, cluster_classes(labels, semantic, len(centres))))
    ours, theirs, merger, volume = merge_both(blocks)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    everything = np.concatenate(room.xyz)
    room_ids = merger.assign(everything)
    np.testing.assert_array_equal(room_ids, room_ids_reference(volume, everything))
    # Instances spanning blocks were merged: fewer room instances than block clusters.
    assert merger.num_instances < sum(len(np.unique(labels)) for _, labels, _ in blocks)


def test_dict_reference_is_the_original_where_its_tables_suffice(rng):
    centre = rng.uniform(0.2, 0.8, 3)
    blocks = [random_block(rng, 1000, int(rng.integers(1, 20)), centre=centre, unlabelled=0.0) for _ in range(6)]
    ours, theirs, merger, volume = merge_both(blocks)
    grid = int(1 / 5e-3) + 1
    table_volume = -np.ones((grid, grid, grid), np.int32)
    table_seg = -np.ones((grid, grid, grid), np.int32)
    for (xyz, labels, classes), expected in zip(blocks, theirs):
        written = reference.block_merging_tables(table_volume, table_seg, xyz, labels, classes)
        np.testing.assert_array_equal(written, expected)
    assert merger.num_instances < 300


def test_block_with_150_clusters(rng):
    blocks = [random_block(rng, 9000, 150, extent=0.3), random_block(rng, 9000, 150, extent=0.3)]
    ours, theirs, merger, _ = merge_both(blocks)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(ours[0][ours[0] >= 0])) > 100
    # The original indexes its 100-slot table with the label and fails.
    grid = int(1 / 5e-3) + 1
    with pytest.raises(IndexError):
        reference.block_merging_tables(-np.ones((grid,) * 3, np.int32), -np.ones((grid,) * 3, np.int32), *blocks[0])


def test_room_with_400_instances(rng):
    # 20 blocks of 20 well-separated clusters each, in disjoint parts of the room, then one more.
    blocks = []
    for b in range(20):
        centre = np.array([0.1 + 0.04 * b, 0.5, 0.5])
        seeds = centre + np.stack([np.zeros(20), np.linspace(-0.4, 0.4, 20), np.zeros(20)], axis=1)
        labels = np.repeat(np.arange(20), 40)
        xyz = (seeds[labels] + rng.uniform(-0.004, 0.004, (800, 3))).astype(np.float32)
        blocks.append((xyz, labels, rng.integers(0, 13, 20)))
    # Block 20 revisits block 19's objects (room instances 380..399), a little wider.
    xyz, labels, classes = blocks[19]
    blocks.append(((xyz + rng.uniform(-0.004, 0.004, xyz.shape)).astype(np.float32), labels, classes))
    ours, theirs, merger, volume = merge_both(blocks)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    assert merger.num_instances == 400
    revisited = ours[20][ours[20] >= 0]
    assert len(revisited) and revisited.min() >= 380  # the original's 300-column table loses them
    everything = np.concatenate([xyz for xyz, _, _ in blocks])
    room_ids = merger.assign(everything)
    np.testing.assert_array_equal(room_ids, room_ids_reference(volume, everything))
    assert len(np.unique(room_ids)) == 400


def test_hand_computed_two_blocks():
    """Block 1: cluster 0 (40 points, class 2) is new -> 0; cluster 1 (10 points, no overlap)
    joins instance 0 (argmax of nothing). Block 2: cluster 0 covers 8 cells of instance 0 with
    class 2 -> joins 0; cluster 1 (class 5) over the same cells -> new instance 1, but all its
    cells are taken, so nothing is written for it."""
    gap = 0.1  # an 11^3 grid
    cells_a = np.array([[i % 10, i // 10, 0] for i in range(40)]) * gap + gap / 2
    cells_b = np.array([[i, 9, 9] for i in range(10)]) * gap + gap / 2
    merger = RoomMerger(gap=gap, min_overlap=7, min_points=30)
    written = merger.merge(np.concatenate([cells_a, cells_b]), np.repeat([0, 1], [40, 10]), [2, 5])
    np.testing.assert_array_equal(written, [0] * 50)
    second = np.concatenate([cells_a[:8], cells_a[:8], cells_a[:8], cells_a[:8]])  # 32 points
    labels = np.repeat([0, 1], 16)
    written = merger.merge(second, labels, [2, 5])
    np.testing.assert_array_equal(written, [-1] * 32)
    assert merger.num_instances == 1  # instance 1 was never written: its id is free again
    np.testing.assert_array_equal(merger.assign(np.array([[0.05, 0.05, 0.05], [0.95, 0.95, 0.95], [0.95, 0.05, 0.95]])),
                                  [0, 0, -1])


def test_cells_merged_later_and_assignment_in_slices_give_the_same_room(rng):
    """merge_cells with the cells of `cells` is merge; assign in slices is assign in one call."""
    centre = rng.uniform(0.2, 0.8, 3)
    blocks = [random_block(rng, int(rng.integers(200, 3000)), int(rng.integers(1, 30)),
                           centre=centre + rng.normal(0, 0.03, 3)) for _ in range(6)]
    whole, later = RoomMerger(), RoomMerger()
    for xyz, labels, classes in blocks:
        np.testing.assert_array_equal(whole.merge(xyz, labels, classes),
                                      later.merge_cells(later.cells(xyz), labels, classes))
    everything = np.concatenate([xyz for xyz, _, _ in blocks])
    np.testing.assert_array_equal(whole.assign(everything), later.assign(everything, points_per_call=97))


def test_unlabelled_points_are_ignored(rng):
    xyz, labels, classes = random_block(rng, 500, 3, unlabelled=0.0)
    with_noise = labels.copy()
    with_noise[::7] = -1
    merger = RoomMerger()
    written = merger.merge(xyz, with_noise, classes)
    assert np.all(written[with_noise == -1] == -1)
    # -1 points neither claim cells nor count towards a cluster's size.
    alone = RoomMerger()
    keep = with_noise >= 0
    np.testing.assert_array_equal(alone.merge(xyz[keep], with_noise[keep], classes), written[keep])


def test_coordinates_at_the_grid_edges():
    merger = RoomMerger(gap=5e-3)
    edge = np.array([[0, 0, 0], [1, 1, 1], [-0.004, 0.5, 1.004]], np.float32)
    merger.merge(edge, np.array([0, 0, 0]), [0])
    cells = merger.cells(edge)
    np.testing.assert_array_equal(cells, [0, (200 * 201 + 200) * 201 + 200, (0 * 201 + 100) * 201 + 200])
    for bad in ([-0.006, 0.5, 0.5], [0.5, 1.006, 0.5]):
        with pytest.raises(ClusteringError, match="outside the room grid"):
            merger.merge(np.array([bad]), np.array([0]), [0])


@pytest.mark.parametrize(
    "xyz, labels, classes, message",
    [
        (np.zeros((3, 2)), [0, 0, 0], [1], r"shape \(points, 3\)"),
        (np.full((3, 3), np.nan), [0, 0, 0], [1], "NaN"),
        (np.zeros((3, 3)), [0, 0], [1], "do not match"),
        (np.zeros((3, 3)), [0, 1, 0], [1], r"block_labels must lie in \[-1, 1\)"),
        (np.zeros((3, 3)), [0, -2, 0], [1], r"block_labels must lie in \[-1, 1\)"),
        (np.zeros((3, 3)), [0.5, 0, 0], [1], "integers"),
        (np.zeros((3, 3)), [0, 0, 0], [[1]], "1-d"),
    ],
)
def test_bad_input_raises_and_leaves_the_room_unchanged(xyz, labels, classes, message):
    merger = RoomMerger()
    with pytest.raises(ClusteringError, match=message):
        merger.merge(xyz, labels, classes)
    assert merger.num_instances == 0


@pytest.mark.parametrize("kwargs", [{"gap": 0}, {"gap": -1.0}, {"gap": 1e-30}, {"min_overlap": -1},
                                    {"min_points": 2.5}])
def test_bad_parameters_raise(kwargs):
    with pytest.raises(ClusteringError):
        RoomMerger(**kwargs)


def test_cluster_classes_take_the_lowest_most_frequent_class():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, -1])
    semantic = np.array([3, 1, 3, 1, 4, 4, 0, 7])
    np.testing.assert_array_equal(cluster_classes(labels, semantic, 4), [1, 4, 0, -1])
