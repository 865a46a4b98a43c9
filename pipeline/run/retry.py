"""Loading a batch through a flaky connection: transient failures are retried with backoff,
and a retry first asks the ledger whether the batch committed as the connection broke."""

from __future__ import annotations

from concurrent.futures import Future
from time import perf_counter, sleep

from loguru import logger

from pipeline.config import BatchConfig
from pipeline.datasets.base import Dataset
from pipeline.dedup.decide import Decision
from pipeline.dedup.known import KnownKeys
from pipeline.errors import DatabaseError, TransientDatabaseError
from pipeline.load.batch import load_batch
from pipeline.load.connection import Connection
from pipeline.load.ledger import BatchOutcome, committed_outcome
from pipeline.run.staged import StagedBatch

RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def load_with_retry(
    loader: Connection,
    dataset: Dataset,
    run_id: str,
    staged: StagedBatch,
    config: BatchConfig,
    began: float,
    decision: Future[Decision],
    known: Future[KnownKeys],
) -> tuple[BatchOutcome, float]:
    """Load one batch, retrying transient database failures with exponential backoff;
    what it did and the seconds it took (waiting for its decision, COPY, rejects, ledger)."""
    loading = perf_counter()
    ledger = {**staged.ledger, "seconds": loading - began, "shard": staged.shard}
    # Read once by the lookup thread: a failure to read them is not retried here.
    known_keys = known.result()
    for attempt, delay in enumerate((*RETRY_DELAYS, None)):
        try:
            if attempt:
                loader.reconnect()
            # A COMMIT can land just as the connection breaks: then the batch is done.
            committed = attempt and committed_outcome(
                loader, run_id, staged.number, staged.shard, staged.lines()
            )
            outcome = committed or load_batch(
                loader,
                dataset,
                run_id,
                staged.number,
                staged.plan,
                staged.rejects,
                config,
                ledger,
                known_keys,
                decision,
            )
            return outcome, perf_counter() - loading
        except TransientDatabaseError as exc:
            if delay is None:
                raise DatabaseError(
                    f"batch {staged.number}: the database kept failing for {sum(RETRY_DELAYS):.0f}s "
                    f"({exc}); check that the server is up",
                    sqlstate=exc.sqlstate,
                ) from exc
            logger.warning("batch {}: {}; retrying in {}s", staged.number, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")
