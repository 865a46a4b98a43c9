"""End-to-end migrations into a real PostgreSQL: counts, stored rows, reruns, refusals."""

import json

import pytest

from pipeline import BatchConfig, RunStopped, migrate
from pipeline.testing import run
from tests.conftest import ROOT, TOTALS, assert_invariant, memory, rows, write_jsonl

SAMPLE = ROOT / "data" / "sample.jsonl"
EXPECTED = json.loads((ROOT / "data" / "sample.expected.json").read_text())


@pytest.mark.parametrize("batch_size", [97, 10_000])
def test_sample_counts_match_the_generators_ground_truth(db_url, db, batch_size):
    result = run([SAMPLE], db_url, batch_size=batch_size)
    assert_invariant(result, db)
    assert result.status == "completed"
    assert (result.processed, result.successful) == (EXPECTED["records"], EXPECTED["loaded"])
    assert (result.parse_errors, result.validation_errors) == (EXPECTED["parse"], EXPECTED["validation"])
    assert (result.duplicates_skipped, result.similar_merged, result.database_errors) == (
        EXPECTED["by_reason"]["exact_duplicate"],
        EXPECTED["by_reason"]["similar_duplicate"],
        EXPECTED["database"],
    )
    stored = rows(db, "SELECT source_line, category, reason, duplicate_of FROM pipeline_rejects")
    by_line: dict[str, dict] = {}
    for row in stored:
        entry = by_line.setdefault(str(row["source_line"]), {"category": row["category"], "reasons": []})
        entry["reasons"].append(
            row["reason"].split(":")[0] if row["category"] == "database" else row["reason"]
        )
        if row["duplicate_of"]:
            entry["duplicate_of"] = row["duplicate_of"]
    expected = {line: {**e, "reasons": sorted(e["reasons"])} for line, e in EXPECTED["lines"].items()}
    assert {line: {**e, "reasons": sorted(e["reasons"])} for line, e in by_line.items()} == expected
    assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == EXPECTED["loaded"]


def test_a_run_writes_the_users_tables_and_its_own_ledger_only(db_url, db):
    run([SAMPLE], db_url, batch_size=97)
    tables = rows(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    users = {"memories", "emotional_contexts", "relationship_dynamics"}
    ledger = {"pipeline_runs", "pipeline_batches", "pipeline_rejects", "pipeline_merges", "pipeline_schema"}
    assert {t["table_name"] for t in tables} == users | ledger


def test_stored_rows_have_the_contract_types_and_children(db_url, db, tmp_path):
    record = memory(
        1,
        participants=[{"id": "p1", "name": "Zoë", "role": "friend"}],
        emotionalContext={
            "primaryMood": "mixed",
            "intensity": 4,
            "themes": ["travel"],
            "temporalPatterns": {"timeOfDay": "evening"},
        },
        relationshipDynamics={
            "id": "rd-x",
            "overallDynamics": {"closeness": 0.8},
            "communicationPatterns": ["banter"],
        },
    )
    result = run([write_jsonl(tmp_path / "in.jsonl", [record, memory(2)])], db_url)
    assert result.successful == 2
    [stored] = rows(
        db,
        "SELECT id, source_message_ids, participants::text AS p, summary, confidence, "
        "length(content_hash) AS h, extracted_at FROM memories WHERE id = 'mem-1'",
    )
    assert stored["source_message_ids"] == ["m1-a", "m1-b"]
    assert json.loads(stored["p"]) == [{"id": "p1", "name": "Zoë", "role": "friend"}]
    assert (stored["confidence"], stored["h"]) == (7, 64)
    assert stored["extracted_at"].isoformat() == "2024-05-01T10:00:00+00:00"
    [context] = rows(
        db,
        "SELECT id, memory_id, primary_mood, intensity, themes::text AS t, "
        "emotional_markers::text AS m, temporal_patterns->>'timeOfDay' AS tod FROM emotional_contexts",
    )
    assert context == {
        "id": "ec-mem-1",
        "memory_id": "mem-1",
        "primary_mood": "mixed",
        "intensity": 4,
        "t": '["travel"]',
        "m": "[]",
        "tod": "evening",
    }
    [dynamics] = rows(
        db,
        "SELECT id, overall_dynamics->>'closeness' AS c, participant_dynamics::text AS p, "
        "communication_patterns::text AS cp FROM relationship_dynamics",
    )
    assert dynamics == {"id": "rd-x", "c": "0.8", "p": "{}", "cp": '["banter"]'}


def test_rerun_loads_nothing_new_and_accounts_for_every_record(db_url, db):
    first = run([SAMPLE], db_url, batch_size=300)
    second = run([SAMPLE], db_url, batch_size=300, recheck=True)
    assert_invariant(second, db)
    assert second.successful == 0
    assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == first.successful
    assert second.duplicates_skipped == first.successful + first.duplicates_skipped
    assert second.failed == first.failed


def test_standard_mode_turns_duplicates_into_database_rejects(db_url, db, tmp_path):
    twin = memory(2, summary=memory(1)["summary"].upper(), sourceMessageIds=memory(1)["sourceMessageIds"])
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), twin, memory(3)])
    result = run([path], db_url, mode="standard")
    assert_invariant(result, db)
    assert (result.successful, result.database_errors, result.duplicates_skipped) == (2, 1, 0)
    [reject] = rows(db, "SELECT source_line, reason, message FROM pipeline_rejects")
    assert reject["source_line"] == 2
    assert reject["reason"] == "unique_violation:memories_content_hash_key"
    assert "SQLSTATE 23505" in reject["message"]
    rerun = run([path], db_url, mode="standard", recheck=True)
    assert (rerun.successful, rerun.database_errors) == (0, 3)


