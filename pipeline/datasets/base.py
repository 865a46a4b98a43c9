"""What the shared pipeline knows of a dataset: its input, rules, hash, tables and SQL.

The stages, the loader, the rejects and the report see only these objects, so a new
dataset is one new module (registered in ``pipeline.datasets``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from pipeline.config import BatchConfig


@dataclass(frozen=True)
class NearDuplicates:
    """The original's near-duplicate rule for a dataset whose root rows have a summary, source
    message ids and participants (the prepared frame: ``summary``, ``sourceMessageIds``,
    ``participants``), with the SQL that serves it.

    ``cited_sql`` reads every stored root row's key as ``id`` and its source message ids as
    ``sources``, once when a run starts. ``candidates_sql`` reads the stored root rows of the
    keys ``$1`` (those citing a batch's sources) as ``candidate`` (the key), ``summary``,
    ``sourceMessageIds`` and ``people`` (participant ids). ``fold_sql`` notes on each kept row
    what the run's ``pipeline_merges`` rows merged into it, and deletes those rows.
    """

    cited_sql: str
    candidates_sql: str
    fold_sql: str


@dataclass(frozen=True)
class Table:
    """A target table: its DDL and how to build its rows from prepared records.

    ``rows`` returns the table's columns plus ``record`` (the batch position of
    the record each row belongs to). The first table of a dataset is its root;
    the others reference it, so deleting a root row removes the whole record.
    """

    name: str
    ddl: tuple[str, ...]
    rows: Callable[[pl.DataFrame], pl.DataFrame]
    key: str = "id"
    json_columns: tuple[str, ...] = ()
    int16_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dataset:
    """What the shared pipeline needs to know about one kind of input.

    ``prepare(records, type_errors, config, started_at)`` returns the records in
    their target shape (with ``record``, ``id`` and ``content_hash``) and the
    validation failures (``record``, ``field``, ``check``, ``value``); it validates
    only when ``config.validate_first``.
    """

    name: str
    input_dtype: pl.Struct
    prepare: Callable[[pl.DataFrame, pl.DataFrame, BatchConfig, datetime], tuple[pl.DataFrame, pl.DataFrame]]
    tables: tuple[Table, ...]
    csv_json_columns: tuple[str, ...] = ()
    hash_constraint: str = ""
    lenient_fields: tuple[str, ...] = ()
    # Fields held as JSON text, stored as given (``decode``'s ``json_paths``).
    json_paths: tuple[str, ...] = ()
    # The original's near-duplicate rule, where the dataset follows it.
    near_duplicates: NearDuplicates | None = None

    @property
    def fields(self) -> frozenset[str]:
        """The top-level fields of a record (JSON keys, CSV headers)."""
        return frozenset(self.input_dtype.to_schema())
