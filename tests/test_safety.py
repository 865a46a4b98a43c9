"""What the database side must never do: show a password, crash two runs starting together, or
answer a wrong URL with the driver's raw words."""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
import uuid
from pathlib import Path

import pytest

from pipeline import BatchConfig, migrate
from pipeline.datasets import get_dataset
from pipeline.errors import PipelineError
from pipeline.load.connection import connected
from pipeline.load.databases import database_url, fresh_database
from pipeline.load.ledger import ensure_schema
from pipeline.load.server import redact
from pipeline.testing import cli
from tests.conftest import assert_invariant, memory, rows, write_jsonl

# Passwords that broke or could break the hiding of a URL's user information.
UGLY_PASSWORDS = [
    "Sup3r@Secret",  # an @: only the last @ ends the user information
    "@@@",
    "pa:ss:wo:rd",
    "pa/ss/word",
    "p%40ssword",  # an @, percent-encoded
    "pass#word",
    "pass?word=1",
    'it\'s"quoted"',
    "pässwörd€✓",
    "password=hunter2",  # looks like a libpq parameter
    "127",  # a word of the host
    "db",  # the database's name
]


@pytest.mark.parametrize("password", UGLY_PASSWORDS)
def test_redact_hides_the_whole_user_information_of_a_url_in_a_message(password):
    said = redact(f"error: cannot connect to postgresql://admin:{password}@127.0.0.1:5432/db: refused")
    assert said == "error: cannot connect to postgresql://***@127.0.0.1:5432/db: refused"


def test_redact_keeps_a_url_without_a_password_as_it_is():
    """``psql "$(pipeline db url)"`` needs the embedded server's user."""
    for url in ("postgresql://postgres:@/postgres?host=/tmp/x", "postgresql://admin@db.example/db"):
        assert redact(f"database {url}") == f"database {url}"


def secret_url(server_url: str, database: str, password: str) -> str:
    """The test server's URL of ``database``, with ``password`` (the server trusts any)."""
    return database_url(server_url, database).replace("postgres:@", f"postgres:{password}@", 1)


# (password, whether libpq reads the URL as meant). libpq ends the user information at the
# first @ or /, and stops at a blank or a % that starts no escape: those URLs are refused
# before libpq sees them (and echoes a part of the password), with what to do.
END_TO_END = [
    ("Sup3r@S3cret", False),
    ("pa/ss-w0rd", False),
    ("tw0 w0rds", False),
    ("h4lf%z0ff", False),
    ("pa:ss#wo?rd", True),
    ("p%40ssw0rd", True),
    ("it's\"é€✓", True),
    ("pgdata", True),  # a word of the host: the server's socket is in .../pgdata
]


def secrets(password: str) -> list[str]:
    """What must never show: the password, decoded too, and its parts between the characters
    a URL parser may cut it at; a password that is a word of the host, only as a password."""
    if password == "pgdata":
        return [f":{password}@"]
    parts = re.split(r"[@:/?#% ]", password)
    return [password, urllib.parse.unquote(password), *(p for p in parts if len(p) >= 4)]


@pytest.mark.parametrize(("password", "read_as_meant"), END_TO_END)
def test_no_command_output_report_or_table_shows_an_ugly_password(
    server_url, tmp_path, password, read_as_meant
):
    name = f"secret_{uuid.uuid4().hex[:8]}"
    fresh_database(server_url, name)
    url = secret_url(server_url, name, password)
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2, confidence=0)])
    report = tmp_path / "report.json"
    done = cli("migrate", path, "--db", url, "--report", report)
    listed = cli("runs", "--db", url)
    unreachable = cli("migrate", path, "--db", f"postgresql://admin:{password}@127.0.0.1:9/db")
    with connected(database_url(server_url, name)) as db:
        stored = rows(db, "SELECT to_regclass('pipeline_runs') IS NOT NULL AS made")[0]["made"] and rows(
            db, "SELECT config::text, inputs::text, result::text FROM pipeline_runs"
        )
    texts = [json.dumps(stored), report.read_text() if report.exists() else ""]
    for command in (done, listed, unreachable):
        texts += [command.stdout, command.stderr]
        assert "Traceback" not in command.stderr
    for text in texts:
        for secret in secrets(password):
            assert secret not in text
    if read_as_meant:
        assert (done.returncode, listed.returncode, unreachable.returncode) == (0, 0, 1), done.stderr
        assert "database postgresql://***@/" in listed.stdout
        assert stored and "postgresql://***@/" in stored[0]["result"]
    else:
        assert (done.returncode, listed.returncode, unreachable.returncode) == (2, 2, 2)
        assert "percent-encode" in done.stderr


