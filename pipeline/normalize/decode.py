"""Raw record text to typed columns, splitting off what cannot be parsed.

DuckDB reads each batch's texts once: whether each is JSON, whether it is an object,
and the objects' fields in the dataset's types. A value of the wrong type is read as
null, as Polars' reader would; ``type_errors`` tells those apart from values that are
really missing by looking them up in the raw text, and ``structure_errors`` finds the
fields read as JSON text that hold a scalar or a null where an object or a list belongs.
Where DuckDB reads JSON otherwise than JavaScript's ``JSON.parse`` (the original's reader),
the texts are read as ``JSON.parse`` reads them (``jsontext``): strictly, the last of a
repeated key winning, a lone surrogate escape read (then refused, ``unstorable_text``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import polars as pl

from pipeline.frames import reject_frame
from pipeline.normalize import duckjson as duck
from pipeline.normalize.jsontext import (
    holds_nul_escape,
    last_keys_win,
    lone_surrogates_as_nul,
    nesting_depth,
    strictly_valid,
)

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

RECORD_KEYS = ["source_file", "source_line", "raw"]

# How deep a part stored as JSON may nest: PostgreSQL's jsonb input stops at its stack limit
# (about 14,000 nested objects with the default max_stack_depth of 2MB).
MAX_STORED_DEPTH = 10_000

PARSE_MESSAGES = {
    "invalid_json": "the record is not valid JSON (truncated, unquoted text or stray "
    "characters); fix the text or drop the record",
    "not_an_object": "the record is valid JSON but not an object; each record must be a "
    'JSON object like {"id": ...}',
    "invalid_utf8": "the line holds bytes that are not UTF-8 (shown here as \ufffd); "
    "re-export the file as UTF-8, or name its encoding with --encoding (e.g. cp1252)",
    "invalid_encoding": "the line holds bytes that are not valid in the encoding named with "
    "--encoding (shown here as \ufffd); name the file's own encoding or fix those bytes",
    "too_deep": f"the record nests arrays or objects more than {MAX_STORED_DEPTH:,} levels deep in "
    "a part stored as JSON, deeper than PostgreSQL reads; flatten that part or drop the record",
}

TYPE_NAMES = {pl.Int64: "integer", pl.List: "list", pl.Struct: "object", pl.Boolean: "boolean"}


def decode(
    raw: pl.DataFrame, dtype: pl.Struct, json_paths: frozenset[str] = frozenset()
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split raw records into (decoded records, parse rejects).

    Decoded records keep ``source_file``, ``source_line`` and ``raw`` beside one
    column per top-level field of ``dtype``; the ``json_paths`` hold JSON text
    (``duckjson.read_json_objects``).
    """
    texts = lone_surrogates_as_nul(raw["raw"])
    checks, objects = duck.read_json_objects(texts, dtype, json_paths)
    objects = _last_keys_win(texts, checks["object"], objects, dtype, json_paths)
    checks = checks.with_columns(
        valid=strictly_valid(raw["raw"], checks["valid"]), deep=_too_deep(objects, json_paths)
    )
    classified = pl.concat([raw, checks, objects], how="horizontal").with_columns(
        parse_error=pl.coalesce("parse_error", _parse_error())
    )
    failed = classified.filter(pl.col("parse_error").is_not_null())
    rejects = reject_frame(
        failed.lazy(),
        category="parse",
        reason=pl.col("parse_error").str.extract(r"^(\w+)"),
        field=pl.lit(None, pl.String),
        message=pl.col("parse_error").replace_strict(PARSE_MESSAGES, default=pl.col("parse_error")),
    )
    decoded = classified.filter(pl.col("parse_error").is_null()).select(*RECORD_KEYS, *objects.columns)
    return decoded, rejects


def _last_keys_win(
    texts: pl.Series,
    objects_read: pl.Series,
    objects: pl.DataFrame,
    dtype: pl.Struct,
    json_paths: frozenset[str],
) -> pl.DataFrame:
    """``objects`` with the records that repeat a key of an object the dataset reads read again,
    the last of the key winning (DuckDB keeps the first). Cheap test first: such a record
    writes more keys of the dataset's field names than the values read account for (as does
    one writing such a key as null); only those are looked at, and only those that repeat
    one rewritten. An escaped printable ASCII character counts as a key too: no exporter
    writes one, and a key so written (``"conf\\u0069dence"``) may be a field's name."""
    names = "|".join(re.escape(json.dumps(name)[1:-1]) for name in _field_names(dtype))
    keys = f'"(?:{names})"' + r"\s*:|\\u00[2-7][0-9a-fA-F]"
    accounted = objects.select(_keys_read(pl.col, dtype, json_paths, keys)).to_series()
    at, rewritten = _rewritten(
        texts, (objects_read & (texts.str.count_matches(keys) > accounted)).arg_true(), dtype
    )
    if at.is_empty():
        return objects
    position = "_" + "_".join(objects.columns)  # a name no field takes
    again = duck.read_json_objects(rewritten, dtype, json_paths)[1].with_columns(pl.Series(position, at))
    kept = objects.with_row_index(position).filter(~pl.col(position).is_in(at.implode()))
    return pl.concat([kept, again.select(kept.columns)]).sort(position).drop(position)


