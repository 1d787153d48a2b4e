"""mean_shift against sklearn.cluster.MeanShift(bandwidth, bin_seeding=True)."""

import warnings

import numpy as np
import pytest
from sklearn.cluster import MeanShift
from sklearn.metrics import adjusted_rand_score

from jsnet_tf.clustering import ClusteringError, library, mean_shift
from tests.clustering.rooms import embed


def sklearn_mean_shift(points, bandwidth, max_iter=300):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Binning data failed")  # every point in a bin of its own
        model = MeanShift(bandwidth=bandwidth, bin_seeding=True, max_iter=max_iter).fit(points)
    return model.labels_, model.cluster_centers_


def block_embeddings(rng, num_instances, num_points=4096, noise=0.01):
    """A trained-looking block: instances of random sizes, centres >= 1.5 apart, points within
    0.5 of their centre, a few noise points."""
    weights = rng.dirichlet(np.full(num_instances, 2.0))
    labels = rng.choice(num_instances, num_points, p=weights)
    return embed(rng, labels, noise=noise)


@pytest.mark.parametrize("num_instances", [5, 20, 40])
def test_same_clusters_as_sklearn_on_trained_embeddings(rng, num_instances):
    points = block_embeddings(rng, num_instances)
    labels, centres = mean_shift(points, 0.6)
    expected_labels, expected_centres = sklearn_mean_shift(points, 0.6)
    assert adjusted_rand_score(expected_labels, labels) >= 0.99
    # Same order of clusters (densest first): most points carry the very same label.
    assert np.mean(labels == expected_labels) >= 0.99
    if len(centres) == len(expected_centres):
        # sklearn averages float32 input in float32.
        np.testing.assert_allclose(centres, expected_centres, atol=1e-5)


def test_small_random_inputs_match_sklearn_exactly(rng):
    for _ in range(15):
        dim = int(rng.integers(1, 4))
        points = rng.normal(size=(int(rng.integers(2, 60)), dim)) * rng.uniform(0.2, 3.0)
        bandwidth = float(rng.uniform(0.2, 2.0))
        labels, centres = mean_shift(points, bandwidth)
        expected_labels, expected_centres = sklearn_mean_shift(points, bandwidth)
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_allclose(centres, expected_centres, rtol=0, atol=1e-12)


@pytest.mark.parametrize("max_iter", [0, 1, 2])
def test_iteration_cap_matches_sklearn(rng, max_iter):
    points = rng.normal(size=(300, 2)) * 2.0
    labels, centres = mean_shift(points, 0.5, max_iter=max_iter)
    expected_labels, expected_centres = sklearn_mean_shift(points, 0.5, max_iter=max_iter)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(centres, expected_centres, atol=1e-12)


def test_one_point_is_its_own_cluster():
    labels, centres = mean_shift(np.array([[0.3, -1.0, 2.0]]), 0.6)
    np.testing.assert_array_equal(labels, [0])
    np.testing.assert_allclose(centres, [[0.3, -1.0, 2.0]])


def test_identical_points_form_one_cluster():
    points = np.full((600, 5), 1.2)  # on a bin centre: sklearn finds it too
    labels, centres = mean_shift(points, 0.6)
    expected_labels, expected_centres = sklearn_mean_shift(points, 0.6)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(centres, expected_centres)


def test_no_point_near_any_bin_seed_falls_back_to_point_seeds():
    # Every point is 0.3 * sqrt(5) = 0.67 > 0.6 from its bin centre (the origin).
    points = np.full((50, 5), 0.3)
    with pytest.raises(ValueError, match="No point was within bandwidth"):
        sklearn_mean_shift(points, 0.6)
    labels, centres = mean_shift(points, 0.6)
    np.testing.assert_array_equal(labels, np.zeros(50))
    np.testing.assert_allclose(centres, [[0.3] * 5])


