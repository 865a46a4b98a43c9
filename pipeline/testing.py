"""Scaffolding the tests and the benchmarks share: a quiet migration, the command line in a
child process, a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from pipeline.config import BatchConfig
from pipeline.load.databases import fresh_database
from pipeline.run.migrate import migrate
from pipeline.run.report import RunResult

__all__ = ["cli", "fresh_database", "run"]


def run(paths: Iterable[Path | str], db_url: str, recheck: bool = False, **settings) -> RunResult:
    """``migrate`` the files with ``BatchConfig(**settings)``, without a progress display."""
    settings.setdefault("log_progress", False)
    return migrate(list(paths), BatchConfig(**settings), db_url=db_url, recheck=recheck)


def cli(*args, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """``pipeline ARGS...`` in a child process, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
