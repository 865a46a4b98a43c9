"""Runs that stop on their way: Ctrl-C on Dask workers, a server whose disk is full. Each stops
in seconds with one line saying how to resume, and the resumed run leaves what a clean run
leaves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import BatchConfig, migrate
from pipeline.load.connection import connected
from pipeline.load.databases import fresh_database
from pipeline.testing import cli
from tests.conftest import ROOT, final_state, rows

RECORDS = 8_000
BATCH = "500"
# Seconds from Ctrl-C to the end of the process that a user would wait at most.
STOP_SECONDS = 10


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """The generator's mix (duplicates, near duplicates, taken ids, broken lines)."""
    path = tmp_path_factory.mktemp("stopping") / "export.jsonl"
    done = subprocess.run(
        [sys.executable, ROOT / "data" / "generate.py", "--records", str(RECORDS), "--out", path],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def clean_state(server_url, export) -> dict:
    url = fresh_database(server_url, "stopping_clean")
    migrate([export], BatchConfig(batch_size=int(BATCH), log_progress=False), db_url=url)
    state = final_state(url)
    assert state["totals"]["duplicates_skipped"] and state["totals"]["similar_merged"]
    assert state["totals"]["failed"] and state["batches"]["n"] == RECORDS // int(BATCH)
    return state


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def committed_batches(url: str, run_id: str) -> int:
    with connected(url) as db:
        if rows(db, "SELECT to_regclass('pipeline_batches') IS NULL AS absent")[0]["absent"]:
            return 0
        return rows(db, "SELECT count(*) AS n FROM pipeline_batches WHERE run_id = $1", run_id)[0]["n"]


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_on_workers_stops_in_seconds_and_resumes_to_the_clean_runs_result(
    server_url, export, clean_state, presses
):
    """Ctrl-C reaches the whole process group, the Dask workers too: the run stops after the
    batches in hand (at once when pressed again), as in one process, with no worker's traceback."""
    url = fresh_database(server_url, f"stopping_ctrl_c_{presses}")
    args = ["migrate", export, "--db", url, "--batch-size", BATCH, "--workers", "2", "--run-id", "W"]
    run = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while run.poll() is None and not committed_batches(url, "W") and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGINT)
        pressed = time.monotonic()
        for _ in range(presses - 1):
            time.sleep(0.2)
            os.killpg(run.pid, signal.SIGINT)
        try:
            _, stderr = run.communicate(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_SECONDS}s after Ctrl-C")
        assert time.monotonic() - pressed < STOP_SECONDS
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.communicate()
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr
    (said,) = error_lines(stderr)
    assert "run W interrupted" in said and "resume it with `pipeline migrate --resume W --db " in said
    with connected(url) as db:
        assert rows(db, "SELECT status FROM pipeline_runs WHERE run_id = 'W'")[0]["status"] == "interrupted"
    assert 0 < committed_batches(url, "W") < RECORDS // int(BATCH)

    resumed = cli("migrate", "--resume", "W", "--db", url, "--workers", "2", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    state, clean = final_state(url), dict(clean_state)
    # Workers cut the input in byte ranges, one process in records: batches differ, not results.
    del state["batches"], clean["batches"]
    assert state == clean
