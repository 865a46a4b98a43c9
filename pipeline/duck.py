"""DuckDB, the only module that imports it: fast JSON reading, and SQL over rejects."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from pipeline.errors import PipelineError

_local = threading.local()


def read_json_objects(lines: pl.Series, dtype: pl.Struct) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse JSON texts once: ``(checks, records)``, row for row with ``lines``.

    ``checks`` holds ``valid`` (JSON by DuckDB's reading, which also accepts NaN,
    Infinity and trailing commas) and ``object`` (valid and an object). ``records``
    holds one column per field of ``dtype`` for the objects, nulls elsewhere. Types
    are read as strictly as Polars' reader: a value of another JSON type becomes null
    (``"5"`` or ``5.5`` is no integer, ``"text"`` no object), where DuckDB's own casts
    would convert it; texts keep any JSON value, objects and lists as compact JSON.
    """
    with _registered("lines", lines.to_frame("raw")) as connection:
        decoded = connection.sql(_read_objects_sql(dtype)).pl()
    schema = {field.name: field.dtype for field in dtype.fields}
    return decoded.select("valid", "object"), decoded.select(list(schema)).cast(schema)


def _read_objects_sql(dtype: pl.Struct) -> str:
    """One ``json_transform`` of each object into ``dtype``'s nested structure, then each field
    typed as strictly as Polars' reader.

    The column named ``$`` holds the record. Integers and booleans are read as raw JSON, so
    that their JSON type can be checked. DuckDB reads a value that is no object into a
    struct whose members are all null (nested structs too), as it reads ``{}``: only those
    structs are looked up again in the text.
    """
    read = f"CASE WHEN object THEN json_transform(raw, '{_literal(_structure(dtype))}') END"
    fields = ", ".join(
        f"{_typed(_quote('$'), (field.name,), field)} AS {_quote(field.name)}" for field in dtype.fields
    )
    return (
        "WITH checked AS (SELECT raw, json_valid(raw) AS valid FROM lines), "
        "objects AS (SELECT *, valid AND regexp_matches(raw, '^\\s*\\{') AS object FROM checked), "
        f'read AS (SELECT *, {read} AS "$" FROM objects) '
        f"SELECT valid, object, {fields} FROM read"
    )


# JSON scalars read as raw JSON and cast only when their JSON type matches.
_STRICT_SCALARS = {pl.Int64: ("BIGINT", "'BIGINT', 'UBIGINT'"), pl.Boolean: ("BOOLEAN", "'BOOLEAN'")}


def _structure(dtype: pl.DataType, in_list: bool = False) -> str:
    """``json_transform``'s structure for ``dtype``; outside lists, integers and booleans stay
    JSON (inside lists, DuckDB's casts apply)."""
    if isinstance(dtype, pl.Struct):
        members = (f"{json.dumps(f.name)}:{_structure(f.dtype, in_list)}" for f in dtype.fields)
        return "{" + ",".join(members) + "}"
    if isinstance(dtype, pl.List):
        return f"[{_structure(dtype.inner, in_list=True)}]"
    if dtype == pl.String:
        return '"VARCHAR"'
    if dtype in _STRICT_SCALARS:
        return f'"{_STRICT_SCALARS[dtype][0]}"' if in_list else '"JSON"'
    raise TypeError(f"no JSON reading for {dtype}")


def _typed(parent: str, path: tuple[str, ...], field: pl.Field) -> str:
    """The SQL of one field of the struct ``parent``, as ``field.dtype``; ``path`` leads to
    it from the record."""
    value = f"{parent}.{_quote(field.name)}"
    if isinstance(field.dtype, pl.Struct):
        packed = ", ".join(
            f"{_quote(f.name)} := {_typed(value, (*path, f.name), f)}" for f in field.dtype.fields
        )
        all_null = " AND ".join(f"{value}.{_quote(f.name)} IS NULL" for f in field.dtype.fields)
        pointer = "/" + "/".join(name.replace("~", "~0").replace("/", "~1") for name in path)
        return (
            f"CASE WHEN {value} IS NULL OR ({all_null} "
            f"AND json_type(raw, '{_literal(pointer)}') <> 'OBJECT') THEN NULL "
            f"ELSE struct_pack({packed}) END"
        )
    if field.dtype in _STRICT_SCALARS:
        sql_type, json_types = _STRICT_SCALARS[field.dtype]
        return f"TRY_CAST(CASE WHEN json_type({value}) IN ({json_types}) THEN {value} END AS {sql_type})"
    return value


def json_values(texts: pl.Series, pointers: pl.Series) -> pl.Series:
    """The value at each JSON pointer of each text, row for row: a string unquoted, any other
    value as JSON text, a number that no machine type holds (``1e400``) as written; null
    where the pointer leads nowhere or to JSON null."""
    with _registered("lookups", pl.DataFrame({"raw": texts, "pointer": pointers})) as connection:
        return connection.sql("SELECT json_extract_string(raw, pointer) AS got FROM lookups").pl()["got"]


@contextmanager
def _registered(name: str, frame: pl.DataFrame) -> Iterator[duckdb.DuckDBPyConnection]:
    """This thread's connection with ``frame`` registered as ``name``. DuckDB turns a Ctrl-C
    during a query into an error of its own (``RuntimeError: Query interrupted`` from its
    result fetch): it becomes the ``KeyboardInterrupt`` it was."""
    connection = _thread_connection()
    connection.register(name, frame)
    try:
        yield connection
    except (duckdb.InterruptException, RuntimeError) as exc:
        if isinstance(exc, duckdb.InterruptException) or str(exc) == "Query interrupted":
            raise KeyboardInterrupt from None
        raise
    finally:
        connection.unregister(name)


def _thread_connection() -> duckdb.DuckDBPyConnection:
    # Opening a connection costs as much as reading a batch; a connection serves one thread.
    # One DuckDB thread: a batch is small, and the pipeline's own threads fill the cores.
    if not hasattr(_local, "connection"):
        _local.connection = duckdb.connect(config={"threads": 1})
    return _local.connection


# --- SQL over rejects (``pipeline rejects --sql``) -------------------------------------------

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
        tree = json.loads(connection.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
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
            connection.execute(f"CREATE TABLE {_quote(name)} AS FROM stand_in")
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
        connection.execute(f"COPY ({sql}) TO '{_literal(str(path))}' {FORMATS[fmt]}")


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


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return text.replace("'", "''")
