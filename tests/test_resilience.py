"""Killed processes, a restarted server, refused rows, hostile input: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline import BatchConfig, DatabaseError, migrate
from pipeline.datasets import get_dataset
from pipeline.errors import TransientDatabaseError
from pipeline.load.connection import Connection
from pipeline.load.databases import fresh_database
from pipeline.load.ledger import ensure_schema
from pipeline.load.server import start_embedded, stop_embedded
from pipeline.run import lane
from tests.conftest import ROOT, assert_invariant, final_state, memory, rows, write_jsonl

SAMPLE = ROOT / "data" / "sample.jsonl"
BATCH = "97"
# Where a migration is killed: (checkpoint, how many times it is reached first).
KILL_POINTS = [
    ("read", 1),  # before anything is loaded
    ("read", 4),  # while reading, three batches committed
    ("staged", 3),  # right after validation
    ("keys", 2),  # inside the transaction, after the stored-key lookup
    ("copy", 1),  # after the first COPY of memories
    ("copy", 5),  # after a child table's COPY
    ("rejects", 3),  # after the rejects' COPY
    ("commit", 6),  # just before COMMIT
    ("committed", 2),  # just after COMMIT, before the runner counted it
    ("accounted", 7),  # after the runner counted a batch
    ("finish", 1),  # every batch committed, the run not yet marked completed
]


def cli_migrate(
    db_url: str, *args: str, kill_at: str | None = None, source: Path = SAMPLE
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIPELINE_KILL_AT": kill_at or ""}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "migrate",
            str(source),
            "--db",
            db_url,
            "--batch-size",
            BATCH,
            "--quiet",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def clean_state(server_url):
    url = fresh_database(server_url, "resilience_clean")
    done = cli_migrate(url, "--run-id", "R")
    assert done.returncode == 0, done.stderr
    state = final_state(url)
    # The accounting invariant, for this run and so for every killed run that resumes to it.
    totals = state["totals"]
    not_loaded = totals["failed"] + totals["duplicates_skipped"] + totals["similar_merged"]
    assert totals["processed"] == totals["successful"] + not_loaded
    assert len({(path, line) for path, line, *_ in state["rejects"]}) == not_loaded
    return state


@pytest.mark.parametrize(("point", "nth"), KILL_POINTS, ids=[f"{p}-{n}" for p, n in KILL_POINTS])
def test_sigkill_anywhere_then_resume_gives_the_clean_runs_result(server_url, clean_state, point, nth):
    url = fresh_database(server_url, f"killed_{point}_{nth}")
    killed = cli_migrate(url, "--run-id", "R", kill_at=f"{point}:{nth}")
    assert killed.returncode == -9, killed.stderr
    resumed = cli_migrate(url, "--resume", "R")
    assert resumed.returncode == 0, resumed.stderr
    assert final_state(url) == clean_state
    assert clean_state["batches"]["n"] == clean_state["batches"]["d"] == 11
    assert clean_state["pending_merges"] == 0
    assert sum(bool(m[3]) for m in clean_state["memories"]) > 0


def test_a_run_killed_in_its_first_batch_has_recorded_its_inputs(server_url, tmp_path):
    # Inputs are hashed beside the start of the run; the hashes are recorded before the first
    # batch loads, so a run killed inside it still refuses a changed input on resume.
    url = fresh_database(server_url, "killed_first_batch")
    source = tmp_path / "in.jsonl"
    shutil.copy(SAMPLE, source)
    killed = cli_migrate(url, "--run-id", "R", kill_at="copy:1", source=source)
    assert killed.returncode == -9, killed.stderr
    with source.open("a") as handle:
        handle.write(json.dumps(memory(9999)) + "\n")
    changed = cli_migrate(url, "--resume", "R", source=source)
    assert changed.returncode == 2
    assert "input files changed" in changed.stderr


def test_resume_refuses_changed_input_or_settings(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2), memory(3)])
    config = BatchConfig(batch_size=1, log_progress=False, max_errors=0)
    write_jsonl(tmp_path / "bad.jsonl", [memory(1), "{broken", memory(3)])
    with pytest.raises(Exception, match="max-errors"):
        migrate([str(tmp_path / "bad.jsonl")], config, db_url=db_url, run_id="R")
    with pytest.raises(Exception, match="input files changed"):
        migrate([str(path)], config, db_url=db_url, resume="R")
    with pytest.raises(Exception, match="batch_size was 1, now 2"):
        migrate([str(tmp_path / "bad.jsonl")], BatchConfig(batch_size=2), db_url=db_url, resume="R")
    with pytest.raises(Exception, match="no run NOPE"):
        migrate([str(path)], config, db_url=db_url, resume="NOPE")
    result = migrate(
        [str(tmp_path / "bad.jsonl")],
        BatchConfig(batch_size=1, log_progress=False),
        db_url=db_url,
        resume="R",
    )
    assert (result.processed, result.successful, result.parse_errors) == (3, 2, 1)
    with pytest.raises(Exception, match="completed; there is nothing to resume"):
        migrate([str(tmp_path / "bad.jsonl")], config, db_url=db_url, resume="R")


def test_server_stopped_and_restarted_mid_run_the_run_completes(tmp_path):
    home = tmp_path / "restartable"
    url = start_embedded(home)
    source = tmp_path / "big.jsonl"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "data" / "generate.py"),
            "--records",
            "20000",
            "--seed",
            "5",
            "--out",
            str(source),
        ],
        check=True,
    )
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = migrate(
                [str(source)], BatchConfig(batch_size=400, log_progress=False), db_url=url
            )
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    watcher = Connection(url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ledger = watcher.execute("SELECT to_regclass('pipeline_batches') IS NOT NULL AS ready").to_pylist()
        if (
            ledger[0]["ready"]
            and watcher.execute("SELECT count(*) AS n FROM pipeline_batches").to_pylist()[0]["n"] >= 3
        ):
            break
        time.sleep(0.05)
    watcher.close()
    try:
        assert stop_embedded(home)
        time.sleep(1.5)
        start_embedded(home)
        worker.join(timeout=120)
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        db = Connection(url)
        assert_invariant(result, db)
        assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == result.successful
        assert rows(db, "SELECT count(*) AS n, count(DISTINCT batch_no) AS d FROM pipeline_batches")[0] == {
            "n": 50,
            "d": 50,
        }
        db.close()
    finally:
        stop_embedded(home)


def test_unreachable_server_fails_with_one_clear_error(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1)])
    with pytest.raises(DatabaseError, match=re.escape("cannot connect to postgresql://***@127.0.0.1:9/x")):
        migrate([str(path)], BatchConfig(log_progress=False), db_url="postgresql://u:pw@127.0.0.1:9/x")


def test_the_password_never_shows_in_output_reports_or_tables(server_url, tmp_path):
    url = fresh_database(server_url, "secrets")
    secret_url = url.replace("postgresql://postgres:@", "postgresql://postgres:Sup3rS3cret@")
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2, confidence=0)])
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "migrate", str(path), "--db", secret_url, "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "migrate",
            str(path),
            "--db",
            secret_url,
            "--fail-fast",
            "--recheck",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and failed.returncode == 1
    db = Connection(url)
    stored = json.dumps(rows(db, "SELECT config::text, inputs::text, result::text FROM pipeline_runs"))
    stored += json.dumps(rows(db, "SELECT message, raw FROM pipeline_rejects"))
    db.close()
    for text in (done.stdout, done.stderr, failed.stdout, failed.stderr, report.read_text(), stored):
        assert "Sup3rS3cret" not in text


def loaded_with_constraint(
    db_url: str, tmp_path, alteration: list[str], records: list[dict], validate_first: bool = True
):
    db = Connection(db_url)
    ensure_schema(db, get_dataset("memories"))
    for statement in alteration:
        db.execute(statement)
    config = BatchConfig(log_progress=False, validate_first=validate_first)
    result = migrate([str(write_jsonl(tmp_path / "in.jsonl", records))], config, db_url=db_url)
    assert_invariant(result, db)
    refused = rows(db, "SELECT source_line, category, reason, message FROM pipeline_rejects ORDER BY 1")
    stored = sorted(r["id"] for r in rows(db, "SELECT id FROM memories"))
    db.close()
    return result, refused, stored


@pytest.mark.parametrize(
    ("alteration", "bad_fields", "reason", "sqlstate"),
    [
        (
            [
                "CREATE TABLE allowed (summary text PRIMARY KEY)",
                "INSERT INTO allowed SELECT 'Sam and Alex talked about trip number ' || n"
                " FROM generate_series(1, 9) n",
                "ALTER TABLE memories ADD CONSTRAINT memories_summary_fk"
                " FOREIGN KEY (summary) REFERENCES allowed",
            ],
            {"summary": "not in the allowed list"},
            "foreign_key_violation:memories_summary_fk",
            "23503",
        ),
        (
            ["ALTER TABLE memories ALTER COLUMN summary TYPE varchar(45)"],
            {"summary": "a summary that is far too long for the narrowed column"},
            "string_data_right_truncation",
            "22001",
        ),
        (
            [
                "ALTER TABLE memories ADD COLUMN scaled smallint"
                " GENERATED ALWAYS AS (confidence * 4000) STORED"
            ],
            {"confidence": 9},
            "numeric_value_out_of_range",
            "22003",
        ),
        ([], {"summary": "nul \u0000 inside"}, "character_not_in_repertoire", "22021"),
        (
            ["ALTER TABLE memories ADD CONSTRAINT memories_short_summaries CHECK (length(summary) < 50)"],
            {"summary": "x" * 60},
            "check_violation:memories_short_summaries",
            "23514",
        ),
    ],
    ids=["foreign_key", "too_long", "out_of_range", "nul_in_text", "check"],
)
def test_each_constraint_class_rejects_only_the_offending_rows(
    db_url, tmp_path, alteration, bad_fields, reason, sqlstate
):
    records = [memory(n, **(bad_fields if n in (2, 5) else {})) for n in range(1, 8)]
    # A NUL reaches the server only when not validated first (validation refuses it).
    validate_first = sqlstate != "22021"
    result, refused, stored = loaded_with_constraint(db_url, tmp_path, alteration, records, validate_first)
    assert stored == ["mem-1", "mem-3", "mem-4", "mem-6", "mem-7"]
    assert [(r["source_line"], r["category"], r["reason"]) for r in refused] == [
        (2, "database", reason),
        (5, "database", reason),
    ]
    assert all(f"SQLSTATE {sqlstate}" in r["message"] for r in refused)
    assert (result.successful, result.database_errors) == (5, 2)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", (0, 0, 0)),
        (b"\n\n  \n", (0, 0, 0)),
        (b'{"id": "a", "summary": "x\x00y"}\n' + json.dumps(memory(1)).encode() + b"\n", (2, 1, 1)),
        (
            (json.dumps(memory(1, sourceMessageIds=["s\u0000"])) + "\n" + json.dumps(memory(2))).encode(),
            (2, 1, 1),
        ),
        ((json.dumps(memory(1, id="a\u0000")) + "\n" + json.dumps(memory(2))).encode(), (2, 1, 1)),
        (json.dumps(memory(1, summary="z" * 10_000_000)).encode() + b"\n", (1, 1, 0)),
        (json.dumps(memory(1, extra={"nested": [1, 2]}, unknown="kept in raw")).encode() + b"\n", (1, 1, 0)),
        (
            json.dumps(
                memory(1, summary="'); DROP TABLE memories; --", id="x'; DELETE FROM memories; --")
            ).encode()
            + b"\n",
            (1, 1, 0),
        ),
    ],
    ids=[
        "empty_file",
        "only_blank_lines",
        "nul_byte",
        "nul_in_a_source_id",
        "nul_in_an_id",
        "ten_mb_field",
        "unknown_fields",
        "sql_lookalike",
    ],
)
def test_bad_input_never_crashes_the_run(db_url, db, tmp_path, content, expected):
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    result = migrate([str(path)], BatchConfig(log_progress=False), db_url=db_url)
    assert_invariant(result, db)
    assert (result.processed, result.successful, result.failed) == expected
    assert result.status == "completed"


def test_csv_with_only_a_header_is_an_empty_run(db_url, db, tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,summary,confidence\n")
    result = migrate([str(path)], BatchConfig(log_progress=False), db_url=db_url)
    assert (result.processed, result.status) == (0, "completed")


def test_a_serialization_failure_is_retried_and_the_batch_loads_once(db_url, db, tmp_path):
    ensure_schema(db, get_dataset("memories"))
    for statement in (
        "CREATE SEQUENCE flaky_calls",
        """CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF nextval('flaky_calls') = 1 THEN  -- sequences ignore the rollback: fails once
               RAISE EXCEPTION 'simulated conflict' USING ERRCODE = 'serialization_failure';
             END IF;
             RETURN NULL;
           END $$""",
        "CREATE TRIGGER flaky BEFORE INSERT ON memories FOR EACH STATEMENT EXECUTE FUNCTION flaky()",
    ):
        db.execute(statement)
    path = write_jsonl(tmp_path / "in.jsonl", [memory(n) for n in range(1, 6)])
    result = migrate([str(path)], BatchConfig(log_progress=False), db_url=db_url)
    assert_invariant(result, db)
    assert result.successful == 5
    assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == 5
    assert rows(db, "SELECT last_value FROM flaky_calls")[0]["last_value"] >= 2


def test_stored_keys_that_cannot_be_read_fail_the_run_at_once(db_url, db, tmp_path, monkeypatch):
    # The lookup thread reads them while the first batch is prepared; the loader must not
    # retry a batch against a read that already failed (its retries span 31 s).
    def broken(conn, dataset):
        raise TransientDatabaseError("database error while reading the stored keys: connection lost")

    monkeypatch.setattr(lane, "known_keys", broken)
    path = write_jsonl(tmp_path / "in.jsonl", [memory(n) for n in range(1, 6)])
    started = time.monotonic()
    with pytest.raises(DatabaseError, match="reading the stored keys"):
        migrate([str(path)], BatchConfig(log_progress=False), db_url=db_url)
    assert time.monotonic() - started < 10
    assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == 0
    assert rows(db, "SELECT status FROM pipeline_runs") == [{"status": "failed"}]


def test_missing_permissions_stop_at_once_with_what_to_do(db_url, db, tmp_path):
    db.execute("CREATE ROLE limited_user LOGIN")
    limited = db_url.replace("postgresql://postgres:@", "postgresql://limited_user:@")
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1)])
    started = time.monotonic()
    with pytest.raises(DatabaseError, match="grant this user CREATE") as refused:
        migrate([str(path)], BatchConfig(log_progress=False), db_url=limited)
    assert refused.value.sqlstate == "42501"
    assert time.monotonic() - started < 5
