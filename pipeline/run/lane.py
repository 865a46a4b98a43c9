"""A lane: one stream of batch parts (a shard's), decided and committed in input order.

A lane owns two threads, each with its own connection: the **lookup** thread decides each part
against the stored rows (``commit.decide_early``) while the part before it copies, and the
**loader** thread commits each part (its ``Sink``), waiting for its decision first. Both run
their work in the order it was submitted, one item at a time, so ``submit`` alone orders the
run: the decision of part N+1 after that of part N, which it reads, and after the commit of
part N, whose stored rows it needs (``decide_early`` waits for them); the commit of part N+1
after that of part N and after its own decision. No wait runs the other way, so a lane cannot
deadlock: a decision never waits for a later commit. Parts must come in increasing batch
number; a lane refuses one that does not. A commit also waits for the run's ``CommitGate``:
the run commits only so far ahead of the batches it has counted.

The lane holds none of the driving process's state: the known keys it decides against come as
a future (read once, shared by the lanes of a run), and where its parts go is its ``Sink``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Protocol, TypeVar

from pipeline.config import BatchConfig
from pipeline.datasets.base import Dataset
from pipeline.dedup.known import KnownKeys
from pipeline.load.connection import Connection, connected
from pipeline.load.lookups import known_keys, stored_tables_exist
from pipeline.run.commit import DatabaseSink, DryRunSink, decide_early
from pipeline.run.dry_store import DryRunStore
from pipeline.run.rejects_file import RejectsFile
from pipeline.run.staged import Committed, Decided, StagedBatch, Ticket

Read = TypeVar("Read")


class Sink(Protocol):
    """Where a lane's decided parts go, one at a time, in order."""

    def commit(
        self, part: StagedBatch, decided: Future[Decided], known: KnownKeys, began: float
    ) -> Committed: ...


class CommitGate:
    """How far ahead of the run's count the lanes commit: batch N commits once batch N -
    ``ahead`` is counted (``counted``), so a run that stops at a failure it counts (fail-fast,
    ``--max-errors``) commits nothing after it. Closed, it lets no commit begin."""

    def __init__(self, counted: int, ahead: int) -> None:
        self._counted = counted
        self.ahead = ahead
        self._closed = False
        self._changed = threading.Condition()

    def counted(self, number: int) -> None:
        with self._changed:
            self._counted = max(self._counted, number)
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def admit(self, number: int) -> bool:
        """Wait until batch ``number`` may commit: True, or False once the gate is closed."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or number - self.ahead <= self._counted)
            return not self._closed


class Lane:
    """One stream of parts: ``submit`` each, in increasing batch number; ``close`` when done."""

    def __init__(
        self,
        number: int,
        lookup: Connection,
        sink: Sink,
        known: Future[KnownKeys],
        gate: CommitGate,
        dataset: Dataset,
        config: BatchConfig,
        dry_store: DryRunStore | None = None,
    ) -> None:
        self.number = number
        self._lookup = lookup
        self._sink = sink
        self._known = known
        self._gate = gate
        self._dry_store = dry_store
        self._dataset = dataset
        self._config = config
        self._deciding = ThreadPoolExecutor(1, f"lookup-{number}")
        self._committing = ThreadPoolExecutor(1, f"loader-{number}")
        self._last: Ticket | None = None

    def submit(self, part: StagedBatch, began: float) -> Ticket:
        """Decide and commit ``part`` after every part submitted before it; ``began``: when
        its stages began."""
        if self._last is not None and part.number <= self._last.part.number:
            raise ValueError(
                f"lane {self.number}: batch {part.number} submitted after batch {self._last.part.number}"
            )
        decided = self._deciding.submit(self._decide, part, self._last)
        committed = self._committing.submit(self._commit, part, decided, began)
        self._last = Ticket(part, decided, committed, began)
        return self._last

    def read(self, reading: Callable[[Connection], Read]) -> Future[Read]:
        """``reading`` on the lane's lookup connection, after the decisions submitted so far."""
        return self._deciding.submit(reading, self._lookup)

    def close(self) -> None:
        """Wait for the work submitted (commits first: the decisions they wait for go on)."""
        self._committing.shutdown(wait=True)
        self._deciding.shutdown(wait=True)

    def _decide(self, part: StagedBatch, previous: Ticket | None) -> Decided:
        known = self._known.result()
        return decide_early(self._lookup, known, self._dataset, self._config, part, previous, self._dry_store)

    def _commit(self, part: StagedBatch, decided: Future[Decided], began: float) -> Committed:
        if not self._gate.admit(part.number):
            raise CancelledError(f"batch {part.number} was not loaded: the run stopped before it")
        return self._sink.commit(part, decided, self._known.result(), began)


@contextmanager
def opened_lanes(
    run: Connection,
    dataset: Dataset,
    config: BatchConfig,
    run_id: str,
    gate: CommitGate,
    dry_rejects: RejectsFile | None = None,
) -> Iterator[list[Lane]]:
    """``config.shards`` lanes committing into the database, each on two connections of its
    own, but the first, which loads on the run's connection (``Connection`` serializes its
    transactions: the run records its ledger rows on it too). With ``dry_rejects`` (a dry run)
    the lanes write their rejects there and nothing to the database: they open only their
    lookup connections, read-only, reading one snapshot of the database that a connection of
    its own exports (``Connection.exported_snapshot``). The stored rows' keys are read once,
    on the first lane's lookup connection, while the first batches are prepared (a million
    stored rows take two seconds). On the way out, the gate closes and the lanes finish the
    work begun before their connections close."""
    known: Future[KnownKeys] = Future()
    lanes: list[Lane] = []
    store = DryRunStore() if dry_rejects is not None else None
    with ExitStack() as stack:
        # A dry run's lanes read the database as one snapshot, whenever each decides.
        snapshot = (
            stack.enter_context(stack.enter_context(connected(run.url)).exported_snapshot())
            if store
            else None
        )
        for number in range(config.shards):
            lookup = stack.enter_context(connected(run.url))
            sink: Sink
            if dry_rejects is not None and store is not None:
                lookup.read_only(snapshot)
                sink = DryRunSink(dry_rejects, run_id, store)
            else:
                loader = run if number == 0 else stack.enter_context(connected(run.url))
                sink = DatabaseSink(loader, dataset, run_id, config)
            lanes.append(Lane(number, lookup, sink, known, gate, dataset, config, store))
            stack.callback(lanes[-1].close)
        stack.callback(gate.close)
        lanes[0].read(lambda lookup: _resolve(known, lambda: _known_keys(lookup, dataset, store)))
        yield lanes


def _known_keys(lookup: Connection, dataset: Dataset, dry_store: DryRunStore | None) -> KnownKeys:
    """The stored rows' keys; none where the dataset's tables do not exist (a dry run on a
    fresh database decides against nothing, and tells its store so)."""
    if dry_store is not None and not stored_tables_exist(lookup, dataset):
        dry_store.tables_exist = False
        return KnownKeys()
    return known_keys(lookup, dataset)


def _resolve(future: Future[Read], reading: Callable[[], Read]) -> None:
    try:
        future.set_result(reading())
    except BaseException as exc:
        future.set_exception(exc)
