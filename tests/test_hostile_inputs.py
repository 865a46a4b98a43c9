"""Hostile and odd inputs through the real command: each loads as the original (JSON.parse,
JavaScript numbers) would load it, or is rejected at its line with a documented reason; none
crashes the run, unbalances its totals, or puts a replacement character or a NUL into the
user's tables."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import polars as pl
import pytest

from pipeline.datasets import get_dataset
from pipeline.datasets.messages import HEADERS
from pipeline.testing import cli
from tests.conftest import assert_invariant, memory, rows

PEOPLE = '[{"id":"p1","name":"Sam","role":"friend"}]'


def line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


def with_fields(record: dict, written: str) -> str:
    """A record's line with members written as given (numbers, escapes, keys as typed)."""
    return line(record)[:-1] + ", " + written + "}"


def nested(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


def jsonl(*lines: str) -> bytes:
    return "".join(text + "\n" for text in lines).encode()


def memories_csv(*cells: tuple[str, str], encoding: str = "utf-8") -> bytes:
    """Rows ``id,summary`` of valid memories, written in ``encoding``."""
    rows_ = [
        f'{id_},{summary},7,"{PEOPLE.replace(chr(34), chr(34) * 2)}","[""{id_}-m""]"'
        for id_, summary in cells
    ]
    return "\n".join(["id,summary,confidence,participants,sourceMessageIds", *rows_, ""]).encode(encoding)


def messages_csv(*texts: str, encoding: str = "utf-8") -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, HEADERS, lineterminator="\n")
    writer.writeheader()
    for n, text in enumerate(texts):
        writer.writerow(
            {
                "Chat Session": "Sam",
                "Message Date": f"2024-03-05 18:22:{n:02d}",
                "Type": "Incoming",
                "Sender ID": "+15550100231",
                "Sender Name": "Sam",
                "Text": text,
            }
        )
    return out.getvalue().encode(encoding)


def parquet(frame: pl.DataFrame) -> bytes:
    out = io.BytesIO()
    frame.write_parquet(out)
    return out.getvalue()


@dataclass(frozen=True)
class Kind:
    """One hostile input: its file, what loads, the rejects by line and reason, and a check of
    what is stored."""

    name: str
    suffix: str
    content: Callable[[], bytes]
    loaded: int
    rejects: tuple[tuple[int, str], ...] = ()
    args: tuple[str, ...] = ()
    stored: Callable[[object], None] | None = None
    no_records: bool = False


def stored_memory(db, id_: str) -> dict:
    [found] = rows(
        db,
        "SELECT confidence, summary, participants::text AS p, content_hash FROM memories WHERE id = $1",
        id_,
    )
    return found


def duplicate_keys() -> bytes:
    """The first record repeats keys at every level the dataset reads; the second is it as
    JSON.parse reads it (the last of each key)."""
    repeated = (
        '{"id": "mem-1", "summary": "first", "confidence": 3, "summary": "Trip to the lake",'
        ' "participants": [{"id": "p1", "name": "Nobody", "role": "friend", "name": "Sam"}],'
        ' "sourceMessageIds": ["m1"], "confidence": 7,'
        ' "emotionalContext": {"primaryMood": "angry", "intensity": 3, "primaryMood": "mixed"}}'
    )
    last = memory(
        1,
        summary="Trip to the lake",
        sourceMessageIds=["m1"],
        extractedAt=None,
        emotionalContext={"primaryMood": "mixed", "intensity": 3},
    )
    return jsonl(repeated, line(last))


def check_duplicate_keys(db) -> None:
    got = stored_memory(db, "mem-1")
    assert (got["confidence"], got["summary"], json.loads(got["p"])[0]["name"]) == (
        7,
        "Trip to the lake",
        "Sam",
    )
    assert rows(db, "SELECT primary_mood FROM emotional_contexts") == [{"primary_mood": "mixed"}]


def integral_numbers() -> bytes:
    context = {"primaryMood": "mixed", "intensity": 3}
    return jsonl(
        with_fields(
            memory(1, confidence=None, emotionalContext=None),
            '"confidence": 7.0, "emotionalContext": {"primaryMood": "mixed", "intensity": 3.0}',
        ),
        line(memory(1, emotionalContext=context)),
        with_fields(memory(2, confidence=None), '"confidence": 1e1'),
        with_fields(memory(3, confidence=None), '"confidence": 7.5'),
        with_fields(memory(4, confidence=None), '"confidence": 70E-1'),
    )


