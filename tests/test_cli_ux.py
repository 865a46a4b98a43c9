"""What a user reads of a run: the report path checked first, the record that stopped a run,
files refused by their shape, what a directory held that was not read, progress that counts
what is done, and a library that stays quiet."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from types import SimpleNamespace

import polars as pl
import pytest
from loguru import logger

from pipeline import inspect as insp
from pipeline.config import BatchConfig
from pipeline.extract import fingerprint, scan_batches
from pipeline.run.migrate import migrate
from pipeline.testing import cli, run
from tests.conftest import ROOT, assert_invariant, memory, rows, write_jsonl

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


# --- fail-fast ------------------------------------------------------------------------------


def test_fail_fast_names_the_failed_record_and_keeps_its_reject(db_url, db, tmp_path):
    records = [memory(1), memory(2), memory(3), memory(4, confidence=0), memory(5), memory(6)]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    done = cli("migrate", path, "--db", db_url, "--batch-size", "3", "--run-id", "F", "--fail-fast", "-q")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert f"{path} line 4 failed: confidence:in_range(1,10)" in line
    assert "--resume F" in line
    kept = rows(db, "SELECT source_line, reason FROM pipeline_rejects WHERE run_id = 'F'")
    assert kept == [{"source_line": 4, "reason": "confidence:in_range(1,10)"}]
    [stopped] = rows(db, "SELECT status, result::text AS result FROM pipeline_runs")
    result = json.loads(stopped["result"])
    assert stopped["status"] == "aborted"
    assert (result["processed"], result["successful"], result["failed"]) == (4, 3, 1)
    assert_invariant(SimpleNamespace(**result), db)

    resumed = cli("migrate", "--resume", "F", "--db", db_url, "--report", "-")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert (report["processed"], report["successful"], report["failed"]) == (6, 5, 1)
    assert report["errors_by_reason"] == {"confidence:in_range(1,10)": 1}
    assert_invariant(SimpleNamespace(**report), db)


def test_fail_fast_on_a_record_the_database_refuses_names_it(db_url, db, tmp_path):
    twin = memory(3, id="mem-1", summary="another memory under a taken id")
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2), twin, memory(4)])
    done = cli("migrate", path, "--db", db_url, "--batch-size", "2", "--run-id", "F", "--fail-fast", "-q")
    assert done.returncode == 1
    assert f"{path} line 3 failed: unique_violation:memories_pkey" in done.stderr
    assert rows(db, "SELECT source_line, category FROM pipeline_rejects") == [
        {"source_line": 3, "category": "database"}
    ]
    assert [r["id"] for r in rows(db, "SELECT id FROM memories ORDER BY id")] == ["mem-1", "mem-2"]


# --- files of the wrong shape ---------------------------------------------------------------


def parquet_of_memories(path, **columns) -> str:
    frame = pl.DataFrame([memory(n) for n in range(1, 21)]).drop("extractedAt")
    frame.with_columns(**columns).write_parquet(path)
    return str(path)


def test_a_parquet_column_no_value_of_can_load_refuses_the_file(db_url, db, tmp_path):
    path = parquet_of_memories(tmp_path / "text.parquet", confidence=pl.col("confidence").cast(pl.String))
    done = cli("migrate", path, "--db", db_url, "-q")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: column confidence holds text (String)")
    assert "reads confidence as an integer" in line
    assert runs_recorded(db) == 0


@pytest.mark.parametrize(
    "columns",
    [
        {"confidence": pl.col("confidence").cast(pl.Float64)},  # integral floats may load
        {"confidence": pl.lit(None, pl.String)},  # a null loads whatever the column's type
    ],
    ids=["float", "null-text"],
)
def test_a_parquet_column_some_value_of_can_load_is_not_refused(columns, db_url, tmp_path):
    path = parquet_of_memories(tmp_path / "in.parquet", **columns)
    done = cli("migrate", path, "--db", db_url, "-q")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("dataset", "header", "row", "refused"),
    [
        ("memories", "id,text,score", "m1,hello,3", True),
        ("memories", "id,content", "m1,hello", False),  # legacy records
        ("memories", "summary,confidence", "hello,3", False),  # legacy records
        ("messages", "Message Date,Sender Name,Text", "2024-01-01 10:00:00,Bob,hi", True),  # no Type
    ],
)
def test_a_csv_header_no_record_can_load_from_refuses_the_file(
    dataset, header, row, refused, db_url, tmp_path
):
    path = tmp_path / "in.csv"
    path.write_text(f"{header}\n{row}\n")
    done = cli("migrate", path, "--db", db_url, "--dataset", dataset, "-q")
    if refused:
        assert done.returncode == 2
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(f"error: {path}: no {dataset} record can load from it: its header (")
    else:
        assert done.returncode == 0, done.stderr


# --- inputs ---------------------------------------------------------------------------------


def test_a_directory_skips_hidden_files_and_names_what_it_ignored(db_url, db, tmp_path):
    folder = tmp_path / "exports"
    (folder / "older").mkdir(parents=True)
    write_jsonl(folder / "a.jsonl", [memory(1)])
    write_jsonl(folder / ".a.jsonl.swp.jsonl", [memory(2)])
    (folder / "notes.txt").write_text("not an export")
    done = cli("migrate", folder, "--db", db_url, "--report", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["inputs"] == [str(folder / "a.jsonl")]
    assert report["ignored_paths"] == [
        {"path": str(folder / ".a.jsonl.swp.jsonl"), "why": "hidden"},
        {"path": str(folder / "notes.txt"), "why": "unknown format"},
        {"path": str(folder / "older"), "why": "directory"},
    ]
    assert f"ignored   {folder / 'notes.txt'} (unknown format)" in done.stdout
    assert [r["id"] for r in rows(db, "SELECT id FROM memories")] == ["mem-1"]


def test_a_glob_matching_a_directory_ignores_it(db_url, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [memory(1)])
    (tmp_path / "b.jsonl").mkdir()
    done = cli("migrate", tmp_path / "*.jsonl", "--db", db_url, "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ignored_paths"] == [{"path": str(tmp_path / "b.jsonl"), "why": "directory"}]


def test_a_file_that_grows_while_it_is_read_is_read_as_it_was(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(n) for n in range(1, 7)])
    before = path.read_bytes()
    batches = scan_batches([path], 2)
    first = next(batches)
    with path.open("a") as handle:
        handle.write("".join(json.dumps(memory(n)) + "\n" for n in range(7, 10)))
    lines = [*first.frame["source_line"], *(line for b in batches for line in b.frame["source_line"])]
    assert lines == [1, 2, 3, 4, 5, 6]
    assert fingerprint(path, len(before)) == {
        "path": str(path),
        "size": len(before),
        "sha256": hashlib.sha256(before).hexdigest(),
    }


def test_a_run_says_which_input_changed_size_while_it_ran(db_url, db, tmp_path):
    # Larger than a read block: the reader is still in the file when the first batch commits.
    path = write_jsonl(tmp_path / "in.jsonl", [memory(n, summary="x" * 400) for n in range(1, 12_001)])
    size = path.stat().st_size
    grown = []

    def grow(message) -> None:
        if not grown and "batch 1 committed" in message:
            with path.open("a") as handle:
                handle.write(json.dumps(memory(99_999)) + "\n")
            grown.append(True)

    logger.enable("pipeline")
    sink = logger.add(grow, level="DEBUG", format="{message}")
    try:
        result = run([path], db_url, batch_size=1_000)
    finally:
        logger.remove(sink)
        logger.disable("pipeline")
    assert grown and result.processed == 12_000
    assert result.resized_inputs == [
        {"path": str(path), "size_at_start": size, "size_at_end": path.stat().st_size}
    ]
    assert f"resized   {path} changed size during the run ({size:,} → " in result.summary()
    [recorded] = json.loads(rows(db, "SELECT inputs::text AS i FROM pipeline_runs")[0]["i"])
    assert recorded["size"] == size
    assert recorded["sha256"] == hashlib.sha256(path.read_bytes()[:size]).hexdigest()


# --- progress and wording -------------------------------------------------------------------


def test_the_library_is_quiet_until_its_logging_is_enabled(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(n) for n in range(1, 5)])
    # The second run reads the file again: it would find it migrated by the first.
    call = f"pipeline.migrate([{str(path)!r}], db_url={db_url!r}, run_id={{!r}}, recheck=True)"
    quiet = subprocess.run(
        [sys.executable, "-c", "import pipeline; " + call.format("q")], capture_output=True, text=True
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    enabled = f"import pipeline; from loguru import logger; logger.enable('pipeline'); {call.format('e')}"
    loud = subprocess.run([sys.executable, "-c", enabled], capture_output=True, text=True)
    assert loud.returncode == 0, loud.stderr
    assert "migrating: 4 records, 100% of the input" in loud.stderr


def test_progress_counts_the_committed_records_and_their_share_of_the_input(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(n) for n in range(1, 13)])
    events = []
    logger.enable("pipeline")
    sink = logger.add(lambda m: events.append(m.record["extra"]), filter=lambda r: "percent" in r["extra"])
    try:
        migrate([path], BatchConfig(batch_size=3), db_url=db_url)
    finally:
        logger.remove(sink)
        logger.disable("pipeline")
    assert [(e["task"], e["records"]) for e in events] == [("migrating", n) for n in (3, 6, 9, 12)]
    for event in events:  # records of one size: the share of records is the share of bytes
        assert abs(event["percent"] - 100 * event["records"] / 12) < 2


def test_the_summary_counts_records_per_second(db_url, tmp_path):
    result = run([write_jsonl(tmp_path / "in.jsonl", [memory(1)])], db_url)
    assert " records/s, peak RSS" in result.summary()
    assert "rows/s" not in result.summary()


def test_near_duplicates_are_described_with_their_score_and_shown_rounded(db_url):
    result = run([SAMPLE], db_url)
    assert result.similar_merged
    table = insp.format_table(
        insp.query("SELECT similarity FROM rejects WHERE similarity IS NOT NULL", db_url)
    )
    scores = table.splitlines()[2:]
    assert scores and all(len(score.strip().partition(".")[2]) <= 3 for score in scores)
    reasons = {r.reason: r.recommendation for r in insp.summarize(db_url).reasons}
    near = reasons["similar_duplicate"].text()
    assert near.startswith(f"{result.similar_merged} records: near duplicates (similarity 0.")
    assert "of kept memories, merged into them" in near
    assert "already loaded" not in reasons["exact_duplicate"].text()


def test_a_run_without_rejects_points_at_none(db_url, tmp_path):
    clean = cli("migrate", write_jsonl(tmp_path / "clean.jsonl", [memory(1)]), "--db", db_url)
    broken = cli("migrate", write_jsonl(tmp_path / "broken.jsonl", ["{not json"]), "--db", db_url)
    assert clean.returncode == broken.returncode == 0
    assert "pipeline rejects" not in clean.stdout
    assert "inspect them: pipeline rejects --run" in broken.stdout
