"""Exact and near duplicates, decided as the original decided them one record at a time."""

import json
import math

import polars as pl
import pytest

from pipeline import DatabaseError, testing
from pipeline.dedup import similarity
from pipeline.dedup.known import KnownKeys
from pipeline.dedup.plan import near_duplicate_input
from pipeline.dedup.similarity import comparable, scores, similar_pairs
from pipeline.run import commit
from tests.conftest import assert_invariant, rows, write_jsonl


def person(pid: str) -> dict:
    return {"id": pid, "name": pid.upper(), "role": "friend"}


def record(rid: str, summary: str, sources: list[str], people: list[str], confidence: int = 5) -> dict:
    return {
        "id": rid,
        "summary": summary,
        "confidence": confidence,
        "sourceMessageIds": sources,
        "participants": [person(p) for p in people],
    }


def score(a: dict, b: dict) -> float:
    frame = (
        pl.DataFrame(
            [
                {**a, "people": [p["id"] for p in a["participants"]]},
                {**b, "people": [p["id"] for p in b["participants"]]},
            ]
        )
        .with_row_index("record")
        .with_columns(pl.col("record").cast(pl.UInt32), pl.col("people").cast(pl.List(pl.String)))
    )
    mine = comparable(frame, "record")
    pair = pl.DataFrame(
        {"record": [0], "candidate": [1]}, schema={"record": pl.UInt32, "candidate": pl.UInt32}
    )
    return scores(pair, mine, mine.rename({"record": "candidate"}))["score"].item()


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # words 2/5 (a, b of "a b x y z"), sources 1/2, people 1/2: 0.2 + 0.15 + 0.1
        (record("A", "a b c d", ["m1", "m2"], ["p1"]), record("B", "a b x y z", ["m1"], ["p1", "p2"]), 0.45),
        # repeats in A count each time: "a a b" against "a c": 2 of 3
        (record("A", "a a b", ["m1"], ["p1"]), record("B", "a c", ["m1"], ["p1"]), 0.5 * 2 / 3 + 0.3 + 0.2),
        # equal after trim and lowercase: words 1; everything shared: 1.0 (the cap)
        (record("A", "  Same Words ", ["m1"], ["p1"]), record("B", "same words", ["m1"], ["p1"]), 1.0),
        # no participants on either side: 0 / 0 is NaN, which never exceeds a threshold
        (record("A", "x", ["m1"], []), record("B", "x", ["m1"], []), math.nan),
    ],
    ids=["partial", "repeated_words", "capped", "nan"],
)
def test_scores_computed_by_hand(a, b, expected):
    got = score(a, b)
    assert math.isnan(got) if math.isnan(expected) else got == pytest.approx(expected, abs=1e-12)


def test_exactly_point_seven_is_decided_by_the_originals_order_of_addition():
    # words 1, sources 1/2, people 1/4: 0.5 + 0.15 + 0.05 is 0.7 exactly on paper, but
    # (0.5 + 0.15) + 0.05 is 0.7000000000000001 in floating point: a duplicate.
    above = score(record("A", "s", ["m1", "m2"], ["p1"]), record("B", "s", ["m1"], ["p1", "p2", "p3", "p4"]))
    assert above == (0.5 * 1.0 + 0.3 * 0.5) + 0.2 * 0.25 == 0.7000000000000001
    # words 1, sources 1/3, people 1/2: 0.5 + 0.1 + 0.1 stays 0.7: not a duplicate.
    at = score(record("A", "s", ["m1", "m2", "m3"], ["p1"]), record("B", "s", ["m1"], ["p1", "p2"]))
    assert at == 0.7


def run(tmp_path, db_url, records, name="in.jsonl", **settings):
    return testing.run([write_jsonl(tmp_path / name, records)], db_url, **settings)


def outcomes(db, run_id):
    return {
        r["source_line"]: (r["reason"], r["duplicate_of"], r["similarity"])
        for r in rows(
            db,
            "SELECT source_line, reason, duplicate_of, similarity FROM pipeline_rejects WHERE run_id = $1",
            run_id,
        )
    }


