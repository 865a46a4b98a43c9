"""Datasets are plug-ins: each module describes its input, rules, hash and tables.

The runner, loader, rejects and report only see the ``Dataset`` and ``Table``
objects defined here, so a new dataset is one new module registered below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from pipeline.config import BatchConfig
from pipeline.errors import ConfigError


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
    # The original's near-duplicate rule; the root table has summary, source_message_ids
    # and participants, and the prepared frame summary, sourceMessageIds and participants.
    near_duplicates: bool = False

    @property
    def fields(self) -> frozenset[str]:
        """The top-level fields of a record (JSON keys, CSV headers)."""
        return frozenset(self.input_dtype.to_schema())


def all_datasets() -> tuple[Dataset, ...]:
    from pipeline.datasets import memories, messages

    return memories.DATASET, messages.DATASET


def dataset_names() -> list[str]:
    return [d.name for d in all_datasets()]


def get_dataset(name: str) -> Dataset:
    registry = {d.name: d for d in all_datasets()}
    if name not in registry:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(registry))}")
    return registry[name]
