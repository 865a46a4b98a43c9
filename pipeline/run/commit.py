"""One lane's part of a batch, from its plan to its commit, in the order it happens.

1. **Decided early** (``decide_early``, on the lane's lookup connection, while the part before
   it copies): what stored rows say about the part (``load.lookups``), the records the part
   before keeps taken as stored as soon as that part is decided; once it commits, decided
   again if its COPY refused a record it kept. The rows it stored join the known keys.
2. **Committed** (``DatabaseSink.commit``, on the lane's loader connection), in one
   transaction: the parse and validation rejects; the decision (looked up again here if the
   early lookup failed); the COPY of the kept rows, decided again without any row the server
   refused; the merge notes, the decision's rejects and the ledger row. A transient failure
   retries the transaction (``retry``), asking the ledger first whether it committed.

``load`` holds the SQL and COPY these steps use, ``dedup`` the decisions (pure frames).
"""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass
from time import perf_counter

import polars as pl
from loguru import logger

from pipeline.config import BatchConfig
from pipeline.datasets.base import Dataset
from pipeline.dedup.decide import Decision, decide, decide_against, without_refused
from pipeline.dedup.known import KnownKeys
from pipeline.dedup.plan import LoadPlan, cited_by, loaded_records, plan_load
from pipeline.errors import DatabaseError
from pipeline.faults import checkpoint
from pipeline.load.connection import Connection
from pipeline.load.copy import ROW_FAILURE_SCHEMA, copy_tables, row_rejects
from pipeline.load.ledger import BatchOutcome, committed_outcome, ingest_merges, ingest_rejects, record_batch
from pipeline.load.lookups import nothing_stored, stored_rows, stored_rows_now
from pipeline.run.dry_store import DryRunStore
from pipeline.run.rejects_file import RejectsFile
from pipeline.run.retry import retried
from pipeline.run.staged import Committed, Decided, StagedBatch, Ticket


def decide_early(
    lookup: Connection,
    known: KnownKeys,
    dataset: Dataset,
    config: BatchConfig,
    part: StagedBatch,
    previous: Ticket | None,
    dry_store: DryRunStore | None = None,
) -> Decided:
    """A part's duplicates and key conflicts, decided while the ``previous`` part of its lane
    loads: against the rows committed now (in a dry run, the rows it kept too: ``dry_store``)
    and the records ``previous`` keeps. A row found twice (committed meanwhile) counts once.
    The rows ``previous`` stored join ``known``, for the parts after this one."""
    began = perf_counter()
    checkpoint("lookup")
    try:
        if dry_store is not None and not dry_store.tables_exist:
            keys, candidates = nothing_stored(dataset, part.plan)
        else:
            keys, candidates = stored_rows(lookup, dataset, part.plan, known)
        if dry_store is not None:
            keys, candidates = dry_store.matches(part.plan, keys, candidates)
    except DatabaseError:
        with suppress(DatabaseError):
            lookup.reconnect()
        if previous is not None:
            _note_stored(known, previous)
        raise
    checkpoint("decide")
    if previous is None:
        return Decided(decide_against(dataset, part.plan, config, keys, candidates), perf_counter() - began)
    # The previous part was decided on this thread: done, or failed (then its commit decided).
    kept = None if previous.decided.exception() else previous.decided.result().decision.kept
    decision = None
    if kept is not None:
        decision = decide_against(dataset, part.plan, config, keys, candidates, (previous.part.plan, kept))
    waiting = perf_counter()
    stored = _note_stored(known, previous)
    began += perf_counter() - waiting
    if decision is None or kept is None or not stored["record"].sort().equals(kept["record"].sort()):
        decision = decide_against(dataset, part.plan, config, keys, candidates, (previous.part.plan, stored))
    return Decided(decision, perf_counter() - began)


def _note_stored(known: KnownKeys, ticket: Ticket) -> pl.DataFrame:
    """The rows a part stored, once its commit is done, added to the ``known`` keys."""
    stored = ticket.committed.result().stored
    known.add(stored, cited_by(ticket.part.plan, stored))
    return stored


