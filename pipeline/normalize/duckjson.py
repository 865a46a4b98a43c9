"""Fast JSON reading with DuckDB: a batch's texts read once into the dataset's types."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import duckdb
import polars as pl

from pipeline.sqltext import literal, quoted

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

_local = threading.local()


def read_json_objects(
    lines: pl.Series, dtype: pl.Struct, json_paths: frozenset[str] = frozenset()
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse JSON texts once: ``(checks, records)``, row for row with ``lines``.

    ``checks`` holds ``valid`` (JSON by DuckDB's reading, which also accepts NaN,
    Infinity and trailing commas) and ``object`` (valid and an object). ``records``
    holds one column per field of ``dtype`` for the objects, nulls elsewhere. Types
    are read as strictly as Polars' reader: a value of another JSON type becomes null
    (``"5"`` or ``5.5`` is no integer, ``"text"`` no object), where DuckDB's own casts
    would convert it; texts keep any JSON value, objects and lists as compact JSON.

    The text fields named in ``json_paths`` (dotted) hold their value as JSON text instead,
    exactly as typed: a string quoted, a number as written, an explicit null as ``null``
    (a key left out stays null), so that what they hold can be told apart.
    """
    with _registered("lines", lines.to_frame("raw")) as connection:
        decoded = connection.sql(_read_objects_sql(dtype, json_paths)).pl()
    schema = {field.name: field.dtype for field in dtype.fields}
    return decoded.select("valid", "object"), decoded.select(list(schema)).cast(schema)


def _read_objects_sql(dtype: pl.Struct, json_paths: frozenset[str]) -> str:
    """One ``json_transform`` of each object into ``dtype``'s nested structure, then each field
    typed as strictly as Polars' reader.

    The column named ``$`` holds the record. Integers and booleans are read as raw JSON, so
    that their JSON type can be checked. DuckDB reads a value that is no object into a
    struct whose members are all null (nested structs too), as it reads ``{}``: only those
    structs are looked up again in the text.
    """
    read = f"CASE WHEN object THEN json_transform(raw, {literal(_structure(dtype, json_paths))}) END"
    fields = ", ".join(
        f"{_typed(quoted('$'), (field.name,), field, json_paths)} AS {quoted(field.name)}"
        for field in dtype.fields
    )
    return (
        "WITH checked AS (SELECT raw, json_valid(raw) AS valid FROM lines), "
        "objects AS (SELECT *, valid AND regexp_matches(raw, '^\\s*\\{') AS object FROM checked), "
        f'read AS (SELECT *, {read} AS "$" FROM objects) '
        f"SELECT valid, object, {fields} FROM read"
    )


# JSON scalars read as raw JSON and cast only when their JSON type matches.
_STRICT_SCALARS: dict[PolarsDataType, tuple[str, str]] = {
    pl.Int64: ("BIGINT", "'BIGINT', 'UBIGINT'"),
    pl.Boolean: ("BOOLEAN", "'BOOLEAN'"),
}


def _structure(
    dtype: PolarsDataType, json_paths: frozenset[str], path: tuple[str, ...] = (), in_list: bool = False
) -> str:
    """``json_transform``'s structure for ``dtype``; outside lists, integers and booleans stay
    JSON (inside lists, DuckDB's casts apply), and so do the ``json_paths``."""
    if isinstance(dtype, pl.Struct):
        members = (
            f"{json.dumps(f.name)}:{_structure(f.dtype, json_paths, (*path, f.name), in_list)}"
            for f in dtype.fields
        )
        return "{" + ",".join(members) + "}"
    if isinstance(dtype, pl.List):
        return f"[{_structure(dtype.inner, json_paths, path, in_list=True)}]"
    if dtype == pl.String:
        return '"JSON"' if ".".join(path) in json_paths and not in_list else '"VARCHAR"'
    if dtype in _STRICT_SCALARS:
        return f'"{_STRICT_SCALARS[dtype][0]}"' if in_list else '"JSON"'
    raise TypeError(f"no JSON reading for {dtype}")


def _typed(parent: str, path: tuple[str, ...], field: pl.Field, json_paths: frozenset[str]) -> str:
    """The SQL of one field of the struct ``parent``, as ``field.dtype``; ``path`` leads to
    it from the record."""
    value = f"{parent}.{quoted(field.name)}"
    if isinstance(field.dtype, pl.Struct):
        packed = ", ".join(
            f"{quoted(f.name)} := {_typed(value, (*path, f.name), f, json_paths)}" for f in field.dtype.fields
        )
        all_null = " AND ".join(f"{value}.{quoted(f.name)} IS NULL" for f in field.dtype.fields)
        return (
            f"CASE WHEN {value} IS NULL OR ({all_null} "
            f"AND json_type(raw, {_pointer(path)}) <> 'OBJECT') THEN NULL "
            f"ELSE struct_pack({packed}) END"
        )
    if field.dtype in _STRICT_SCALARS:
        sql_type, json_types = _STRICT_SCALARS[field.dtype]
        typed = f"TRY_CAST(CASE WHEN json_type({value}) IN ({json_types}) THEN {value} END AS {sql_type})"
        return f"coalesce({typed}, {_integral(value)})" if field.dtype == pl.Int64 else typed
    if ".".join(path) in json_paths:
        # JSON null and a key left out both read as NULL: only the text tells them apart.
        explicit = f"{parent} IS NOT NULL AND json_type(raw, {_pointer(path)}) = 'NULL'"
        return f"CASE WHEN {value} IS NULL AND {explicit} THEN 'null' ELSE {value}::VARCHAR END"
    return value


def _integral(value: str) -> str:
    """A JSON number written with a fraction or an exponent (``7.0``, ``1e1``) as the integer it
    is, as JavaScript reads it; null when it has a fraction or no 64-bit integer holds it."""
    number = f"TRY_CAST(CASE WHEN json_type({value}) = 'DOUBLE' THEN {value} END AS DOUBLE)"
    return f"CASE WHEN {number} = trunc({number}) THEN TRY_CAST({number} AS BIGINT) END"


def _pointer(path: tuple[str, ...]) -> str:
    """The JSON pointer of ``path`` from the record, as an SQL literal."""
    return literal("/" + "/".join(name.replace("~", "~0").replace("/", "~1") for name in path))


def json_values(texts: pl.Series, pointers: pl.Series) -> pl.Series:
    """The value at each JSON pointer of each text, row for row: a string unquoted, any other
    value as JSON text, a number that no machine type holds (``1e400``) as written; null
    where the pointer leads nowhere or to JSON null."""
    with _registered("lookups", pl.DataFrame({"raw": texts, "pointer": pointers})) as connection:
        return connection.sql("SELECT json_extract_string(raw, pointer) AS got FROM lookups").pl()["got"]


def repeated_keys(texts: pl.Series, objects: list[str]) -> pl.Series:
    """Whether each JSON text repeats a key in one of the ``objects`` (JSON paths; ``[*]`` for
    each element of a list), row for row."""
    plain = ", ".join(literal(path) for path in objects if "[*]" not in path)
    keys = [f"json_keys(raw, [{plain}])"] + [
        f"json_keys(raw, {literal(path)})" for path in objects if "[*]" in path
    ]
    repeats = " OR ".join(
        f"coalesce(list_bool_or(list_transform({k}, lambda k: len(k) > len(list_distinct(k)))), false)"
        for k in keys
    )
    with _registered("keyed", texts.to_frame("raw")) as connection:
        return connection.sql(f"SELECT {repeats} AS repeats FROM keyed").pl()["repeats"]


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
