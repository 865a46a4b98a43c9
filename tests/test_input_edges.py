"""Inputs as other tools write them: a UTF-8 byte-order mark, numbers no machine type holds."""

import codecs
import json

import pytest

from pipeline.testing import run
from tests.conftest import assert_invariant, memory, rows

BOM = codecs.BOM_UTF8


def stored_ids(db) -> list[str]:
    return [r["id"] for r in rows(db, "SELECT id FROM memories ORDER BY id")]


# --- byte-order mark ----------------------------------------------------------------------


def test_jsonl_with_a_byte_order_mark_loads_its_first_record(db_url, db, tmp_path):
    path = tmp_path / "bom.jsonl"
    lines = [json.dumps(memory(1)), "", json.dumps(memory(2)), "{broken"]
    path.write_bytes(BOM + "\n".join(lines).encode() + b"\n")
    result = run([path], db_url)
    assert_invariant(result, db)
    assert (result.processed, result.successful, result.parse_errors) == (3, 2, 1)
    assert stored_ids(db) == ["mem-1", "mem-2"]
    # the mark takes no line: the numbers are those of the file as an editor shows it
    assert rows(db, "SELECT source_line, reason FROM pipeline_rejects") == [
        {"source_line": 4, "reason": "invalid_json"}
    ]


def test_csv_with_a_byte_order_mark_keeps_its_first_column(db_url, db, tmp_path):
    path = tmp_path / "bom.csv"
    text = (
        '"id",summary,confidence,participants,sourceMessageIds\n'
        'c1,first,5,"[{""id"":""p"",""name"":""N"",""role"":""r""}]","[""x""]"\n'
        'c2,"second\nover two lines",6,"[{""id"":""p"",""name"":""N"",""role"":""r""}]","[""y""]"\n'
        'c3,third,11,"[]","[]"\n'
    )
    path.write_bytes(BOM + text.encode())
    result = run([path], db_url)
    assert_invariant(result, db)
    assert (result.processed, result.successful, result.parse_errors) == (3, 2, 0)
    assert stored_ids(db) == ["c1", "c2"]
    assert rows(db, "SELECT source_line, reason FROM pipeline_rejects") == [
        {"source_line": 5, "reason": "confidence:in_range(1,10)"}
    ]


def test_json_array_with_a_byte_order_mark_is_read_as_an_array(db_url, db, tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(BOM + json.dumps([memory(1), memory(2, summary="Zoë")], ensure_ascii=False).encode())
    result = run([path], db_url)
    assert_invariant(result, db)
    assert (result.processed, result.successful, result.failed) == (2, 2, 0)
    assert rows(db, "SELECT summary FROM memories WHERE id = 'mem-2'") == [{"summary": "Zoë"}]


# --- numbers too large for their type -----------------------------------------------------


@pytest.mark.parametrize(
    ("written", "field"),
    [
        ('"confidence": 1e400', "confidence"),
        ('"confidence": -1e400', "confidence"),
        ('"confidence": 99999999999999999999', "confidence"),
        ('"confidence": 1E+400', "confidence"),
        (
            '"emotionalContext": {"primaryMood": "mixed", "intensity": 1e400}',
            "emotionalContext.intensity",
        ),
        ('"emotionalContext": {"intensity": -1e400, "primaryMood": "mixed"}', "emotionalContext.intensity"),
    ],
)
def test_a_number_too_large_for_its_type_is_a_type_reject_showing_it_as_written(
    db_url, db, tmp_path, written, field
):
    fields = memory(1, confidence=None) if field == "confidence" else memory(1)
    text = json.dumps(fields)[:-1] + ", " + written + "}"
    path = tmp_path / "big.jsonl"
    path.write_text(text + "\n" + json.dumps(memory(2)) + "\n", encoding="utf-8")
    result = run([path], db_url)
    assert_invariant(result, db)
    assert (result.processed, result.successful, result.validation_errors) == (2, 1, 1)
    value = next(word for word in written.replace(",", " ").replace("}", " ").split() if word[-1].isdigit())
    reject = rows(db, "SELECT source_line, reason, field, message, raw FROM pipeline_rejects")
    assert [(r["source_line"], r["reason"], r["field"]) for r in reject] == [
        (1, f"{field}:type(integer)", field)
    ]
    assert f"(got {value})" in reject[0]["message"]
    assert reject[0]["raw"] == text


def test_a_huge_number_beside_a_null_field_is_told_apart_from_it(db_url, db, tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(
        '{"id": "a", "summary": "s", "participants": [], "sourceMessageIds": [], "confidence": null}\n'
        '{"id": "b", "summary": "s", "participants": [], "sourceMessageIds": [], "confidence": 1e400}\n',
        encoding="utf-8",
    )
    result = run([path], db_url)
    assert_invariant(result, db)
    got = rows(db, "SELECT source_line, reason, message FROM pipeline_rejects ORDER BY 1")
    assert [(r["source_line"], r["reason"]) for r in got] == [
        (1, "confidence:required"),
        (2, "confidence:type(integer)"),
    ]
    assert got[1]["message"] == (
        "confidence must be of JSON type integer (got 1e400); fix the value in the source record"
    )
