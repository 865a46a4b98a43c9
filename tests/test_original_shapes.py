"""Relationship dynamics and temporal patterns in the original system's shapes, end to end.

The original declared participant dynamics and communication patterns as arrays and stored
every part as JSON text: an object or a list loads as given, a scalar or a null is refused.
A generated export migrated by the pipeline gives the counts of ``tests/reference.py``, the
original processor one record at a time.
"""

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline import BatchConfig, migrate
from pipeline.datasets import get_dataset
from pipeline.normalize.stage import stage_batch
from tests import reference
from tests.conftest import ROOT, assert_invariant, memory, raw_frame, rows, write_jsonl

PARTS = ("overallDynamics", "participantDynamics", "communicationPatterns", "interactionQuality")


def context(**fields) -> dict:
    return {"primaryMood": "mixed", "intensity": 4, **fields}


ORIGINAL_SHAPES = [
    memory(
        1,
        emotionalContext=context(
            temporalPatterns=[{"timeOfDay": "evening", "recurring": True}, {"weekday": "Sunday"}]
        ),
        relationshipDynamics={
            "overallDynamics": {"tone": "warm", "closeness": 8},
            "participantDynamics": [
                {"participants": ["p1", "p2"], "dynamicType": "supportive", "observations": ["checks in"]},
                {"participants": ["p1", "p3"], "dynamicType": "tense", "observations": []},
            ],
            "communicationPatterns": ["quick back-and-forth texting", "long voice notes"],
            "interactionQuality": {"quality": "strained", "indicators": ["short replies", "apology"]},
        },
    ),
    memory(
        2,
        emotionalContext=context(id="ec-two", temporalPatterns={"ranges": [[9, 12], [18, 23]], "tz": None}),
        relationshipDynamics={
            "id": "rd-two",
            "overallDynamics": {"trend": {"from": "distant", "to": "close", "months": [1, 2.5, -3]}},
            "participantDynamics": [],
            "communicationPatterns": [],
            "interactionQuality": {"quality": "warm", "indicators": [], "score": 0.75, "big": 2**70},
        },
    ),
    # Strings that start with a bracket, and keys named like parts, inside the parts.
    memory(
        3,
        emotionalContext=context(temporalPatterns=["{not json", "[sic]"]),
        relationshipDynamics={
            "overallDynamics": {"interactionQuality": None, "communicationPatterns": "mostly text"},
            "participantDynamics": [{"participants": ["p1"], "observations": ['said "[hi]"', "{x}"]}],
            "communicationPatterns": [["emoji", "🎉"], {"medium": "voice"}],
        },
    ),
    # Parts left out: each takes its default.
    memory(4, emotionalContext=context(), relationshipDynamics={"participantDynamics": [{"a": 1}]}),
    memory(
        5,
        relationshipDynamics={"overallDynamics": {"communicationPatterns": None}, "participantDynamics": []},
    ),
]


def lines_of(records: list[dict]) -> list[str]:
    """JSONL lines, written alternately as Python and JavaScript write JSON (with and without spaces)."""
    return [
        json.dumps(r, ensure_ascii=False, separators=(",", ":") if n % 2 else None)
        for n, r in enumerate(records)
    ]


def stored_parts(db) -> tuple[dict, dict]:
    dynamics = rows(
        db,
        "SELECT m.summary, r.id, r.overall_dynamics::text AS o, r.participant_dynamics::text AS p, "
        "r.communication_patterns::text AS c, r.interaction_quality::text AS q "
        "FROM relationship_dynamics r JOIN memories m ON m.id = r.memory_id",
    )
    contexts = rows(
        db,
        "SELECT m.summary, e.id, e.temporal_patterns::text AS t "
        "FROM emotional_contexts e JOIN memories m ON m.id = e.memory_id",
    )
    return (
        by_summary(dynamics, dict(zip("opcq", PARTS, strict=True))),
        by_summary(contexts, {"t": "temporalPatterns"}),
    )


def by_summary(found: list[dict], columns: dict[str, str]) -> dict[str, dict]:
    """Stored child rows by their memory's summary: ``id`` and each jsonb column, decoded."""
    return {r["summary"]: {"id": r["id"], **{c: json.loads(r[k]) for k, c in columns.items()}} for r in found}


def test_records_in_the_original_shapes_load_whole_and_as_given(db_url, db, tmp_path):
    result = migrate(
        [str(write_jsonl(tmp_path / "original.jsonl", lines_of(ORIGINAL_SHAPES)))],
        BatchConfig(log_progress=False),
        db_url=db_url,
    )
    assert_invariant(result, db)
    assert (result.processed, result.successful) == (len(ORIGINAL_SHAPES), len(ORIGINAL_SHAPES))
    assert rows(db, "SELECT count(*) AS n FROM pipeline_rejects")[0]["n"] == 0
    dynamics, contexts = stored_parts(db)
    for record in ORIGINAL_SHAPES:
        rd, ec, memory_id = record["relationshipDynamics"], record.get("emotionalContext"), record["id"]
        assert dynamics[record["summary"]] == {
            "id": rd.get("id", f"rd-{memory_id}"),
            **{part: rd.get(part, {}) for part in PARTS},
        }
        if ec is not None:
            assert contexts[record["summary"]] == {
                "id": ec.get("id", f"ec-{memory_id}"),
                "temporalPatterns": ec.get("temporalPatterns", {}),
            }
    assert len(contexts) == sum("emotionalContext" in r for r in ORIGINAL_SHAPES)


NOT_STRUCTURES = [5, 2.5, True, "supportive", "", " {}", '[{"participants": ["p1", "p2"]}]', "{x", None]


def with_part(n: int, path: str, value) -> dict:
    parent, part = path.split(".")
    base = context() if parent == "emotionalContext" else {}
    return memory(n, **{parent: {**base, part: value}})


