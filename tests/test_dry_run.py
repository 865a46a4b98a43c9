"""A dry run decides what a real run would and writes nothing: the same counts and the same
rejects (in a file) as the real run that follows it, no write in the server's statistics, no
table on a fresh database, and it runs for a role that may only SELECT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import polars as pl
import pytest

from pipeline import BatchConfig, migrate
from pipeline.inspect import query
from pipeline.load.connection import Connection
from pipeline.testing import cli, fresh_database
from tests.conftest import rows
from tests.test_scale_out import inputs  # noqa: F401  (a fixture: rows stored before, an export)

REJECT_KEY = ["source_file", "source_line", "category", "reason"]


def writes(url: str) -> int:
    """Rows inserted, updated and deleted in the database's tables, as the server counts them."""
    db = Connection(url)
    try:
        db.execute("SELECT pg_stat_clear_snapshot()")
        found = rows(
            db, "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) AS n FROM pg_stat_user_tables"
        )
        return int(found[0]["n"])
    finally:
        db.close()


def with_first_export(server_url: str, before) -> str:
    url = fresh_database(server_url, f"dry_{uuid.uuid4().hex[:10]}")
    migrate([str(before)], BatchConfig(log_progress=False), db_url=url)
    return url


@pytest.mark.parametrize(("shards", "suffix"), [(1, ".parquet"), (2, ".jsonl"), (1, ".csv")])
def test_a_dry_run_decides_what_the_real_run_after_it_does_and_writes_nothing(
    server_url,
    inputs,  # noqa: F811
    tmp_path,
    shards,
    suffix,
):
    before, export = inputs
    url = with_first_export(server_url, before)
    time.sleep(1)  # the server's statistics of the first run are flushed
    written = writes(url)
    settings = {"batch_size": 97, "shards": shards, "max_connections": 2 * shards, "log_progress": False}
    rejects_file = tmp_path / f"rejects{suffix}"
    dry = migrate(
        [str(export)], BatchConfig(**settings, dry_run=True, rejects_file=str(rejects_file)), db_url=url
    )
    time.sleep(1)
    assert writes(url) == written
    real = migrate([str(export)], BatchConfig(**settings), db_url=url)
    assert dry.to_dict()["dry_run"] and not real.to_dict()["dry_run"]
    assert dry.duplicates_skipped > 0 and dry.similar_merged > 0 and dry.validation_errors > 0
    sql = "SELECT source_file, source_line, category, reason FROM rejects ORDER BY ALL"
    in_file = pl.from_arrow(query(sql, rejects_file=rejects_file))
    in_table = pl.from_arrow(query(sql, db_url=url, run_id=real.run_id))
    # What only the server refuses (here a second memory holding one emotional context's id) is
    # the one difference: the dry run does not check it.
    refused = in_table.join(in_file, on=REJECT_KEY, how="anti")
    assert refused["reason"].to_list() == ["unique_violation:emotional_contexts_pkey"]
    assert in_file.join(in_table, on=REJECT_KEY, how="anti").is_empty()
    same = ("processed", "parse_errors", "validation_errors", "duplicates_skipped", "similar_merged")
    assert {k: getattr(dry, k) for k in same} == {k: getattr(real, k) for k in same}
    assert dry.successful == real.successful + refused.height
    assert dry.database_errors == real.database_errors - refused.height


def test_a_dry_run_on_a_fresh_database_creates_no_table(server_url, inputs, tmp_path):  # noqa: F811
    _, export = inputs
    url = fresh_database(server_url, f"dry_{uuid.uuid4().hex[:10]}")
    done = cli("migrate", export, "--db", url, "--dry-run", "--rejects-file", tmp_path / "r.parquet")
    assert done.returncode == 0, done.stderr
    assert "dry run" in done.stdout and "nothing was written" in done.stdout
    db = Connection(url)
    try:
        tables = rows(db, "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'public'")
    finally:
        db.close()
    assert tables == [{"n": 0}]
    assert pl.read_parquet(tmp_path / "r.parquet").height > 0


def test_a_dry_run_works_for_a_role_that_may_only_select(server_url, inputs, tmp_path):  # noqa: F811
    before, export = inputs
    url = with_first_export(server_url, before)
    db = Connection(url)
    try:
        role = f"reader_{uuid.uuid4().hex[:8]}"
        db.execute(f"CREATE ROLE {role} LOGIN")
        db.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    finally:
        db.close()
    reader = url.replace("postgresql://postgres:@", f"postgresql://{role}:@")
    done = cli("migrate", export, "--db", reader, "--dry-run", "--rejects-file", tmp_path / "r.jsonl")
    assert done.returncode == 0, done.stderr
    assert "would load" in done.stdout


def test_a_bad_rejects_file_is_one_line_before_anything_runs(db_url, tmp_path):
    export = tmp_path / "in.jsonl"
    export.write_text('{"id": "m1"}\n')
    for bad in (tmp_path / "missing" / "r.parquet", tmp_path / "r.txt"):
        done = cli("migrate", export, "--db", db_url, "--dry-run", "--rejects-file", bad)
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and str(bad) in done.stderr
    real = cli("migrate", export, "--db", db_url, "--rejects-file", tmp_path / "r.parquet")
    assert real.returncode == 2 and "--dry-run" in real.stderr


def test_ctrl_c_on_a_dry_run_prints_what_was_decided_and_no_resume(server_url, inputs, tmp_path):  # noqa: F811
    _, export = inputs
    url = fresh_database(server_url, f"dry_{uuid.uuid4().hex[:10]}")
    command = [sys.executable, "-m", "pipeline", "migrate", str(export), "--db", url, "--dry-run"]
    command += ["--batch-size", "50", "--log-format", "json", "--rejects-file", str(tmp_path / "r.jsonl")]
    env = {**os.environ, "PIPELINE_DELAY_AT": "lookup", "PIPELINE_DELAY_SECONDS": "0.1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    for line in process.stderr:
        if json.loads(line)["event"] == "batch_decided":
            process.send_signal(signal.SIGINT)
            break
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "dry run" in stdout and "interrupted" in stdout and "would load" in stdout
    assert "nothing was written" in stderr and "--resume" not in stderr


def test_lookups_read_in_one_exported_snapshot_see_no_later_write(db_url):
    """A dry run's lanes read the stored rows as one snapshot, however long the run."""
    exporter, reader, writer = Connection(db_url), Connection(db_url), Connection(db_url)
    try:
        writer.execute("CREATE TABLE snapshot_probe (n integer)")
        with exporter.exported_snapshot() as snapshot:
            reader.read_only(snapshot)
            writer.execute("INSERT INTO snapshot_probe VALUES (1)")
            with reader.transaction("reading the probe"):
                seen = rows(reader, "SELECT count(*) AS n FROM snapshot_probe")
            assert seen == [{"n": 0}]
            with pytest.raises(Exception, match="read-only"), reader.transaction("writing"):
                reader.execute("INSERT INTO snapshot_probe VALUES (2)")
    finally:
        for conn in (exporter, reader, writer):
            conn.close()
