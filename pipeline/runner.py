"""The run loop: scan → decode → prepare/validate → plan → dedup and load, one batch at a time.

Stages are pure functions of a batch (``stage_batch``); the runner owns the
loop, the progress display, the report and the stop rules. While the database
copies batch N (in a worker thread; ADBC and Polars release the GIL), the next
batch is read and validated, and what stored rows say about it is looked up on a
second connection (a third thread), so both cores stay busy.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter, sleep

import polars as pl
from loguru import logger
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pipeline.autosize import BatchSizer, peak_rss_mb
from pipeline.config import BatchConfig
from pipeline.database import redact, resolve_url
from pipeline.datasets import Dataset, all_datasets, get_dataset
from pipeline.decide import Decision, decide_against
from pipeline.decode import decode, type_errors
from pipeline.errors import (
    ConfigError,
    DatabaseError,
    InputError,
    RunInterrupted,
    RunStopped,
    TransientDatabaseError,
)
from pipeline.faults import checkpoint
from pipeline.known import KnownKeys
from pipeline.loader import BatchOutcome, Loader
from pipeline.plan import LoadPlan, loaded_records, plan_load
from pipeline.report import RunResult
from pipeline.sources import fingerprint, record_keys, resolve_inputs, scan_batches
from pipeline.validate import failure_rejects

# Settings that change what a run loads: a resumed run must keep them.
RESULT_SETTINGS = ("dataset", "batch_size", "mode", "validate_first", "similarity_threshold", "self_name")
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
# How many records of each input are looked at to tell which dataset it holds.
SNIFFED_RECORDS = 1_000


@dataclass(frozen=True)
class InFlight:
    """A batch handed to the loader, with its decision (from the lookup thread) and load."""

    staged: StagedBatch
    decision: Future[Decision]
    loading: Future[tuple[BatchOutcome, float]]
    began: float


@dataclass(frozen=True)
class StagedBatch:
    """A batch ready to load: what to send the database and the records already rejected."""

    number: int
    plan: LoadPlan
    rejects: pl.DataFrame
    rows_in: int
    ledger: dict


def stage_batch(
    raw: pl.DataFrame,
    dataset: Dataset,
    config: BatchConfig,
    started_at: datetime,
    timings: dict[str, float] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Pure: raw records → (records to load, rejects of parse and validation).

    Duplicates are decided later (``decide``), against what is stored when the batch loads.
    ``timings``, when given, accumulates the seconds of ``parse`` (decode) and ``validate``
    (legacy transform, content hash, validation).
    """
    began = perf_counter()
    records, parse_rejects = decode(raw, dataset.input_dtype)
    parsed = perf_counter()
    prepared, failures = dataset.prepare(
        records,
        type_errors(records, dataset.input_dtype, dataset.lenient_fields),
        config,
        started_at,
    )
    valid = prepared.join(failures.select("record").unique(), on="record", how="anti")
    rejects = pl.concat([parse_rejects, failure_rejects(prepared, failures)])
    if timings is not None:
        _add_seconds(timings, "parse", parsed - began)
        _add_seconds(timings, "validate", perf_counter() - parsed)
    return valid, rejects


