"""``pipeline runs`` and ``pipeline rejects``: what the runs did and what they refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline import inspect as inspector
from pipeline.cli.common import DbOption, Format, RunsFormat, app, configure_logging, fail
from pipeline.errors import PipelineError
from pipeline.load.server import redact, resolve_url


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
    configure_logging(quiet=True)
    try:
        url = resolve_url(db)
        table = inspector.list_runs(url)
    except PipelineError as exc:
        fail(str(exc), exc.exit_code)
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
    file: Annotated[
        Path | None,
        typer.Option("--file", help="with --sql: query a dry run's rejects file as the rejects table"),
    ] = None,
) -> None:
    """Summarize a run's rejects with what to fix, query them with DuckDB SQL, or export them.

    Example: pipeline rejects --sql "SELECT reason, count(*) FROM rejects GROUP BY 1"
    """
    configure_logging(quiet=True)
    if export is not None and (output is not None or fmt is not Format.table):
        fail("--export FILE takes its format from FILE's suffix; leave out --format and --output", 2)
    if output is not None and sql is None:
        fail("--output writes the result of --sql; the summary prints (--format json for JSON)", 2)
    if output is not None and fmt is Format.table:
        fmt = OUTPUT_FORMATS.get(output.suffix.lower()) or fail(
            f"{output}: say which format with --format csv|json|parquet", 2
        )
    if sql is None and export is None and fmt not in (Format.table, Format.json):
        fail("the summary prints as a table or --format json; --format csv|parquet go with --sql", 2)
    if file is not None and (sql is None or export is not None):
        fail('--file goes with --sql: e.g. --sql "SELECT reason, count(*) FROM rejects GROUP BY 1"', 2)
    try:
        if file is not None:
            _query_file(sql or "", fmt, output, file)
            return
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
        fail(str(exc), exc.exit_code)


def _query_file(sql: str, fmt: Format, output: Path | None, file: Path) -> None:
    if fmt is Format.table:
        typer.echo(inspector.format_table(inspector.query(sql, rejects_file=file)))
    else:
        inspector.write_query(sql, fmt.value, output, rejects_file=file)


def _exported(done) -> str:
    where = f" (where each line came from: {done.origin})" if done.origin else ""
    replay = f"; fix them, then `pipeline replay {done.path} --of {done.run_id}`" if done.run_id else ""
    return f"exported {done.records:,} records to {done.path}{where}{replay}"
