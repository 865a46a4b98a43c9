"""``pipeline migrate`` and ``pipeline replay``: a run, reported."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.common import (
    Dataset,
    DbOption,
    LogFormat,
    Mode,
    ReportFormat,
    app,
    configure_logging,
    fail,
    parse_batch_size,
    report_run,
)
from pipeline.config import BatchConfig
from pipeline.extract.encoding import delimiter_option
from pipeline.replaying import replay as replay_rejects
from pipeline.run.cluster import dask_client
from pipeline.run.migrate import migrate as run_migration
from pipeline.run.migrate import recorded_config
from pipeline.run.progress import progress_bar, progress_display


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
            "csv, tsv or parquet, with .gz, .zst or .bz2 if compressed (csv.gz)"
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="run every stage against the stored rows and write nothing to the database; the "
            "rejects go to --rejects-file",
        ),
    ] = False,
    rejects_file: Annotated[
        str | None,
        typer.Option(
            help="with --dry-run: the rejects file, .parquet, .jsonl or .csv (default: RUN-rejects.parquet)"
        ),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(help="codec of JSONL, JSON and CSV inputs, e.g. cp1252 (default: utf-8, or a BOM's)"),
    ] = None,
    delimiter: Annotated[
        str | None,
        typer.Option(help="CSV cell separator, e.g. ';' or tab (default: told by the header; tab for .tsv)"),
    ] = None,
    log_format: Annotated[
        LogFormat, typer.Option(help="stderr as text, or one JSON object a line (events for machines)")
    ] = LogFormat.text,
    log_file: Annotated[
        Path | None, typer.Option(help="write the events as JSON lines to this file too")
    ] = None,
    progress_interval: Annotated[
        float, typer.Option(min=0.1, help="seconds between progress lines when stderr is no terminal")
    ] = 10.0,
) -> None:
    """Migrate PATHS into the database and print a summary of the run.

    Example: pipeline migrate data/sample.jsonl --report report.json
    """
    configure_logging(quiet, log_format is LogFormat.json, log_file)
    if fail_fast and max_errors is not None:
        fail("--fail-fast and --max-errors cannot be combined", 2)
    if rejects_file and not dry_run:
        fail("--rejects-file goes with --dry-run: a real run keeps its rejects in the database", 2)
    if not paths and not resume:
        fail("name the files to migrate, e.g. `pipeline migrate data/sample.jsonl`", 2)
    if (workers or cluster) and "-" in (paths or []):
        fail("-: standard input cannot be read by --workers; save it to a file and migrate that", 2)
    # Settings of several types by field name: ``replace`` makes a BatchConfig, which checks them.
    passed: dict[str, Any] = {
        "batch_size": None if batch_size is None else parse_batch_size(batch_size),
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
        "dry_run": dry_run or None,
        "rejects_file": rejects_file,
        "encoding": encoding,
        "delimiter": None if delimiter is None else delimiter_option(delimiter),
    }
    passed = {name: value for name, value in passed.items() if value is not None}
    json_out = fmt is ReportFormat.json or report == "-"

    def run():
        base = recorded_config(resume, db) if resume else BatchConfig()
        as_json = log_format is LogFormat.json
        config = replace(base, **passed, log_progress=not quiet and (as_json or not json_out))
        display = progress_display(config.log_progress, progress_interval, as_json)
        with dask_client(workers, cluster) as client, display:
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

    report_run(run, report, quiet, json_out, db)


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
    configure_logging(quiet)
    json_out = report == "-"
    config = BatchConfig(log_progress=not quiet and not json_out)

    def run():
        with progress_bar(config.log_progress):
            return replay_rejects(path, of, config, db_url=db)

    report_run(run, report, quiet, json_out, db)
