"""Look at a run's rejects: a summary with what to fix, DuckDB SQL over them, and exports.

Data comes from PostgreSQL as Arrow over the Loader's connection and is queried with
DuckDB (``pipeline.duck``): the summary is DuckDB SQL over a run's rejects without their
raw text, ``--sql`` reads only the tables (and the columns) a query needs, and an export
streams the raw records out in Arrow batches. The formatting helpers are pure functions
of the data they print.

DuckDB's own postgres scanner is not used: DuckDB downloads the extension at run time,
and the PyPI wheel (``duckdb-extension-postgres-scanner`` 1.5.5) loads only in DuckDB
1.5.5, not the 2.x this project uses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from pipeline import duck
from pipeline.database import resolve_url
from pipeline.errors import ConfigError, PipelineError
from pipeline.loader import Loader
from pipeline.rejects import CATEGORIES

# The tables ``--sql`` sees under short names; every other table of the schema keeps its own.
VIEWS = {"rejects": "pipeline_rejects", "runs": "pipeline_runs", "batches": "pipeline_batches"}
# ``--run`` narrows these to one run; ``runs`` and the data tables stay whole.
RUN_SCOPED = {"pipeline_rejects", "pipeline_batches"}
EXPORT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
EXPORT_COLUMNS = ("raw", "source_file", "source_line", "run_id")
ORIGIN_SUFFIX = ".origin"
TABLE_ROWS = 200
TOP_VALUES = 8

# The bad value of a reject row, by category (DuckDB SQL). Validation messages end with
# "(got VALUE); fix the value in the source record" (pipeline.validate.failure_message);
# a refused key names itself ("id X is already taken", or the server's "Key (id)=(X)").
VALUE_PATTERNS = {
    "validation": r"\(got (.*)\); fix the value in the source record$",
    "database": r"^\S+ (.*) is already taken by another record|Key \([^)]*\)=\((.*)\) already exists",
}
VALUE_SQL = f"""CASE
    WHEN category = 'deduplication' THEN duplicate_of
    WHEN category = 'validation' AND regexp_matches(message, '{VALUE_PATTERNS["validation"]}')
        THEN regexp_extract(message, '{VALUE_PATTERNS["validation"]}', 1)
    WHEN category = 'database' AND regexp_matches(message, '{VALUE_PATTERNS["database"]}')
        THEN coalesce(nullif(regexp_extract(message, '{VALUE_PATTERNS["database"]}', 1), ''),
                      regexp_extract(message, '{VALUE_PATTERNS["database"]}', 2))