@pytest.mark.parametrize("batch_size", [1, 100])
def test_sequential_rule_a_kept_b_similar_to_a_rejected_c_similar_only_to_b_kept(
    db_url, db, tmp_path, batch_size
):
    a = record("A", "w1 w2 w3 w4 w5 w6", ["m1", "m2"], ["p1"])
    b = record("B", "w1 w2 w3 w4 w5 x6", ["m2", "m3"], ["p1"])  # vs A: 5/6*.5 + .5*.3 + .2
    c = record("C", "w1 w2 w3 w4 y5 x6", ["m3", "m4"], ["p1"])  # vs B like B vs A; vs A: no shared source
    result = run(tmp_path, db_url, [a, b, c], batch_size=batch_size)
    assert_invariant(result, db)
    assert (result.successful, result.similar_merged) == (2, 1)
    assert sorted(r["id"] for r in rows(db, "SELECT id FROM memories")) == ["A", "C"]
    [(line, (reason, of, similarity))] = outcomes(db, result.run_id).items()
    assert (line, reason, of) == (2, "similar_duplicate", "A")
    assert similarity == pytest.approx(0.5 * 5 / 6 + 0.3 * 0.5 + 0.2, abs=1e-6)


def test_candidates_are_found_among_stored_rows_and_the_kept_row_notes_the_merge(db_url, db, tmp_path):
    a = record("A", "lunch at the harbour with sam", ["m1", "m2"], ["p1", "p2"])
    far = record("F", "lunch at the harbour with sam", ["z9"], ["p1", "p2"], confidence=6)  # no shared source
    first = run(tmp_path, db_url, [a, far], name="first.jsonl")
    assert first.successful == 2
    b = record("B", "Lunch at the harbour with Sam!", ["m2", "m7"], ["p2", "p1"])
    second = run(tmp_path, db_url, [b], name="second.jsonl")
    assert_invariant(second, db)
    assert (second.successful, second.similar_merged) == (0, 1)
    assert outcomes(db, second.run_id)[1][:2] == ("similar_duplicate", "A")
    [kept] = rows(
        db, "SELECT content_hash, deduplication_metadata::text AS meta FROM memories WHERE id = 'A'"
    )
    meta = json.loads(kept["meta"])
    assert meta["originalHash"] == kept["content_hash"]
    assert (meta["mergedWith"], meta["mergeReason"]) == (["B"], "similar_duplicate")
    assert meta["mergedSourceMessageIds"] == ["m2", "m7"]
    assert meta["mergedAt"]
    assert rows(db, "SELECT deduplication_metadata FROM memories WHERE id = 'F'") == [
        {"deduplication_metadata": None}
    ]


def merge_notes(db, memory_id):
    [kept] = rows(db, "SELECT deduplication_metadata::text AS meta FROM memories WHERE id = $1", memory_id)
    return json.loads(kept["meta"])


@pytest.mark.parametrize("batch_size", [1, 2, 100])
def test_a_row_merging_duplicates_of_several_batches_notes_them_all(db_url, db, tmp_path, batch_size):
    a = record("A", "w1 w2 w3 w4 w5 w6", ["m1", "m2"], ["p1"])
    b = record("B", "w1 w2 w3 w4 w5 x6", ["m2", "m3"], ["p1"])  # similar to A
    c = record("C", "w1 w2 w3 w4 w5 y6", ["m2", "m1"], ["p1"])  # similar to A and to B (refused)
    d = record("D", "w1 w2 w3 w4 w5 z6", ["m9"], ["p1"])  # shares no source: kept
    e = record("E", "w1 w2 w3 w4 w5 w6 w7", ["m1", "m5"], ["p1"])  # similar to A
    result = run(tmp_path, db_url, [a, b, c, d, e], batch_size=batch_size)
    assert_invariant(result, db)
    assert (result.successful, result.similar_merged) == (2, 3)
    assert {line: of for line, (_, of, _) in outcomes(db, result.run_id).items()} == {2: "A", 3: "A", 5: "A"}
    meta = merge_notes(db, "A")
    assert meta["mergedWith"] == ["B", "C", "E"]
    assert meta["mergedSourceMessageIds"] == ["m2", "m3", "m1", "m5"]
    assert rows(db, "SELECT count(*) AS n FROM pipeline_merges") == [{"n": 0}]


