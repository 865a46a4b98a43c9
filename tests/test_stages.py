"""The pure stages of one batch: parse, legacy transform, validation, in-batch dedup."""

import json
from datetime import UTC, datetime

import polars as pl
import pytest

from pipeline.config import BatchConfig
from pipeline.datasets import get_dataset
from pipeline.normalize import duckjson as duck
from pipeline.normalize.stage import stage_batch
from tests.conftest import memory, raw_frame

STARTED = datetime(2026, 1, 2, tzinfo=UTC)


def stage(*records, mode: str = "dedup", validate: bool = True):
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    raw = raw_frame(lines)
    config = BatchConfig(mode=mode, validate_first=validate)
    return stage_batch(raw, get_dataset("memories"), config, STARTED)


def reasons(rejects: pl.DataFrame) -> list[tuple[int, str, str]]:
    return sorted(rejects.select("source_line", "category", "reason").iter_rows())


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"id": "x", "summary": "cut', "invalid_json"),
        ("{'id': 'x'}", "invalid_json"),
        ("[1, 2]", "not_an_object"),
        ('"text"', "not_an_object"),
        ("null", "not_an_object"),
        ("42", "not_an_object"),
        # JSON extensions DuckDB's reader accepts: still not JSON
        ('{"id": "x", "confidence": NaN}', "invalid_json"),
        ('{"id": "x", "confidence": -Infinity}', "invalid_json"),
        ('{"id": "x", "sourceMessageIds": ["m1",]}', "invalid_json"),
        ('{"id": "x",  }', "invalid_json"),
        ("[1, 2, ]", "invalid_json"),
        ("nan", "invalid_json"),
    ],
)
def test_malformed_records_are_parse_rejects(line, reason):
    kept, rejects = stage(line, memory(1))
    assert reasons(rejects) == [(1, "parse", reason)]
    assert kept["id"].to_list() == ["mem-1"]
    assert rejects["raw"].to_list() == [line]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"id": ""}, "id:not_empty"),
        ({"summary": "   "}, "summary:not_blank"),
        ({"summary": None}, "summary:required"),
        ({"confidence": 11}, "confidence:in_range(1,10)"),
        ({"confidence": 0}, "confidence:in_range(1,10)"),
        ({"confidence": "high"}, "confidence:type(integer)"),
        ({"confidence": 7.5}, "confidence:type(integer)"),
        ({"confidence": 99999999999999999999999}, "confidence:type(integer)"),
        ({"confidence": "7"}, "confidence:type(integer)"),
        ({"confidence": True}, "confidence:type(integer)"),
        ({"confidence": None}, "confidence:required"),
        ({"participants": "Sam"}, "participants:type(list)"),
        ({"participants": [{"id": "", "name": "S", "role": "r"}]}, "participants.id:not_empty"),
        ({"participants": [{"id": "p", "role": "r"}]}, "participants.name:required"),
        ({"sourceMessageIds": "m1"}, "sourceMessageIds:type(list)"),
        ({"sourceMessageIds": ["m1", None]}, "sourceMessageIds:items_not_null"),
        ({"extractedAt": "yesterday"}, "extractedAt:iso8601"),
        ({"emotionalContext": "happy"}, "emotionalContext:type(object)"),
        ({"emotionalContext": ["positive"]}, "emotionalContext:type(object)"),
        ({"emotionalContext": 5}, "emotionalContext:type(object)"),
        ({"relationshipDynamics": True}, "relationshipDynamics:type(object)"),
        (
            {"emotionalContext": {"primaryMood": "angry", "intensity": 3}},
            "emotionalContext.primaryMood:isin(positive,negative,neutral,mixed,ambiguous)",
        ),
        (
            {"emotionalContext": {"primaryMood": "mixed", "intensity": 15}},
            "emotionalContext.intensity:in_range(1,10)",
        ),
        (
            {"emotionalContext": {"primaryMood": "mixed", "intensity": "very"}},
            "emotionalContext.intensity:type(integer)",
        ),
        ({"emotionalContext": {"primaryMood": "mixed"}}, "emotionalContext.intensity:required"),
        (
            {"emotionalContext": {"primaryMood": "mixed", "intensity": 2, "themes": "x"}},
            "emotionalContext.themes:type(list)",
        ),
        (
            {"emotionalContext": {"primaryMood": "mixed", "intensity": 2, "temporalPatterns": "evening"}},
            "emotionalContext.temporalPatterns:type(object_or_list)",
        ),
        (
            {"relationshipDynamics": {"overallDynamics": 5}},
            "relationshipDynamics.overallDynamics:type(object_or_list)",
        ),
    ],
)
def test_each_rule_rejects_the_record_with_its_reason_field_and_message(fields, reason):
    kept, rejects = stage(memory(1, **fields), memory(2))
    assert reasons(rejects) == [(1, "validation", reason)]
    assert kept["id"].to_list() == ["mem-2"]
    [row] = rejects.to_dicts()
    assert row["field"] == reason.split(":")[0]
    assert row["message"].startswith(row["field"] + " ")
    assert row["raw"] == json.dumps(memory(1, **fields), ensure_ascii=False)


