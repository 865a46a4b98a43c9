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

from pipeline import bench as bench_sizes
from pipeline import inspector
from pipeline.config import BatchConfig
from pipeline.database import redact, resolve_url, start_embedded, stop_embedded
from pipeline.errors import PipelineError, RunStopped
from pipeline.replay import replay as replay_rejects
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
    batch_size: Annotated[
        str, typer.Option(help="records per batch and transaction, or auto (chosen during the run)")
    ] = "20000",
    memory_limit: Annotated[
        int, typer.Option(min=64, help="MB of memory --batch-size auto stays under")
    ] = 1024,
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
            batch_size=_batch_size(batch_size),
            memory_limit_mb=memory_limit,
            continue_on_error=not fail_fast,
            validate_first=not no_validate_first,
            log_progress=not quiet,
            mode=mode.value,
            max_errors=max_errors,
            similarity_threshold=similarity_threshold,
            dataset=dataset,
            self_name=self_name,
        )
    except PipelineError as exc:
        _fail(str(exc), exc.exit_code)
    _report_run(lambda: run_migration(paths, config, db_url=db, run_id=run_id, resume=resume), report, quiet)


@app.command()
def runs(db: DbOption = None) -> None:
    """List runs with status, counts and duration."""
    _configure_logging(quiet=True)
    try:
        table = inspector.list_runs(db)
    except PipelineError as exc:
        _fail(str(exc), exc.exit_code)
    typer.echo(inspector.format_runs(table))


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


OUTPUT_FORMATS = {".csv": Format.csv, ".json": Format.json, ".jsonl": Format.json, ".parquet": Format.parquet}


@app.command()
def rejects(
    db: DbOption = None,
    run: Annotated[
        str | None, typer.Option(help="the run (default: the latest; with --sql: every run)")
    ] = None,
    sql: Annotated[
        str | None,
        typer.Option(help="DuckDB SQL over rejects, runs, batches and the data tables (memories, ...)"),
    ] = None,
    fmt: Annotated[
        Format, typer.Option("--format", help="table on stdout; csv, json (lines) or parquet")
    ] = Format.table,
    output: Annotated[
        Path | None, typer.Option(help="write the --sql result here (the suffix picks the format)")
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="write the rejected raw records (.jsonl, .csv or .parquet) to fix and replay"),
    ] = None,
) -> None:
    """Summarize a run's rejects with what to fix, query them with DuckDB SQL, or export them."""
    _configure_logging(quiet=True)
    if export is not None and (output is not None or fmt is not Format.table):
        _fail("--export FILE takes its format from FILE's suffix; leave out --format and --output", 2)
    if output is not None and sql is None:
        _fail("--output writes the result of --sql; the summary prints (--format json for JSON)", 2)
    if output is not None and fmt is Format.table:
        fmt = OUTPUT_FORMATS.get(output.suffix.lower()) or _fail(
            f"{output}: say which format with --format csv|json|parquet", 2
        )
    if sql is None and export is None and fmt not in (Format.table, Format.json):
        _fail("the summary prints as a table or --format json; --format csv|parquet go with --sql", 2)
    try:
        if export is not None:
            done = inspector.export_rejects(export, db_url=db, run_id=run, sql=sql)
            typer.echo(_exported(done))
        elif sql is None:
            summary = inspector.summarize(db, run)
            typer.echo(summary.text() if fmt is Format.table else json.dumps(summary.to_dict(), indent=2))
        elif fmt is Format.table:
            typer.echo(inspector.format_table(inspector.query(sql, db, run)))
        else:
            inspector.write_query(sql, fmt.value, output, db, run)
    except PipelineError as exc:
        _fail(str(exc), exc.exit_code)


@app.command()
def replay(
    path: Annotated[Path, typer.Argument(help="fixed records: an export of `pipeline rejects --export`")],
    of: Annotated[str, typer.Option("--of", help="the run whose rejects they fix")],
    db: DbOption = None,
    report: Annotated[Path | None, typer.Option(help="write the full JSON report here")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print errors only")] = False,
) -> None:
    """Migrate fixed rejects as a new run; the rejects they fix are marked resolved by it."""
    _configure_logging(quiet)
    _report_run(
        lambda: replay_rejects(path, of, BatchConfig(log_progress=not quiet), db_url=db), report, quiet
    )


@app.command()
def bench(
    path: Annotated[Path, typer.Argument(help="the input file to migrate at each size")],
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="postgresql:// URL of the server to create the bench_<size> databases on "
            "(default: $PIPELINE_DB_URL, else embedded)",
        ),
    ] = None,
    batch_sizes: Annotated[
        str, typer.Option(help="comma-separated sizes to compare; auto may be one of them")
    ] = ",".join(map(str, bench_sizes.DEFAULT_BATCH_SIZES)),
    plot: Annotated[
        Path | None, typer.Option(help="write a PNG of throughput and memory against batch size")
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="write the figures per size as CSV")] = None,
    memory_limit: Annotated[
        int, typer.Option(min=64, help="MB: the best size is the fastest whose peak RSS stays under it")
    ] = 1024,
) -> None:
    """Migrate PATH once per batch size, each into a fresh database, and name the best size."""
    _configure_logging(quiet=True)
    sizes = [_batch_size(size) for size in batch_sizes.split(",") if size.strip()]

    def progress(size: bench_sizes.SizeResult) -> None:
        state = f"{size.rows_per_second:,.0f} rows/s" if size.ok else f"failed (exit {size.exit_code})"
        typer.echo(f"batch size {size.batch_size}: {state}", err=True)

    try:
        result = bench_sizes.bench(
            path,
            sizes,
            db,
            csv_path=csv,
            plot_path=plot,
            memory_limit_mb=memory_limit,
            on_size=progress,
        )
    except PipelineError as exc:
        _fail(str(exc), exc.exit_code)
    typer.echo(result.table())
    for written in (result.csv, result.plot):
        if written is not None:
            typer.echo(f"wrote {written}")


def _batch_size(value: str) -> int | str:
    """``auto`` or a number (``25000``, ``25_000``, ``25,000``); anything else is a usage error."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return int(value.replace(",", "").replace("_", ""))
    except ValueError:
        _fail(f"--batch-size must be a positive number of records or auto, got {value!r}", 2)
        raise  # unreachable: _fail exits


def _exported(done) -> str:
    where = f" (where each line came from: {done.origin})" if done.origin else ""
    replay = f"; fix them, then `pipeline replay {done.path} --of {done.run_id}`" if done.run_id else ""
    return f"exported {done.records:,} records to {done.path}{where}{replay}"


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


def _report_run(run, report: Path | None, quiet: bool) -> None:
    """Run a migration; report it, or say in one line why it stopped (exit 1) or failed."""
    try:
        result = run()
    except RunStopped as stop:
        _emit(stop.result, report, quiet)
        _fail(str(stop), 1)
    except PipelineError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted: batches committed so far stay in the database", 130)
    _emit(result, report, quiet)


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
