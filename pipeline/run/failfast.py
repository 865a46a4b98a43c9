"""``--fail-fast``: the record that stops a run is named and kept.

The batch holding it is not loaded (nothing after the failure loads), but the record's reject
rows are written, with a ledger row of its own: one record in, none loaded, under the batch's
number and the shard ``STOP_SHARD``. The run's counts, taken from the ledger, then count it, and
``pipeline rejects`` shows it. Resuming the run removes both first (``forget_stop``): the resumed
run reads the whole batch again and rejects the record itself.
"""

from __future__ import annotations

import polars as pl
from loguru import logger

from pipeline.errors import DatabaseError, RunStopped
from pipeline.load.connection import Connection
from pipeline.load.ledger import forget_records, ingest_rejects, record_batch, run_history
from pipeline.run.rejects_file import RejectsFile
from pipeline.run.report import RunResult

# The shard of the ledger row of a record that stopped a run: no shard of a batch has it.
STOP_SHARD = -1


def first_failure(rejects: pl.DataFrame) -> pl.DataFrame:
    """Pure: the reject rows of a batch's first failed record (a batch reads one file).
    Duplicates are no failures."""
    failed = rejects.filter(pl.col("category") != "deduplication")
    return failed.filter(pl.col("source_line") == pl.col("source_line").min())


def stop_at(
    keeper: Connection | RejectsFile, result: RunResult, number: int, rejects: pl.DataFrame
) -> RunStopped:
    """Keep the first failed record of batch ``number`` (of its ``rejects``) and say why the
    run stops: in the ledger (nothing of the batch is being loaded: the connection is free), or
    in a dry run's rejects file."""
    record = first_failure(rejects)
    file, line = record["source_file"][0], int(record["source_line"][0])
    if isinstance(keeper, RejectsFile):
        keeper.write(result.run_id, record)
        kept = f"its reject is in {keeper.path}"
    else:
        kept = _recorded(keeper, result, number, record)
    reasons = ", ".join(record["reason"].unique(maintain_order=True))
    # A reject's message says what is wrong, then what to do ("...; fix the value ..."): the what.
    what = record["message"][0].rpartition("; ")[0] or record["message"][0]
    dry = isinstance(keeper, RejectsFile)
    go_on = "without --fail-fast" if dry else f"`pipeline migrate --resume {result.run_id}`"
    message = (
        f"stopped at batch {number} (--fail-fast): {file} line {line} failed: {reasons} ({what}); "
        f"{kept}; the rest of batch {number} was not loaded, earlier batches are committed. Fix "
        f"the record, or go on past failed records: {go_on}"
    )
    return RunStopped(message, run_id=result.run_id, result=result)


def _recorded(loader: Connection, result: RunResult, number: int, record: pl.DataFrame) -> str:
    """Record a stopping record's reject with a ledger row of its own; what became of it."""
    file, line = record["source_file"][0], int(record["source_line"][0])
    ledger = {
        "source_file": file,
        "first_line": line,
        "last_line": line,
        "rows_in": 1,
        "seconds": 0.0,
        "shard": STOP_SHARD,
    }
    kept = f"its reject is recorded (`pipeline rejects --run {result.run_id}`)"
    try:
        with loader.transaction("recording the record that stopped the run"):
            ingest_rejects(loader, result.run_id, record)
            record_batch(loader, result.run_id, number, ledger, 0)
    except DatabaseError as exc:  # the stop itself matters more
        logger.warning("could not record the record that stopped run {}: {}", result.run_id, exc)
        kept = "its reject could not be recorded"
    return kept


def forget_stop(loader: Connection, result: RunResult) -> None:
    """Before a resumed run goes on: remove the record that stopped it (its reject rows and
    ledger row), to be read again with its batch, and count ``result`` without it."""
    if not forget_records(loader, result.run_id, STOP_SHARD):
        return
    result.count_committed(*run_history(loader, result.run_id))
