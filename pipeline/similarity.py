"""Near duplicates, decided exactly as the original did, without comparing every pair.

The original scored a new memory A against each stored memory B:
``0.5 * words + 0.3 * sources + 0.2 * participants`` (in that order, capped at 1.0) and
skipped A when the best score exceeded the threshold (0.7). Without a shared source
message id the score is at most 0.5 + 0.2 = 0.7, which never exceeds 0.7, so only
records sharing a source id are candidates: found by a self-join on exploded source ids
inside a batch, and by the GIN index on ``source_message_ids`` against stored rows.

Which candidate a record is finally refused for (records refused earlier are no
candidates) is decided with the other duplicates in ``dedup.resolve``.
"""

from __future__ import annotations

import polars as pl

PAIR_KEYS = ["record", "candidate"]
TERMS = ("words", "sources", "people")


def comparable(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """What a score needs of a memory: its normalized summary, words, sources and participant ids."""
    normalized = pl.col("summary").str.strip_chars().str.to_lowercase()
    return frame.select(
        pl.col(key),
        text=normalized,
        words=normalized.str.split(" "),
        sources="sourceMessageIds",
        people="people",
    )


def in_batch_pairs(records: pl.DataFrame) -> pl.DataFrame:
    """(record, candidate) for every earlier record of the batch sharing a source id."""
    sources = records.select("record", source="sourceMessageIds").explode("source").drop_nulls()
    return (
        sources.join(sources.rename({"record": "candidate"}), on="source")
        .filter(pl.col("candidate") < pl.col("record"))
        .select(PAIR_KEYS)
        .unique()
    )


def scores(pairs: pl.DataFrame, a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """``pairs`` (record, candidate) with the original's score of record A against candidate B.

    ``a`` and ``b`` are ``comparable`` frames keyed by ``record`` and ``candidate``.
    """
    joined = pairs.join(a, on="record").join(b, on="candidate", suffix="_b")
    for column in TERMS:
        joined = joined.join(_found(joined, column), on=PAIR_KEYS, how="left")
    share = {
        column: pl.col(f"{column}_found").fill_null(0)
        / pl.max_horizontal(pl.col(column).list.len(), pl.col(f"{column}_b").list.len())
        for column in TERMS
    }
    words = pl.when(pl.col("text") == pl.col("text_b")).then(1.0).otherwise(share["words"])
    # The original adds the terms in this order; at exactly 0.7 the rounding decides.
    score = (0.5 * words + 0.3 * share["sources"]) + 0.2 * share["people"]
    # Capped like Math.min(1.0, score), which keeps NaN (both lists of a term empty) as NaN.
    return joined.select(*PAIR_KEYS, score=pl.when(exceeds(score, 1.0)).then(1.0).otherwise(score))


def exceeds(score: pl.Expr, threshold: float) -> pl.Expr:
    """``score > threshold`` as JavaScript compares: NaN exceeds nothing (Polars orders NaN last)."""
    return ~score.is_nan() & (score > threshold)


def _found(joined: pl.DataFrame, column: str) -> pl.DataFrame:
    """How many of A's items (repeats counted) occur among B's, per pair."""
    # An empty list explodes to one null item, which is no item.
    items_a = joined.select(*PAIR_KEYS, item=column).explode("item").drop_nulls("item")
    items_b = joined.select(*PAIR_KEYS, item=f"{column}_b").explode("item").drop_nulls("item").unique()
    return (
        items_a.join(items_b, on=[*PAIR_KEYS, "item"], how="semi")
        .group_by(PAIR_KEYS)
        .agg(pl.len().alias(f"{column}_found"))
    )