def test_id_conflicts_in_one_batch_and_against_stored_rows_cost_only_those_records(db_url, db, tmp_path):
    run([write_jsonl(tmp_path / "a.jsonl", [memory(1)])], db_url)
    records = [
        memory(2),
        memory(3, id="mem-2", summary="other"),
        memory(4),
        memory(5, id="mem-1", summary="x"),
    ]
    result = run([write_jsonl(tmp_path / "b.jsonl", records)], db_url)
    assert_invariant(result, db)
    assert (result.successful, result.database_errors) == (2, 2)
    assert sorted(r["id"] for r in rows(db, "SELECT id FROM memories")) == ["mem-1", "mem-2", "mem-4"]
    refused = rows(
        db, "SELECT source_line, reason FROM pipeline_rejects WHERE run_id = $1 ORDER BY 1", result.run_id
    )
    assert refused == [
        {"source_line": 2, "reason": "unique_violation:memories_pkey"},
        {"source_line": 4, "reason": "unique_violation:memories_pkey"},
    ]


def test_without_validation_the_database_judges_and_a_refused_child_removes_the_whole_record(
    db_url, db, tmp_path
):
    records = [
        memory(1),
        memory(2, emotionalContext={"primaryMood": "angry", "intensity": 3}),
        memory(3, confidence=42),
        memory(4, emotionalContext={"primaryMood": "mixed", "intensity": 2}),
    ]
    result = run([write_jsonl(tmp_path / "in.jsonl", records)], db_url, validate_first=False)
    assert_invariant(result, db)
    assert (result.successful, result.database_errors) == (2, 2)
    assert sorted(r["id"] for r in rows(db, "SELECT id FROM memories")) == ["mem-1", "mem-4"]
    assert [r["memory_id"] for r in rows(db, "SELECT memory_id FROM emotional_contexts")] == ["mem-4"]
    reasons = rows(db, "SELECT source_line, reason FROM pipeline_rejects ORDER BY 1")
    assert reasons == [
        {"source_line": 2, "reason": "check_violation:emotional_contexts_primary_mood_check"},
        {"source_line": 3, "reason": "check_violation:memories_confidence_check"},
    ]


def test_fail_fast_rolls_back_the_failing_batch_and_keeps_earlier_ones(db_url, db, tmp_path):
    records = [memory(1), memory(2), memory(3, confidence=0), memory(4)]
    with pytest.raises(RunStopped, match="--resume"):
        run([write_jsonl(tmp_path / "in.jsonl", records)], db_url, batch_size=2, continue_on_error=False)
    assert [r["id"] for r in rows(db, "SELECT id FROM memories ORDER BY id")] == ["mem-1", "mem-2"]
    assert rows(db, "SELECT status FROM pipeline_runs")[0]["status"] == "aborted"


def test_max_errors_aborts_after_the_batch_that_crosses_it(db_url, db, tmp_path):
    records = [memory(1), memory(2, confidence=0), memory(3, confidence=0), memory(4)]
    with pytest.raises(RunStopped, match="max-errors 1") as stopped:
        run([write_jsonl(tmp_path / "in.jsonl", records)], db_url, batch_size=3, max_errors=1)
    assert stopped.value.result.failed == 2
    [run_row] = rows(db, "SELECT status, result FROM pipeline_runs")
    assert run_row["status"] == "aborted"
    assert json.loads(run_row["result"])["processed"] == 3


def test_every_format_loads_the_same_records(db_url, db, tmp_path):
    import polars as pl

    records = [memory(1, emotionalContext={"primaryMood": "mixed", "intensity": 2}), memory(2)]
    jsonl = write_jsonl(tmp_path / "in.jsonl", records)
    array = tmp_path / "in.json"
    array.write_text(json.dumps([memory(3), memory(4)]))
    frame = pl.read_ndjson(jsonl).with_columns(
        id=pl.col("id") + "-pq", sourceMessageIds=pl.col("sourceMessageIds").list.eval(pl.element() + "-pq")
    )
    frame.write_parquet(tmp_path / "in.parquet")
    csv = tmp_path / "in.csv"
    csv.write_text(
        "id,summary,confidence,participants,sourceMessageIds\n"
        'c1,"multi\nline ""quoted""",5,"[{""id"":""p"",""name"":""N"",""role"":""r""}]","[""x""]"\n'
    )
    result = run([jsonl, array, tmp_path / "in.parquet", csv], db_url)
    assert_invariant(result, db)
    assert (result.processed, result.successful) == (7, 7)
    assert rows(db, "SELECT summary FROM memories WHERE id = 'c1'") == [{"summary": 'multi\nline "quoted"'}]
    assert rows(db, "SELECT count(*) AS n FROM emotional_contexts")[0]["n"] == 2


