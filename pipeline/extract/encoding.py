"""How the bytes of a text input (JSONL, JSON, CSV) become text: the encoding it is read in
(declared, else told by a byte-order mark, else UTF-8) and a CSV's delimiter (declared, else
told by its header; ``.tsv`` declares a tab).

UTF-8 is read as it is (Polars reads its bytes). An input in another encoding is decoded block
by block into UTF-8 (``Transcoder``) in which each run of bytes not valid in the encoding
becomes the byte 0xFF, never valid UTF-8: the readers then find and show it as they find and
show bad UTF-8, as U+FFFD; only the reason differs (``invalid_reason``).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from functools import cache

from pipeline.config import checked_encoding
from pipeline.errors import InputError

UTF8 = "utf-8"
# The delimiters a CSV header is looked at for, in the order they are named.
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}
# The error handler marking bad bytes: a lone surrogate that ``surrogateescape`` writes as 0xFF.
MARK = "pipeline-mark-invalid"


def _marked(error: UnicodeError) -> tuple[str, int]:
    # Only decoders are given the handler; any other use fails as it would under ``strict``.
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return "\udcff", error.end


codecs.register_error(MARK, _marked)


def told_encoding(head: bytes, declared: str | None) -> str:
    """The codec an input is read with, from its first bytes: the declared one, else UTF-16
    after a UTF-16 byte-order mark, else UTF-8 (a UTF-8 mark is skipped by the readers)."""
    if declared is not None:
        return checked_encoding(declared)
    return "utf-16" if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else UTF8


def is_utf8(encoding: str) -> bool:
    return encoding in (UTF8, "utf-8-sig")


def invalid_reason(encoding: str) -> str:
    """The reject reason of a record holding bytes not valid in ``encoding``."""
    return "invalid_utf8" if is_utf8(encoding) else "invalid_encoding"


@cache
def cuttable(encoding: str) -> bool:
    """Whether an input in ``encoding`` may be cut right after any byte 0x0A: UTF-8, or an
    encoding of one byte per character in which a line break and a quote are their ASCII
    bytes (cp1252, latin-1…). UTF-16 and multi-byte encodings may not."""
    if is_utf8(encoding):
        return True
    try:
        if '\n"'.encode(encoding) != b'\n"':
            return False
    except UnicodeError:
        return False
    decoder = codecs.getincrementaldecoder(encoding)
    # A byte that starts a longer character decodes to nothing until the rest comes.
    return all(decoder("replace").decode(bytes([byte])) for byte in range(256))


class Transcoder:
    """Blocks of text in ``encoding`` as UTF-8, bad bytes marked as 0xFF; a character cut by a
    block's end is finished by the next block; a byte-order mark at the start is no text."""

    def __init__(self, encoding: str) -> None:
        self._decoder = codecs.getincrementaldecoder(encoding)(MARK)
        self._started = False

    def utf8(self, block: bytes, final: bool = False) -> bytes:
        text = self._decoder.decode(block, final)
        if not self._started and text:
            text, self._started = text.removeprefix("\ufeff"), True
        return text.encode(UTF8, "surrogateescape")

    def blocks(self, blocks: Iterable[bytes]) -> Iterator[bytes]:
        for block in blocks:
            yield self.utf8(block)
        yield self.utf8(b"", final=True)


def to_utf8(data: bytes, encoding: str) -> bytes:
    """Bytes in ``encoding`` as UTF-8, bad bytes marked (``Transcoder``); UTF-8 as it is."""
    return data if is_utf8(encoding) else Transcoder(encoding).utf8(data, final=True)


def told_delimiter(name: str, head: bytes, declared: str | None) -> str:
    """The delimiter declared, else the one of ``DELIMITERS`` the header line (``head``: the
    input's first bytes as UTF-8) holds outside quotes, or holds more than twice as often as
    any other (a comma when it holds none: one column). An InputError names the candidates
    otherwise."""
    if declared is not None:
        return declared
    start = head.decode(UTF8, "replace").lstrip("\ufeff")
    header = re.sub(r'"[^"]*("|$)', "", start).split("\n", 1)[0]
    counts = sorted(((header.count(d), d) for d in DELIMITERS if d in header), reverse=True)
    if not counts:
        return ","
    if len(counts) == 1 or counts[0][0] > 2 * counts[1][0]:
        return counts[0][1]
    named = ", ".join(f"{DELIMITER_NAMES[d]} ({n})" for n, d in counts)
    raise InputError(
        f"{name}: cannot tell the delimiter, the header line holds {named}; "
        "name it with --delimiter (e.g. --delimiter ';')",
        path=name,
    )


def delimiter_option(value: str) -> str:
    """A --delimiter as typed: ``tab`` or ``\\t`` for a tab."""
    return "\t" if value in ("tab", "\\t") else value
