"""What a user reads of a run: the report path checked first, the record that stopped a run,
files refused by their shape, what a directory held that was not read, progress that counts
what is done, and a library that stays quiet."""

from __future__ import annotations

import pytest

from pipeline.testing import cli
from tests.conftest import ROOT, memory, rows, write_jsonl

SAMPLE = ROOT / "data" / "sample.jsonl"


def runs_recorded(db) -> int:
    if rows(db, "SELECT to_regclass('pipeline_runs') IS NULL AS absent")[0]["absent"]:
        return 0
    return rows(db, "SELECT count(*) AS n FROM pipeline_runs")[0]["n"]


# --- the report path ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["migrate", "replay"])
@pytest.mark.parametrize("where", ["missing/dir/r.json", "a directory", "under a file"])
def test_a_report_path_that_cannot_be_written_is_refused_before_the_run(command, where, db_url, db, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1)])
    (tmp_path / "afile").write_text("")
    report = {
        "missing/dir/r.json": tmp_path / "missing" / "dir" / "r.json",
        "a directory": tmp_path,
        "under a file": tmp_path / "afile" / "r.json",
    }[where]
    args = ["migrate", path] if command == "migrate" else ["replay", path, "--of", "some-run"]
    done = cli(*args, "--db", db_url, "--report", report)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: --report {report}: cannot write there (")
    assert runs_recorded(db) == 0


def test_a_report_that_cannot_be_written_at_the_end_keeps_the_summary(db_url, db, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2)])
    done = cli("migrate", path, "--db", db_url, "--report", "/dev/full", "--run-id", "R")
    assert done.returncode == 1
    assert "run R: completed" in done.stdout and "loaded    2 (100.0%)" in done.stdout
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: cannot write the report to /dev/full (No space left on device)")
    )
    assert "Traceback" not in done.stderr
    assert rows(db, "SELECT status FROM pipeline_runs WHERE run_id = 'R'") == [{"status": "completed"}]