def test_the_api_takes_path_objects_for_files_and_directories(db_url, db, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [memory(1), memory(2)])
    single = write_jsonl(tmp_path / "b.jsonl", [memory(3)])
    result = migrate([folder, single], BatchConfig(log_progress=False), db_url=db_url)
    assert (result.processed, result.successful) == (3, 3)
    assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == 3


def test_report_has_the_contract_fields(db_url, tmp_path):
    result = run([SAMPLE], db_url, batch_size=400)
    report = result.to_dict()
    for key in (
        "run_id",
        "status",
        *TOTALS,
        "success_rate",
        "deduplication_rate",
        "seconds",
        "rows_per_second",
        "peak_rss_mb",
        "batch_size",
        "batches",
    ):
        assert key in report
    assert [b["rows_in"] for b in report["batches"]] == [400, 400, EXPECTED["records"] - 800]
    assert sum(b["loaded"] for b in report["batches"]) == report["successful"]
    assert sum(report["errors_by_reason"].values()) >= report["failed"] + report["duplicates_skipped"]


def test_many_refused_child_rows_in_one_batch_cost_only_their_records(db_url, db, tmp_path):
    """Child ids that repeat are refused by the server; each refusal removes its whole record."""
    context = {"id": "ec-shared", "primaryMood": "mixed", "intensity": 2}
    records = [memory(n, emotionalContext=context if n % 3 == 0 else None) for n in range(1, 301)]
    result = run([write_jsonl(tmp_path / "in.jsonl", records)], db_url)
    assert_invariant(result, db)
    refused = rows(db, "SELECT source_line, reason FROM pipeline_rejects ORDER BY source_line")
    assert [r["source_line"] for r in refused] == list(range(6, 301, 3))
    assert {r["reason"] for r in refused} == {"unique_violation:emotional_contexts_pkey"}
    assert result.successful == 300 - len(refused)
    stored = {r["id"] for r in rows(db, "SELECT id FROM memories")}
    assert "mem-3" in stored and "mem-6" not in stored and "mem-300" not in stored and "mem-299" in stored
    assert rows(db, "SELECT memory_id FROM emotional_contexts") == [{"memory_id": "mem-3"}]


def test_a_ledger_from_before_shards_keys_its_batches_by_shard_too(db_url, db, tmp_path):
    """A database whose ledger keyed a batch by its number alone gains the shard column (its
    rows shard 0), and a run with two shards records a row per batch and shard."""
    with db.transaction("an old ledger"):
        db.execute(
            "CREATE TABLE pipeline_runs (run_id text PRIMARY KEY, started_at timestamptz NOT NULL,"
            " finished_at timestamptz, status text NOT NULL, config jsonb NOT NULL,"
            " inputs jsonb NOT NULL, result jsonb)"
        )
        db.execute(
            "CREATE TABLE pipeline_batches (run_id text NOT NULL REFERENCES pipeline_runs(run_id),"
            " batch_no integer NOT NULL, source_file text NOT NULL, first_line bigint NOT NULL,"
            " last_line bigint NOT NULL, rows_in integer NOT NULL, loaded integer NOT NULL,"
            " rejected integer NOT NULL, seconds double precision NOT NULL,"
            " committed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run_id, batch_no))"
        )
        db.execute("INSERT INTO pipeline_runs VALUES ('old', now(), now(), 'completed', '{}', '[]', NULL)")
        db.execute("INSERT INTO pipeline_batches VALUES ('old', 1, 'a.jsonl', 1, 5, 5, 5, 0, 0.1)")
    export = write_jsonl(tmp_path / "in.jsonl", [memory(n) for n in range(40)])
    for run_id, shards in (("one", 1), ("two", 2)):
        config = BatchConfig(log_progress=False, batch_size=15, shards=shards, max_connections=2 * shards)
        assert_invariant(migrate([str(export)], config, db_url=db_url, run_id=run_id, recheck=True), db)
    ledger = rows(db, "SELECT run_id, batch_no, shard, rows_in FROM pipeline_batches ORDER BY 1, 2, 3")
    assert [r for r in ledger if r["run_id"] == "old"] == [
        {"run_id": "old", "batch_no": 1, "shard": 0, "rows_in": 5}
    ]
    assert {(r["batch_no"], r["shard"]) for r in ledger if r["run_id"] == "two"} == {
        (b, s) for b in (1, 2, 3) for s in (0, 1)
    }
    assert sum(r["rows_in"] for r in ledger if r["run_id"] == "two") == 40
    assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == 40
