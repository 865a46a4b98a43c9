"""The command line as a user meets it: exit codes, one-line errors, no secrets, help everywhere."""

import json

import pytest

from pipeline.testing import cli
from tests.conftest import ROOT, memory, rows, write_jsonl

COMMANDS = [
    [],
    ["migrate"],
    ["runs"],
    ["rejects"],
    ["replay"],
    ["bench"],
    ["db"],
    ["db", "start"],
    ["db", "stop"],
    ["db", "url"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command):
    done = cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout


def test_migrate_prints_a_summary_writes_the_report_and_exits_0(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2, confidence=0), "{oops"])
    report = tmp_path / "report.json"
    done = cli("migrate", path, "--db", db_url, "--report", report)
    assert done.returncode == 0, done.stderr
    assert "loaded    1 (33.33%)" in done.stdout
    data = json.loads(report.read_text())
    assert (data["processed"], data["successful"], data["failed"]) == (3, 1, 2)
    assert data["errors_by_reason"] == {"confidence:in_range(1,10)": 1, "invalid_json": 1}


def test_quiet_prints_nothing_on_success(db_url, tmp_path):
    done = cli("migrate", write_jsonl(tmp_path / "in.jsonl", [memory(1)]), "--db", db_url, "--quiet")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["migrate", "missing.jsonl"], "error: missing.jsonl: no such file"),
        (["migrate", "data/sample.jsonl", "--db", "mysql://x"], "is not a postgresql:// URL"),
        (["migrate", "data/sample.jsonl", "--fail-fast", "--max-errors", "3"], "cannot be combined"),
        (["migrate", "data/sample.jsonl", "--dataset", "nope"], "'nope' is not one of 'memories'"),
    ],
)
def test_usage_errors_exit_2_with_one_line_and_no_traceback(args, message):
    done = cli(*args, cwd=ROOT)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1


def test_bad_option_value_is_a_usage_error():
    done = cli("migrate", "data/sample.jsonl", "--batch-size", "0", cwd=ROOT)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_unreachable_database_exits_1_and_never_shows_the_password(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1)])
    done = cli("migrate", path, "--db", "postgresql://user:s3cr3t-pw@127.0.0.1:9/db")
    assert done.returncode == 1
    assert "cannot connect to postgresql://***@127.0.0.1:9/db" in done.stderr
    assert "s3cr3t-pw" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_fail_fast_exits_1_and_says_how_to_resume(db_url, db, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2, confidence=0)])
    done = cli("migrate", path, "--db", db_url, "--fail-fast", "--quiet")
    assert done.returncode == 1
    assert "--resume" in done.stderr
    assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == 0


def test_runs_lists_each_run(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1)])
    cli("migrate", path, "--db", db_url, "--run-id", "first-run", "--quiet")
    done = cli("runs", "--db", db_url)
    assert done.returncode == 0
    assert "first-run  completed" in done.stdout
