"""Resuming a stopped run: its recorded settings and inputs, checked before anything loads,
and its counts so far from the ledger."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from loguru import logger

from pipeline.config import BatchConfig
from pipeline.datasets.base import Dataset
from pipeline.errors import ConfigError, InputError
from pipeline.extract import resolve_inputs
from pipeline.extract.sources import STDIN, Source
from pipeline.load.connection import Connection
from pipeline.load.ledger import run_history, run_record
from pipeline.run.report import RunResult

# Settings that change what a run loads, or how its ledger counts its batches (per shard): a
# resumed run must keep them.
RESULT_SETTINGS = (
    "dataset",
    "batch_size",
    "mode",
    "validate_first",
    "similarity_threshold",
    "self_name",
    "shards",
)


def resumable(loader: Connection, run_id: str) -> dict:
    run = run_record(loader, run_id)
    if run is None:
        raise ConfigError(f"there is no run {run_id} to resume; `pipeline runs` lists the runs")
    if run["status"] == "completed":
        raise ConfigError(f"run {run_id} completed; there is nothing to resume")
    return run


def run_settings(run: dict) -> BatchConfig:
    """What a run recorded, but its stop rules: they belong to the command that stopped it, and
    a resumed run would stop again where it stopped."""
    return replace(BatchConfig.from_dict(run["config"]), continue_on_error=True, max_errors=None)


def resumed_config(run: dict, config: BatchConfig | None) -> BatchConfig:
    """The run's own settings, or ``config`` when it changes none that decide what is loaded."""
    recorded = run_settings(run)
    if config is None:
        return recorded
    # The batches committed before are counted off by number: cut them as the run did.
    config = replace(config, partitioning=recorded.partitioning)
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


def resumed_inputs(
    run: dict, paths: Sequence[str | os.PathLike[str]], input_format: str | None = None
) -> list[Source]:
    """The run's recorded inputs; ``paths``, when given, must name the same files. A run that
    read standard input cannot be resumed: it cannot be read again."""
    recorded = [i["path"] for i in run["inputs"]]
    if STDIN in recorded or "-" in map(os.fspath, paths):
        raise ConfigError(
            f"cannot resume {run['run_id']}: it read standard input, which cannot be read again; "
            "save the input to a file and migrate that file in a new run"
        )
    input_format = input_format or next(
        (i["input_format"] for i in run["inputs"] if "input_format" in i), None
    )
    if paths and [os.path.normpath(p) for p in map(str, resolve_inputs(paths, input_format))] != [
        os.path.normpath(p) for p in recorded
    ]:
        raise ConfigError(
            f"cannot resume {run['run_id']}: its input files changed since it started (it read "
            f"{', '.join(recorded)}; now {', '.join(map(str, paths))}); start a new run instead"
        )
    try:
        return resolve_inputs(recorded, input_format)
    except InputError as exc:
        if exc.path is None or os.path.isabs(exc.path):
            raise
        raise InputError(
            f"cannot resume {run['run_id']}: {exc}, from {os.getcwd()}; the run recorded its "
            f"inputs as given, relative to the directory it started in: resume from there",
            path=exc.path,
        ) from None


def resumed(
    loader: Connection, run: dict, inputs: list[dict], config: BatchConfig, dataset: Dataset
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
    result.count_committed(*run_history(loader, run_id))
    result.seconds = sum(b.seconds for b in result.batches)
    logger.info("resuming {} after batch {}", run_id, len(result.batches))
    return run["started_at"], result
