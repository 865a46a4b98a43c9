"""Lanes keep a run's order whatever the timing: random delays in lookups, decisions and COPY,
over many seeds and one to three lanes, leave what one undisturbed process leaves, and no
run hangs. The lane and its gate refuse what would break the order."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import polars as pl
import pytest

from pipeline.config import BatchConfig
from pipeline.datasets import get_dataset
from pipeline.faults import random_delays
from pipeline.run.lane import CommitGate, Lane
from pipeline.run.migrate import migrate
from pipeline.run.staged import StagedBatch
from pipeline.testing import fresh_database
from tests.test_scale_out import decisions, final_state, inputs, one_process  # noqa: F401  (fixtures)

# Long enough for any thread to overtake another, short enough for many runs.
LONGEST_DELAY = 0.004
RUN_TIMEOUT = 240


def delayed_run(server_url: str, name: str, inputs, seed: int, **settings) -> dict:  # noqa: F811
    """The rows stored before, then the export with random delays, in a thread that must end."""
    before, export = inputs
    url = fresh_database(server_url, name)
    migrate([str(before)], BatchConfig(log_progress=False), db_url=url)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with random_delays({"lookup", "decide", "copy", "keys", "commit"}, LONGEST_DELAY, seed):
                migrate([str(export)], BatchConfig(log_progress=False, **settings), db_url=url)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(RUN_TIMEOUT)
    assert not thread.is_alive(), f"the run with seed {seed} hung"
    assert not failure, failure
    return decisions(final_state(url))


@pytest.mark.parametrize(
    ("shards", "seed", "batch_size"),
    [(1, 1, 97), (1, 2, 211), (2, 3, 97), (2, 4, 151), (3, 5, 97), (3, 6, 173)],
)
def test_random_delays_leave_what_one_process_leaves(
    server_url,
    inputs,  # noqa: F811
    one_process,  # noqa: F811
    shards,
    seed,
    batch_size,
):
    settings = {"batch_size": batch_size, "shards": shards, "max_connections": 2 * shards}
    state = delayed_run(server_url, f"lanes_{shards}_{seed}", inputs, seed, **settings)
    assert state == one_process


class RecordingSink:
    """Commits nothing; notes the batch numbers it was given, in order."""

    def __init__(self) -> None:
        self.committed: list[int] = []

    def commit(self, part, decided, known, began):
        self.committed.append(part.number)


def part(number: int) -> StagedBatch:
    return StagedBatch(number, plan=None, rejects=pl.DataFrame(), rows_in=0, ledger={})


def test_a_lane_refuses_a_part_out_of_order():
    sink, known = RecordingSink(), Future()
    known.set_result(None)
    gate = CommitGate(counted=0, ahead=2)
    lane = Lane(0, None, sink, known, gate, get_dataset("memories"), BatchConfig())  # no lookup: none is read
    try:
        lane.submit(part(2), 0.0).committed.result(timeout=10)
        with pytest.raises(ValueError, match="batch 1 submitted after batch 2"):
            lane.submit(part(1), 0.0)
        with pytest.raises(ValueError, match="batch 2 submitted after batch 2"):
            lane.submit(part(2), 0.0)
    finally:
        lane.close()
    assert sink.committed == [2]


def test_the_gate_holds_a_commit_until_the_batch_before_is_counted():
    gate = CommitGate(counted=0, ahead=1)
    assert gate.admit(1)
    admitted: Future[bool] = Future()
    threading.Thread(target=lambda: admitted.set_result(gate.admit(2)), daemon=True).start()
    with pytest.raises(TimeoutError):
        admitted.result(timeout=0.2)
    gate.counted(1)
    assert admitted.result(timeout=5) is True


def test_a_closed_gate_lets_no_commit_begin():
    gate = CommitGate(counted=0, ahead=2)
    waiting: Future[bool] = Future()
    threading.Thread(target=lambda: waiting.set_result(gate.admit(5)), daemon=True).start()
    gate.close()
    assert waiting.result(timeout=5) is False
    assert gate.admit(1) is False
