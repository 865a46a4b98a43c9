"""``pipeline_rejects``: every rejected record of a run, as the stages reject it."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pyarrow as pa

from pipeline.frames import REJECT_SCHEMA
from pipeline.load.connection import Connection
from pipeline.load.results import result_of
from pipeline.sqltext import literal


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


def damaged_inputs(conn: Connection, run_id: str) -> list[dict]:
    """The compressed inputs a run read only up to damage in their data, and the line it is at."""
    damaged = conn.execute(
        "SELECT source_file AS path, source_line AS line FROM pipeline_rejects "
        "WHERE run_id = $1 AND reason = 'corrupt_compressed_input' ORDER BY source_file",
        (run_id,),
    )
    return damaged.to_pylist() if damaged is not None else []


# Every column of a reject row but its raw text, the bulk of it.
_WITHOUT_RAW = (
    "category",
    "reason",
    "field",
    "source_file",
    "source_line",
    "message",
    "duplicate_of",
    "similarity",
    "resolved_by",
)


def rejects_without_raw(conn: Connection, run_id: str) -> pa.Table:
    """A run's reject rows without their raw text: ``category``, ``reason``, ``field``,
    ``source_file``, ``source_line``, ``message``, ``duplicate_of``, ``similarity``, ``resolved_by``."""
    with conn.transaction("reading the run's rejects"):
        # Perhaps millions of rows: the run's id inline, not bound, so they come back by COPY
        # (see Connection.stream).
        return result_of(
            conn, f"SELECT {', '.join(_WITHOUT_RAW)} FROM pipeline_rejects WHERE run_id = {literal(run_id)}"
        )


def reject_samples(conn: Connection, run_id: str, records: pl.DataFrame) -> pa.Table:
    """The ``raw`` text and ``message`` of one reject row per ``category`` and ``reason`` among the
    run's rejected ``records`` (``category``, ``reason``, ``source_file``, ``source_line``)."""
    keys = records.select("category", "reason", "source_file", "source_line")
    with conn.transaction("reading sample rejects"):
        return result_of(
            conn,
            "SELECT DISTINCT ON (category, reason) category, reason, raw, message FROM pipeline_rejects "
            "WHERE run_id = $1 AND (category, reason, source_file, source_line) IN ("
            " SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[])) "
            "ORDER BY category, reason",
            (run_id, *(keys[c].to_list() for c in keys.columns)),
        )


def unresolved_rejects(conn: Connection, run_id: str) -> Iterator[pa.RecordBatch]:
    """The run's rejected records no replay resolved, one row each in source order: ``raw``,
    ``source_file``, ``source_line``, ``run_id`` and the ``reason`` of one of its reject rows.
    Streamed, in the caller's transaction."""
    return conn.stream(
        "SELECT DISTINCT ON (source_file, source_line) raw, source_file, source_line, run_id, reason "
        f"FROM pipeline_rejects WHERE run_id = {literal(run_id)} AND resolved_by IS NULL "
        "ORDER BY source_file, source_line"
    )


def rejected_source_lines(conn: Connection, run_id: str) -> list[int]:
    """The ``source_line`` of each of a run's rejected records."""
    with conn.transaction("reading the run's rejected lines"):
        found = result_of(
            conn, "SELECT DISTINCT source_line FROM pipeline_rejects WHERE run_id = $1", (run_id,)
        )
    return found.column(0).to_pylist()


def resolve_rejects(conn: Connection, of_run: str, by_run: str, records: pl.DataFrame) -> int:
    """Mark the reject rows of ``of_run``'s ``records`` (``source_file``, ``source_line``)
    resolved by the run ``by_run``; rows already resolved stay as they are. Returns how many of
    ``of_run``'s records ``by_run`` resolved."""
    if records.is_empty():
        return 0
    with conn.transaction(f"resolving the rejects of {of_run}"):
        conn.execute(
            "UPDATE pipeline_rejects SET resolved_by = $1 WHERE run_id = $2 AND resolved_by IS NULL "
            "AND (source_file, source_line) IN (SELECT * FROM unnest($3::text[], $4::bigint[]))",
            (by_run, of_run, records["source_file"].to_list(), records["source_line"].to_list()),
        )
        done = result_of(
            conn,
            "SELECT count(DISTINCT (source_file, source_line)) AS n FROM pipeline_rejects "
            "WHERE run_id = $1 AND resolved_by = $2",
            (of_run, by_run),
        )
    return done.column(0)[0].as_py()
