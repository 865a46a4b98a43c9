"""The chat-message dataset end to end: real multi-line CSV exports into a real PostgreSQL."""

import csv
import hashlib
import json
from datetime import UTC, datetime

import adbc_driver_manager
import pytest

from pipeline import testing
from pipeline.datasets.messages import DATASET, HEADERS
from pipeline.load.ledger import ensure_schema
from tests.conftest import ROOT, assert_invariant, rows
from tests.test_cli import cli

SAMPLE = ROOT / "data" / "messages_sample.csv"
EXPECTED = json.loads((ROOT / "data" / "messages_sample.expected.json").read_text())


def run(paths, db_url, **settings):
    return testing.run(paths, db_url, **{"dataset": "messages", **settings})


def write_csv(path, messages: list[dict]):
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, HEADERS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(messages)
    return path


def message(**fields) -> dict:
    row = {
        "Chat Session": "Sam Carter",
        "Message Date": "2024-03-05 18:22:10",
        "Service": "iMessage",
        "Type": "Incoming",
        "Sender ID": "+15550100231",
        "Sender Name": "Sam Carter",
        "Text": "hello",
    }
    return {**row, **fields}


def count(db, table: str) -> int:
    return rows(db, f"SELECT count(*) AS n FROM {table}")[0]["n"]


def original_hash(row: dict, self_name: str = "Me") -> str:
    """The original importer's hash, computed independently of the pipeline's expressions:
    every cell exactly as written; the owner for an outgoing row without a Sender Name."""
    cell = lambda name: row.get(name, "")  # noqa: E731
    sender = cell("Sender Name")
    if not sender.strip():
        sender = self_name if cell("Type").strip().lower() == "outgoing" else ""
    text = "|".join((cell("Message Date"), sender, cell("Sender ID"), cell("Text"), cell("Attachment")))
    return hashlib.sha256(text.encode()).hexdigest()


def expected_id(row: dict, self_name: str = "Me") -> str:
    return "msg-" + original_hash(row, self_name)[:24]


def sample_rows() -> dict[int, dict]:
    """The sample read with Python's csv module, by the physical line where each row starts."""
    with SAMPLE.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        by_line, start = {}, 2
        for row in reader:
            by_line[start] = row
            start = reader.line_num + 1
    return by_line


@pytest.mark.parametrize("batch_size", [37, 10_000])
def test_sample_counts_and_reasons_match_the_generators_ground_truth(db_url, db, batch_size):
    result = run([SAMPLE], db_url, batch_size=batch_size)
    assert_invariant(result, db)
    assert result.status == "completed"
    assert (result.processed, result.successful) == (EXPECTED["records"], EXPECTED["loaded"])
    assert (result.parse_errors, result.validation_errors, result.database_errors) == (
        0,
        EXPECTED["validation"],
        0,
    )
    assert result.duplicates_skipped == EXPECTED["deduplication"]
    assert result.errors_by_reason == EXPECTED["by_reason"]
    by_line: dict[str, dict] = {}
    for row in rows(db, "SELECT source_line, category, reason, duplicate_of FROM pipeline_rejects"):
        entry = by_line.setdefault(str(row["source_line"]), {"category": row["category"], "reasons": []})
        entry["reasons"].append(row["reason"])
        if row["duplicate_of"]:
            entry["duplicate_of"] = row["duplicate_of"]
    expected = {line: {**e, "reasons": sorted(e["reasons"])} for line, e in EXPECTED["lines"].items()}
    assert {line: {**e, "reasons": sorted(e["reasons"])} for line, e in by_line.items()} == expected
    assert count(db, "messages") == EXPECTED["loaded"]
    assert count(db, "message_links") == EXPECTED["links"]
    assert count(db, "message_assets") == EXPECTED["assets"]
    [owner] = rows(db, "SELECT count(*) AS n FROM messages WHERE sender = 'Me' AND direction = 'outgoing'")
    assert owner["n"] == EXPECTED["owner_named"]


def test_stored_messages_match_an_independent_reading_of_the_csv(db_url, db):
    result = run([SAMPLE], db_url)
    assert_invariant(result, db)
    loaded = {line: row for line, row in sample_rows().items() if str(line) not in EXPECTED["lines"]}
    stored = {
        r["id"]: r
        for r in rows(
            db, "SELECT id, sent_at, sender, sender_id, text, direction, chat_session FROM messages"
        )
    }
    assert set(stored) == {expected_id(row) for row in loaded.values()}
    multi_line = 0
    for row in loaded.values():
        got = stored[expected_id(row)]
        sent_at = datetime.fromisoformat(row["Message Date"].strip())
        assert got["sent_at"] == (sent_at if sent_at.tzinfo else sent_at.replace(tzinfo=UTC))
        assert got["text"] == (row["Text"] or None)
        assert (got["direction"], got["chat_session"]) == (row["Type"].lower(), row["Chat Session"])
        assert got["sender"] == (row["Sender Name"].strip() or "Me")
        multi_line += "\n" in row["Text"]
    assert multi_line == EXPECTED["multi_line"] > 0


