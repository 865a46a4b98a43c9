"""One batch's transaction: its rejects, its decision, its COPY, its merge notes and its
ledger row commit together or not at all."""

from __future__ import annotations

from concurrent.futures import Future

import polars as pl
from loguru import logger

from pipeline.config import BatchConfig
from pipeline.datasets.base import Dataset
from pipeline.dedup.decide import Decision, decide, decide_against, without_refused
from pipeline.dedup.known import KnownKeys
from pipeline.dedup.plan import LoadPlan, plan_load
from pipeline.errors import DatabaseError
from pipeline.faults import checkpoint
from pipeline.load.connection import Connection
from pipeline.load.copy import ROW_FAILURE_SCHEMA, copy_tables, row_rejects
from pipeline.load.ledger import BatchOutcome, ingest_rejects, merges_arrow, record_batch
from pipeline.load.lookups import stored_rows_now


def load_batch(
    conn: Connection,
    dataset: Dataset,
    run_id: str,
    batch_no: int,
    plan: LoadPlan,
    rejects: pl.DataFrame,
    config: BatchConfig,
    ledger: dict,
    known: KnownKeys,
    decision: Future[Decision] | None = None,
) -> BatchOutcome:
    """Load ``plan.records`` and write ``rejects`` in one transaction; return what loaded.

    ``decision``, when given, yields the batch's duplicates and key conflicts, decided
    beforehand (after ``stored_rows`` on another connection); without it, or when it
    failed, they are looked up and decided here (every record by key; near-duplicate
    candidates by the sources ``known`` rows cite). Without
    ``config.continue_on_error``, a batch in which the database refused a record is
    rolled back.
    """
    try:
        with conn.transaction(f"loading batch {batch_no}"):
            # Parse and validation rejects need no decision: they go first, while the
            # decision may still be on its way from the lookup thread.
            ingest_rejects(conn, run_id, rejects)
            decided = _decision(conn, dataset, plan, config, known, decision)
            checkpoint("keys")
            decided, failures = _copy_decided(conn, dataset, plan, config, decided)
            if not decided.merges.is_empty():
                conn.ingest("pipeline_merges", merges_arrow(run_id, batch_no, decided.merges))
            decided_rejects = pl.concat([decided.refused.drop("record"), row_rejects(plan.records, failures)])
            all_rejects = pl.concat([rejects, decided_rejects])
            if not config.continue_on_error and all_rejects.filter(pl.col("category") == "database").height:
                raise _RolledBack(all_rejects)
            loaded = decided.kept.height
            ingest_rejects(conn, run_id, decided_rejects)
            checkpoint("rejects")
            record_batch(conn, run_id, batch_no, ledger, loaded)
            checkpoint("commit")
        checkpoint("committed")
    except _RolledBack as rolled_back:
        return BatchOutcome(loaded=0, rejects=rolled_back.rejects, committed=False)
    return BatchOutcome(loaded=loaded, rejects=all_rejects)


def _copy_decided(
    conn: Connection, dataset: Dataset, plan: LoadPlan, config: BatchConfig, decided: Decision
) -> tuple[Decision, pl.DataFrame]:
    """Copy the records ``decided`` keeps. When the server refuses some, the batch is decided
    again without them, as one record at a time would have been: a later copy of a refused
    record, or a record reusing its id, is then kept, and a near duplicate of it compared
    with the others. When that changes what is kept, the copy is undone and done again.

    Returns the final decision and every refused row (``copy.ROW_FAILURE_SCHEMA``)."""
    refusals = [pl.DataFrame(schema=ROW_FAILURE_SCHEMA)]
    while True:
        conn.execute("SAVEPOINT pipeline_batch_rows")
        failures = copy_tables(conn, dataset, plan, decided.refused["record"])
        if failures.is_empty():
            break
        refusals.append(failures)
        # Usually no refused record depends on them: the decision stands without them.
        if (unaffected := without_refused(decided, plan.records, failures)) is not None:
            decided = unaffected
            break
        plan = plan_load(plan.records.join(failures, on="record", how="anti"), dataset, config)
        again = decide(dataset, plan, config, decided.found)
        copied = decided.kept.join(failures, on="record", how="anti")
        unchanged = again.kept["record"].sort().equals(copied["record"].sort())
        decided = again
        if unchanged:
            break
        conn.execute("ROLLBACK TO SAVEPOINT pipeline_batch_rows")
    return decided, pl.concat(refusals)


def _decision(
    conn: Connection,
    dataset: Dataset,
    plan: LoadPlan,
    config: BatchConfig,
    known: KnownKeys,
    decision: Future[Decision] | None,
) -> Decision:
    if decision is not None:
        try:
            return decision.result()
        except DatabaseError as exc:
            logger.debug("the early lookup failed ({}); looking up again in the batch", exc)
    return decide_against(dataset, plan, config, *stored_rows_now(conn, dataset, plan, known, every_key=True))


class _RolledBack(Exception):
    """Fail-fast: the database refused a record, so the batch is not committed."""

    def __init__(self, rejects: pl.DataFrame) -> None:
        super().__init__("batch rolled back")
        self.rejects = rejects