def test_a_missing_database_is_named_with_how_to_create_it(server_url, tmp_path):
    url = secret_url(server_url, "no_such_db", "s3cret-pw")
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1)])
    for done in (cli("migrate", path, "--db", url), cli("runs", "--db", url)):
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1
        assert "the database no_such_db does not exist on that server" in done.stderr
        assert "`createdb no_such_db`" in done.stderr
        assert "s3cret-pw" not in done.stderr


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            "postgresql://u:s3cret-pw@127.0.0.1:9/db",
            "cannot connect to postgresql://***@127.0.0.1:9/db: nothing answers at 127.0.0.1:9 "
            "(Connection refused); check that PostgreSQL runs there",
        ),
        (
            "postgresql://u:s3cret-pw@/db?host=/no/such/dir&port=5",
            "no server listens on the socket /no/such/dir/.s.PGSQL.5 (No such file or directory); "
            "check that PostgreSQL runs",
        ),
        (
            "postgresql://u:s3cret-pw@no-such-host.invalid:5432/db",
            "the host name no-such-host.invalid is not known",
        ),
    ],
    ids=["port", "socket", "host"],
)
def test_an_unreachable_server_is_one_line_naming_where_and_what_to_check(tmp_path, url, said):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1)])
    for done in (cli("migrate", path, "--db", url), cli("runs", "--db", url)):
        assert done.returncode == 1, done.stderr
        assert done.stderr.count("\n") == 1
        assert said in done.stderr
        assert "s3cret-pw" not in done.stderr


@pytest.mark.parametrize("tables", ["fresh", "present"])
def test_two_runs_started_together_store_each_record_once(server_url, tmp_path, tables):
    """Two overlapping exports: the 200 records in both are stored once, and the run that did
    not store one counts it as a duplicate (or, while the other run had not committed it yet,
    as refused by the database)."""
    url = fresh_database(server_url, f"together_{tables}")
    if tables == "present":
        with connected(url) as db:
            ensure_schema(db, get_dataset("memories"))
    first = write_jsonl(tmp_path / "first.jsonl", [memory(n) for n in range(600)])
    second = write_jsonl(tmp_path / "second.jsonl", [memory(n) for n in range(400, 1_000)])
    together = threading.Barrier(2)
    results: dict[Path, object] = {}

    def run(path: Path) -> None:
        together.wait()
        try:
            results[path] = migrate([path], BatchConfig(batch_size=50, log_progress=False), db_url=url)
        except PipelineError as exc:
            results[path] = exc

    threads = [threading.Thread(target=run, args=(path,)) for path in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [r for r in results.values() if isinstance(r, Exception)], results
    with connected(url) as db:
        stored = [r["id"] for r in rows(db, "SELECT id FROM memories")]
        for result in results.values():
            assert_invariant(result, db)
            assert (result.status, result.processed) == ("completed", 600)
    assert sorted(stored) == sorted(f"mem-{n}" for n in range(1_000))
    assert sum(r.successful for r in results.values()) == 1_000
    assert sum(r.duplicates_skipped + r.database_errors for r in results.values()) == 200