def migrate(
    paths: Sequence[str],
    config: BatchConfig | None = None,
    db_url: str | None = None,
    run_id: str | None = None,
    resume: str | None = None,
) -> RunResult:
    """Migrate the records of ``paths`` into the database and return the run's counts.

    ``resume`` continues a run that stopped (killed, interrupted, failed, aborted) after its
    last committed batch: on the run's recorded inputs when ``paths`` is empty, with its
    recorded settings when ``config`` is None (``recorded_config``); other inputs, or a
    setting that changes what is loaded, are refused. Raises ``RunStopped`` (carrying the
    partial result) when fail-fast or ``max_errors`` stops the run and ``RunInterrupted``
    on Ctrl-C; batches committed before stay committed.
    """
    if resume and run_id and run_id != resume:
        raise ConfigError(f"--run-id {run_id} and --resume {resume} name different runs")
    if not resume:
        config = config or BatchConfig()
        dataset = get_dataset(config.dataset)
        files = resolve_inputs(paths)
        refuse_foreign_inputs(files, dataset)
    url = resolve_url(db_url)
    loader = Loader(url)
    result: RunResult | None = None
    try:
        if resume:
            run = _resumable(loader, resume)
            config = _resumed_config(run, config)
            dataset = get_dataset(config.dataset)
            files = _resumed_inputs(run, paths)
        # Hashing the inputs keeps a core busy for a while (1.8 s for 2.7 GB): it runs beside the
        # start of the run, and is recorded before the first batch loads (``_run``).
        fingerprints = _fingerprints(files)
        loader.ensure_schema(dataset)
        if resume:
            started_at, result = _resumed(loader, run, fingerprints.result(), config, dataset)
        else:
            started_at = datetime.now(UTC)
            run_id = run_id or f"run-{started_at:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
            _refuse_taken_run_id(loader, run_id)
            result = RunResult(
                run_id,
                dataset=dataset.name,
                mode=config.mode,
                batch_size=config.batch_size,
                inputs=[str(f) for f in files],
            )
        result.database = redact(url)
        inputs = [{"path": str(f), "size": f.stat().st_size} for f in files]
        loader.start_run(result.run_id, started_at, config.to_dict(), inputs)
        _run(loader, dataset, config, files, started_at, result, fingerprints)
        checkpoint("finish")
    except RunStopped as stop:
        _finish(loader, dataset, result, "aborted", str(stop))
        raise
    except KeyboardInterrupt:
        if result is None:
            raise
        _finish(loader, dataset, result, "interrupted", "interrupted")
        raise RunInterrupted(
            f"run {result.run_id} interrupted; its {len(result.batches):,} committed batches "
            f"({result.processed:,} records) stay in the database",
            run_id=result.run_id,
            result=result,
        ) from None
    except BaseException as exc:
        if result is not None:
            _finish(loader, dataset, result, "failed", f"{type(exc).__name__}: {exc}")
        raise
    else:
        _finish(loader, dataset, result, "completed", None)
    finally:
        loader.close()
    return result


def recorded_config(run_id: str, db_url: str | None = None) -> BatchConfig:
    """The settings run ``run_id`` recorded, to resume it with (``dataclasses.replace`` them
    with the settings a user passes again)."""
    loader = Loader(resolve_url(db_url))
    try:
        loader.ensure_schema()
        return _run_settings(_resumable(loader, run_id))
    finally:
        loader.close()


def _run_settings(run: dict) -> BatchConfig:
    """What a run recorded, but its stop rules: they belong to the command that stopped it, and
    a resumed run would stop again where it stopped."""
    return replace(BatchConfig.from_dict(run["config"]), continue_on_error=True, max_errors=None)


def refuse_foreign_inputs(files: list[Path], dataset: Dataset) -> None:
    """Refuse, before anything is written, a file none of whose first records has a field of
    ``dataset``: it was meant for another dataset (or is no export at all)."""
    for path in files:
        keys = record_keys(path, SNIFFED_RECORDS)
        if not keys or keys & dataset.fields:
            continue
        fits = [d.name for d in all_datasets() if keys & d.fields]
        hint = (
            f"it looks like {' or '.join(fits)} data: add --dataset {fits[0]}"
            if fits
            else (f"the {dataset.name} dataset reads {', '.join(sorted(dataset.fields))}")
        )
        raise InputError(
            f"{path}: no field of the {dataset.name} dataset in its first records "
            f"(it has {', '.join(sorted(keys)[:8])}); {hint}",
            path=str(path),
        )


def _resumable(loader: Loader, run_id: str) -> dict:
    run = loader.run_record(run_id)
    if run is None:
        raise ConfigError(f"there is no run {run_id} to resume; `pipeline runs` lists the runs")
    if run["status"] == "completed":
        raise ConfigError(f"run {run_id} completed; there is nothing to resume")
    return run


def _resumed_config(run: dict, config: BatchConfig | None) -> BatchConfig:
    """The run's own settings, or ``config`` when it changes none that decide what is loaded."""
    recorded = _run_settings(run)
    if config is None:
        return recorded
    changed = [
        f"{name} was {getattr(recorded, name)!r}, now {getattr(config, name)!r}"
        for name in RESULT_SETTINGS
        if getattr(recorded, name) != getattr(config, name)
    ]
    if changed:
        raise ConfigError(
            f"cannot resume {run['run_id']} with other settings ({'; '.join(changed)}); "
            "leave them out to take the run's own"
        )
    return config