def test_a_later_run_adds_to_the_merge_notes_without_repeating_a_source(db_url, db, tmp_path):
    a = record("A", "w1 w2 w3 w4 w5 w6", ["m1", "m2"], ["p1"])
    b = record("B", "w1 w2 w3 w4 w5 x6", ["m2", "m3"], ["p1"])
    c = record("C", "w1 w2 w3 w4 w5 y6", ["m3", "m1", "m9"], ["p1"])
    first = run(tmp_path, db_url, [a, b], name="first.jsonl")
    second = run(tmp_path, db_url, [c], name="second.jsonl")
    for result in (first, second):
        assert_invariant(result, db)
    assert (first.similar_merged, second.similar_merged) == (1, 1)
    meta = merge_notes(db, "A")
    assert meta["mergedWith"] == ["B", "C"]
    assert meta["mergedSourceMessageIds"] == ["m2", "m3", "m1", "m9"]


@pytest.mark.parametrize("early_lookup", ["works", "fails"])
def test_stored_rows_and_the_previous_batchs_count_whether_the_early_lookup_works_or_fails(
    db_url, db, tmp_path, monkeypatch, early_lookup
):
    def broken(*args):
        raise DatabaseError("the lookup connection broke")

    if early_lookup == "fails":  # then each batch looks its matches up in its own transaction
        monkeypatch.setattr(commit, "stored_rows", broken)
    a = record("A", "w1 w2 w3 w4 w5 w6", ["m1", "m2"], ["p1"])
    b = record("B", "w1 w2 w3 w4 w5 x6", ["m2", "m3"], ["p1"])
    c = record("C", "w1 w2 w3 w4 w5 y6", ["m1"], ["p1"])
    result = run(tmp_path, db_url, [a, b, c, a, {**c, "summary": "other words", "id": "A"}], batch_size=1)
    assert_invariant(result, db)
    assert {line: outcome[:2] for line, outcome in outcomes(db, result.run_id).items()} == {
        2: ("similar_duplicate", "A"),
        3: ("similar_duplicate", "A"),
        4: ("exact_duplicate", "A"),
        5: ("unique_violation:memories_pkey", None),
    }
    assert merge_notes(db, "A")["mergedWith"] == ["B", "C"]


def test_known_keys_hold_the_stored_ids_and_hashes_and_the_rows_added_since():
    stored = pl.DataFrame({"id": ["A", "B"], "content_hash": ["h1", "h2"]})
    known = KnownKeys([stored.head(1), stored.tail(1)])
    known.add(pl.DataFrame({"id": ["C"], "content_hash": ["h3"]}))
    batch = pl.DataFrame(
        {
            "record": [0, 1, 2, 3, 4],
            "id": ["A", "x", "C", "y", "z"],
            "content_hash": ["n0", "h2", "n2", "h3", "n4"],
        }
    )
    assert known.maybe_stored(batch)["record"].to_list() == [0, 1, 2, 3]
    assert KnownKeys().maybe_stored(batch).is_empty()


def test_known_keys_find_every_row_added_however_their_runs_merged():
    known = KnownKeys()
    added = []
    for number, size in enumerate([5, 3, 1, 1, 8, 2, 20, 1, 4, 40]):
        rows = pl.DataFrame({"id": [f"id-{number}-{n}" for n in range(size)]}).with_columns(
            content_hash=pl.col("id").str.replace("id", "hash")
        )
        known.add(rows)
        added.append(rows)
    stored = pl.concat(added).with_row_index("record")
    strangers = stored.with_columns(pl.col("id", "content_hash") + "-new")
    assert known.maybe_stored(stored.sample(fraction=1.0, shuffle=True, seed=3)).height == stored.height
    assert known.maybe_stored(strangers).is_empty()


