"""``pipeline bench``: one file migrated at several batch sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline import bench as bench_sizes
from pipeline.cli.common import app, configure_logging, fail, parse_batch_size
from pipeline.errors import PipelineError


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
    configure_logging(quiet=True)
    given = batch_sizes.split(",") if batch_sizes is not None else None
    sizes = None if given is None else [parse_batch_size(size) for size in given if size.strip()]

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
        fail(str(exc), exc.exit_code)
    typer.echo(result.table())
    for written in (result.csv, result.plot):
        if written is not None:
            typer.echo(f"wrote {written}")
