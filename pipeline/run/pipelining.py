"""The batches of a run, pipelined over threads so both cores stay busy.

Thread protocol (one run; nothing here is shared with another run). A run has one shard
unless ``--shards S`` groups its records first (``sharding``); each shard has its own
lookup and loader threads and connections, and decides and loads its part of every batch in
input order, beside the other shards:

- The **main thread** takes batch N+1 read, staged and planned (``prepared``: here, or by
  the workers of a cluster, in input order), submits each shard's part's decision to that
  shard's lookup thread and its load to that shard's loader thread, then accounts the
  oldest pending batch (waits for all its parts' load futures).
- A **lookup thread** (its shard's ``lookup`` connection; the first also reads the
  ``known`` keys of the stored rows, while the main thread prepares the first batches)
  decides its part of batch N+1 against what is stored: it reads the stored keys and
  near-duplicate candidates, takes the records its part of batch N keeps as stored as soon
  as that part is decided, and, once it committed, decides again without any record its
  COPY refused. It adds its part of batch N's loaded rows to the ``known`` keys (shared by
  the shards, locked), and it writes its shard's ``stages``.
- A **loader thread** (the first shard's is the run's own connection) loads one part at a
  time in one transaction, waiting first for that part's decision future; it retries
  transient failures (``retry``).
- ``stages`` (the timings dict of the report) is written by the main thread for read,
  parse, validate, plan and group (summed over the workers on a cluster, with ``wait``: the
  main thread's time waiting for them); each shard's lookup seconds are added to it once its
  threads are done; ``load`` is added by the main thread when it accounts a batch. Each key
  has one writer at a time.
- At most two batches wait for the loaders (one with ``--fail-fast`` or ``--max-errors``,
  so that nothing after a failing batch loads). Ctrl-C sets a flag checked before each
  batch is read: batches already submitted finish, the rest are cancelled.
"""

from __future__ import annotations

import signal
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from time import perf_counter

import polars as pl
from loguru import logger

from pipeline.config import BatchConfig
from pipeline.datasets.base import Dataset
from pipeline.dedup.decide import Decision, decide_against
from pipeline.dedup.known import KnownKeys
from pipeline.dedup.plan import LoadPlan, cited_by, loaded_records
from pipeline.errors import DatabaseError, RunStopped
from pipeline.faults import checkpoint
from pipeline.load.connection import Connection, connected
from pipeline.load.ledger import committed_shards, fold_merges, record_inputs
from pipeline.load.lookups import known_keys, stored_rows
from pipeline.normalize.stage import add_seconds
from pipeline.run.autosize import BatchSizer, peak_rss_mb
from pipeline.run.failfast import stop_at
from pipeline.run.prepared import OrderedMap, in_order_here, prepared_batches
from pipeline.run.progress import ProgressTask
from pipeline.run.report import RunResult
from pipeline.run.retry import load_with_retry
from pipeline.run.sharding import record_shards
from pipeline.run.staged import InFlight, StagedBatch


