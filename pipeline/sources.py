"""Input files to batches of raw records: the scan edge of the pipeline.

Every format becomes the same frame: ``source_file``, ``source_line`` (1-based;
the physical line where the record starts for JSONL and CSV, the record number
otherwise), ``raw`` (the record's text, JSON for every format) and
``parse_error`` (a reason code when the record could not even be read).
Batches hold ``batch_size`` records and never the whole file.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.errors import InputError
from pipeline.expressions import json_text

BLOCK_BYTES = 4 * 1024 * 1024
UTF8_WINDOW = 64 * 1024
LINE_SUFFIXES = {".jsonl", ".ndjson", ".jsonlines", ".json"}
RAW_SCHEMA = {
    "source_file": pl.String,
    "source_line": pl.Int64,
    "raw": pl.String,
    "parse_error": pl.String,
}


@dataclass(frozen=True)
class RawBatch:
    """One batch of raw records and how far into the inputs it reaches (for progress)."""

    frame: pl.DataFrame
    bytes_done: int


def resolve_inputs(patterns: Iterable[str]) -> list[Path]:
    """Expand globs; every pattern must name at least one readable file of a known format."""
    paths: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise InputError(f"{pattern}: no file matches this pattern", path=pattern)
        for match in matches:
            path = Path(match)
            if not path.is_file():
                raise InputError(f"{match}: no such file", path=match)
            if input_format(path) is None:
                raise InputError(
                    f"{match}: unknown input format; use .jsonl/.ndjson, .json, .csv or .parquet",
                    path=match,
                )
            paths.append(path)
    return paths


def fingerprint(path: Path) -> dict:
    """Size and SHA-256 of a file: a resumed run must read exactly the same bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(BLOCK_BYTES):
            digest.update(block)
    return {"path": str(path), "size": path.stat().st_size, "sha256": digest.hexdigest()}


