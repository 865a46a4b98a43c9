"""A real PostgreSQL for the whole session (the embedded wheel), one fresh database per test."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from pipeline.load.connection import Connection, connected
from pipeline.load.databases import database_url, fresh_database
from pipeline.load.server import start_embedded, stop_embedded

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def pipeline_home(tmp_path_factory: pytest.TempPathFactory):
    """Commands run without ``--db`` use an embedded server of the test session, never the user's."""
    home = tmp_path_factory.mktemp("pipeline-home")
    before = os.environ.get("PIPELINE_HOME")
    os.environ["PIPELINE_HOME"] = str(home)
    yield home
    stop_embedded(home)
    if before is None:
        del os.environ["PIPELINE_HOME"]
    else:
        os.environ["PIPELINE_HOME"] = before


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("embedded")
    url = start_embedded(home)
    yield url
    # Runs in databases a test made for itself, not through ``db_url``, balance too.
    with connected(url) as admin:
        databases = rows(admin, "SELECT datname FROM pg_database WHERE NOT datistemplate")
    for database in databases:
        assert_every_run_balances(database_url(url, database["datname"]))
    stop_embedded(home)


@pytest.fixture
def db_url(server_url: str):
    """A fresh database; when the test ends, every run it recorded must keep the accounting
    invariant, whatever the test itself asserted."""
    url = fresh_database(server_url, f"test_{uuid.uuid4().hex[:12]}")
    yield url
    assert_every_run_balances(url)


@pytest.fixture
def db(db_url: str):
    """A connection to the test's database, for asserting on stored rows."""
    loader = Connection(db_url)
    yield loader
    loader.close()


def rows(db: Connection, sql: str, *params) -> list[dict]:
    table = db.execute(sql, tuple(params))
    return table.to_pylist() if table is not None else []


def write_jsonl(path: Path, records: list) -> Path:
    """Records as JSONL; a str is written as the line itself (for malformed lines)."""
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def memory(n: int, **fields) -> dict:
    """A valid current-shape memory; ``fields`` override or (with None) remove keys."""
    record = {
        "id": f"mem-{n}",
        "summary": f"Sam and Alex talked about trip number {n}",
        "confidence": 7,
        "participants": [{"id": "p1", "name": "Sam", "role": "friend"}],
        "sourceMessageIds": [f"m{n}-a", f"m{n}-b"],
        "extractedAt": "2024-05-01T10:00:00Z",
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not None}


def raw_frame(lines: list[str]) -> pl.DataFrame:
    """Raw records as the scan stage yields them, numbered from line 1."""
    return pl.DataFrame(
        {"source_file": "t.jsonl", "source_line": list(range(1, len(lines) + 1)), "raw": lines},
        schema={"source_file": pl.String, "source_line": pl.Int64, "raw": pl.String},
    ).with_columns(parse_error=pl.lit(None, pl.String))


# The report's counts (the run report contract), without timings.
TOTALS = (
    "processed",
    "successful",
    "failed",
    "parse_errors",
    "validation_errors",
    "database_errors",
    "duplicates_skipped",
    "similar_merged",
    "errors_by_reason",
)


def assert_invariant(result, db: Connection) -> None:
    """The accounting invariant (docs/design.md), checked against the stored rejects too."""
    assert result.processed == (
        result.successful + result.failed + result.duplicates_skipped + result.similar_merged
    )
    assert result.failed == result.parse_errors + result.validation_errors + result.database_errors
    distinct = rows(
        db,
        "SELECT count(DISTINCT (source_file, source_line)) AS n FROM pipeline_rejects WHERE run_id = $1",
        result.run_id,
    )[0]["n"]
    assert distinct == result.failed + result.duplicates_skipped + result.similar_merged


def assert_every_run_balances(url: str) -> None:
    """``assert_invariant`` for every finished run recorded in the database at ``url``."""
    with connected(url) as db:
        if rows(db, "SELECT to_regclass('pipeline_runs') IS NULL AS absent")[0]["absent"]:
            return
        for run in rows(db, "SELECT result::text AS result FROM pipeline_runs WHERE result IS NOT NULL"):
            assert_invariant(SimpleNamespace(**json.loads(run["result"])), db)


def final_state(url: str) -> dict:
    """Everything the runs leave, by content: loaded rows by hash, rejects by position, the
    last run's totals and status."""
    db = Connection(url)
    try:
        last = "FROM pipeline_runs ORDER BY started_at DESC LIMIT 1"
        result = json.loads(rows(db, f"SELECT result::text AS r {last}")[0]["r"])
        return {
            "memories": sorted(
                (r["content_hash"], r["id"], r["summary"], r["merges"] or "")
                for r in rows(
                    db,
                    "SELECT content_hash, id, summary, (deduplication_metadata - 'mergedAt')::text AS merges "
                    "FROM memories",
                )
            ),
            "pending_merges": rows(db, "SELECT count(*) AS n FROM pipeline_merges")[0]["n"],
            "children": sorted(
                (r["t"], r["id"], r["memory_id"])
                for r in rows(
                    db,
                    "SELECT 'ec' AS t, id, memory_id FROM emotional_contexts UNION ALL "
                    "SELECT 'rd', id, memory_id FROM relationship_dynamics",
                )
            ),
            "rejects": sorted(
                (
                    r["source_file"],
                    r["source_line"],
                    r["category"],
                    r["reason"],
                    r["duplicate_of"] or "",
                    r["s"],
                )
                for r in rows(
                    db,
                    "SELECT source_file, source_line, category, reason, duplicate_of, "
                    "coalesce(similarity, -1) AS s FROM pipeline_rejects",
                )
            ),
            "totals": {k: result[k] for k in TOTALS},
            "status": rows(db, f"SELECT status {last}")[0]["status"],
            "batches": rows(
                db,
                "SELECT count(*) AS n, count(DISTINCT (run_id, batch_no, shard)) AS d FROM pipeline_batches",
            )[0],
        }
    finally:
        db.close()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server on localhost (moto's), reached over HTTP as any store is."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch):
    """A fresh bucket on the S3 server, the run's environment pointing at it: an s3fs file
    system to put objects with, and the bucket's URL (``s3://bucket``)."""
    import s3fs

    for name, value in {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = f"exports-{uuid.uuid4().hex[:8]}"
    store = s3fs.S3FileSystem(skip_instance_cache=True)
    store.mkdir(bucket)
    return SimpleNamespace(fs=store, url=f"s3://{bucket}", bucket=bucket)
