"""The batches of a run, driven through its lanes so both cores stay busy.

The **main thread** takes batch N+1 read, staged and planned (``prepared``: here, or by the
workers of a cluster, in input order), hands each shard's part of it to that shard's lane
(``lane``: decided and committed there, in order, beside the other lanes) and counts the
oldest pending batch once every lane committed its part (``_Window``). Two batches may wait
for the lanes (one with ``--fail-fast`` or ``--max-errors``, so that nothing after a failing
batch loads): the lanes' ``CommitGate`` holds a commit until the batch that many before it is
counted. Timings come back as values (each prepared batch's stages, each ticket's lookup and
load seconds) and are added to the report here, by the one thread that writes it. Ctrl-C
sets a flag checked before each batch is read: the batches in hand finish, the rest are
dropped.
"""

from __future__ import annotations

import signal
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from time import perf_counter

import polars as pl
from loguru import logger

from pipeline.config import BatchConfig
from pipeline.datasets.base import Dataset
from pipeline.errors import DatabaseError, RunStopped
from pipeline.extract.sources import Source
from pipeline.faults import checkpoint
from pipeline.frames import RejectCounts
from pipeline.load.connection import Connection
from pipeline.load.ledger import committed_shards, fold_merges, record_inputs
from pipeline.run.autosize import BatchSizer, peak_rss_mb
from pipeline.run.events import emit
from pipeline.run.failfast import stop_at
from pipeline.run.lane import CommitGate, Lane, opened_lanes
from pipeline.run.prepared import OrderedMap, PreparedBatch, in_order_here, prepared_batches
from pipeline.run.progress import ProgressTask
from pipeline.run.rejects_file import RejectsFile
from pipeline.run.report import RunResult
from pipeline.run.sharding import record_shards
from pipeline.run.staged import Committed, Ticket


@dataclass(frozen=True)
class RunInputs:
    """What a run reads: its ``files``, and their fingerprints as the run started. A dry run
    writes its rejects to ``dry_rejects`` and nothing to the database."""

    files: Sequence[Source | Path]
    fingerprints: list[dict]
    dry_rejects: RejectsFile | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def run_batches(
    loader: Connection,
    dataset: Dataset,
    config: BatchConfig,
    inputs: RunInputs,
    started_at: datetime,
    result: RunResult,
    in_order: OrderedMap = in_order_here,
) -> None:
    """Read, decide and load every batch of ``inputs`` into ``result``'s run (a resumed run
    goes on after the parts its lanes committed)."""
    committed = {} if inputs.dry_rejects else committed_shards(loader, result.run_id)
    done = _fully_committed(committed, config.shards)
    # A resumed auto-sized run cuts its committed batches at their recorded sizes again.
    sizer = BatchSizer(config.batch_size, config.memory_limit_mb, [b.rows_in for b in result.batches])
    result.batch_sizes = sizer.chosen
    ahead = 2 if config.continue_on_error and config.max_errors is None else 1
    gate = CommitGate(done, ahead)
    lanes_opened = opened_lanes(loader, dataset, config, result.run_id, gate, inputs.dry_rejects)
    with _stop_on_ctrl_c() as stop, lanes_opened as lanes:
        shard_of = None
        if config.shards > 1:
            shard_of, seconds = record_shards(inputs.files, dataset.name, config, started_at, in_order, stop)
            result.add_stage_seconds(seconds)
        progress = ProgressTask("migrating", inputs.total_bytes, config.log_progress, result.run_id)
        keeper = inputs.dry_rejects or loader
        window = _Window(keeper, result, config, sizer, progress, gate)
        files = list(inputs.files)
        batches = prepared_batches(files, dataset.name, config, started_at, sizer, done, in_order, shard_of)
        try:
            on_workers = in_order is not in_order_here
            read_from = _submit_all(batches, lanes, window, committed, inputs, stop, on_workers)
            # While the last batches load, fold the merge notes committed so far: the run's
            # last fold (``migrate._finish``) is then left with theirs only.
            fold = None
            if dataset.near_duplicates and not inputs.dry_rejects:
                fold = lanes[0].read(lambda lookup: _fold_early(lookup, dataset))
            window.drain()
            if fold is not None:
                result.add_stage_seconds({"lookup": fold.result()})
        except BaseException:
            window.cancel()
            batches.close()
            raise
    for path in inputs.files:
        if str(path) not in read_from:
            logger.warning("no records in {}", path)
    progress.update(inputs.total_bytes, result.processed, result.seconds)


