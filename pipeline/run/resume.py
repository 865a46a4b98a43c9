"""What earlier runs did with a run's inputs: a stopped run resumed (its recorded settings and
inputs, checked before anything loads, and its counts so far from the ledger), and the inputs
of a new run that a completed run already migrated, skipped."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import datetime

from loguru import logger

from pipeline.config import BatchConfig, DecisionRules
from pipeline.datasets.base import Dataset
from pipeline.errors import ConfigError, InputError
from pipeline.extract import resolve_inputs
from pipeline.extract.sources import STDIN, Source
from pipeline.load.connection import Connection
from pipeline.load.ledger import RunRow, find_run, run_history, runs_reading
from pipeline.run.report import RunResult

# The rules a run decides by, and the settings by which its ledger numbers the batches (per
# shard): a resumed run must keep them.
KEPT_SETTINGS = (*(f.name for f in fields(DecisionRules)), "batch_size", "shards")


def resumable(loader: Connection, run_id: str) -> RunRow:
    run = find_run(loader, run_id)
    if run is None:
        raise ConfigError(f"there is no run {run_id} to resume; `pipeline runs` lists the runs")
    if run.status == "completed":
        raise ConfigError(f"run {run_id} completed; there is nothing to resume")
    return run


def run_settings(run: RunRow) -> BatchConfig:
    """What a run recorded, but its stop rules: they belong to the command that stopped it, and
    a resumed run would stop again where it stopped."""
    return replace(BatchConfig.from_dict(run.config), continue_on_error=True, max_errors=None)


def resumed_config(run: RunRow, config: BatchConfig | None) -> BatchConfig:
    """The run's own settings, or ``config`` when it changes none that decide what is loaded."""
    recorded = run_settings(run)
    if config is None:
        return recorded
    # The batches committed before are counted off by number: cut them as the run did.
    config = replace(config, partitioning=recorded.partitioning)
    changed = [
        f"{name} was {getattr(recorded, name)!r}, now {getattr(config, name)!r}"
        for name in KEPT_SETTINGS
        if getattr(recorded, name) != getattr(config, name)
    ]
    if changed:
        raise ConfigError(
            f"cannot resume {run.run_id} with other settings ({'; '.join(changed)}); "
            "leave them out to take the run's own"
        )
    return config


def already_migrated(loader: Connection, inputs: list[dict], config: BatchConfig) -> list[dict]:
    """The ``inputs`` (fingerprints) whose content a completed run read whole under the same
    rules (``config.rules``): reading them again would store nothing new. Each is said in one line
    and returned as its ``file``, ``sha256`` and ``run_id`` (the first such run to finish). An
    input that only a run that did not complete read is read again, and said so."""
    runs = [
        run
        for run in runs_reading(loader, [i["sha256"] for i in inputs])
        if BatchConfig.from_dict(run["config"]).rules == config.rules
    ]
    completed: dict[str, str] = {}
    for run in runs:
        if run["status"] == "completed":
            completed.setdefault(run["sha256"], run["run_id"])
    # The latest of the runs that did not complete.
    partial = {run["sha256"]: run for run in runs if run["sha256"] not in completed}
    skipped = []
    for given in inputs:
        sha256 = given["sha256"]
        if sha256 in completed:
            logger.info(
                "{}: not read, run {} migrated the same content (SHA-256 {}) under the same "
                "rules; add --recheck to decide its records again",
                given["path"],
                completed[sha256],
                sha256[:12],
            )
            skipped.append({"file": given["path"], "sha256": sha256, "run_id": completed[sha256]})
        elif sha256 in partial:
            run = partial[sha256]
            logger.info(
                "{}: run {} ({}) read the same content in part: it is read again; to go on where "
                "that run stopped instead: pipeline migrate --resume {}",
                given["path"],
                run["run_id"],
                run["status"],
                run["run_id"],
            )
    return skipped


def resumed_inputs(
    run: RunRow, paths: Sequence[str | os.PathLike[str]], config: BatchConfig, input_format: str | None = None
) -> list[Source]:
    """The run's recorded inputs but those it skipped (``already_migrated``); ``paths``, when
    given, must name the same files as all of them. A run that read standard input cannot be
    resumed: it cannot be read again."""
    recorded = [i["path"] for i in run.inputs]
    if STDIN in recorded or "-" in [os.fspath(p) for p in paths]:
        raise ConfigError(
            f"cannot resume {run.run_id}: it read standard input, which cannot be read again; "
            "save the input to a file and migrate that file in a new run"
        )
    input_format = input_format or next((i["input_format"] for i in run.inputs if "input_format" in i), None)
    given = resolve_inputs(paths, input_format, config.text) if paths else None
    normalized = [os.path.normpath(p) for p in recorded]
    if given is not None and [os.path.normpath(str(g)) for g in given] != normalized:
        raise ConfigError(
            f"cannot resume {run.run_id}: its input files changed since it started (it read "
            f"{', '.join(recorded)}; now {', '.join(map(str, paths))}); start a new run instead"
        )
    try:
        unread = [i["path"] for i in run.inputs if "loaded_by" not in i]
        return resolve_inputs(unread, input_format, config.text)
    except InputError as exc:
        if exc.path is None or os.path.isabs(exc.path):
            raise
        raise InputError(
            f"cannot resume {run.run_id}: {exc}, from {os.getcwd()}; the run recorded its "
            f"inputs as given, relative to the directory it started in: resume from there",
            path=exc.path,
        ) from None


def resumed(
    loader: Connection, run: RunRow, inputs: list[dict], config: BatchConfig, dataset: Dataset
) -> tuple[datetime, RunResult]:
    """The stopped run's start time and counts so far, after checking that the inputs it reads
    (``inputs``, fingerprints) are unchanged."""
    run_id = run.run_id
    read = [i for i in run.inputs if "loaded_by" not in i]
    # A run records its inputs' SHA-256 as it starts (older versions: before its first batch
    # loads): without them, it loaded nothing that the inputs must match, and their paths and
    # sizes are compared.
    before = [(i["path"], i["size"], i.get("sha256")) for i in read]
    now = [(i["path"], i["size"], i["sha256"] if before and before[0][2] else None) for i in inputs]
    if before != now:
        raise ConfigError(
            f"cannot resume {run_id}: its input files changed since it started (it read "
            f"{', '.join(i['path'] for i in read)}); start a new run instead"
        )
    result = RunResult(
        run_id,
        dataset=dataset.name,
        mode=config.mode,
        batch_size=config.batch_size,
        inputs=[i["path"] for i in run.inputs],
        skipped_inputs=skipped_inputs(run.inputs),
    )
    result.count_committed(*run_history(loader, run_id))
    result.seconds = sum(b.seconds for b in result.batches)
    logger.info("resuming {} after batch {}", run_id, len(result.batches))
    return run.started_at, result


def recorded_inputs(inputs: list[dict], skipped: list[dict]) -> list[dict]:
    """A new run's ``inputs`` (fingerprints) as it records them: each it ``skipped`` with the
    run that loaded it (``loaded_by``), so that no later run takes this one for its loader."""
    loaders = {s["file"]: s["run_id"] for s in skipped}
    return [i | {"loaded_by": loaders[i["path"]]} if i["path"] in loaders else i for i in inputs]


def skipped_inputs(recorded: list[dict]) -> list[dict]:
    """The inputs a run recorded as skipped, as its report lists them."""
    return [
        {"file": i["path"], "sha256": i["sha256"], "run_id": i["loaded_by"]}
        for i in recorded
        if "loaded_by" in i
    ]
