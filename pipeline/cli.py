"""``pipeline`` command line: parse options, make one library call, map errors to exit codes.

Exit codes: 0 the run completed (rejects are not failures), 1 it stopped
(fail-fast, max errors, database failure), 2 usage errors. Errors are one line
on stderr; no traceback reaches the user.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from loguru import logger

from pipeline.config import BatchConfig
from pipeline.database import redact, resolve_url, start_embedded, stop_embedded
from pipeline.errors import PipelineError, RunStopped
from pipeline.runner import migrate as run_migration

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Migrate legacy memory exports into PostgreSQL, column-wise.",
)
db_app = typer.Typer(no_args_is_help=True, help="Manage the embedded PostgreSQL under ./.pipeline/.")
app.add_typer(db_app, name="db")

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="postgresql:// URL (default: $PIPELINE_DB_URL, else embedded)"),
]


class Mode(StrEnum):
    dedup = "dedup"
    standard = "standard"


@app.command()
def migrate(
    paths: Annotated[list[str], typer.Argument(help="input files or globs (.jsonl, .json, .csv, .parquet)")],
    dataset: Annotated[str, typer.Option(help="dataset plug-in")] = "memories",
    self_name: Annotated[
        str, typer.Option(help="messages: sender of outgoing messages without a name")
    ] = "Me",
    db: DbOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="records per batch and transaction")] = 25_000,
    mode: Annotated[
        Mode, typer.Option(help="dedup: skip duplicates; standard: the database refuses them")
    ] = Mode.dedup,
    no_validate_first: Annotated[
        bool, typer.Option("--no-validate-first", help="skip pandera; the database judges")
    ] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="stop at the first failed record")] = False,
    max_errors: Annotated[int | None, typer.Option(min=0, help="stop once more records failed")] = None,
    similarity_threshold: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.7,
    run_id: Annotated[str | None, typer.Option(help="name the run (default: generated)")] = None,
    resume: Annotated[
        str | None, typer.Option(help="continue this stopped run after its last committed batch")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="write the full JSON report here")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print errors only")] = False,
) -> None:
    """Migrate PATHS into the database and print a summary of the run."""
    _configure_logging(quiet)
    if fail_fast and max_errors is not None:
        _fail("--fail-fast and --max-errors cannot be combined", 2)
    try:
        config = BatchConfig(
            batch_size=batch_size,
            continue_on_error=not fail_fast,
            validate_first=not no_validate_first,
            log_progress=not quiet,
            mode=mode.value,
            max_errors=max_errors,
            similarity_threshold=similarity_threshold,
            dataset=dataset,
            self_name=self_name,
        )
        result = run_migration(paths, config, db_url=db, run_id=run_id, resume=resume)
    except RunStopped as stop:
        _emit(stop.result, report, quiet)
        _fail(str(stop), 1)
    except PipelineError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted: batches committed so far stay in the database", 130)
    _emit(result, report, quiet)


@app.command()
def runs(db: DbOption = None) -> None:
    """List runs with status, counts and duration."""
    from pipeline.loader import Loader

    _configure_logging(quiet=True)
    try:
        loader = Loader(resolve_url(db))
        table = loader.execute(
            "SELECT run_id, status, started_at, finished_at, result FROM pipeline_runs ORDER BY started_at"
        )
        loader.close()
    except PipelineError as exc:
        _fail(str(exc), exc.exit_code)
    for row in table.to_pylist() if table is not None else []:
        result = json.loads(row["result"] or "{}")
        typer.echo(
            f"{row['run_id']}  {row['status']:<9}  {row['started_at']:%Y-%m-%d %H:%M:%S}  "
            f"processed {result.get('processed', 0):>10,}  loaded {result.get('successful', 0):>10,}  "
            f"failed {result.get('failed', 0):>8,}  {result.get('seconds', 0):>8.1f}s"
        )


@db_app.command("start")
def db_start() -> None:
    """Start the embedded server (it keeps running between commands)."""
    _guarded(lambda: typer.echo(redact(start_embedded())))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server."""
    _guarded(lambda: typer.echo("stopped" if stop_embedded() else "not running"))


@db_app.command("url")
def db_url() -> None:
    """Print the URL of the database the commands use (starting the embedded one if needed)."""
    _guarded(lambda: typer.echo(redact(resolve_url())))


def _guarded(action) -> None:
    try:
        action()
    except PipelineError as exc:
        _fail(str(exc), exc.exit_code)


def _emit(result, report: Path | None, quiet: bool) -> None:
    if result is None:
        return
    if report is not None:
        result.write_json(report)
    if not quiet:
        typer.echo(result.summary())


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(code)


def _configure_logging(quiet: bool) -> None:
    logger.remove()
    logger.add(sys.stderr, level="ERROR" if quiet else "INFO", format="{time:HH:mm:ss} {level} {message}")
    logger.enable("pipeline")


def main() -> None:
    app()
