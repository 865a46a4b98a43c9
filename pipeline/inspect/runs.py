"""The runs of a database: listing them, and finding the one a command names."""

from __future__ import annotations

import json

import polars as pl

from pipeline.errors import PipelineError
from pipeline.inspect.text import arrow_frame, format_rows
from pipeline.load.connection import Connection, connected
from pipeline.load.server import resolve_url


class UnknownRunError(PipelineError):
    """``--run``/``--of`` names no run, or the database holds no run yet."""

    exit_code = 2

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


RUNS_SQL = """
SELECT r.run_id, r.status, r.started_at,
       -- A finished run's own seconds: a resumed run's pause is not its work.
       coalesce((r.result->>'seconds')::float8,
                extract(epoch FROM coalesce(r.finished_at, now()) - r.started_at)::float8) AS seconds,
       coalesce((r.result->>'processed')::bigint, b.rows_in, 0) AS processed,
       coalesce((r.result->>'successful')::bigint, b.loaded, 0) AS loaded,
       (r.result->>'failed')::bigint AS failed,
       (r.result->>'duplicates_skipped')::bigint + (r.result->>'similar_merged')::bigint AS skipped,
       r.config->>'replay_of' AS replay_of
FROM pipeline_runs r
LEFT JOIN (SELECT run_id, sum(rows_in) AS rows_in, sum(loaded) AS loaded
           FROM pipeline_batches GROUP BY run_id) b USING (run_id)
ORDER BY r.started_at"""


def list_runs(db_url: str | None = None) -> pl.DataFrame:
    """Every run, oldest first: status, counts and duration (counts so far for a running one)."""
    with connected(resolve_url(db_url)) as loader:
        if not has_runs_table(loader):
            return pl.DataFrame()
        with loader.transaction("listing runs"):
            return arrow_frame(loader.execute(RUNS_SQL))


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


def resolve_run(loader: Connection, run_id: str | None) -> dict:
    """The run ``run_id`` names (default: the latest one): ``run_id``, ``status``, ``config``."""
    if not has_runs_table(loader):
        raise UnknownRunError("there are no runs in this database yet; start one with `pipeline migrate`")
    with loader.transaction("finding the run"):
        if run_id is None:
            found = loader.execute(
                "SELECT run_id, status, config::text AS config FROM pipeline_runs "
                "ORDER BY started_at DESC, run_id DESC LIMIT 1"
            )
        else:
            found = loader.execute(
                "SELECT run_id, status, config::text AS config FROM pipeline_runs WHERE run_id = $1",
                (run_id,),
            )
    rows = found.to_pylist()
    if not rows and run_id is None:
        raise UnknownRunError("there are no runs in this database yet; start one with `pipeline migrate`")
    if not rows:
        raise UnknownRunError(f"there is no run {run_id!r}; `pipeline runs` lists the runs", run_id=run_id)
    return {**rows[0], "config": json.loads(rows[0]["config"])}


def has_runs_table(loader: Connection) -> bool:
    with loader.transaction("looking for the pipeline's tables"):
        found = loader.execute("SELECT to_regclass('pipeline_runs') IS NOT NULL AS found")
    return bool(found.column(0)[0].as_py())