END"""
SUMMARY_COLUMNS = (
    "category",
    "reason",
    "field",
    "source_file",
    "source_line",
    "message",
    "duplicate_of",
    "resolved_by",
)
GOT = re.compile(r" \(got .*\)(?=; fix the value in the source record$)")


class UnknownRunError(PipelineError):
    """``--run``/``--of`` names no run, or the database holds no run yet."""

    exit_code = 2

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


# --- the summary --------------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    """What is wrong with the records of one reason, and what to do about them."""

    what: str
    records: int
    values: list[str]
    distinct_values: int
    fix: str
    values_are: str = "seen"

    def text(self) -> str:
        seen = ""
        if self.values:
            more = self.distinct_values - len(self.values)
            listed = ", ".join(self.values) + (f" and {more:,} more" if more > 0 else "")
            seen = f" ({self.values_are}: {listed})"
        plural = "record" if self.records == 1 else "records"
        return f"{self.records:,} {plural}: {self.what}{seen}; {self.fix}"


@dataclass(frozen=True)
class ReasonSummary:
    category: str
    reason: str
    records: int
    rows: int
    resolved: int
    fields: list[str]
    sample_file: str
    sample_line: int
    sample_raw: str
    recommendation: Recommendation


@dataclass(frozen=True)
class RejectSummary:
    """The rejects of one run, by category and reason; counts are records unless named rows."""

    run_id: str
    status: str
    records: int
    resolved: int
    by_category: dict[str, int]
    reasons: list[ReasonSummary] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, width: int = 100) -> str:
        return format_summary(self, width)


def summarize(db_url: str | None = None, run_id: str | None = None) -> RejectSummary:
    """The rejects of ``run_id`` (default: the latest run) grouped by category and reason.

    The counting is DuckDB SQL over the run's rejects (without their raw text, read
    through Arrow); only the sample records come from PostgreSQL after.
    """
    with _connected(db_url) as loader:
        run = resolve_run(loader, run_id)
        with _reading(loader, "summarizing rejects"):
            rejects = loader.execute(
                f"SELECT {', '.join(SUMMARY_COLUMNS)} FROM pipeline_rejects "
                f"WHERE run_id = {_literal(run['run_id'])}"
            )
        _, reasons, categories, values = map(_frame, duck.queries(SUMMARY_SQL, {"rejects": rejects}))
        del rejects
        samples = _samples(loader, run["run_id"], reasons)
    return build_summary(
        run["run_id"], run["status"], reasons.join(samples, on=KEY, how="left"), categories, values
    )


KEY = ["category", "reason"]
FIRST = "(resolved_by IS NOT NULL, source_file, source_line)"  # the sample: first unresolved record
SUMMARY_SQL = [
    f"""CREATE TEMP TABLE bad AS
    SELECT category, reason, field, source_file, source_line, resolved_by, {VALUE_SQL} AS value
    FROM rejects""",
    f"""SELECT category, reason,
           count(DISTINCT (source_file, source_line)) AS records, count(*) AS rows,
           count(DISTINCT CASE WHEN resolved_by IS NOT NULL THEN (source_file, source_line) END) AS resolved,
           coalesce(list_sort(list(DISTINCT field) FILTER (WHERE field IS NOT NULL)), []::VARCHAR[])
               AS fields,
           arg_min(source_file, {FIRST}) AS sample_file,
           arg_min(source_line, {FIRST}) AS sample_line,
           arg_min(value, {FIRST}) AS sample_value
    FROM bad GROUP BY category, reason
    ORDER BY list_position({list(CATEGORIES)}, category), records DESC, reason""",
    """SELECT category, count(DISTINCT (source_file, source_line)) AS records,
           count(DISTINCT CASE WHEN resolved_by IS NOT NULL THEN (source_file, source_line) END) AS resolved
    FROM bad GROUP BY ROLLUP (category)""",
    f"""SELECT category, reason, value, n, distinct_values FROM (
        SELECT category, reason, value, count(*) AS n,
               row_number() OVER (PARTITION BY category, reason ORDER BY count(*) DESC, value) AS rank,
               count(*) OVER (PARTITION BY category, reason) AS distinct_values
        FROM bad WHERE value IS NOT NULL GROUP BY category, reason, value)
    WHERE rank <= {TOP_VALUES} ORDER BY category, reason, rank""",
]
SAMPLES_SQL = """
SELECT DISTINCT ON (category, reason) category, reason, raw AS sample_raw, message AS sample_message
FROM pipeline_rejects
WHERE run_id = $1
  AND (category, reason, source_file, source_line) IN (
      SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[]))
ORDER BY category, reason"""


def _samples(loader: Loader, run_id: str, reasons: pl.DataFrame) -> pl.DataFrame:
    """The raw text and message of each reason's sample record."""
    if reasons.is_empty():
        return pl.DataFrame(schema=dict.fromkeys([*KEY, "sample_raw", "sample_message"], pl.String))
    keys = reasons.select(*KEY, "sample_file", "sample_line")
    with _reading(loader, "reading sample rejects"):
        return _frame(loader.execute(SAMPLES_SQL, (run_id, *(keys[c].to_list() for c in keys.columns))))


def build_summary(
    run_id: str, status: str, reasons: pl.DataFrame, categories: pl.DataFrame, values: pl.DataFrame
) -> RejectSummary:
    """Pure: the summary from the counts per reason and per category, and the bad values seen."""
    seen = {
        (key[0], key[1]): (part["value"].to_list(), int(part["distinct_values"][0]))
        for key, part in values.group_by(*KEY, maintain_order=True)
    }
    total = categories.filter(pl.col("category").is_null())
    per_category = dict(
        categories.filter(pl.col("category").is_not_null()).select("category", "records").iter_rows()
    )
    return RejectSummary(
        run_id=run_id,
        status=status,
        records=int(total["records"].sum()),
        resolved=int(total["resolved"].sum()),
        by_category={c: per_category[c] for c in CATEGORIES if c in per_category},
        reasons=[
            ReasonSummary(
                category=row["category"],
                reason=row["reason"],
                records=row["records"],
                rows=row["rows"],
                resolved=row["resolved"],
                fields=row["fields"],
                sample_file=row["sample_file"],
                sample_line=row["sample_line"],
                sample_raw=row["sample_raw"],
                recommendation=recommend(
                    row["category"],
                    row["records"],
                    row["sample_message"],
                    *seen.get((row["category"], row["reason"]), ([], 0)),
                    row["sample_value"],
                ),
            )
            for row in reasons.iter_rows(named=True)
        ],
    )


