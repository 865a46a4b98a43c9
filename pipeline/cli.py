"""``pipeline`` command line: parse options, make one library call, map errors to exit codes.

Exit codes: 0 the run completed (rejects are not failures), 1 it stopped
(fail-fast, max errors, database failure), 2 usage errors, 130 interrupted.
Errors are one line on stderr; no traceback reaches the user. Standard output
carries only what was asked for (a summary, a table, JSON); progress and
messages go to stderr.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import typer
from loguru import logger

from pipeline import bench as bench_sizes
from pipeline import inspect as inspector
from pipeline.config import BatchConfig
from pipeline.datasets import dataset_names
from pipeline.errors import PipelineError, RunInterrupted, RunStopped
from pipeline.load.server import redact, redact_url, resolve_url, start_embedded, stop_embedded
from pipeline.replaying import replay as replay_rejects
from pipeline.run.cluster import dask_client
from pipeline.run.migrate import migrate as run_migration
from pipeline.run.migrate import recorded_config
from pipeline.run.progress import is_progress, progress_bar
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
Dataset = StrEnum("Dataset", {name: name for name in dataset_names()})


Mode = StrEnum("Mode", ["dedup", "standard"])
ReportFormat = StrEnum("ReportFormat", ["table", "json"])
Format = StrEnum("Format", ["table", "csv", "json", "parquet"])
RunsFormat = StrEnum("RunsFormat", ["table", "csv", "json"])


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


@app.command()
def migrate(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="input files, directories or globs (.jsonl, .json, .csv, .parquet, also .gz, .zst, "
            ".bz2 compressed), s3:// (gs://, az://, https://) objects, prefixes or globs, or - for "
            "standard input; with --resume, the run's own when left out"
        ),
    ] = None,
    dataset: Annotated[Dataset | None, typer.Option(help="dataset plug-in (default: memories)")] = None,
    self_name: Annotated[
        str | None, typer.Option(help="messages: sender of outgoing messages without a name (default: Me)")
    ] = None,
    db: DbOption = None,
    batch_size: Annotated[
        str | None,
        typer.Option(
            help="records per batch and transaction, or auto (chosen during the run) (default: 20000)"
        ),
    ] = None,
    memory_limit: Annotated[
        int | None, typer.Option(min=64, help="MB of memory --batch-size auto stays under (default: 1024)")
    ] = None,
    mode: Annotated[
        Mode | None,
        typer.Option(help="dedup: skip duplicates; standard: the database refuses them (default: dedup)"),
    ] = None,
    no_validate_first: Annotated[
        bool, typer.Option("--no-validate-first", help="skip pandera; the database judges")
    ] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="stop at the first failed record")] = False,
    max_errors: Annotated[int | None, typer.Option(min=0, help="stop once more records failed")] = None,
    similarity_threshold: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="near-duplicate score to merge above (default: 0.7)"),
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="name the run (default: generated)")] = None,
    resume: Annotated[
        str | None,
        typer.Option(help="continue this stopped run after its last committed batch, with its own settings"),
    ] = None,
    recheck: Annotated[
        bool, typer.Option("--recheck", help="read again inputs a completed run migrated under these rules")
    ] = False,
    report: Annotated[
        str | None, typer.Option(help="write the full JSON report to this file (- for stdout)")
    ] = None,
    fmt: Annotated[
        ReportFormat, typer.Option("--format", help="table: a summary; json: the full report on stdout")
    ] = ReportFormat.table,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print errors only")] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, help="prepare batches on a local Dask cluster of this many processes")
    ] = None,
    cluster: Annotated[
        str | None, typer.Option(help="prepare batches on the Dask scheduler at tcp://HOST:PORT")
    ] = None,
    max_connections: Annotated[
        int | None, typer.Option(min=1, help="database connections, workers included (default: 2 per shard)")
    ] = None,
    shards: Annotated[
        int | None, typer.Option(min=1, help="groups of records decided and loaded side by side (default: 1)")
    ] = None,
    input_format: Annotated[
        str | None,
        typer.Option(
            help="format of inputs whose name does not tell it (standard input): jsonl, ndjson, json, "
            "csv or parquet, with .gz, .zst or .bz2 if compressed (csv.gz)"
        ),
    ] = None,
) -> None:
    """Migrate PATHS into the database and print a summary of the run.

    Example: pipeline migrate data/sample.jsonl --report report.json
    """
    _configure_logging(quiet)
    if fail_fast and max_errors is not None:
        _fail("--fail-fast and --max-errors cannot be combined", 2)
    if not paths and not resume:
        _fail("name the files to migrate, e.g. `pipeline migrate data/sample.jsonl`", 2)
    if (workers or cluster) and "-" in (paths or []):
        _fail("-: standard input cannot be read by --workers; save it to a file and migrate that", 2)
    passed = {
        "batch_size": None if batch_size is None else _batch_size(batch_size),
        "memory_limit_mb": memory_limit,
        "continue_on_error": False if fail_fast else None,
        "validate_first": False if no_validate_first else None,
        "mode": mode and mode.value,
        "max_errors": max_errors,
        "similarity_threshold": similarity_threshold,
        "dataset": dataset and dataset.value,
        "self_name": self_name,
        "max_connections": max_connections or (2 * shards if shards else None),
        "shards": shards,
    }
    passed = {name: value for name, value in passed.items() if value is not None}
    json_out = fmt is ReportFormat.json or report == "-"

    def run():
        base = recorded_config(resume, db) if resume else BatchConfig()
        config = replace(base, **passed, log_progress=not quiet and not json_out)
        with dask_client(workers, cluster) as client, progress_bar(config.log_progress):
            return run_migration(
                paths or [],
                config,
                db_url=db,
                run_id=run_id,
                resume=resume,
                client=client,
                input_format=input_format,
                recheck=recheck,
            )

    _report_run(run, report, quiet, json_out, db)


@app.command()
def runs(
    db: DbOption = None,
    fmt: Annotated[
        RunsFormat, typer.Option("--format", help="table, csv or json on stdout")
    ] = RunsFormat.table,
) -> None:
    """List runs with status, counts and duration.

    Example: pipeline runs --format json
    """
    _configure_logging(quiet=True)
    try:
        url = resolve_url(db)
        table = inspector.list_runs(url)
    except PipelineError as exc:
        _fail(str(exc), exc.exit_code)
    if fmt is RunsFormat.json:
        typer.echo(table.write_json())
    elif fmt is RunsFormat.csv:
        typer.echo(table.write_csv(), nl=False)
    else:
        typer.echo(f"database {redact(url)}\n{inspector.format_runs(table)}")


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
        Format, typer.Option("--format", help="table on stdout; csv, json or parquet (with --sql)")
    ] = Format.table,
    output: Annotated[
        Path | None, typer.Option(help="write the --sql result here (the suffix picks the format)")
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="write the rejected raw records (.jsonl, .csv or .parquet) to fix and replay"),
    ] = None,
) -> None:
    """Summarize a run's rejects with what to fix, query them with DuckDB SQL, or export them.

    Example: pipeline rejects --sql "SELECT reason, count(*) FROM rejects GROUP BY 1"
    """
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
        url = resolve_url(db)
        if export is not None:
            done = inspector.export_rejects(export, db_url=url, run_id=run, sql=sql)
            typer.echo(_exported(done))
        elif sql is None:
            summary = inspector.summarize(url, run)
            if fmt is Format.table:
                typer.echo(f"database {redact(url)}\n{summary.text()}")
            else:
                typer.echo(json.dumps(summary.to_dict(), indent=2))
        elif fmt is Format.table:
            typer.echo(inspector.format_table(inspector.query(sql, url, run)))
        else:
            inspector.write_query(sql, fmt.value, output, url, run)
    except PipelineError as exc:
        _fail(str(exc), exc.exit_code)


@app.command()
def replay(
    path: Annotated[Path, typer.Argument(help="fixed records: an export of `pipeline rejects --export`")],
    of: Annotated[str, typer.Option("--of", help="the run whose rejects they fix")],
    db: DbOption = None,
    report: Annotated[
        str | None, typer.Option(help="write the full JSON report to this file (- for stdout)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print errors only")] = False,
) -> None:
    """Migrate fixed rejects as a new run; the rejects they fix are marked resolved by it.

    Example: pipeline replay fix.jsonl --of run-20240501-101500-1a2b3c
    """
    _configure_logging(quiet)
    json_out = report == "-"
    config = BatchConfig(log_progress=not quiet and not json_out)

    def run():
        with progress_bar(config.log_progress):
            return replay_rejects(path, of, config, db_url=db)

    _report_run(run, report, quiet, json_out, db)


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
    batch_sizes: Annotated[str | None, typer.Option(help=bench_sizes.SIZES_HELP)] = None,
    repeat: Annotated[int, typer.Option(min=1, help=bench_sizes.REPEAT_HELP)] = bench_sizes.DEFAULT_REPEAT,
    plot: Annotated[
        Path | None, typer.Option(help="write a PNG of throughput and memory against batch size")
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="write the figures per size as CSV")] = None,
    memory_limit: Annotated[
        int, typer.Option(min=64, help="MB: the best size is the fastest whose peak RSS stays under it")
    ] = 1024,
) -> None:
    """Migrate PATH --repeat times per batch size, each into a fresh database, and name the best size.

    Example: pipeline bench data/sample.jsonl --batch-sizes 1000,20000,auto --plot sizes.png
    """
    _configure_logging(quiet=True)
    sizes = None if batch_sizes is None else [_batch_size(s) for s in batch_sizes.split(",") if s.strip()]

    def progress(run: bench_sizes.Measurement) -> None:
        state = f"{run.rows_per_second:,.0f} records/s" if run.ok else f"failed (exit {run.exit_code})"
        typer.echo(f"batch size {run.batch_size}, run {run.repeat} of {repeat}: {state}", err=True)

    try:
        result = bench_sizes.bench(
            path,
            sizes,
            db,
            repeat=repeat,
            csv_path=csv,
            plot_path=plot,
            memory_limit_mb=memory_limit,
            on_run=progress,
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
    """Start the embedded server (it keeps running between commands).

    Example: PIPELINE_HOME=/data/pipeline pipeline db start
    """
    _guarded(lambda: typer.echo(redact(start_embedded())))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server.

    Example: pipeline db stop
    """
    _guarded(lambda: typer.echo("stopped" if stop_embedded() else "not running"))


