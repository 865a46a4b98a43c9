"""Databases made and dropped on a server: for `pipeline bench` (one per batch size), the
benchmarks and the tests."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pipeline.errors import DatabaseError
from pipeline.load.connection import DriverError, connected
from pipeline.load.server import redact
from pipeline.sqltext import quoted


def database_url(server: str, name: str) -> str:
    """``server``'s URL with the database ``name`` (the query string, e.g. a socket host, kept)."""
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}"))


def fresh_database(server: str, name: str) -> str:
    """Drop the database ``name`` on ``server`` if it exists and create it empty; its URL."""
    with connected(server) as admin:
        try:
            admin.execute(f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {quoted(name)}")
        except DriverError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DatabaseError(
                f"cannot create the database {name} on {redact(server)} ({redact(first)}); "
                "this needs a user allowed to CREATE DATABASE"
            ) from exc
    return database_url(server, name)


def drop_database(server: str, name: str) -> None:
    with connected(server) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)")
