"""Inputs cut into parts that any process can read on its own: what a worker of a cluster reads.

A JSONL file is cut into byte ranges of about a batch each; a part holds the lines that
start in its range, so the parts of a file hold each line once, whoever reads them. A Parquet
file is cut into row ranges of a batch. Other formats (CSV, whose quoted cells may hold
newlines, and JSON arrays) are read in order by the process that runs the migration
(``scan_batches``).

A part's records are numbered from its own start (its first line or row is 1), with the
count of lines or rows it holds: the process that takes the parts in order adds to each the
lines of the parts before it, so records carry the same (file, line) as when the file is read
from its start, and no pass over the file is needed first.

The cut depends on the file's first bytes and the batch size only, so a resumed run cuts the
same parts again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
    """Lines starting in bytes ``start`` to ``stop`` of a JSONL file, or rows ``start`` to
    ``stop`` of a Parquet file."""

    path: str
    start: int
    stop: int


def readable_in_parts(path: Path) -> bool:
    return input_format(path) in ("lines", "parquet")


def file_parts(path: Path, batch_size: int) -> list[Part]:
    """A JSONL file's byte ranges of about ``batch_size`` records each, or a Parquet file's
    row ranges of ``batch_size`` rows."""
    if input_format(path) == "parquet":
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
        return [Part(str(path), start, min(start + batch_size, rows)) for start in range(0, rows, batch_size)]
    size = path.stat().st_size
    with path.open("rb") as handle:
        sample = handle.read(SAMPLE_BYTES)
    # Blank lines are no records: a file of many would otherwise be cut into tiny parts.
    records = sum(1 for line in sample.splitlines() if line.strip())
    step = max(batch_size * len(sample) // max(records, 1), 1)
    return [Part(str(path), start, min(start + step, size)) for start in range(0, size, step)]


def read_part(part: Part) -> tuple[pl.DataFrame, int]:
    """The raw records of one part (``readers.RAW_SCHEMA``), numbered from the part's first
    line or row, and how many lines (or rows) the part holds, blank ones included."""
    path = Path(part.path)
    try:
        if input_format(path) == "parquet":
            rows = pl.scan_parquet(path).slice(part.start, part.stop - part.start).collect()
            return parquet_rows_frame(rows, path, 0), rows.height
        offset, chunk = _part_bytes(part)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})", path=str(path)) from exc
    return lines_to_frame(chunk, 1, str(path), offset).drop(END), chunk.count(b"\n")


def part_lines(part: Part) -> int:
    """How many lines (or rows) a part holds, without reading its records: what a resumed
    run needs of the parts it committed before."""
    if input_format(Path(part.path)) == "parquet":
        return part.stop - part.start
    return _part_bytes(part)[1].count(b"\n")


def _part_bytes(part: Part) -> tuple[int, bytes]:
    """Where the part's first line starts, and the bytes of the lines that start in it."""
    with open(part.path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        start = _line_start(handle, part.start)
        stop = size if part.stop >= size else _line_start(handle, part.stop)
        handle.seek(start)
        return start, handle.read(max(stop - start, 0))


def _line_start(handle: BinaryIO, position: int) -> int:
    """Where the first line starting at or after ``position`` begins: ``position`` itself at
    the file's start or right after a newline, else after the next newline (the end of the
    file if there is none)."""
    if position == 0:
        return 0
    handle.seek(position - 1)
    offset = position - 1
    while block := handle.read(SEEK_BYTES):
        found = block.find(b"\n")
        if found >= 0:
            return offset + found + 1
        offset += len(block)
    return offset