def _resumed_inputs(run: dict, paths: Sequence[str]) -> list[Path]:
    """The run's recorded inputs; ``paths``, when given, must name the same files."""
    recorded = [i["path"] for i in run["inputs"]]
    if paths and [os.path.normpath(p) for p in map(str, resolve_inputs(paths))] != [
        os.path.normpath(p) for p in recorded
    ]:
        raise ConfigError(
            f"cannot resume {run['run_id']}: its input files changed since it started (it read "
            f"{', '.join(recorded)}; now {', '.join(map(str, paths))}); start a new run instead"
        )
    return resolve_inputs(recorded)


def _refuse_taken_run_id(loader: Loader, run_id: str) -> None:
    taken = loader.run_record(run_id)
    if taken is None:
        return
    go_on = "" if taken["status"] == "completed" else f", or continue it with `--resume {run_id}`"
    raise ConfigError(f"run {run_id} exists already ({taken['status']}); choose another --run-id{go_on}")


def _resumed(
    loader: Loader, run: dict, inputs: list[dict], config: BatchConfig, dataset: Dataset
) -> tuple[datetime, RunResult]:
    """The stopped run's start time and counts so far, after checking its inputs are unchanged."""
    run_id = run["run_id"]
    # A run records its inputs' SHA-256 before its first batch loads: without them, it loaded
    # nothing that the inputs must match, and their paths and sizes are compared.
    before = [(i["path"], i["size"], i.get("sha256")) for i in run["inputs"]]
    now = [(i["path"], i["size"], i["sha256"] if before and before[0][2] else None) for i in inputs]
    if before != now:
        raise ConfigError(
            f"cannot resume {run_id}: its input files changed since it started (it read "
            f"{', '.join(i['path'] for i in run['inputs'])}); start a new run instead"
        )
    result = RunResult(
        run_id,
        dataset=dataset.name,
        mode=config.mode,
        batch_size=config.batch_size,
        inputs=[i["path"] for i in inputs],
    )
    result.count_committed(*loader.run_history(run_id))
    result.seconds = sum(b.seconds for b in result.batches)
    logger.info("resuming {} after batch {}", run_id, len(result.batches))
    return run["started_at"], result


def _run(loader, dataset, config, files, started_at, result, fingerprints) -> None:
    clock = perf_counter() - result.seconds
    done = len(result.batches)
    total_bytes = sum(f.stat().st_size for f in files)
    # A resumed auto-sized run cuts its committed batches at their recorded sizes again.
    sizer = BatchSizer(config.batch_size, config.memory_limit_mb, [b.rows_in for b in result.batches])
    result.batch_sizes = sizer.chosen
    stages = result.stage_seconds
    # The lookup connection closes after the threads that use it have finished.
    with (
        _stop_on_ctrl_c() as stop,
        _lookup_connection(loader.url) as lookup,
        _progress(config.log_progress) as progress,
        ThreadPoolExecutor(1, "loader") as worker,
        ThreadPoolExecutor(1, "lookup") as looker,
    ):
        task = progress.add_task("migrating", total=total_bytes, records=0, rate="")
        known = lookup.known_keys(dataset.tables[0])
        # Batches submitted to the loader and not yet accounted. Two may wait, so that the
        # next batch is read, validated and looked up while the loader copies; a run that
        # stops at the first failure (fail-fast, --max-errors) keeps one, so that no batch
        # after the failing one is loaded.
        pending: deque[InFlight] = deque()
        depth = 2 if config.continue_on_error and config.max_errors is None else 1
        batches = scan_batches(files, lambda: sizer.size, dataset.csv_json_columns)
        last_commit = read_began = perf_counter()

        def account_oldest(staging: StagedBatch | None = None) -> None:
            """Wait for the oldest pending batch and count it; ``staging`` is the batch about
            to be submitted, the one after it when none is pending."""
            nonlocal last_commit
            oldest = pending.popleft()
            _account(result, config, oldest.staged, oldest.loading, oldest.began, clock)
            now = perf_counter()
            staged = oldest.staged
            following = pending[0].staged if pending else staging
            rows_after = following.rows_in if following else None
            sizer.committed(staged.rows_in, rows_after, now - last_commit, result.peak_rss_mb)
            last_commit = now
            _show(progress, task, result)

        read_from: set[str] = set()
        try:
            for number, raw in enumerate(batches, 1):
                if stop.is_set():
                    raise KeyboardInterrupt
                read_from.add(raw.frame["source_file"][0])
                sizer.note(sizer.size)
                if number <= done:
                    sizer.skipped(number)
                    progress.update(task, completed=raw.bytes_done)
                    read_began = perf_counter()
                    continue
                _add_seconds(stages, "read", perf_counter() - read_began)
                checkpoint("read")
                began = perf_counter()
                records, rejects = stage_batch(raw.frame, dataset, config, started_at, stages)
                planning = perf_counter()
                plan = plan_load(records, dataset, config)
                _add_seconds(stages, "plan", perf_counter() - planning)
                checkpoint("staged")
                staged = StagedBatch(number, plan, rejects, raw.frame.height, _ledger(raw.frame))
                previous = pending[-1] if pending else None
                decision = looker.submit(
                    _look_up_before_loading, lookup, known, dataset, plan, config, previous, stages
                )
                if not config.continue_on_error and _failed_records(rejects):
                    while pending:
                        account_oldest(staged)
                    raise RunStopped(
                        _fail_fast_message(result.run_id, number), run_id=result.run_id, result=result
                    )
                while len(pending) >= depth:
                    account_oldest(staged)
                if not pending and not result.batches:
                    # Before any batch can commit: a resumed run is checked against them.
                    loader.record_inputs(result.run_id, fingerprints.result())
                loading = worker.submit(
                    _load, loader, dataset, result.run_id, staged, config, began, decision
                )
                pending.append(InFlight(staged, decision, loading, began))
                progress.update(task, completed=raw.bytes_done)
                read_began = perf_counter()
            if dataset.near_duplicates:
                # While the last batches load, fold the merge notes committed so far: the
                # run's last fold (``_finish``) is then left with theirs only.
                looker.submit(_fold_early, lookup, dataset, stages)
            while pending:
                account_oldest()
            for path in files:
                if str(path) not in read_from:
                    logger.warning("no records in {}", path)
        except BaseException:
            # Batches not started yet are not loaded; one already loading finishes (and a
            # resume counts it from the ledger).
            for in_flight in pending:
                in_flight.loading.cancel()
            raise
        _show(progress, task, result, completed=total_bytes)


