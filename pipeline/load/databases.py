"""Databases made and dropped on a server: for `pipeline bench` (one per batch size), the
benchmarks and the tests."""

from __future__ import annotations

import re

from pipeline.errors import DatabaseError
from pipeline.load.connection import DriverError, connected
from pipeline.load.server import redact, redact_url
from pipeline.sqltext import quoted


def database_url(server: str, name: str) -> str:
    """``server``'s URL with the database ``name`` (the query string, e.g. a socket host, kept).

    The user information ends at the last ``@`` (a password may hold ``?`` or ``#``, where a
    URL parser would start the query or the fragment), the host at the next ``/`` or ``?``."""
    scheme, _, after = server.partition("://")
    userinfo, at, location = after.rpartition("@")
    host = re.split(r"[/?]", location, maxsplit=1)[0]
    _, mark, query = location.partition("?")
    return f"{scheme}://{userinfo}{at}{host}/{name}{mark}{query}"


def fresh_database(server: str, name: str) -> str:
    """Drop the database ``name`` on ``server`` if it exists and create it empty; its URL."""
    with connected(server) as admin:
        try:
            admin.execute(f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {quoted(name)}")
        except DriverError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DatabaseError(
                f"cannot create the database {name} on {redact_url(server)} ({redact(first)}); "
                "this needs a user allowed to CREATE DATABASE"
            ) from exc
    return database_url(server, name)


def drop_database(server: str, name: str) -> None:
    with connected(server) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)")
