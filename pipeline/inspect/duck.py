"""DuckDB SQL over Arrow tables read from PostgreSQL: ``pipeline rejects --sql``, the summary's
counting, and exports written by DuckDB's own writers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline.errors import PipelineError
from pipeline.sqltext import literal, quoted

# Only for planning: with these optimizers on, DuckDB proves filters false on the empty
# stand-in tables and folds the scans away, or moves filter columns out of the projections.
_PLANNING_OFF = "statistics_propagation,empty_result_pullup,filter_pushdown"
FORMATS = {"csv": "(FORMAT csv, HEADER true)", "json": "(FORMAT json)", "parquet": "(FORMAT parquet)"}


class QueryError(PipelineError):
    """DuckDB refused the user's SQL (syntax, unknown table or column, type mismatch)."""

    exit_code = 2


def table_names(sql: str, candidates: Iterable[str]) -> set[str]:
    """The ``candidates`` (lower-case names) that ``sql`` reads as tables.

    From DuckDB's syntax tree of the statement; for a statement it cannot serialize
    (PIVOT, SUMMARIZE ...), every candidate its text names. Syntax errors stop here.
    """
    with duckdb.connect() as connection, _translated():
        if len(duckdb.extract_statements(sql)) != 1:
            raise QueryError("--sql takes one statement")
        tree = json.loads(connection.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    named = set(re.findall(r"\w+", sql.lower())) if tree.get("error") else set(_base_tables(tree))
    return named & set(candidates)


def _base_tables(node) -> Iterator[str]:
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE" and isinstance(node.get("table_name"), str):
            yield node["table_name"].lower()
        for value in node.values():
            yield from _base_tables(value)
    elif isinstance(node, list):
        for value in node:
            yield from _base_tables(value)


def columns_read(sql: str, schemas: dict[str, pa.Schema]) -> dict[str, list[str]]:
    """The columns of each table that ``sql`` needs, from DuckDB's plan over stand-ins.

    A stand-in has the table's columns and one row of nulls (PIVOT binds to the values
    it finds). A table DuckDB plans no scan for is left out: the caller reads it whole.
    An empty list means the query needs the rows but none of their values (``count(*)``).
    """
    with duckdb.connect() as connection, _translated():
        for name, schema in schemas.items():
            connection.register("stand_in", pa.table({f.name: pa.nulls(1, f.type) for f in schema}))
            connection.execute(f"CREATE TABLE {quoted(name)} AS FROM stand_in")
            connection.unregister("stand_in")
        connection.execute(f"SET disabled_optimizers = '{_PLANNING_OFF}'")
        try:
            plan = connection.execute(f"EXPLAIN (FORMAT json) {sql}").fetchall()[0][1]
        except duckdb.Error:
            if "PIVOT" in sql.upper():
                return {}  # its columns come from the data: plan it on the real tables
            raise
    needed: dict[str, list[str]] = {}
    for table, projections in _scans(json.loads(plan)):
        name = table.rsplit(".", 1)[-1]
        if name in schemas:
            columns = [projections] if isinstance(projections, str) else projections
            needed.setdefault(name, [])
            needed[name] += [c for c in columns if c and c not in needed[name]]
    return needed


def query(sql: str, tables: dict[str, pa.Table]) -> pa.Table:
    """Run ``sql`` over ``tables`` (registered under their names) and return the result."""
    return queries([sql], tables)[-1]


def queries(statements: list[str], tables: dict[str, pa.Table]) -> list[pa.Table]:
    """Run ``statements`` in order on one connection (a temp table made by one serves the next)."""
    results = []
    with duckdb.connect() as connection, _translated():
        for name, table in tables.items():
            connection.register(name, table)
        for statement in statements:
            relation = connection.sql(statement)
            # A statement that returns no rows (SET, CREATE …) has no relation.
            results.append(relation.to_arrow_table() if relation is not None else pa.table({}))
    return results


def copy_query(sql: str, tables: dict[str, pa.Table], path: Path, fmt: str) -> None:
    """Write the result of ``sql`` to ``path`` with DuckDB's own writers (csv, json lines, parquet)."""
    with duckdb.connect() as connection, _translated():
        for name, table in tables.items():
            connection.register(name, table)
        connection.execute(f"COPY ({sql}) TO {literal(str(path))} {FORMATS[fmt]}")


def _scans(nodes: list[dict]):
    for node in nodes:
        info = node.get("extra_info") or {}
        if "Table" in info:
            yield info["Table"], info.get("Projections", [])
        yield from _scans(node.get("children") or [])


@contextmanager
def _translated():
    """DuckDB's errors become one-line ``QueryError``s (its messages add a caret drawing)."""
    try:
        yield
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(first) from None
