"""``pipeline`` command line: parse options, make one library call, map errors to exit codes.

One module per command (``migrate`` and ``replay``, ``runs`` and ``rejects``, ``bench``,
``db``) over what they share (``common``). Exit codes: 0 the run completed (rejects are not
failures), 1 it stopped (fail-fast, max errors, database failure), 2 usage errors, 130
interrupted. Errors are one line on stderr; no traceback reaches the user. Standard output
carries only what was asked for (a summary, a table, JSON); progress and messages go to stderr.
"""

from __future__ import annotations

import sys

import typer

from pipeline.cli import bench, db, inspect, migrate  # noqa: F401  (each registers its commands)
from pipeline.cli.common import app

__all__ = ["app", "main"]


def _quiet_interrupt(unraisable) -> None:
    """Python prints a Ctrl-C that lands where it cannot be raised (in a garbage-collector
    callback of Dask's, say) as an ignored exception with its traceback; the run has its own
    way to stop, so such an interrupt is dropped."""
    if not issubclass(unraisable.exc_type, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def main() -> None:
    sys.unraisablehook = _quiet_interrupt
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # an option typer refused: one line, like every other error
        context = getattr(exc, "ctx", None)
        if str(exc):  # no message: the help was printed instead
            command = context.command_path if context else "pipeline"
            typer.echo(f"error: {exc.format_message()} (see `{command} -h`)", err=True)
        code = getattr(exc, "exit_code", 2)
    except typer.Abort:
        code = 130
    sys.exit(code or 0)
