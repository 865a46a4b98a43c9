"""Which inputs a run reads: paths, globs, directories, object-store URLs and prefixes and
standard input resolved (``sources.Source``), formats, encodings and CSV delimiters told,
and each input fingerprinted so that a resumed run reads exactly the same bytes."""

from __future__ import annotations

import codecs
import glob
import hashlib
import os
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.config import DEFAULT_TEXT, TextOptions
from pipeline.errors import InputError
from pipeline.extract.encoding import to_utf8, told_delimiter, told_encoding
from pipeline.extract.sources import (
    COMPRESSED,
    KNOWN_FORMATS,
    STDIN,
    CorruptInput,
    Source,
    is_url,
    parse_input_format,
    sniffed_compression,
    stdin_source,
    tab_separated,
    told_format,
)

HASH_BLOCK_BYTES = 4 * 1024 * 1024
# Bytes of an input's start looked at for its compression, byte-order mark and CSV header.
HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Inputs:
    """The inputs a run reads, in order, and what its directories, prefixes and globs held
    that it does not read: ``ignored``, each a ``path`` and ``why`` (hidden, directory,
    unknown format)."""

    files: list[Source]
    ignored: list[dict[str, str]] = field(default_factory=list)


def find_inputs(
    patterns: Iterable[str | os.PathLike[str]],
    input_format: str | None = None,
    text: TextOptions = DEFAULT_TEXT,
) -> Inputs:
    """Expand globs, directories and prefixes (their files of a known format, in name order;
    hidden files, subdirectories and other files are ignored, and listed); every pattern
    (text or a path object) must name at least one readable file of a known format. A glob
    matches a hidden file only where it names one itself (``.*.jsonl``), as ``glob`` does.
    ``-`` is standard input; ``input_format`` (``csv``, ``jsonl.gz``…) tells the format of
    inputs whose name does not; ``text`` how text inputs are read (``_told``)."""
    inputs = Inputs([])
    for given in patterns:
        pattern = os.fspath(given)
        if pattern == "-":
            inputs.files.append(_told(stdin_source(input_format), text, input_format))
            continue
        matches, what = _expanded(pattern, inputs.ignored)
        if matches is None:
            inputs.files.append(_input_file(pattern, input_format, text))
            continue
        found = [s for m, size in matches if (s := _readable(m, size, inputs.ignored, text)) is not None]
        if not found:
            raise InputError(f"{pattern}: {what} {KNOWN_FORMATS} files", path=pattern)
        inputs.files.extend(found)
    return inputs


def resolve_inputs(
    patterns: Iterable[str | os.PathLike[str]],
    input_format: str | None = None,
    text: TextOptions = DEFAULT_TEXT,
) -> list[Source]:
    """The inputs ``find_inputs`` finds."""
    return find_inputs(patterns, input_format, text).files


def _expanded(pattern: str, ignored: list[dict[str, str]]) -> tuple[list[tuple[str, int | None]] | None, str]:
    """A glob's matches or a directory's (prefix's) entries, each with its size where a store
    told it (None: a local file, or a subdirectory), or None for a single file."""
    if is_url(pattern):
        from pipeline.extract.remote import expanded_url

        return expanded_url(pattern, ignored)
    if glob.has_magic(pattern):
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise InputError(f"{pattern}: no file matches this pattern", path=pattern)
        return [(m, None) for m in matches], "no file matching it"
    if Path(pattern).is_dir():
        entries: list[tuple[str, int | None]] = []
        for entry in sorted(Path(pattern).iterdir()):
            if entry.name.startswith("."):
                ignored.append(ignored_entry(str(entry), "hidden"))
            else:
                entries.append((str(entry), None))
        return entries, "a directory without"
    return None, ""


def _input_file(name: str, input_format: str | None, text: TextOptions) -> Source:
    size = None
    if is_url(name):
        from pipeline.extract.remote import object_size

        size = object_size(name)
    elif not Path(name).is_file():
        raise InputError(f"{name}: no such file", path=name)
    told = parse_input_format(input_format) if input_format else told_format(name)
    if told is None:
        raise InputError(
            f"{name}: unknown input format; use {KNOWN_FORMATS} ({COMPRESSED}), or name it with "
            "--input-format",
            path=name,
        )
    return _told(Source(name, name, *told, stored_size=size), text, input_format)


