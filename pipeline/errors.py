"""One exception root for everything the pipeline raises on purpose.

Each subclass carries the context a user needs to act (file, field, run id)
and its message ends with what to do about it. The CLI turns any of them into
one line and an exit code; nothing else should reach a user as a traceback.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: a failure the user can understand and act on."""

    exit_code = 1
    # The run the failure ended, once it was recorded: it can be resumed.
    run_id: str | None = None


class ConfigError(PipelineError):
    """A setting is out of range or contradicts another one."""

    exit_code = 2


class InputError(PipelineError):
    """An input path is missing, unreadable or of an unknown format."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class DatabaseError(PipelineError):
    """The database refused to connect or failed in a way no retry fixes."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class TransientDatabaseError(DatabaseError):
    """A dropped connection, a restarting server, a serialization failure or deadlock: retry."""


class RunStopped(PipelineError):
    """The run stopped on purpose (fail-fast, max errors); earlier batches stay committed."""

    run_id: str

    def __init__(self, message: str, *, run_id: str, result: object | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.result = result


class RunInterrupted(PipelineError):
    """The user interrupted the run (Ctrl-C); committed batches stay, and it can be resumed."""

    exit_code = 130
    run_id: str

    def __init__(self, message: str, *, run_id: str, result: object | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.result = result
