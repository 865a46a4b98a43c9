"""The run ledger: the pipeline's own tables and every statement about them.

``pipeline_runs`` (a run's settings, status and result, and its inputs: each ``path``, ``size``
and ``sha256``, and ``loaded_by`` the run that loaded one it skipped), ``pipeline_batches`` (one
row per committed batch, per shard: the ledger a resume goes on from), ``pipeline_rejects`` and
``pipeline_merges`` (near duplicates merged into a kept row, folded into its
``deduplication_metadata`` when the run ends).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from pipeline.datasets.base import Dataset
from pipeline.frames import REJECT_SCHEMA, RejectCounts, similarity_bins
from pipeline.load.connection import Connection

PIPELINE_DDL = (
    """CREATE TABLE IF NOT EXISTS pipeline_runs (
        run_id text PRIMARY KEY, started_at timestamptz NOT NULL, finished_at timestamptz,
        status text NOT NULL, config jsonb NOT NULL, inputs jsonb NOT NULL, result jsonb)""",
    """CREATE TABLE IF NOT EXISTS pipeline_rejects (
        run_id text NOT NULL REFERENCES pipeline_runs(run_id),
        source_file text NOT NULL, source_line bigint NOT NULL,
        category text NOT NULL
            CHECK (category IN ('parse','validation','deduplication','database')),
        reason text NOT NULL, field text, message text NOT NULL, raw text NOT NULL,
        duplicate_of text, similarity real, resolved_by text,
        created_at timestamptz NOT NULL DEFAULT now())""",
    # Databases created before replay existed lack the column.
    "ALTER TABLE pipeline_rejects ADD COLUMN IF NOT EXISTS resolved_by text",
    "CREATE INDEX IF NOT EXISTS pipeline_rejects_run_idx ON pipeline_rejects (run_id, category, reason)",
    """CREATE TABLE IF NOT EXISTS pipeline_batches (
        run_id text NOT NULL REFERENCES pipeline_runs(run_id), batch_no integer NOT NULL,
        source_file text NOT NULL, first_line bigint NOT NULL, last_line bigint NOT NULL,
        rows_in integer NOT NULL, loaded integer NOT NULL, rejected integer NOT NULL,
        seconds double precision NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(),
        shard integer NOT NULL DEFAULT 0, PRIMARY KEY (run_id, batch_no, shard))""",
    # A batch of a run with shards commits once per shard; databases created before shards
    # existed key a batch by its number alone.
    "ALTER TABLE pipeline_batches ADD COLUMN IF NOT EXISTS shard integer NOT NULL DEFAULT 0",
    """DO $$ BEGIN
        IF NOT EXISTS (
            SELECT FROM pg_constraint c JOIN pg_attribute a
                ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
            WHERE c.conname = 'pipeline_batches_pkey' AND a.attname = 'shard') THEN
            ALTER TABLE pipeline_batches DROP CONSTRAINT pipeline_batches_pkey,
                ADD PRIMARY KEY (run_id, batch_no, shard);
        END IF;
    END $$""",
    # Near duplicates merged into a kept row, noted with their batch and folded into the
    # row's deduplication_metadata when the run ends: a row absorbing duplicates batch after
    # batch is rewritten once per run, not once per batch.
    """CREATE TABLE IF NOT EXISTS pipeline_merges (
        run_id text NOT NULL, batch_no integer NOT NULL, kept_id text NOT NULL,
        merged_ids text[] NOT NULL, merged_sources text[] NOT NULL,
        merged_at timestamptz NOT NULL DEFAULT now())""",
)


# The key of the advisory lock a run holds while it creates or upgrades the tables: a number
# no other lock of the database is likely to use ("pipe" in ASCII).
SCHEMA_LOCK = 0x70697065


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch did; ``committed`` is False when fail-fast rolled it back."""

    loaded: int
    rejects: pl.DataFrame
    committed: bool = True


def ensure_schema(conn: Connection, dataset: Dataset | None = None) -> None:
    """Create missing tables (the run ledger's, and ``dataset``'s); safe to run on every start,
    and by runs starting at the same moment: ``IF NOT EXISTS`` alone is not (two sessions both
    find a table missing, and the second to create it fails on the catalog's unique index), so
    one run at a time holds a lock on the schema until its changes commit."""
    tables = dataset.tables if dataset else ()
    with conn.transaction("creating tables"):
        conn.execute("SELECT pg_advisory_xact_lock($1)", (SCHEMA_LOCK,))
        for statement in (*PIPELINE_DDL, *(s for t in tables for s in t.ddl)):
            conn.execute(statement)