@db_app.command("url")
def db_url() -> None:
    """Print the URL of the database the commands use (starting the embedded one if needed).

    Example: psql "$(pipeline db url)"
    """
    _guarded(lambda: typer.echo(redact(resolve_url())))


def _guarded(action) -> None:
    try:
        action()
    except PipelineError as exc:
        _fail(str(exc), exc.exit_code)


def _report_run(run, report: str | None, quiet: bool, json_out: bool, db: str | None) -> None:
    """Run a migration; report it, or say in one line why it stopped (exit 1) or failed."""
    try:
        if report is not None and report != "-":
            check_writable(Path(report))
        result = run()
    except RunStopped as stop:
        _emit(stop.result, report, quiet, json_out)
        _fail(str(stop), 1)
    except RunInterrupted as interrupted:
        _emit(interrupted.result, report, quiet=True, json_out=json_out)
        again = _resume_command(interrupted.run_id, db)
        _fail(f"{interrupted}; resume it with {again}", interrupted.exit_code)
    except PipelineError as exc:
        again = f"; then resume the run with {_resume_command(exc.run_id, db)}" if exc.run_id else ""
        _fail(f"{exc}{again}", exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted before the run started: nothing was written", 130)
    if not _emit(result, report, quiet, json_out):
        raise typer.Exit(1)


def _resume_command(run_id: str, db: str | None) -> str:
    """The command resuming ``run_id``; the URL's user name and password stay hidden: the user
    puts them back."""
    if not db:
        return f"`pipeline migrate --resume {run_id}`"
    shown = redact_url(db)
    put_back = " (with your credentials in place of ***)" if shown != db else ""
    return f"`pipeline migrate --resume {run_id} --db {shlex.quote(shown)}`{put_back}"


def _emit(result, report: str | None, quiet: bool, json_out: bool) -> bool:
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


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(code)


def _configure_logging(quiet: bool) -> None:
    logger.remove()
    # Every line passes through ``redact``: no log line shows a password.
    logger.add(
        lambda line: sys.stderr.write(redact(line)),
        level="ERROR" if quiet else "INFO",
        format="{time:HH:mm:ss} {level} {message}",
        filter=lambda record: not is_progress(record),  # drawn as a bar (``progress_bar``)
    )
    logger.enable("pipeline")


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
