"""A batch between its stages and its commit."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import polars as pl

from pipeline.dedup.decide import Decision
from pipeline.dedup.plan import LoadPlan
from pipeline.load.ledger import BatchOutcome


@dataclass(frozen=True)
class InFlight:
    """A batch handed to the loader, with its decision (from the lookup thread) and load."""

    staged: StagedBatch
    decision: Future[Decision]
    loading: Future[tuple[BatchOutcome, float]]
    began: float


@dataclass(frozen=True)
class StagedBatch:
    """A batch ready to load: what to send the database and the records already rejected;
    with shards, the part of a batch that one shard decides and loads."""

    number: int
    plan: LoadPlan
    rejects: pl.DataFrame
    rows_in: int
    ledger: dict
    shard: int = 0

    def lines(self) -> pl.DataFrame:
        """(source_file, source_line) of every record: to load or rejected so far."""
        lines = ["source_file", "source_line"]
        return pl.concat([self.plan.records.select(lines), self.rejects.select(lines)])