def _show(progress: Progress, task, result: RunResult, **update) -> None:
    rate = f"{result.rows_per_second:,.0f} rows/s"
    progress.update(task, records=result.processed, rate=rate, **update)


def _load(
    loader: Loader,
    dataset: Dataset,
    run_id: str,
    staged: StagedBatch,
    config: BatchConfig,
    began: float,
    decision: Future[Decision],
) -> tuple[BatchOutcome, float]:
    """Load one batch, retrying transient database failures with exponential backoff;
    what it did and the seconds it took (waiting for its decision, COPY, rejects, ledger)."""
    loading = perf_counter()
    ledger = {**staged.ledger, "seconds": loading - began}
    for attempt, delay in enumerate((*RETRY_DELAYS, None)):
        try:
            if attempt:
                loader.reconnect()
            # A COMMIT can land just as the connection breaks: then the batch is done.
            committed = attempt and loader.committed_outcome(run_id, staged.number)
            outcome = committed or loader.load_batch(
                dataset,
                run_id,
                staged.number,
                staged.plan,
                staged.rejects,
                config,
                ledger,
                decision,
            )
            return outcome, perf_counter() - loading
        except TransientDatabaseError as exc:
            if delay is None:
                raise DatabaseError(
                    f"batch {staged.number}: the database kept failing for {sum(RETRY_DELAYS):.0f}s "
                    f"({exc}); once it is back, resume with `pipeline migrate --resume {run_id}`",
                    sqlstate=exc.sqlstate,
                ) from exc
            logger.warning("batch {}: {}; retrying in {}s", staged.number, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def _fingerprints(files: list[Path]) -> Future[list[dict]]:
    """The inputs' fingerprints, read on a daemon thread: an error that ends the run does not
    wait for them."""
    future: Future[list[dict]] = Future()

    def run() -> None:
        try:
            future.set_result([fingerprint(f) for f in files])
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="fingerprint", daemon=True).start()
    return future


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


@contextmanager
def _lookup_connection(url: str) -> Iterator[Loader]:
    """A second connection, to look up what is stored while the previous batch loads."""
    lookup = Loader(url)
    try:
        yield lookup
    finally:
        lookup.close()


