"""Groups of records that can affect each other's decisions (``dedup.groups``): what links
records, and the connected components over the links, against a plain union-find."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import polars as pl
import pytest

from pipeline import BatchConfig
from pipeline.datasets import get_dataset
from pipeline.dedup.groups import balanced, components, group_keys, shards_of
from pipeline.normalize.stage import stage_batch
from tests.conftest import memory, raw_frame

CONTEXT = {
    "primaryMood": "neutral",
    "intensity": 5,
    "themes": ["money"],
    "emotionalMarkers": [],
    "contextualEvents": [],
    "temporalPatterns": {"timeOfDay": "evening"},
}


def union_find_groups(nodes: int, keys: list[tuple[int, int]]) -> list[int]:
    """The smallest node of each node's group, one link at a time."""
    parent = list(range(nodes))

    def root(node: int) -> int:
        while parent[node] != node:
            node = parent[node]
        return node

    holder: dict[int, int] = {}
    for node, key in keys:
        if key in holder:
            a, b = root(node), root(holder[key])
            parent[max(a, b)] = min(a, b)
        holder.setdefault(key, node)
    return [root(node) for node in range(nodes)]


def key_frame(keys: list[tuple[int, int]]) -> pl.DataFrame:
    return pl.DataFrame(keys, schema={"node": pl.UInt32, "key": pl.UInt64}, orient="row")


@pytest.mark.parametrize("seed", range(5))
def test_groups_are_those_of_a_union_find(seed):
    rng = random.Random(seed)
    nodes = 3_000
    shared = [(rng.randrange(nodes), rng.randrange(2_000)) for _ in range(2_500)]
    own = [(node, 10**6 + node) for node in range(nodes)]  # every record holds a key
    keys = shared + own
    rng.shuffle(keys)
    assert components(key_frame(keys)).to_list() == union_find_groups(nodes, keys)


def test_a_chain_in_any_order_is_one_group():
    """Records linked one to the next, numbered at random: one group, found in a few rounds."""
    nodes = 50_000
    order = list(range(nodes))
    random.Random(7).shuffle(order)
    keys = [(order[i], k) for i in range(nodes) for k in (i, i + 1)]
    assert components(key_frame(keys)).unique().to_list() == [0]


def staged_records(records: list[dict]) -> pl.DataFrame:
    raw = raw_frame([json.dumps(r) for r in records])
    started = datetime(2026, 1, 1, tzinfo=UTC)
    valid, rejects = stage_batch(raw, get_dataset("memories"), BatchConfig(), started)
    assert rejects.is_empty()
    return valid


def groups_of(records: list[dict], config: BatchConfig) -> list[int]:
    """The group of each record (by its position), through its keys."""
    keys = group_keys(staged_records(records), get_dataset("memories"), config)
    return components(keys.select(node="record", key="key")).to_list()


def test_records_sharing_a_hash_an_id_a_child_key_or_a_source_are_one_group():
    records = [
        memory(0),
        memory(1, summary=memory(0)["summary"], sourceMessageIds=memory(0)["sourceMessageIds"]),  # hash
        memory(2, id="mem-0"),  # id
        memory(3, emotionalContext={"id": "ec-shared", **CONTEXT}),
        memory(4, emotionalContext={"id": "ec-shared", **CONTEXT}),  # the database refuses one
        memory(5, sourceMessageIds=["m5-a", "shared"]),
        memory(6, sourceMessageIds=["shared"]),  # near duplicates need a shared source
        memory(7),
    ]
    assert groups_of(records, BatchConfig()) == [0, 0, 0, 3, 3, 5, 5, 7]
    # Without near duplicates, a shared source links nothing.
    assert groups_of(records, BatchConfig(similarity_threshold=1.0)) == [0, 0, 0, 3, 3, 5, 6, 7]


def test_a_group_across_batches_is_in_one_shard():
    """(batch, record) numbers records in input order; a group spanning batches has one shard."""
    keys = pl.DataFrame(
        {"batch": [1, 1, 2, 2, 3], "record": [0, 1, 0, 1, 0], "key": [10, 11, 12, 11, 10]},
        schema={"batch": pl.UInt32, "record": pl.UInt32, "key": pl.UInt64},
    )
    shards = shards_of(keys, 1_000)
    assert shards.select("batch", "record").rows() == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0)]
    shard = dict(zip(shards.select("batch", "record").rows(), shards["shard"], strict=True))
    assert shard[1, 0] == shard[3, 0] and shard[1, 1] == shard[2, 1]
    # The groups' shards spread: 1,000 groups of one record take many shards.
    many = pl.DataFrame(
        {"batch": [1] * 1_000, "record": range(1_000), "key": range(1_000)},
        schema={"batch": pl.UInt32, "record": pl.UInt32, "key": pl.UInt64},
    )
    assert shards_of(many, 4)["shard"].value_counts()["count"].min() > 200


@pytest.mark.parametrize(("hub", "singles", "shards"), [(600, 2_400, 4), (2_000, 1_000, 4), (0, 5_000, 8)])
def test_shards_hold_about_as_many_records_whatever_the_biggest_group(hub, singles, shards):
    """A hub (the legacy records sharing one source) takes a shard, and the small groups fill
    the others up to its level, or all shards to one level when it is below it."""
    groups = pl.Series("group", [0] * hub + list(range(1, singles + 1)), dtype=pl.UInt32)
    assigned = groups.to_frame().join(balanced(groups, shards), on="group", how="left")
    assert assigned["shard"].null_count() == 0
    loads = assigned["shard"].value_counts()["count"]
    level = max(hub, (hub + singles) / shards)
    assert loads.max() <= 1.02 * level
    if hub > (hub + singles) / shards:
        assert assigned.filter(pl.col("group") == 0)["shard"].n_unique() == 1
        hub_shard = assigned["shard"][0]
        assert assigned.filter(pl.col("shard") == hub_shard).height == hub