def padded_messages() -> list[dict]:
    """One message as exported, then again with spaces around each cell the hash covers."""
    plain = message(Attachment="IMG_0001.HEIC", **{"Attachment type": "image/heic"})
    return [
        plain,
        {**plain, "Message Date": " 2024-03-05 18:22:10  "},
        {**plain, "Sender Name": "Sam Carter\t"},
        {**plain, "Sender ID": "  +15550100231"},
        {**plain, "Text": " hello "},
        {**plain, "Attachment": "IMG_0001.HEIC "},
        {**plain, "Type": "Outgoing", "Sender Name": " ", "Sender ID": " ", "Text": "sent by the owner"},
    ]


def test_the_hash_covers_each_cell_as_written_and_stored_values_are_trimmed(db_url, db, tmp_path):
    messages = padded_messages()
    result = run([write_csv(tmp_path / "padded.csv", messages)], db_url)
    assert_invariant(result, db)
    assert (result.successful, result.duplicates_skipped, result.failed) == (len(messages), 0, 0)
    stored = rows(
        db,
        "SELECT m.id, m.content_hash, m.sent_at, m.sender, m.sender_id, m.text, a.filename"
        " FROM messages m JOIN message_assets a ON a.message_id = m.id",
    )
    assert {(r["id"], r["content_hash"]) for r in stored} == {
        (expected_id(m), original_hash(m)) for m in messages
    }
    assert {r["sent_at"] for r in stored} == {datetime(2024, 3, 5, 18, 22, 10, tzinfo=UTC)}
    assert {(r["sender"], r["sender_id"]) for r in stored} == {("Sam Carter", "+15550100231"), ("Me", None)}
    assert {r["filename"] for r in stored} == {"IMG_0001.HEIC"}
    assert {r["text"] for r in stored} == {"hello", " hello ", "sent by the owner"}


def test_rows_the_original_stored_with_padded_cells_are_not_loaded_again(db_url, db, tmp_path):
    messages = padded_messages()
    ensure_schema(db, DATASET)
    for n, row in enumerate(messages):
        db.execute(
            "INSERT INTO messages (id, sent_at, sender, direction, content_hash)"
            " VALUES ($1, now(), 'stored by the original', 'incoming', $2)",
            (f"original-{n}", original_hash(row)),
        )
    result = run([write_csv(tmp_path / "padded.csv", messages)], db_url)
    assert_invariant(result, db)
    assert (result.successful, result.duplicates_skipped) == (0, len(messages))
    assert count(db, "messages") == len(messages)
    duplicates = rows(db, "SELECT source_line, reason, duplicate_of FROM pipeline_rejects ORDER BY 1")
    assert [(r["reason"], r["duplicate_of"]) for r in duplicates] == [
        ("exact_duplicate", f"original-{n}") for n in range(len(messages))
    ]


def test_links_are_normalized_and_unique_per_message_ignoring_case(db_url, db, tmp_path):
    text = (
        "see www.Example.org/a. and WWW.example.org/A, or https://example.org/a\n"
        "then (HTTP://Blog.example.net/p?q=1&r=2) and https://WWW.EXAMPLE.ORG/a!"
    )
    path = write_csv(tmp_path / "links.csv", [message(Text=text), message(Text="no links here, www or http")])
    result = run([path], db_url)
    assert_invariant(result, db)
    assert result.successful == 2
    links = rows(db, "SELECT id, message_id, url FROM message_links ORDER BY id")
    message_id = expected_id(message(Text=text))
    assert links == [
        {"id": f"{message_id}-l1", "message_id": message_id, "url": "https://www.Example.org/a"},
        {"id": f"{message_id}-l2", "message_id": message_id, "url": "https://example.org/a"},
        {"id": f"{message_id}-l3", "message_id": message_id, "url": "http://Blog.example.net/p?q=1&r=2"},
    ]
    with pytest.raises(adbc_driver_manager.Error) as refused:
        db.execute(
            "INSERT INTO message_links (id, message_id, url) VALUES ('x', $1, 'HTTPS://EXAMPLE.ORG/A')",
            (message_id,),
        )
    assert refused.value.sqlstate == "23505"


def test_sample_links_are_normalized_and_case_insensitively_unique(db_url, db):
    run([SAMPLE], db_url)
    [stats] = rows(
        db,
        "SELECT count(*) AS n, count(DISTINCT (message_id, lower(url))) AS distinct_urls,"
        " count(*) FILTER (WHERE url !~ '^https?://[^/]' OR url ~ '[.,;:!?)]$') AS malformed"
        " FROM message_links",
    )
    assert stats == {"n": EXPECTED["links"], "distinct_urls": EXPECTED["links"], "malformed": 0}


