"""Where an input's bytes come from: a local file, an object in a store (``s3://``, ``gs://``,
``az://``, ``https://``, through fsspec) or standard input, stored plain or compressed
(``.gz``, ``.zst``, ``.bz2``), and what format it holds.

A compressed input is read as a stream, decompressed block by block. Where its data is
damaged or cut short, reading stops with ``CorruptInput``: the records before the damage are
read, the rest of the file is one reject. Standard input is copied to a temporary file as it
is read (in blocks: memory stays bounded), so that the run can look at its first records,
fingerprint it and read it, as it does a file.
"""

from __future__ import annotations

import atexit
import bz2
import os
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Protocol

from pipeline.errors import InputError
from pipeline.extract.encoding import UTF8, Transcoder, cuttable, is_utf8

STDIN = "<stdin>"
COPY_BYTES = 1024 * 1024
# Stored bytes decoded at a time: what a damaged file loses of the data before its damage.
STORED_READ_BYTES = 64 * 1024

# Suffix → format; "json" is an array or lines, told by its first byte.
FORMATS = {
    ".jsonl": "lines",
    ".ndjson": "lines",
    ".jsonlines": "lines",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
}
FORMAT_NAMES = {
    "jsonl": "lines",
    "ndjson": "lines",
    "json": "json",
    "csv": "csv",
    "tsv": "csv",
    "parquet": "parquet",
}
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}
COMPRESSION_NAMES = {"gz": "gzip", "gzip": "gzip", "zst": "zstd", "zstd": "zstd", "bz2": "bz2"}
MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bz2"))
KNOWN_FORMATS = ".jsonl/.ndjson, .json, .csv/.tsv or .parquet"
COMPRESSED = "all but .parquet also compressed as .gz, .zst or .bz2"


