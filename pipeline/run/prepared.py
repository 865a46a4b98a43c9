"""The batches of a run up to the point where the order of the input matters: read, decoded,
validated, hashed and planned, here or as tasks on the workers of a cluster.

Everything here depends on one batch alone, so where it runs changes nothing: a batch's
records carry their (file, line) however it was cut. What depends on the order of the input
(duplicates, taken ids, near duplicates, what the server refused) is decided after, batch by
batch in input order (``pipelining``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import islice
from pathlib import Path
from time import perf_counter

import polars as pl

from pipeline.config import BatchConfig
from pipeline.datasets import get_dataset
from pipeline.datasets.base import Dataset
from pipeline.dedup.groups import group_keys
from pipeline.dedup.plan import plan_load
from pipeline.extract import RawBatch, scan_batches
from pipeline.extract.inputs import input_format
from pipeline.extract.parts import (
    Part,
    file_parts,
    part_lines,
    quotes_in,
    read_part,
    readable_in_parts,
    with_quote_states,
)
from pipeline.extract.sources import Source
from pipeline.faults import checkpoint
from pipeline.normalize.stage import add_seconds, stage_batch
from pipeline.run.autosize import START, BatchSizer
from pipeline.run.staged import StagedBatch

# The shards of a batch none of whose records is to be loaded.
NO_SHARDS = pl.DataFrame(schema={"record": pl.UInt32, "shard": pl.UInt16})
# Runs a function over argument tuples and returns the results in the order of the tuples:
# here, one after the other as they are asked for, or as tasks of a cluster (``cluster``).
OrderedMap = Callable[[Callable, Iterable[tuple]], Iterator]


@dataclass(frozen=True)
class PreparedBatch:
    """A batch ready to be decided, one ``staged`` per shard, or None for a batch a resumed
    run committed before. ``seconds`` are the stages' seconds wherever they ran."""

    number: int
    bytes_done: int
    source_file: str
    staged: tuple[StagedBatch, ...] | None
    seconds: dict[str, float] = field(default_factory=dict)


def in_order_here(function: Callable, arguments: Iterable[tuple]) -> Iterator:
    return (function(*args) for args in arguments)


def prepare_batch(
    number: int,
    work: Part | pl.DataFrame,
    dataset_name: str,
    config: BatchConfig,
    started_at: datetime,
    shards: pl.DataFrame | None = None,
) -> tuple[tuple[StagedBatch, ...], dict[str, float], int | None]:
    """Pure: a part of an input (read here) or raw records → the batch's load plan and
    rejects, one per shard (``shards``: the shard of each record to load; the rejects so far
    go with shard 0), its stages' seconds and, for a part, how many lines it holds (its
    records are numbered from its start: ``numbered_after`` puts the lines before it in)."""
    seconds: dict[str, float] = {}
    dataset = get_dataset(dataset_name)
    raw, records, rejects, lines = _staged_records(work, dataset, config, started_at, seconds)
    planning = perf_counter()
    ledger = _ledger(raw) if raw.height or not isinstance(work, Part) else _empty_ledger(work)
    if config.shards == 1:
        pieces = [records]
    else:
        assert shards is not None, "a run of several shards finds each record's shard first"
        records = records.join(shards, on="record", how="left")
        pieces = [records.filter(pl.col("shard") == s).drop("shard") for s in range(config.shards)]
    # Shard 0 also holds the records rejected so far.
    rows_in = [raw.height - sum(piece.height for piece in pieces[1:]), *(p.height for p in pieces[1:])]
    staged = tuple(
        StagedBatch(
            number,
            plan_load(piece, dataset, config),
            rejects if shard == 0 else rejects.clear(),
            rows_in[shard],
            ledger | {"rows_in": rows_in[shard]},
            shard,
        )
        for shard, piece in enumerate(pieces)
    )
    add_seconds(seconds, "plan", perf_counter() - planning)
    return staged, seconds, lines


def batch_keys(
    number: int, work: Part | pl.DataFrame, dataset_name: str, config: BatchConfig, started_at: datetime
) -> tuple[pl.DataFrame, dict[str, float]]:
    """Pure: (batch, record, key) of the records of a part or of raw records that will be
    decided (``dedup.groups.group_keys``), and the seconds it took."""
    seconds: dict[str, float] = {}
    dataset = get_dataset(dataset_name)
    began = perf_counter()
    _, records, _, _ = _staged_records(work, dataset, config, started_at, {})
    keys = group_keys(records, dataset, config).select(pl.lit(number, pl.UInt32).alias("batch"), pl.all())
    add_seconds(seconds, "group", perf_counter() - began)
    return keys, seconds


def _staged_records(
    work: Part | pl.DataFrame, dataset: Dataset, config: BatchConfig, started_at: datetime, seconds: dict
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, int | None]:
    """(raw records, records to load, rejects so far, the part's lines) of a part (read here)
    or of raw records."""
    began = perf_counter()
    json_columns = frozenset(dataset.csv_json_columns)
    raw, lines = read_part(work, json_columns) if isinstance(work, Part) else (work, None)
    add_seconds(seconds, "read", perf_counter() - began)
    checkpoint("prepare")
    records, rejects = stage_batch(raw, dataset, config, started_at, seconds)
    return raw, records, rejects, lines


