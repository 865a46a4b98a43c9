"""A batch between its stages and its commit, and the values that pass between the threads of
a lane (``lane``) as it is decided and committed: typed, never positional tuples."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import polars as pl

from pipeline.dedup.decide import Decision
from pipeline.dedup.plan import LoadPlan
from pipeline.load.ledger import BatchOutcome


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


@dataclass(frozen=True)
class Decided:
    """A part's duplicates and key conflicts, decided on the lane's lookup thread before its
    commit, and the seconds the lookup took."""

    decision: Decision
    seconds: float


@dataclass(frozen=True)
class Committed:
    """What a part's commit did: its ``outcome``, the rows it ``stored`` (``record``, ``id``,
    ``content_hash``; none when it was rolled back) and the seconds it took (waiting for its
    decision, COPY, rejects, ledger row)."""

    outcome: BatchOutcome
    stored: pl.DataFrame
    seconds: float


@dataclass(frozen=True)
class Ticket:
    """A part handed to a lane (``Lane.submit``): its decision and its commit, as they come.
    ``began``: when its stages began, for the batch's seconds."""

    part: StagedBatch
    decided: Future[Decided]
    committed: Future[Committed]
    began: float

    def cancel(self) -> None:
        """Drop what has not started: a commit under way finishes (a resume counts it)."""
        self.committed.cancel()
        self.decided.cancel()

    def lookup_seconds(self) -> float:
        """The seconds of its early decision (none when that lookup failed: the commit then
        looked up again, counted in its own seconds)."""
        failed = self.decided.cancelled() or self.decided.exception() is not None
        return 0.0 if failed else self.decided.result().seconds
