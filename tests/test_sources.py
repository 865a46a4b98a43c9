"""Reading every input format into raw record batches, with exact line numbers."""

import codecs
import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.errors import InputError
from pipeline.extract import resolve_inputs, scan_batches


def records(path: Path, batch_size: int = 1000) -> list[dict]:
    json_columns = ("confidence", "sourceMessageIds")
    return [row for batch in scan_batches([path], batch_size, json_columns) for row in batch.frame.to_dicts()]


def test_jsonl_lines_keep_physical_numbers_and_flag_invalid_utf8(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\n   \n{"b": "\xff\xfe"}\n{"c": 3}\n{"trunc')
    got = records(path)
    assert [(r["source_line"], r["parse_error"]) for r in got] == [
        (1, None),
        (4, "invalid_utf8"),
        (5, None),
        (6, None),
    ]
    assert got[0]["raw"] == '{"a": 1}'
    assert got[3]["raw"] == '{"trunc'


def test_batches_hold_batch_size_records_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.extract.readers.BLOCK_BYTES", 64)
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(25)))
    batches = [b.frame for b in scan_batches([path], 10)]
    assert [b.height for b in batches] == [10, 10, 5]
    assert pl.concat(batches)["source_line"].to_list() == list(range(1, 26))


def test_csv_rows_become_json_objects_and_start_lines_count_embedded_newlines(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text('id,summary,confidence,sourceMessageIds\na,"two\nlines",5,"[""m1""]"\nb,plain,high,\n')
    got = records(path)
    assert [r["source_line"] for r in got] == [2, 4]
    assert json.loads(got[0]["raw"]) == {
        "id": "a",
        "summary": "two\nlines",
        "confidence": 5,
        "sourceMessageIds": ["m1"],
    }
    # a cell that is not JSON stays a string, so validation can name the wrong type
    assert json.loads(got[1]["raw"]) == {"id": "b", "summary": "plain", "confidence": "high"}


def test_csv_line_numbers_continue_across_batches(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,summary\n" + "".join(f'{i},"a\nb"\n' for i in range(5)))
    assert [r["source_line"] for r in records(path, batch_size=2)] == [2, 4, 6, 8, 10]


def test_parquet_and_json_array_records_are_numbered_from_one(tmp_path):
    parquet = tmp_path / "in.parquet"
    pl.DataFrame({"id": ["a", "b"], "confidence": [1, 2]}).write_parquet(parquet)
    assert [(r["source_line"], json.loads(r["raw"])) for r in records(parquet)] == [
        (1, {"id": "a", "confidence": 1}),
        (2, {"id": "b", "confidence": 2}),
    ]
    array = tmp_path / "in.json"
    array.write_text('[{"id": "a"}, {"id": "é"}]')
    assert [json.loads(r["raw"]) for r in records(array)] == [{"id": "a"}, {"id": "é"}]


def test_broken_json_array_is_one_parse_reject_holding_the_text(tmp_path):
    array = tmp_path / "in.json"
    array.write_text('[{"id": "a"}, {"id": ')
    [only] = records(array)
    assert only["parse_error"].startswith("invalid_json")
    assert only["raw"] == '[{"id": "a"}, {"id": '


def test_resolve_inputs_expands_globs_and_names_missing_files(tmp_path):
    for name in ("b.jsonl", "a.jsonl"):
        (tmp_path / name).write_text("{}\n")
    assert [p.name for p in resolve_inputs([str(tmp_path / "*.jsonl")])] == ["a.jsonl", "b.jsonl"]
    with pytest.raises(InputError, match=r"nope\.jsonl: no such file"):
        resolve_inputs([str(tmp_path / "nope.jsonl")])
    with pytest.raises(InputError, match="no file matches"):
        resolve_inputs([str(tmp_path / "*.csv")])
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(InputError, match="unknown input format"):
        resolve_inputs([str(tmp_path / "x.txt")])


# --- progress -----------------------------------------------------------------------------


def progress(paths: list[Path], batch_size: int) -> list[tuple[int, int]]:
    """(records so far, bytes_done) after each batch."""
    seen, marks = 0, []
    for batch in scan_batches(paths, batch_size, ("n", "tags")):
        seen += batch.frame.height
        marks.append((seen, batch.bytes_done))
    return marks


def assert_honest(marks: list[tuple[int, int]], size: int, records: int) -> None:
    """Bytes grow with the records read, and reach the size exactly after the last batch."""
    done = [b for _, b in marks]
    assert done == sorted(done)
    assert done[-1] == size
    assert len(marks) >= 5
    for seen, bytes_done in marks:
        assert abs(bytes_done / size - seen / records) <= 0.1, (seen, bytes_done, size)


def uniform_record(i: int) -> dict:
    return {
        "id": f"r{i:05d}",
        "summary": f"the same length of text, record {i:05d}",
        "n": i % 10,
        "tags": ["a"],
    }


def test_jsonl_progress_follows_the_records_read_within_a_block(tmp_path):
    path = tmp_path / "in.jsonl"
    # one block holds the whole file: a block's fraction would say 100% after the first batch
    lines = [json.dumps(uniform_record(i)) for i in range(1000)]
    path.write_bytes(
        codecs.BOM_UTF8 + "\n".join(lines[:500]).encode() + b"\n\n\n" + "\n".join(lines[500:]).encode()
    )
    assert_honest(progress([path], 100), path.stat().st_size, 1000)


def test_jsonl_progress_across_blocks_and_crlf_lines(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.extract.readers.BLOCK_BYTES", 1000)
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(uniform_record(i)) + "\r\n" for i in range(1000)), newline="")
    assert_honest(progress([path], 70), path.stat().st_size, 1000)


def test_csv_progress_counts_the_csv_text_not_the_json_made_of_it(tmp_path):
    path = tmp_path / "in.csv"
    rows = "".join(
        f'r{i:05d},"quoted, with ""quotes"" {i:05d}",{i % 10},"[""a"",""b""]"\n' for i in range(1000)
    )
    path.write_text("id,summary,n,tags\n" + rows)
    assert_honest(progress([path], 100), path.stat().st_size, 1000)


def test_parquet_and_json_array_progress_by_records(tmp_path):
    parquet = tmp_path / "in.parquet"
    pl.DataFrame([uniform_record(i) for i in range(1000)]).write_parquet(parquet, row_group_size=128)
    assert_honest(progress([parquet], 90), parquet.stat().st_size, 1000)
    array = tmp_path / "in.json"
    array.write_text(json.dumps([uniform_record(i) for i in range(1000)], indent=2))
    assert_honest(progress([array], 90), array.stat().st_size, 1000)


def test_progress_over_several_files_sums_their_sizes(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps(uniform_record(i)) + "\n" for i in range(300)) + "\n\n")
    csv = tmp_path / "b.csv"
    csv.write_text("id,summary\n" + "".join(f"r{i:05d},text {i:05d}\n" for i in range(300)))
    marks = progress([jsonl, csv], 100)
    sizes = jsonl.stat().st_size, csv.stat().st_size
    assert [b for _, b in marks] == sorted(b for _, b in marks)
    assert marks[2] == (300, sizes[0])  # the first file's last batch: its whole size
    assert marks[-1] == (600, sum(sizes))