def check_integral_numbers(db) -> None:
    assert stored_memory(db, "mem-1")["confidence"] == 7
    assert stored_memory(db, "mem-2")["confidence"] == 10
    assert stored_memory(db, "mem-4")["confidence"] == 7
    assert rows(db, "SELECT intensity FROM emotional_contexts") == [{"intensity": 3}]


def check_huge_summary(db) -> None:
    [got] = rows(db, "SELECT length(summary) AS n FROM memories WHERE id = 'mem-1'")
    assert got["n"] == 50 * 1024 * 1024


BIG = "123456789012345678901234567890"
KINDS = [
    Kind("byte_order_mark", ".jsonl", lambda: b"\xef\xbb\xbf" + jsonl(line(memory(1)), line(memory(2))), 2),
    Kind("crlf_line_endings", ".jsonl", lambda: jsonl(line(memory(1)) + "\r", line(memory(2)) + "\r"), 2),
    Kind("crlf_csv", ".csv", lambda: memories_csv(("c1", "one"), ("c2", "two")).replace(b"\n", b"\r\n"), 2),
    Kind(
        "duplicate_keys_last_wins",
        ".jsonl",
        duplicate_keys,
        1,
        ((2, "exact_duplicate"),),
        stored=check_duplicate_keys,
    ),
    Kind(
        "huge_integer_in_an_unread_field",
        ".jsonl",
        lambda: jsonl(with_fields(memory(1), f'"extra": {BIG}')),
        1,
    ),
    Kind(
        "deep_array_in_an_unread_field",
        ".jsonl",
        lambda: jsonl(with_fields(memory(1), f'"extra": {nested(5_000)}'), line(memory(2))),
        2,
    ),
    Kind(
        "deep_element_of_a_json_array",
        ".json",
        lambda: (
            "[" + with_fields(memory(1), f'"extra": {nested(5_000)}') + f", {nested(100_000)}]"
        ).encode(),
        1,
        ((2, "not_an_object"),),
    ),
    Kind(
        "integral_numbers",
        ".jsonl",
        integral_numbers,
        3,
        ((2, "exact_duplicate"), (4, "confidence:type(integer)")),
        stored=check_integral_numbers,
    ),
    Kind(
        "integral_floats_in_parquet",
        ".parquet",
        lambda: parquet(pl.DataFrame([memory(1), memory(2)]).with_columns(confidence=pl.Series([7.0, 7.5]))),
        1,
        ((2, "confidence:type(integer)"),),
    ),
    Kind(
        "deeply_nested_line",
        ".jsonl",
        lambda: jsonl(line(memory(1)), nested(100_000), line(memory(2))),
        2,
        ((2, "not_an_object"),),
    ),
    Kind(
        "part_nested_too_deep_to_store",
        ".jsonl",
        lambda: jsonl(
            with_fields(memory(1), '"relationshipDynamics": {"overallDynamics": ' + nested(100_000) + "}"),
            with_fields(memory(2), '"relationshipDynamics": {"overallDynamics": ' + nested(9_000) + "}"),
        ),
        1,
        ((1, "too_deep"),),
    ),
    Kind(
        "nan",
        ".jsonl",
        lambda: jsonl(with_fields(memory(1, confidence=None), '"confidence": NaN'), line(memory(2))),
        1,
        ((1, "invalid_json"),),
    ),
    Kind(
        "truncated_last_line",
        ".jsonl",
        lambda: jsonl(line(memory(1))) + line(memory(2))[:40].encode(),
        1,
        ((2, "invalid_json"),),
    ),
    Kind(
        "binary_junk",
        ".jsonl",
        lambda: (
            jsonl(line(memory(1)))
            + bytes(range(11, 256))
            + b"\n"
            + b"\x01\x02\x7f\n"
            + jsonl(line(memory(2)))
        ),
        2,
        ((2, "invalid_utf8"), (3, "invalid_json")),
    ),
    Kind(
        "invalid_utf8_in_jsonl",
        ".jsonl",
        lambda: (
            jsonl(line(memory(1))) + line(memory(2, summary="Renée au Café crème")).encode("cp1252") + b"\n"
        ),
        1,
        ((2, "invalid_utf8"),),
    ),
    Kind(
        "invalid_utf8_in_csv",
        ".csv",
        lambda: memories_csv(("c1", "Renée au Café crème"), ("c2", "plain"), encoding="cp1252"),
        1,
        ((2, "invalid_utf8"),),
    ),
    Kind(
        "invalid_utf8_in_a_messages_csv",
        ".csv",
        lambda: messages_csv("Café crème?", "see you", encoding="cp1252"),
        1,
        ((2, "invalid_utf8"),),
        args=("--dataset", "messages"),
    ),
    Kind(
        "nul_byte_outside_a_string",
        ".jsonl",
        lambda: jsonl(line(memory(1))[:-1] + ",\x00}", line(memory(2))),
        1,
        ((1, "invalid_json"),),
    ),
    Kind(
        "huge_confidence",
        ".jsonl",
        lambda: jsonl(with_fields(memory(1, confidence=None), '"confidence": 1e400')),
        0,
        ((1, "confidence:type(integer)"),),
    ),
    Kind(
        "huge_integer_confidence",
        ".jsonl",
        lambda: jsonl(with_fields(memory(1, confidence=None), f'"confidence": {BIG}')),
        0,
        ((1, "confidence:type(integer)"),),
    ),
    Kind(
        "lone_surrogate_in_a_text",
        ".jsonl",
        lambda: jsonl(
            with_fields(memory(1, summary=None), r'"summary": "half \ud800 of a pair"'), line(memory(2))
        ),
        1,
        ((1, "summary:storable_text"),),
    ),
    Kind(
        "nul_in_a_text",
        ".jsonl",
        lambda: jsonl(
            with_fields(memory(1, summary=None), r'"summary": "nul \u0000 inside"'), line(memory(2))
        ),
        1,
        ((1, "summary:storable_text"),),
    ),
    Kind(
        "fifty_megabyte_line",
        ".jsonl",
        lambda: jsonl(line(memory(1, summary="z" * (50 * 1024 * 1024)))),
        1,
        stored=check_huge_summary,
    ),
    Kind("empty_file", ".jsonl", lambda: b"", 0, no_records=True),
    Kind("blank_lines", ".jsonl", lambda: b"\n \n\t\r\n\n", 0, no_records=True),
    Kind("empty_csv", ".csv", lambda: b"", 0, no_records=True),
    Kind("blank_csv", ".csv", lambda: b"\n\n\n", 0, no_records=True),
]


@pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])
def test_a_hostile_input_loads_as_the_original_would_or_is_rejected_at_its_line(db_url, db, tmp_path, kind):
    path = tmp_path / f"{kind.name}{kind.suffix}"
    path.write_bytes(kind.content())
    done = cli("migrate", path, "--db", db_url, "--format", "json", *kind.args)
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert_invariant(SimpleNamespace(**report), db)
    assert report["successful"] == kind.loaded
    found = rows(db, "SELECT source_line, reason FROM pipeline_rejects ORDER BY source_line, reason")
    assert [(r["source_line"], r["reason"]) for r in found] == list(kind.rejects)
    if kind.no_records:
        assert f"no records in {path}" in done.stderr
    if kind.stored:
        kind.stored(db)
    dataset = get_dataset(kind.args[1] if kind.args else "memories")
    for table in dataset.tables:
        [clean] = rows(
            db, f"SELECT count(*) AS n FROM {table.name} t WHERE strpos(t::text, $1) > 0", "\ufffd"
        )
        assert clean["n"] == 0, f"{table.name} holds U+FFFD"


def test_invalid_utf8_rejects_show_the_line_with_replacement_characters(db_url, db, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(memories_csv(("c1", "Renée"), ("c2", "plain"), encoding="cp1252"))
    assert cli("migrate", path, "--db", db_url, "--quiet").returncode == 0
    [reject] = rows(db, "SELECT category, raw FROM pipeline_rejects")
    assert reject["category"] == "parse"
    assert json.loads(reject["raw"])["summary"] == "Ren\ufffde"


def test_a_nul_byte_outside_a_string_is_stored_in_the_reject_as_an_escape(db_url, db, tmp_path):
    text = line(memory(1))[:-1] + ",\x00}"
    path = tmp_path / "nul.jsonl"
    path.write_bytes(jsonl(text))
    assert cli("migrate", path, "--db", db_url, "--quiet").returncode == 0
    assert rows(db, "SELECT raw FROM pipeline_rejects") == [{"raw": text.replace("\x00", "\\u0000")}]