class CorruptInput(Exception):
    """Compressed data that cannot be decoded past ``decoded`` bytes; ``line`` is the line it
    stopped on, once a reader that counts lines tells it."""

    def __init__(self, decoded: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.decoded = decoded
        self.line = 1


class ByteStream(Protocol):
    """What the readers read an input's content through."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self) -> bytes: ...


@dataclass(frozen=True)
class Source:
    """An input: ``label`` as the run records it (the path as given, the URL, ``<stdin>``),
    ``location`` where its bytes are (a local path or a URL; standard input's copy), its
    ``kind`` (lines, json, csv, parquet), ``compression`` (None, gzip, zstd, bz2), the
    ``encoding`` its text is in and a CSV's ``delimiter`` (both told: ``inputs``).

    It answers what the run asks of a ``Path``: ``str()``, ``name``, ``stat().st_size`` (the stored
    bytes) and ``exists()``."""

    label: str
    location: str
    kind: str
    compression: str | None = None
    stored_size: int | None = None  # an object's (a store is asked once), None for a local file
    encoding: str = UTF8
    delimiter: str = ","

    def __str__(self) -> str:
        return self.label

    @property
    def name(self) -> str:
        """The last part of its path, as ``Path.name``."""
        return self.label.rstrip("/").rsplit("/", 1)[-1]

    @property
    def remote(self) -> bool:
        return is_url(self.location)

    @property
    def transcoded(self) -> bool:
        """Whether its text is read as UTF-8 made of another encoding."""
        return not is_utf8(self.encoding)

    @property
    def streamed(self) -> bool:
        """Whether its bytes can only be read in order (no seeking into its records): it is
        compressed, or its encoding may hold a line break's byte inside a character."""
        return self.compression is not None or not cuttable(self.encoding)

    def stat(self) -> os.stat_result:
        if self.stored_size is not None:
            return os.stat_result((0, 0, 0, 0, 0, 0, self.stored_size, 0, 0, 0))
        return os.stat(self.location)

    def exists(self) -> bool:
        return self.remote or os.path.exists(self.location)

    def open_stored(self) -> IO[bytes]:
        """Its bytes as stored (compressed, if they are), seekable."""
        if self.remote:
            import fsspec

            return fsspec.open(self.location, "rb").open()
        return open(self.location, "rb")

    @contextmanager
    def reading(self, as_utf8: bool = True) -> Iterator[tuple[ByteStream, Callable[[], int]]]:
        """Its decompressed bytes (made UTF-8 unless ``as_utf8`` is False: its content as it
        is), and a function telling how many stored bytes were read."""
        with self.open_stored() as stored:
            content: ByteStream = stored
            if self.compression is not None:
                content = _Decoded(stored, self.compression)
            if as_utf8 and self.transcoded:
                content = _Transcoded(content, self.encoding)
            yield content, stored.tell


def is_url(name: str) -> bool:
    return "://" in name


class _Refilled:
    """A stream read from a buffer that ``_fill`` tops up (setting ``_done`` at the end, or
    ``_damage``): what was read before damage is read first, then ``CorruptInput``."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._handed_out = 0
        self._done = False
        self._damage: CorruptInput | None = None

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._buffer) < size) and not (self._done or self._damage):
            self._fill()
        if not self._buffer and self._damage:
            raise self._damage
        size = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._handed_out += size
        return data

    def readline(self) -> bytes:
        while b"\n" not in self._buffer and not (self._done or self._damage):
            self._fill()
        end = self._buffer.find(b"\n") + 1
        return self.read(end or -1)

    def _fill(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Refilled:
        return self

    def __exit__(self, *_: object) -> None:
        self._buffer.clear()


class _Decoded(_Refilled):
    """The decompressed bytes of a stored stream, decoded as it is read (a ``.gz`` of many
    members, a ``.zst`` of many frames, read through). Where decoding fails, or the stored
    bytes end before the compressed data does, it is damaged."""

    def __init__(self, stored: IO[bytes], compression: str) -> None:
        super().__init__()
        self._stored = stored
        self._compression = compression
        self._decompressor = _decompressor(compression)

    def _fill(self) -> None:
        chunk = self._stored.read(STORED_READ_BYTES)
        try:
            if not chunk:
                if self._decompressor.needs_more:
                    raise EOFError("the compressed data ends before its end marker")
                self._done = True
            while chunk:
                if self._decompressor.eof:  # another member or frame follows
                    self._decompressor = _decompressor(self._compression)
                self._buffer += self._decompressor.decompress(chunk)
                chunk = self._decompressor.unused_data if self._decompressor.eof else b""
        except (EOFError, OSError, zlib.error, ValueError) as exc:
            self._damage = CorruptInput(self._handed_out + len(self._buffer), exc)
        except Exception as exc:  # zstandard.ZstdError
            if type(exc).__name__ != "ZstdError":
                raise
            self._damage = CorruptInput(self._handed_out + len(self._buffer), exc)


class _Transcoded(_Refilled):
    """Bytes in another encoding read as UTF-8 (``encoding.Transcoder``); damage found in the
    bytes below (``CorruptInput``) is its damage."""

    def __init__(self, content: ByteStream, encoding: str) -> None:
        super().__init__()
        self._content = content
        self._transcoder = Transcoder(encoding)

    def _fill(self) -> None:
        try:
            block = self._content.read(STORED_READ_BYTES)
        except CorruptInput as damage:
            self._damage = damage
            return
        self._done = not block
        self._buffer += self._transcoder.utf8(block, final=self._done)


class _Decompressor:
    """One member (frame) of compressed data being decoded; ``needs_more``: begun, not ended."""

    def __init__(self, decoder: Any) -> None:
        self._decoder = decoder
        self._begun = False

    def decompress(self, data: bytes) -> bytes:
        self._begun = True
        return self._decoder.decompress(data)

    @property
    def eof(self) -> bool:
        return bool(self._decoder.eof)

    @property
    def unused_data(self) -> bytes:
        return self._decoder.unused_data

    @property
    def needs_more(self) -> bool:
        return self._begun and not self.eof


def _decompressor(compression: str) -> _Decompressor:
    if compression == "gzip":
        return _Decompressor(zlib.decompressobj(wbits=zlib.MAX_WBITS | 16))
    if compression == "bz2":
        return _Decompressor(bz2.BZ2Decompressor())
    import zstandard

    return _Decompressor(zstandard.ZstdDecompressor().decompressobj())


def parse_input_format(given: str) -> tuple[str, str | None]:
    """``--input-format`` (``csv``, ``jsonl.gz``, …) as a kind and a compression."""
    kind, _, compression = given.lower().lstrip(".").partition(".")
    if kind not in FORMAT_NAMES or (compression and compression not in COMPRESSION_NAMES):
        raise InputError(
            f"--input-format {given}: unknown format; use jsonl, ndjson, json, csv or parquet, "
            "with .gz, .zst or .bz2 for a compressed input (csv.gz)"
        )
    return FORMAT_NAMES[kind], COMPRESSION_NAMES.get(compression)


def told_format(name: str) -> tuple[str, str | None] | None:
    """The kind and compression a name's suffixes tell (``a.jsonl.gz``), or None."""
    base = name.rsplit("/", 1)[-1].lower()
    stem, dot, last = base.rpartition(".")
    compression = COMPRESSIONS.get(dot + last)
    if compression:
        base = stem
    kind = FORMATS.get("." + base.rpartition(".")[2]) if "." in base else None
    if kind is None or (kind == "parquet" and compression):
        return None
    return kind, compression


def sniffed_compression(head: bytes) -> str | None:
    return next((name for magic, name in MAGIC if head.startswith(magic)), None)


def tab_separated(name: str) -> bool:
    """Whether a name (or an ``--input-format``) says tab-separated: ``a.tsv``, ``tsv.gz``."""
    base = name.rsplit("/", 1)[-1].lower()
    for suffix in COMPRESSIONS:
        base = base.removesuffix(suffix)
    return base == "tsv" or base.endswith(".tsv")


def stdin_source(input_format: str | None) -> Source:
    """Standard input, copied to a temporary file (removed when the process ends) as it is read."""
    if input_format is None:
        raise InputError("-: name the format of standard input with --input-format (jsonl, csv, …)")
    kind, compression = parse_input_format(input_format)
    folder = tempfile.mkdtemp(prefix="pipeline-stdin-")
    atexit.register(shutil.rmtree, folder, True)
    copy = os.path.join(folder, "stdin")
    with open(copy, "wb") as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool, COPY_BYTES)
    with open(copy, "rb") as spooled:
        compression = compression or sniffed_compression(spooled.read(4))
    return Source(STDIN, copy, kind, compression)
