"""PostgreSQL over ADBC: the only module that talks to the database.

A batch is one transaction: its root rows, child rows, rejects and ledger row
commit together or not at all. Rows are sent with binary COPY (``adbc_ingest``).
Keys already stored are looked up first (one join against a temp table of the
batch's keys); any other refusal is isolated row by row without re-sending the
rows that are fine: the server names the COPY line that failed, the rows before
it are copied again under a savepoint, the failed row becomes a ``database``
reject and the copy resumes after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import polars as pl
import pyarrow as pa

from pipeline.database import redact
from pipeline.datasets import Dataset, Table
from pipeline.dedup import DUPLICATE_MESSAGE
from pipeline.errors import DatabaseError
from pipeline.rejects import REJECT_SCHEMA, empty_rejects, reject_frame

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
        PRIMARY KEY (run_id, batch_no))""",
)

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


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch did; ``committed`` is False when fail-fast rolled it back."""

    loaded: int
    rejects: pl.DataFrame
    committed: bool = True


class Loader:
    """One connection, used by one thread at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            # Transactions are explicit (BEGIN/COMMIT) so savepoints survive a failed COPY.
            self.connection = adbc.connect(url, autocommit=True)
        except adbc_driver_manager.Error as exc:
            raise DatabaseError(
                f"cannot connect to {redact(url)}: {_server_message(exc)}; "
                "check the URL, that the server runs and the credentials",
                sqlstate=getattr(exc, "sqlstate", None),
            ) from None

    def close(self) -> None:
        self.connection.close()

    def execute(self, sql: str, parameters: tuple = ()) -> pa.Table | None:
        with self.connection.cursor() as cursor:
            cursor.execute(sql, parameters or None)
            return cursor.fetch_arrow_table() if cursor.description else None

    def ensure_schema(self, dataset: Dataset) -> None:
        """Create missing tables; safe to run on every start."""
        with self._transaction("creating tables"):
            for statement in (*PIPELINE_DDL, *(s for t in dataset.tables for s in t.ddl)):
                self.execute(statement)

    def start_run(self, run_id: str, started_at: datetime, config: dict, inputs: list[str]) -> None:
        with self._transaction("recording the run"):
            self.execute(
                "INSERT INTO pipeline_runs (run_id, started_at, status, config, inputs) "
                "VALUES ($1, $2, 'running', $3::jsonb, $4::jsonb)",
                (run_id, started_at, json.dumps(config), json.dumps(inputs)),
            )

    def finish_run(self, run_id: str, status: str, result: dict) -> None:
        with self._transaction("recording the run's result"):
            self.execute(
                "UPDATE pipeline_runs SET finished_at = $2, status = $3, result = $4::jsonb "
                "WHERE run_id = $1",
                (run_id, datetime.now(UTC), status, json.dumps(result)),
            )

    def load_batch(
        self,
        dataset: Dataset,
        run_id: str,
        batch_no: int,
        records: pl.DataFrame,
        rejects: pl.DataFrame,
        mode: str,
        ledger: dict,
        fail_fast: bool = False,
    ) -> BatchOutcome:
        """Load ``records`` and write ``rejects`` in one transaction; return what loaded.

        With ``fail_fast``, a batch in which the database refused a record is rolled back.
        """
        try:
            with self._transaction(f"loading batch {batch_no}"):
                stored, records = self._split_stored(dataset, records, mode)
                failures = self._copy_tables(dataset, records)
                all_rejects = pl.concat([rejects, stored, _row_rejects(records, failures)])
                if fail_fast and all_rejects.filter(pl.col("category") == "database").height:
                    raise _RolledBack(all_rejects)
                loaded = records.height - failures.select("record").n_unique()
                self._ingest("pipeline_rejects", _rejects_arrow(run_id, all_rejects))
                self.execute(
                    "INSERT INTO pipeline_batches (run_id, batch_no, source_file, first_line,"
                    " last_line, rows_in, loaded, rejected, seconds)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
                    ),
                )
        except _RolledBack as rolled_back:
            return BatchOutcome(loaded=0, rejects=rolled_back.rejects, committed=False)
        return BatchOutcome(loaded=loaded, rejects=all_rejects)

    def _split_stored(
        self, dataset: Dataset, records: pl.DataFrame, mode: str
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Records the root table's unique keys would refuse, as rejects; and the rest.

        A key or content hash is taken when it is stored already or when an earlier
        record of the batch uses it. Finding these in one join keeps COPY failures rare:
        a refused COPY costs a round trip of the rows sent with it.
        """
        root = dataset.tables[0]
        if records.is_empty():
            return empty_rejects(), records
        keys = records.select(pl.col("record").cast(pl.Int64), "id", "content_hash")
        self._ingest("pipeline_batch_keys", keys.to_arrow(), mode="replace", temporary=True)
        # Without statistics the planner guesses the temp table's size and joins twice as slowly.
        self.execute("ANALYZE pipeline_batch_keys")
        found = self.execute(
            f"SELECT k.record, h.{root.key} AS hash_owner, i.{root.key} IS NOT NULL AS key_stored "
            f"FROM pipeline_batch_keys k "
            f"LEFT JOIN {root.name} h ON h.content_hash = k.content_hash "
            f"LEFT JOIN {root.name} i ON i.{root.key} = k.id "
            f"WHERE h.{root.key} IS NOT NULL OR i.{root.key} IS NOT NULL"
        )
        checked = records.join(
            pl.from_arrow(found).with_columns(pl.col("record").cast(pl.UInt32)), on="record", how="left"
        ).with_columns(pl.col("key_stored").fill_null(False))
        duplicate = pl.col("hash_owner").is_not_null() & (mode == "dedup")
        # Later records of the batch conflict only with earlier ones that are not refused already.
        repeated = lambda key: (  # noqa: E731
            pl.col(key).is_not_null() & ~pl.col("stored") & ~pl.col(key).is_first_distinct().over("stored")
        )
        checked = checked.with_columns(stored=duplicate | pl.col("key_stored")).with_columns(
            key_taken=pl.col("key_stored") | repeated("id"),
            hash_taken=pl.col("hash_owner").is_not_null() | repeated("content_hash"),
        )
        duplicates = reject_frame(
            checked.lazy().filter(duplicate),
            category="deduplication",
            reason=pl.lit("exact_duplicate"),
            field=pl.lit("content_hash"),
            message=pl.format(DUPLICATE_MESSAGE, "hash_owner"),
            duplicate_of=pl.col("hash_owner"),
        )
        key_conflict = pl.col("key_taken")
        conflicts = reject_frame(
            checked.lazy().filter(~duplicate & (pl.col("key_taken") | pl.col("hash_taken"))),
            category="database",
            reason=pl.when(key_conflict)
            .then(pl.lit(f"unique_violation:{root.name}_pkey"))
            .otherwise(pl.lit(f"unique_violation:{dataset.hash_constraint}")),
            field=pl.when(key_conflict).then(pl.lit(root.key)).otherwise(pl.lit("content_hash")),
            message=pl.when(key_conflict)
            .then(
                pl.format(
                    "{} {} is already taken by another record; give this record another id (SQLSTATE 23505)",
                    pl.lit(root.key),
                    "id",
                )
            )
            .otherwise(pl.lit("another record already has this content hash (SQLSTATE 23505)")),
        )
        refused = pl.concat([duplicates, conflicts])
        kept = records.join(
            checked.filter(duplicate | pl.col("key_taken") | pl.col("hash_taken")).select("record"),
            on="record",
            how="anti",
        )
        return refused, kept

    def _copy_tables(self, dataset: Dataset, records: pl.DataFrame) -> pl.DataFrame:
        """Copy every table's rows; a record failing in any table is removed from all."""
        failures = [pl.DataFrame(schema=ROW_FAILURE_SCHEMA)]
        root = dataset.tables[0]
        for table in dataset.tables:
            failed = pl.concat(failures)["record"]
            rows = table.rows(records).filter(~pl.col("record").is_in(failed.implode()))
            table_failures = self._copy_isolating(table, rows)
            if table is not root and not table_failures.is_empty():
                orphaned = records.filter(pl.col("record").is_in(table_failures["record"].implode()))
                self.execute(
                    f"DELETE FROM {root.name} WHERE {root.key} = ANY($1)",
                    (orphaned["id"].to_list(),),
                )
            failures.append(table_failures)
        return pl.concat(failures)

    def _copy_isolating(self, table: Table, rows: pl.DataFrame) -> pl.DataFrame:
        """COPY ``rows``; rows the server refuses come back as failures, the rest stay copied.

        After a refusal at row i, rows before i are copied again (they were fine) and the
        copy resumes after i in small chunks that double on success, so a cluster of bad
        rows costs little and a lone one costs one extra round trip.
        """
        arrow = _table_arrow(table, rows)
        records = rows["record"]
        failed: list[dict] = []
        start, chunk, total = 0, arrow.num_rows, arrow.num_rows
        while start < total:
            stop = min(start + chunk, total)
            refusal = self._try_copy(table, arrow, start, stop)
            if refusal is None:
                start, chunk = stop, chunk * 2
                continue
            bad, exc = refusal
            failed.append({"record": records[bad], **_describe(exc)})
            if bad > start and self._try_copy(table, arrow, start, bad) is not None:
                raise DatabaseError(f"{table.name}: rows accepted once were refused on the second copy")
            start, chunk = bad + 1, RETRY_CHUNK
        return pl.DataFrame(failed, schema=ROW_FAILURE_SCHEMA)

    def _try_copy(self, table: Table, arrow: pa.Table, start: int, stop: int) -> tuple[int, Exception] | None:
        """Copy rows [start, stop) under a savepoint; on a row-level refusal, undo and say which row."""
        self.execute("SAVEPOINT pipeline_copy")
        try:
            self._ingest(table.name, arrow.slice(start, stop - start))
        except adbc_driver_manager.DatabaseError as exc:
            self.execute("ROLLBACK TO SAVEPOINT pipeline_copy")
            line = _copy_line(exc, table.name)
            if line is None or not _is_row_level(exc):
                raise
            return start + line - 1, exc
        self.execute("RELEASE SAVEPOINT pipeline_copy")
        return None

    def _ingest(self, name: str, data: pa.Table, mode: str = "append", temporary: bool = False) -> None:
        with self.connection.cursor() as cursor:
            cursor.adbc_ingest(name, data, mode=mode, temporary=temporary)

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[None]:
        """BEGIN … COMMIT; on any error roll back, and translate driver errors at the edge."""
        try:
            self.execute("BEGIN")
            yield
            self.execute("COMMIT")
        except adbc_driver_manager.Error as exc:
            self._rollback()
            raise DatabaseError(
                f"database error while {doing} on {redact(self.url)}: {_server_message(exc)}",
                sqlstate=getattr(exc, "sqlstate", None),
            ) from exc
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        # When the connection is gone, the error being raised already says so.
        with suppress(adbc_driver_manager.Error):
            self.execute("ROLLBACK")


class _RolledBack(Exception):
    """Fail-fast: the database refused a record, so the batch is not committed."""

    def __init__(self, rejects: pl.DataFrame) -> None:
        super().__init__("batch rolled back")
        self.rejects = rejects


def _details(exc: Exception) -> dict[str, str]:
    return {
        key.decode(): value.decode(errors="replace")
        for key, value in (getattr(exc, "details", None) or [])
        if isinstance(key, bytes) and isinstance(value, bytes)
    }


def _copy_line(exc: Exception, table: str) -> int | None:
    context = _details(exc).get("PG_DIAG_CONTEXT", "")
    prefix = f"COPY {table}, line "
    if not context.startswith(prefix):
        return None
    digits = context[len(prefix) :].split(",")[0].split(":")[0]
    return int(digits) if digits.isdigit() else None


def _is_row_level(exc: Exception) -> bool:
    return (getattr(exc, "sqlstate", None) or "")[:2] in ROW_LEVEL_CLASSES


def _describe(exc: Exception) -> dict[str, str]:
    details = _details(exc)
    sqlstate = getattr(exc, "sqlstate", None) or details.get("PG_DIAG_SQLSTATE", "")
    condition = CONDITION_NAMES.get(sqlstate, f"sqlstate_{sqlstate}")
    constraint = details.get("PG_DIAG_CONSTRAINT_NAME")
    text = details.get("PG_DIAG_MESSAGE_PRIMARY", str(exc))
    if detail := details.get("PG_DIAG_MESSAGE_DETAIL"):
        text = f"{text} ({detail[:300]})"
    return {
        "reason": f"{condition}:{constraint}" if constraint else condition,
        "message": f"the database refused the record: {text} (SQLSTATE {sqlstate})",
    }


def _server_message(exc: Exception) -> str:
    details = _details(exc)
    message = details.get("PG_DIAG_MESSAGE_PRIMARY") or str(exc).strip().splitlines()[0]
    return redact(message)


def _row_rejects(records: pl.DataFrame, failures: pl.DataFrame) -> pl.DataFrame:
    return reject_frame(
        records.lazy().join(failures.lazy(), on="record"),
        category="database",
        reason=pl.col("reason"),
        field=pl.lit(None, pl.String),
        message=pl.col("message"),
    )


def _table_arrow(table: Table, rows: pl.DataFrame) -> pa.Table:
    """Arrow the server accepts: JSON columns as the JSON extension type, smallints as int16."""
    frame = rows.drop("record").with_columns(
        pl.col(c).cast(pl.Int16, strict=False) for c in table.int16_columns
    )
    arrow = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
    for name in table.json_columns:
        index = arrow.schema.get_field_index(name)
        column = arrow.column(index).cast(pa.string())
        storage = column.combine_chunks() if column.num_chunks else pa.array([], pa.string())
        arrow = arrow.set_column(index, name, pa.ExtensionArray.from_storage(pa.json_(pa.string()), storage))
    return arrow


def _rejects_arrow(run_id: str, rejects: pl.DataFrame) -> pa.Table:
    # PostgreSQL text cannot hold NUL; keep the rest of the record exactly.
    return (
        rejects.select(pl.lit(run_id).alias("run_id"), *REJECT_SCHEMA)
        .with_columns(pl.col("raw", "message").str.replace_all("\x00", "\\u0000", literal=True))
        .to_arrow(compat_level=pl.CompatLevel.oldest())
    )
