"""Logs a scheduler can read: with --log-format json every stderr line is a JSON event whose
batches add up to the report; with stderr piped, progress comes at a steady interval."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from pipeline.testing import fresh_database
from tests.test_scale_out import inputs  # noqa: F401  (a fixture: rows stored before, an export)

RUN_EVENTS = ("run_started", "batch_committed", "batch_decided", "run_finished")


def events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines()]


@pytest.mark.parametrize(
    "extra", [(), ("--workers", "2", "--shards", "2", "--max-connections", "4"), ("--dry-run",)]
)
def test_json_events_add_up_to_the_report(server_url, inputs, tmp_path, extra):  # noqa: F811
    _, export = inputs
    url = fresh_database(server_url, f"events_{uuid.uuid4().hex[:10]}")
    log_file = tmp_path / "events.jsonl"
    command = [sys.executable, "-m", "pipeline", "migrate", str(export), "--db", url, "--batch-size", "300"]
    command += ["--log-format", "json", "--log-file", str(log_file), "--format", "json", *extra]
    if "--dry-run" in extra:
        command += ["--rejects-file", str(tmp_path / "rejects.parquet")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    said = events(done.stderr)  # every line parses
    kinds = [e["event"] for e in said if e["event"] in RUN_EVENTS]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished", [
        e for e in said if e["event"] not in RUN_EVENTS
    ]
    batch = "batch_decided" if "--dry-run" in extra else "batch_committed"
    batches = [e for e in said if e["event"] == batch]
    assert sum(e["loaded"] for e in batches) == report["successful"]
    assert sum(e["records"] for e in batches) == report["processed"]
    assert all(e["run_id"] == report["run_id"] for e in said if e["event"] in RUN_EVENTS)
    assert next(e for e in said if e["event"] == "run_finished")["successful"] == report["successful"]
    in_file = events(log_file.read_text())
    assert [e["event"] for e in in_file if e["event"] in RUN_EVENTS] == kinds


def test_piped_stderr_gets_a_progress_line_at_a_steady_interval(server_url, inputs):  # noqa: F811
    _, export = inputs
    url = fresh_database(server_url, f"events_{uuid.uuid4().hex[:10]}")
    command = [sys.executable, "-m", "pipeline", "migrate", str(export), "--db", url, "--batch-size", "25"]
    # Each lookup waits a little, so the run lasts several seconds.
    env = {**os.environ, "PIPELINE_DELAY_AT": "lookup", "PIPELINE_DELAY_SECONDS": "0.05"}
    process = subprocess.Popen(
        [*command, "--progress-interval", "1"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    arrivals = [time.monotonic() for _ in process.stderr]
    assert process.wait(timeout=300) == 0
    assert arrivals[-1] - arrivals[0] > 4, "the run should last several seconds"
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert max(gaps) <= 2.0
