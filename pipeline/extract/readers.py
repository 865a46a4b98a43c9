"""Each input format read into the same frame of raw records: the scan edge of the pipeline.

Every format becomes the same frame: ``source_file``, ``source_line`` (1-based;
the physical line where the record starts for JSONL and CSV, the record number
otherwise), ``raw`` (the record's text, JSON for every format) and
``parse_error`` (a reason code when the record could not even be read).
A file is read in blocks or batches, never whole (but a JSON array). A UTF-8 byte-order
mark at the start of a file (as Windows tools write it) is skipped. A JSONL line, CSV row or
JSON array element holding bytes that are not UTF-8 is an ``invalid_utf8`` reject, its
``raw`` showing them as U+FFFD. An input in another encoding is read as UTF-8 made of it
(``Source.reading``), its bad bytes ``invalid_encoding`` rejects.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Collection, Generator, Iterator
from pathlib import Path
from typing import Literal, TypedDict

import polars as pl

from pipeline.errors import InputError
from pipeline.expressions import json_text
from pipeline.extract.encoding import invalid_reason
from pipeline.extract.inputs import as_source, input_format
from pipeline.extract.jsonscan import array_elements
from pipeline.extract.sources import CorruptInput, Source

BLOCK_BYTES = 4 * 1024 * 1024

UTF8_WINDOW = 64 * 1024

RAW_SCHEMA = {
    "source_file": pl.String,
    "source_line": pl.Int64,
    "raw": pl.String,
    "parse_error": pl.String,
}


class CsvOptions(TypedDict):
    """Keyword arguments of Polars' CSV readers, each with the type they take."""

    infer_schema: bool
    encoding: Literal["utf8", "utf8-lossy"]


# How CSV cells are read, the whole file here or a part of it on a worker (``parts``): alike,
# or the two would disagree about a record. Bytes that are not UTF-8 are read as U+FFFD, and
# their rows made rejects (``with_invalid_utf8``).
CSV_OPTIONS: CsvOptions = {"infer_schema": False, "encoding": "utf8-lossy"}

# Each frame read from a file carries, per record, the byte offset in the file where the
# record ends (an estimate where the text is not the file's own); the batch's last one is
# how far into the file the batch reaches.
END = "_end"


def file_frames(
    path: Source | Path, batch_size: int, csv_json_columns: Collection[str]
) -> Generator[pl.DataFrame, None, None]:
    """The records of an input, frame by frame. A compressed input damaged part way ends with
    one ``corrupt_compressed_input`` reject, at the line where its data could not be decoded."""
    source = as_source(path)
    fmt = input_format(source)
    try:
        if fmt == "lines":
            yield from _line_frames(source)
        elif fmt == "json_array":
            yield _json_array_frame(source)
        elif fmt == "csv" and (source.streamed or source.remote or source.transcoded):
            yield from _streamed_csv_frames(source, csv_json_columns)
        elif fmt == "csv":
            yield from _csv_frames(source, batch_size, csv_json_columns)
        else:
            yield from _parquet_frames(source, batch_size)
    except CorruptInput as damage:
        yield corrupt_frame(source, damage)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(
            f"{source}: cannot be read ({exc}); is it a valid {fmt} file?", path=str(source)
        ) from exc


def corrupt_frame(source: Source, damage: CorruptInput) -> pl.DataFrame:
    """The one reject standing for the rest of a compressed input whose data is damaged."""
    line = damage.line
    error = (
        f"corrupt_compressed_input: {source}: its {source.compression} data is damaged or cut "
        f"short ({damage}); the records before line {line:,} were read, the rest of the file "
        "was not: copy or export the file again and load it in a new run"
    )
    return pl.DataFrame(
        {"source_file": [str(source)], "source_line": [line], "raw": [""], "parse_error": [error]},
        schema=RAW_SCHEMA,
    ).with_columns(pl.lit(source.stat().st_size, pl.Int64).alias(END))


