"""Named points where a test can kill the process, to prove that resume loses nothing, or
delay a thread, to prove that the order of a run does not hang on timing.

``PIPELINE_KILL_AT=copy:3`` sends SIGKILL to this process the third time it reaches
the point ``copy``. With ``PIPELINE_KILL_ONCE=PATH`` as well, only the first process to
create the file ``PATH`` is killed (a replaced worker of a cluster then goes on).
``random_delays`` (or ``PIPELINE_DELAY_AT=lookup,copy`` with ``PIPELINE_DELAY_SECONDS=0.05``, for
a process of its own) makes each point named sleep a random while, up to those seconds, drawn
from a seeded generator. Unset (always, outside tests), ``checkpoint`` does nothing.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_target = os.environ.get("PIPELINE_KILL_AT", "")
_point, _, _nth = _target.partition(":")
_hits: Counter[str] = Counter()


@dataclass
class _Delays:
    points: frozenset[str]
    longest: float
    draw: random.Random
    lock: threading.Lock

    def sleep(self, point: str) -> None:
        if point in self.points:
            with self.lock:  # one generator, drawn from by every thread in turn
                seconds = self.draw.uniform(0, self.longest)
            time.sleep(seconds)


_delays: _Delays | None = None
if _delayed := os.environ.get("PIPELINE_DELAY_AT"):
    _longest = float(os.environ.get("PIPELINE_DELAY_SECONDS", "0.01"))
    _delays = _Delays(frozenset(_delayed.split(",")), _longest, random.Random(0), threading.Lock())


@contextmanager
def random_delays(points: set[str], longest: float, seed: int) -> Iterator[None]:
    """While the block runs, each ``checkpoint`` of ``points`` sleeps up to ``longest`` seconds."""
    global _delays
    _delays = _Delays(frozenset(points), longest, random.Random(seed), threading.Lock())
    try:
        yield
    finally:
        _delays = None


def checkpoint(point: str) -> None:
    if _delays is not None:
        _delays.sleep(point)
    if point != _point:
        return
    _hits[point] += 1
    if _hits[point] != int(_nth or 1):
        return
    if once := os.environ.get("PIPELINE_KILL_ONCE"):
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)
