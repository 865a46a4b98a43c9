"""DuckDB SQL over the database: ``rejects``, ``runs``, ``batches`` and every data table.

Only the tables (and, as DuckDB plans it, the columns) a query needs come over from
PostgreSQL, as Arrow. DuckDB's own postgres scanner is not used: DuckDB downloads the
extension at run time, and its PyPI wheel loads only in DuckDB 1.5.5, not the 2.x here.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

from pipeline.errors import ConfigError
from pipeline.inspect import duck
from pipeline.inspect.runs import resolve_run
from pipeline.inspect.text import arrow_frame, clip, format_rows
from pipeline.load.connection import Connection, connected
from pipeline.load.ledger import QUERY_NAMES, run_filter
from pipeline.load.results import result_of
from pipeline.load.server import resolve_url
from pipeline.run.rejects_file import read_rejects_file
from pipeline.sqltext import quoted

TABLE_ROWS = 200


def query(
    sql: str, db_url: str | None = None, run_id: str | None = None, rejects_file: Path | None = None
) -> pa.Table:
    """Run DuckDB ``sql`` over ``rejects``, ``runs``, ``batches`` and the data tables, or over
    ``rejects`` alone, read from a dry run's ``rejects_file``.

    Only the tables (and, as DuckDB plans it, the columns) the query reads come over
    from PostgreSQL; ``rejects`` and ``batches`` hold only ``run_id``'s rows when given.
    """
    sql = statement(sql)
    return duck.query(sql, _tables(sql, db_url, run_id, rejects_file))


def _tables(
    sql: str, db_url: str | None, run_id: str | None, rejects_file: Path | None
) -> dict[str, pa.Table]:
    if rejects_file is not None:
        return {"rejects": read_rejects_file(rejects_file)}
    with connected(resolve_url(db_url)) as loader:
        return read_tables(loader, sql, run_id)


def write_query(
    sql: str,
    fmt: str,
    output: Path | None,
    db_url: str | None = None,
    run_id: str | None = None,
    rejects_file: Path | None = None,
) -> None:
    """Write the query's result as csv, JSON or parquet to ``output`` (None: stdout). JSON on
    stdout is one array of row objects; in a file, one object a line."""
    if fmt not in duck.FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; use table, csv, json or parquet")
    if output is None and fmt == "parquet":
        raise ConfigError("parquet goes to a file: add --output FILE.parquet")
    sql = statement(sql)
    tables = _tables(sql, db_url, run_id, rejects_file)
    if output is not None:
        duck.copy_query(sql, tables, output, fmt)
        return
    if fmt == "json":
        # One JSON document on stdout, an array of row objects, as `runs --format json` prints.
        sys.stdout.write(arrow_frame(duck.query(sql, tables)).write_json() + "\n")
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
    if isinstance(value, float):  # for reading: a real's 0.9821428656578064 shows as 0.982
        return f"{value:.3f}" if abs(value) >= 0.001 or value == 0 else f"{value:.3g}"
    if isinstance(value, list | dict):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return clip(str(value), width)


def statement(sql: str) -> str:
    sql = sql.strip().rstrip(";").strip()
    if not sql:
        raise ConfigError('--sql needs a query, e.g. --sql "SELECT reason, count(*) FROM rejects GROUP BY 1"')
    return sql


def read_tables(loader: Connection, sql: str, run_id: str | None) -> dict[str, pa.Table]:
    """The tables ``sql`` names, read from PostgreSQL with only the columns it uses."""
    if run_id is not None:
        resolve_run(loader, run_id)
    available = _available_tables(loader)
    wanted = {name: available[name] for name in duck.table_names(sql, available)}
    with loader.transaction("reading tables for the query"):
        schemas = {
            name: result_of(loader, f"SELECT * FROM {quoted(table)} LIMIT 0").schema
            for name, table in wanted.items()
        }
        needed = duck.columns_read(sql, schemas)
        return {
            name: _read_table(loader, table, schemas[name], needed.get(name), run_id)
            for name, table in wanted.items()
        }


def _available_tables(loader: Connection) -> dict[str, str]:
    with loader.transaction("listing tables"):
        names = result_of(
            loader,
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
        ).column(0)
    tables = {name.lower(): name for name in names.to_pylist()}
    # The ledger's tables go by short names too; every other table by its own.
    tables |= {name: table for name, table in QUERY_NAMES.items() if table in tables}
    return tables


def _read_table(
    loader: Connection, table: str, schema: pa.Schema, columns: list[str] | None, run_id: str | None
) -> pa.Table:
    if columns is None:
        columns = schema.names
    elif not columns:
        # Only the row count matters: the narrowest column will do.
        fixed = [f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]
        columns = fixed[:1] or schema.names[:1]
    select = ", ".join(quoted(c) for c in columns)
    return loader.execute(f"SELECT {select} FROM {quoted(table)} {run_filter(table, run_id)}")
