"""``migrate``: a run from its start to its end, around the batches (``pipelining``).

It refuses what would be a mistake before anything is written (another dataset's file, a
run id taken, a resume on other inputs or settings), records the run, and records how it
ended: completed, aborted by a stop rule, interrupted, failed.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import compress
from pathlib import Path
from time import perf_counter
from typing import Any

from loguru import logger

from pipeline.config import BatchConfig
from pipeline.datasets import all_datasets, get_dataset
from pipeline.datasets.base import Dataset
from pipeline.errors import ConfigError, InputError, PipelineError, RunInterrupted, RunStopped
from pipeline.extract import fingerprint, record_keys
from pipeline.extract.inputs import find_inputs
from pipeline.extract.sources import Source
from pipeline.faults import checkpoint
from pipeline.load.connection import Connection
from pipeline.load.ledger import (
    damaged_inputs,
    ensure_schema,
    find_run,
    finish_run,
    fold_merges,
    has_ledger,
    run_history,
    start_run,
)
from pipeline.load.server import redact_url, resolve_url
from pipeline.run.autosize import peak_rss_mb
from pipeline.run.cluster import dask_in_order
from pipeline.run.events import emit, run_ended
from pipeline.run.failfast import forget_stop
from pipeline.run.pipelining import RunInputs, run_batches
from pipeline.run.prepared import in_order_here
from pipeline.run.rejects_file import RejectsFile, rejects_file_path
from pipeline.run.report import RunResult, check_writable
from pipeline.run.resume import (
    already_migrated,
    recorded_inputs,
    resumable,
    resumed,
    resumed_config,
    resumed_inputs,
    run_settings,
)
from pipeline.run.shapes import refuse_misshapen_inputs

# How many records of each input are looked at to tell which dataset it holds.
SNIFFED_RECORDS = 1_000


def migrate(
    paths: Sequence[str | os.PathLike[str]],
    config: BatchConfig | None = None,
    db_url: str | None = None,
    run_id: str | None = None,
    resume: str | None = None,
    client: Any = None,
    input_format: str | None = None,
    recheck: bool = False,
) -> RunResult:
    """Migrate the records of ``paths`` into the database and return the run's counts.

    An input whose content (SHA-256) a completed run read whole under the same dataset and
    decision rules (``BatchConfig.rules``) is not read: each of its records would be
    a duplicate of itself. The report lists it in ``skipped_inputs``; ``recheck`` reads it
    all the same (a replay always does).

    ``resume`` continues a run that stopped (killed, interrupted, failed, aborted) after its
    last committed batch: on the run's recorded inputs when ``paths`` is empty, with its
    recorded settings when ``config`` is None (``recorded_config``); other inputs, or a
    setting that changes what is loaded, are refused. Raises ``RunStopped`` (carrying the
    partial result) when fail-fast or ``max_errors`` stops the run and ``RunInterrupted``
    on Ctrl-C; batches committed before stay committed.

    ``client``, a ``dask.distributed.Client``, has its workers read, validate, hash and plan
    the batches (``pipeline.run.cluster``); the results are those of a run without it.

    ``paths`` may name objects in a store (``s3://bucket/key``, a prefix ending in ``/``, a
    glob) and ``-``, standard input; ``input_format`` (``csv``, ``jsonl.gz``…) tells the
    format of inputs whose name does not.
    """
    if isinstance(paths, str | os.PathLike):  # one path: not a sequence of its characters
        paths = [paths]
    request = _Request(paths, config, run_id, resume, client, input_format, recheck)
    request.refuse_conflicts()
    # A new run's inputs are found and checked before anything connects.
    planned = None if resume else _planned(request)
    url = resolve_url(db_url)
    loader = Connection(url)
    try:
        return _carried_out(loader, url, request, planned)
    finally:
        loader.close()


@dataclass(frozen=True)
class _Request:
    """What ``migrate`` was asked to do."""

    paths: Sequence[str | os.PathLike[str]]
    config: BatchConfig | None
    run_id: str | None
    resume: str | None
    client: Any
    input_format: str | None
    recheck: bool

    def refuse_conflicts(self) -> None:
        if self.resume and self.config is not None and self.config.dry_run:
            raise ConfigError("--dry-run starts a run of its own; it cannot --resume one")
        if self.resume and self.run_id and self.run_id != self.resume:
            raise ConfigError(f"--run-id {self.run_id} and --resume {self.resume} name different runs")
        if self.client is not None and "-" in [os.fspath(p) for p in self.paths]:
            raise InputError(
                "-: standard input cannot be read by --workers; save it to a file and migrate that"
            )


@dataclass(frozen=True)
class _Planned:
    """A new run before it connects: its settings, its inputs, what its folders held besides."""

    config: BatchConfig
    files: list[Source]
    ignored: list[dict[str, str]]


@dataclass
class _Run:
    """A run as it starts: its settings, the inputs it reads and their sizes then, its result."""

    config: BatchConfig
    dataset: Dataset
    files: list[Source]
    sizes: list[int]
    inputs: list[dict]
    started_at: datetime
    result: RunResult
    dry_rejects: RejectsFile | None = None


def _planned(request: _Request) -> _Planned:
    config = request.config or BatchConfig()
    if request.client is not None:
        config = replace(config, partitioning="ranges")
    if config.dry_run and config.rejects_file:
        check_writable(rejects_file_path(config.rejects_file, "run"))
    files, ignored = _new_inputs(request.paths, get_dataset(config.dataset), request.input_format, config)
    return _Planned(config, files, ignored)


def _carried_out(loader: Connection, url: str, request: _Request, planned: _Planned | None) -> RunResult:
    """The run from its record to its end, recorded however it ends."""
    run: _Run | None = None
    try:
        run = _started(loader, request, planned)
        run.result.database = redact_url(url)
        if not run.dry_rejects:
            start_run(loader, run.result.run_id, run.started_at, run.config.to_dict(), run.inputs)
        emit(
            "run_started",
            run.result.run_id,
            f"{'dry run' if run.dry_rejects else 'run'} {run.result.run_id} started",
            inputs=run.result.inputs,
            settings=run.config.to_dict(),
            database=run.result.database,
            dry_run=run.dry_rejects is not None,
        )
        if run.files:
            in_order = in_order_here if request.client is None else dask_in_order(request.client)
            read = RunInputs(run.files, run.inputs, run.dry_rejects)
            run_batches(loader, run.dataset, run.config, read, run.started_at, run.result, in_order)
            run.result.resized_inputs = _resized_inputs(run.files, run.sizes)
            run.result.damaged_inputs = (
                run.dry_rejects.damaged if run.dry_rejects else damaged_inputs(loader, run.result.run_id)
            )
        checkpoint("finish")
    except RunStopped as stop:
        if run is not None:
            _finish(loader, run.dataset, run.result, "aborted", str(stop))
        raise
    except KeyboardInterrupt:
        if run is None:
            raise
        _finish(loader, run.dataset, run.result, "interrupted", "interrupted")
        done = f"{len(run.result.batches):,} batches ({run.result.processed:,} records)"
        raise RunInterrupted(
            f"dry run {run.result.run_id} interrupted after deciding {done}; nothing was written"
            if run.dry_rejects
            else f"run {run.result.run_id} interrupted; its {done} committed stay in the database",
            run_id=run.result.run_id,
            result=run.result,
        ) from None
    except BaseException as exc:
        if run is not None:
            _finish(loader, run.dataset, run.result, "failed", f"{type(exc).__name__}: {exc}")
            if isinstance(exc, PipelineError) and not run.dry_rejects:  # a dry run resumes nothing
                exc.run_id = run.result.run_id
        raise
    finally:
        if run is not None and run.dry_rejects is not None:
            run.dry_rejects.close()
    _finish(loader, run.dataset, run.result, "completed", None)
    return run.result


def _started(loader: Connection, request: _Request, planned: _Planned | None) -> _Run:
    """A new run, or the one resumed, as it starts: checked against the ledger, its inputs'
    fingerprints taken (hashing keeps a core busy for a while, 0.1 s for 200k records, 1.8 s
    for 2.7 GB: it runs beside the schema's check, before any input is read)."""
    if planned is None:
        assert request.resume is not None
        record = resumable(loader, request.resume)
        config = resumed_config(record, request.config)
        files = resumed_inputs(record, request.paths, config, request.input_format)
    else:
        config, files = planned.config, planned.files
    dataset = get_dataset(config.dataset)
    # The inputs as the run starts: a file that grows while it is read is taken so.
    sizes = [f.stat().st_size for f in files]
    fingerprints = _fingerprints(files, sizes)
    if config.dry_run:
        return _dry_run(loader, request, config, dataset, files, sizes, fingerprints.result())
    ensure_schema(loader, dataset)
    if planned is None:
        started_at, result = resumed(loader, record, fingerprints.result(), config, dataset)
        forget_stop(loader, result)
        # A run records its inputs' SHA-256 as it starts, unless an older version ran it.
        done = record.inputs if all("sha256" in i for i in record.inputs) else fingerprints.result()
        return _Run(config, dataset, files, sizes, done, started_at, result)
    found = [_recorded(f, request.input_format) for f in fingerprints.result()]
    started_at, result, inputs = _new_run(loader, request.run_id, config, found, request.recheck)
    result.ignored_paths = planned.ignored
    files, sizes = _unskipped(files, sizes, inputs)
    return _Run(config, dataset, files, sizes, inputs, started_at, result)


def recorded_config(run_id: str, db_url: str | None = None) -> BatchConfig:
    """The settings run ``run_id`` recorded, to resume it with (``dataclasses.replace`` them
    with the settings a user passes again)."""
    loader = Connection(resolve_url(db_url))
    try:
        ensure_schema(loader)
        return run_settings(resumable(loader, run_id))
    finally:
        loader.close()


def _recorded(fingerprint: dict, input_format: str | None) -> dict:
    """An input as the run records it: a format given is kept for a resume to read it so."""
    return fingerprint | ({"input_format": input_format} if input_format else {})


def _dry_run(
    loader: Connection,
    request: _Request,
    config: BatchConfig,
    dataset: Dataset,
    files: list[Source],
    sizes: list[int],
    fingerprints: list[dict],
) -> _Run:
    """A dry run as it starts: its connection read-only (the server refuses any write), the
    ledger read if there is one (an input a real run would skip is said so), its rejects file
    open."""
    loader.read_only()
    found = [_recorded(f, request.input_format) for f in fingerprints]
    ledger = has_ledger(loader)
    if not ledger:
        logger.info("no run was recorded in this database: the dry run decides against what it stores")
    started_at, result, inputs = _new_run(
        loader, request.run_id, config, found, request.recheck or not ledger
    )
    result.dry_run = True
    rejects = RejectsFile(rejects_file_path(config.rejects_file, result.run_id))
    result.rejects_file = str(rejects.path)
    files, sizes = _unskipped(files, sizes, inputs)
    return _Run(config, dataset, files, sizes, inputs, started_at, result, rejects)


def _unskipped(files: list[Source], sizes: list[int], inputs: list[dict]) -> tuple[list[Source], list[int]]:
    """The inputs (and their sizes) a new run reads: not those it skips as already loaded."""
    read = ["loaded_by" not in i for i in inputs]
    return list(compress(files, read)), list(compress(sizes, read))


def _new_run(
    loader: Connection, run_id: str | None, config: BatchConfig, inputs: list[dict], recheck: bool
) -> tuple[datetime, RunResult, list[dict]]:
    """A new run's start time, its empty result (naming the ``inputs`` it skips) and its
    ``inputs`` (fingerprints) as it records them; no run has taken its run id. ``recheck``:
    no input is skipped (and, without a ledger, no run id looked up)."""
    started_at = datetime.now(UTC)
    run_id = run_id or f"run-{started_at:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    if not (config.dry_run and recheck):
        _refuse_taken_run_id(loader, run_id)
    # A replay marks the rejects its records resolve: it reads them whatever ran before.
    skipped = [] if recheck or config.replay_of else already_migrated(loader, inputs, config)
    result = RunResult(
        run_id,
        dataset=config.dataset,
        mode=config.mode,
        batch_size=config.batch_size,
        inputs=[i["path"] for i in inputs],
        skipped_inputs=skipped,
    )
    return started_at, result, recorded_inputs(inputs, skipped)


def _new_inputs(
    paths: Sequence[str | os.PathLike[str]], dataset: Dataset, input_format: str | None, config: BatchConfig
) -> tuple[list[Source], list[dict[str, str]]]:
    """The files a new run reads, and what its directories and globs held that it ignores;
    files of another dataset or of a shape no record of which can load are refused."""
    found = find_inputs(paths, input_format, config.text)
    refuse_foreign_inputs(found.files, dataset)
    refuse_misshapen_inputs(found.files, dataset)
    return found.files, found.ignored


def refuse_foreign_inputs(files: Sequence[Source | Path], dataset: Dataset) -> None:
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


def _refuse_taken_run_id(loader: Connection, run_id: str) -> None:
    taken = find_run(loader, run_id)
    if taken is None:
        return
    go_on = "" if taken.status == "completed" else f", or continue it with `--resume {run_id}`"
    raise ConfigError(f"run {run_id} exists already ({taken.status}); choose another --run-id{go_on}")


def _resized_inputs(files: list[Source], sizes: list[int]) -> list[dict]:
    """The inputs whose size is no longer ``sizes`` (theirs when the run started), each said."""
    changed = []
    for path, size in zip(files, sizes, strict=True):
        now = path.stat().st_size if path.exists() else 0
        if now != size:
            logger.warning("{} changed size during the run ({:,} → {:,} bytes)", path, size, now)
            changed.append({"path": str(path), "size_at_start": size, "size_at_end": now})
    return changed


def _fingerprints(files: list[Source], sizes: list[int]) -> Future[list[dict]]:
    """The inputs' fingerprints (of their first ``sizes`` bytes), read on a daemon thread: an
    error that ends the run does not wait for them."""
    future: Future[list[dict]] = Future()

    def run() -> None:
        try:
            future.set_result([fingerprint(f, size) for f, size in zip(files, sizes, strict=True)])
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="fingerprint", daemon=True).start()
    return future


def _finish(loader: Connection, dataset: Dataset, result: RunResult, status: str, reason: str | None) -> None:
    """Fold the run's merge notes into the kept rows and record how the run ended.

    A run that did not complete is counted from its ledger: batches that committed while it
    stopped count, the one rolled back does not."""
    result.status, result.stop_reason = status, reason
    if result.dry_run:  # nothing to fold or record: its counts are what it decided
        result.peak_rss_mb = peak_rss_mb()
        run_ended(result.to_dict())
        return
    _record_end(loader, dataset, result, status)
    run_ended(result.to_dict())


def _record_end(loader: Connection, dataset: Dataset, result: RunResult, status: str) -> None:
    try:
        if status != "completed":
            result.count_committed(*run_history(loader, result.run_id))
        if dataset.near_duplicates:
            folding = perf_counter()
            fold_merges(loader, dataset)
            seconds = perf_counter() - folding
            result.seconds += seconds
            result.add_stage_seconds({"load": seconds})
        result.peak_rss_mb = peak_rss_mb()
        finish_run(loader, result.run_id, status, result.to_dict())
    except Exception as exc:  # the run's own error matters more than its bookkeeping
        logger.warning("could not record the end of run {}: {}", result.run_id, exc)
