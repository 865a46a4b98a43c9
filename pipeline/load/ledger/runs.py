"""``pipeline_runs``: a run's settings, status and result, and its inputs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from pipeline.load.connection import Connection
from pipeline.load.results import result_of


def start_run(conn: Connection, run_id: str, started_at: datetime, config: dict, inputs: list[dict]) -> None:
    with conn.transaction("recording the run"):
        conn.execute(
            "INSERT INTO pipeline_runs (run_id, started_at, status, config, inputs) "
            "VALUES ($1, $2, 'running', $3::jsonb, $4::jsonb) "
            "ON CONFLICT (run_id) DO UPDATE SET status = 'running', finished_at = NULL",
            (run_id, started_at, json.dumps(config), json.dumps(inputs)),
        )


def record_inputs(conn: Connection, run_id: str, inputs: list[dict]) -> None:
    with conn.transaction("recording the run's inputs"):
        conn.execute(
            "UPDATE pipeline_runs SET inputs = $2::jsonb WHERE run_id = $1", (run_id, json.dumps(inputs))
        )


@dataclass(frozen=True)
class RunRow:
    """A run as recorded: ``config`` is its ``BatchConfig.to_dict()``, ``inputs`` the fingerprints
    of its inputs (``path``, ``size``, ``sha256``, and ``loaded_by`` for one it skipped)."""

    run_id: str
    started_at: datetime
    status: str
    config: dict
    inputs: list[dict]


_RUN_ROW = (
    "SELECT run_id, started_at, status, config::text AS config, inputs::text AS inputs FROM pipeline_runs"
)


def find_run(conn: Connection, run_id: str) -> RunRow | None:
    """The run ``run_id``, or None when there is no such run."""
    return _run_row(conn, f"{_RUN_ROW} WHERE run_id = $1", (run_id,))


def latest_run(conn: Connection) -> RunRow | None:
    """The run started last, or None when there is none."""
    return _run_row(conn, f"{_RUN_ROW} ORDER BY started_at DESC, run_id DESC LIMIT 1")


def _run_row(conn: Connection, sql: str, parameters: tuple = ()) -> RunRow | None:
    with conn.transaction("reading the run"):
        found = result_of(conn, sql, parameters).to_pylist()
    if not found:
        return None
    row = found[0]
    return RunRow(**{**row, "config": json.loads(row["config"]), "inputs": json.loads(row["inputs"])})


_RUNS_LISTING = """
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


def runs_listing(conn: Connection) -> pa.Table:
    """Every run, oldest first: ``run_id``, ``status``, ``started_at``, ``seconds``, and the
    records ``processed``, ``loaded``, ``failed`` and ``skipped`` (counts so far for a running
    one, from its batches; ``failed`` and ``skipped`` only once it ended), and ``replay_of``."""
    with conn.transaction("listing runs"):
        return result_of(conn, _RUNS_LISTING)


def runs_reading(conn: Connection, sha256s: list[str]) -> list[dict]:
    """The runs that read (did not skip) an input of one of these SHA-256, the first to finish
    first: each
    ``run_id``, ``status``, ``config`` (decoded) and the input's ``sha256``, once per input."""
    with conn.transaction("reading which runs read these inputs"):
        found = result_of(
            conn,
            "SELECT r.run_id, r.status, r.config::text AS config, i->>'sha256' AS sha256 "
            "FROM pipeline_runs r CROSS JOIN LATERAL jsonb_array_elements(r.inputs) AS i "
            "WHERE i->>'sha256' = ANY($1::text[]) AND i->>'loaded_by' IS NULL "
            "ORDER BY r.finished_at NULLS LAST, r.started_at, r.run_id",
            (sha256s,),
        ).to_pylist()
    return [{**run, "config": json.loads(run["config"])} for run in found]


def finish_run(conn: Connection, run_id: str, status: str, result: dict) -> None:
    with conn.transaction("recording the run's result"):
        conn.execute(
            "UPDATE pipeline_runs SET finished_at = $2, status = $3, result = $4::jsonb WHERE run_id = $1",
            (run_id, datetime.now(UTC), status, json.dumps(result)),
        )