def input_format(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json_array" if _first_byte(path) == b"[" else "lines"
    if suffix in LINE_SUFFIXES:
        return "lines"
    return {".csv": "csv", ".parquet": "parquet"}.get(suffix)


def scan_batches(
    paths: list[Path], batch_size: int | Callable[[], int], csv_json_columns: Iterable[str] = ()
) -> Iterator[RawBatch]:
    """All records of all files, in order, ``batch_size`` at a time.

    ``batch_size`` may be a callable, asked for the size of each batch as it is cut
    (``--batch-size auto`` changes it between batches); a batch never spans two files.
    """
    sizes = batch_size if callable(batch_size) else lambda: batch_size
    done = 0
    for path in paths:
        size = path.stat().st_size
        frames = _file_frames(path, sizes(), frozenset(csv_json_columns))
        for frame, fraction in _rebatch(frames, sizes):
            yield RawBatch(frame, done + int(size * fraction))
        done += size


def _file_frames(
    path: Path, batch_size: int, csv_json_columns: frozenset[str]
) -> Iterator[tuple[pl.DataFrame, float]]:
    fmt = input_format(path)
    try:
        if fmt == "lines":
            yield from _line_frames(path)
        elif fmt == "json_array":
            yield _json_array_frame(path), 1.0
        elif fmt == "csv":
            yield from _csv_frames(path, batch_size, csv_json_columns)
        else:
            yield from _parquet_frames(path, batch_size)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(
            f"{path}: cannot be read ({exc}); is it a valid {fmt} file?", path=str(path)
        ) from exc


def _rebatch(
    frames: Iterator[tuple[pl.DataFrame, float]], sizes: Callable[[], int]
) -> Iterator[tuple[pl.DataFrame, float]]:
    """Cut a stream of frames of any size into frames of exactly ``sizes()`` rows."""
    pending: list[pl.DataFrame] = []
    rows = 0
    fraction = 0.0
    for frame, fraction in frames:
        pending.append(frame)
        rows += frame.height
        while rows >= (batch_size := sizes()):
            merged = pl.concat(pending, rechunk=False)
            yield merged.head(batch_size), fraction
            rest = merged.slice(batch_size)
            pending, rows = [rest], rest.height
    if rows:
        yield pl.concat(pending), fraction


def _line_frames(path: Path) -> Iterator[tuple[pl.DataFrame, float]]:
    """JSONL: blocks of whole lines; a line is a record unless it is blank."""
    size = max(path.stat().st_size, 1)
    first_line, consumed, pending = 1, 0, b""
    with path.open("rb") as handle:
        while block := handle.read(BLOCK_BYTES):
            data = pending + block
            cut = data.rfind(b"\n") + 1
            pending = data[cut:]
            if cut:
                consumed += cut
                frame = _lines_to_frame(data[:cut], first_line, str(path))
                first_line += data.count(b"\n", 0, cut)
                yield frame, consumed / size
        if pending:
            yield _lines_to_frame(pending, first_line, str(path)), 1.0


def _lines_to_frame(chunk: bytes, first_line: int, source: str) -> pl.DataFrame:
    bad_lines = _invalid_utf8_lines(chunk)
    lines = pl.read_lines(_with_replacement_characters(chunk, bad_lines), name="raw").with_row_index("index")
    # A regex stops at the first non-blank character; stripping would copy every line.
    return lines.filter(~pl.col("raw").str.contains(r"^\s*$")).select(
        source_file=pl.lit(source),
        source_line=pl.col("index").cast(pl.Int64) + first_line,
        raw=pl.col("raw"),
        parse_error=pl.when(pl.col("index").is_in([line for line, _, _ in bad_lines]))
        .then(pl.lit("invalid_utf8"))
        .otherwise(pl.lit(None, pl.String)),
    )


def _invalid_utf8_lines(chunk: bytes) -> list[tuple[int, int, int]]:
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


def _json_array_frame(path: Path) -> pl.DataFrame:
    """A JSON array file: one record per element (the file is parsed whole)."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        elements = json.loads(text)
    except json.JSONDecodeError as exc:
        return _raw_frame(str(path), [1], [text], f"invalid_json: {exc}")
    if not isinstance(elements, list):
        return _raw_frame(str(path), [1], [text], "not_an_object")
    raws = [json.dumps(element, ensure_ascii=False) for element in elements]
    return _raw_frame(str(path), list(range(1, len(raws) + 1)), raws, None)


def _raw_frame(source: str, lines: list[int], raws: list[str], error: str | None) -> pl.DataFrame:
    return pl.DataFrame(
        {"source_file": source, "source_line": lines, "raw": raws, "parse_error": error},
        schema=RAW_SCHEMA,
    )


def _csv_frames(
    path: Path, batch_size: int, json_columns: frozenset[str]
) -> Iterator[tuple[pl.DataFrame, float]]:
    """CSV: each row becomes a JSON object; cells of nested or numeric fields hold JSON text."""
    lazy = pl.scan_csv(path, infer_schema=False, encoding="utf8-lossy")
    columns = lazy.collect_schema().names()
    newlines = pl.sum_horizontal(pl.col(c).fill_null("").str.count_matches("\n") for c in columns)
    next_line = 2
    size = max(path.stat().st_size, 1)
    consumed = 0
    for batch in lazy.collect_batches(chunk_size=batch_size):
        frame = batch.select(
            source_file=pl.lit(str(path)),
            source_line=next_line
            + pl.int_range(pl.len(), dtype=pl.Int64)
            + newlines.cum_sum().shift(1, fill_value=0),
            raw=_json_object(columns, json_columns),
            parse_error=pl.lit(None, pl.String),
        )
        next_line += batch.height + int(batch.select(newlines.sum()).item())
        consumed += int(frame["raw"].str.len_bytes().sum())
        yield frame, min(consumed / size, 1.0)


def _json_object(columns: list[str], json_columns: frozenset[str]) -> pl.Expr:
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


def _parquet_frames(path: Path, batch_size: int) -> Iterator[tuple[pl.DataFrame, float]]:
    lazy = pl.scan_parquet(path)
    total = max(lazy.select(pl.len()).collect().item(), 1)
    done = 0
    for batch in lazy.collect_batches(chunk_size=batch_size):
        frame = batch.select(
            source_file=pl.lit(str(path)),
            source_line=done + 1 + pl.int_range(pl.len(), dtype=pl.Int64),
            raw=pl.struct(pl.all()).struct.json_encode(),
            parse_error=pl.lit(None, pl.String),
        )
        done += batch.height
        yield frame, done / total


def _first_byte(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(64).lstrip()[:1]