def _submit_all(
    batches: Iterator[PreparedBatch],
    lanes: list[Lane],
    window: _Window,
    committed: dict[int, set[int]],
    inputs: RunInputs,
    stop: threading.Event,
    on_workers: bool,
) -> set[str]:
    """Hand each batch's parts to their lanes, in input order; the files that held records."""
    read_from: set[str] = set()
    waiting = perf_counter()
    for prepared in batches:
        if stop.is_set():
            raise KeyboardInterrupt
        read_from.add(prepared.source_file)
        if prepared.staged is None:  # committed by the run before it was resumed
            waiting = perf_counter()
            continue
        waited = {"wait": perf_counter() - waiting} if on_workers else {}
        window.result.add_stage_seconds(prepared.seconds | waited)
        checkpoint("read")
        checkpoint("staged")
        # The batch's seconds count its stages, wherever they ran.
        began = perf_counter() - sum(prepared.seconds.values())
        # A resumed run loads only the shards that had not committed the batch.
        parts = [p for p in prepared.staged if p.shard not in committed.get(prepared.number, ())]
        if not window.config.continue_on_error and any(_failed_records(p.rejects) for p in parts):
            window.drain()
            failed = pl.concat([p.rejects for p in parts])
            raise stop_at(window.keeper, window.result, prepared.number, failed)
        if window.empty and not window.result.batches and isinstance(window.keeper, Connection):
            # Before any batch can commit: a resumed run is checked against them.
            record_inputs(window.keeper, window.result.run_id, inputs.fingerprints)
        window.add([lanes[part.shard].submit(part, began) for part in parts], prepared.bytes_done)
        waiting = perf_counter()
    return read_from


class _Window:
    """The batches handed to the lanes and not yet counted, oldest first, each as its lanes'
    tickets and the input bytes done after it. Counting a batch (``_count_oldest``) waits for
    its commits, adds it to ``result``, steers the batch size and moves the progress on."""

    def __init__(
        self,
        keeper: Connection | RejectsFile,
        result: RunResult,
        config: BatchConfig,
        sizer: BatchSizer,
        progress: ProgressTask,
        gate: CommitGate,
    ) -> None:
        # Where the record that stops a run is kept: the ledger, or a dry run's rejects file.
        self.keeper, self.result, self.config = keeper, result, config
        self._sizer, self._progress, self._gate = sizer, progress, gate
        self._pending: deque[tuple[list[Ticket], int]] = deque()
        self._clock = perf_counter() - result.seconds
        self._last_commit = perf_counter()

    @property
    def empty(self) -> bool:
        return not self._pending

    def add(self, tickets: list[Ticket], bytes_done: int) -> None:
        """A batch submitted; the oldest batches are counted until it may commit."""
        self._pending.append((tickets, bytes_done))
        while len(self._pending) > self._gate.ahead:
            self._count_oldest()

    def drain(self) -> None:
        while self._pending:
            self._count_oldest()

    def cancel(self) -> None:
        self._gate.close()
        for tickets, _ in self._pending:
            for ticket in tickets:
                ticket.cancel()

    def _count_oldest(self) -> None:
        tickets, bytes_done = self._pending.popleft()
        _count(self.keeper, self.result, self.config, tickets, self._clock)
        self._gate.counted(tickets[0].part.number)
        now = perf_counter()
        rows_after = _rows_in(self._pending[0][0]) if self._pending else None
        self._sizer.committed(_rows_in(tickets), rows_after, now - self._last_commit, self.result.peak_rss_mb)
        self._last_commit = now
        rejected = self.result.processed - self.result.successful
        self._progress.update(bytes_done, self.result.processed, self.result.seconds, rejected)


