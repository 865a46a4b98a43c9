"""Text inputs from other tools: a declared encoding, a UTF-16 byte-order mark, CSV delimiters
told by the header or declared, each storing what the plain UTF-8 comma file stores; bytes
not valid in the encoding rejected at their line, and mistakes refused in one line."""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import zstandard

from pipeline.config import BatchConfig, TextOptions
from pipeline.errors import ConfigError, RunStopped
from pipeline.extract import resolve_inputs
from pipeline.extract.parts import file_parts, readable_in_parts
from pipeline.load.connection import Connection
from pipeline.run.migrate import migrate
from pipeline.testing import cli, fresh_database, run
from tests.conftest import TOTALS, memory, rows

HEADER = ["id", "summary", "confidence", "participants", "sourceMessageIds", "extractedAt"]


def memory_rows() -> list[list[str]]:
    """Accents, a line break and every candidate delimiter in cells, a validation reject and
    an exact duplicate."""
    people = json.dumps([{"id": "p1", "name": "Renée", "role": "friend"}], ensure_ascii=False)
    cells = [
        ["m1", "Renée ordered a Café crème", "7", people, '["a1"]', "2024-05-01T10:00:00Z"],
        ["m2", "two lines,\nthen; a | and a\ttab", "5", people, '["a2"]', "2024-05-01T10:00:00Z"],
        ["m3", "confidence is no number", "high", people, '["a3"]', "2024-05-01T10:00:00Z"],
        ["m1", "Renée ordered a Café crème", "7", people, '["a1"]', "2024-05-01T10:00:00Z"],
        ["m4", "plain text", "3", people.replace("Renée", "Sam"), '["a4"]', "2024-05-01T10:00:00Z"],
    ]
    return [HEADER, *cells]


