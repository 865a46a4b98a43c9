"""JSON read at any depth before the records are decoded: a JSON array's elements as
written, a record's top-level keys.

Python's parser reads each text; it recurses, so a text nested deeper than its recursion
limit is scanned for its brackets instead. Only an array's element texts are kept, so a
number stays as written (``1e400``) and a repeated key is left for the decoding to resolve
as ``JSON.parse`` does.
"""

from __future__ import annotations

import json
import re

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:]')
_DEPTHS = {"[": 1, "{": 1, "]": -1, "}": -1}


def array_elements(text: str) -> list[str]:
    """The text of each element of the JSON array ``text``; ``json.JSONDecodeError`` (saying
    where) when the text is no JSON array, as ``JSON.parse`` refuses it whole."""
    at = _skip(text, 0)
    if not text.startswith("[", at):
        raise json.JSONDecodeError("Expecting '['", text, at)
    at = _skip(text, at + 1)
    elements: list[str] = []
    while not (elements == [] and text.startswith("]", at)):
        end = _element_end(text, at)
        elements.append(text[at:end])
        at = _skip(text, end)
        if text.startswith("]", at):
            break
        if not text.startswith(",", at):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
        at = _skip(text, at + 1)
    if _skip(text, at + 1) != len(text):
        raise json.JSONDecodeError("Extra data", text, _skip(text, at + 1))
    return elements


def _skip(text: str, at: int) -> int:
    """Where the JSON white space starting at ``at`` ends."""
    found = _WHITESPACE.match(text, at)
    return found.end() if found else at


def _element_end(text: str, at: int) -> int:
    """Where the JSON value starting at ``at`` ends."""
    try:
        return _DECODER.raw_decode(text, at)[1]
    except RecursionError:
        depth = 0
        for token in _STRUCTURE.finditer(text, at):
            depth += _DEPTHS.get(token.group(), 0)
            if depth == 0:
                return token.end()
        raise json.JSONDecodeError("Unterminated array or object", text, at) from None


def top_level_keys(text: str) -> set[str]:
    """The keys of a JSON object text (none for another value); ``ValueError`` when it is no
    JSON (a text too deep for Python's parser is not checked, only scanned)."""
    try:
        record = json.loads(text)
    except RecursionError:
        keys, depth, previous = set(), 0, ""
        for token in _STRUCTURE.finditer(text):
            depth += _DEPTHS.get(token.group(), 0)
            if token.group() == ":" and depth == 1:
                keys.add(json.loads(previous))
            previous = token.group()
        return keys
    return set(record) if isinstance(record, dict) else set()