def _count(
    keeper: Connection | RejectsFile,
    result: RunResult,
    config: BatchConfig,
    tickets: list[Ticket],
    clock: float,
) -> None:
    """Count a batch once every lane's part of it is committed; stop at a part fail-fast
    rolled back, or past ``--max-errors``."""
    committed = [ticket.committed.result() for ticket in tickets]
    result.add_stage_seconds(
        {
            "lookup": sum(ticket.lookup_seconds() for ticket in tickets),
            "load": sum(part.seconds for part in committed),
        }
    )
    number = tickets[0].part.number
    if rolled_back := [part.outcome.rejects for part in committed if not part.outcome.committed]:
        raise stop_at(keeper, result, number, pl.concat(rolled_back))
    loaded = sum(part.outcome.loaded for part in committed)
    rows_in = _rows_in(tickets)
    for ticket, part in zip(tickets, committed, strict=True):
        _said(result.run_id, ticket, part, isinstance(keeper, RejectsFile))
    rejects = pl.concat([part.outcome.rejects for part in committed])
    result.add_batch(rows_in, loaded, rejects, perf_counter() - min(ticket.began for ticket in tickets))
    checkpoint("accounted")
    result.seconds = perf_counter() - clock
    result.peak_rss_mb = peak_rss_mb()
    logger.debug("batch {} committed: {} in, {} loaded", number, rows_in, loaded)
    if config.max_errors is not None and result.failed > config.max_errors:
        raise RunStopped(
            f"stopped after batch {number}: {result.failed} records failed, more than "
            f"--max-errors {config.max_errors}; inspect them with `pipeline rejects --run "
            f"{result.run_id}`",
            run_id=result.run_id,
            result=result,
        )


def _said(run_id: str, ticket: Ticket, part: Committed, dry: bool) -> None:
    """The event of a lane's part of a batch, committed (or decided, in a dry run)."""
    rejected = RejectCounts.of(part.outcome.rejects).records
    number, shard = ticket.part.number, ticket.part.shard
    emit(
        "batch_decided" if dry else "batch_committed",
        run_id,
        f"batch {number} (shard {shard}): {ticket.part.rows_in:,} in, {part.outcome.loaded:,} loaded",
        batch=number,
        shard=shard,
        records=ticket.part.rows_in,
        loaded=part.outcome.loaded,
        rejected=rejected,
        seconds={"lookup": round(ticket.lookup_seconds(), 3), "load": round(part.seconds, 3)},
    )


def _fully_committed(committed: dict[int, set[int]], shards: int) -> int:
    """How many batches from the first every shard committed (each commits its parts in order)."""
    done = 0
    while len(committed.get(done + 1, ())) == shards:
        done += 1
    return done


def _rows_in(tickets: list[Ticket]) -> int:
    return sum(ticket.part.rows_in for ticket in tickets)


def _failed_records(rejects: pl.DataFrame) -> int:
    return rejects.filter(pl.col("category") != "deduplication").height


def _fold_early(lookup: Connection, dataset: Dataset) -> float:
    """Fold the merge notes committed so far; the seconds it took."""
    began = perf_counter()
    try:
        fold_merges(lookup, dataset)
    except DatabaseError as exc:  # the last fold notes them all
        logger.debug("folding merge notes early failed: {}", exc)
    return perf_counter() - began


@contextmanager
def _stop_on_ctrl_c() -> Iterator[threading.Event]:
    """Ctrl-C asks the run to stop before its next batch (raised there as ``KeyboardInterrupt``):
    interrupting Polars, DuckDB or pandera mid-call would surface as their own errors. A second
    Ctrl-C stops at once. Where SIGINT is ignored (a background job) or handled by the caller,
    nothing changes."""
    stop = threading.Event()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield stop
        return

    def request(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        logger.warning("stopping after the batches in hand (Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, request)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