def start_run(conn: Connection, run_id: str, started_at: datetime, config: dict, inputs: list[dict]) -> None:
    with conn.transaction("recording the run"):
        conn.execute(
            "INSERT INTO pipeline_runs (run_id, started_at, status, config, inputs) "
            "VALUES ($1, $2, 'running', $3::jsonb, $4::jsonb) "
            "ON CONFLICT (run_id) DO UPDATE SET status = 'running', finished_at = NULL",
            (run_id, started_at, json.dumps(config), json.dumps(inputs)),
        )


def record_inputs(conn: Connection, run_id: str, inputs: list[dict]) -> None:
    with conn.transaction("recording the run's inputs"):
        conn.execute(
            "UPDATE pipeline_runs SET inputs = $2::jsonb WHERE run_id = $1", (run_id, json.dumps(inputs))
        )


def run_record(conn: Connection, run_id: str) -> dict | None:
    """A run's row (config and inputs decoded), or None when there is no such run."""
    with conn.transaction("reading the run"):
        found = conn.execute(
            "SELECT run_id, started_at, status, config::text AS config, inputs::text AS inputs "
            "FROM pipeline_runs WHERE run_id = $1",
            (run_id,),
        ).to_pylist()
    if not found:
        return None
    return {
        **found[0],
        "config": json.loads(found[0]["config"]),
        "inputs": json.loads(found[0]["inputs"]),
    }


def runs_reading(conn: Connection, sha256s: list[str]) -> list[dict]:
    """The runs that read (did not skip) an input of one of these SHA-256, the first to finish
    first: each
    ``run_id``, ``status``, ``config`` (decoded) and the input's ``sha256``, once per input."""
    with conn.transaction("reading which runs read these inputs"):
        found = conn.execute(
            "SELECT r.run_id, r.status, r.config::text AS config, i->>'sha256' AS sha256 "
            "FROM pipeline_runs r CROSS JOIN LATERAL jsonb_array_elements(r.inputs) AS i "
            "WHERE i->>'sha256' = ANY($1::text[]) AND i->>'loaded_by' IS NULL "
            "ORDER BY r.finished_at NULLS LAST, r.started_at, r.run_id",
            (sha256s,),
        ).to_pylist()
    return [{**run, "config": json.loads(run["config"])} for run in found]


def run_history(conn: Connection, run_id: str) -> tuple[list[dict], RejectCounts]:
    """A run's committed batches and reject counts, to resume its report."""
    with conn.transaction("reading the run's batches"):
        batches = conn.execute(
            "SELECT batch_no, sum(rows_in)::bigint AS rows_in, sum(loaded)::bigint AS loaded,"
            " max(seconds) AS seconds FROM pipeline_batches"
            " WHERE run_id = $1 GROUP BY batch_no ORDER BY batch_no",
            (run_id,),
        ).to_pylist()
        records = conn.execute(
            "SELECT category, count(DISTINCT (source_file, source_line)) AS n "
            "FROM pipeline_rejects WHERE run_id = $1 GROUP BY category",
            (run_id,),
        ).to_pylist()
        rows = conn.execute(
            "SELECT reason, count(*) AS n FROM pipeline_rejects WHERE run_id = $1 GROUP BY reason",
            (run_id,),
        ).to_pylist()
        similar = conn.execute(
            "SELECT similarity FROM pipeline_rejects WHERE run_id = $1 AND reason = 'similar_duplicate'",
            (run_id,),
        )
    counts = RejectCounts(
        records={r["category"]: r["n"] for r in records},
        rows={r["reason"]: r["n"] for r in rows},
        similarity_bins=similarity_bins(pl.from_arrow(similar)["similarity"]),
    )
    return batches, counts


def committed_shards(conn: Connection, run_id: str) -> dict[int, set[int]]:
    """Batch number → the shards that committed it, of a run."""
    with conn.transaction("reading the run's batches"):
        ledger = conn.execute(
            "SELECT batch_no, shard FROM pipeline_batches WHERE run_id = $1", (run_id,)
        ).to_pylist()
    shards: dict[int, set[int]] = {}
    for row in ledger:
        shards.setdefault(row["batch_no"], set()).add(row["shard"])
    return shards


