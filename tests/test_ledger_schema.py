"""The ledger's tables: built in numbered steps, upgraded from any step or earlier version, also by
runs starting together."""

from __future__ import annotations

import threading
import uuid

import pytest

from pipeline.datasets import get_dataset
from pipeline.errors import PipelineError
from pipeline.load.connection import Connection, connected
from pipeline.load.databases import fresh_database
from pipeline.load.ledger import ensure_schema
from pipeline.load.ledger.schema import LATEST, upgrade_ledger
from tests.conftest import rows

MEMORIES = get_dataset("memories")
EVERY_STEP = list(range(1, LATEST + 1))


def shape(db: Connection) -> dict:
    """The tables' columns, indexes and constraints."""
    return {
        "columns": rows(
            db,
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
        ),
        "indexes": rows(db, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"),
        "constraints": rows(
            db,
            "SELECT conrelid::regclass::text AS table_name, pg_get_constraintdef(oid) AS definition "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
        ),
    }


def steps_taken(db: Connection) -> list[int]:
    return [r["step"] for r in rows(db, "SELECT step FROM pipeline_schema ORDER BY step")]


def taken_through(step: int):
    def build(db: Connection) -> None:
        with db.transaction(f"a ledger at step {step}"):
            upgrade_ledger(db, through=step)

    return build


def unversioned(db: Connection) -> None:
    """Tables as the version before the steps left them: all there, no step recorded."""
    ensure_schema(db, MEMORIES)
    db.execute("DROP TABLE pipeline_schema")


def unversioned_without_replay_and_shards(db: Connection) -> None:
    unversioned(db)
    db.execute("ALTER TABLE pipeline_rejects DROP COLUMN resolved_by")
    db.execute("ALTER TABLE pipeline_batches DROP COLUMN shard")
    db.execute("ALTER TABLE pipeline_batches ADD PRIMARY KEY (run_id, batch_no)")


BEFORE = {
    "fresh": lambda db: None,
    "current": lambda db: ensure_schema(db, MEMORIES),
    "first step": taken_through(1),
    "unversioned": unversioned,
    "unversioned older": unversioned_without_replay_and_shards,
}


@pytest.fixture(scope="module")
def fresh_shape(server_url: str) -> dict:
    with connected(fresh_database(server_url, f"schema_ref_{uuid.uuid4().hex[:6]}")) as reference:
        ensure_schema(reference, MEMORIES)
        return shape(reference)


def test_a_fresh_database_takes_every_step_once(db):
    ensure_schema(db, MEMORIES)
    ensure_schema(db, MEMORIES)
    assert steps_taken(db) == EVERY_STEP


@pytest.mark.parametrize("step", range(1, LATEST))
def test_a_ledger_at_an_earlier_step_takes_the_steps_after_it_and_keeps_its_rows(db, fresh_shape, step):
    taken_through(step)(db)
    assert steps_taken(db) == list(range(1, step + 1))
    with db.transaction("a run of that version"):
        db.execute("INSERT INTO pipeline_runs VALUES ('old', now(), now(), 'completed', '{}', '[]', NULL)")
        db.execute(
            "INSERT INTO pipeline_batches (run_id, batch_no, source_file, first_line, last_line, rows_in,"
            " loaded, rejected, seconds) VALUES ('old', 1, 'a.jsonl', 1, 5, 5, 5, 0, 0.1)"
        )
    ensure_schema(db, MEMORIES)
    assert steps_taken(db) == EVERY_STEP
    assert shape(db) == fresh_shape
    assert rows(db, "SELECT run_id, batch_no, shard FROM pipeline_batches") == [
        {"run_id": "old", "batch_no": 1, "shard": 0}
    ]


@pytest.mark.parametrize("before", ["unversioned", "unversioned older"])
def test_tables_a_version_before_the_steps_made_take_every_step(db, fresh_shape, before):
    BEFORE[before](db)
    ensure_schema(db, MEMORIES)
    assert steps_taken(db) == EVERY_STEP
    assert shape(db) == fresh_shape


@pytest.mark.parametrize("before", sorted(BEFORE))
def test_runs_creating_or_upgrading_the_tables_at_once_all_succeed(server_url, fresh_shape, before):
    url = fresh_database(server_url, f"schema_{before.replace(' ', '_')}_{uuid.uuid4().hex[:6]}")
    connections = [Connection(url) for _ in range(4)]
    BEFORE[before](connections[0])
    together = threading.Barrier(len(connections))
    failures: list[Exception] = []

    def start(conn: Connection) -> None:
        together.wait()
        try:
            ensure_schema(conn, MEMORIES)
        except PipelineError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(conn,)) for conn in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert shape(connections[0]) == fresh_shape
    assert steps_taken(connections[0]) == EVERY_STEP
    for conn in connections:
        conn.close()