def _rewritten(texts: pl.Series, at: pl.Series, dtype: pl.Struct) -> tuple[pl.Series, pl.Series]:
    """Those of the JSON objects ``texts`` at ``at`` that repeat a key of an object ``dtype``
    reads: their positions, and their texts with the last of each key."""
    if not at.is_empty():
        at = at.filter(duck.repeated_keys(texts.gather(at), list(_object_paths(dtype))))
    return at, pl.Series([last_keys_win(text) for text in texts.gather(at)], dtype=pl.String)


def _as_json_parse_reads(texts: pl.Series, dtype: pl.Struct) -> pl.Series:
    """JSON objects written so that DuckDB reads them as ``JSON.parse`` does: a lone surrogate
    escape as NUL, the last of a repeated key (looked for in each text: for a few texts)."""
    texts = lone_surrogates_as_nul(texts)
    at, rewritten = _rewritten(texts, pl.int_range(texts.len(), dtype=pl.UInt32, eager=True), dtype)
    return texts.scatter(at, rewritten) if not at.is_empty() else texts


def _field_names(dtype: pl.Struct) -> Iterator[str]:
    """Every field name of ``dtype``, in its structs and in the structs of its lists."""
    for field in dtype.fields:
        yield field.name
        inner = field.dtype.inner if isinstance(field.dtype, pl.List) else field.dtype
        if isinstance(inner, pl.Struct):
            yield from _field_names(inner)


def _object_paths(dtype: pl.Struct, path: str = "$") -> Iterator[str]:
    """The JSON paths of the objects ``dtype`` reads (``[*]``: each element of a list)."""
    yield path
    for field in dtype.fields:
        at = f"{path}.{json.dumps(field.name)}"
        if isinstance(field.dtype, pl.Struct):
            yield from _object_paths(field.dtype, at)
        elif isinstance(field.dtype, pl.List) and isinstance(field.dtype.inner, pl.Struct):
            yield from _object_paths(field.dtype.inner, f"{at}[*]")


def _keys_read(
    member: Callable[[str], pl.Expr],
    dtype: pl.Struct,
    json_paths: frozenset[str],
    keys: str,
    prefix: str = "",
) -> pl.Expr:
    """How many keys of the dataset's field names a record's values account for: one per value
    read (not null), and those written inside the parts read as JSON text."""
    counts = []
    for field in dtype.fields:
        value, path = member(field.name), f"{prefix}{field.name}"
        counts.append(value.is_not_null().cast(pl.Int64))
        if isinstance(field.dtype, pl.Struct):
            counts.append(_keys_read(value.struct.field, field.dtype, json_paths, keys, f"{path}."))
        elif isinstance(field.dtype, pl.List) and isinstance(field.dtype.inner, pl.Struct):
            inner = _keys_read(pl.element().struct.field, field.dtype.inner, frozenset(), keys)
            counts.append(value.list.eval(inner).list.sum())
        elif path in json_paths:
            counts.append(value.str.count_matches(keys).cast(pl.Int64))
    return pl.sum_horizontal(counts)


def _too_deep(objects: pl.DataFrame, json_paths: frozenset[str]) -> pl.Series:
    """Whether a record's parts read as JSON text nest deeper than ``MAX_STORED_DEPTH``; only
    a part long enough to (two bytes a level) is measured."""
    deep = pl.Series("deep", [False] * objects.height)
    for path in json_paths:
        texts = objects.select(field_expr(path)).to_series()
        at = (texts.str.len_bytes() > 2 * MAX_STORED_DEPTH).arg_true()
        if not at.is_empty():
            depths = pl.Series([nesting_depth(text) for text in texts.gather(at)], dtype=pl.Int64)
            deep = deep.scatter(at.filter(depths > MAX_STORED_DEPTH), True)
    return deep


def _parse_error() -> pl.Expr:
    return (
        pl.when(pl.col("valid") & pl.col("object") & pl.col("deep"))
        .then(pl.lit("too_deep"))
        .when(pl.col("valid") & pl.col("object"))
        .then(pl.lit(None, pl.String))
        .when(pl.col("valid"))
        .then(pl.lit("not_an_object"))
        .otherwise(pl.lit("invalid_json"))
    )


def leaf_paths(dtype: pl.Struct, prefix: str = "") -> Iterator[tuple[str, PolarsDataType]]:
    """Dotted paths of every field reachable without entering a list, outermost first."""
    for field in dtype.fields:
        path = f"{prefix}{field.name}"
        yield path, field.dtype
        if isinstance(field.dtype, pl.Struct):
            yield from leaf_paths(field.dtype, f"{path}.")


