"""The ledger's tables: created, and upgraded from what earlier versions made, as a run starts."""

from __future__ import annotations

from pipeline.datasets.base import Dataset
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
