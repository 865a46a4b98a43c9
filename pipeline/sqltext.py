"""SQL text built from names and values: one way to quote each, for PostgreSQL and DuckDB
alike. Values travel as bound parameters where the driver allows; these serve the rest."""

from __future__ import annotations


def quoted(identifier: str) -> str:
    """An SQL identifier, always quoted: names never travel into SQL unquoted."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    """An SQL string literal (PostgreSQL's standard_conforming_strings, the default)."""
    return "'" + text.replace("'", "''") + "'"