def recommend(
    category: str,
    records: int,
    message: str,
    values: list[str],
    distinct_values: int,
    sample_value: str | None = None,
) -> Recommendation:
    """Pure: one reason's advice, from a sample message ("what is wrong; what to do").

    The sample's own bad value is taken out of the message, the values seen are listed apart.
    """
    what, _, fix = GOT.sub("", message).rpartition("; ")
    if not what:
        what, fix = message, "fix what the message names in the source records"
    shown = [_shown(v) for v in values]
    if category == "deduplication":
        what = "the same content as records already loaded"
        fix = "nothing to fix unless they should differ; they need no replay"
        return Recommendation(what, records, shown, distinct_values, fix, values_are="duplicates of")
    if category == "database" and sample_value:
        what = what.replace(sample_value, "…")  # "id … is already taken by another record"
    return Recommendation(what, records, shown, distinct_values, fix)


def format_summary(summary: RejectSummary, width: int = 100) -> str:
    """Pure: the summary as a table and one recommendation per reason."""
    categories = ", ".join(f"{c} {n:,}" for c, n in summary.by_category.items())
    lines = [
        f"run {summary.run_id} ({summary.status}): {summary.records:,} rejected records"
        + (f" ({categories})" if categories else "")
        + (f", {summary.resolved:,} resolved by a replay" if summary.resolved else ""),
    ]
    if not summary.reasons:
        return lines[0]
    rows = [
        [r.category, r.reason, f"{r.records:,}", f"{r.rows:,}", f"{r.resolved:,}", ", ".join(r.fields)]
        for r in summary.reasons
    ]
    lines += ["", *format_rows(["category", "reason", "records", "rows", "resolved", "field"], rows)]
    for r in summary.reasons:
        sample = f"{r.sample_file}:{r.sample_line}  {r.sample_raw}"
        lines += [
            "",
            f"{r.category} {r.reason}",
            f"  {r.recommendation.text()}",
            f"  sample {_clip(sample, width - 9)}",
        ]
    lines += [
        "",
        f"to fix them: pipeline rejects --run {summary.run_id} --export fix.jsonl, edit fix.jsonl, "
        f"then pipeline replay fix.jsonl --of {summary.run_id}",
    ]
    return "\n".join(lines)


