"""Which files a run reads: paths, globs and directories resolved, formats told apart, and
each file fingerprinted so that a resumed run reads exactly the same bytes."""

from __future__ import annotations

import codecs
import glob
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError

HASH_BLOCK_BYTES = 4 * 1024 * 1024
LINE_SUFFIXES = {".jsonl", ".ndjson", ".jsonlines", ".json"}
KNOWN_FORMATS = ".jsonl/.ndjson, .json, .csv or .parquet"


@dataclass(frozen=True)
class Inputs:
    """The files a run reads, in order, and what its directories and globs held that it does
    not read: ``ignored``, each a ``path`` and ``why`` (hidden, directory, unknown format)."""

    files: list[Path]
    ignored: list[dict[str, str]] = field(default_factory=list)


def find_inputs(patterns: Iterable[str | os.PathLike[str]]) -> Inputs:
    """Expand globs and directories (their files of a known format, in name order; hidden
    files, subdirectories and other files are ignored, and listed); every pattern (text or a
    path object) must name at least one readable file of a known format. A glob matches a
    hidden file only where it names one itself (``.*.jsonl``), as ``glob`` does."""
    inputs = Inputs([])
    for pattern in map(os.fspath, patterns):
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise InputError(f"{pattern}: no file matches this pattern", path=pattern)
            what = "no file matching it"
        elif Path(pattern).is_dir():
            matches = []
            for entry in sorted(Path(pattern).iterdir()):
                if entry.name.startswith("."):
                    inputs.ignored.append(_ignored(str(entry), "hidden"))
                else:
                    matches.append(str(entry))
            what = "a directory without"
        else:
            inputs.files.append(_input_file(pattern))
            continue
        found = [Path(m) for m in matches if _readable(m, inputs.ignored)]
        if not found:
            raise InputError(f"{pattern}: {what} {KNOWN_FORMATS} files", path=pattern)
        inputs.files.extend(found)
    return inputs


def resolve_inputs(patterns: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The files ``find_inputs`` finds."""
    return find_inputs(patterns).files


def _input_file(name: str) -> Path:
    path = Path(name)
    if not path.is_file():
        raise InputError(f"{name}: no such file", path=name)
    if input_format(path) is None:
        raise InputError(f"{name}: unknown input format; use {KNOWN_FORMATS}", path=name)
    return path


def _readable(name: str, ignored: list[dict[str, str]]) -> bool:
    """Whether a directory's entry or a glob's match is a file to read; if not, it is noted."""
    path = Path(name)
    if path.is_dir():
        ignored.append(_ignored(name, "directory"))
    elif not path.is_file() or input_format(path) is None:
        ignored.append(_ignored(name, "unknown format"))
    else:
        return True
    return False


def _ignored(path: str, why: str) -> dict[str, str]:
    return {"path": path, "why": why}


def fingerprint(path: Path, size: int | None = None) -> dict:
    """Size and SHA-256 of a file's first ``size`` bytes (default: all it holds now): a resumed
    run must read exactly the same bytes, and a file that grows while it is read is taken as it
    was when the run started."""
    size = path.stat().st_size if size is None else size
    digest = hashlib.sha256()
    left = size
    with path.open("rb") as handle:
        while left and (block := handle.read(min(HASH_BLOCK_BYTES, left))):
            digest.update(block)
            left -= len(block)
    return {"path": str(path), "size": size - left, "sha256": digest.hexdigest()}


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
