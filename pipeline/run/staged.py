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
    """A batch ready to load: what to send the database and the records already rejected."""

    number: int
    plan: LoadPlan
    rejects: pl.DataFrame
    rows_in: int
    ledger: dict