def format_rows(header: list[str], rows: list[list[str]]) -> list[str]:
    """Pure: aligned columns, two spaces apart; columns whose cells look numeric align right."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    numeric = [
        all(re.fullmatch(r"-?[\d,.]+s?|", str(row[i])) for row in rows) and bool(rows)
        for i in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if right else str(c).ljust(w)
            for c, w, right in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _shown(value: str) -> str:
    """A bad value as a user reads it: quoted when blank, padded or holding a comma."""
    if value == "" or value != value.strip() or ", " in value:
        return json.dumps(value, ensure_ascii=False)
    return value


def _clip(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: max(width - 1, 10)] + "…"


# --- DuckDB SQL over the tables -----------------------------------------------------------


def query(sql: str, db_url: str | None = None, run_id: str | None = None) -> pa.Table:
    """Run DuckDB ``sql`` over ``rejects``, ``runs``, ``batches`` and the data tables.

    Only the tables (and, as DuckDB plans it, the columns) the query reads come over
    from PostgreSQL; ``rejects`` and ``batches`` hold only ``run_id``'s rows when given.
    """
    sql = _statement(sql)
    with _connected(db_url) as loader:
        tables = _read_tables(loader, sql, run_id)
    return duck.query(sql, tables)


def write_query(
    sql: str, fmt: str, output: Path | None, db_url: str | None = None, run_id: str | None = None
) -> None:
    """Write the query's result as csv, JSON or parquet to ``output`` (None: stdout). JSON on
    stdout is one array of row objects; in a file, one object a line."""
    if fmt not in duck.FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; use table, csv, json or parquet")
    if output is None and fmt == "parquet":
        raise ConfigError("parquet goes to a file: add --output FILE.parquet")
    sql = _statement(sql)
    with _connected(db_url) as loader:
        tables = _read_tables(loader, sql, run_id)
    if output is not None:
        duck.copy_query(sql, tables, output, fmt)
        return
    if fmt == "json":
        # One JSON document on stdout, an array of row objects, as `runs --format json` prints.
        sys.stdout.write(_frame(duck.query(sql, tables)).write_json() + "\n")
        sys.stdout.flush()
        return
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / f"result.{fmt}"
        duck.copy_query(sql, tables, path, fmt)
        with path.open("rb") as handle:
            sys.stdout.flush()
            shutil.copyfileobj(handle, sys.stdout.buffer)
            sys.stdout.buffer.flush()


def format_table(table: pa.Table, limit: int = TABLE_ROWS, width: int = 60) -> str:
    """Pure: a query result as aligned text (at most ``limit`` rows, long cells clipped)."""
    shown = table.slice(0, limit).to_pylist()
    rows = [[_cell(row[name], width) for name in table.column_names] for row in shown]
    lines = format_rows(table.column_names, rows)
    if table.num_rows > limit:
        lines.append(
            f"… {table.num_rows - limit:,} more rows; write them all with --format csv --output FILE"
        )
    return "\n".join(lines)


def _cell(value, width: int) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return _clip(str(value), width)


def _statement(sql: str) -> str:
    sql = sql.strip().rstrip(";").strip()
    if not sql:
        raise ConfigError('--sql needs a query, e.g. --sql "SELECT reason, count(*) FROM rejects GROUP BY 1"')
    return sql


def _read_tables(loader: Loader, sql: str, run_id: str | None) -> dict[str, pa.Table]:
    """The tables ``sql`` names, read from PostgreSQL with only the columns it uses."""
    if run_id is not None:
        resolve_run(loader, run_id)
    available = _available_tables(loader)
    wanted = {name: available[name] for name in duck.table_names(sql, available)}
    with _reading(loader, "reading tables for the query"):
        schemas = {
            name: loader.execute(f"SELECT * FROM {_quoted(table)} LIMIT 0").schema
            for name, table in wanted.items()
        }
        needed = duck.columns_read(sql, schemas)
        return {
            name: _read_table(loader, table, schemas[name], needed.get(name), run_id)
            for name, table in wanted.items()
        }


def _available_tables(loader: Loader) -> dict[str, str]:
    with _reading(loader, "listing tables"):
        names = loader.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        ).column(0)
    tables = {name.lower(): name for name in names.to_pylist()}
    tables |= {view: table for view, table in VIEWS.items() if table in tables}
    return tables


def _read_table(
    loader: Loader, table: str, schema: pa.Schema, columns: list[str] | None, run_id: str | None
) -> pa.Table:
    if columns is None:
        columns = schema.names
    elif not columns:
        # Only the row count matters: the narrowest column will do.
        fixed = [f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
        columns = fixed[:1] or schema.names[:1]
    where = f"WHERE run_id = {_literal(run_id)}" if run_id and table in RUN_SCOPED else ""
    select = ", ".join(_quoted(c) for c in columns)
    return loader.execute(f"SELECT {select} FROM {_quoted(table)} {where}")


# --- exports ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    path: Path
    origin: Path | None
    records: int
    run_id: str | None


EXPORT_SQL = """
SELECT DISTINCT ON (source_file, source_line) raw, source_file, source_line, run_id, reason
FROM pipeline_rejects WHERE run_id = {run} AND resolved_by IS NULL
ORDER BY source_file, source_line"""


def export_rejects(
    path: Path, db_url: str | None = None, run_id: str | None = None, sql: str | None = None
) -> ExportResult:
    """Write the raw records of a run's unresolved rejects (or of ``sql``'s rows), one per record.

    JSONL lines are the ``raw`` text exactly, with the origin of each line in the
    sidecar ``FILE.origin`` (same order); CSV and Parquet carry ``raw``,
    ``source_file``, ``source_line`` and ``run_id`` columns.
    """
    path = Path(path)
    fmt = export_format(path)
    origin = origin_path(path) if fmt == "jsonl" else None
    with _connected(db_url) as loader:
        if sql is None:
            run_id = resolve_run(loader, run_id)["run_id"]
            with _reading(loader, "exporting rejects"):
                records = _write_export(path, fmt, _stream(loader, EXPORT_SQL.format(run=_literal(run_id))))
            return ExportResult(path, origin, records, run_id)
        sql = _statement(sql)
        tables = _read_tables(loader, sql, run_id)
    selected = _selected_records(duck.query(sql, tables))
    runs = pc.unique(selected["run_id"].drop_null())
    records = _write_export(path, fmt, iter(selected.to_batches()))
    return ExportResult(path, origin, records, runs[0].as_py() if len(runs) == 1 else None)


def export_format(path: Path) -> str:
    fmt = EXPORT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: export to .jsonl, .csv or .parquet (the suffix picks the format)")
    return fmt


def origin_path(path: Path) -> Path:
    """The sidecar of a JSONL export: where each line came from (a suffix no input glob matches)."""
    return path.with_name(path.name + ORIGIN_SUFFIX)


def _selected_records(result: pa.Table) -> pa.Table:
    """One row per record of a query's result, in its order, with the export columns."""
    if "raw" not in result.column_names:
        raise duck.QueryError(
            "an --export query must return the raw column (and source_file, source_line, "
            "run_id to replay it), e.g. SELECT * FROM rejects WHERE category = 'validation'"
        )
    frame = pl.from_arrow(result.select([c for c in EXPORT_COLUMNS if c in result.column_names]))
    frame = frame.with_columns(
        pl.lit(None, pl.String).alias(c) for c in EXPORT_COLUMNS if c not in frame.columns
    ).select(EXPORT_COLUMNS)
    keyed = frame.filter(pl.col("source_line").is_not_null()).unique(
        ["run_id", "source_file", "source_line"], keep="first", maintain_order=True
    )
    return (
        pl.concat([keyed, frame.filter(pl.col("source_line").is_null())])
        .cast({"source_line": pl.Int64})
        .to_arrow()
    )


