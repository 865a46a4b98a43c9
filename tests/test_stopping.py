"""Runs that stop on their way: Ctrl-C on Dask workers, a server whose disk is full. Each stops
in seconds with one line saying how to resume, and the resumed run leaves what a clean run
leaves."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import BatchConfig, migrate
from pipeline.datasets import get_dataset
from pipeline.load.connection import Connection, connected
from pipeline.load.databases import fresh_database
from pipeline.load.ledger import ensure_schema
from pipeline.load.server import start_embedded, stop_embedded
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


def test_ctrl_c_on_workers_stops_in_seconds_and_resumes_to_the_clean_runs_result(
    server_url, export, clean_state
):
    """Ctrl-C reaches the whole process group, the Dask workers too: the run stops after the
    batches in hand, as in one process, with no worker's traceback."""
    url = fresh_database(server_url, "stopping_ctrl_c")
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
        try:
            _, stderr = run.communicate(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            pytest.fail(f"still running {STOP_SECONDS}s after Ctrl-C:\n{run.communicate()[1]}")
        assert time.monotonic() - pressed < STOP_SECONDS
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.communicate()
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
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


DISK_FULL = """CREATE FUNCTION pretend_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    IF (SELECT count(*) FROM memories) > 2000 THEN
        RAISE EXCEPTION 'could not extend file "base/1/2": No space left on device'
            USING ERRCODE = 'disk_full', HINT = 'Check free disk space.';
    END IF;
    RETURN NULL;
END $$"""


def test_a_disk_full_error_stops_the_run_with_its_resume_command_on_the_error_line(
    server_url, export, clean_state
):
    """The server raises the disk-full error (SQLSTATE 53100) once memories hold 2,000 rows,
    as a full disk would; freed, the run resumes to what a clean run leaves."""
    url = fresh_database(server_url, "stopping_disk_full")
    with connected(url) as db:
        ensure_schema(db, get_dataset("memories"))
        db.execute(DISK_FULL)
        db.execute(
            "CREATE TRIGGER pretend_disk_full AFTER INSERT ON memories "
            "FOR EACH STATEMENT EXECUTE FUNCTION pretend_disk_full()"
        )
    secret = url.replace("postgres:@", "postgres:s3cr#t?pw@", 1)
    full = cli("migrate", export, "--db", secret, "--batch-size", BATCH, "--run-id", "D", "--quiet")
    assert full.returncode == 1, full.stderr
    (said,) = error_lines(full.stderr)
    assert "the server's disk is full" in said
    assert "then resume the run with `pipeline migrate --resume D --db 'postgresql://***@/" in said
    assert "s3cr#t?pw" not in full.stdout + full.stderr
    with connected(url) as db:
        assert rows(db, "SELECT status FROM pipeline_runs WHERE run_id = 'D'")[0]["status"] == "failed"
        db.execute("DROP TRIGGER pretend_disk_full ON memories")
    resumed = cli("migrate", "--resume", "D", "--db", secret, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert final_state(url) == clean_state


@pytest.fixture
def small_disk(tmp_path):
    """A filesystem of its own (a tmpfs, mounted as root), to fill."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({mounted.stderr.strip()})")
    try:
        yield mount_point
    finally:
        stop_embedded(mount_point / "home")
        subprocess.run(["umount", str(mount_point)], check=True)


def resize(mount_point: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)], check=True)


def test_a_server_whose_disk_fills_stops_the_run_and_resumes_once_freed(
    tmp_path, small_disk, export, clean_state
):
    """The server's data fill its filesystem: the run fails (exit 1) naming its resume command;
    the filesystem grown, the resumed run leaves what a clean run leaves."""
    home = small_disk / "home"
    start_embedded(home)
    stop_embedded(home)
    # The write-ahead log on another filesystem, as ``initdb --waldir`` puts it: when the log
    # cannot grow the server stops at once (PANIC), when a table cannot it refuses the statement.
    wal, owner = tmp_path / "wal", (home / "pgdata").stat()
    shutil.move(home / "pgdata" / "pg_wal", wal)
    for path in (wal, *wal.rglob("*")):  # copied to the other filesystem, by this user
        os.chown(path, owner.st_uid, owner.st_gid)
    (home / "pgdata" / "pg_wal").symlink_to(wal)
    url = start_embedded(home)
    used = os.statvfs(small_disk)
    resize(small_disk, str((used.f_blocks - used.f_bfree) * used.f_frsize + 4 * 2**20))
    full = cli("migrate", export, "--db", url, "--batch-size", BATCH, "--run-id", "F", "--quiet")
    assert full.returncode == 1, full.stderr
    (said,) = error_lines(full.stderr)
    assert "No space left on device" in said and "the server's disk is full" in said
    assert "then resume the run with `pipeline migrate --resume F --db 'postgresql://postgres:@/" in said
    assert 0 < committed_batches(url, "F") < RECORDS // int(BATCH)
    resize(small_disk, "256m")
    resumed = cli("migrate", "--resume", "F", "--db", url, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert final_state(url) == clean_state
    db = Connection(url)
    assert rows(db, "SELECT status FROM pipeline_runs WHERE run_id = 'F'")[0]["status"] == "completed"
    db.close()
