"""JSON texts as JavaScript's ``JSON.parse`` reads them, where DuckDB's reading differs.

DuckDB also reads NaN, Infinity and trailing commas (``strictly_valid`` tells those texts
apart), and keeps the first of a repeated key where ``JSON.parse`` keeps the last
(``last_keys_win`` rewrites the few texts that repeat one). Each works at any depth:
nothing here recurses.
"""

from __future__ import annotations

import json
import re

import polars as pl

# A JSON string token (for DuckDB-valid text: no raw control characters inside).
STRING = r'"(?:[^"\\]|\\.)*"'
# Where DuckDB's reading goes beyond JSON: trailing commas; NaN and Infinity in any case. Each
# pattern alone scans fast; texts that might use one are checked again with their strings
# blanked out, where a letter of NaN or Infinity can only be one of them (true, false and null
# hold none of ``nan``/``inf``).
TRAILING_COMMA = r",\s*[\]}]"
NON_FINITE_LETTERS = r"[NnIi][AaNn][NnFf]"
NON_FINITE = r"(?i)nan|inf"

_TOKEN = re.compile(rf'{STRING}|[{{}}\[\],:]|[^\s{{}}\[\],:"]+')
_BRACKET = re.compile(rf"{STRING}|[\[\]{{}}]")


def strictly_valid(texts: pl.Series, valid: pl.Series) -> pl.Series:
    """``valid`` (DuckDB's reading) made strict: a text using NaN, Infinity or a trailing comma
    is no JSON."""
    trailing = texts.str.contains(TRAILING_COMMA)
    at = (valid & (trailing | texts.str.contains(NON_FINITE_LETTERS))).arg_true()
    if at.is_empty():
        return valid
    bare = texts.gather(at).str.replace_all(STRING, '""')
    lenient = bare.str.contains(TRAILING_COMMA) | bare.str.contains(NON_FINITE)
    return valid.scatter(at.filter(lenient), False)


def last_keys_win(text: str) -> str:
    """A valid JSON text with each object keeping the last value of a repeated key, where the
    key first stood (as ``JSON.parse`` builds it); compact, every token as written."""
    containers: list[dict[str, tuple[str, str]] | list[str]] = []
    keys: list[str | None] = []
    done = ""
    for token in _TOKEN.findall(text):
        if token in ("{", "["):
            containers.append({} if token == "{" else [])
            keys.append(None)
            continue
        if token in (",", ":"):
            continue
        value = token
        if token in ("}", "]"):
            container = containers.pop()
            keys.pop()
            value = (
                "[" + ",".join(container) + "]"
                if isinstance(container, list)
                else "{" + ",".join(f"{key}:{member}" for key, member in container.values()) + "}"
            )
        if not containers:
            done = value
        elif isinstance(top := containers[-1], list):
            top.append(value)
        elif (key := keys[-1]) is None:
            keys[-1] = value
        else:
            top[json.loads(key)] = (key, value)
            keys[-1] = None
    return done


def nesting_depth(text: str) -> int:
    """How deep a JSON text nests arrays and objects."""
    depth = deepest = 0
    for token in _BRACKET.findall(text):
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("]", "}"):
            depth -= 1
    return deepest