PATHS = ("emotionalContext.temporalPatterns", *(f"relationshipDynamics.{part}" for part in PARTS))


def test_scalars_and_nulls_are_refused_with_the_value_while_absent_parts_load(db_url, db, tmp_path):
    cases = [(path, value) for path in PATHS for value in NOT_STRUCTURES]
    records = [with_part(n, path, value) for n, (path, value) in enumerate(cases, start=1)]
    absent = [
        memory(1000, emotionalContext=context()),
        memory(1001, relationshipDynamics={}),
        memory(1002, relationshipDynamics={"communicationPatterns": ["banter"]}),
    ]
    path = write_jsonl(tmp_path / "scalars.jsonl", lines_of([*records, *absent]))
    result = migrate([str(path)], BatchConfig(log_progress=False), db_url=db_url)
    assert_invariant(result, db)
    assert (result.validation_errors, result.successful) == (len(cases), len(absent))
    rejects = rows(
        db, "SELECT source_line, reason, field, message FROM pipeline_rejects ORDER BY source_line"
    )
    assert [(r["source_line"], r["reason"], r["field"]) for r in rejects] == [
        (line, f"{path}:type(object_or_list)", path) for line, (path, _) in enumerate(cases, start=1)
    ]
    for reject, (path, value) in zip(rejects, cases, strict=True):
        written = json.dumps(value, ensure_ascii=False)
        assert reject["message"] == (
            f"{path} must be of JSON type object_or_list (got {written}); fix the value in the source record"
        )
    dynamics, contexts = stored_parts(db)
    assert [contexts[r["summary"]]["temporalPatterns"] for r in absent if "emotionalContext" in r] == [{}]
    assert [dynamics[r["summary"]]["communicationPatterns"] for r in absent[1:]] == [{}, ["banter"]]


@pytest.mark.parametrize("validate_first", [True, False])
def test_a_part_of_the_wrong_type_is_refused_even_without_validating_first(validate_first):
    lines = [json.dumps(with_part(1, "relationshipDynamics.participantDynamics", "x")), json.dumps(memory(2))]
    config = BatchConfig(validate_first=validate_first)
    kept, rejects = stage_batch(raw_frame(lines), get_dataset("memories"), config, datetime.now(UTC))
    assert kept["id"].to_list() == ["mem-2"]
    assert rejects["reason"].to_list() == ["relationshipDynamics.participantDynamics:type(object_or_list)"]


def test_a_generated_export_gives_the_original_processors_counts(db_url, db, tmp_path):
    source = tmp_path / "export.jsonl"
    generator = ROOT / "data" / "generate.py"
    command = [sys.executable, str(generator), "--records", "3000", "--seed", "11", "--out", str(source)]
    subprocess.run(command, check=True)
    expected = reference.run(source)
    result = migrate([str(source)], BatchConfig(batch_size=700, log_progress=False), db_url=db_url)
    assert_invariant(result, db)
    assert counted(result) == counted(expected)
    assert result.failed == expected.failed
    assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == expected.successful


def counted(result) -> dict[str, int]:
    names = ("processed", "successful", "parse_errors", "validation_errors", "database_errors")
    return {name: getattr(result, name) for name in (*names, "duplicates_skipped", "similar_merged")}


def refused_by_the_server(tmp_path) -> Path:
    """Records the server refuses (a child id a stored record holds) before records that depend
    on them: a copy of one, one reusing its id, a near duplicate of one."""
    taken = {"emotionalContext": {"id": "ec-taken", "primaryMood": "neutral", "intensity": 3}}
    dynamics = {"relationshipDynamics": {"id": "rd-taken"}}
    first = memory(1, summary="we walked to the old harbour at dawn", sourceMessageIds=["m1"], **dynamics)
    refused_child = memory(2, summary="a picnic by the river with the whole family", **taken)
    return write_jsonl(
        tmp_path / "refused.jsonl",
        [
            memory(9, id="holder", summary="someone else's memory", **taken, **dynamics),
            first,
            {**first, "relationshipDynamics": None},
            memory(3, id="mem-1", summary="a different memory under a reused id"),
            refused_child,
            {**refused_child, "id": "mem-2-copy", "emotionalContext": None},
            memory(4, summary="a picnic by the river with the whole family today", sourceMessageIds=["m2-a"]),
        ],
    )


@pytest.mark.parametrize("batch_size", [3, 100])
def test_in_standard_mode_a_copy_of_a_record_the_server_refused_loads(db_url, db, tmp_path, batch_size):
    """Standard mode leaves exact copies to the hash's unique constraint: inside a batch, the
    copy after a refused record must not be refused for a row that was never stored."""
    config = BatchConfig(batch_size=batch_size, mode="standard", log_progress=False)
    result = migrate([str(refused_by_the_server(tmp_path))], config, db_url=db_url)
    assert_invariant(result, db)
    assert "mem-2-copy" in {r["id"] for r in rows(db, "SELECT id FROM memories")}


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_records_refused_by_the_server_are_decided_without_as_the_original_did(
    db_url, db, tmp_path, batch_size
):
    source = refused_by_the_server(tmp_path)
    expected = reference.run(source)
    result = migrate([str(source)], BatchConfig(batch_size=batch_size, log_progress=False), db_url=db_url)
    assert_invariant(result, db)
    assert counted(result) == counted(expected)
    assert (expected.database_errors, expected.similar_merged) == (3, 1)
    stored = {r["id"]: r["summary"] for r in rows(db, "SELECT id, summary FROM memories")}
    assert stored == {
        "holder": "someone else's memory",
        "mem-1": "we walked to the old harbour at dawn",
        "mem-2-copy": "a picnic by the river with the whole family",
    }