def numbered_after(staged: StagedBatch, lines: int) -> StagedBatch:
    """A batch prepared from a part, its records numbered after the ``lines`` before the part."""
    line = pl.col("source_line") + lines
    plan = replace(staged.plan, records=staged.plan.records.with_columns(line))
    ledger = staged.ledger | {k: staged.ledger[k] + lines for k in ("first_line", "last_line")}
    return replace(staged, plan=plan, rejects=staged.rejects.with_columns(line), ledger=ledger)


def prepared_batches(
    files: Sequence[Source | Path],
    dataset_name: str,
    config: BatchConfig,
    started_at: datetime,
    sizer: BatchSizer,
    committed: int,
    in_order: OrderedMap = in_order_here,
    shards: dict[int, pl.DataFrame] | None = None,
) -> Generator[PreparedBatch, None, None]:
    """The run's batches in input order, the first ``committed`` of them only counted (a
    resumed run committed them before), each cut into its ``shards`` (batch number → the
    shard of each record, ``sharding.record_shards``) when given. With
    ``config.partitioning == "ranges"``, JSONL, CSV and Parquet inputs are cut into parts read
    where they are prepared; JSON arrays, and all inputs with ``"records"``, are read here,
    ``sizer.size`` records at a time."""
    work = numbered_work(files, config, sizer, in_order)
    # The lines of each file before the next part of it.
    lines_before: Counter[str] = Counter()
    skipped, skipped_parts = [], []
    for number, item, bytes_done, source_file in islice(work, committed):
        sizer.skipped(number)
        skipped.append(PreparedBatch(number, bytes_done, source_file, None))
        if isinstance(item, Part):
            skipped_parts.append(item)
    for part, lines in zip(skipped_parts, in_order(part_lines, ((p,) for p in skipped_parts)), strict=True):
        lines_before[part.path] += lines
    yield from skipped
    # Where each batch handed to ``in_order`` reaches and the seconds spent reading it here,
    # taken back as its result comes.
    reaching: deque[tuple[int, str, float]] = deque()

    def arguments() -> Iterator[tuple]:
        began = perf_counter()
        for number, item, bytes_done, source_file in work:
            reaching.append((bytes_done, source_file, perf_counter() - began))
            assigned = None if shards is None else shards.get(number, NO_SHARDS)
            yield number, item, dataset_name, config, started_at, assigned
            began = perf_counter()

    for staged, seconds, lines in in_order(prepare_batch, arguments()):
        bytes_done, source_file, reading = reaching.popleft()
        add_seconds(seconds, "read", reading)
        if lines is not None:
            staged = tuple(numbered_after(piece, lines_before[source_file]) for piece in staged)
            lines_before[source_file] += lines
        yield PreparedBatch(staged[0].number, bytes_done, source_file, staged, seconds)


def numbered_work(
    files: Sequence[Source | Path], config: BatchConfig, sizer: BatchSizer, in_order: OrderedMap
) -> Iterator[tuple[int, Part | pl.DataFrame, int, str]]:
    """(number, a part or raw records, input bytes done after it, its file) of each batch.
    A CSV's quotes are counted (by ``in_order``) before its first part is read."""
    number, done = 0, 0
    part_size = config.batch_size if isinstance(config.batch_size, int) else START
    for path in files:
        size = path.stat().st_size
        pieces: Iterator[tuple[Part | pl.DataFrame, int]]
        if config.partitioning == "ranges" and readable_in_parts(path):
            parts = file_parts(path, part_size)
            if input_format(path) == "csv":
                parts = with_quote_states(parts, in_order(quotes_in, ((part,) for part in parts)))
            sizer.note(part_size)
            pieces = ((part, part.stop * size // parts[-1].stop) for part in parts)
        else:
            json_columns = get_dataset(config.dataset).csv_json_columns
            pieces = _noted(scan_batches([path], lambda: sizer.size, json_columns), sizer)
        for item, reached in pieces:
            number += 1
            yield number, item, done + reached, str(path)
        done += size


def _noted(batches: Iterable[RawBatch], sizer: BatchSizer) -> Iterator[tuple[pl.DataFrame, int]]:
    for raw in batches:
        sizer.note(sizer.size)
        yield raw.frame, raw.bytes_done


def _empty_ledger(part: Part) -> dict:
    """A part of blank lines only: a batch of no records, recorded so that batch numbers
    stay those of the parts."""
    return {"source_file": part.path, "first_line": 1, "last_line": 1, "rows_in": 0}


def _ledger(frame: pl.DataFrame) -> dict:
    return {
        "source_file": frame["source_file"][0],
        "first_line": frame["source_line"].min(),
        "last_line": frame["source_line"].max(),
        "rows_in": frame.height,
    }
