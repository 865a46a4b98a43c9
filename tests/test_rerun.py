"""A rerun of an export already migrated: the content a completed run loaded under the same
rules is not read again; anything less (another content, other rules, a run that did not
complete, ``--recheck``) is decided again as before."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline import BatchConfig, RunStopped, migrate, replay
from pipeline.testing import cli, run
from tests.conftest import ROOT, memory, rows, write_jsonl

SAMPLE = ROOT / "data" / "sample.jsonl"


@pytest.fixture
def export(tmp_path) -> Path:
    """A copy of the sample export: rejects, duplicates and near duplicates of every kind."""
    return Path(shutil.copy(SAMPLE, tmp_path / "export.jsonl"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def written_by(db, run_id: str) -> dict:
    """What a run left in the ledger: its status, reject rows and batches."""
    return {
        "status": rows(db, "SELECT status FROM pipeline_runs WHERE run_id = $1", run_id)[0]["status"],
        "rejects": rows(db, "SELECT count(*) AS n FROM pipeline_rejects WHERE run_id = $1", run_id)[0]["n"],
        "batches": rows(db, "SELECT count(*) AS n FROM pipeline_batches WHERE run_id = $1", run_id)[0]["n"],
    }


def assert_decided_again(result, first) -> None:
    """Every record of ``first``'s input read again: each a duplicate of what is stored, or
    failing as it failed."""
    assert result.skipped_inputs == []
    assert (result.processed, result.successful, result.failed) == (first.processed, 0, first.failed)
    assert result.duplicates_skipped == first.successful + first.duplicates_skipped


def test_a_rerun_of_a_completed_export_reads_nothing_and_names_the_run_that_loaded_it(db_url, db, export):
    first = run([export], db_url, batch_size=300)
    assert written_by(db, first.run_id)["rejects"] > 0
    done = cli("migrate", export, "--db", db_url, "--run-id", "AGAIN", "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["skipped_inputs"] == [
        {"file": str(export), "sha256": sha256(export), "run_id": first.run_id}
    ]
    assert (report["status"], report["processed"], report["batches"]) == ("completed", 0, [])
    assert written_by(db, "AGAIN") == {"status": "completed", "rejects": 0, "batches": 0}
    [said] = [line for line in done.stderr.splitlines() if "not read" in line]
    assert f"{export}: not read, run {first.run_id} migrated the same content" in said
    assert "--recheck" in said


def test_the_summary_names_each_input_not_read(db_url, export, tmp_path):
    first = run([export], db_url)
    other = write_jsonl(tmp_path / "other.jsonl", [memory(90_001), memory(90_002)])
    rerun = run([export, other], db_url)
    assert (rerun.processed, rerun.successful) == (2, 2)
    assert rerun.inputs == [str(export), str(other)]
    [line] = [line for line in rerun.summary().splitlines() if "not read" in line]
    assert line == (
        f"  not read  {export}: run {first.run_id} migrated the same content under the same rules "
        "(--recheck reads it again)"
    )


def test_a_renamed_copy_is_not_read_and_batch_size_is_no_rule(db_url, db, export, tmp_path):
    first = run([export], db_url, batch_size=300)
    copy = Path(shutil.copy(export, tmp_path / "renamed.jsonl"))
    rerun = run([copy], db_url, batch_size=77)
    assert rerun.skipped_inputs == [{"file": str(copy), "sha256": sha256(export), "run_id": first.run_id}]
    assert written_by(db, rerun.run_id) == {"status": "completed", "rejects": 0, "batches": 0}


def test_a_copy_with_one_byte_changed_is_decided_again(db_url, export, tmp_path):
    first = run([export], db_url, batch_size=300)
    changed = tmp_path / "changed.jsonl"
    data = export.read_bytes()
    # A space between a key and its value becomes a tab: the same records, other bytes.
    at = data.index(b'": ') + 2
    changed.write_bytes(data[:at] + b"\t" + data[at + 1 :])
    stat = export.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (changed.stat().st_size, changed.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert_decided_again(run([changed], db_url, batch_size=300), first)


def test_recheck_decides_every_record_again(db_url, db, export):
    first = run([export], db_url, batch_size=300)
    library = migrate([export], BatchConfig(batch_size=300, log_progress=False), db_url=db_url, recheck=True)
    assert_decided_again(library, first)
    done = cli("migrate", export, "--db", db_url, "--recheck", "--run-id", "CHECKED", "--report", "-")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["processed"], report["successful"], report["skipped_inputs"]) == (first.processed, 0, [])
    assert written_by(db, "CHECKED")["batches"] > 0


@pytest.mark.parametrize(
    "rules",
    [{"similarity_threshold": 1.0}, {"mode": "standard"}, {"validate_first": False}],
    ids=["threshold", "mode", "validate-first"],
)
def test_other_decision_rules_decide_again(db_url, export, rules):
    # Their decisions may differ (with a threshold of 1, the near duplicates merged first load).
    first = run([export], db_url, batch_size=300)
    rerun = run([export], db_url, batch_size=300, **rules)
    assert (rerun.skipped_inputs, rerun.processed) == ([], first.processed)


def test_a_run_of_another_dataset_is_no_loader(db_url, db, export):
    first = run([export], db_url)
    # As if a messages run had read the same bytes (no file fits both datasets' shapes).
    db.execute(
        "UPDATE pipeline_runs SET config = jsonb_set(config, '{dataset}', '\"messages\"') WHERE run_id = $1",
        (first.run_id,),
    )
    assert run([export], db_url).processed == first.processed


def test_an_export_a_stopped_run_read_in_part_is_read_again(db_url, db, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2), "{broken", memory(4), memory(5)])
    with pytest.raises(RunStopped) as stopped:
        run([path], db_url, batch_size=2, max_errors=0)
    assert rows(db, "SELECT status FROM pipeline_runs") == [{"status": "aborted"}]
    loaded = stopped.value.result.successful
    assert 0 < loaded < 4
    rerun = run([path], db_url, batch_size=2)
    assert (rerun.skipped_inputs, rerun.processed, rerun.duplicates_skipped) == ([], 5, loaded)


def killed_after_two_batches(db_url: str, *paths) -> None:
    """Run ``K`` over ``paths`` in batches of 3, killed once it has accounted for two."""
    killed = cli(
        "migrate",
        *paths,
        "--db",
        db_url,
        "--run-id",
        "K",
        "--batch-size",
        "3",
        env={"PIPELINE_KILL_AT": "accounted:2"},
    )
    assert killed.returncode == -9, killed.stderr


def test_a_killed_run_is_no_loader_until_it_is_resumed_to_its_end(db_url, db, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(n) for n in range(1, 11)])
    killed_after_two_batches(db_url, path)
    # Two batches committed, a third perhaps (it may have been loading when the run was killed).
    [killed_loaded] = rows(db, "SELECT sum(loaded)::int AS n FROM pipeline_batches WHERE run_id = 'K'")
    again = cli("migrate", path, "--db", db_url, "--run-id", "NEW", "--batch-size", "3", "--report", "-")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["skipped_inputs"], report["processed"]) == ([], 10)
    assert report["successful"] == 10 - killed_loaded["n"]
    assert "run K (running) read the same content in part" in again.stderr
    assert "pipeline migrate --resume K" in again.stderr
    # Resuming goes on with its own input, loaded whole meanwhile.
    resumed = cli("migrate", "--resume", "K", "--db", db_url, "--report", "-")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert (report["processed"], report["successful"], report["skipped_inputs"]) == (
        10,
        killed_loaded["n"],
        [],
    )
    # NEW completed first.
    assert run([path], db_url).skipped_inputs[0]["run_id"] == "NEW"


def test_a_resumed_run_keeps_the_inputs_it_skipped_and_reads_the_rest(db_url, db, export, tmp_path):
    first = run([export], db_url)
    other = write_jsonl(tmp_path / "other.jsonl", [memory(n) for n in range(90_001, 90_011)])
    killed_after_two_batches(db_url, export, other)
    [recorded] = rows(db, "SELECT inputs::text AS inputs FROM pipeline_runs WHERE run_id = 'K'")
    assert [i.get("loaded_by") for i in json.loads(recorded["inputs"])] == [first.run_id, None]
    resumed = cli("migrate", "--resume", "K", export, other, "--db", db_url, "--report", "-")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    skipped = [{"file": str(export), "sha256": sha256(export), "run_id": first.run_id}]
    assert (report["processed"], report["successful"], report["skipped_inputs"]) == (10, 10, skipped)
    assert report["inputs"] == [str(export), str(other)]
    # The run that skipped an input did not load it: a later run names the one that did.
    assert run([export, other], db_url).skipped_inputs[0]["run_id"] == first.run_id


def test_a_replay_reads_its_file_whatever_ran_before(db_url, tmp_path):
    first = run([write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2, confidence=0)])], db_url)
    fixed = write_jsonl(tmp_path / "fixed.jsonl", [memory(2)])
    config = BatchConfig(log_progress=False)
    replays = [replay(fixed, first.run_id, config, db_url=db_url) for _ in range(2)]
    assert [r.resolved for r in replays] == [1, 0]
    assert [(r.run.processed, r.run.skipped_inputs) for r in replays] == [(1, []), (1, [])]
