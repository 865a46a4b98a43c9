"""Named points where a test can kill the process, to prove that resume loses nothing.

``PIPELINE_KILL_AT=copy:3`` sends SIGKILL to this process the third time it reaches
the point ``copy``. Unset (always, outside tests), ``checkpoint`` does nothing.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_target = os.environ.get("PIPELINE_KILL_AT", "")
_point, _, _nth = _target.partition(":")
_hits: Counter[str] = Counter()


def checkpoint(point: str) -> None:
    if point != _point:
        return
    _hits[point] += 1
    if _hits[point] == int(_nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
