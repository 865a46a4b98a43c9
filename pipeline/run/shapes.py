"""Inputs of a shape no record of which can load, whatever its values: refused before a run.

A CSV's header or a Parquet file's schema is known before any record is read. When it lacks
what every record needs (``SHAPES``), or a Parquet column holds a type that no value of can
take the dataset's type (text for an integer field), every record would be rejected alike:
the file is refused in one line instead. JSON records carry no shared header: their fields are
judged record by record. CSV cells are all text (an integer field holds JSON text there), so
only a CSV's header is judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl
from polars.datatypes import DataTypeClass

from pipeline.datasets.base import Dataset
from pipeline.errors import InputError
from pipeline.extract import input_format
from pipeline.extract.inputs import as_source
from pipeline.extract.sniff import input_schema
from pipeline.extract.sources import Source

# The shapes of a dataset's records, by name: each a list of groups of fields; a file can hold
# a record that loads when, for one shape, it has a field of every group. A memory in its
# current shape needs all five; a legacy one (neither participants nor sourceMessageIds) takes
# its text from content, messages or summary. A chat message needs its date, its direction and
# a text or an attachment.
SHAPES: dict[str, dict[str, tuple[tuple[str, ...], ...]]] = {
    "memories": {
        "current": (("id",), ("summary",), ("confidence",), ("participants",), ("sourceMessageIds",)),
        "legacy": (("content", "messages", "summary"),),
    },
    "messages": {"export": (("Message Date",), ("Type",), ("Text", "Attachment"))},
}

TYPE_NAMES = {pl.List: "a list", pl.Struct: "an object", pl.Boolean: "a boolean"}


def refuse_misshapen_inputs(files: Sequence[Source | Path], dataset: Dataset) -> None:
    """Refuse, before anything is written, a CSV or Parquet file no record of which can load."""
    for path in files:
        fmt = input_format(path)
        if fmt not in ("csv", "parquet"):
            continue
        schema = _schema(path, fmt)
        if not schema:  # no header: no records, said when the file is read
            continue
        _refuse_missing_fields(path, fmt, list(schema), dataset)
        if fmt == "parquet":
            _refuse_mistyped_columns(path, schema, dataset)


def _schema(path: Source | Path, fmt: str) -> pl.Schema:
    try:
        return input_schema(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(
            f"{path}: cannot be read ({exc}); is it a valid {fmt} file?", path=str(path)
        ) from exc


def _refuse_missing_fields(path: Source | Path, fmt: str, columns: list[str], dataset: Dataset) -> None:
    shapes = SHAPES.get(dataset.name, {})
    if not shapes or any(all(set(group) & set(columns) for group in shape) for shape in shapes.values()):
        return
    needs = "; or ".join(
        f"{name}: " + ", ".join(" or ".join(group) for group in shape) for name, shape in shapes.items()
    )
    shown = ", ".join(columns[:10]) + (", …" if len(columns) > 10 else "")
    has = f"its header ({shown}) lacks" if fmt == "csv" else f"its columns ({shown}) lack"
    raise InputError(
        f"{path}: no {dataset.name} record can load from it: {has} what every record needs "
        f"({needs}); rename the columns, or check --dataset",
        path=str(path),
    )


def _refuse_mistyped_columns(path: Source | Path, schema: pl.Schema, dataset: Dataset) -> None:
    wanted = dataset.input_dtype.to_schema()
    for name, dtype in schema.items():
        target = wanted.get(name)
        if target is None or _can_hold(dtype, target) or not _has_values(path, name):
            continue
        needed = "an integer" if target.is_integer() else TYPE_NAMES.get(target.base_type(), str(target))
        held = "text (String)" if dtype == pl.String else str(dtype)
        raise InputError(
            f"{path}: column {name} holds {held}, but {dataset.name} reads {name} as {needed}: "
            f"no record of it can load; write the column as {needed} (e.g. cast it) and run again",
            path=str(path),
        )


def _can_hold(source: pl.DataType, target: pl.DataType | DataTypeClass) -> bool:
    """Whether some value of a Parquet column of type ``source`` can load as ``target``:
    any value reads as text; integral floats read as integers."""
    if target == pl.String or source == pl.Null:
        return True
    if target.is_integer():
        return source.is_numeric()
    if isinstance(target, pl.List):
        return isinstance(source, pl.List | pl.Array)
    return source.base_type() == target.base_type()


def _has_values(path: Source | Path, column: str) -> bool:
    """Whether the column holds a value at all: a null loads whatever the column's type."""
    held = pl.scan_parquet(as_source(path).location).select(pl.col(column).is_not_null().any())
    return bool(held.collect().item())