def test_an_empty_object_is_an_object_missing_its_fields_not_a_wrong_type():
    _, rejects = stage(memory(1, emotionalContext={}), memory(2, relationshipDynamics={}))
    assert reasons(rejects) == [
        (1, "validation", "emotionalContext.intensity:required"),
        (1, "validation", "emotionalContext.primaryMood:required"),
    ]


def test_a_record_failing_several_rules_gets_one_reject_row_each():
    _, rejects = stage(memory(1, confidence=11, summary="  ", extractedAt="never"))
    assert reasons(rejects) == [
        (1, "validation", "confidence:in_range(1,10)"),
        (1, "validation", "extractedAt:iso8601"),
        (1, "validation", "summary:not_blank"),
    ]


def test_optional_parts_and_valid_timestamps_pass():
    full = memory(
        1,
        extractedAt="2024-03-05T18:22:10.5+02:00",
        emotionalContext={"primaryMood": "positive", "intensity": 7},
        relationshipDynamics={"overallDynamics": {"closeness": 0.8}},
    )
    kept, rejects = stage(full, memory(2, extractedAt=None), memory(3, extractedAt="2024-03-05"))
    assert rejects.is_empty()
    assert kept["extracted_at"].to_list() == [
        datetime(2024, 3, 5, 16, 22, 10, 500000, tzinfo=UTC),
        STARTED,
        datetime(2024, 3, 5, tzinfo=UTC),
    ]


def test_legacy_records_take_the_original_defaults():
    kept, rejects = stage(
        {"content": "Remember the lake", "confidence": 0},
        {"id": "legacy-7", "messages": ["m1", "m2"], "summary": "Trip"},
        {"summary": "", "content": "Only content"},
        {"id": "legacy-9", "messages": "not a list", "confidence": 4},
        mode="standard",
    )
    assert rejects.is_empty()
    got = kept.sort("record").select("summary", "confidence", "sourceMessageIds").to_dicts()
    assert got == [
        {"summary": "Remember the lake", "confidence": 5, "sourceMessageIds": ["legacy-content"]},
        {"summary": "Trip", "confidence": 5, "sourceMessageIds": ["m1", "m2"]},
        {"summary": "Only content", "confidence": 5, "sourceMessageIds": ["legacy-content"]},
        {"summary": "Legacy memory", "confidence": 4, "sourceMessageIds": []},
    ]
    assert (
        kept["participants"].to_list()
        == [[{"id": "legacy-user", "name": "Legacy User", "role": "unknown"}]] * 4
    )
    ids = kept.sort("record")["id"].to_list()
    assert ids[1] == "legacy-7" and ids[3] == "legacy-9"
    assert ids[0].startswith("legacy-") and ids[2].startswith("legacy-") and ids[0] != ids[2]


def test_derived_legacy_ids_are_the_same_on_every_run():
    first, _ = stage({"content": "Same text"})
    second, _ = stage({"content": "Same text"})
    assert first["id"].to_list() == second["id"].to_list()


def test_a_current_record_missing_one_list_is_not_legacy():
    _, rejects = stage(memory(1, participants=None))
    assert reasons(rejects) == [(1, "validation", "participants:required")]


def test_standard_mode_leaves_duplicates_to_the_database():
    twin = memory(2, summary=memory(1)["summary"], sourceMessageIds=memory(1)["sourceMessageIds"])
    kept, rejects = stage(memory(1), twin, mode="standard")
    assert kept["content_hash"].n_unique() == 1
    assert kept.height == 2 and rejects.is_empty()


def test_fields_are_read_by_name_whatever_characters_the_name_holds():
    inner = pl.Struct({"a'b": pl.Int64})
    dtype = pl.Struct({'it\'s "odd"': pl.String, "Message Date": pl.Int64, "o": inner})
    line = json.dumps({'it\'s "odd"': "x", "Message Date": 3, "o": {"a'b": 2}})
    checks, records = duck.read_json_objects(pl.Series([line, "[1]", "{"]), dtype)
    assert checks.to_dicts() == [
        {"valid": True, "object": True},
        {"valid": True, "object": False},
        {"valid": False, "object": False},
    ]
    assert records.row(0) == ("x", 3, {"a'b": 2})


def test_a_nested_value_that_is_no_object_reads_as_null_at_any_depth():
    inner = pl.Struct({"n": pl.Int64})
    dtype = pl.Struct({"it's o": pl.Struct({"in/ner~x": inner, "s": pl.String})})
    lines = [
        {"it's o": {"in/ner~x": {"n": 5}, "s": "a"}},
        {"it's o": {"in/ner~x": "text"}},
        {"it's o": "text"},
        {"it's o": {}},
        {"it's o": {"in/ner~x": {}}},
        {"it's o": [{"in/ner~x": {"n": 1}}]},
    ]
    _, records = duck.read_json_objects(pl.Series([json.dumps(line) for line in lines]), dtype)
    assert records["it's o"].to_list() == [
        {"in/ner~x": {"n": 5}, "s": "a"},
        {"in/ner~x": None, "s": None},
        None,
        {"in/ner~x": None, "s": None},
        {"in/ner~x": {"n": None}, "s": None},
        None,
    ]
