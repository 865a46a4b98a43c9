"""What stored rows say about a batch: ids and content hashes taken, near-duplicate candidates.

The key lookups are generic (a dataset's root table has its key and ``content_hash``); the
candidates are the rows the run knows to cite a batch's sources (``dedup.known``), read by key
with the dataset's own SQL (``NearDuplicates.candidates_sql``).
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipeline.datasets.base import Dataset, Table
from pipeline.dedup.known import KnownKeys
from pipeline.dedup.plan import LoadPlan
from pipeline.dedup.resolve import STORED_KEYS_SCHEMA
from pipeline.dedup.similarity import comparable, comparable_input
from pipeline.frames import arrow_frame
from pipeline.load.connection import Connection, quoted
from pipeline.load.results import result_of


def stored_tables_exist(conn: Connection, dataset: Dataset) -> bool:
    """Whether ``dataset``'s root table exists (a dry run on a fresh database finds none)."""
    with conn.transaction("looking for the stored rows' table"):
        found = result_of(conn, "SELECT to_regclass($1) IS NOT NULL", (quoted(dataset.tables[0].name),))
    return bool(found.column(0)[0].as_py())


def known_keys(conn: Connection, dataset: Dataset) -> KnownKeys:
    """The keys of every stored row of ``dataset``'s root table, and the sources they cite when
    the dataset looks for near duplicates, read in Arrow batches as they stream in."""
    root = dataset.tables[0]
    table, key = quoted(root.name), quoted(root.key)
    with conn.transaction("reading the stored keys"):
        sql = f"SELECT {key} AS id, content_hash::text AS content_hash FROM {table}"
        stored = (arrow_frame(batch) for batch in conn.stream(sql))
        near = dataset.near_duplicates
        cited = (arrow_frame(batch) for batch in conn.stream(near.cited_sql)) if near else ()
        return KnownKeys(stored, cited)


def stored_rows(
    conn: Connection, dataset: Dataset, plan: LoadPlan, known: KnownKeys
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """``stored_rows_now`` in a transaction of its own, so another thread can look them up
    while the previous batch loads."""
    with conn.transaction("looking up stored keys and near-duplicate candidates"):
        return stored_rows_now(conn, dataset, plan, known)


def stored_rows_now(
    conn: Connection, dataset: Dataset, plan: LoadPlan, known: KnownKeys, every_key: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """What stored rows say about a batch, in the transaction under way: per record, the id of
    a stored row with its content hash and whether its key is taken
    (``dedup.resolve.StoredMatches.keys``); and, when near duplicates are looked for, the
    stored rows ``known`` to cite one of the batch's sources (a ``comparable`` frame keyed by
    ``candidate``, their ids). Only the records ``known`` may hold are looked up by key, or
    ``every_key`` record."""
    # A batch's keys are a sliver of a table that grows all run: walk the indexes. The
    # planner, seeing thousands of keys, would read the whole table once per batch.
    for method in ("hashjoin", "mergejoin", "seqscan"):
        conn.execute(f"SET LOCAL enable_{method} = off")
    records = plan.records if every_key else known.maybe_stored(plan.records)
    keys = _stored_keys(conn, dataset.tables[0], records)
    # A near duplicate shares a source: a batch without sources has none.
    near = dataset.near_duplicates
    if near is None or plan.near is None or plan.near.sources.is_empty():
        return keys, None
    citing = known.citing(plan.near.sources["source"])
    if citing.is_empty():  # no stored row cites them (a first load)
        return keys, _no_candidates()
    candidates = conn.execute(near.candidates_sql, sorted_arrays(citing))
    return keys, comparable(arrow_frame(candidates), "candidate")


def nothing_stored(dataset: Dataset, plan: LoadPlan) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """What ``stored_rows`` says where the dataset's tables do not exist: nothing."""
    keys = pl.DataFrame(schema=STORED_KEYS_SCHEMA)
    if dataset.near_duplicates is None or plan.near is None or plan.near.sources.is_empty():
        return keys, None
    return keys, _no_candidates()


def _no_candidates() -> pl.DataFrame:
    """The near-duplicate candidates of a batch no stored row is known to cite."""
    return comparable(pl.DataFrame(schema=comparable_input("candidate")), "candidate")


def _stored_keys(conn: Connection, root: Table, records: pl.DataFrame) -> pl.DataFrame:
    """Per record: the id of a stored row with its content hash, and whether its key is stored."""
    if records.is_empty():
        return pl.DataFrame(schema=STORED_KEYS_SCHEMA)
    table, key = quoted(root.name), quoted(root.key)
    # Hashes cast to the column's type (char) so they are looked up in its unique index.
    found = arrow_frame(
        conn.execute(
            f"SELECT {key} AS id, content_hash::text AS content_hash FROM {table} "
            f"WHERE content_hash = ANY($1::bpchar[]) "
            f"UNION SELECT {key}, content_hash::text FROM {table} WHERE {key} = ANY($2)",
            sorted_arrays(records["content_hash"], records["id"]),
        )
    )
    return (
        records.select("record", "id", "content_hash")
        .join(found.select(hash_owner="id", content_hash="content_hash"), on="content_hash", how="left")
        .with_columns(key_stored=pl.col("id").is_in(found["id"].implode()))
        .filter(pl.col("hash_owner").is_not_null() | pl.col("key_stored"))
        .select("record", "hash_owner", "key_stored")
        .cast(STORED_KEYS_SCHEMA)
    )


def sorted_arrays(*columns: pl.Series) -> pa.RecordBatch:
    """Each column's distinct values in order, as array parameters ($1, $2…), bound as Arrow:
    with ``= ANY($1)`` the server walks an index once in key order instead of probing it value
    by value. A text holding NUL is left out: the server can store none, so none matches, and
    as a parameter it would fail the whole lookup."""
    distinct = [c.drop_nulls().unique().sort() for c in columns]
    arrays = [pl.Series([c.filter(~c.str.contains("\x00", literal=True))]).to_arrow() for c in distinct]
    return pa.RecordBatch.from_arrays(arrays, names=[f"p{n}" for n in range(1, len(arrays) + 1)])