def committed_outcome(
    conn: Connection, run_id: str, batch_no: int, shard: int, lines: pl.DataFrame
) -> BatchOutcome | None:
    """What a batch (a shard's part of it) did, if it committed (its COMMIT may have landed as
    the connection broke); ``lines``: (source_file, source_line) of its records."""
    with conn.transaction(f"checking batch {batch_no}"):
        ledger = conn.execute(
            "SELECT source_file, first_line, last_line, loaded FROM pipeline_batches "
            "WHERE run_id = $1 AND batch_no = $2 AND shard = $3",
            (run_id, batch_no, shard),
        ).to_pylist()
        if not ledger:
            return None
        row = ledger[0]
        rejects = conn.execute(
            f"SELECT {', '.join(REJECT_SCHEMA)} FROM pipeline_rejects "
            "WHERE run_id = $1 AND source_file = $2 AND source_line BETWEEN $3 AND $4",
            (run_id, row["source_file"], row["first_line"], row["last_line"]),
        )
    # Other shards' records of the batch share its lines' range.
    rejects = pl.from_arrow(rejects).cast(REJECT_SCHEMA).join(lines, on=list(lines.columns), how="semi")
    return BatchOutcome(loaded=row["loaded"], rejects=rejects)


def fold_merges(conn: Connection, dataset: Dataset) -> None:
    """Note on each kept row what was merged into it (``deduplication_metadata``), from
    every committed ``pipeline_merges`` row, also those a killed run left: nothing of a
    duplicate is lost. Notes whose row is gone (refused after the decision) stay; folding in
    several steps gives what one fold would (the dataset's ``fold_sql``)."""
    with conn.transaction("noting merged near duplicates"):
        # The kept rows are a sliver of the table: find them by key (a scan of the whole
        # table, the planner's choice, took twice as long at 1M rows).
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute(dataset.near_duplicates.fold_sql)


def record_batch(conn: Connection, run_id: str, batch_no: int, ledger: dict, loaded: int) -> None:
    """The ledger row of a batch (of its shard, ``ledger["shard"]``), in its transaction: what a
    resume goes on from."""
    conn.execute(
        "INSERT INTO pipeline_batches (run_id, batch_no, source_file, first_line,"
        " last_line, rows_in, loaded, rejected, seconds, shard)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        (
            run_id,
            batch_no,
            ledger["source_file"],
            ledger["first_line"],
            ledger["last_line"],
            ledger["rows_in"],
            loaded,
            ledger["rows_in"] - loaded,
            ledger["seconds"],
            ledger["shard"],
        ),
    )


def finish_run(conn: Connection, run_id: str, status: str, result: dict) -> None:
    with conn.transaction("recording the run's result"):
        conn.execute(
            "UPDATE pipeline_runs SET finished_at = $2, status = $3, result = $4::jsonb WHERE run_id = $1",
            (run_id, datetime.now(UTC), status, json.dumps(result)),
        )


def ingest_rejects(conn: Connection, run_id: str, rejects: pl.DataFrame) -> None:
    if not rejects.is_empty():
        conn.ingest("pipeline_rejects", _rejects_arrow(run_id, rejects))


def _rejects_arrow(run_id: str, rejects: pl.DataFrame) -> pa.Table:
    # PostgreSQL text cannot hold NUL; keep the rest of the record exactly.
    return (
        rejects.select(pl.lit(run_id).alias("run_id"), *REJECT_SCHEMA)
        .with_columns(pl.col("raw", "message").str.replace_all("\x00", "\\u0000", literal=True))
        .to_arrow(compat_level=pl.CompatLevel.oldest())
    )


def merges_arrow(run_id: str, batch_no: int, merges: pl.DataFrame) -> pa.Table:
    return merges.select(
        run_id=pl.lit(run_id),
        batch_no=pl.lit(batch_no, pl.Int32),
        kept_id="duplicate_of",
        merged_ids="merged_ids",
        merged_sources="merged_sources",
    ).to_arrow(compat_level=pl.CompatLevel.oldest())


def damaged_inputs(conn: Connection, run_id: str) -> list[dict]:
    """The compressed inputs a run read only up to damage in their data, and the line it is at."""
    damaged = conn.execute(
        "SELECT source_file AS path, source_line AS line FROM pipeline_rejects "
        "WHERE run_id = $1 AND reason = 'corrupt_compressed_input' ORDER BY source_file",
        (run_id,),
    )
    return damaged.to_pylist() if damaged is not None else []


def forget_records(conn: Connection, run_id: str, shard: int) -> bool:
    """Remove a run's ledger rows of ``shard`` and the rejects of the records they hold; whether
    there were any."""
    with conn.transaction("reading the record that stopped the run again"):
        forgotten = conn.execute(
            "DELETE FROM pipeline_batches WHERE run_id = $1 AND shard = $2 RETURNING source_file, first_line",
            (run_id, shard),
        )
        if forgotten is None or not forgotten.num_rows:
            return False
        conn.execute(
            "DELETE FROM pipeline_rejects WHERE run_id = $1 AND (source_file, source_line) IN "
            "(SELECT * FROM unnest($2::text[], $3::bigint[]))",
            (run_id, forgotten.column(0).to_pylist(), forgotten.column(1).to_pylist()),
        )
    return True
