"""Rejects as a user inspects, exports and replays them, on the sample and a real PostgreSQL."""

import json
from types import SimpleNamespace

import polars as pl
import pytest

from pipeline import BatchConfig, QueryError, UnknownRunError, migrate
from pipeline import inspect as insp
from pipeline.errors import ConfigError
from pipeline.inspect.duck import columns_read
from pipeline.inspect.query import read_tables
from pipeline.load.connection import Connection
from pipeline.replaying import match_origins, replay
from pipeline.testing import cli
from tests.conftest import ROOT, assert_invariant, memory, rows, write_jsonl

SAMPLE = ROOT / "data" / "sample.jsonl"
EXPECTED = json.loads((ROOT / "data" / "sample.expected.json").read_text())
# What the fixing script below repairs; a record failing only these checks loads once fixed.
FIXABLE = {"confidence:in_range(1,10)", "id:not_empty", "extractedAt:iso8601"}


@pytest.fixture
def sample_run(db_url):
    return migrate([str(SAMPLE)], BatchConfig(log_progress=False), db_url=db_url)


def stored_records(db, run_id):
    """The rejected records of a run as the export must hold them: one per record, in order."""
    return rows(
        db,
        "SELECT DISTINCT ON (source_file, source_line) raw, source_file, source_line, run_id "
        "FROM pipeline_rejects WHERE run_id = $1 ORDER BY source_file, source_line",
        run_id,
    )