def test_attachments_are_stored_with_their_type_with_or_without_text(db_url, db, tmp_path):
    path = write_csv(
        tmp_path / "assets.csv",
        [
            message(Text="", Attachment="IMG_0001.HEIC", **{"Attachment type": "image/heic"}),
            message(
                Text="the invoice", Attachment="Invoice, March.pdf", **{"Attachment type": "application/pdf"}
            ),
        ],
    )
    result = run([path], db_url)
    assert (result.successful, result.failed) == (2, 0)
    assets = rows(
        db,
        "SELECT a.filename, a.type, m.text FROM message_assets a JOIN messages m ON m.id = a.message_id"
        " ORDER BY a.filename",
    )
    assert assets == [
        {"filename": "IMG_0001.HEIC", "type": "image/heic", "text": None},
        {"filename": "Invoice, March.pdf", "type": "application/pdf", "text": "the invoice"},
    ]


def test_owner_name_is_the_sender_of_outgoing_messages_without_one(db_url, db, tmp_path):
    path = write_csv(
        tmp_path / "owner.csv",
        [
            message(Type="Outgoing", **{"Sender Name": "", "Sender ID": ""}),
            message(Type="outgoing", Text="signed", **{"Sender Name": "Alex Rivera", "Sender ID": ""}),
            message(Text="who am I?", **{"Sender Name": " "}),
        ],
    )
    result = run([path], db_url, self_name="Dana")
    assert_invariant(result, db)
    assert rows(db, "SELECT sender, direction FROM messages ORDER BY sender") == [
        {"sender": "Alex Rivera", "direction": "outgoing"},
        {"sender": "Dana", "direction": "outgoing"},
    ]
    assert rows(db, "SELECT source_line, reason FROM pipeline_rejects") == [
        {"source_line": 4, "reason": "Sender Name:required"}
    ]


def test_cli_self_name_option(db_url, db, tmp_path):
    path = write_csv(tmp_path / "cli.csv", [message(Type="Outgoing", **{"Sender Name": "", "Sender ID": ""})])
    done = cli("migrate", path, "--dataset", "messages", "--self-name", "Dana", "--db", db_url, "--quiet")
    assert done.returncode == 0, done.stderr
    assert rows(db, "SELECT sender FROM messages") == [{"sender": "Dana"}]


def test_dates_parse_to_utc_and_bad_rows_get_stable_reasons(db_url, db, tmp_path):
    path = write_csv(
        tmp_path / "dates.csv",
        [
            message(**{"Message Date": "2024-03-05T18:22:10+02:00", "Read Date": "2024-03-05 18:30"}),
            message(Text='line one\nline two, "quoted" 🎉', **{"Message Date": " 2024-03-05 19:00:00.250 "}),
            message(**{"Message Date": "05/03/2024 18:22"}),
            message(Text="  \n ", Type="Notification", **{"Message Date": ""}),
            message(**{"Edited Date": "yesterday"}),
        ],
    )
    result = run([path], db_url)
    assert_invariant(result, db)
    assert (result.successful, result.validation_errors) == (2, 3)
    stored = rows(db, "SELECT sent_at, read_at, text FROM messages ORDER BY sent_at")
    assert [(r["sent_at"].isoformat(), r["read_at"]) for r in stored] == [
        ("2024-03-05T16:22:10+00:00", datetime(2024, 3, 5, 18, 30, tzinfo=UTC)),
        ("2024-03-05T19:00:00.250000+00:00", None),
    ]
    assert stored[1]["text"] == 'line one\nline two, "quoted" 🎉'
    rejects = rows(db, "SELECT source_line, field, reason, message FROM pipeline_rejects ORDER BY 1, 3")
    assert [(r["source_line"], r["field"], r["reason"]) for r in rejects] == [
        (5, "Message Date", "Message Date:datetime"),
        (6, "Message Date", "Message Date:required"),
        (6, "Text", "Text:empty_message"),
        (6, "Type", "Type:isin(incoming,outgoing)"),
        (8, "Edited Date", "Edited Date:datetime"),
    ]
    assert "fix the value" in rejects[0]["message"]


def test_rerun_loads_nothing_new(db_url, db):
    first = run([SAMPLE], db_url, batch_size=100)
    second = run([SAMPLE], db_url, batch_size=100, recheck=True)
    for result in (first, second):
        assert_invariant(result, db)
    assert second.successful == 0
    assert second.duplicates_skipped == first.successful + first.duplicates_skipped
    assert second.validation_errors == first.validation_errors
    assert (count(db, "messages"), count(db, "message_links")) == (EXPECTED["loaded"], EXPECTED["links"])


def test_standard_mode_lets_the_database_refuse_exact_duplicates(db_url, db):
    result = run([SAMPLE], db_url, mode="standard")
    assert_invariant(result, db)
    assert (result.successful, result.database_errors) == (EXPECTED["loaded"], EXPECTED["deduplication"])
    assert set(result.errors_by_reason) >= {"unique_violation:messages_pkey"}
    assert count(db, "message_links") == EXPECTED["links"]
