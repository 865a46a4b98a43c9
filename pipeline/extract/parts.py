"""Inputs cut into parts that any process can read on its own: what a worker of a cluster reads.

A plain JSONL or CSV file (local, or an object in a store, read by range) is cut into byte
ranges of about a batch each; a part holds the lines
(rows) that start in its range, so the parts of a file hold each record once, whoever reads
them. A CSV row starts after a line break outside quoted cells, and whether a byte is inside
one is told by the count of quotes before it (a doubled quote in a cell counts twice, and
Polars reads every quote so): the quotes of each range are counted first, anywhere
(``quotes_in``), and each part is told whether its ends fall inside a cell
(``with_quote_states``). A Parquet file is cut into row ranges of at most a batch that end
where its row groups end. JSON arrays and compressed files (which cannot be cut) are read in
order by the process that runs the migration (``scan_batches``). So is a file in an encoding
that may hold a line break's byte inside a character (UTF-16); one that keeps a line break
and a quote their one ASCII byte each (cp1252, latin-1: ``encoding.cuttable``) is cut as
UTF-8 is, each part made UTF-8 where it is read.

A part's records are numbered from its own start (its first line or row is 1), with the
count of lines or rows it holds: the process that takes the parts in order adds to each the
lines of the parts before it, so records carry the same (file, line) as when the file is read
from its start, and no pass over the file is needed first (but the count of a CSV's quotes).

The cut depends on the file's first bytes (a Parquet file's footer) and the batch size only,
so a resumed run cuts the same parts again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.extract.encoding import invalid_reason, to_utf8
from pipeline.extract.inputs import as_source, input_format
from pipeline.extract.readers import END, csv_text_frame, lines_to_frame, parquet_rows_frame
from pipeline.extract.sources import Source

# Bytes of a JSONL file looked at to tell how long its records are.
SAMPLE_BYTES = 1024 * 1024
# Bytes read at a time while looking for where a part's first line starts.
SEEK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Part:
    """Lines (rows) starting in bytes ``start`` to ``stop`` of a JSONL (CSV) file, or rows
    ``start`` to ``stop`` of a Parquet file. ``quoted``: whether a CSV's ``start`` and
    ``stop`` fall inside a quoted cell. A worker opens the source itself (an object in a
    store with its own client)."""

    source: Source
    start: int
    stop: int
    quoted: tuple[bool, bool] = (False, False)

    def __post_init__(self) -> None:
        # A local file may be named by its path (a str).
        object.__setattr__(self, "source", as_source(self.source))

    @property
    def path(self) -> str:
        """The input's name, as its records carry it."""
        return str(self.source)


def readable_in_parts(path: Source | Path) -> bool:
    """Whether an input can be cut: not a JSON array, nor a compressed file."""
    return input_format(path) in ("lines", "csv", "parquet") and not as_source(path).streamed


def file_parts(path: Source | Path, batch_size: int) -> list[Part]:
    """A JSONL or CSV file's byte ranges of about ``batch_size`` records each (a CSV's need
    ``with_quote_states``), or a Parquet file's row ranges (``_row_group_ranges``)."""
    source = as_source(path)
    if input_format(source) == "parquet":
        return [Part(source, start, stop) for start, stop in _row_group_ranges(source, batch_size)]
    size = source.stat().st_size
    with source.open_stored() as handle:
        sample = handle.read(SAMPLE_BYTES)
    # Blank lines are no records: a file of many would otherwise be cut into tiny parts.
    records = sum(1 for line in sample.splitlines() if line.strip())
    step = max(batch_size * len(sample) // max(records, 1), 1)
    return [Part(source, start, min(start + step, size)) for start in range(0, size, step)]


def _row_group_ranges(path: Source, batch_size: int) -> list[tuple[int, int]]:
    """Row ranges of at most ``batch_size`` rows that end where the file's row groups end, so
    that no two parts decode one group; a group of more rows is cut into ranges of a batch."""
    try:
        with path.open_stored() as handle:
            groups = pq.ParquetFile(handle).metadata
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"{path}: cannot be read ({exc}); is it a valid parquet file?", path=str(path)
        ) from exc
    ranges, start, end = [], 0, 0
    for group in range(groups.num_row_groups):
        group_start, end = end, end + groups.row_group(group).num_rows
        if end - start > batch_size and group_start > start:
            ranges.append((start, group_start))
            start = group_start
        while end - start > batch_size:
            ranges.append((start, start + batch_size))
            start += batch_size
    if end > start:
        ranges.append((start, end))
    return ranges


def quotes_in(part: Part) -> int:
    """How many quotes the bytes of a part's range hold."""
    try:
        with part.source.open_stored() as handle:
            handle.seek(part.start)
            return handle.read(part.stop - part.start).count(b'"')
    except OSError as exc:
        raise InputError(f"{part.path}: cannot be read ({exc})", path=part.path) from exc