def write_csv(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> Path:
    text = io.StringIO()
    csv.writer(text, delimiter=delimiter, lineterminator="\n").writerows(memory_rows())
    path.write_bytes(text.getvalue().encode(encoding))
    return path


def memory_lines() -> list[str]:
    return [
        json.dumps(memory(1, summary="Renée ordered a Café crème"), ensure_ascii=False),
        "",
        '{"id": "broken é',
        json.dumps(memory(2, confidence="high"), ensure_ascii=False),
        json.dumps(memory(3, summary="Zoë 👍"), ensure_ascii=False),
    ]


def write_jsonl(path: Path, encoding: str = "utf-8", bom: bytes = b"") -> Path:
    path.write_bytes(bom + ("\n".join(memory_lines()) + "\n").encode(encoding))
    return path


def stored(url: str) -> dict:
    """What a run left, but where its file was: rows, rejects with lines and raw text, totals."""
    db = Connection(url)
    try:
        result = json.loads(rows(db, "SELECT result::text AS r FROM pipeline_runs")[0]["r"])
        return {
            "memories": rows(
                db,
                "SELECT id, content_hash, summary, confidence, participants::text AS people "
                "FROM memories ORDER BY id",
            ),
            "rejects": rows(
                db,
                "SELECT source_line, category, reason, raw FROM pipeline_rejects ORDER BY source_line",
            ),
            "totals": {k: result[k] for k in TOTALS},
        }
    finally:
        db.close()


@pytest.fixture
def migrated(server_url):
    """Migrate files into a database of their own and give back what it stored."""

    def into_own_database(paths: list[Path], **settings) -> dict:
        url = fresh_database(server_url, f"test_{uuid.uuid4().hex[:12]}")
        run(paths, url, batch_size=2, **settings)
        return stored(url)

    return into_own_database


def no_replacement_characters(state: dict) -> bool:
    return not any("\ufffd" in json.dumps(row, ensure_ascii=False) for row in state["memories"])


@pytest.mark.parametrize(
    ("name", "delimiter", "encoding", "settings"),
    [
        ("cp1252.csv", ",", "cp1252", {"encoding": "cp1252"}),
        ("semicolons.csv", ";", "utf-8", {}),
        ("semicolons.csv", ";", "utf-8", {"delimiter": ";"}),
        ("tabs.tsv", "\t", "utf-8", {}),
        ("windows.csv", ";", "cp1252", {"encoding": "cp1252"}),
        ("utf16.csv", "|", "utf-16", {}),
    ],
)
def test_a_csv_from_another_tool_stores_what_the_utf8_comma_file_stores(
    migrated, tmp_path, name, delimiter, encoding, settings
):
    expected = migrated([write_csv(tmp_path / "plain.csv")])
    assert expected["totals"]["successful"] == 3 and expected["totals"]["duplicates_skipped"] == 1
    got = migrated([write_csv(tmp_path / name, delimiter, encoding)], **settings)
    assert got == expected
    assert "Renée ordered a Café crème" in [m["summary"] for m in got["memories"]]


@pytest.mark.parametrize(
    ("encoding", "bom"), [("utf-16", b""), ("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff")]
)
def test_a_utf16_jsonl_with_a_byte_order_mark_stores_what_its_utf8_stores(migrated, tmp_path, encoding, bom):
    expected = migrated([write_jsonl(tmp_path / "plain.jsonl")])
    assert expected["totals"]["parse_errors"] == 1 and expected["totals"]["validation_errors"] == 1
    got = migrated([write_jsonl(tmp_path / "utf16.jsonl", encoding, bom)])
    assert got == expected


@pytest.mark.parametrize("settings", [{}, {"encoding": "utf-16-be"}])
def test_a_utf16_json_array_stores_what_its_utf8_stores(migrated, tmp_path, settings):
    records = [json.loads(line) for line in memory_lines() if line.startswith('{"id": "mem')]
    array = json.dumps(records, ensure_ascii=False, indent=1)
    plain, utf16 = tmp_path / "plain.json", tmp_path / "utf16.json"
    plain.write_text(array, encoding="utf-8")
    utf16.write_bytes(array.encode(settings.get("encoding", "utf-16")))
    expected = migrated([plain])
    assert expected["totals"]["successful"] == 2
    assert migrated([utf16], **settings) == expected


def test_a_jsonl_declared_cp1252_stores_what_its_utf8_stores(migrated, tmp_path):
    expected = migrated([write_jsonl(tmp_path / "plain.jsonl")])
    lines = [line.replace("👍", "") for line in memory_lines()]
    windows = tmp_path / "windows.jsonl"
    windows.write_bytes(("\n".join(lines) + "\n").encode("cp1252"))
    got = migrated([windows], encoding="cp1252")
    summaries = [m["summary"] for m in got["memories"]]
    assert summaries == [m["summary"].replace("👍", "") for m in expected["memories"]]
    assert [(r["source_line"], r["reason"]) for r in got["rejects"]] == [
        (r["source_line"], r["reason"]) for r in expected["rejects"]
    ]


def test_a_cp1252_csv_read_as_utf8_rejects_its_accented_rows_and_stores_no_replacement(migrated, tmp_path):
    got = migrated([write_csv(tmp_path / "cp1252.csv", encoding="cp1252")])
    assert no_replacement_characters(got)
    bad = [(r["source_line"], r["reason"]) for r in got["rejects"] if r["category"] == "parse"]
    assert bad == [(2, "invalid_utf8"), (3, "invalid_utf8"), (5, "invalid_utf8"), (6, "invalid_utf8")]
    assert "Ren\ufffde" in got["rejects"][0]["raw"]
    assert [m["id"] for m in got["memories"]] == ["m4"]


def test_bytes_not_valid_in_the_declared_encoding_are_invalid_encoding_at_their_line(migrated, tmp_path):
    csv_file, jsonl_file = write_csv(tmp_path / "accents.csv"), write_jsonl(tmp_path / "accents.jsonl")
    cases = [(csv_file, [2, 3, 5, 6]), (jsonl_file, [1, 3, 5])]
    for path, lines in cases:
        got = migrated([path], encoding="ascii")
        assert no_replacement_characters(got)
        bad = {r["source_line"]: r["raw"] for r in got["rejects"] if r["reason"] == "invalid_encoding"}
        assert sorted(bad) == lines
        assert all("\ufffd" in raw for raw in bad.values())
        assert all(r["reason"] != "invalid_utf8" for r in got["rejects"])


def test_a_windows_chat_export_loads_its_accents_with_the_encoding_named(db_url, db, tmp_path):
    sample = (Path(__file__).resolve().parent.parent / "data" / "messages_sample.csv").read_text("utf-8")
    header = sample.split("\n", 1)[0]
    line = "Renée,2024-03-05 18:22:01,,,,SMS,Incoming,+1555,Renée,Read,,,Café crème ce soir ?,,"
    path = tmp_path / "windows.csv"
    path.write_bytes(f"{header}\r\n{line}\r\n".encode("cp1252"))
    args = ("migrate", path, "--db", db_url, "--dataset", "messages", "--format", "json")
    done = cli(*args, "--encoding", "cp1252")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["successful"] == 1
    assert rows(db, "SELECT text FROM messages") == [{"text": "Café crème ce soir ?"}]
    assert "Renée" in json.dumps(rows(db, "SELECT * FROM messages")[0], ensure_ascii=False, default=str)
    recorded = rows(db, "SELECT config->>'encoding' AS e FROM pipeline_runs")
    assert recorded == [{"e": "cp1252"}]


@pytest.mark.parametrize("encoding", ["cp1252", "utf-16"])
def test_workers_read_a_csv_in_another_encoding_as_one_process_does(server_url, tmp_path, encoding):
    """cp1252 is cut into parts as UTF-8 is; UTF-16 is read in order by the main process."""
    path = write_csv(tmp_path / "exported.csv", ";", encoding)
    source = resolve_inputs([path], text=TextOptions(encoding))[0]
    assert readable_in_parts(source) == (encoding == "cp1252")
    if readable_in_parts(source):
        assert len(file_parts(source, 2)) > 1
    states = []
    for extra in ((), ("--workers", "2")):
        url = fresh_database(server_url, f"test_{uuid.uuid4().hex[:12]}")
        args = ("migrate", path, "--db", url, "--batch-size", "2", "--encoding", encoding, "--quiet")
        done = cli(*args, *extra)
        assert done.returncode == 0, done.stderr
        states.append(stored(url))
    assert states[0] == states[1]
    assert states[0]["totals"]["successful"] == 3


def test_an_unknown_encoding_is_one_line_exit_2(db_url, tmp_path):
    done = cli("migrate", write_csv(tmp_path / "a.csv"), "--db", db_url, "--encoding", "klingon")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "klingon" in done.stderr and "encoding" in done.stderr


def test_an_ambiguous_delimiter_is_one_line_naming_the_file_and_candidates(db_url, tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("id;summary,confidence\nm1;x,7\n")
    done = cli("migrate", path, "--db", db_url)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert str(path) in done.stderr and "';'" in done.stderr and "','" in done.stderr
    assert "--delimiter" in done.stderr


def test_a_resumed_run_reads_its_file_in_the_encoding_and_delimiter_it_started_with(server_url, tmp_path):
    path = write_csv(tmp_path / "windows.csv", ";", "cp1252")
    whole = fresh_database(server_url, f"test_{uuid.uuid4().hex[:12]}")
    run([path], whole, batch_size=2, encoding="cp1252", delimiter=";")
    url = fresh_database(server_url, f"test_{uuid.uuid4().hex[:12]}")
    with pytest.raises(RunStopped) as stopped:
        run([path], url, batch_size=2, encoding="cp1252", delimiter=";", max_errors=0)
    with pytest.raises(ConfigError, match="encoding was 'cp1252', now 'latin-1'"):
        migrate(
            [path], BatchConfig(encoding="latin-1", delimiter=";"), db_url=url, resume=stopped.value.run_id
        )
    migrate([], None, db_url=url, resume=stopped.value.run_id)
    assert stored(url) == stored(whole)


@pytest.mark.parametrize("compress", [gzip.compress, zstandard.compress])
def test_a_compressed_windows_csv_stores_what_the_utf8_comma_file_stores(migrated, tmp_path, compress):
    expected = migrated([write_csv(tmp_path / "plain.csv")])
    path = tmp_path / ("windows.csv.gz" if compress is gzip.compress else "windows.csv.zst")
    path.write_bytes(compress(write_csv(tmp_path / "windows.csv", ";", "cp1252").read_bytes()))
    assert migrated([path], encoding="cp1252") == expected


def test_a_windows_csv_in_object_storage_stores_what_the_utf8_comma_file_stores(migrated, s3, tmp_path):
    expected = migrated([write_csv(tmp_path / "plain.csv")])
    s3.fs.pipe(f"{s3.bucket}/windows.csv", write_csv(tmp_path / "windows.csv", ";", "cp1252").read_bytes())
    assert migrated([f"{s3.url}/windows.csv"], encoding="cp1252") == expected


def test_a_tsv_on_standard_input_stores_what_the_utf8_comma_file_stores(migrated, server_url, tmp_path):
    expected = migrated([write_csv(tmp_path / "plain.csv")])
    url = fresh_database(server_url, f"test_{uuid.uuid4().hex[:12]}")
    data = write_csv(tmp_path / "tabs.tsv", "\t").read_bytes()
    command = [sys.executable, "-m", "pipeline", "migrate", "-", "--input-format", "tsv"]
    done = subprocess.run(
        [*command, "--db", url, "--batch-size", "2", "--quiet"], input=data, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert stored(url) == expected


def test_a_rerun_in_another_encoding_is_decided_again(server_url, tmp_path):
    """A file first read as UTF-8 (its accents rejected) is not skipped when read as cp1252."""
    path = write_csv(tmp_path / "windows.csv", ";", "cp1252")
    url = fresh_database(server_url, f"test_{uuid.uuid4().hex[:12]}")
    first = run([path], url, batch_size=2)
    assert first.successful < 3
    again = run([path], url, batch_size=2)
    assert again.skipped_inputs and again.processed == 0
    fixed = run([path], url, batch_size=2, encoding="cp1252")
    assert not fixed.skipped_inputs and fixed.processed == 5
    db = Connection(url)
    try:
        summaries = [r["summary"] for r in rows(db, "SELECT summary FROM memories")]
    finally:
        db.close()
    assert "Renée ordered a Café crème" in summaries
