"""Which records can affect each other's decisions, and the shard each group is decided in.

A record's decision depends on earlier records only through a value they share: a content
hash (exact duplicate), a key of any of the dataset's tables (the database refuses the
second holder), and, with near duplicates on, a source message id (a near duplicate needs a
shared source). Records linked through such values, directly or in a chain, form a group;
groups never share one, so each can be decided on its own, in input order, and a run gives
what one stream of batches gives. Stored rows do not link groups: a run never changes them.

Values are 64-bit hashes: two values sharing one only join two groups, which costs
parallelism, never a decision.
"""

from __future__ import annotations

import polars as pl

from pipeline.config import BatchConfig
from pipeline.datasets.base import Dataset
from pipeline.dedup.plan import near_enabled

KEY_SCHEMA = pl.Schema({"record": pl.UInt32, "key": pl.UInt64})


def group_keys(records: pl.DataFrame, dataset: Dataset, config: BatchConfig) -> pl.DataFrame:
    """(record, key): the hashed values each of ``records`` (a batch's records to load) may
    share with another record. Each kind of value hashes with its own seed."""
    kinds = [records.select("record", value="content_hash")]
    kinds += [table.rows(records).select("record", value=table.key) for table in dataset.tables]
    if near_enabled(dataset, config):
        sources = records.select("record", value=pl.col("sourceMessageIds").list.unique())
        kinds.append(sources.explode("value"))
    return pl.concat(
        [
            frame.drop_nulls("value").select("record", key=pl.col("value").hash(seed))
            for seed, frame in enumerate(kinds)
        ]
    ).cast(KEY_SCHEMA)


def components(keys: pl.DataFrame) -> pl.Series:
    """The group of each record ``0..n-1`` of ``keys`` (``node``, ``key``): the smallest record
    it is linked to through shared keys, directly or in a chain.

    Each root hooks under the smallest root it is linked to, then every record points
    straight at its root, and the links are rewritten between roots; a chain of any length
    settles in a few rounds, each a few passes over the links."""
    highest = keys["node"].max()
    nodes = highest + 1 if isinstance(highest, int) else 0
    first = keys.group_by("key").agg(first=pl.col("node").min())
    links = (
        keys.join(first, on="key")
        .filter(pl.col("node") != pl.col("first"))
        .select(high="node", low="first")
        .unique()
    )
    root = pl.int_range(nodes, dtype=pl.UInt32, eager=True)
    while not links.is_empty():
        hooks = links.group_by("high").agg(pl.col("low").min())
        root = root.scatter(hooks["high"], hooks["low"])
        while not (pointed := root.gather(root)).equals(root):
            root = pointed
        ends = links.select(a=root.gather(links["high"]), b=root.gather(links["low"]))
        links = (
            ends.select(high=pl.max_horizontal("a", "b"), low=pl.min_horizontal("a", "b"))
            .filter(pl.col("high") != pl.col("low"))
            .unique()
        )
    return root


def shards_of(keys: pl.DataFrame, shards: int) -> pl.DataFrame:
    """(batch, record, shard) of every record of ``keys`` (``batch``, ``record``, ``key``): its
    group's shard (``balanced``)."""
    ordinal = pl.col("batch").cast(pl.UInt64) * 2**32 + pl.col("record")
    numbered = keys.with_columns(node=(ordinal.rank("dense") - 1).cast(pl.UInt32))
    group = components(numbered.select("node", "key"))
    records = numbered.select("batch", "record", "node").unique("node").sort("node")
    labelled = records.select("batch", "record", group=group.gather(records["node"]))
    return labelled.join(balanced(labelled["group"], shards), on="group").select("batch", "record", "shard")


def balanced(groups: pl.Series, shards: int) -> pl.DataFrame:
    """(group, shard) for the groups of ``groups`` (a group per record), each shard holding
    about as many records as the others.

    Hashing alone puts a big group (the legacy records citing one source: 6% of the benchmark
    file) in a shard that then holds its share of the rest too: the largest of 8 shards held
    1.45x the mean. The few big groups go first, each to the shard holding the fewest records;
    the small ones, in the order of a hash (so each shard's records spread over the input,
    batch by batch as a whole), then fill the shards up to one level."""
    sizes = groups.value_counts(name="size").with_columns(order=pl.col("group").hash())
    big_size = groups.len() / shards / 16
    big = sizes.filter(pl.col("size") > big_size).sort(["size", "order"], descending=[True, False])
    loads, big_shards = [0] * shards, []
    for size in big["size"]:
        shard = loads.index(min(loads))
        loads[shard] += size
        big_shards.append(shard)
    small = sizes.filter(pl.col("size") <= big_size).sort("order")
    rooms = pl.Series(_rooms(loads, int(small["size"].sum())), dtype=pl.Float64)
    # A small group goes to the shard whose room holds its middle, counted along the rooms.
    middle = small["size"].cum_sum() - small["size"] / 2
    small_shards = rooms.cum_sum().search_sorted(middle, "left").clip(upper_bound=shards - 1)
    return pl.concat(
        [
            big.select("group", shard=pl.Series(big_shards, dtype=pl.UInt16)),
            small.select("group", shard=small_shards.cast(pl.UInt16)),
        ]
    )


def _rooms(loads: list[int], records: int) -> list[float]:
    """How many of ``records`` each shard takes to bring the shards, loaded with ``loads``, to
    one level (none for a shard above it)."""
    ordered = sorted(loads)
    # The most shards, lowest first, that the level rises above; the others stay as they are.
    held = next(n for n in range(len(ordered), 0, -1) if (sum(ordered[:n]) + records) / n >= ordered[n - 1])
    level = (sum(ordered[:held]) + records) / held
    return [max(0.0, level - load) for load in loads]
