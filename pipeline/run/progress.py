"""The one progress display of a run, on stderr: standard output carries only the report."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pipeline.run.report import RunResult


def progress_display(enabled: bool) -> Progress:
    """One progress display, on stderr: standard output carries only the report."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[records]:,} records"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


def show(progress: Progress, task, result: RunResult, **update) -> None:
    rate = f"{result.rows_per_second:,.0f} rows/s"
    progress.update(task, records=result.processed, rate=rate, **update)
