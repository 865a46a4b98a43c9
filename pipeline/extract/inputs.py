"""Which files a run reads: paths, globs and directories resolved, formats told apart, and
each file fingerprinted so that a resumed run reads exactly the same bytes."""

from __future__ import annotations

import codecs
import glob
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import InputError

HASH_BLOCK_BYTES = 4 * 1024 * 1024
LINE_SUFFIXES = {".jsonl", ".ndjson", ".jsonlines", ".json"}


def resolve_inputs(patterns: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand globs and directories (their files of a known format, in name order); every
    pattern (text or a path object) must name at least one readable file of a known format."""
    paths: list[Path] = []
    for pattern in map(os.fspath, patterns):
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise InputError(f"{pattern}: no file matches this pattern", path=pattern)
        if Path(pattern).is_dir():
            matches = sorted(str(f) for f in Path(pattern).iterdir() if f.is_file() and input_format(f))
            if not matches:
                raise InputError(
                    f"{pattern}: a directory without .jsonl/.ndjson, .json, .csv or .parquet files",
                    path=pattern,
                )
        for match in matches:
            path = Path(match)
            if not path.is_file():
                raise InputError(f"{match}: no such file", path=match)
            if input_format(path) is None:
                raise InputError(
                    f"{match}: unknown input format; use .jsonl/.ndjson, .json, .csv or .parquet",
                    path=match,
                )
            paths.append(path)
    return paths


def fingerprint(path: Path) -> dict:
    """Size and SHA-256 of a file: a resumed run must read exactly the same bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return {"path": str(path), "size": path.stat().st_size, "sha256": digest.hexdigest()}


def input_format(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json_array" if _first_byte(path) == b"[" else "lines"
    if suffix in LINE_SUFFIXES:
        return "lines"
    return {".csv": "csv", ".parquet": "parquet"}.get(suffix)


def _first_byte(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(64).removeprefix(codecs.BOM_UTF8).lstrip()[:1]