def _write_export(path: Path, fmt: str, batches: Iterator[pa.RecordBatch]) -> int:
    """Write to a temporary name and rename, so a failed export leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    records = 0
    schema = pa.schema(
        [
            ("raw", pa.string()),
            ("source_file", pa.string()),
            ("source_line", pa.int64()),
            ("run_id", pa.string()),
        ]
    )
    try:
        with _export_writer(partial, fmt, schema) as write:
            for batch in batches:
                write(pa.Table.from_batches([batch]).select(list(EXPORT_COLUMNS)).cast(schema))
                records += batch.num_rows
        if fmt == "jsonl":
            os.replace(_origin_partial(partial), origin_path(path))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        _origin_partial(partial).unlink(missing_ok=True)
    return records


@contextmanager
def _export_writer(path: Path, fmt: str, schema: pa.Schema):
    if fmt == "jsonl":
        with path.open("wb") as lines, _origin_partial(path).open("wb") as origins:

            def write(table: pa.Table) -> None:
                frame = pl.from_arrow(table)
                lines.write((frame["raw"] + "\n").str.join("").item().encode())
                origin = frame.select("run_id", "source_file", "source_line").write_ndjson()
                origins.write(origin.encode())

            yield write
    elif fmt == "csv":
        with pa_csv.CSVWriter(path, schema) as writer:
            yield writer.write_table
    else:
        with pq.ParquetWriter(path, schema) as writer:
            yield writer.write_table


def _origin_partial(partial: Path) -> Path:
    return partial.with_name(partial.name + ORIGIN_SUFFIX)


# --- runs ---------------------------------------------------------------------------------

RUNS_SQL = """
SELECT r.run_id, r.status, r.started_at,
       extract(epoch FROM coalesce(r.finished_at, now()) - r.started_at)::float8 AS seconds,
       coalesce((r.result->>'processed')::bigint, b.rows_in, 0) AS processed,
       coalesce((r.result->>'successful')::bigint, b.loaded, 0) AS loaded,
       (r.result->>'failed')::bigint AS failed,
       (r.result->>'duplicates_skipped')::bigint + (r.result->>'similar_merged')::bigint AS skipped,
       r.config->>'replay_of' AS replay_of
