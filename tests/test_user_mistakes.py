"""The mistakes people make in their first hour cost nothing: each runs the real command
against the embedded PostgreSQL and checks the exit code, the message, and that nothing was
written or lost."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from pipeline.testing import cli
from tests.conftest import ROOT, assert_invariant, memory, rows, write_jsonl

SAMPLE = ROOT / "data" / "sample.jsonl"
CHATS = ROOT / "data" / "messages_sample.csv"


def checked(report: dict, db) -> dict:
    """A run's JSON report, once its accounting invariant holds against the stored rejects."""
    assert_invariant(SimpleNamespace(**report), db)
    return report


def pipeline_tables(db) -> list[str]:
    found = rows(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    return sorted(r["table_name"] for r in found)


def run_row(db, run_id: str) -> dict:
    return rows(
        db,
        "SELECT status, result::text AS result, inputs::text AS inputs, config::text AS config "
        "FROM pipeline_runs WHERE run_id = $1",
        run_id,
    )[0]


def ledger(db, run_id: str) -> dict:
    return rows(
        db,
        "SELECT count(*) AS batches, coalesce(sum(rows_in), 0) AS rows_in, "
        "coalesce(sum(loaded), 0) AS loaded FROM pipeline_batches WHERE run_id = $1",
        run_id,
    )[0]


@pytest.mark.parametrize("how", ["--db", "PIPELINE_DB_URL"])
def test_a_url_of_another_kind_never_shows_its_password(how, tmp_path):
    url = "mysql://admin:s3cret-pw@db.example:3306/legacy"
    args, env = (["--db", url], {}) if how == "--db" else ([], {"PIPELINE_DB_URL": url})
    done = cli("migrate", SAMPLE, *args, env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert "is not a postgresql:// URL" in done.stderr
    assert "mysql://***@db.example:3306/legacy" in done.stderr
    assert "s3cret-pw" not in done.stdout + done.stderr


def test_a_password_in_a_libpq_parameter_is_hidden_too(tmp_path):
    done = cli("migrate", SAMPLE, "--db", "postgresql://127.0.0.1:9/db?user=u&password=s3cret-pw")
    assert done.returncode == 1
    assert "password=***" in done.stderr
    assert "s3cret-pw" not in done.stdout + done.stderr


def test_chats_migrated_as_memories_are_refused_before_anything_is_written(db_url, db):
    done = cli("migrate", CHATS, "--db", db_url)
    assert done.returncode == 2
    assert "no field of the memories dataset" in done.stderr
    assert "--dataset messages" in done.stderr
    assert "Traceback" not in done.stderr
    assert pipeline_tables(db) == []


def test_a_jsonl_file_without_any_known_field_is_refused(db_url, db, tmp_path):
    path = write_jsonl(tmp_path / "other.jsonl", [{"user": n, "email": f"u{n}@x.org"} for n in range(5)])
    done = cli("migrate", path, "--db", db_url)
    assert done.returncode == 2
    assert (
        f"{path}: no field of the memories dataset in its first records (it has email, user)" in done.stderr
    )
    assert pipeline_tables(db) == []


def test_a_file_of_only_malformed_lines_is_not_refused_but_rejected(db_url, db, tmp_path):
    path = write_jsonl(tmp_path / "broken.jsonl", ["{oops", "[1, 2"])
    done = cli("migrate", path, "--db", db_url, "--quiet")
    assert done.returncode == 0, done.stderr
    assert rows(db, "SELECT count(*) AS n FROM pipeline_rejects WHERE category = 'parse'")[0]["n"] == 2


def test_a_run_id_that_exists_is_refused_and_the_run_left_untouched(db_url, db, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2)])
    assert cli("migrate", path, "--db", db_url, "--run-id", "X", "--quiet").returncode == 0
    before = (run_row(db, "X"), ledger(db, "X"))
    done = cli("migrate", write_jsonl(tmp_path / "more.jsonl", [memory(3)]), "--db", db_url, "--run-id", "X")
    assert done.returncode == 2
    assert "run X exists already (completed); choose another --run-id" in done.stderr
    assert (run_row(db, "X"), ledger(db, "X")) == before
    assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == 2