def test_bandwidth_wider_than_the_data_gives_one_cluster(rng):
    points = rng.uniform(-1, 1, (500, 5))
    labels, centres = mean_shift(points, 100.0)
    assert np.all(labels == 0)
    np.testing.assert_allclose(centres, points.mean(axis=0, keepdims=True), atol=1e-12)
    expected_labels, expected_centres = sklearn_mean_shift(points, 100.0)
    np.testing.assert_allclose(centres, expected_centres, atol=1e-12)


def test_float32_and_float64_inputs_agree(rng):
    points = block_embeddings(rng, 10, num_points=1000)
    labels32, centres32 = mean_shift(points, 0.6)
    labels64, centres64 = mean_shift(points.astype(np.float64), 0.6)
    np.testing.assert_array_equal(labels32, labels64)
    np.testing.assert_array_equal(centres32, centres64)
    assert labels32.dtype == np.int64 and centres32.dtype == np.float64


def test_repeated_points_match_sklearn(rng):
    # Many exact duplicates: ties everywhere in the tree's splits. (Not on a lattice, where
    # distances of exactly the bandwidth make inclusion a matter of rounding.)
    points = rng.normal(size=(30, 3))[rng.integers(0, 30, 2000)]
    labels, centres = mean_shift(points, 0.6)
    expected_labels, expected_centres = sklearn_mean_shift(points, 0.6)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(centres, expected_centres, atol=1e-12)


def test_scattered_points_with_hundreds_of_clusters_match_sklearn(rng):
    points = rng.uniform(0, 10, (800, 2))
    labels, centres = mean_shift(points, 0.15)
    expected_labels, expected_centres = sklearn_mean_shift(points, 0.15)
    assert len(centres) > 256  # past the guided labelling
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(centres, expected_centres, atol=1e-12)


def test_avx2_and_baseline_scans_give_the_same_bits(rng):
    native = library.load()
    if native.vector_isa() != "avx2":
        pytest.skip("this CPU has no AVX2: only the baseline scan exists")
    points = block_embeddings(rng, 25, num_points=3000)
    try:
        native.set_vector_isa("baseline")
        baseline = mean_shift(points, 0.6)
    finally:
        native.set_vector_isa("avx2")
    avx2 = mean_shift(points, 0.6)
    np.testing.assert_array_equal(baseline[0], avx2[0])
    np.testing.assert_array_equal(baseline[1], avx2[1])


def test_deterministic(rng):
    points = block_embeddings(rng, 15, num_points=2000)
    first, second = mean_shift(points, 0.6), mean_shift(points, 0.6)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_many_dimensions_take_the_generic_path(rng):
    points = rng.normal(size=(200, 11))
    labels, _ = mean_shift(points, 2.5)
    expected_labels, _ = sklearn_mean_shift(points, 2.5)
    np.testing.assert_array_equal(labels, expected_labels)


@pytest.mark.parametrize(
    "points, bandwidth, message",
    [
        (np.zeros((0, 5)), 0.6, "no points"),
        (np.array([[0.0, np.nan]]), 0.6, "NaN or infinite"),
        (np.array([[0.0, np.inf]]), 0.6, "NaN or infinite"),
        (np.zeros(5), 0.6, r"shape \(points, dims\)"),
        (np.zeros((2, 3, 5)), 0.6, r"shape \(points, dims\)"),
        (np.zeros((4, 0)), 0.6, r"shape \(points, dims\)"),
        (np.array([["a", "b"]]), 0.6, "real numbers"),
        (np.zeros((4, 2)), 0.0, "bandwidth must be a positive"),
        (np.zeros((4, 2)), float("nan"), "bandwidth must be a positive"),
        (np.zeros((4, 2)), -1.0, "bandwidth must be a positive"),
    ],
)
def test_bad_input_raises(points, bandwidth, message):
    with pytest.raises(ClusteringError, match=message):
        mean_shift(points, bandwidth)