def _look_up_before_loading(
    lookup: Loader,
    known: KnownKeys,
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
    began = perf_counter()
    try:
        keys, candidates = lookup.stored_rows(dataset.tables[0], plan, known)
    except DatabaseError:
        with suppress(DatabaseError):
            lookup.reconnect()
        if previous is not None:
            known.add(_loaded(previous))
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
        known.add(loaded)
        if kept is None or loaded.height != kept.height:
            decision = decide_against(dataset, plan, config, keys, candidates, (previous.staged.plan, loaded))
    _add_seconds(stages, "lookup", perf_counter() - began)
    return decision


def _loaded(batch: InFlight) -> pl.DataFrame:
    """``record``, ``id`` and ``content_hash`` of the records ``batch`` loaded, once it is done."""
    outcome, _ = batch.loading.result()
    loaded = loaded_records(batch.staged.plan, outcome.rejects)
    return loaded if outcome.committed else loaded.clear()


def _fold_early(lookup: Loader, dataset: Dataset, stages: dict[str, float]) -> None:
    began = perf_counter()
    try:
        lookup.fold_merges(dataset.tables[0])
    except DatabaseError as exc:  # the last fold notes them all
        logger.debug("folding merge notes early failed: {}", exc)
    _add_seconds(stages, "lookup", perf_counter() - began)


def _account(
    result: RunResult,
    config: BatchConfig,
    staged: StagedBatch,
    outcome: Future[tuple[BatchOutcome, float]],
    began: float,
    clock: float,
) -> None:
    loaded, load_seconds = outcome.result()
    _add_seconds(result.stage_seconds, "load", load_seconds)
    if not loaded.committed:
        raise RunStopped(
            _fail_fast_message(result.run_id, staged.number), run_id=result.run_id, result=result
        )
    result.add_batch(staged.rows_in, loaded.loaded, loaded.rejects, perf_counter() - began)
    checkpoint("accounted")
    result.seconds = perf_counter() - clock
    result.peak_rss_mb = peak_rss_mb()
    logger.debug(
        "batch {} committed: {} in, {} loaded, {} rejected ({:.2f}s)",
        staged.number,
        staged.rows_in,
        loaded.loaded,
        staged.rows_in - loaded.loaded,
        result.batches[-1].seconds,
    )
    if config.max_errors is not None and result.failed > config.max_errors:
        raise RunStopped(
            f"stopped after batch {staged.number}: {result.failed} records failed, more than "
            f"--max-errors {config.max_errors}; inspect them with `pipeline rejects --run "
            f"{result.run_id}`",
            run_id=result.run_id,
            result=result,
        )


def _add_seconds(stages: dict[str, float], stage: str, seconds: float) -> None:
    stages[stage] = stages.get(stage, 0.0) + seconds


def _failed_records(rejects: pl.DataFrame) -> int:
    return rejects.filter(pl.col("category") != "deduplication").height


def _fail_fast_message(run_id: str, number: int) -> str:
    return (
        f"stopped at batch {number} (--fail-fast): a record failed and the batch was rolled back; "
        f"earlier batches are committed. To record this batch's rejects and go on, resume without "
        f"--fail-fast: `pipeline migrate --resume {run_id}`"
    )


def _finish(loader: Loader, dataset: Dataset, result: RunResult, status: str, reason: str | None) -> None:
    """Fold the run's merge notes into the kept rows and record how the run ended.

    A run that did not complete is counted from its ledger: batches that committed while it
    stopped count, the one rolled back does not."""
    result.status, result.stop_reason = status, reason
    try:
        if status != "completed":
            result.count_committed(*loader.run_history(result.run_id))
        if dataset.near_duplicates:
            folding = perf_counter()
            loader.fold_merges(dataset.tables[0])
            seconds = perf_counter() - folding
            result.seconds += seconds
            _add_seconds(result.stage_seconds, "load", seconds)
        result.peak_rss_mb = peak_rss_mb()
        loader.finish_run(result.run_id, status, result.to_dict())
    except Exception as exc:  # the run's own error matters more than its bookkeeping
        logger.warning("could not record the end of run {}: {}", result.run_id, exc)


def _ledger(frame: pl.DataFrame) -> dict:
    return {
        "source_file": frame["source_file"][0],
        "first_line": int(frame["source_line"].min()),
        "last_line": int(frame["source_line"].max()),
        "rows_in": frame.height,
    }


def _progress(enabled: bool) -> Progress:
    """One progress display, on stderr: standard output carries only the report."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[records]:,} records"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )
