"""The ledger's tables, built in numbered steps: step N is the N-th change they went through.

``pipeline_schema`` holds a row per step a database has taken; a run starting takes the steps
it has not, in order, in one transaction. A database whose tables an earlier version made has
no ``pipeline_schema``: it takes every step. Each step is written to be harmless on tables
that already have what it adds (``IF NOT EXISTS``, a key replaced only when it lacks the
column), which is simpler than telling from the catalog which step such a database reached,
and right for any tables an earlier version left.
"""

from __future__ import annotations

from pipeline.datasets.base import Dataset
from pipeline.load.connection import Connection
from pipeline.load.results import result_of

STEPS: tuple[tuple[str, ...], ...] = (
    # 1: the ledger as first written.
    (
        """CREATE TABLE IF NOT EXISTS pipeline_runs (
            run_id text PRIMARY KEY, started_at timestamptz NOT NULL, finished_at timestamptz,
            status text NOT NULL, config jsonb NOT NULL, inputs jsonb NOT NULL, result jsonb)""",
        """CREATE TABLE IF NOT EXISTS pipeline_rejects (
            run_id text NOT NULL REFERENCES pipeline_runs(run_id),
            source_file text NOT NULL, source_line bigint NOT NULL,
            category text NOT NULL
                CHECK (category IN ('parse','validation','deduplication','database')),
            reason text NOT NULL, field text, message text NOT NULL, raw text NOT NULL,
            duplicate_of text, similarity real,
            created_at timestamptz NOT NULL DEFAULT now())""",
        "CREATE INDEX IF NOT EXISTS pipeline_rejects_run_idx ON pipeline_rejects (run_id, category, reason)",
        """CREATE TABLE IF NOT EXISTS pipeline_batches (
            run_id text NOT NULL REFERENCES pipeline_runs(run_id), batch_no integer NOT NULL,
            source_file text NOT NULL, first_line bigint NOT NULL, last_line bigint NOT NULL,
            rows_in integer NOT NULL, loaded integer NOT NULL, rejected integer NOT NULL,
            seconds double precision NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (run_id, batch_no))""",
    ),
    # 2: a replay marks the rejects it fixed.
    ("ALTER TABLE pipeline_rejects ADD COLUMN IF NOT EXISTS resolved_by text",),
    # 3: near duplicates merged into a kept row, noted with their batch and folded into the
    # row's deduplication_metadata when the run ends: a row absorbing duplicates batch after
    # batch is rewritten once per run, not once per batch.
    (
        """CREATE TABLE IF NOT EXISTS pipeline_merges (
            run_id text NOT NULL, batch_no integer NOT NULL, kept_id text NOT NULL,
            merged_ids text[] NOT NULL, merged_sources text[] NOT NULL,
            merged_at timestamptz NOT NULL DEFAULT now())""",
    ),
    # 4: a batch of a run with shards commits once per shard.
    (
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
    ),
)
LATEST = len(STEPS)

# The key of the advisory lock a run holds while it creates or upgrades the tables: a number
# no other lock of the database is likely to use ("pipe" in ASCII).
SCHEMA_LOCK = 0x70697065


def ensure_schema(conn: Connection, dataset: Dataset | None = None) -> None:
    """Take the ledger's missing steps and create ``dataset``'s missing tables; safe to run on
    every start, and by runs starting at the same moment: ``IF NOT EXISTS`` alone is not (two
    sessions both find a table missing, and the second to create it fails on the catalog's
    unique index), so one run at a time holds a lock on the schema until its changes commit."""
    with conn.transaction("creating tables"):
        conn.execute("SELECT pg_advisory_xact_lock($1)", (SCHEMA_LOCK,))
        upgrade_ledger(conn)
        for table in dataset.tables if dataset else ():
            for statement in table.ddl:
                conn.execute(statement)


def upgrade_ledger(conn: Connection, through: int = LATEST) -> None:
    """Take the steps after the database's last one, up to step ``through``, in the caller's
    transaction (which holds ``SCHEMA_LOCK`` when others may upgrade at the same time)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS pipeline_schema ("
        " step integer PRIMARY KEY, taken_at timestamptz NOT NULL DEFAULT now())"
    )
    reached = _last_step(conn)
    for step in range(reached + 1, through + 1):
        for statement in STEPS[step - 1]:
            conn.execute(statement)
        conn.execute("INSERT INTO pipeline_schema (step) VALUES ($1)", (step,))


def _last_step(conn: Connection) -> int:
    """The last step the database's ledger took (0: none)."""
    return result_of(conn, "SELECT coalesce(max(step), 0) AS step FROM pipeline_schema").column(0)[0].as_py()


def has_ledger(conn: Connection) -> bool:
    """Whether the ledger's tables are there (a run has started on the database)."""
    with conn.transaction("looking for the pipeline's tables"):
        found = result_of(conn, "SELECT to_regclass('pipeline_runs') IS NOT NULL AS found")
    return bool(found.column(0)[0].as_py())
