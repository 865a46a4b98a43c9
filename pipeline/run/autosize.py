"""``--batch-size auto``: pick the batch size during the run from what it measures.

The rule, kept simple so a run is explainable from its report:

- start at ``START`` records;
- after a clean measurement at the current size (see below), double the size while
  throughput improved by more than ``GAIN`` over the previous size and the run's
  peak RSS is under ``GROW_BELOW`` of the memory limit, never above ``CEILING``;
- when throughput did not improve, go back to the previous (faster) size and stay;
- whenever the current RSS passes ``SHRINK_ABOVE`` of the limit, halve (never below
  ``FLOOR``) and stay.

A batch's throughput is its records divided by the time from the previous batch's
commit to its own. The run stages batch N+1 while batch N loads, so that interval
covers both: it is trusted only when batch N and the one staged after it were cut at
the current size, and never for the run's first batch (start-up costs). The size
chosen after batch N applies from the next batch read, N+2.

``BatchSizer`` also replays sizes: a resumed run cuts its committed batches at the
sizes recorded in the ledger, so batch N covers the same records as before.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass, field

START = 10_000
FLOOR = 1_000
CEILING = 200_000
GAIN = 0.05
GROW_BELOW = 0.70
SHRINK_ABOVE = 0.85


@dataclass
class AutoBatchSize:
    """The controller: pure, fed with measurements, holding the size to cut next."""

    memory_limit_mb: float
    size: int = START
    settled: bool = False
    rates: dict[int, float] = field(default_factory=dict)
    previous: int | None = None
    warm: bool = False

    def observe(
        self, rows: int, next_rows: int | None, seconds: float, rss_mb: float, peak_rss_mb: float
    ) -> int:
        """Account one committed batch; return the size to cut from now on."""
        if rss_mb > SHRINK_ABOVE * self.memory_limit_mb:
            if rows <= self.size:  # a batch cut before an earlier halving does not count twice
                self.size, self.settled = max(FLOOR, self.size // 2), True
            return self.size
        clean = self.warm and rows == next_rows == self.size and seconds > 0
        self.warm = True
        if self.settled or not clean:
            return self.size
        rate = rows / seconds
        self.rates[self.size] = rate
        before = self.rates.get(self.previous) if self.previous else None
        if before is not None and rate <= before * (1 + GAIN):
            self.size, self.settled = self.previous or self.size, True
        elif peak_rss_mb >= GROW_BELOW * self.memory_limit_mb or self.size >= CEILING:
            self.settled = True
        else:
            self.previous, self.size = self.size, min(CEILING, self.size * 2)
        return self.size


class BatchSizer:
    """The batch size of each batch of a run: fixed, or replayed then chosen by ``AutoBatchSize``.

    ``size`` is read by ``scan_batches`` when it cuts a batch; the run calls
    ``committed`` after each batch it accounts (and ``skipped`` for each batch a resumed
    run already committed), before the next batch is read.
    """

    def __init__(self, batch_size: int | str, memory_limit_mb: int, recorded: Sequence[int] = ()) -> None:
        self.recorded = list(recorded)
        self.chosen: list[int] = []
        self.auto: AutoBatchSize | None = None
        if isinstance(batch_size, int):
            self.size = batch_size
            return
        # Auto: replay the recorded sizes, then go on choosing from the last one.
        self.auto = AutoBatchSize(memory_limit_mb, size=max(FLOOR, self.recorded[-1]) if recorded else START)
        self.size = self.recorded[0] if self.recorded else self.auto.size

    def skipped(self, number: int) -> None:
        """Batch ``number`` (1-based) was committed by an earlier attempt: cut the next as it was cut."""
        if self.auto:
            self.size = self.recorded[number] if number < len(self.recorded) else self.auto.size

    def committed(self, rows: int, next_rows: int | None, seconds: float, peak_rss_mb: float) -> None:
        """A batch of ``rows`` committed ``seconds`` after the one before; ``next_rows`` were
        staged meanwhile."""
        if self.auto:
            self.size = self.auto.observe(rows, next_rows, seconds, current_rss_mb(), peak_rss_mb)

    def note(self, size: int) -> None:
        """Remember the size a batch was cut at (the report's ``batch_sizes``, changes only)."""
        if not self.chosen or self.chosen[-1] != size:
            self.chosen.append(size)


def current_rss_mb() -> float:
    """Resident memory now (Linux ``/proc``); elsewhere the peak so far."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux from ``VmHWM``, which starts afresh at
    exec: ``ru_maxrss`` also holds the peak of the process that started this one (a
    benchmark holding 7.7 GB made every migration it ran report 7.7 GB)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