def interrupt_after_first_commit(db, args: list, run_id: str) -> subprocess.CompletedProcess:
    """Start a migration as a terminal would and press Ctrl-C once a batch has committed:
    SIGINT to the whole process group."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "migrate", *map(str, args), "--run-id", run_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (
            rows(db, "SELECT 1 FROM pg_tables WHERE tablename = 'pipeline_batches'")
            and ledger(db, run_id)["batches"]
        ):
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_ctrl_c_marks_the_run_interrupted_with_its_committed_counts_and_says_how_to_resume(
    db_url, db, tmp_path
):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(n) for n in range(40_000)])
    done = interrupt_after_first_commit(db, [path, "--db", db_url, "--batch-size", "500"], "C")
    assert done.returncode == 130, done.stderr
    assert "run C interrupted" in done.stderr
    assert "resume it with `pipeline migrate --resume C --db " in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    stopped = run_row(db, "C")
    counted, committed = json.loads(stopped["result"]), ledger(db, "C")
    assert stopped["status"] == "interrupted"
    assert 0 < committed["rows_in"] < 40_000
    assert (counted["processed"], counted["successful"]) == (committed["rows_in"], committed["loaded"])

    resumed = cli("migrate", "--resume", "C", "--db", db_url, "--format", "json")
    assert resumed.returncode == 0, resumed.stderr
    report = checked(json.loads(resumed.stdout), db)
    assert (report["status"], report["processed"], report["successful"]) == ("completed", 40_000, 40_000)
    assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == 40_000


def stopped_run(db_url: str, tmp_path, *settings: str) -> str:
    """A run stopped by --max-errors 0 at its second batch (one bad record), to resume."""
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2), "{oops", memory(4), memory(5)])
    done = cli("migrate", path, "--db", db_url, "--run-id", "R", "--max-errors", "0", "--quiet", *settings)
    assert done.returncode == 1, done.stderr
    return str(path)


def test_resume_takes_the_runs_recorded_settings(db_url, db, tmp_path):
    stopped_run(db_url, tmp_path, "--batch-size", "2", "--mode", "standard")
    done = cli("migrate", "--resume", "R", "--db", db_url, "--report", "-")
    assert done.returncode == 0, done.stderr
    report = checked(json.loads(done.stdout), db)
    assert (report["batch_size"], report["mode"]) == (2, "standard")
    assert (report["processed"], report["successful"], report["parse_errors"]) == (5, 4, 1)
    assert [b["rows_in"] for b in report["batches"]] == [2, 2, 1]


def test_resume_from_another_directory_says_where_the_inputs_were_named(db_url, db, tmp_path):
    (tmp_path / "exports").mkdir()
    write_jsonl(tmp_path / "exports" / "in.jsonl", [memory(1), memory(2), "{oops", memory(4)])
    stopped = cli(
        "migrate", "exports/in.jsonl", "--db", db_url, "--run-id", "R", "--batch-size", "2",
        "--max-errors", "0", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert stopped.returncode == 1, stopped.stderr
    elsewhere = cli("migrate", "--resume", "R", "--db", db_url, cwd=tmp_path / "exports")
    assert elsewhere.returncode == 2
    assert "exports/in.jsonl: no such file" in elsewhere.stderr
    assert "relative to the directory it started in: resume from there" in elsewhere.stderr
    there = cli("migrate", "--resume", "R", "--db", db_url, "--report", "-", cwd=tmp_path)
    assert there.returncode == 0, there.stderr
    checked(json.loads(there.stdout), db)
    assert run_row(db, "R")["status"] == "completed"


def test_runs_counts_a_resumed_runs_work_not_its_pause(db_url, db, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(n) for n in range(6)])
    args = ("migrate", path, "--db", db_url, "--run-id", "P", "--batch-size", "2", "--quiet")
    killed = cli(*args, env={"PIPELINE_KILL_AT": "accounted:1"})
    assert killed.returncode == -signal.SIGKILL
    pause = 4
    time.sleep(pause)
    resumed = cli("migrate", "--resume", "P", "--db", db_url, "--report", "-")
    assert resumed.returncode == 0, resumed.stderr
    checked(json.loads(resumed.stdout), db)
    listed = json.loads(cli("runs", "--db", db_url, "--format", "json").stdout)
    assert [(r["run_id"], r["status"]) for r in listed] == [("P", "completed")]
    assert 0 < listed[0]["seconds"] < pause


def test_resume_refuses_only_a_setting_passed_that_differs(db_url, db, tmp_path):
    path = stopped_run(db_url, tmp_path, "--batch-size", "2")
    differs = cli("migrate", path, "--resume", "R", "--db", db_url, "--batch-size", "3")
    assert differs.returncode == 2
    assert "cannot resume R with other settings (batch_size was 2, now 3)" in differs.stderr
    assert run_row(db, "R")["status"] == "aborted"
    same = cli("migrate", path, "--resume", "R", "--db", db_url, "--batch-size", "2", "--quiet")
    assert same.returncode == 0, same.stderr
    assert run_row(db, "R")["status"] == "completed"


def test_resume_with_another_input_is_refused_when_no_batch_was_committed(db_url, db, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2)])
    killed = subprocess.run(
        [sys.executable, "-m", "pipeline", "migrate", path, "--db", db_url, "--run-id", "K", "--quiet"],
        env={**os.environ, "PIPELINE_KILL_AT": "read:1"},
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL
    recorded = run_row(db, "K")["inputs"]
    other = write_jsonl(tmp_path / "other.jsonl", [memory(7)])
    done = cli("migrate", other, "--resume", "K", "--db", db_url)
    assert done.returncode == 2
    assert "cannot resume K: its input files changed" in done.stderr
    assert run_row(db, "K")["inputs"] == recorded
    write_jsonl(path, [memory(1), memory(2), memory(3)])
    grown = cli("migrate", "--resume", "K", "--db", db_url)
    assert grown.returncode == 2
    assert "its input files changed" in grown.stderr
    assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == 0


def test_a_directory_migrates_its_files_in_name_order(db_url, db, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    write_jsonl(folder / "b.jsonl", [memory(2)])
    write_jsonl(folder / "a.jsonl", [memory(1)])
    (folder / "notes.txt").write_text("not an export")
    done = cli("migrate", folder, "--db", db_url, "--format", "json")
    assert done.returncode == 0, done.stderr
    report = checked(json.loads(done.stdout), db)
    assert report["inputs"] == [str(folder / "a.jsonl"), str(folder / "b.jsonl")]
    assert report["successful"] == 2


def test_a_directory_without_exports_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not an export")
    done = cli("migrate", tmp_path)
    assert done.returncode == 2
    expected = f"{tmp_path}: a directory without .jsonl/.ndjson, .json, .csv/.tsv or .parquet files"
    assert expected in done.stderr


def test_an_empty_input_says_so_and_exits_0(db_url, db, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    done = cli("migrate", empty, "--db", db_url)
    assert done.returncode == 0, done.stderr
    assert f"no records in {empty}" in done.stderr
    assert "processed 0 records" in done.stdout


def test_progress_goes_to_stderr_and_reaches_100_percent(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(n) for n in range(3_000)])
    done = cli("migrate", path, "--db", db_url, "--batch-size", "500")
    assert done.returncode == 0, done.stderr
    assert "100%" in done.stderr
    assert "3,000 records" in done.stderr
    assert "migrating" not in done.stdout and "%" not in done.stdout.replace("(100.0%)", "")


@pytest.mark.parametrize("args", [["--format", "json"], ["--report", "-"]])
def test_the_report_json_alone_on_stdout(args, db_url, db, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), "{oops"])
    done = cli("migrate", path, "--db", db_url, *args)
    assert done.returncode == 0, done.stderr
    report = checked(json.loads(done.stdout), db)
    assert (report["processed"], report["successful"], report["parse_errors"]) == (2, 1, 1)
    assert report["database"].startswith("postgresql://")


def test_runs_and_rejects_print_machine_readable_output(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), "{oops", memory(3, confidence=11)])
    assert cli("migrate", path, "--db", db_url, "--run-id", "M", "--quiet").returncode == 0
    listed = json.loads(cli("runs", "--db", db_url, "--format", "json").stdout)
    assert [(r["run_id"], r["status"], r["processed"], r["failed"]) for r in listed] == [
        ("M", "completed", 3, 2)
    ]
    csv_lines = cli("runs", "--db", db_url, "--format", "csv").stdout.splitlines()
    assert csv_lines[0].startswith("run_id,status,started_at")
    assert csv_lines[1].startswith("M,completed,")
    summary = json.loads(cli("rejects", "--db", db_url, "--format", "json").stdout)
    assert (summary["run_id"], summary["records"]) == ("M", 2)
    queried = cli(
        "rejects", "--db", db_url, "--format", "json", "--sql", "SELECT reason FROM rejects ORDER BY reason"
    )
    assert json.loads(queried.stdout) == [{"reason": "confidence:in_range(1,10)"}, {"reason": "invalid_json"}]


def test_version_short_help_and_choices():
    assert cli("--version").stdout.startswith("pipeline ")
    assert "Usage" in cli("-h").stdout
    shown = cli("migrate", "--help", env={"COLUMNS": "200"}).stdout
    for choices in ("memories|messages", "dedup|standard", "table|json"):
        assert choices in shown
    assert "table|csv|json|parquet" in cli("rejects", "--help", env={"COLUMNS": "200"}).stdout


@pytest.mark.parametrize(
    "command", [["migrate"], ["runs"], ["rejects"], ["replay"], ["bench"], ["db", "start"], ["db", "stop"]]
)
def test_every_command_shows_an_example(command):
    assert "Example: " in cli(*command, "--help", env={"COLUMNS": "200"}).stdout


def test_one_embedded_database_per_user_whatever_the_working_directory(tmp_path):
    home = tmp_path / "home"
    env = {"PIPELINE_DB_URL": "", "PIPELINE_HOME": str(home)}
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1)])
    (tmp_path / "elsewhere").mkdir()
    try:
        first = cli("migrate", path, "--run-id", "H", cwd=tmp_path, env=env)
        assert first.returncode == 0, first.stderr
        assert f"database  postgresql://postgres:@/postgres?host={home}/pgdata" in first.stdout
        again = cli("migrate", path, "--recheck", "--format", "json", cwd=tmp_path / "elsewhere", env=env)
        assert json.loads(again.stdout)["duplicates_skipped"] == 1
        listed = cli("runs", cwd=tmp_path / "elsewhere", env=env)
        assert listed.returncode == 0, listed.stderr
        assert re.search(r"^H +completed", listed.stdout, re.MULTILINE)
        assert listed.stdout.startswith(f"database postgresql://postgres:@/postgres?host={home}/pgdata")
        assert (home / "pgdata" / "PG_VERSION").exists()
        assert not (tmp_path / ".pipeline").exists()
        assert not (tmp_path / "elsewhere" / ".pipeline").exists()
    finally:
        assert cli("db", "stop", env=env).stdout.strip() == "stopped"


def test_a_byte_order_mark_is_skipped_by_the_command(db_url, db, tmp_path):
    path = tmp_path / "windows.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + json.dumps(memory(1)).encode() + b"\n" + json.dumps(memory(2)).encode()
    )
    done = cli("migrate", path, "--db", db_url, "--format", "json")
    assert done.returncode == 0, done.stderr
    report = checked(json.loads(done.stdout), db)
    assert (report["successful"], report["failed"]) == (2, 0)
    assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == 2


def test_a_number_too_large_for_its_type_is_shown_as_written(db_url, db, tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(memory(1)).replace('"confidence": 7', '"confidence": 1e400') + "\n")
    done = cli("migrate", path, "--db", db_url, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert checked(json.loads(done.stdout), db)["errors_by_reason"] == {"confidence:type(integer)": 1}
    message = rows(db, "SELECT message FROM pipeline_rejects")[0]["message"]
    assert "(got 1e400)" in message