def fix(line: str, n: int) -> str:
    """What a user's fixing script does: repair three kinds of bad values, leave the rest."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return line
    if not isinstance(record, dict):
        return line
    if record.get("confidence") in (0, 11, 42):
        record["confidence"] = 5
    if record.get("id") == "":
        record["id"] = f"fixed-{n}"
    if record.get("extractedAt") in ("yesterday", "never", "last Tuesday", "31/12/2023"):
        record["extractedAt"] = "2024-01-01T00:00:00Z"
    return json.dumps(record, ensure_ascii=False)


def fixable_records(db, run_id) -> set[int]:
    reasons = rows(
        db,
        "SELECT source_line, array_agg(reason) AS reasons FROM pipeline_rejects "
        "WHERE run_id = $1 GROUP BY source_line",
        run_id,
    )
    return {r["source_line"] for r in reasons if set(r["reasons"]) <= FIXABLE}


def resolved(db, run_id) -> dict[int, str]:
    found = rows(
        db,
        "SELECT DISTINCT source_line, resolved_by FROM pipeline_rejects "
        "WHERE run_id = $1 AND resolved_by IS NOT NULL",
        run_id,
    )
    return {r["source_line"]: r["resolved_by"] for r in found}


def count(db, sql, *params) -> int:
    return rows(db, sql, *params)[0]["n"]


# --- summary ------------------------------------------------------------------------------


def test_summary_counts_equal_pipeline_rejects(db_url, db, sample_run):
    summary = insp.summarize(db_url)
    assert summary.run_id == sample_run.run_id
    stored = rows(
        db,
        "SELECT category, reason, count(*) AS n, count(DISTINCT source_line) AS records "
        "FROM pipeline_rejects WHERE run_id = $1 GROUP BY 1, 2",
        sample_run.run_id,
    )
    assert {(r.category, r.reason): (r.rows, r.records) for r in summary.reasons} == {
        (s["category"], s["reason"]): (s["n"], s["records"]) for s in stored
    }
    per_category = rows(
        db,
        "SELECT category, count(DISTINCT source_line) AS n FROM pipeline_rejects "
        "WHERE run_id = $1 GROUP BY 1",
        sample_run.run_id,
    )
    assert summary.by_category == {r["category"]: r["n"] for r in per_category}
    assert (summary.by_category["parse"], summary.by_category["validation"]) == (6, 50)
    assert summary.records == sample_run.failed + sample_run.duplicates_skipped + sample_run.similar_merged
    assert all(r.sample_raw and r.sample_line for r in summary.reasons)


def test_summary_recommends_what_to_fix_with_the_bad_values_seen(db_url, db, sample_run):
    reasons = {r.reason: r for r in insp.summarize(db_url, sample_run.run_id).reasons}
    confidence = reasons["confidence:in_range(1,10)"]
    raws = rows(db, "SELECT raw FROM pipeline_rejects WHERE reason = 'confidence:in_range(1,10)'")
    seen = {str(json.loads(r["raw"])["confidence"]) for r in raws}
    assert set(confidence.recommendation.values) == seen
    text = confidence.recommendation.text()
    assert text.startswith(
        f"{confidence.records} records: confidence must be an integer from 1 to 10 (seen: "
    )
    assert text.endswith("; fix the value in the source record")
    assert "(got" not in text
    assert reasons["id:not_empty"].recommendation.values == ['""']
    duplicates = reasons["exact_duplicate"].recommendation
    assert duplicates.values_are == "duplicates of" and "no replay" in duplicates.fix
    assert all(r.recommendation.what for r in reasons.values())


def test_summary_text_lists_every_reason(db_url, sample_run):
    text = insp.summarize(db_url).text()
    rejected = sample_run.processed - sample_run.successful
    assert text.startswith(f"run {sample_run.run_id} (completed): {rejected} rejected records (parse 6, ")
    for reason in EXPECTED["by_reason"]:
        assert reason.split(":")[0] in text
    assert f"pipeline replay fix.jsonl --of {sample_run.run_id}" in text


def test_unknown_or_missing_runs_are_named(db_url, sample_run):
    with pytest.raises(UnknownRunError, match="there is no run 'nope'; `pipeline runs` lists the runs"):
        insp.summarize(db_url, "nope")


def test_an_empty_database_has_no_runs_yet(db_url):
    with pytest.raises(UnknownRunError, match="no runs in this database yet"):
        insp.summarize(db_url)
    assert insp.format_runs(insp.list_runs(db_url)).startswith("no runs yet")


# --- SQL ----------------------------------------------------------------------------------


def test_sql_joins_duplicates_to_the_memories_they_repeat(db_url, db, sample_run):
    result = insp.query(
        "SELECT r.source_line, r.duplicate_of, m.id, m.summary FROM rejects r "
        "JOIN memories m ON m.id = r.duplicate_of WHERE r.category = 'deduplication' ORDER BY 1",
        db_url,
    ).to_pylist()
    assert len(result) == count(
        db, "SELECT count(*) AS n FROM pipeline_rejects WHERE duplicate_of IS NOT NULL"
    )
    assert len(result) >= EXPECTED["deduplication"]
    assert all(r["duplicate_of"] == r["id"] and r["summary"] for r in result)
    expected = {
        int(line): e["duplicate_of"]
        for line, e in EXPECTED["lines"].items()
        if e.get("duplicate_of") and e["reasons"] == ["exact_duplicate"]
    }
    assert {r["source_line"]: r["duplicate_of"] for r in result if r["source_line"] in expected} == expected


def test_sql_sees_runs_batches_and_json_columns(db_url, sample_run):
    result = insp.query(
        "SELECT r.run_id, r.result->>'processed' AS processed, sum(b.rows_in) AS rows_in "
        "FROM runs r JOIN batches b USING (run_id) GROUP BY ALL",
        db_url,
    ).to_pylist()
    assert result == [{"run_id": sample_run.run_id, "processed": "1000", "rows_in": 1000}]


def test_sql_reads_only_the_tables_and_columns_it_needs(db_url, sample_run):
    loader = Connection(db_url)
    try:
        tables = read_tables(
            loader, "SELECT reason, count(*) FROM rejects WHERE category = 'parse' GROUP BY 1", None
        )
        counted = read_tables(loader, "SELECT count(*) FROM memories", None)
    finally:
        loader.close()
    assert {name: t.column_names for name, t in tables.items()} == {"rejects": ["category", "reason"]}
    assert counted["memories"].num_rows == sample_run.successful
    assert counted["memories"].num_columns == 1


def test_columns_read_follows_the_plan_not_the_text():
    import pyarrow as pa

    schema = pa.schema([("a", pa.string()), ("b", pa.int64()), ("raw", pa.string())])
    plans = {
        "SELECT a FROM t WHERE b > 1": {"a", "b"},
        "SELECT * FROM t": {"a", "b", "raw"},
        "SELECT x FROM t x": {"a", "b", "raw"},  # a whole-row reference reads every column
        "WITH w AS (SELECT * FROM t) SELECT a FROM w": {"a"},
        "SELECT count(*) FROM t": set(),
    }
    for sql, columns in plans.items():
        assert set(columns_read(sql, {"t": schema})["t"]) == columns, sql


def test_run_narrows_rejects_and_batches(db_url, db, sample_run, tmp_path):
    second = migrate(
        [str(write_jsonl(tmp_path / "in.jsonl", [memory(1), "{bad"]))],
        BatchConfig(log_progress=False),
        db_url=db_url,
    )
    sql = "SELECT count(*) AS n, count(DISTINCT run_id) AS runs FROM rejects"
    total = count(db, "SELECT count(*) AS n FROM pipeline_rejects")
    assert insp.query(sql, db_url).to_pylist() == [{"n": total, "runs": 2}]
    assert insp.query(sql, db_url, second.run_id).to_pylist() == [{"n": 1, "runs": 1}]
    assert insp.query("SELECT count(*) AS n FROM runs", db_url, second.run_id).to_pylist() == [{"n": 2}]


def test_statements_duckdb_cannot_serialize_still_find_their_tables(db_url, sample_run):
    described = insp.query("DESCRIBE rejects", db_url).to_pylist()
    assert "raw" in [r["column_name"] for r in described]
    pivoted = insp.query("PIVOT (SELECT category FROM rejects) ON category USING count(*)", db_url)
    assert set(pivoted.column_names) == {"parse", "validation", "deduplication", "database"}


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FORM rejects", "Parser Error: syntax error"),
        ("SELECT nope FROM rejects", 'Referenced column "nope" not found'),
        ("SELECT * FROM nothere", "Table with name nothere does not exist"),
    ],
)
def test_bad_sql_is_a_one_line_query_error(db_url, sample_run, sql, message):
    with pytest.raises(QueryError, match=message) as raised:
        insp.query(sql, db_url)
    assert "\n" not in str(raised.value)
    assert raised.value.exit_code == 2


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_query_results_go_to_files(db_url, db, sample_run, tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    insp.write_query("SELECT reason, count(*) AS n FROM rejects GROUP BY 1 ORDER BY 1", fmt, out, db_url)
    frame = {"csv": pl.read_csv, "json": pl.read_ndjson, "parquet": pl.read_parquet}[fmt](out)
    assert frame.columns == ["reason", "n"]
    stored = rows(db, "SELECT reason, count(*) AS n FROM pipeline_rejects GROUP BY 1 ORDER BY 1")
    assert frame.to_dicts() == stored


# --- export -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_export_round_trips_the_raw_records_byte_for_byte(db_url, db, sample_run, tmp_path, suffix):
    path = tmp_path / f"fix{suffix}"
    done = insp.export_rejects(path, db_url)
    expected = stored_records(db, sample_run.run_id)
    assert done.records == len(expected) == sample_run.processed - sample_run.successful
    if suffix == ".jsonl":
        assert path.read_bytes() == "".join(r["raw"] + "\n" for r in expected).encode()
        origins = [json.loads(line) for line in done.origin.read_text().splitlines()]
        assert origins == [{k: r[k] for k in ("run_id", "source_file", "source_line")} for r in expected]
    else:
        read = pl.read_csv(path, infer_schema=False) if suffix == ".csv" else pl.read_parquet(path)
        assert read.columns == ["raw", "source_file", "source_line", "run_id"]
        assert read.cast({"source_line": pl.Int64}).to_dicts() == expected
        assert not (tmp_path / f"fix{suffix}.origin").exists()


def test_export_of_a_query_keeps_one_row_per_record(db_url, db, sample_run, tmp_path):
    done = insp.export_rejects(
        tmp_path / "v.jsonl", db_url, sql="SELECT * FROM rejects WHERE category = 'validation'"
    )
    assert done.records == EXPECTED["validation"]
    assert done.run_id == sample_run.run_id
    with pytest.raises(QueryError, match="must return the raw column"):
        insp.export_rejects(tmp_path / "x.jsonl", db_url, sql="SELECT reason FROM rejects")


def test_export_needs_a_known_suffix(db_url, sample_run, tmp_path):
    with pytest.raises(ConfigError, match=r"export to \.jsonl, \.csv or \.parquet"):
        insp.export_rejects(tmp_path / "fix.txt", db_url)


# --- replay -------------------------------------------------------------------------------


def fix_jsonl(path, drop=()):
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [fix(line, n) for n, line in enumerate(lines) if n not in drop and "\ufffd" not in line]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return len(lines) - len(kept)


def test_replay_loads_fixed_records_and_resolves_their_rejects(db_url, db, sample_run, tmp_path):
    path = tmp_path / "fix.jsonl"
    insp.export_rejects(path, db_url)
    fix_jsonl(path)
    fixable = fixable_records(db, sample_run.run_id)
    assert len(fixable) >= 8

    first = replay(path, sample_run.run_id, BatchConfig(log_progress=False), db_url=db_url)
    assert first.run.status == "completed"
    assert first.loaded == first.run.successful == first.resolved == len(fixable)
    assert first.untraced_loaded == 0
    assert resolved(db, sample_run.run_id) == dict.fromkeys(fixable, first.run.run_id)
    assert count(db, "SELECT count(*) AS n FROM memories") == sample_run.successful + len(fixable)
    config = rows(
        db, "SELECT config->>'replay_of' AS of FROM pipeline_runs WHERE run_id = $1", first.run.run_id
    )
    assert config == [{"of": sample_run.run_id}]
    assert_invariant(sample_run, db)
    assert_invariant(first.run, db)

    second = replay(path, sample_run.run_id, BatchConfig(log_progress=False), db_url=db_url)
    assert (second.loaded, second.resolved, second.run.successful) == (0, 0, 0)
    assert resolved(db, sample_run.run_id) == dict.fromkeys(fixable, first.run.run_id)
    assert count(db, "SELECT count(*) AS n FROM memories") == sample_run.successful + len(fixable)
    assert_invariant(second.run, db)

    summary = insp.summarize(db_url, sample_run.run_id)
    assert summary.resolved == len(fixable)
    assert summary.records == sample_run.processed - sample_run.successful  # nothing deleted


def id_fixed(db) -> set[int]:
    return {
        r["source_line"]
        for r in rows(db, "SELECT source_line FROM pipeline_rejects WHERE reason = 'id:not_empty'")
    }


def test_replay_pairs_lines_by_position_between_unchanged_neighbours(db_url, db, sample_run, tmp_path):
    path = tmp_path / "fix.jsonl"
    insp.export_rejects(path, db_url)
    first_lines = [r["source_line"] for r in stored_records(db, sample_run.run_id)][:2]
    assert first_lines == [8, 13] and 8 in id_fixed(db)
    fix_jsonl(path, drop={1})  # line 13 goes: line 8 (its id fixed) has no unchanged line before it
    fixable = fixable_records(db, sample_run.run_id)
    result = replay(path, sample_run.run_id, BatchConfig(log_progress=False), db_url=db_url)
    assert set(resolved(db, sample_run.run_id)) == fixable - {8}
    assert result.untraced_loaded == 1
    assert result.matched["position"] >= len(id_fixed(db) & fixable) - 1


def test_replay_does_not_trust_positions_once_lines_moved(db_url, db, sample_run, tmp_path):
    path = tmp_path / "fix.jsonl"
    insp.export_rejects(path, db_url)
    fix_jsonl(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("".join(line + "\n" for line in reversed(lines)), encoding="utf-8")
    fixable = fixable_records(db, sample_run.run_id)
    result = replay(path, sample_run.run_id, BatchConfig(log_progress=False), db_url=db_url)
    assert result.matched["position"] == 0
    assert set(resolved(db, sample_run.run_id)) == fixable - id_fixed(db)
    assert result.untraced_loaded == len(fixable & id_fixed(db))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_replay_of_an_edited_table_follows_each_rows_origin(db_url, db, sample_run, tmp_path, suffix):
    path = tmp_path / f"fix{suffix}"
    insp.export_rejects(path, db_url)
    read = pl.read_csv(path, infer_schema=False) if suffix == ".csv" else pl.read_parquet(path)
    edited = (
        read.filter(~pl.col("raw").str.contains("\ufffd"))
        .with_columns(pl.col("raw").map_elements(lambda raw: fix(raw, hash(raw) % 10**6), pl.String))
        .reverse()  # rows moved: the origin columns still say where each came from
    )
    edited.write_csv(path) if suffix == ".csv" else edited.write_parquet(path)
    fixable = fixable_records(db, sample_run.run_id)
    result = replay(path, sample_run.run_id, BatchConfig(log_progress=False), db_url=db_url)
    assert result.matched["origin"] == edited.height
    assert result.resolved == result.loaded == len(fixable)
    assert set(resolved(db, sample_run.run_id)) == fixable
    assert_invariant(result.run, db)


def lossy_lines(path) -> list[int]:
    """The lines of a JSONL export still holding the U+FFFD of an invalid_utf8 reject."""
    return [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if "\ufffd" in line]


def invalid_utf8_lines(db, run_id) -> set[int]:
    found = rows(
        db,
        "SELECT source_line FROM pipeline_rejects WHERE run_id = $1 AND reason = 'invalid_utf8'",
        run_id,
    )
    return {r["source_line"] for r in found}


def stored_with_replacement_characters(db) -> int:
    return count(
        db,
        "SELECT count(*) AS n FROM memories WHERE strpos(id || summary || participants::text, $1) > 0",
        "\ufffd",
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_replay_skips_the_lossy_text_of_invalid_utf8_rejects_and_replays_the_rest(
    db_url, db, sample_run, tmp_path, suffix
):
    path = tmp_path / f"fix{suffix}"
    insp.export_rejects(path, db_url)
    keep_lossy = lambda raw, n: raw if "\ufffd" in raw else fix(raw, n)  # noqa: E731
    if suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        path.write_text("".join(keep_lossy(line, n) + "\n" for n, line in enumerate(lines)), encoding="utf-8")
    else:
        read = pl.read_csv(path, infer_schema=False)
        fixed = pl.col("raw").map_elements(lambda raw: keep_lossy(raw, hash(raw) % 10**6), pl.String)
        read.with_columns(fixed).write_csv(path)
    bad = invalid_utf8_lines(db, sample_run.run_id)
    fixable = fixable_records(db, sample_run.run_id)
    assert bad and fixable

    result = replay(path, sample_run.run_id, BatchConfig(log_progress=False), db_url=db_url)
    assert_invariant(sample_run, db)
    assert_invariant(result.run, db)
    assert result.run.status == "completed"
    assert result.skipped == len(bad)
    assert result.run.processed == result.records == sample_run.processed - sample_run.successful - len(bad)
    assert result.loaded == result.resolved == len(fixable)
    assert resolved(db, sample_run.run_id) == dict.fromkeys(fixable, result.run.run_id)
    assert stored_with_replacement_characters(db) == 0
    assert "skipped   " in result.summary()


def test_cli_replay_of_an_unchanged_export_warns_of_the_invalid_utf8_lines_it_skips(
    db_url, db, sample_run, tmp_path
):
    path = tmp_path / "fix.jsonl"
    exported = cli("rejects", "--db", db_url, "--export", path)
    assert exported.returncode == 0, exported.stderr
    skipped = lossy_lines(path)
    bad = invalid_utf8_lines(db, sample_run.run_id)
    assert len(skipped) == len(bad) > 0

    report = tmp_path / "replay.json"
    done = cli("replay", path, "--of", sample_run.run_id, "--db", db_url, "--report", report)
    assert done.returncode == 0, done.stderr
    [warning] = [line for line in done.stderr.splitlines() if "WARNING" in line]
    records = "1 record" if len(bad) == 1 else f"{len(bad)} records"
    assert f"{path}: skipped {records} still holding the text of an invalid_utf8 reject" in warning
    for line, reject in zip(skipped, sorted(bad), strict=True):
        assert f"line {line} ({SAMPLE}:{reject})" in warning

    result = json.loads(report.read_text())
    run = SimpleNamespace(**result["run"])
    assert_invariant(sample_run, db)
    assert_invariant(run, db)
    assert result["skipped"] == len(bad)
    # every other record of the export was replayed: unchanged, each is rejected again
    records = len(path.read_text(encoding="utf-8").splitlines())
    assert run.processed == result["records"] == records - len(bad)
    again = rows(db, "SELECT DISTINCT source_line FROM pipeline_rejects WHERE run_id = $1", run.run_id)
    assert {r["source_line"] for r in again} == set(range(1, records + 1)) - set(skipped)
    assert count(
        db,
        "SELECT count(*) AS n FROM pipeline_rejects WHERE run_id = $1 AND reason = 'invalid_utf8'"
        " AND resolved_by IS NULL",
        sample_run.run_id,
    ) == len(bad)
    assert stored_with_replacement_characters(db) == 0


def test_replay_of_an_unknown_run_loads_nothing(db_url, db, sample_run, tmp_path):
    path = write_jsonl(tmp_path / "fix.jsonl", [memory(1)])
    with pytest.raises(UnknownRunError, match="there is no run 'nope'"):
        replay(path, "nope", BatchConfig(log_progress=False), db_url=db_url)
    assert count(db, "SELECT count(*) AS n FROM pipeline_runs") == 1


def replayed(records: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"position": i, "raw": raw, "id": rid} for i, (raw, rid) in enumerate(records)],
        schema={"position": pl.Int64, "raw": pl.String, "id": pl.String},
    ).with_columns(
        origin_run=pl.lit(None, pl.String),
        origin_file=pl.lit(None, pl.String),
        origin_line=pl.lit(None, pl.Int64),
    )


ORIGINALS = pl.DataFrame(
    {
        "source_file": ["f"] * 5,
        "source_line": [1, 2, 3, 4, 5],
        "raw": ["a", "b", "c", "d", "e"],
        "id": ["x", "y", None, "w", None],
    }
)
SIDECAR = pl.DataFrame({"run_id": ["r"] * 5, "source_file": ["f"] * 5, "source_line": [1, 2, 3, 4, 5]})


def matched(records, sidecar=SIDECAR) -> list[tuple]:
    found = match_origins(replayed(records), ORIGINALS, "r", sidecar).sort("position")
    return found.select("position", "source_line", "matched_by").rows()


def test_match_origins_by_text_then_id_then_position():
    assert matched([("a", "x"), ("B", "y"), ("C", None), ("d", "w"), ("E", None)]) == [
        (0, 1, "unchanged"),
        (1, 2, "id"),
        (2, 3, "position"),
        (3, 4, "unchanged"),
        (4, 5, "position"),
    ]


def test_match_origins_skips_positions_where_lines_were_removed_or_moved():
    # "b" was deleted: between "a" and "d" one line is left where the sidecar lists two.
    assert matched([("a", "x"), ("C", None), ("d", "w"), ("E", None)]) == [
        (0, 1, "unchanged"),
        (2, 4, "unchanged"),
        (3, 5, "position"),
    ]
    assert matched([("d", "w"), ("a", "x"), ("C", None)]) == [(0, 4, "unchanged"), (1, 1, "unchanged")]
    assert matched([("a", "x"), ("C", None)], sidecar=SIDECAR.clear()) == [(0, 1, "unchanged")]


# --- command line -------------------------------------------------------------------------


def test_cli_summary_sql_export_and_replay(db_url, db, sample_run, tmp_path):
    summary = cli("rejects", "--db", db_url)
    assert summary.returncode == 0, summary.stderr
    assert "confidence:in_range(1,10)" in summary.stdout and "(seen: " in summary.stdout

    query = cli("rejects", "--db", db_url, "--sql", "SELECT category, count(*) AS n FROM rejects GROUP BY 1")
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines()[0].split() == ["category", "n"]

    csv = cli("rejects", "--db", db_url, "--sql", "SELECT 1 AS one", "--format", "csv")
    assert csv.stdout == "one\n1\n"

    path = tmp_path / "fix.jsonl"
    exported = cli("rejects", "--db", db_url, "--export", path)
    assert exported.returncode == 0, exported.stderr
    assert f"pipeline replay {path} --of {sample_run.run_id}" in exported.stdout
    fix_jsonl(path)
    replayed = cli("replay", path, "--of", sample_run.run_id, "--db", db_url, "--quiet")
    assert (replayed.returncode, replayed.stderr) == (0, "")
    assert len(resolved(db, sample_run.run_id)) == len(fixable_records(db, sample_run.run_id))

    listing = cli("runs", "--db", db_url)
    assert listing.returncode == 0
    [replay_row] = [line for line in listing.stdout.splitlines() if f"replay of {sample_run.run_id}" in line]
    assert replay_row.split()[1] == "completed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rejects", "--sql", "SELEC 1"], "error: Parser Error: syntax error"),
        (["rejects", "--run", "nope"], "error: there is no run 'nope'"),
        (["rejects", "--export", "x.jsonl", "--format", "csv"], "takes its format from FILE's suffix"),
        (["rejects", "--export", "x.txt"], "export to .jsonl, .csv or .parquet"),
        (["rejects", "--sql", "SELECT 1", "--format", "parquet"], "parquet goes to a file"),
        (["rejects", "--output", "x.csv"], "--output writes the result of --sql"),
        (["replay", "missing.jsonl", "--of", "x"], "missing.jsonl: no such file"),
        (["replay", "data/sample.jsonl", "--of", "nope"], "there is no run 'nope'"),
    ],
)
def test_cli_usage_errors_exit_2_with_one_line(db_url, sample_run, args, message):
    done = cli(*args, "--db", db_url, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1