def run_batches(
    loader, dataset, config, files, started_at, result, fingerprints, in_order: OrderedMap = in_order_here
) -> None:
    clock = perf_counter() - result.seconds
    committed = committed_shards(loader, result.run_id)
    done = _fully_committed(committed, config.shards)
    total_bytes = sum(f.stat().st_size for f in files)
    # A resumed auto-sized run cuts its committed batches at their recorded sizes again.
    sizer = BatchSizer(config.batch_size, config.memory_limit_mb, [b.rows_in for b in result.batches])
    result.batch_sizes = sizer.chosen
    stages = result.stage_seconds
    with (
        _stop_on_ctrl_c() as stop,
        _opened_shards(loader, config.shards, stages) as shards,
    ):
        first = shards[0]
        # Read by the first lookup thread before its first lookup, while the first batches are
        # prepared: a million stored rows take it two seconds.
        known = first.looker.submit(known_keys, first.lookup, dataset)
        # The shard of each record, found in a first pass over the input.
        shard_of = (
            record_shards(files, dataset.name, config, started_at, in_order, stages, stop)
            if config.shards > 1
            else None
        )
        # Progress counts the batches committed: their records, and the input bytes they reach.
        progress = ProgressTask("migrating", total_bytes, config.log_progress)
        # Batches submitted to the loaders and not yet accounted, each as its shards' parts.
        # Two may wait, so that the next batch is read, validated and looked up while the
        # loaders copy; a run that stops at the first failure (fail-fast, --max-errors) keeps
        # one, so that no batch after the failing one is loaded.
        pending: deque[list[InFlight]] = deque()
        reaching: deque[int] = deque()  # the input bytes done after each pending batch
        depth = 2 if config.continue_on_error and config.max_errors is None else 1
        batches = prepared_batches(files, dataset.name, config, started_at, sizer, done, in_order, shard_of)
        last_commit = waiting = perf_counter()

        def account_oldest(rows_next: int | None) -> None:
            """Wait for the oldest pending batch and count it; ``rows_next``: the records of the
            batch about to be submitted, when none is pending after it."""
            nonlocal last_commit
            oldest = pending.popleft()
            _account(loader, result, config, oldest, clock)
            now = perf_counter()
            rows_after = _rows_in(pending[0]) if pending else rows_next
            sizer.committed(_rows_in(oldest), rows_after, now - last_commit, result.peak_rss_mb)
            last_commit = now
            progress.update(reaching.popleft(), result.processed, result.seconds)

        read_from: set[str] = set()
        try:
            for prepared in batches:
                if stop.is_set():
                    raise KeyboardInterrupt
                read_from.add(prepared.source_file)
                if prepared.staged is None:
                    waiting = perf_counter()
                    continue
                waited = perf_counter() - waiting
                for stage, seconds in prepared.seconds.items():
                    add_seconds(stages, stage, seconds)
                if in_order is not in_order_here:
                    add_seconds(stages, "wait", waited)
                checkpoint("read")
                checkpoint("staged")
                # The batch's seconds count its stages, wherever they ran.
                began = perf_counter() - sum(prepared.seconds.values())
                number = prepared.number
                # A resumed run loads only the shards that had not committed the batch.
                parts = [p for p in prepared.staged if p.shard not in committed.get(number, ())]
                decisions = [shards[part.shard].decide(known, dataset, part, config) for part in parts]
                rows_in = sum(part.rows_in for part in parts)
                if not config.continue_on_error and any(_failed_records(part.rejects) for part in parts):
                    while pending:
                        account_oldest(rows_in)
                    raise stop_at(loader, result, number, pl.concat([part.rejects for part in parts]))
                while len(pending) >= depth:
                    account_oldest(rows_in)
                if not pending and not result.batches:
                    # Before any batch can commit: a resumed run is checked against them.
                    record_inputs(loader, result.run_id, fingerprints.result())
                pending.append(
                    [
                        shards[part.shard].load(known, dataset, result.run_id, part, config, began, decision)
                        for part, decision in zip(parts, decisions, strict=True)
                    ]
                )
                reaching.append(prepared.bytes_done)
                waiting = perf_counter()
            if dataset.near_duplicates:
                # While the last batches load, fold the merge notes committed so far: the
                # run's last fold (``_finish``) is then left with theirs only.
                first.looker.submit(_fold_early, first.lookup, dataset, first.stages)
            while pending:
                account_oldest(None)
            for path in files:
                if str(path) not in read_from:
                    logger.warning("no records in {}", path)
        except BaseException:
            # Batches not started yet are not loaded; one already loading finishes (and a
            # resume counts it from the ledger).
            for in_flight in pending:
                for part in in_flight:
                    part.loading.cancel()
            batches.close()
            raise
        progress.update(total_bytes, result.processed, result.seconds)


@dataclass
class _Shard:
    """One shard's connections and threads: its parts of the batches are decided (``looker``,
    on ``lookup``) and loaded (``worker``, on ``loader``) in input order. ``previous``: its
    part of the batch submitted last; ``stages``: the seconds its lookup thread spent."""

    loader: Connection
    lookup: Connection
    looker: ThreadPoolExecutor
    worker: ThreadPoolExecutor
    stages: dict[str, float] = field(default_factory=dict)
    previous: InFlight | None = None

    def decide(
        self, known: Future[KnownKeys], dataset: Dataset, part: StagedBatch, config: BatchConfig
    ) -> Future[Decision]:
        """Submit the decision of this shard's ``part`` of a batch (``_look_up_before_loading``)."""
        args = (self.lookup, known, dataset, part.plan, config, self.previous, self.stages)
        return self.looker.submit(_look_up_before_loading, *args)

    def load(self, known, dataset, run_id, part, config, began, decision) -> InFlight:
        """Submit the load of this shard's ``part`` of a batch, after its ``decision``."""
        args = (self.loader, dataset, run_id, part, config, began, decision, known)
        self.previous = InFlight(part, decision, self.worker.submit(load_with_retry, *args), began)
        return self.previous


@contextmanager
def _opened_shards(loader: Connection, count: int, stages: dict[str, float]) -> Iterator[list[_Shard]]:
    """``count`` shards, the first loading on the run's own connection. On the way out, the
    threads finish before their connections close, and each shard's seconds are added to
    ``stages``."""
    shards: list[_Shard] = []

    def add_stages() -> None:
        for shard in shards:
            for stage, seconds in shard.stages.items():
                add_seconds(stages, stage, seconds)

    with ExitStack() as stack:
        # Called last, once every thread has finished.
        stack.callback(add_stages)
        for number in range(count):
            own = loader if number == 0 else stack.enter_context(connected(loader.url))
            lookup = stack.enter_context(connected(loader.url))
            worker = stack.enter_context(ThreadPoolExecutor(1, f"loader-{number}"))
            looker = stack.enter_context(ThreadPoolExecutor(1, f"lookup-{number}"))
            shards.append(_Shard(own, lookup, looker, worker))
        yield shards


