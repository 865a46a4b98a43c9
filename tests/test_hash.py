"""The content hash contract, on examples written out by hand from docs/design.md."""

import hashlib
from datetime import UTC, datetime

from pipeline.config import BatchConfig
from pipeline.datasets import get_dataset
from pipeline.normalize.stage import stage_batch
from tests.conftest import raw_frame


def staged_hashes(*records: str) -> list[str]:
    raw = raw_frame(list(records))
    kept, rejects = stage_batch(raw, get_dataset("memories"), BatchConfig(mode="standard"), datetime.now(UTC))
    assert rejects.is_empty(), rejects.to_dicts()
    return kept.sort("record")["content_hash"].to_list()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_hash_matches_hand_built_string_with_quotes_backslashes_and_non_ascii():
    record = (
        r'{"id": "m1", "summary": "  Zoë said \"hi\" \\ to 日本 🎉  ", "confidence": 7,'
        r' "participants": [{"id": "p2", "name": " JO \"JJ\" \\ Smith ", "role": "Friend"},'
        r' {"id": "p1", "name": "ÉMILE", "role": " SELF "}],'
        r' "sourceMessageIds": ["m-2", "m-10", "m-1"]}'
    )
    expected = sha(
        'zoë said "hi" \\ to 日本 🎉'
        '|[{"id":"p1","name":"émile","role":"self"},'
        '{"id":"p2","name":"jo \\"jj\\" \\\\ smith","role":"friend"}]'
        '|["m-1","m-10","m-2"]'
        "|7"
    )
    assert staged_hashes(record) == [expected]


def test_hash_ignores_order_of_participants_and_source_ids_and_case_of_summary():
    first = (
        '{"id": "a", "summary": "Trip", "confidence": 3,'
        ' "participants": [{"id": "x", "name": "A", "role": "r"},'
        ' {"id": "y", "name": "B", "role": "r"}], "sourceMessageIds": ["2", "1"]}'
    )
    second = (
        '{"id": "b", "summary": " TRIP ", "confidence": 3,'
        ' "participants": [{"id": "y", "name": "b", "role": "R"},'
        ' {"id": "x", "name": "a ", "role": "r"}], "sourceMessageIds": ["1", "2"]}'
    )
    expected = sha('trip|[{"id":"x","name":"a","role":"r"},{"id":"y","name":"b","role":"r"}]|["1","2"]|3')
    assert staged_hashes(first, second) == [expected, expected]


def test_hash_of_empty_lists_and_confidence_ten():
    record = '{"id": "e", "summary": "x", "confidence": 10, "participants": [], "sourceMessageIds": []}'
    assert staged_hashes(record) == [sha("x|[]|[]|10")]


def test_hash_of_a_legacy_record_uses_the_transformed_fields():
    expected = sha(
        'remember the lake|[{"id":"legacy-user","name":"legacy user","role":"unknown"}]|["legacy-content"]|5'
    )
    assert staged_hashes('{"content": "Remember the lake", "confidence": 0}') == [expected]