@dataclass(frozen=True)
class DatabaseSink:
    """Where a lane's parts go: committed, each in one transaction, on the lane's ``loader``
    connection, under run ``run_id``."""

    loader: Connection
    dataset: Dataset
    run_id: str
    config: BatchConfig

    def commit(
        self, part: StagedBatch, decided: Future[Decided], known: KnownKeys, began: float
    ) -> Committed:
        loading = perf_counter()
        ledger = {**part.ledger, "seconds": loading - began, "shard": part.shard}
        outcome = retried(
            self.loader,
            f"batch {part.number}",
            # A COMMIT can land just as the connection breaks: then the part is done.
            lambda: committed_outcome(self.loader, self.run_id, part.number, part.shard, part.lines()),
            lambda: self._transaction(part, decided, known, ledger),
        )
        stored = loaded_records(part.plan, outcome.rejects)
        return Committed(outcome, stored if outcome.committed else stored.clear(), perf_counter() - loading)

    def _transaction(
        self, part: StagedBatch, decided: Future[Decided], known: KnownKeys, ledger: dict
    ) -> BatchOutcome:
        """Load the part's kept records and write its rejects in one transaction. Without
        ``continue_on_error``, a part in which the database refused a record is rolled back."""
        conn, run_id = self.loader, self.run_id
        try:
            with conn.transaction(f"loading batch {part.number}"):
                # Parse and validation rejects need no decision: they go first, while the
                # decision may still be on its way from the lookup thread.
                ingest_rejects(conn, run_id, part.rejects)
                decision = self._decision(part.plan, decided, known)
                checkpoint("keys")
                decision, failures = self._copied(part.plan, decision)
                ingest_merges(conn, run_id, part.number, decision.merges)
                refused_rows = row_rejects(part.plan.records, failures)
                refused = pl.concat([decision.refused.drop("record"), refused_rows])
                rejects = pl.concat([part.rejects, refused])
                # In standard mode the decision's key conflicts are the database's refusals too.
                refused_by_database = rejects.filter(pl.col("category") == "database").height
                if not self.config.continue_on_error and refused_by_database:
                    raise _RolledBack(rejects)
                ingest_rejects(conn, run_id, refused)
                checkpoint("rejects")
                record_batch(conn, run_id, part.number, ledger, decision.kept.height)
                checkpoint("commit")
            checkpoint("committed")
        except _RolledBack as rolled_back:
            return BatchOutcome(loaded=0, rejects=rolled_back.rejects, committed=False)
        return BatchOutcome(loaded=decision.kept.height, rejects=rejects)

    def _decision(self, plan: LoadPlan, decided: Future[Decided], known: KnownKeys) -> Decision:
        """The early decision, or, when its lookup failed, one looked up in this transaction
        (every record by key; near-duplicate candidates by the sources ``known`` rows cite)."""
        try:
            return decided.result().decision
        except DatabaseError as exc:
            logger.debug("the early lookup failed ({}); looking up again in the batch", exc)
        found = stored_rows_now(self.loader, self.dataset, plan, known, every_key=True)
        return decide_against(self.dataset, plan, self.config, *found)

    def _copied(self, plan: LoadPlan, decision: Decision) -> tuple[Decision, pl.DataFrame]:
        """Copy the records ``decision`` keeps. When the server refuses some, the part is
        decided again without them, as one record at a time would have been: a later copy of
        a refused record, or a record reusing its id, is then kept, and a near duplicate of it
        compared with the others. When that changes what is kept, the copy is undone and done
        again. Returns the final decision and every refused row (``copy.ROW_FAILURE_SCHEMA``)."""
        conn, refusals = self.loader, [pl.DataFrame(schema=ROW_FAILURE_SCHEMA)]
        while True:
            conn.execute("SAVEPOINT pipeline_batch_rows")
            failures = copy_tables(conn, self.dataset, plan, decision.refused["record"])
            if failures.is_empty():
                break
            refusals.append(failures)
            # Usually no refused record depends on them: the decision stands without them.
            if (unaffected := without_refused(decision, plan.records, failures)) is not None:
                decision = unaffected
                break
            plan = plan_load(plan.records.join(failures, on="record", how="anti"), self.dataset, self.config)
            again = decide(self.dataset, plan, self.config, decision.found)
            copied = decision.kept.join(failures, on="record", how="anti")
            unchanged = again.kept["record"].sort().equals(copied["record"].sort())
            decision = again
            if unchanged:
                break
            conn.execute("ROLLBACK TO SAVEPOINT pipeline_batch_rows")
        return decision, pl.concat(refusals)


@dataclass(frozen=True)
class DryRunSink:
    """Where a dry run's parts go: decided as a real run decides them, nothing written to the
    database, their rejects to ``rejects``. What the decision keeps is taken as stored: what
    only the server could refuse (a check, a foreign key) is not checked."""

    rejects: RejectsFile
    run_id: str
    store: DryRunStore

    def commit(
        self, part: StagedBatch, decided: Future[Decided], known: KnownKeys, began: float
    ) -> Committed:
        decision = decided.result().decision  # a failed lookup ends a dry run: nothing to retry
        rejects = pl.concat([part.rejects, decision.refused.drop("record")])
        self.rejects.write(self.run_id, rejects)
        checkpoint("decided")
        outcome = BatchOutcome(loaded=decision.kept.height, rejects=rejects)
        kept = loaded_records(part.plan, rejects)
        self.store.add(part.plan, kept)
        return Committed(outcome, kept, perf_counter() - began)


class _RolledBack(Exception):
    """Fail-fast: the database refused a record, so the part is not committed."""

    def __init__(self, rejects: pl.DataFrame) -> None:
        super().__init__("batch rolled back")
        self.rejects = rejects
