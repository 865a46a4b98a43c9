"""``pipeline_runs``: a run's settings, status and result, and its inputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pipeline.load.connection import Connection


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


def run_record(conn: Connection, run_id: str) -> dict | None:
    """A run's row (config and inputs decoded), or None when there is no such run."""
    with conn.transaction("reading the run"):
        found = conn.execute(
            "SELECT run_id, started_at, status, config::text AS config, inputs::text AS inputs "
            "FROM pipeline_runs WHERE run_id = $1",
            (run_id,),
        ).to_pylist()
    if not found:
        return None
    return {
        **found[0],
        "config": json.loads(found[0]["config"]),
        "inputs": json.loads(found[0]["inputs"]),
    }


def runs_reading(conn: Connection, sha256s: list[str]) -> list[dict]:
    """The runs that read (did not skip) an input of one of these SHA-256, the first to finish
    first: each
    ``run_id``, ``status``, ``config`` (decoded) and the input's ``sha256``, once per input."""
    with conn.transaction("reading which runs read these inputs"):
        found = conn.execute(
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
