"""Input files to batches of raw records, in order, never the whole file at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.extract.readers import END, file_frames
from pipeline.extract.sources import Source


@dataclass(frozen=True)
class RawBatch:
    """One batch of raw records and how far into the inputs it reaches (for progress).

    ``bytes_done`` counts the input bytes of the records read so far, over all files: it
    grows with the records and equals the sum of the file sizes after a file's last batch.
    """

    frame: pl.DataFrame
    bytes_done: int


def scan_batches(
    paths: Sequence[Source | Path], batch_size: int | Callable[[], int], csv_json_columns: Iterable[str] = ()
) -> Iterator[RawBatch]:
    """All records of all files, in order, ``batch_size`` at a time.

    ``batch_size`` may be a callable, asked for the size of each batch as it is cut
    (``--batch-size auto`` changes it between batches); a batch never spans two files.
    """
    sizes = batch_size if callable(batch_size) else lambda: batch_size
    done = 0
    for path in paths:
        size = path.stat().st_size
        frames = _ending_at(_within(file_frames(path, sizes(), frozenset(csv_json_columns)), size), size)
        for frame in _rebatch(frames, sizes):
            yield RawBatch(frame.drop(END), done + frame[END][-1])
        done += size


def _within(frames: Iterator[pl.DataFrame], size: int) -> Iterator[pl.DataFrame]:
    """The records that end within the file's first ``size`` bytes: a file that grows while it
    is read is read as it was when its reading began (what ends past it was written after)."""
    for frame in frames:
        within = frame.filter(pl.col(END) <= size)
        yield within
        if within.height < frame.height:
            return


def _ending_at(frames: Iterator[pl.DataFrame], size: int) -> Iterator[pl.DataFrame]:
    """The frames holding records, the file's last record ending at ``size``: the bytes after
    it (blank lines, a last newline) and any shortfall of an estimate belong to it."""
    held = None
    for frame in frames:
        if frame.height:
            if held is not None:
                yield held
            held = frame
    if held is not None:
        last = pl.int_range(pl.len()) == pl.len() - 1
        yield held.with_columns(pl.when(last).then(size).otherwise(pl.col(END)).alias(END))


def _rebatch(frames: Iterator[pl.DataFrame], sizes: Callable[[], int]) -> Iterator[pl.DataFrame]:
    """Cut a stream of frames of any size into frames of exactly ``sizes()`` rows."""
    pending: list[pl.DataFrame] = []
    rows = 0
    for frame in frames:
        pending.append(frame)
        rows += frame.height
        while rows >= (batch_size := sizes()):
            merged = pl.concat(pending, rechunk=False)
            yield merged.head(batch_size)
            rest = merged.slice(batch_size)
            pending, rows = [rest], rest.height
    if rows:
        yield pl.concat(pending)
