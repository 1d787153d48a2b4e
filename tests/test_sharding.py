"""jsnet_tf.sharding: --shard k/n, TF_CONFIG tasks, and the deal of rooms by size."""

import itertools
import json

import numpy as np
import pytest

from jsnet_tf import sharding


def test_k_of_n_is_parsed_and_anything_else_named():
    assert sharding.parse("1/4") == sharding.Shard(1, 4)
    assert sharding.parse(" 0 / 1 ").is_whole
    for text, problem in (("4/4", "0 .. n-1"), ("0/0", "0 .. n-1"), ("1", "expected k/n"), ("-1/2", "expected k/n")):
        with pytest.raises(sharding.ShardError, match=problem):
            sharding.parse(text)


def test_tf_config_tasks_take_their_rank_with_the_chief_first():
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    ranks = [sharding.from_tf_config(json.dumps({"cluster": cluster, "task": task}))
             for task in ({"type": "chief", "index": 0}, {"type": "worker", "index": 0}, {"type": "worker", "index": 1})]
    assert ranks == [sharding.Shard(i, 3, cluster=True) for i in range(3)]
    assert sharding.from_tf_config("") is None and sharding.from_tf_config(None) is None


@pytest.mark.parametrize("text, problem", [
    ("{", "not a tf.distribute cluster description"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}), "not a tf.distribute cluster description"),
    (json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker", "index": 0}}), "ps tasks"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}), "not in its cluster"),
])
def test_a_tf_config_that_shares_nothing_is_named(text, problem):
    with pytest.raises(sharding.ShardError, match=problem):
        sharding.from_tf_config(text)


def test_the_deal_matches_largest_first_to_the_least_loaded_by_hand():
    # 9 -> 0; 7 -> 1; 5 -> 1 (7 + 5 = 12); 4 -> 0 (13); 2 -> 1 (14); 1 -> 0 (14)
    assert sharding.deal([1, 5, 9, 2, 7, 4], 2) == [0, 1, 0, 1, 1, 0]
    assert sharding.deal([3, 3, 3], 3) == [0, 1, 2] and sharding.deal([3, 3], 1) == [0, 0]


def test_the_deal_covers_every_item_once_and_is_near_the_best_balance():
    rng = np.random.default_rng(0)
    for _ in range(20):
        sizes = rng.integers(1, 100, rng.integers(1, 9)).tolist()
        count = int(rng.integers(1, 4))
        owners = sharding.deal(sizes, count)
        assert len(owners) == len(sizes) and set(owners) <= set(range(count))
        loads = np.bincount(owners, sizes, minlength=count)
        best = min(np.bincount(deal, sizes, minlength=count).max() for deal in itertools.product(range(count), repeat=len(sizes)))
        assert loads.max() <= 4 / 3 * best  # Graham's bound for largest-first greedy
        assert owners == sharding.deal(sizes, count)