FROM pipeline_runs r
LEFT JOIN (SELECT run_id, sum(rows_in) AS rows_in, sum(loaded) AS loaded
           FROM pipeline_batches GROUP BY run_id) b USING (run_id)
ORDER BY r.started_at"""


def list_runs(db_url: str | None = None) -> pl.DataFrame:
    """Every run, oldest first: status, counts and duration (counts so far for a running one)."""
    with _connected(db_url) as loader:
        if not _has_runs_table(loader):
            return pl.DataFrame()
        with _reading(loader, "listing runs"):
            return _frame(loader.execute(RUNS_SQL))


def format_runs(runs: pl.DataFrame) -> str:
    """Pure: the runs as a table."""
    if runs.is_empty():
        return "no runs yet: start one with `pipeline migrate FILE`"
    rows = [
        [
            r["run_id"],
            r["status"],
            f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
            _duration(r["seconds"]),
            f"{r['processed']:,}",
            f"{r['loaded']:,}",
            "" if r["failed"] is None else f"{r['failed']:,}",
            "" if r["skipped"] is None else f"{r['skipped']:,}",
            f"replay of {r['replay_of']}" if r["replay_of"] else "",
        ]
        for r in runs.iter_rows(named=True)
    ]
    header = ["run", "status", "started (UTC)", "took", "processed", "loaded", "failed", "skipped", "note"]
    return "\n".join(format_rows(header, rows))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


# --- database access ----------------------------------------------------------------------


@contextmanager
def _connected(db_url: str | None) -> Iterator[Loader]:
    loader = Loader(resolve_url(db_url))
    try:
        yield loader
    finally:
        loader.close()


def _reading(loader: Loader, doing: str):
    """A read-only transaction in which driver errors become ``DatabaseError``s."""
    return loader._transaction(doing)


def _stream(loader: Loader, sql: str) -> Iterator[pa.RecordBatch]:
    """The result of ``sql`` in Arrow batches of about 16 MB, so an export of millions stays small.

    Only a query without bind parameters is streamed (COPY); libpq holds the whole result
    of a parameterized one, which is why the big reads here inline their run id.
    """
    with loader.connection.cursor() as cursor:
        cursor.execute(sql)
        yield from cursor.fetch_record_batch()


def resolve_run(loader: Loader, run_id: str | None) -> dict:
    """The run ``run_id`` names (default: the latest one): ``run_id``, ``status``, ``config``."""
    if not _has_runs_table(loader):
        raise UnknownRunError("there are no runs in this database yet; start one with `pipeline migrate`")
    with _reading(loader, "finding the run"):
        if run_id is None:
            found = loader.execute(
                "SELECT run_id, status, config::text AS config FROM pipeline_runs "
                "ORDER BY started_at DESC, run_id DESC LIMIT 1"
            )
        else:
            found = loader.execute(
                "SELECT run_id, status, config::text AS config FROM pipeline_runs WHERE run_id = $1",
                (run_id,),
            )
    rows = found.to_pylist()
    if not rows and run_id is None:
        raise UnknownRunError("there are no runs in this database yet; start one with `pipeline migrate`")
    if not rows:
        raise UnknownRunError(f"there is no run {run_id!r}; `pipeline runs` lists the runs", run_id=run_id)
    return {**rows[0], "config": json.loads(rows[0]["config"])}


def _has_runs_table(loader: Loader) -> bool:
    with _reading(loader, "looking for the pipeline's tables"):
        found = loader.execute("SELECT to_regclass('pipeline_runs') IS NOT NULL AS found")
    return bool(found.column(0)[0].as_py())


def _frame(table: pa.Table) -> pl.DataFrame:
    """Arrow from the server as Polars (JSON columns as their text)."""
    columns = [
        pa.chunked_array([chunk.storage for chunk in column.chunks], column.type.storage_type)
        if isinstance(column.type, pa.BaseExtensionType)
        else column
        for column in table.columns
    ]
    return pl.from_arrow(pa.Table.from_arrays(columns, names=table.column_names))


def _literal(text: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings, the default since 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
