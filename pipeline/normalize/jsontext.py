"""JSON texts as JavaScript's ``JSON.parse`` reads them, where DuckDB's reading differs.

DuckDB also reads NaN, Infinity and trailing commas (``strictly_valid`` tells those texts
apart). Each works at any depth: nothing here recurses.
"""

from __future__ import annotations

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