def with_quote_states(parts: list[Part], quote_counts: Iterable[int]) -> list[Part]:
    """A CSV's parts told whether their ends fall inside a quoted cell, from the quotes each
    range holds (``quotes_in``): an odd count of quotes before a byte puts it inside one."""
    told, quoted = [], False
    for part, count in zip(parts, quote_counts, strict=True):
        after = quoted ^ bool(count % 2)
        told.append(replace(part, quoted=(quoted, after)))
        quoted = after
    return told


def read_part(part: Part, csv_json_columns: Collection[str] = frozenset()) -> tuple[pl.DataFrame, int]:
    """The raw records of one part (``readers.RAW_SCHEMA``), numbered from the part's first
    line or row, and how many lines (or rows) the part holds, blank ones included (a CSV's
    as its file is read whole: a line per row and per line break in its cells)."""
    path = part.source
    try:
        fmt = input_format(path)
        if fmt == "parquet":
            rows = pl.scan_parquet(path.location).slice(part.start, part.stop - part.start).collect()
            return parquet_rows_frame(rows, path, 0), rows.height
        if fmt == "csv":
            return _csv_part(part, csv_json_columns)
        offset, chunk = _part_bytes(part, quotes=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        # A Parquet part is a range of rows, others of bytes.
        unit = "rows" if fmt == "parquet" else "bytes"
        where = f"{unit} {part.start:,}-{part.stop:,}"
        raise InputError(f"{path}: cannot be read at {where} ({exc})", path=str(path)) from exc
    frame = lines_to_frame(to_utf8(chunk, path.encoding), 1, str(path), offset, invalid_reason(path.encoding))
    return frame.drop(END), chunk.count(b"\n")


def part_lines(part: Part) -> int:
    """How many lines (or rows) a part holds, without reading its records: what a resumed
    run needs of the parts it committed before (a CSV's rows are read for it)."""
    fmt = input_format(part.source)
    if fmt == "parquet":
        return part.stop - part.start
    if fmt == "csv":
        return read_part(part)[1]
    return _part_bytes(part, quotes=False)[1].count(b"\n")


def _csv_part(part: Part, json_columns: Collection[str]) -> tuple[pl.DataFrame, int]:
    """A CSV part's rows, read after the file's header; the first part holds the header's line."""
    size = part.source.stat().st_size
    with part.source.open_stored() as handle:
        header_end = _record_start(handle, 1, handle.read(1) == b'"') if size else 0
        handle.seek(0)
        header = handle.read(header_end)
    start, body = _part_bytes(part, quotes=True)
    first_line = 1
    if start < header_end:
        body, start, first_line = body[header_end - start :], header_end, 2
    encoding = part.source.encoding
    header, body = to_utf8(header, encoding), to_utf8(body, encoding)
    frame, lines = csv_text_frame(header, body, first_line, start, size, part.source, json_columns)
    return frame.drop(END), lines + first_line - 1


def _part_bytes(part: Part, quotes: bool) -> tuple[int, bytes]:
    """Where the part's first record starts, and the bytes of the records that start in it."""
    size = part.source.stat().st_size
    with part.source.open_stored() as handle:
        start_quoted, stop_quoted = part.quoted if quotes else (None, None)
        start = _record_start(handle, part.start, start_quoted)
        stop = size if part.stop >= size else _record_start(handle, part.stop, stop_quoted)
        handle.seek(start)
        return start, handle.read(max(stop - start, 0))


def _record_start(handle: IO[bytes], position: int, quoted: bool | None) -> int:
    """Where the first record starting at or after ``position`` begins: ``position`` itself at
    the file's start or right after a line break, else after the next line break (the end of
    the file if there is none). In a CSV (``quoted`` not None: whether ``position`` is inside
    a quoted cell) a line break inside a quoted cell ends no record."""
    if position == 0:
        return 0
    handle.seek(position - 1)
    if handle.read(1) == b"\n" and not quoted:
        return position
    offset = position
    while block := handle.read(SEEK_BYTES):
        found, quoted = _first_break(block, quoted)
        if found >= 0:
            return offset + found + 1
        offset += len(block)
    return offset


def _first_break(block: bytes, quoted: bool | None) -> tuple[int, bool | None]:
    """Where the block's first line break outside quoted cells is (-1: none), and whether the
    block ends inside a quoted cell. ``quoted`` None: quotes do not count (JSONL)."""
    newline = block.find(b"\n")
    if quoted is None:
        return newline, None
    at = 0
    while True:
        quote = block.find(b'"', at)
        if not quoted:
            if 0 <= newline < at:
                newline = block.find(b"\n", at)
            if newline >= 0 and (quote < 0 or newline < quote):
                return newline, False
        if quote < 0:
            return -1, quoted
        quoted, at = not quoted, quote + 1
