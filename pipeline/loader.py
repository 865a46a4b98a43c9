"""PostgreSQL over ADBC: the only module that talks to the database.

A batch is one transaction: its root rows, child rows, rejects and ledger row
commit together or not at all. Rows are sent with binary COPY (``adbc_ingest``).
What stored rows say about a batch (ids and hashes taken, near-duplicate candidates)
is looked up first, usually on a second connection while the previous batch loads;
any other refusal is isolated row by row without re-sending the rows that are fine:
the server names the COPY line that failed, the rows before it are copied again
under a savepoint, the failed row becomes a ``database`` reject and the copy
resumes after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from loguru import logger

from pipeline.config import BatchConfig
from pipeline.database import redact
from pipeline.datasets import Dataset, Table
from pipeline.decide import Decision, decide_against
from pipeline.dedup import STORED_KEYS_SCHEMA
from pipeline.errors import DatabaseError, TransientDatabaseError
from pipeline.faults import checkpoint
from pipeline.known import KnownKeys
from pipeline.plan import LoadPlan
from pipeline.rejects import REJECT_SCHEMA, reject_frame
from pipeline.report import RejectCounts, similarity_bins
from pipeline.similarity import comparable

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
    # Near duplicates merged into a kept row, noted with their batch and folded into the
    # row's deduplication_metadata when the run ends: a row absorbing duplicates batch after
    # batch is rewritten once per run, not once per batch.
    """CREATE TABLE IF NOT EXISTS pipeline_merges (
        run_id text NOT NULL, batch_no integer NOT NULL, kept_id text NOT NULL,
        merged_ids text[] NOT NULL, merged_sources text[] NOT NULL,
        merged_at timestamptz NOT NULL DEFAULT now())""",
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
# Worth a retry: serialization failure, deadlock, the server shutting down or starting up,
# too many connections (class 08, connection exceptions, is retried too).
TRANSIENT_SQLSTATES = {"40001", "40P01", "57P01", "57P02", "57P03", "53300"}
PERMANENT_HINTS = {
    "28P01": "check the user name and password in the URL",
    "28000": "the server refused this user; check pg_hba.conf and the user name",
    "3D000": "create the database first, or fix its name in the URL",
    "42501": "grant this user CREATE and INSERT on the schema, or use another user",
    "53100": "the server's disk is full; free space, then resume the run",
}
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
        self.connection = self._connect()

    def _connect(self):
        try:
            # Transactions are explicit (BEGIN/COMMIT) so savepoints survive a failed COPY.
            return adbc.connect(self.url, autocommit=True)
        except adbc_driver_manager.Error as exc:
            raise _translate(exc, f"cannot connect to {redact(self.url)}") from None

    def reconnect(self) -> None:
        """A new connection after the old one broke (the server restarted, the network dropped)."""
        with suppress(adbc_driver_manager.Error):
            self.connection.close()
        self.connection = self._connect()

    def close(self) -> None:
        self.connection.close()

    def execute(self, sql: str, parameters: tuple | pa.RecordBatch = ()) -> pa.Table | None:
        with self.connection.cursor() as cursor:
            cursor.execute(sql, parameters or None)
            return cursor.fetch_arrow_table() if cursor.description else None

    def ensure_schema(self, dataset: Dataset | None = None) -> None:
        """Create missing tables (the run ledger's, and ``dataset``'s); safe to run on every start."""
        tables = dataset.tables if dataset else ()
        with self._transaction("creating tables"):
            for statement in (*PIPELINE_DDL, *(s for t in tables for s in t.ddl)):
                self.execute(statement)

    def start_run(self, run_id: str, started_at: datetime, config: dict, inputs: list[dict]) -> None:
        with self._transaction("recording the run"):
            self.execute(
                "INSERT INTO pipeline_runs (run_id, started_at, status, config, inputs) "
                "VALUES ($1, $2, 'running', $3::jsonb, $4::jsonb) "
                "ON CONFLICT (run_id) DO UPDATE SET status = 'running', finished_at = NULL",
                (run_id, started_at, json.dumps(config), json.dumps(inputs)),
            )

    def record_inputs(self, run_id: str, inputs: list[dict]) -> None:
        with self._transaction("recording the run's inputs"):
            self.execute(
                "UPDATE pipeline_runs SET inputs = $2::jsonb WHERE run_id = $1", (run_id, json.dumps(inputs))
            )

    def run_record(self, run_id: str) -> dict | None:
        """A run's row (config and inputs decoded), or None when there is no such run."""
        with self._transaction("reading the run"):
            found = self.execute(
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

    def run_history(self, run_id: str) -> tuple[list[dict], RejectCounts]:
        """A run's committed batches and reject counts, to resume its report."""
        with self._transaction("reading the run's batches"):
            batches = self.execute(
                "SELECT batch_no, rows_in, loaded, seconds FROM pipeline_batches "
                "WHERE run_id = $1 ORDER BY batch_no",
                (run_id,),
            ).to_pylist()
            records = self.execute(
                "SELECT category, count(DISTINCT (source_file, source_line)) AS n "
                "FROM pipeline_rejects WHERE run_id = $1 GROUP BY category",
                (run_id,),
            ).to_pylist()
            rows = self.execute(
                "SELECT reason, count(*) AS n FROM pipeline_rejects WHERE run_id = $1 GROUP BY reason",
                (run_id,),
            ).to_pylist()
            similar = self.execute(
                "SELECT similarity FROM pipeline_rejects WHERE run_id = $1 AND reason = 'similar_duplicate'",
                (run_id,),
            )
        counts = RejectCounts(
            records={r["category"]: r["n"] for r in records},
            rows={r["reason"]: r["n"] for r in rows},
            similarity_bins=similarity_bins(pl.from_arrow(similar)["similarity"]),
        )
        return batches, counts

    def committed_outcome(self, run_id: str, batch_no: int) -> BatchOutcome | None:
        """What a batch did, if it committed (its COMMIT may have landed as the connection broke)."""
        with self._transaction(f"checking batch {batch_no}"):
            ledger = self.execute(
                "SELECT source_file, first_line, last_line, loaded FROM pipeline_batches "
                "WHERE run_id = $1 AND batch_no = $2",
                (run_id, batch_no),
            ).to_pylist()
            if not ledger:
                return None
            row = ledger[0]
            rejects = self.execute(
                f"SELECT {', '.join(REJECT_SCHEMA)} FROM pipeline_rejects "
                "WHERE run_id = $1 AND source_file = $2 AND source_line BETWEEN $3 AND $4",
                (run_id, row["source_file"], row["first_line"], row["last_line"]),
            )
        return BatchOutcome(loaded=row["loaded"], rejects=pl.from_arrow(rejects).cast(REJECT_SCHEMA))

    def fold_merges(self, root: Table) -> None:
        """Note on each kept row what was merged into it (``deduplication_metadata``), from
        every committed ``pipeline_merges`` row, also those a killed run left: nothing of a
        duplicate is lost. Notes whose row is gone (refused after the decision) stay.

        Folding in several steps gives what one fold would: merged ids are appended in
        order, and a source already noted on the row is not noted again."""
        table, key = quoted(root.name), quoted(root.key)
        noted_sources = "COALESCE(m.deduplication_metadata->'mergedSourceMessageIds', '[]')"
        with self._transaction("noting merged near duplicates"):
            # The kept rows are a sliver of the table: find them by key (a scan of the whole
            # table, the planner's choice, took twice as long at 1M rows).
            self.execute("SET LOCAL enable_seqscan = off")
            self.execute(
                f"""WITH ids AS (
                    SELECT kept_id, max(merged_at) AS merged_at,
                        jsonb_agg(id ORDER BY merged_at, batch_no, n) AS ids
                    FROM pipeline_merges, unnest(merged_ids) WITH ORDINALITY AS u(id, n)
                    GROUP BY kept_id),
                sources AS (
                    SELECT kept_id, array_agg(source ORDER BY merged_at, batch_no, n) AS sources
                    FROM (
                        SELECT DISTINCT ON (kept_id, source) kept_id, source, merged_at, batch_no, n
                        FROM pipeline_merges, unnest(merged_sources) WITH ORDINALITY AS u(source, n)
                        ORDER BY kept_id, source, merged_at, batch_no, n) first_seen
                    GROUP BY kept_id),
                noted AS (
                    UPDATE {table} m SET updated_at = now(),
                        deduplication_metadata = jsonb_build_object(
                            'originalHash', m.content_hash,
                            'mergedWith', COALESCE(m.deduplication_metadata->'mergedWith', '[]') || g.ids,
                            'mergeReason', 'similar_duplicate',
                            'mergedAt', g.merged_at,
                            'mergedSourceMessageIds', {noted_sources} || COALESCE((
                                SELECT jsonb_agg(source ORDER BY n)
                                FROM unnest(s.sources) WITH ORDINALITY AS u(source, n)
                                WHERE NOT {noted_sources} ? source), '[]'))
                    FROM ids g LEFT JOIN sources s USING (kept_id)
                    WHERE m.{key} = g.kept_id
                    RETURNING m.{key} AS kept_id)
                DELETE FROM pipeline_merges p USING noted WHERE p.kept_id = noted.kept_id"""
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
        plan: LoadPlan,
        rejects: pl.DataFrame,
        config: BatchConfig,
        ledger: dict,
        decision: Future[Decision] | None = None,
    ) -> BatchOutcome:
        """Load ``plan.records`` and write ``rejects`` in one transaction; return what loaded.

        ``decision``, when given, yields the batch's duplicates and key conflicts, decided
        beforehand (after ``stored_rows`` on another connection); without it, or when it
        failed, they are looked up and decided here. Without
        ``config.continue_on_error``, a batch in which the database refused a record is
        rolled back.
        """
        try:
            with self._transaction(f"loading batch {batch_no}"):
                # Parse and validation rejects need no decision: they go first, while the
                # decision may still be on its way from the lookup thread.
                self._ingest_rejects(run_id, rejects)
                decided = self._decision(dataset, plan, config, decision)
                refused, merges = decided.refused, decided.merges
                checkpoint("keys")
                records = plan.records.join(decided.kept, on="record", how="semi")
                failures = self._copy_tables(dataset, plan, refused["record"])
                if not merges.is_empty():
                    self._ingest("pipeline_merges", _merges_arrow(run_id, batch_no, merges))
                decided_rejects = pl.concat([refused.drop("record"), _row_rejects(records, failures)])
                all_rejects = pl.concat([rejects, decided_rejects])
                if (
                    not config.continue_on_error
                    and all_rejects.filter(pl.col("category") == "database").height
                ):
                    raise _RolledBack(all_rejects)
                loaded = records.height - failures.select("record").n_unique()
                self._ingest_rejects(run_id, decided_rejects)
                checkpoint("rejects")
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
                checkpoint("commit")
            checkpoint("committed")
        except _RolledBack as rolled_back:
            return BatchOutcome(loaded=0, rejects=rolled_back.rejects, committed=False)
        return BatchOutcome(loaded=loaded, rejects=all_rejects)

    def _stored_keys(self, root: Table, records: pl.DataFrame) -> pl.DataFrame:
        """Per record: the id of a stored row with its content hash, and whether its key is stored."""
        if records.is_empty():
            return pl.DataFrame(schema=STORED_KEYS_SCHEMA)
        table, key = quoted(root.name), quoted(root.key)
        # Hashes cast to the column's type (char) so they are looked up in its unique index.
        found = pl.from_arrow(
            self.execute(
                f"SELECT {key} AS id, content_hash::text AS content_hash FROM {table} "
                f"WHERE content_hash = ANY($1::bpchar[]) "
                f"UNION SELECT {key}, content_hash::text FROM {table} WHERE {key} = ANY($2)",
                _sorted_arrays(records["content_hash"], records["id"]),
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

    def stored_rows(
        self, root: Table, plan: LoadPlan, known: KnownKeys | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """``_stored_rows`` in a transaction of its own, so another thread can look them up
        while the previous batch loads."""
        with self._transaction("looking up stored keys and near-duplicate candidates"):
            return self._stored_rows(root, plan, known)

    def known_keys(self, root: Table) -> KnownKeys:
        """The keys of every stored row of ``root``, read in Arrow batches as they stream in."""
        table, key = quoted(root.name), quoted(root.key)
        with self._transaction("reading the stored keys"), self.connection.cursor() as cursor:
            cursor.execute(f"SELECT {key} AS id, content_hash::text AS content_hash FROM {table}")
            return KnownKeys(pl.from_arrow(batch) for batch in cursor.fetch_record_batch())

    def _decision(
        self, dataset: Dataset, plan: LoadPlan, config: BatchConfig, decision: Future[Decision] | None
    ) -> Decision:
        if decision is not None:
            try:
                return decision.result()
            except DatabaseError as exc:
                logger.debug("the early lookup failed ({}); looking up again in the batch", exc)
        return decide_against(dataset, plan, config, *self._stored_rows(dataset.tables[0], plan))

    def _stored_rows(
        self, root: Table, plan: LoadPlan, known: KnownKeys | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """What stored rows say about a batch: per record, the id of a stored row with its
        content hash and whether its key is taken (``dedup.StoredMatches.keys``); and, when
        near duplicates are looked for, the stored memories sharing a source with the batch
        (a ``comparable`` frame keyed by ``candidate``, their ids). With ``known``, only the
        records it may hold are looked up by key."""
        # A batch's keys are a sliver of a table that grows all run: walk the indexes. The
        # planner, seeing thousands of keys, would read the whole table once per batch.
        for method in ("hashjoin", "mergejoin", "seqscan"):
            self.execute(f"SET LOCAL enable_{method} = off")
        keys = self._stored_keys(root, plan.records if known is None else known.maybe_stored(plan.records))
        # A near duplicate shares a source: a batch without sources has none.
        if plan.near is None or plan.near.sources.is_empty():
            return keys, None
        memories = self.execute(
            'SELECT m.id AS candidate, m.summary, m.source_message_ids AS "sourceMessageIds", '
            "ARRAY(SELECT p->>'id' FROM jsonb_array_elements(m.participants) p) AS people "
            "FROM memories m WHERE m.id IN (SELECT memory_id FROM memory_sources WHERE source_id = ANY($1))",
            _sorted_arrays(plan.near.sources["source"]),
        )
        return keys, comparable(pl.from_arrow(memories), "candidate")

    def _copy_tables(self, dataset: Dataset, plan: LoadPlan, refused: pl.Series) -> pl.DataFrame:
        """Copy every table's rows but the refused records'; a record failing in any table
        is removed from all."""
        failures = [pl.DataFrame(schema=ROW_FAILURE_SCHEMA)]
        root = dataset.tables[0]
        for table in dataset.tables:
            dropped = pl.concat([refused, *(f["record"] for f in failures)])
            rows = plan.tables[table.name]
            if not dropped.is_empty():
                rows = rows.filter(pc.invert(pc.is_in(rows["record"], value_set=dropped.to_arrow())))
            table_failures = self._copy_isolating(table, rows)
            checkpoint("copy")
            if table is not root and not table_failures.is_empty():
                orphaned = plan.records.filter(pl.col("record").is_in(table_failures["record"].implode()))
                self.execute(
                    f"DELETE FROM {quoted(root.name)} WHERE {quoted(root.key)} = ANY($1)",
                    (orphaned["id"].to_list(),),
                )
            failures.append(table_failures)
        return pl.concat(failures)

    def _copy_isolating(self, table: Table, arrow: pa.Table) -> pl.DataFrame:
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
            refusal = self._try_copy(table, arrow, start, stop)
            if refusal is None:
                start, chunk = stop, chunk * 2
                continue
            bad, description = refusal
            if bad is None and stop - start > 1:
                chunk = (stop - start) // 2
                continue
            bad = start if bad is None else bad
            failed.append({"record": records[bad].as_py(), **description})
            if bad > start and self._try_copy(table, arrow, start, bad) is not None:
                raise DatabaseError(f"{table.name}: rows accepted once were refused on the second copy")
            start, chunk = bad + 1, RETRY_CHUNK
        return pl.DataFrame(failed, schema=ROW_FAILURE_SCHEMA)

    def _try_copy(
        self, table: Table, arrow: pa.Table, start: int, stop: int
    ) -> tuple[int | None, dict[str, str]] | None:
        """Copy rows [start, stop) under a savepoint; on a row-level refusal, undo and say
        which row, when the server names it, and why (``_describe``)."""
        self.execute("SAVEPOINT pipeline_copy")
        try:
            self._ingest(table.name, arrow.slice(start, stop - start))
        except adbc_driver_manager.DatabaseError as exc:
            self.execute("ROLLBACK TO SAVEPOINT pipeline_copy")
            if not _is_row_level(exc):
                raise
            line = _copy_line(exc, table.name)
            # Not the exception: its traceback holds this frame, and so the batch's rows,
            # until the cycle collector finds them (1M records with child conflicts: 1,060 -> 762 MB).
            return (None if line is None else start + line - 1), _describe(exc)
        self.execute("RELEASE SAVEPOINT pipeline_copy")
        return None

    def _ingest_rejects(self, run_id: str, rejects: pl.DataFrame) -> None:
        if not rejects.is_empty():
            self._ingest("pipeline_rejects", _rejects_arrow(run_id, rejects))

    def _ingest(self, name: str, data: pa.Table) -> None:
        with self.connection.cursor() as cursor:
            cursor.adbc_ingest(name, data, mode="append")

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[None]:
        """BEGIN … COMMIT; on any error roll back, and translate driver errors at the edge."""
        try:
            self.execute("BEGIN")
            yield
            self.execute("COMMIT")
        except adbc_driver_manager.Error as exc:
            self._rollback()
            raise _translate(exc, f"database error while {doing} on {redact(self.url)}") from exc
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


def quoted(identifier: str) -> str:
    """An SQL identifier, always quoted: names never travel into SQL unquoted."""
    return '"' + identifier.replace('"', '""') + '"'


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


def _translate(exc: adbc_driver_manager.Error, context: str) -> DatabaseError:
    """A driver error as ours: transient ones are retried, the rest say what to do."""
    sqlstate = getattr(exc, "sqlstate", None) or _details(exc).get("PG_DIAG_SQLSTATE") or ""
    message = f"{context}: {_server_message(exc)}"
    if sqlstate in PERMANENT_HINTS:
        return DatabaseError(f"{message}; {PERMANENT_HINTS[sqlstate]}", sqlstate=sqlstate)
    if (
        sqlstate[:2] == "08"
        or sqlstate in TRANSIENT_SQLSTATES
        or (not sqlstate and isinstance(exc, adbc_driver_manager.OperationalError))
    ):
        return TransientDatabaseError(message, sqlstate=sqlstate or None)
    return DatabaseError(message, sqlstate=sqlstate or None)


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


def _sorted_arrays(*columns: pl.Series) -> pa.RecordBatch:
    """Each column's distinct values in order, as array parameters ($1, $2…), bound as Arrow:
    with ``= ANY($1)`` the server walks an index once in key order instead of probing it value
    by value. A text holding NUL is left out: the server can store none, so none matches, and
    as a parameter it would fail the whole lookup."""
    distinct = [c.drop_nulls().unique().sort() for c in columns]
    arrays = [pl.Series([c.filter(~c.str.contains("\x00", literal=True))]).to_arrow() for c in distinct]
    return pa.RecordBatch.from_arrays(arrays, names=[f"p{n}" for n in range(1, len(arrays) + 1)])


def _merges_arrow(run_id: str, batch_no: int, merges: pl.DataFrame) -> pa.Table:
    return merges.select(
        run_id=pl.lit(run_id),
        batch_no=pl.lit(batch_no, pl.Int32),
        kept_id="duplicate_of",
        merged_ids="merged_ids",
        merged_sources="merged_sources",
    ).to_arrow(compat_level=pl.CompatLevel.oldest())


def _rejects_arrow(run_id: str, rejects: pl.DataFrame) -> pa.Table:
    # PostgreSQL text cannot hold NUL; keep the rest of the record exactly.
    return (
        rejects.select(pl.lit(run_id).alias("run_id"), *REJECT_SCHEMA)
        .with_columns(pl.col("raw", "message").str.replace_all("\x00", "\\u0000", literal=True))
        .to_arrow(compat_level=pl.CompatLevel.oldest())
    )