def field_expr(path: str) -> pl.Expr:
    head, *rest = path.split(".")
    expr = pl.col(head)
    for name in rest:
        expr = expr.struct.field(name)
    return expr


def type_errors(records: pl.DataFrame, dtype: pl.Struct, skip: tuple[str, ...] = ()) -> pl.DataFrame:
    """Fields that are present in the raw JSON but decoded to null: they had the wrong type.

    Returns ``record`` (row position), ``field``, ``expected`` and ``got`` (the
    value as written: a string unquoted, anything else as JSON text). Only rows whose
    field decoded to null and whose text holds the field's key are read again, by
    DuckDB, which keeps a number no machine type holds (``1e400``) as written where
    Polars' JSON reading drops the whole text; ``skip`` names fields never checked.
    """
    candidates = []
    indexed = records.with_row_index("record")
    for path, dtype_at in leaf_paths(dtype):
        if dtype_at == pl.String or path in skip:
            continue
        parent, _, name = path.rpartition(".")
        missing = field_expr(path).is_null()
        if parent:
            missing &= field_expr(parent).is_not_null()
        # Most fields are present: only the texts of the records missing this one are searched.
        candidates.append(
            indexed.select("record", "raw", missing=missing)
            .filter("missing")
            .lazy()
            .filter(pl.col("raw").str.contains(f'"{name}"', literal=True))
            .select(
                "record",
                "raw",
                field=pl.lit(path),
                expected=pl.lit(TYPE_NAMES.get(dtype_at.base_type(), str(dtype_at))),
                pointer=pl.lit("/" + path.replace("~", "~0").replace("/", "~1").replace(".", "/")),
            )
        )
    found = pl.concat(pl.collect_all(candidates)) if candidates else pl.DataFrame()
    if found.is_empty():
        return pl.DataFrame(
            schema={"record": pl.UInt32, "field": pl.String, "expected": pl.String, "got": pl.String}
        )
    got = duck.json_values(_as_json_parse_reads(found["raw"], dtype), found["pointer"])
    return found.select("record", "field", "expected", got=got).filter(pl.col("got").is_not_null())


TYPE_ERROR_SCHEMA = pl.Schema(
    {"record": pl.UInt32, "field": pl.String, "expected": pl.String, "got": pl.String}
)


def structure_errors(records: pl.DataFrame, paths: Iterable[str]) -> pl.DataFrame:
    """Fields read as JSON text (``decode``'s ``json_paths``) that hold a scalar or an explicit
    null where an object or a list belongs; a key left out is no error. The frame of
    ``type_errors``, ``got`` being the value as written."""
    indexed = records.with_row_index("record")
    found = [
        indexed.filter(field_expr(path).is_not_null() & ~field_expr(path).str.contains(r"^[\[{]")).select(
            "record", field=pl.lit(path), expected=pl.lit("object_or_list"), got=field_expr(path)
        )
        for path in paths
    ]
    return pl.concat([pl.DataFrame(schema=TYPE_ERROR_SCHEMA), *found]).cast(TYPE_ERROR_SCHEMA)


def unstorable_text(records: pl.DataFrame, dtype: pl.Struct, json_paths: frozenset[str]) -> pl.DataFrame:
    """Fields whose text PostgreSQL cannot store: it holds NUL, or half of a surrogate pair
    (read as NUL, ``jsontext.lone_surrogates_as_nul``). ``record`` (row position) and
    ``field``; only the records whose text writes such an escape are looked at."""
    indexed = records.with_row_index("record").filter(
        pl.col("raw").str.contains(r"\\u(?:0000|[dD][89a-fA-F])")
    )
    found = [
        indexed.filter(_holds_nul(field_expr(path), dtype_at, path in json_paths)).select(
            "record", field=pl.lit(path)
        )
        for path, dtype_at in leaf_paths(dtype)
        if not isinstance(dtype_at, pl.Struct)
    ]
    return pl.concat([pl.DataFrame(schema={"record": pl.UInt32, "field": pl.String}), *found])


def _holds_nul(value: pl.Expr, dtype: PolarsDataType, json_text: bool = False) -> pl.Expr:
    if json_text:
        return holds_nul_escape(value).fill_null(False)
    if dtype == pl.String:
        return value.str.contains("\x00", literal=True).fill_null(False)
    if isinstance(dtype, pl.List):
        return value.list.eval(_holds_nul(pl.element(), dtype.inner)).list.any().fill_null(False)
    if isinstance(dtype, pl.Struct):
        return pl.any_horizontal(_holds_nul(value.struct.field(f.name), f.dtype) for f in dtype.fields)
    return pl.lit(False)
