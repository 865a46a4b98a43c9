"""Which records of a batch are duplicates or key conflicts, decided as the original decided
one record at a time, but over whole columns.

The original took each record in turn: an exact duplicate (same content hash) of a kept
memory was skipped; else an id already taken was refused by the database; else a near
duplicate of a kept memory was skipped; else it was kept. "Kept" includes earlier
records of the same batch, unless they were themselves skipped or refused, so a batch
is resolved by iterating the decision for all records at once until it stops changing
(each round settles one more link of the longest chain of records pointing at earlier
ones). Stored rows are always kept; the loader looks them up.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.frames import reject_frame

DUPLICATE_MESSAGE = (
    "same content hash as record {}, which is kept; nothing to fix unless the two should differ"
)
DECISION_SCHEMA = pl.Schema(
    {
        "record": pl.UInt32,
        "outcome": pl.String,
        "duplicate_of": pl.String,
        "similarity": pl.Float64,
    }
)
EDGE_SCHEMA = pl.Schema({"record": pl.UInt32, "earlier": pl.UInt32, "kind": pl.String, "score": pl.Float64})


STORED_KEYS_SCHEMA = pl.Schema({"record": pl.UInt32, "hash_owner": pl.String, "key_stored": pl.Boolean})
STORED_SIMILAR_SCHEMA = pl.Schema({"record": pl.UInt32, "candidate_id": pl.String, "score": pl.Float64})


@dataclass(frozen=True)
class StoredMatches:
    """What stored rows say about a batch's records: ``keys`` (record, ``hash_owner``: the id
    of a stored row with its content hash, ``key_stored``: its id is taken) and ``similar``
    (record, candidate_id, score above the threshold)."""

    keys: pl.DataFrame
    similar: pl.DataFrame

    def with_rows(self, records: pl.DataFrame, rows: pl.DataFrame) -> StoredMatches:
        """Also what ``rows`` (``id``, ``content_hash``), stored since, say about the keys of
        ``records``; a row found twice counts once."""
        by_hash = records.join(rows.select(hash_owner="id", content_hash="content_hash"), on="content_hash")
        by_id = records.join(rows.select("id"), on="id", how="semi")
        keys = pl.concat(
            [
                self.keys,
                by_hash.select("record", "hash_owner", key_stored=pl.lit(False)),
                by_id.select("record", hash_owner=pl.lit(None, pl.String), key_stored=pl.lit(True)),
            ]
        ).cast(STORED_KEYS_SCHEMA)
        merged = keys.group_by("record").agg(
            pl.col("hash_owner").drop_nulls().first(), pl.col("key_stored").any()
        )
        return StoredMatches(keys=merged, similar=self.similar)


def similar_to(near, candidates: pl.DataFrame | None, threshold: float) -> pl.DataFrame:
    """``near.similar_to(candidates)`` (``plan.NearDuplicateInput``); no pairs when near
    duplicates are off (``near`` is None) or there are no candidates."""
    if near is None or candidates is None or candidates.is_empty():
        return pl.DataFrame(schema=STORED_SIMILAR_SCHEMA)
    return near.similar_to(candidates, threshold).cast(STORED_SIMILAR_SCHEMA)


def key_edges(records: pl.DataFrame) -> pl.DataFrame:
    """Links from a record to earlier records of the batch with the same content hash
    (``exact``) or the same id (``key``): those it may be refused for."""

    def repeats(column: str, kind: str) -> pl.DataFrame:
        values = records.select("record", column).drop_nulls()
        return (
            values.join(values.rename({"record": "earlier"}), on=column)
            .filter(pl.col("earlier") < pl.col("record"))
            .select("record", "earlier", kind=pl.lit(kind), score=pl.lit(None, pl.Float64))
        )

    return pl.concat([repeats("content_hash", "exact"), repeats("id", "key")]).cast(EDGE_SCHEMA)


def similar_edges(similar_pairs: pl.DataFrame) -> pl.DataFrame:
    """``similar_pairs`` (record, candidate, score above the threshold) as links."""
    return similar_pairs.select(
        "record", earlier="candidate", kind=pl.lit("similar"), score=pl.col("score")
    ).cast(EDGE_SCHEMA)


def resolve(
    records: pl.DataFrame,
    stored: pl.DataFrame,
    stored_similar: pl.DataFrame,
    edges: pl.DataFrame,
    mode: str,
) -> pl.DataFrame:
    """The refused records: ``record``, ``outcome`` (exact_duplicate, key_conflict,
    hash_conflict, similar_duplicate), ``duplicate_of``, ``similarity``.

    ``stored``: per record, ``hash_owner`` (id of a stored row with its hash) and
    ``key_stored``; ``stored_similar``: record, candidate_id, score above the threshold.
    """
    refused = pl.DataFrame(schema={"record": pl.UInt32})
    while True:
        live = edges.join(refused, left_on="earlier", right_on="record", how="anti")
        decisions = _decide(records, stored, stored_similar, live, mode)
        now_refused = decisions.select("record").sort("record")
        if now_refused.equals(refused):
            return decisions
        refused = now_refused


def _decide(records, stored, stored_similar, live, mode) -> pl.DataFrame:
    ids = records.select(earlier="record", earlier_id="id")
    linked = live.join(ids, on="earlier")
    exact_of = (
        linked.filter(pl.col("kind") == "exact")
        .group_by("record")
        .agg(exact_of=pl.col("earlier_id").sort_by("earlier").first())
    )
    key_taken = linked.filter(pl.col("kind") == "key").select("record", key_taken=pl.lit(True)).unique()
    similar = (
        pl.concat(
            [
                stored_similar.select("record", similar_of="candidate_id", score="score"),
                linked.filter(pl.col("kind") == "similar").select(
                    "record", similar_of="earlier_id", score="score"
                ),
            ]
        )
        .sort(["record", "score", "similar_of"], descending=[False, True, False])
        .group_by("record", maintain_order=True)
        .first()
    )
    frame = (
        records.select("record")
        .join(stored, on="record", how="left")
        .join(exact_of, on="record", how="left")
        .join(key_taken, on="record", how="left")
        .join(similar, on="record", how="left")
    )
    hash_taken = pl.col("hash_owner").is_not_null() | pl.col("exact_of").is_not_null()
    exact = hash_taken & (mode == "dedup")
    key = pl.col("key_stored").fill_null(False) | pl.col("key_taken").fill_null(False)
    near = pl.col("similar_of").is_not_null() & (mode == "dedup")
    outcome = (
        pl.when(exact)
        .then(pl.lit("exact_duplicate"))
        .when(key)
        .then(pl.lit("key_conflict"))
        .when(hash_taken)
        .then(pl.lit("hash_conflict"))
        .when(near)
        .then(pl.lit("similar_duplicate"))
    )
    return (
        frame.select(
            "record",
            outcome=outcome,
            duplicate_of=pl.when(exact)
            .then(pl.coalesce("hash_owner", "exact_of"))
            .when(~key & ~hash_taken & near)
            .then(pl.col("similar_of")),
            similarity=pl.when(~exact & ~key & ~hash_taken & near).then(pl.col("score")),
        )
        .filter(pl.col("outcome").is_not_null())
        .cast(DECISION_SCHEMA)
    )


def decision_rejects(
    records: pl.DataFrame,
    decisions: pl.DataFrame,
    key: str,
    key_constraint: str,
    hash_constraint: str,
    threshold: float,
) -> pl.DataFrame:
    """Reject rows for the refused records, with the reason each outcome stands for."""
    outcome = pl.col("outcome")
    return reject_frame(
        decisions.lazy().join(records.lazy(), on="record"),
        category="deduplication",
        reason=pl.when(outcome == "key_conflict")
        .then(pl.lit(f"unique_violation:{key_constraint}"))
        .when(outcome == "hash_conflict")
        .then(pl.lit(f"unique_violation:{hash_constraint}"))
        .otherwise(outcome),
        field=pl.when(outcome == "key_conflict")
        .then(pl.lit(key))
        .when(outcome == "similar_duplicate")
        .then(pl.lit("summary"))
        .otherwise(pl.lit("content_hash")),
        message=pl.when(outcome == "exact_duplicate")
        .then(pl.format(DUPLICATE_MESSAGE, "duplicate_of"))
        .when(outcome == "similar_duplicate")
        .then(
            pl.format(
                "near duplicate of {} (score {} > {}); its source message ids are noted on {}",
                "duplicate_of",
                pl.col("similarity").round(3),
                pl.lit(threshold),
                "duplicate_of",
            )
        )
        .when(outcome == "key_conflict")
        .then(
            pl.format(
                "{} {} is already taken by another record; give this record another id (SQLSTATE 23505)",
                pl.lit(key),
                pl.col(key),
            )
        )
        .otherwise(pl.lit("another record already has this content hash (SQLSTATE 23505)")),
        duplicate_of=pl.col("duplicate_of"),
        similarity=pl.col("similarity"),
    ).with_columns(
        category=pl.when(pl.col("reason").str.starts_with("unique_violation"))
        .then(pl.lit("database"))
        .otherwise(pl.lit("deduplication"))
    )
