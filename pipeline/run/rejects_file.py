"""A dry run's rejects, written to a file instead of ``pipeline_rejects``: the table's columns,
one batch after another, from whichever lane decided it.

Parquet is written as one file of many row groups; JSON lines and CSV are appended to. The
columns are those of the table, so ``pipeline rejects --file`` reads it as it reads the table.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import ConfigError
from pipeline.frames import REJECT_SCHEMA

SUFFIXES = (".parquet", ".jsonl", ".csv")
# The columns of ``pipeline_rejects``, in its order.
FILE_SCHEMA = pl.Schema(
    {
        "run_id": pl.String(),
        **REJECT_SCHEMA,
        "created_at": pl.Datetime("us", "UTC"),
        "resolved_by": pl.String(),
    }
)


def rejects_file_path(given: str | None, run_id: str) -> Path:
    """The file a dry run writes its rejects to; a suffix it cannot write is refused."""
    path = Path(given) if given else Path(f"{run_id}-rejects.parquet")
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"{path}: the rejects file is .parquet, .jsonl or .csv")
    return path


class RejectsFile:
    """Rejects appended batch by batch, from any thread; ``close`` finishes the file. The
    corrupt compressed inputs met are kept (``damaged``), as the table would tell them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.damaged: list[dict] = []
        self._lock = threading.Lock()
        self._parquet: pq.ParquetWriter | None = None
        self._written = False
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        if path.suffix.lower() == ".parquet":
            self._parquet = pq.ParquetWriter(path, _arrow(pl.DataFrame(schema=FILE_SCHEMA)).schema)

    def write(self, run_id: str, rejects: pl.DataFrame) -> None:
        if rejects.is_empty():
            return
        rows = rejects.select(
            pl.lit(run_id).alias("run_id"),
            *REJECT_SCHEMA,
            created_at=pl.lit(datetime.now(UTC), FILE_SCHEMA["created_at"]),
            resolved_by=pl.lit(None, pl.String),
        )
        corrupt = rows.filter(pl.col("reason") == "corrupt_compressed_input")
        with self._lock:
            self.damaged += corrupt.select(path="source_file", line="source_line").to_dicts()
            if self._parquet is not None:
                self._parquet.write_table(_arrow(rows))
            else:
                self._append(rows)

    def close(self) -> None:
        with self._lock:
            if self._parquet is not None:
                self._parquet.close()
            elif not self._written:
                self._append(pl.DataFrame(schema=FILE_SCHEMA))

    def _append(self, rows: pl.DataFrame) -> None:
        with self.path.open("a", encoding="utf-8", newline="") as handle:
            if self.path.suffix.lower() == ".csv":
                rows.write_csv(handle, include_header=not self._written)
            else:
                rows.write_ndjson(handle)
        self._written = True


def read_rejects_file(path: Path) -> pa.Table:
    """A rejects file as the table's rows (``pipeline rejects --file``)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such rejects file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: a rejects file is .parquet, .jsonl or .csv")
    if suffix == ".parquet":
        rows = pl.read_parquet(path)
    elif suffix == ".csv":
        rows = pl.read_csv(path, schema=FILE_SCHEMA)
    else:
        rows = pl.read_ndjson(path, schema=FILE_SCHEMA)
    return _arrow(rows.cast(FILE_SCHEMA))


def _arrow(rows: pl.DataFrame) -> pa.Table:
    return rows.to_arrow(compat_level=pl.CompatLevel.oldest())
