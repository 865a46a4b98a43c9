"""A run's events for machines: one loguru record each, bound with ``event``, ``run_id`` and the
event's fields (the command writes them as JSON lines with ``--log-format json``).

``run_started`` (``inputs``, ``settings``, ``database`` without its password, ``dry_run``);
``batch_committed`` per lane's part of a batch (``batch_decided`` in a dry run: ``batch``,
``shard``, ``records``, ``loaded``, ``rejected`` by category, ``seconds`` by stage);
``progress`` (``run.progress``); ``run_finished``, ``run_interrupted`` or ``run_failed`` with the
report's totals.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

FINISHED = {"completed": "run_finished", "interrupted": "run_interrupted"}
TOTALS = (
    "status",
    "processed",
    "successful",
    "failed",
    "parse_errors",
    "validation_errors",
    "database_errors",
    "duplicates_skipped",
    "similar_merged",
    "seconds",
)


def emit(event: str, run_id: str, message: str, **fields: Any) -> None:
    """Send one event; shown once the caller enables ``pipeline`` logging."""
    logger.bind(event=event, run_id=run_id, **fields).info(message)


def run_ended(report: dict) -> None:
    """The event of a run's end, from its report (``RunResult.to_dict``)."""
    event = FINISHED.get(report["status"], "run_failed")
    totals = {name: report[name] for name in TOTALS}
    message = f"run {report['run_id']} {report['status']}: {report['processed']:,} records"
    emit(event, report["run_id"], message, **totals)
