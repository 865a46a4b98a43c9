"""The raw records of a run's rejects written out to fix and replay, streamed in Arrow batches
so that an export of millions stays small."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from pipeline.errors import ConfigError
from pipeline.inspect import duck
from pipeline.inspect.query import read_tables, statement
from pipeline.inspect.runs import resolve_run
from pipeline.load.connection import connected
from pipeline.load.ledger import unresolved_rejects
from pipeline.load.server import resolve_url

EXPORT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}

EXPORT_COLUMNS = ("raw", "source_file", "source_line", "run_id")

ORIGIN_SUFFIX = ".origin"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    origin: Path | None
    records: int
    run_id: str | None


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
    with connected(resolve_url(db_url)) as loader:
        if sql is None:
            run_id = resolve_run(loader, run_id).run_id
            with loader.transaction("exporting rejects"):
                records = _write_export(path, fmt, unresolved_rejects(loader, run_id))
            return ExportResult(path, origin, records, run_id)
        sql = statement(sql)
        tables = read_tables(loader, sql, run_id)
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
    frame = pl.DataFrame(result.select([c for c in EXPORT_COLUMNS if c in result.column_names]))
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
                frame = pl.DataFrame(table)
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
