"""Exports in object storage (a real S3-compatible server on localhost) and on standard
input store what the same export stores from a local file."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import pytest
from distributed import Client, LocalCluster

from pipeline import BatchConfig, migrate
from pipeline.testing import cli, run
from tests.test_compressed import export_bytes, stored


@pytest.fixture
def plain_state(tmp_path, server_url):
    from pipeline.testing import fresh_database

    path = tmp_path / "plain" / "export.jsonl"
    path.parent.mkdir()
    path.write_bytes(export_bytes())
    url = fresh_database(server_url, f"remote_plain_{tmp_path.name[-20:].lower()}")
    run([path], url, batch_size=17)
    return stored(url, str(path))


@pytest.mark.parametrize(
    ("key", "named"),
    [("2024/a.jsonl", "2024/a.jsonl"), ("2024/a.jsonl.gz", "2024/a.jsonl.gz"), ("2024/a.jsonl", "2024/")],
)
def test_an_export_in_object_storage_stores_what_the_local_file_stores(s3, db_url, plain_state, key, named):
    data = export_bytes()
    s3.fs.pipe(f"{s3.bucket}/{key}", gzip.compress(data) if key.endswith(".gz") else data)
    s3.fs.pipe(f"{s3.bucket}/2024/.hidden.jsonl", b"{}\n")
    result = run([f"{s3.url}/{named}"], db_url, batch_size=17)
    assert stored(db_url, f"{s3.url}/{key}") == plain_state
    assert result.inputs == [f"{s3.url}/{key}"]
    if named.endswith("/"):
        assert {"path": f"{s3.url}/2024/.hidden.jsonl", "why": "hidden"} in result.ignored_paths


def test_workers_read_an_object_in_ranges_as_one_process_does(s3, db_url, plain_state):
    s3.fs.pipe(f"{s3.bucket}/a.jsonl", export_bytes())
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        migrate(
            [f"{s3.url}/a.jsonl"],
            BatchConfig(log_progress=False, batch_size=17),
            db_url=db_url,
            client=client,
        )
    assert stored(db_url, f"{s3.url}/a.jsonl") == plain_state


def test_a_missing_object_or_bucket_is_one_line_and_exit_2(s3, db_url):
    for url in (f"{s3.url}/nope.jsonl", "s3://no-such-bucket-here/a.jsonl"):
        done = cli("migrate", url, "--db", db_url, "--quiet")
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and url in done.stderr
        assert "testing" not in done.stderr


def stdin_run(data: bytes, *args: str, **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline", "migrate", "-", *args]
    return subprocess.run(command, input=data, capture_output=True, env={**os.environ, **env}, timeout=300)


@pytest.mark.parametrize("compress", [False, True])
def test_standard_input_stores_what_the_file_stores(db_url, plain_state, compress):
    data = gzip.compress(export_bytes()) if compress else export_bytes()
    done = stdin_run(data, "--input-format", "jsonl", "--db", db_url, "--batch-size", "17", "--quiet")
    assert done.returncode == 0, done.stderr
    assert stored(db_url, "<stdin>") == plain_state


def test_standard_input_is_refused_on_workers_and_its_run_cannot_resume(db_url):
    refused = stdin_run(b"{}\n", "--input-format", "jsonl", "--workers", "2", "--db", db_url)
    assert refused.returncode == 2 and b"standard input" in refused.stderr
    args = ("--input-format", "jsonl", "--db", db_url, "--run-id", "S", "--batch-size", "17", "--quiet")
    killed = stdin_run(export_bytes(), *args, PIPELINE_KILL_AT="committed:1")
    assert killed.returncode == -9, killed.stderr
    resumed = cli("migrate", "--resume", "S", "--db", db_url)
    assert resumed.returncode == 2 and "save the input to a file" in resumed.stderr


def test_standard_input_needs_its_format(db_url):
    done = stdin_run(b"{}\n", "--db", db_url)
    assert done.returncode == 2 and b"--input-format" in done.stderr


def test_a_killed_run_over_an_object_resumes_from_the_store(s3, db_url, plain_state):
    s3.fs.pipe(f"{s3.bucket}/a.jsonl.gz", gzip.compress(export_bytes()))
    url = f"{s3.url}/a.jsonl.gz"
    args = ("migrate", url, "--db", db_url, "--batch-size", "17", "--run-id", "R", "--quiet")
    killed = cli(*args, env={"PIPELINE_KILL_AT": "committed:2"})
    assert killed.returncode == -9, killed.stderr
    resumed = cli("migrate", "--resume", "R", "--db", db_url, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert stored(db_url, url) == plain_state
