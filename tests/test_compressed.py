"""Compressed exports (.gz, .zst, .bz2) store what the plain file stores; a damaged one loads
what precedes the damage and says where it stopped."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import pytest
import zstandard

from pipeline.extract import fingerprint, resolve_inputs
from pipeline.load.connection import Connection
from pipeline.testing import cli, run
from tests.conftest import memory, rows

COMPRESS = {
    "gz": gzip.compress,
    "zst": lambda data: zstandard.ZstdCompressor().compress(data),
    "bz2": bz2.compress,
}


def export_bytes(n: int = 60) -> bytes:
    """An export with what a reader must keep: blank lines, CRLF, a line not JSON, bytes not UTF-8."""
    lines = [json.dumps(memory(i)).encode() for i in range(n)]
    lines[3] += b"\r"
    lines[7] = b'{"id": "broken'
    lines[11] = b'{"id": "mem-11", "summary": "caf\xe9 ' + b"x" * 20 + b'"}'
    lines.insert(20, b"")
    return b"\n".join(lines) + b"\n"


def stored(db_url: str, source_file: str) -> dict:
    """What a run left, its inputs' names made one."""
    db = Connection(db_url)
    try:
        result = json.loads(rows(db, "SELECT result::text AS r FROM pipeline_runs")[0]["r"])
        return {
            "memories": sorted((r["id"], r["summary"]) for r in rows(db, "SELECT id, summary FROM memories")),
            "rejects": sorted(
                (r["source_line"], r["category"], r["reason"], r["raw"], r["source_file"] == source_file)
                for r in rows(db, "SELECT * FROM pipeline_rejects")
            ),
            "totals": {k: result[k] for k in ("processed", "successful", "failed", "errors_by_reason")},
        }
    finally:
        db.close()


@pytest.fixture
def plain_state(tmp_path, server_url):
    from pipeline.testing import fresh_database

    path = tmp_path / "plain" / "export.jsonl"
    path.parent.mkdir()
    path.write_bytes(export_bytes())
    url = fresh_database(server_url, "compressed_plain")
    run([path], url, batch_size=17)
    return stored(url, str(path))


@pytest.mark.parametrize("suffix", ["gz", "zst", "bz2"])
def test_a_compressed_export_stores_what_the_plain_file_stores(tmp_path, db_url, plain_state, suffix):
    path = tmp_path / f"export.jsonl.{suffix}"
    path.write_bytes(COMPRESS[suffix](export_bytes()))
    run([path], db_url, batch_size=17)
    assert stored(db_url, str(path)) == plain_state


def test_a_compressed_csv_reads_as_the_plain_csv(tmp_path):
    text = b'id,summary\n1,"two\nlines ""quoted"""\n2,caf\xe9\n\n3,plain\n'
    plain, packed = tmp_path / "a.csv", tmp_path / "a.csv.zst"
    plain.write_bytes(text)
    packed.write_bytes(COMPRESS["zst"](text))
    from pipeline.extract import scan_batches

    def read(path: Path) -> list:
        return [
            (r["source_line"], r["raw"], r["parse_error"])
            for b in scan_batches(resolve_inputs([path]), 2)
            for r in b.frame.to_dicts()
        ]

    assert read(packed) == read(plain)


def test_a_compressed_copy_has_the_plain_files_fingerprint(tmp_path):
    plain, packed = tmp_path / "a.jsonl", tmp_path / "a.jsonl.gz"
    plain.write_bytes(export_bytes())
    packed.write_bytes(gzip.compress(export_bytes()))
    (plain_source,), (packed_source,) = resolve_inputs([plain]), resolve_inputs([packed])
    assert fingerprint(packed_source)["sha256"] == fingerprint(plain_source)["sha256"]
    assert fingerprint(packed_source)["size"] == packed.stat().st_size


def test_a_truncated_gzip_loads_what_precedes_the_damage_and_the_run_completes(tmp_path, db_url, db):
    whole = gzip.compress(b"".join(json.dumps(memory(i)).encode() + b"\n" for i in range(3000)))
    damaged, other = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl"
    damaged.write_bytes(whole[: len(whole) // 2])
    other.write_text(json.dumps(memory(5000)) + "\n")
    result = run([damaged, other], db_url, batch_size=500)
    assert result.status == "completed"
    (reject,) = rows(db, "SELECT * FROM pipeline_rejects WHERE reason = 'corrupt_compressed_input'")
    loaded = rows(db, "SELECT count(*) AS n FROM memories WHERE id <> 'mem-5000'")[0]["n"]
    assert 0 < loaded < 3000
    # the records before the damage loaded; the reject stands where decoding stopped
    assert reject["source_line"] == loaded + 1
    assert reject["category"] == "parse" and str(damaged) in reject["message"]
    assert rows(db, "SELECT count(*) AS n FROM memories WHERE id = 'mem-5000'")[0]["n"] == 1
    assert f"{damaged}: stopped at line {loaded + 1:,}" in result.summary()


def test_a_compressed_file_counts_its_stored_bytes_done(tmp_path):
    from pipeline.extract import scan_batches

    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(export_bytes(3000)))
    done = [b.bytes_done for b in scan_batches(resolve_inputs([path]), 500)]
    assert done == sorted(done) and done[-1] == path.stat().st_size


def test_a_killed_run_over_a_compressed_file_resumes(tmp_path, db_url, plain_state):
    path = tmp_path / "export.jsonl.zst"
    path.write_bytes(COMPRESS["zst"](export_bytes()))
    args = ("migrate", path, "--db", db_url, "--batch-size", "17", "--run-id", "R", "--quiet")
    killed = cli(*args, env={"PIPELINE_KILL_AT": "committed:2"})
    assert killed.returncode == -9, killed.stderr
    resumed = cli("migrate", "--resume", "R", "--db", db_url, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert stored(db_url, str(path)) == plain_state
