"""Inputs cut into parts that any process can read on its own: what a worker of a cluster reads.

A JSONL file is cut into newline-aligned byte ranges of about a batch each, a Parquet file
into row ranges of a batch; the part's first line number comes from a pass that counts the
newlines of each range (``count_newlines``, also one task per range), so the records of a
part carry the same (file, line) as when the file is read from its start. Other formats
(CSV, whose quoted cells may hold newlines, and JSON arrays) are read in order by the
process that runs the migration (``scan_batches``).

The cut depends on the file's bytes and the batch size only, so a resumed run cuts the same
parts again.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import polars as pl

from pipeline.errors import InputError
from pipeline.extract.inputs import input_format
from pipeline.extract.readers import END, lines_to_frame, parquet_rows_frame

# Bytes of a JSONL file looked at to tell how long its records are.
SAMPLE_BYTES = 1024 * 1024
# Bytes read at a time while looking for where a part's first line starts.
SEEK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Part:
    """Records ``start`` to ``stop`` of one file: bytes of a JSONL file (``start`` at a line's
    start, ``first_line`` its number), rows of a Parquet file (``first_line`` is ``start + 1``)."""

    path: str
    start: int
    stop: int
    first_line: int


def readable_in_parts(path: Path) -> bool:
    return input_format(path) in ("lines", "parquet")


def nominal_ranges(path: Path, batch_size: int) -> list[tuple[int, int]]:
    """A JSONL file's byte ranges of about ``batch_size`` records each, before aligning them to
    lines, or a Parquet file's row ranges of ``batch_size`` rows."""
    if input_format(path) == "parquet":
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
        return [(start, min(start + batch_size, rows)) for start in range(0, rows, batch_size)]
    size = path.stat().st_size
    with path.open("rb") as handle:
        sample = handle.read(SAMPLE_BYTES)
    # Blank lines are no records: a file of many would otherwise be cut into tiny parts.
    records = sum(1 for line in sample.splitlines() if line.strip())
    step = max(batch_size * len(sample) // max(records, 1), 1)
    return [(start, min(start + step, size)) for start in range(0, size, step)]


def count_newlines(path: str, start: int, stop: int) -> tuple[int, int]:
    """For the nominal range ``start``..``stop`` of a JSONL file: the newlines from the byte
    before ``start`` up to the byte before ``stop``, and where the range's first whole line
    starts (after the first newline from the byte before ``start``; the file's size if none)."""
    with open(path, "rb") as handle:
        before = max(start - 1, 0)
        handle.seek(before)
        newlines = handle.read(max(stop - 1 - before, 0)).count(b"\n")
        if start == 0:
            return newlines, 0
        handle.seek(before)
        position = before
        while block := handle.read(SEEK_BYTES):
            found = block.find(b"\n")
            if found >= 0:
                return newlines, position + found + 1
            position += len(block)
        return newlines, position


def file_parts(
    path: Path, batch_size: int, counts: Callable[[list[tuple[int, int]]], Iterable[tuple[int, int]]]
) -> list[Part]:
    """The parts of one file, none empty. ``counts`` runs ``count_newlines`` over the nominal
    ranges (here, or as tasks of a cluster) and returns the results in order."""
    ranges = nominal_ranges(path, batch_size)
    if input_format(path) == "parquet":
        return [Part(str(path), start, stop, start + 1) for start, stop in ranges]
    counted = list(counts(ranges))
    # The newlines before each range's first line: those of the ranges before it, and the
    # one that ends the line it starts after.
    before = [0, *accumulate(newlines for newlines, _ in counted[:-1])]
    starts = [start for _, start in counted]
    stops = [*starts[1:], path.stat().st_size]
    return [
        Part(str(path), start, stop, lines + (start > 0) + 1)
        for start, stop, lines in zip(starts, stops, before, strict=True)
        if start < stop
    ]


def read_part(part: Part) -> pl.DataFrame:
    """The raw records of one part (``readers.RAW_SCHEMA``)."""
    path = Path(part.path)
    try:
        if input_format(path) == "parquet":
            rows = pl.scan_parquet(path).slice(part.start, part.stop - part.start).collect()
            return parquet_rows_frame(rows, path, part.start)
        with path.open("rb") as handle:
            handle.seek(part.start)
            chunk = handle.read(part.stop - part.start)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})", path=str(path)) from exc
    offset = part.start
    if offset == 0 and chunk.startswith(codecs.BOM_UTF8):
        chunk, offset = chunk[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
    return lines_to_frame(chunk, part.first_line, str(path), offset).drop(END)
