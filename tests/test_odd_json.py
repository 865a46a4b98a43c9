"""What JavaScript's JSON.parse (the original's reader) reads where DuckDB reads otherwise, and
bytes that are not UTF-8, stage by stage: the last of a repeated key wins, text PostgreSQL
cannot store is refused by name, any depth is read, and every reader rejects invalid bytes
at their record."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
import pytest

from pipeline.config import BatchConfig
from pipeline.datasets import get_dataset
from pipeline.extract import record_keys
from pipeline.extract.parts import file_parts, quotes_in, read_part, with_quote_states
from pipeline.extract.readers import END, file_frames
from pipeline.normalize.decode import MAX_STORED_DEPTH
from pipeline.normalize.stage import stage_batch
from pipeline.testing import cli, run
from tests.conftest import assert_invariant, memory, raw_frame, rows

MEMORIES = get_dataset("memories")


def staged(*lines: str, **settings) -> tuple[pl.DataFrame, pl.DataFrame]:
    config = BatchConfig(log_progress=False, **settings)
    return stage_batch(raw_frame(list(lines)), MEMORIES, config, datetime.now(UTC))


def written(record: dict, members: str) -> str:
    """A record's line with ``members`` written as given after its own."""
    return json.dumps(record)[:-1] + ", " + members + "}"


def reasons(rejects: pl.DataFrame) -> list[tuple[int, str]]:
    return sorted(zip(rejects["source_line"], rejects["reason"], strict=True))


def nested(depth: int, objects: bool = False) -> str:
    return '{"k": ' * depth + "1" + "}" * depth if objects else "[" * depth + "]" * depth


# --- bytes that are not UTF-8 -------------------------------------------------------------


def csv_with_invalid_bytes() -> bytes:
    """Rows holding bytes that are not UTF-8 on their first line, on a later line of a quoted
    cell, none (a U+FFFD written as itself), and a header holding one."""
    rows_ = ["id,summary,n\xe9"]
    for n in range(24):
        cell = {3: "Ren\xe9e", 5: "multi\nline \xe9 here", 6: "written \ufffd itself"}.get(n % 7, f"row {n}")
        rows_.append(f'{n},"{cell}",x')
    return "\n".join(rows_).encode("utf-8").replace("\xe9".encode(), b"\xe9") + b"\n"


def invalid_rows(frame: pl.DataFrame) -> list[int]:
    return frame.filter(pl.col("parse_error") == "invalid_utf8")["source_line"].to_list()


@pytest.mark.parametrize("batch_size", [1, 3, 1_000])
def test_csv_rows_holding_bytes_that_are_not_utf8_are_rejected_alike_whole_and_in_parts(tmp_path, batch_size):
    path = tmp_path / "latin1.csv"
    path.write_bytes(csv_with_invalid_bytes())
    whole = pl.concat(file_frames(path, batch_size, frozenset())).drop(END)
    assert invalid_rows(whole) == [5, 7, 13, 15, 21, 23]
    assert whole.filter(pl.col("raw").str.contains("written"))["parse_error"].null_count() == 3
    parts = file_parts(path, batch_size)
    parts = with_quote_states(parts, [quotes_in(part) for part in parts])
    frames, before = [], 0
    for part in parts:
        frame, lines = read_part(part)
        frames.append(frame.with_columns(pl.col("source_line") + before))
        before += lines
    assert pl.concat(frames).equals(whole)


def test_a_messages_csv_in_latin1_loads_only_its_utf8_rows_with_workers(db_url, db, tmp_path):
    path = tmp_path / "chats.csv"
    header = "Chat Session,Message Date,Type,Sender ID,Sender Name,Text\n"
    lines = [
        f"Sam,2024-03-05 18:22:{n:02d},Incoming,+1555,Sam,{'Café' if n % 2 else 'plain'} {n}\n"
        for n in range(6)
    ]
    path.write_bytes((header + "".join(lines)).encode("cp1252"))
    args = ("migrate", path, "--db", db_url, "--dataset", "messages", "--format", "json", "--batch-size", "2")
    done = cli(*args, "--workers", "2")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["successful"], report["errors_by_reason"]) == (3, {"invalid_utf8": 3})
    assert sorted(r["text"] for r in rows(db, "SELECT text FROM messages")) == [
        "plain 0",
        "plain 2",
        "plain 4",
    ]


# --- JSON arrays and keys at any depth ----------------------------------------------------