def _readable(name: str, size: int | None, ignored: list[dict[str, str]], text: TextOptions) -> Source | None:
    """A directory's entry or a glob's match as an input; if it is none, it is noted."""
    if size is None and (is_url(name) or Path(name).is_dir()):
        ignored.append(ignored_entry(name, "directory"))
    elif (told := told_format(name)) is None or not (is_url(name) or Path(name).is_file()):
        ignored.append(ignored_entry(name, "unknown format"))
    else:
        return _told(Source(name, name, *told, stored_size=size), text)
    return None


def _told(source: Source, text: TextOptions, input_format: str | None = None) -> Source:
    """An input as it is read: a plain file named as compressed read as it is stored (its
    first bytes tell), a text input in the encoding declared (else a UTF-16 byte-order mark's,
    else UTF-8), and a CSV split by the delimiter declared (a tab where the name or
    ``input_format`` says tsv), else told by its header (``encoding.told_delimiter``)."""
    if source.compression is not None and source.stored_size != 0:
        with source.open_stored() as stored:
            magic = stored.read(4)
        if magic and not sniffed_compression(magic):
            source = replace(source, compression=None)
    if source.kind == "parquet":
        return source
    head = b""
    try:
        with source.reading(as_utf8=False) as (handle, _), suppress(CorruptInput):
            head = handle.read(HEAD_BYTES)
    except OSError as exc:
        raise InputError(f"{source}: cannot be read ({exc})", path=str(source)) from exc
    source = replace(source, encoding=told_encoding(head, text.encoding))
    if source.kind != "csv":
        return source
    declared = text.delimiter or ("\t" if tab_separated(input_format or source.label) else None)
    return replace(source, delimiter=told_delimiter(source.label, to_utf8(head, source.encoding), declared))


def ignored_entry(path: str, why: str) -> dict[str, str]:
    return {"path": path, "why": why}


def fingerprint(source: Source | Path, size: int | None = None) -> dict:
    """The stored size and the SHA-256 of the content (decompressed: a compressed copy of a
    file has the file's fingerprint) of an input's first ``size`` stored bytes (default: all
    it holds now): a resumed run must read exactly the same bytes, and a file that grows while
    it is read is taken as it was when the run started. A compressed file whose data is
    damaged is hashed as far as it decodes."""
    source = as_source(source)
    size = source.stat().st_size if size is None else size
    digest = hashlib.sha256()
    # A plain file is hashed up to ``size``; a compressed one whole (its size is its stored one).
    left = float("inf") if source.streamed else size
    with source.reading(as_utf8=False) as (handle, _), suppress(CorruptInput):
        while left and (block := handle.read(int(min(HASH_BLOCK_BYTES, left)))):
            digest.update(block)
            left -= len(block)
    return {"path": source.label, "size": size, "sha256": digest.hexdigest()}


def as_source(path: Source | str | os.PathLike[str]) -> Source:
    """A path named by its suffixes as an input (a ``Source`` as it is)."""
    if isinstance(path, Source):
        return path
    name = os.fspath(path)
    if name == STDIN:
        raise InputError(f"{STDIN} can be read once only")
    told = told_format(name)
    if told is None:
        raise InputError(f"{name}: unknown input format; use {KNOWN_FORMATS} ({COMPRESSED})", path=name)
    return _told(Source(name, name, *told), DEFAULT_TEXT)


def input_format(path: Source | Path) -> str | None:
    """lines, json_array, csv or parquet; None for a name of no known format."""
    try:
        source = as_source(path)
    except InputError:
        return None
    if source.kind == "json":
        return "json_array" if _first_byte(source) == b"[" else "lines"
    return source.kind


def _first_byte(source: Source) -> bytes:
    """The first character past white space and a byte-order mark, if ASCII, in its text."""
    with source.reading() as (handle, _):
        try:
            head = handle.read(64)
        except CorruptInput:
            return b""
    return head.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
