"""What every command shares: the application, the options several take, one-line errors
and exit codes, logging, and how a run is reported."""

from __future__ import annotations

import json
import logging
import shlex
import sys
import warnings
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TextIO

import typer
from loguru import logger

from pipeline.datasets import dataset_names
from pipeline.errors import PipelineError, RunInterrupted, RunStopped
from pipeline.load.server import redact, redact_url
from pipeline.run.progress import is_progress, json_line
from pipeline.run.report import check_writable

HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings=HELP,
    help="Migrate legacy memory exports into PostgreSQL, column-wise.",
)
db_app = typer.Typer(
    no_args_is_help=True,
    context_settings=HELP,
    help="Manage the embedded PostgreSQL (its data lives in $PIPELINE_HOME, else the user data directory).",
)
app.add_typer(db_app, name="db")

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="postgresql:// URL (default: $PIPELINE_DB_URL, else the embedded server)"),
]
# The members are the datasets registered at runtime, which no static type can list.
Dataset = StrEnum("Dataset", {name: name for name in dataset_names()})  # type: ignore[misc]


Mode = StrEnum("Mode", ["dedup", "standard"])
ReportFormat = StrEnum("ReportFormat", ["table", "json"])
Format = StrEnum("Format", ["table", "csv", "json", "parquet"])
RunsFormat = StrEnum("RunsFormat", ["table", "csv", "json"])
LogFormat = StrEnum("LogFormat", ["text", "json"])


def _version(shown: bool) -> None:
    if shown:
        typer.echo(f"pipeline {version('memory-pipeline')}")
        raise typer.Exit()


@app.callback()
def main_options(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Migrate legacy memory exports into PostgreSQL, column-wise."""


def parse_batch_size(value: str) -> int | Literal["auto"]:
    """``auto`` or a number (``25000``, ``25_000``, ``25,000``); anything else is a usage error."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return int(value.replace(",", "").replace("_", ""))
    except ValueError:
        fail(f"--batch-size must be a positive number of records or auto, got {value!r}", 2)


def guarded(action) -> None:
    try:
        action()
    except PipelineError as exc:
        fail(str(exc), exc.exit_code)


def report_run(run, report: str | None, quiet: bool, json_out: bool, db: str | None) -> None:
    """Run a migration; report it, or say in one line why it stopped (exit 1) or failed."""
    try:
        if report is not None and report != "-":
            check_writable(Path(report))
        result = run()
    except RunStopped as stop:
        emit(stop.result, report, quiet, json_out)
        fail(str(stop), 1)
    except RunInterrupted as interrupted:
        # A dry run's answer is what it decided so far; it has nothing to resume.
        if getattr(interrupted.result, "dry_run", False):
            emit(interrupted.result, report, quiet, json_out)
            fail(str(interrupted), interrupted.exit_code)
        emit(interrupted.result, report, quiet=True, json_out=json_out)
        again = resume_command(interrupted.run_id, db)
        fail(f"{interrupted}; resume it with {again}", interrupted.exit_code)
    except PipelineError as exc:
        again = f"; then resume the run with {resume_command(exc.run_id, db)}" if exc.run_id else ""
        fail(f"{exc}{again}", exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted before the run started: nothing was written", 130)
    if not emit(result, report, quiet, json_out):
        raise typer.Exit(1)


def resume_command(run_id: str, db: str | None) -> str:
    """The command resuming ``run_id``; the URL's user name and password stay hidden: the user
    puts them back."""
    if not db:
        return f"`pipeline migrate --resume {run_id}`"
    shown = redact_url(db)
    put_back = " (with your credentials in place of ***)" if shown != db else ""
    return f"`pipeline migrate --resume {run_id} --db {shlex.quote(shown)}`{put_back}"


def emit(result, report: str | None, quiet: bool, json_out: bool) -> bool:
    """Print the result as asked, then write the report; False when it could not be written
    (said in one line after the summary, which is never lost to it)."""
    if result is not None and json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    elif result is not None and not quiet:
        typer.echo(result.summary())
    try:
        if result is not None and report is not None and report != "-":
            result.write_json(Path(report))
    except OSError as exc:
        why = f"{report} ({exc.strerror or exc}); the run is recorded all the same: `pipeline runs`"
        typer.echo(f"error: cannot write the report to {redact(why)}", err=True)
        return False
    return True


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(code)


def _write_redacted(line: str) -> None:
    sys.stderr.write(redact(line))


def configure_logging(quiet: bool, as_json: bool = False, log_file: Path | None = None) -> None:
    """Log lines on stderr, as text or (``as_json``) one JSON object a line (``json_line``),
    and as JSON lines to ``log_file`` as well. Progress events go to the progress display."""
    logger.remove()
    level = "ERROR" if quiet else "INFO"
    # Every line passes through ``redact``: no log line shows a password.
    if as_json:
        logger.add(_JsonLines(sys.stderr).write, level=level, filter=_not_progress)
        _route_other_logging()
    else:
        text = "{time:HH:mm:ss} {level} {message}"
        logger.add(_write_redacted, level=level, format=text, filter=_plain)
    if log_file is not None:
        check_writable(log_file)
        logger.add(_JsonLines(log_file.open("a", encoding="utf-8")).write, level="INFO")
    logger.enable("pipeline")


class _JsonLines:
    """Log records written to ``out`` as JSON lines, passwords hidden."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, message: Any) -> None:
        self._out.write(redact(json_line(message.record)))
        self._out.flush()


def _plain(record: Any) -> bool:
    """A message for people: events are for machines (``--log-format json``, ``--log-file``)."""
    return "event" not in record["extra"]


def _not_progress(record: Any) -> bool:
    return not is_progress(record)  # drawn by the progress display (``progress_display``)


def _route_other_logging() -> None:
    """Python warnings and the standard logging of libraries (Dask's) as log events too."""

    class ToLoguru(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logger.bind(event="library_log", logger=record.name).log(record.levelname, record.getMessage())

    logging.basicConfig(handlers=[ToLoguru()], level=logging.WARNING, force=True)
    warnings.showwarning = lambda message, category, *_: logger.bind(
        event="library_warning", category=category.__name__
    ).warning(str(message))
