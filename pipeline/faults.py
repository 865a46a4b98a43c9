"""Named points where a test can kill the process, to prove that resume loses nothing.

``PIPELINE_KILL_AT=copy:3`` sends SIGKILL to this process the third time it reaches
the point ``copy``. With ``PIPELINE_KILL_ONCE=PATH`` as well, only the first process to
create the file ``PATH`` is killed (a replaced worker of a cluster then goes on). Unset
(always, outside tests), ``checkpoint`` does nothing.
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
    if _hits[point] != int(_nth or 1):
        return
    if once := os.environ.get("PIPELINE_KILL_ONCE"):
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)
