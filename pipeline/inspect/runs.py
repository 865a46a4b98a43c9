"""The runs of a database: listing them, and finding the one a command names."""

from __future__ import annotations

import polars as pl

from pipeline.errors import PipelineError
from pipeline.inspect.text import arrow_frame, format_rows
from pipeline.load.connection import Connection, connected
from pipeline.load.ledger import RunRow, find_run, has_ledger, latest_run, runs_listing
from pipeline.load.server import resolve_url


class UnknownRunError(PipelineError):
    """``--run``/``--of`` names no run, or the database holds no run yet."""

    exit_code = 2

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


def list_runs(db_url: str | None = None) -> pl.DataFrame:
    """Every run, oldest first: status, counts and duration (counts so far for a running one)."""
    with connected(resolve_url(db_url)) as loader:
        if not has_ledger(loader):
            return pl.DataFrame()
        return arrow_frame(runs_listing(loader))


def format_runs(runs: pl.DataFrame) -> str:
    """Pure: the runs as a table."""
    if runs.is_empty():
        return "no runs yet: start one with `pipeline migrate FILE`"
    rows = [
        [
            r["run_id"],
            r["status"],
            f"{r['started_at']:%Y-%m-%d %H:%M:%S}",
            _duration(r["seconds"]),
            f"{r['processed']:,}",
            f"{r['loaded']:,}",
            "" if r["failed"] is None else f"{r['failed']:,}",
            "" if r["skipped"] is None else f"{r['skipped']:,}",
            f"replay of {r['replay_of']}" if r["replay_of"] else "",
        ]
        for r in runs.iter_rows(named=True)
    ]
    header = ["run", "status", "started (UTC)", "took", "processed", "loaded", "failed", "skipped", "note"]
    return "\n".join(format_rows(header, rows))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def resolve_run(loader: Connection, run_id: str | None) -> RunRow:
    """The run ``run_id`` names (default: the latest one)."""
    if not has_ledger(loader):
        raise UnknownRunError("there are no runs in this database yet; start one with `pipeline migrate`")
    run = latest_run(loader) if run_id is None else find_run(loader, run_id)
    if run is None and run_id is None:
        raise UnknownRunError("there are no runs in this database yet; start one with `pipeline migrate`")
    if run is None:
        raise UnknownRunError(f"there is no run {run_id!r}; `pipeline runs` lists the runs", run_id=run_id)
    return run