def test_known_sources_name_every_row_citing_a_source_however_their_runs_merged():
    # Rows read when the run starts, then batches of rows added: several rows cite one source
    # (the hub of legacy records), some cite none.
    stored = pl.DataFrame({"id": ["s0", "s1"], "sources": [["hub", "m0"], None]})
    known = KnownKeys(cited=[stored])
    cited = {"s0": ["hub", "m0"]}
    for number, size in enumerate([5, 3, 1, 1, 8, 2, 20, 1]):
        ids = [f"id-{number}-{n}" for n in range(size)]
        sources = [
            [f"m{number}-{n}", f"m{number}-{n}", "hub"] if n % 3 else [f"m{number}-{n}"] for n in range(size)
        ]
        rows = pl.DataFrame({"id": ids, "content_hash": ids, "sources": sources})
        known.add(rows.select("id", "content_hash"), rows.select("id", "sources"))
        cited |= dict(zip(ids, sources, strict=True))
    for wanted in (["hub"], ["m0", "m4-3", "m6-19"], ["m6-19", "nowhere", None], []):
        expected = sorted(i for i, s in cited.items() if set(s) & set(wanted))
        assert sorted(known.citing(pl.Series(wanted, dtype=pl.String))) == expected


@pytest.mark.parametrize("threshold", [0.7, 1.0], ids=["near_duplicates_on", "exact_only"])
def test_a_duplicate_of_a_row_another_writer_stores_during_the_run_is_refused(
    db_url, db, tmp_path, monkeypatch, threshold
):
    # The run knows the keys stored when it started and those it loads, not those another
    # writer stores meanwhile (nor the sources they cite): a copy of such a row is refused
    # by the unique constraint, near duplicates on or off.
    a, b = record("A", "a words", ["a1"], ["p1"]), record("B", "b words", ["b1"], ["p2"])
    c = record("C", "c words", ["c1"], ["p3"])
    transaction = commit.DatabaseSink._transaction
    others = []

    def other_writer_first(*args, **kwargs):
        monkeypatch.setattr(commit.DatabaseSink, "_transaction", transaction)
        others.append(run(tmp_path, db_url, [c], name="other.jsonl"))
        return transaction(*args, **kwargs)

    monkeypatch.setattr(commit.DatabaseSink, "_transaction", other_writer_first)
    result = run(tmp_path, db_url, [a, b, {**c, "id": "C2"}], batch_size=1, similarity_threshold=threshold)
    assert len(others) == 1
    for done in (*others, result):
        assert_invariant(done, db)
    assert outcomes(db, result.run_id) == {3: ("unique_violation:memories_content_hash_key", None, None)}
    assert sorted(r["id"] for r in rows(db, "SELECT id FROM memories")) == ["A", "B", "C"]


def test_a_record_the_previous_batchs_copy_refused_is_not_stored_for_the_next_batch(db_url, db, tmp_path):
    # The next batch is decided while the previous one copies, as if all it kept were stored;
    # once the server refuses one of them, the next batch is decided again without it.
    a = record("A", "w1 w2 w3 w4 w5 w6", ["m1"], ["p1"], confidence=42)  # the CHECK refuses it
    similar = record("S", "w1 w2 w3 w4 w5 x6", ["m1"], ["p1"])
    same_id = record("A", "other words entirely", ["n1"], ["p2"])
    copy_of_b = record("B", "b words", ["b1"], ["p3"])
    b = {**copy_of_b, "id": "B0"}
    result = run(tmp_path, db_url, [a, similar, same_id, b, copy_of_b], batch_size=1, validate_first=False)
    assert_invariant(result, db)
    assert {line: got[0] for line, got in outcomes(db, result.run_id).items()} == {
        1: "check_violation:memories_confidence_check",
        5: "exact_duplicate",
    }
    assert sorted(r["id"] for r in rows(db, "SELECT id FROM memories")) == ["A", "B0", "S"]


