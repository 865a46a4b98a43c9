"""Work on a flaky connection: transient failures are retried with backoff, and a retry first
asks whether the work was done as the connection broke."""

from __future__ import annotations

from collections.abc import Callable
from time import sleep
from typing import TypeVar

from loguru import logger

from pipeline.errors import DatabaseError, TransientDatabaseError
from pipeline.load.connection import Connection

RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)

Done = TypeVar("Done")


def retried(
    conn: Connection, what: str, done_already: Callable[[], Done | None], attempt: Callable[[], Done]
) -> Done:
    """``attempt()``, again after each transient database failure (``RETRY_DELAYS`` apart, on
    ``conn`` reconnected), unless ``done_already()`` finds that an attempt did it."""
    for number, delay in enumerate((*RETRY_DELAYS, None)):
        try:
            if number:
                conn.reconnect()
                if (done := done_already()) is not None:
                    return done
            return attempt()
        except TransientDatabaseError as exc:
            if delay is None:
                raise DatabaseError(
                    f"{what}: the database kept failing for {sum(RETRY_DELAYS):.0f}s ({exc}); "
                    "check that the server is up",
                    sqlstate=exc.sqlstate,
                ) from exc
            logger.warning("{}: {}; retrying in {}s", what, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")