def _fully_committed(committed: dict[int, set[int]], shards: int) -> int:
    """How many batches from the first every shard committed (each commits its parts in order)."""
    done = 0
    while len(committed.get(done + 1, ())) == shards:
        done += 1
    return done


def _rows_in(parts: list[InFlight]) -> int:
    return sum(part.staged.rows_in for part in parts)


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

    def request(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        logger.warning("stopping after the batches in hand (Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, request)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _look_up_before_loading(
    lookup: Connection,
    known_read: Future[KnownKeys],
    dataset: Dataset,
    plan: LoadPlan,
    config: BatchConfig,
    previous: InFlight | None,
    stages: dict[str, float],
) -> Decision:
    """The batch's duplicates and key conflicts, decided while the previous batch loads.

    Against the rows committed now, and the records the previous batch keeps, taken as
    stored as soon as that batch is decided (while it copies them). Once it commits, a
    record its COPY refused turns out not stored after all: then the batch is decided
    again without it. A row found twice (committed meanwhile) counts once. The rows the
    previous batch loaded join the ``known`` keys, for the batches after this one.
    """
    known = known_read.result()  # read on this thread, before the first lookup
    began = perf_counter()
    try:
        keys, candidates = stored_rows(lookup, dataset, plan, known)
    except DatabaseError:
        with suppress(DatabaseError):
            lookup.reconnect()
        if previous is not None:
            _note_loaded(known, previous)
        raise
    if previous is None:
        decision = decide_against(dataset, plan, config, keys, candidates)
    else:
        # The previous lookup ran on this thread: its decision is done, or it failed and
        # the loader decides that batch itself.
        kept = None if previous.decision.exception() else previous.decision.result().kept
        if kept is not None:
            decision = decide_against(dataset, plan, config, keys, candidates, (previous.staged.plan, kept))
        waiting = perf_counter()
        loaded = _loaded(previous)
        began += perf_counter() - waiting
        _note_loaded(known, previous, loaded)
        if kept is None or not loaded["record"].sort().equals(kept["record"].sort()):
            decision = decide_against(dataset, plan, config, keys, candidates, (previous.staged.plan, loaded))
    add_seconds(stages, "lookup", perf_counter() - began)
    return decision


def _note_loaded(known: KnownKeys, batch: InFlight, loaded: pl.DataFrame | None = None) -> None:
    """Add the rows ``batch`` loaded (``loaded``, once it is done) to the ``known`` keys."""
    loaded = _loaded(batch) if loaded is None else loaded
    known.add(loaded, cited_by(batch.staged.plan, loaded))


def _loaded(batch: InFlight) -> pl.DataFrame:
    """``record``, ``id`` and ``content_hash`` of the records ``batch`` loaded, once it is done."""
    outcome, _ = batch.loading.result()
    loaded = loaded_records(batch.staged.plan, outcome.rejects)
    return loaded if outcome.committed else loaded.clear()


def _fold_early(lookup: Connection, dataset: Dataset, stages: dict[str, float]) -> None:
    began = perf_counter()
    try:
        fold_merges(lookup, dataset)
    except DatabaseError as exc:  # the last fold notes them all
        logger.debug("folding merge notes early failed: {}", exc)
    add_seconds(stages, "lookup", perf_counter() - began)


def _account(
    loader: Connection, result: RunResult, config: BatchConfig, parts: list[InFlight], clock: float
) -> None:
    """Count a batch once every shard's part of it is done; stop at a part fail-fast rolled back."""
    outcomes = [part.loading.result() for part in parts]
    for _, load_seconds in outcomes:
        add_seconds(result.stage_seconds, "load", load_seconds)
    number = parts[0].staged.number
    if rolled_back := [outcome.rejects for outcome, _ in outcomes if not outcome.committed]:
        raise stop_at(loader, result, number, pl.concat(rolled_back))
    loaded = sum(outcome.loaded for outcome, _ in outcomes)
    rejects = pl.concat([outcome.rejects for outcome, _ in outcomes])
    rows_in = _rows_in(parts)
    result.add_batch(rows_in, loaded, rejects, perf_counter() - min(part.began for part in parts))
    checkpoint("accounted")
    result.seconds = perf_counter() - clock
    result.peak_rss_mb = peak_rss_mb()
    logger.debug(
        "batch {} committed: {} in, {} loaded, {} rejected ({:.2f}s)",
        number,
        rows_in,
        loaded,
        rows_in - loaded,
        result.batches[-1].seconds,
    )
    if config.max_errors is not None and result.failed > config.max_errors:
        raise RunStopped(
            f"stopped after batch {number}: {result.failed} records failed, more than "
            f"--max-errors {config.max_errors}; inspect them with `pipeline rejects --run "
            f"{result.run_id}`",
            run_id=result.run_id,
            result=result,
        )


def _failed_records(rejects: pl.DataFrame) -> int:
    return rejects.filter(pl.col("category") != "deduplication").height