def _line_frames(source: Source) -> Iterator[pl.DataFrame]:
    """JSONL: blocks of whole lines; a line is a record unless it is blank. A compressed or
    transcoded input's records end where the stored bytes read so far end."""
    for chunk, first_line, offset, stored in _line_chunks(source):
        frame = lines_to_frame(chunk, first_line, str(source), offset, invalid_reason(source.encoding))
        told_by_stored = source.streamed or source.transcoded
        yield frame.with_columns(pl.lit(stored, pl.Int64).alias(END)) if told_by_stored else frame


def _line_chunks(source: Source | Path) -> Iterator[tuple[bytes, int, int, int]]:
    """An input in blocks of whole lines: each block, the number of its first line, its offset
    and how many stored bytes were read for it (``CorruptInput`` tells the line it stopped on)."""
    first_line, offset, pending = 1, 0, b""
    with as_source(source).reading() as (handle, stored):
        try:
            while block := handle.read(BLOCK_BYTES):
                data = pending + block
                cut = data.rfind(b"\n") + 1
                pending = data[cut:]
                if cut:
                    yield data[:cut], first_line, offset, stored()
                    first_line += data.count(b"\n", 0, cut)
                    offset += cut
        except CorruptInput as damage:
            damage.line = first_line
            raise
        if pending:
            yield pending, first_line, offset, stored()