def test_records_refused_earlier_are_no_candidates_for_exact_duplicates_or_ids(db_url, db, tmp_path):
    a = record("A", "w1 w2 w3 w4", ["m1"], ["p1"])
    b = record("B", "w1 w2 w3 x4", ["m1"], ["p1"])  # similar to A: refused
    b_copy = {**b, "id": "B2"}  # same hash as B, but B was not kept: similar to A instead
    reused = record("A", "completely different", ["n1"], ["p9"])  # id A is taken: refused
    taken_id_of_refused = record("B", "another text", ["n2"], ["p8"])  # B was never stored: loads
    result = run(tmp_path, db_url, [a, b, b_copy, reused, taken_id_of_refused])
    assert_invariant(result, db)
    assert {line: got[:2] for line, got in outcomes(db, result.run_id).items()} == {
        2: ("similar_duplicate", "A"),
        3: ("similar_duplicate", "A"),
        4: ("unique_violation:memories_pkey", None),
    }
    assert sorted(r["id"] for r in rows(db, "SELECT id FROM memories")) == ["A", "B"]


def test_exact_duplicates_keep_the_first_and_point_to_it(db_url, db, tmp_path):
    a = record("A", "Trip", ["m1", "m2"], ["p1"])
    copy = {**a, "id": "A2", "summary": " TRIP ", "sourceMessageIds": ["m2", "m1"]}
    result = run(tmp_path, db_url, [a, copy, {**a, "id": "A3"}])
    assert_invariant(result, db)
    assert outcomes(db, result.run_id) == {
        2: ("exact_duplicate", "A", None),
        3: ("exact_duplicate", "A", None),
    }


def test_report_holds_the_score_distribution_of_merged_pairs(db_url, db, tmp_path):
    a = record("A", "w1 w2 w3 w4", ["m1"], ["p1"])
    result = run(
        tmp_path,
        db_url,
        [a, record("B", "w1 w2 w3 x4", ["m1"], ["p1"]), record("C", "w1 w2 w3 w4 w5", ["m1"], ["p1"])],
    )
    assert result.similar_merged == 2
    assert result.to_dict()["similarity_histogram"] == {"0.85-0.90": 1, "0.90-0.95": 1}


def test_a_nan_score_never_makes_a_duplicate(db_url, db, tmp_path):
    a = record("A", "same words", ["m1"], [], confidence=3)
    b = record("B", "same words", ["m1"], [], confidence=4)  # not an exact duplicate: confidence differs
    result = run(tmp_path, db_url, [a, b])
    assert (result.successful, result.similar_merged) == (2, 0)


def test_a_threshold_of_one_turns_near_duplicates_off_but_not_exact_ones(db_url, db, tmp_path):
    a = record("A", "w1 w2 w3 w4", ["m1"], ["p1"])
    near = record("B", "w1 w2 w3 x4", ["m1"], ["p1"])
    result = run(tmp_path, db_url, [a, near, {**a, "id": "A2"}], similarity_threshold=1.0)
    assert (result.successful, result.similar_merged, result.duplicates_skipped) == (2, 0, 1)


def test_similar_pairs_are_the_same_whatever_the_chunk_size(monkeypatch):
    # A templated run: every record cites the same source and shares most words.
    records = pl.DataFrame(
        [
            record(f"T{i}", f"legacy note {i % 7} about the same old thing", ["legacy-content"], ["u"])
            for i in range(60)
        ]
    ).with_row_index("record")
    near = near_duplicate_input(records, 0.7)

    def pairs():
        found = similar_pairs(
            near.batch_probes,
            near.batch_keys,
            near.batch,
            near.batch.rename({"record": "candidate"}),
            0.7,
            True,
        )
        return found.sort("record", "candidate")

    whole = pairs()
    monkeypatch.setattr(similarity, "JOIN_ROWS_PER_CHUNK", 7)
    assert whole.height > 1000
    assert pairs().equals(whole)