def test_the_keys_of_a_file_leave_out_lines_too_deep_for_pythons_parser(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text(nested(100_000) + "\n" + written(memory(1), f'"deep": {nested(5_000)}') + "\n")
    assert "summary" in record_keys(path, 1_000)


@pytest.mark.parametrize("text", ["[{}, ]", "[{}] {}", '[{"a": 1}'])
def test_a_json_array_json_parse_refuses_is_one_invalid_json_record(db_url, db, tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    result = run([path], db_url)
    assert_invariant(result, db)
    assert (result.processed, result.parse_errors) == (1, 1)
    [reject] = rows(db, "SELECT source_line, reason, raw FROM pipeline_rejects")
    assert (reject["source_line"], reject["reason"], reject["raw"]) == (1, "invalid_json", text)


def test_json_array_elements_holding_bytes_that_are_not_utf8_are_rejected_alone(db_url, db, tmp_path):
    path = tmp_path / "latin1.json"
    array = json.dumps([memory(1, summary="Café"), memory(2), memory(3, summary="Zoë")], ensure_ascii=False)
    path.write_bytes(array.encode("cp1252"))
    result = run([path], db_url)
    assert_invariant(result, db)
    found = rows(db, "SELECT source_line, reason FROM pipeline_rejects ORDER BY 1")
    assert [(r["source_line"], r["reason"]) for r in found] == [(1, "invalid_utf8"), (3, "invalid_utf8")]
    assert rows(db, "SELECT id FROM memories") == [{"id": "mem-2"}]


# --- numbers ------------------------------------------------------------------------------


def test_an_integral_number_written_with_a_fraction_or_an_exponent_is_that_integer():
    context = '"emotionalContext": {"primaryMood": "mixed", "intensity": %s}'
    lines = [
        json.dumps(memory(1, emotionalContext={"primaryMood": "mixed", "intensity": 3})),
        *(
            written(memory(n, confidence=None), f'"confidence": {value}, ' + context % intensity)
            for n, value, intensity in [
                (2, "7.0", "3.0"),
                (3, "1e1", "30e-1"),
                (4, "-0.0", "3"),
                (5, "70E-1", "3"),
            ]
        ),
        *(
            written(memory(n, confidence=None), f'"confidence": {value}')
            for n, value in [(6, "7.5"), (7, "1e400"), (8, "18446744073709551616"), (9, "9.3e18")]
        ),
    ]
    kept, rejects = staged(*lines)
    assert reasons(rejects) == [
        (4, "confidence:in_range(1,10)"),
        *((line, "confidence:type(integer)") for line in (6, 7, 8, 9)),
    ]
    assert kept.select("id", "confidence", pl.col("emotionalContext").struct.field("intensity")).rows() == [
        ("mem-1", 7, 3),
        ("mem-2", 7, 3),
        ("mem-3", 10, 3),
        ("mem-5", 7, 3),
    ]
    same = written(memory(1, confidence=None), '"confidence": 7.0')
    assert staged(same)[0]["content_hash"].item() == kept["content_hash"][0]


# --- depth --------------------------------------------------------------------------------


def test_a_deep_record_whose_strings_look_lenient_is_still_json():
    line = written(memory(1, summary="a list, ] or a ratio:nan in words"), f'"extra": {nested(200)}')
    kept, rejects = staged(line)
    assert (kept["id"].to_list(), rejects.height) == (["mem-1"], 0)


def with_part(n: int, text: str) -> str:
    return written(memory(n), '"relationshipDynamics": {"interactionQuality": ' + text + "}")


def test_a_part_nested_deeper_than_postgresql_reads_is_too_deep_and_one_level_less_loads(
    db_url, db, tmp_path
):
    path = tmp_path / "deep.jsonl"
    lines = [
        with_part(1, nested(MAX_STORED_DEPTH, objects=True)),
        with_part(2, nested(MAX_STORED_DEPTH)),
        with_part(3, nested(MAX_STORED_DEPTH + 1)),
        with_part(4, nested(MAX_STORED_DEPTH + 1, objects=True)),
        written(memory(5), f'"extra": {nested(100_000)}'),
    ]
    path.write_text("\n".join(lines) + "\n")
    result = run([path], db_url)
    assert_invariant(result, db)
    assert result.successful == 3
    found = rows(db, "SELECT source_line, category, reason, message FROM pipeline_rejects ORDER BY 1")
    assert [(r["source_line"], r["category"], r["reason"]) for r in found] == [
        (3, "parse", "too_deep"),
        (4, "parse", "too_deep"),
    ]
    assert f"more than {MAX_STORED_DEPTH:,} levels deep" in found[0]["message"]


# --- repeated keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "field", "expected"),
    [
        ('"confidence": 3, "confidence": 7', "confidence", 7),
        ('"confidence" : 3 , "confidence"\t: 8', "confidence", 8),
        ('"confidence": null, "confidence": 6', "confidence", 6),
        ('"confidence": 6, "conf\\u0069dence": 4', "confidence", 4),
        ('"summary": "first", "extra": {"summary": 1, "summary": 2}, "summary": "last"', "summary", "last"),
        ('"extra": {"confidence": 1, "confidence": 2}, "confidence": 5', "confidence", 5),
        (
            '"participants": [{"id": "p1", "name": "A", "role": "r", "name": "B"}]',
            "participants",
            [{"id": "p1", "name": "B", "role": "r"}],
        ),
        (
            '"emotionalContext": {"primaryMood": "angry", "intensity": 2}, '
            '"emotionalContext": {"primaryMood": "mixed", "intensity": 4, "intensity": 9}',
            "emotionalContext",
            (("primaryMood", "mixed"), ("intensity", 9)),
        ),
    ],
)
def test_the_last_of_a_repeated_key_wins_at_every_level_read(members, field, expected):
    kept, rejects = staged(written(memory(1, **{field: None}), members), json.dumps(memory(2)))
    assert rejects.is_empty(), rejects.to_dicts()
    got = kept.filter(pl.col("id") == "mem-1")[field].to_list()[0]
    if isinstance(expected, tuple):
        assert {k: got[k] for k, _ in expected} == dict(expected)
    else:
        assert got == expected


def test_a_repeated_key_ending_in_null_leaves_the_field_missing():
    rejects = staged(written(memory(1, confidence=None), '"confidence": 7, "confidence": null'))[1]
    assert reasons(rejects) == [(1, "confidence:required")]


def test_a_repeated_part_key_stores_the_last_part(db_url, db, tmp_path):
    path = tmp_path / "parts.jsonl"
    path.write_text(
        written(
            memory(1),
            '"relationshipDynamics": {"overallDynamics": {"tone": "cold"}, '
            '"overallDynamics": {"tone": "warm", "tone": "warmest"}}',
        )
        + "\n"
    )
    assert_invariant(run([path], db_url), db)
    [stored] = rows(db, "SELECT overall_dynamics::text AS o FROM relationship_dynamics")
    assert json.loads(stored["o"]) == {"tone": "warmest"}