def lines_to_frame(
    chunk: bytes, first_line: int, source: str, offset: int, invalid: str = "invalid_utf8"
) -> pl.DataFrame:
    """The records of a chunk of whole lines that starts at byte ``offset`` of the file; a
    byte-order mark at the file's start is skipped. A line holding bytes that are not UTF-8 is
    an ``invalid`` reject (``invalid_encoding`` where they mark bytes of another encoding)."""
    if offset == 0 and chunk.startswith(codecs.BOM_UTF8):
        chunk, offset = chunk[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
    bad_lines = invalid_utf8_lines(chunk)
    lines = pl.read_lines(_with_replacement_characters(chunk, bad_lines), name="raw").with_row_index("index")
    # Where each line ends: its bytes and a newline (a bad line's U+FFFD are longer than its
    # bytes, a CRLF line's shorter: an estimate, kept inside the chunk).
    lengths = pl.col("raw").str.len_bytes().cast(pl.Int64) + 1
    ends = pl.min_horizontal(offset + lengths.cum_sum(), offset + len(chunk))
    # A regex stops at the first non-blank character; stripping would copy every line.
    return (
        lines.lazy()
        .with_columns(ends.alias(END))
        .filter(~pl.col("raw").str.contains(r"^\s*$"))
        .select(
            source_file=pl.lit(source),
            source_line=pl.col("index").cast(pl.Int64) + first_line,
            raw=pl.col("raw"),
            parse_error=pl.when(pl.col("index").is_in([line for line, _, _ in bad_lines]))
            .then(pl.lit(invalid))
            .otherwise(pl.lit(None, pl.String)),
            **{END: pl.col(END)},
        )
        .collect()
    )


def invalid_utf8_lines(chunk: bytes) -> list[tuple[int, int, int]]:
    """(index, start, end) of the lines holding invalid UTF-8: index 0-based, start and end
    byte offsets. One strict decode pass, window by window, resumed after each bad line."""
    bad: list[tuple[int, int, int]] = []
    view = memoryview(chunk)
    position, line, counted = 0, 0, 0
    while position < len(chunk):
        end = min(position + UTF8_WINDOW, len(chunk))
        try:
            # Not final before the chunk's end: a character cut by the window waits for the next.
            position += codecs.utf_8_decode(view[position:end], "strict", end == len(chunk))[1]
        except UnicodeDecodeError as exc:
            error_at = position + exc.start
            line += chunk.count(b"\n", counted, error_at)
            start = chunk.rfind(b"\n", 0, error_at) + 1
            stop = chunk.find(b"\n", error_at)
            stop = len(chunk) if stop < 0 else stop
            bad.append((line, start, stop))
            position = counted = stop
    return bad


def _with_replacement_characters(chunk: bytes, bad_lines: list[tuple[int, int, int]]) -> bytes:
    """The chunk with each invalid byte of the bad lines shown as U+FFFD, the rest untouched."""
    if not bad_lines:
        return chunk
    pieces, done = [], 0
    for _, start, stop in bad_lines:
        pieces += [chunk[done:start], chunk[start:stop].decode("utf-8", errors="replace").encode()]
        done = stop
    pieces.append(chunk[done:])
    return b"".join(pieces)


def _json_array_frame(source: Source) -> pl.DataFrame:
    """A JSON array file: one record per element, its text as written on one line (the file
    is parsed whole). In a file with bad bytes, the elements holding U+FFFD are
    ``invalid_utf8`` (``invalid_encoding``): each may hold the file's bad bytes."""
    with source.reading() as (handle, _):
        data = handle.read().removeprefix(codecs.BOM_UTF8)
    try:
        text, lossy = data.decode(), False
    except UnicodeDecodeError:
        text, lossy = data.decode(errors="replace"), True
    try:
        elements = array_elements(text)
    except ValueError as exc:
        return _raw_frame(source, [text], f"invalid_json: {exc}")
    bad = pl.lit(lossy) & pl.col("raw").str.contains("\ufffd", literal=True)
    # JSON holds a line break only between tokens, where a space means the same.
    return _raw_frame(source, elements, None).with_columns(
        raw=pl.col("raw").str.replace_all(r"[\r\n]", " "),
        parse_error=pl.when(bad).then(pl.lit(invalid_reason(source.encoding))).otherwise("parse_error"),
    )


def _raw_frame(source: Source, raws: list[str], error: str | None) -> pl.DataFrame:
    """Records numbered from 1, whose ends share out the file by their length."""
    frame = pl.DataFrame({"raw": raws}, schema={"raw": pl.String}).select(
        source_file=pl.lit(str(source)),
        source_line=pl.int_range(1, pl.len() + 1, dtype=pl.Int64),
        raw="raw",
        parse_error=pl.lit(error, pl.String),
    )
    size = source.stat().st_size
    lengths = pl.col("raw").str.len_bytes().cast(pl.Int64) + 1
    return frame.with_columns((lengths.cum_sum() * (size / lengths.sum())).cast(pl.Int64).alias(END))


def _csv_frames(source: Source, batch_size: int, json_columns: Collection[str]) -> Iterator[pl.DataFrame]:
    """A local UTF-8 CSV: each row becomes a JSON object (``csv_rows_frame``). Polars skips a
    byte-order mark before the header. A file without a header (empty or blank) holds no
    records."""
    path = Path(source.location)
    if _blank(path):
        return
    lazy = pl.scan_csv(path, separator=source.delimiter, **CSV_OPTIONS)
    next_line = 2
    offset = _header_bytes(path)
    size = path.stat().st_size
    invalid = _InvalidUtf8Lines(_line_chunks(path))
    for batch in lazy.collect_batches(chunk_size=batch_size):
        if not batch.height:
            continue
        frame, lines = csv_rows_frame(batch, str(path), next_line, offset, size, json_columns)
        frame = with_invalid_utf8(frame, next_line + lines - 1, invalid.up_to)
        next_line += lines
        offset = frame[END][-1]
        yield frame


def _blank(path: Path) -> bool:
    """Whether a file holds nothing but white space (looked at up to a block)."""
    with path.open("rb") as handle:
        start = handle.read(BLOCK_BYTES)
    return len(start) < BLOCK_BYTES and not start.removeprefix(codecs.BOM_UTF8).strip()


class _InvalidUtf8Lines:
    """The numbers of the lines holding bytes that are not UTF-8, in blocks of whole lines
    (``_line_chunks``), found as far as asked: a file is read for them only when a row needs it."""

    def __init__(self, chunks: Iterator[tuple[bytes, int, int, int]]) -> None:
        self._chunks = chunks
        self._found: list[int] = []
        self._unread = 1  # the first line not looked at yet

    def up_to(self, line: int) -> list[int]:
        while self._unread <= line and (chunk := next(self._chunks, None)):
            data, first_line, *_ = chunk
            self._found += [first_line + index for index, _, _ in invalid_utf8_lines(data)]
            self._unread = first_line + data.count(b"\n")
        return [found for found in self._found if found <= line]


def with_invalid_utf8(
    frame: pl.DataFrame,
    last_line: int,
    invalid_lines: Callable[[int], list[int]],
    reason: str = "invalid_utf8",
) -> pl.DataFrame:
    """CSV rows (``csv_rows_frame``, up to line ``last_line``) holding bytes that are not UTF-8
    made ``reason`` rejects. Polars read those bytes as U+FFFD: only a frame holding one
    asks ``invalid_lines`` (the line numbers holding such bytes, up to a line) which rows
    really do (U+FFFD may be written as itself)."""
    if frame.is_empty() or not frame["raw"].str.contains("\ufffd", literal=True).any():
        return frame
    starts = frame["source_line"]
    bad = pl.Series(invalid_lines(last_line), dtype=pl.Int64)
    row = (starts.search_sorted(bad, side="right").cast(pl.Int64) - 1).clip(0, None)
    ends = pl.concat([starts.slice(1) - 1, pl.Series([last_line])])
    held = row.filter((bad >= starts.gather(row)) & (bad <= ends.gather(row)))
    return frame.with_columns(
        parse_error=pl.when(pl.int_range(pl.len()).is_in(held.implode()))
        .then(pl.lit(reason))
        .otherwise("parse_error")
    )


def csv_rows_frame(
    rows: pl.DataFrame, source: str, first_line: int, offset: int, size: int, json_columns: Collection[str]
) -> tuple[pl.DataFrame, int]:
    """The raw records of CSV rows (string cells) that start on line ``first_line``, at byte
    ``offset`` of a file of ``size`` bytes, and how many lines they span: a row is a line and
    one more per line break in its cells. Cells of nested or numeric fields hold JSON text. A
    row's end is estimated from its cells (``_csv_row_bytes``)."""
    columns = rows.columns
    # Null cells count nothing: the sums skip them.
    counts = "_newlines"
    while counts in columns:  # a name no header takes
        counts = f"_{counts}"
    counted = rows.with_columns(
        pl.sum_horizontal(pl.col(c).str.count_matches("\n", literal=True) for c in columns).alias(counts)
    )
    frame = counted.select(
        source_file=pl.lit(source),
        source_line=first_line
        + pl.int_range(pl.len(), dtype=pl.Int64)
        + pl.col(counts).cum_sum().shift(1, fill_value=0),
        raw=_json_object(columns, json_columns),
        parse_error=pl.lit(None, pl.String),
        **{END: pl.min_horizontal(offset + _csv_row_bytes(columns, pl.col(counts)).cum_sum(), size)},
    )
    return frame, rows.height + int(counted[counts].sum())


def _csv_row_bytes(columns: list[str], newlines: pl.Expr) -> pl.Expr:
    """About the bytes of a row in the file: its cells, a separator or newline after each,
    for a cell holding quotes its two quotes and the doubled ones, and the two quotes of the
    cell holding the row's line breaks. (A cell quoted for a separator alone is missed.)"""
    quotes = [pl.col(c).str.count_matches('"', literal=True) for c in columns]
    return (
        pl.sum_horizontal(pl.col(c).str.len_bytes() for c in columns).cast(pl.Int64)
        + len(columns)
        + pl.sum_horizontal(q + 2 * (q > 0) for q in quotes)
        + 2 * (newlines > 0)
    )


def _header_bytes(path: Path) -> int:
    with path.open("rb") as handle:
        return len(handle.readline())


def _json_object(columns: list[str], json_columns: Collection[str]) -> pl.Expr:
    """A JSON object text from string columns; empty cells are left out of the object."""
    members = []
    for name in columns:
        key = json.dumps(name, ensure_ascii=False)
        cell = pl.col(name)
        quoted = json_text(cell)
        value = (
            pl.when(cell.str.json_path_match("$").is_not_null())
            .then(cell.str.replace_all(r"[\r\n]", " "))
            .otherwise(quoted)
            if name in json_columns
            else quoted
        )
        members.append(pl.when(cell.is_not_null() & (cell != "")).then(pl.lit(key + ":") + value))
    return pl.lit("{") + pl.concat_str(members, separator=",", ignore_nulls=True) + pl.lit("}")


def _streamed_csv_frames(source: Source, json_columns: Collection[str]) -> Iterator[pl.DataFrame]:
    """A CSV read in order as a stream (compressed, or in a store): blocks of whole lines cut
    where a row ends (a line break after an even count of quotes), each read after the header
    (``csv_text_frame``)."""
    header, carry, next_line, start, size = b"", b"", 2, 0, source.stat().st_size
    try:
        for chunk, _, _, stored in _line_chunks(source):
            if not header:
                header, chunk = chunk[: chunk.find(b"\n") + 1] or chunk, chunk[chunk.find(b"\n") + 1 :]
                start = len(header)
            data = carry + chunk
            cut = _last_row_end(data)
            body, carry = data[:cut], data[cut:]
            frame, lines = csv_text_frame(header, body, next_line, start, size, source, json_columns)
            next_line, start = next_line + lines, start + len(body)
            yield frame.with_columns(pl.lit(stored, pl.Int64).alias(END)) if source.streamed else frame
    except CorruptInput as damage:
        damage.line = next_line
        raise
    if carry:
        yield csv_text_frame(header, carry, next_line, start, size, source, json_columns)[0]


def _last_row_end(data: bytes) -> int:
    """Where the last row that ends in ``data`` (which starts a row) ends: after a line break
    that an even count of quotes precedes."""
    cut = len(data)
    while (cut := data.rfind(b"\n", 0, cut)) >= 0 and data.count(b'"', 0, cut) % 2:
        pass
    return cut + 1


def csv_text_frame(
    header: bytes,
    body: bytes,
    first_line: int,
    start: int,
    size: int,
    source: Source,
    json_columns: Collection[str],
) -> tuple[pl.DataFrame, int]:
    """The raw records of CSV rows ``body`` (whole rows in UTF-8, starting on line
    ``first_line`` at byte ``start``) read under ``header``, and how many lines they span."""
    if not (header + body).removeprefix(codecs.BOM_UTF8).strip():
        return pl.DataFrame(schema={**RAW_SCHEMA, END: pl.Int64}), body.count(b"\n")
    rows = pl.read_csv(header + body, separator=source.delimiter, **CSV_OPTIONS)
    frame, lines = csv_rows_frame(rows, str(source), first_line, start, size, json_columns)
    frame = with_invalid_utf8(
        frame,
        first_line + lines - 1,
        lambda _: [first_line + index for index, _, _ in invalid_utf8_lines(body)],
        invalid_reason(source.encoding),
    )
    return frame, lines


def _parquet_frames(source: Source, batch_size: int) -> Iterator[pl.DataFrame]:
    """Parquet: a row's end shares out the file by rows (its bytes are compressed by column).
    Polars reads an object in a store itself, from the same environment as fsspec."""
    lazy = pl.scan_parquet(source.location)
    total = max(lazy.select(pl.len()).collect().item(), 1)
    size = source.stat().st_size
    done = 0
    for batch in lazy.collect_batches(chunk_size=batch_size):
        frame = parquet_rows_frame(batch, source, done)
        done += batch.height
        yield frame.with_columns((pl.col("source_line") * (size / total)).cast(pl.Int64).alias(END))


def parquet_rows_frame(rows: pl.DataFrame, path: Source | Path, done: int) -> pl.DataFrame:
    """The raw records of Parquet rows that follow ``done`` rows of the file."""
    return rows.select(
        source_file=pl.lit(str(path)),
        source_line=done + 1 + pl.int_range(pl.len(), dtype=pl.Int64),
        raw=pl.struct(pl.all()).struct.json_encode(),
        parse_error=pl.lit(None, pl.String),
    )
