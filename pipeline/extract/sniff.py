"""What an input holds, looked at before a run starts: a CSV's header or a Parquet file's
schema, and the keys of its first records."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import polars as pl

from pipeline.errors import InputError
from pipeline.extract.inputs import as_source, input_format
from pipeline.extract.jsonscan import top_level_keys
from pipeline.extract.readers import file_frames
from pipeline.extract.sources import Source


def input_schema(path: Source | Path) -> pl.Schema:
    """A CSV's header (as string columns) or a Parquet file's schema, read from its start."""
    source = as_source(path)
    if input_format(source) == "parquet":
        return pl.scan_parquet(source.location).collect_schema()
    with source.reading() as (handle, _):
        header = handle.readline()
    # A file without a header (empty, or blank lines) holds no records: no shape to refuse.
    if not header.strip():
        return pl.Schema()
    return pl.read_csv(header, infer_schema=False, separator=source.delimiter).schema


def record_keys(path: Source | Path, limit: int) -> frozenset[str]:
    """The top-level keys of the JSON objects among the first ``limit`` records of ``path``
    (for a CSV, the headers of its filled cells): what the file holds, before a run starts.

    A look at a thousand records, once per file: plain ``json`` is quicker here than
    starting a columnar reader. A file that cannot be read there (a CSV's reader may read
    ahead into a broken row) tells nothing: reading it, the run names where it breaks."""
    frames = file_frames(path, limit, frozenset())
    try:
        first = next(frames, None)
    except InputError:
        return frozenset()
    finally:
        frames.close()
    if first is None:
        return frozenset()
    keys: set[str] = set()
    for text in first["raw"].head(limit):
        with suppress(ValueError):
            keys.update(top_level_keys(text))
    return frozenset(keys)
