"""COPY that isolates refused rows: a refusal costs only its record.

The server names the COPY line that failed; the rows before it are copied again under a
savepoint, the failed row becomes a ``database`` reject and the copy resumes after it.
A refused child row (emotional context, relationship dynamics) removes its root row too,
so a record is loaded whole or not at all.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.datasets.base import Dataset, Table
from pipeline.dedup.plan import LoadPlan
from pipeline.errors import DatabaseError
from pipeline.faults import checkpoint
from pipeline.frames import reject_frame
from pipeline.load.connection import Connection, RowRefusal, details, quoted

# SQLSTATE classes 22 (data exception) and 23 (integrity) are about one row's values.
ROW_LEVEL_CLASSES = ("22", "23")
CONDITION_NAMES = {
    "23505": "unique_violation",
    "23503": "foreign_key_violation",
    "23514": "check_violation",
    "23502": "not_null_violation",
    "22001": "string_data_right_truncation",
    "22003": "numeric_value_out_of_range",
    "22021": "character_not_in_repertoire",
    "22P02": "invalid_text_representation",
    "22P05": "untranslatable_character",
    "22007": "invalid_datetime_format",
    "22008": "datetime_field_overflow",
}
RETRY_CHUNK = 256
ROW_FAILURE_SCHEMA = {"record": pl.UInt32, "reason": pl.String, "message": pl.String}


def copy_tables(conn: Connection, dataset: Dataset, plan: LoadPlan, refused: pl.Series) -> pl.DataFrame:
    """Copy every table's rows but the refused records'; a record failing in any table
    is removed from all."""
    failures = [pl.DataFrame(schema=ROW_FAILURE_SCHEMA)]
    root = dataset.tables[0]
    for table in dataset.tables:
        dropped = pl.concat([refused, *(f["record"] for f in failures)])
        rows = plan.tables[table.name]
        if not dropped.is_empty():
            rows = rows.filter(pc.invert(pc.is_in(rows["record"], value_set=dropped.to_arrow())))
        table_failures = _copy_isolating(conn, table, rows)
        checkpoint("copy")
        if table is not root and not table_failures.is_empty():
            orphaned = plan.records.filter(pl.col("record").is_in(table_failures["record"].implode()))
            conn.execute(
                f"DELETE FROM {quoted(root.name)} WHERE {quoted(root.key)} = ANY($1)",
                (orphaned["id"].to_list(),),
            )
        failures.append(table_failures)
    return pl.concat(failures)


def _copy_isolating(conn: Connection, table: Table, arrow: pa.Table) -> pl.DataFrame:
    """COPY ``arrow`` (rows with their ``record``); rows the server refuses come back as
    failures, the rest stay copied.

    After a refusal at row i, rows before i are copied again (they were fine) and the
    copy resumes after i in small chunks that double on success, so a cluster of bad
    rows costs little and a lone one costs one extra round trip. When the server does
    not name the row (a foreign key is checked at the end of the COPY), the chunk is
    halved until the refused row is alone.
    """
    records = arrow["record"]
    arrow = arrow.drop_columns(["record"])
    failed: list[dict] = []
    start, chunk, total = 0, arrow.num_rows, arrow.num_rows
    while start < total:
        stop = min(start + chunk, total)
        refusal = _try_copy(conn, table, arrow, start, stop)
        if refusal is None:
            start, chunk = stop, chunk * 2
            continue
        bad, description = refusal
        if bad is None and stop - start > 1:
            chunk = (stop - start) // 2
            continue
        bad = start if bad is None else bad
        failed.append({"record": records[bad].as_py(), **description})
        if bad > start and _try_copy(conn, table, arrow, start, bad) is not None:
            raise DatabaseError(f"{table.name}: rows accepted once were refused on the second copy")
        start, chunk = bad + 1, RETRY_CHUNK
    return pl.DataFrame(failed, schema=ROW_FAILURE_SCHEMA)


def _try_copy(
    conn: Connection, table: Table, arrow: pa.Table, start: int, stop: int
) -> tuple[int | None, dict[str, str]] | None:
    """Copy rows [start, stop) under a savepoint; on a row-level refusal, undo and say
    which row, when the server names it, and why (``_describe``)."""
    conn.execute("SAVEPOINT pipeline_copy")
    try:
        conn.ingest(table.name, arrow.slice(start, stop - start))
    except RowRefusal as exc:
        conn.execute("ROLLBACK TO SAVEPOINT pipeline_copy")
        if not _is_row_level(exc):
            raise
        line = _copy_line(exc, table.name)
        # Not the exception: its traceback holds this frame, and so the batch's rows,
        # until the cycle collector finds them (1M records with child conflicts: 1,060 -> 762 MB).
        return (None if line is None else start + line - 1), _describe(exc)
    conn.execute("RELEASE SAVEPOINT pipeline_copy")
    return None


def _copy_line(exc: Exception, table: str) -> int | None:
    context = details(exc).get("PG_DIAG_CONTEXT", "")
    prefix = f"COPY {table}, line "
    if not context.startswith(prefix):
        return None
    digits = context[len(prefix) :].split(",")[0].split(":")[0]
    return int(digits) if digits.isdigit() else None


def _is_row_level(exc: Exception) -> bool:
    return (getattr(exc, "sqlstate", None) or "")[:2] in ROW_LEVEL_CLASSES


def _describe(exc: Exception) -> dict[str, str]:
    diagnostics = details(exc)
    sqlstate = getattr(exc, "sqlstate", None) or diagnostics.get("PG_DIAG_SQLSTATE", "")
    condition = CONDITION_NAMES.get(sqlstate, f"sqlstate_{sqlstate}")
    constraint = diagnostics.get("PG_DIAG_CONSTRAINT_NAME")
    text = diagnostics.get("PG_DIAG_MESSAGE_PRIMARY", str(exc))
    if detail := diagnostics.get("PG_DIAG_MESSAGE_DETAIL"):
        text = f"{text} ({detail[:300]})"
    return {
        "reason": f"{condition}:{constraint}" if constraint else condition,
        "message": f"the database refused the record: {text} (SQLSTATE {sqlstate})",
    }


def row_rejects(records: pl.DataFrame, failures: pl.DataFrame) -> pl.DataFrame:
    return reject_frame(
        records.lazy().join(failures.lazy(), on="record"),
        category="database",
        reason=pl.col("reason"),
        field=pl.lit(None, pl.String),
        message=pl.col("message"),
    )
