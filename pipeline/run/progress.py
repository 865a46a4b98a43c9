"""The progress of a run, as loguru events; the ``pipeline`` command draws them as a bar.

Each step of a run that reads the input (``migrating``; ``grouping`` first with shards) sends
an INFO record bound ``event="progress"`` when a batch is done: ``task``, ``records`` (the
records of the batches done), ``percent`` (of the input bytes those batches hold),
``records_per_second``, ``eta_seconds``, ``bytes_done`` and ``total_bytes``. Like every log
record of the library, they show only once the caller enables ``pipeline`` logging.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter

from loguru import logger
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PROGRESS_EVENT = "progress"


@dataclass
class ProgressTask:
    """One step's progress events; quiet when not ``enabled`` (``BatchConfig.log_progress``)."""

    name: str
    total_bytes: int
    enabled: bool = True
    started: float = 0.0
    last: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.started = perf_counter()

    def update(self, bytes_done: int, records: int, seconds: float | None = None) -> None:
        """``records`` and the input ``bytes_done`` of the batches done; ``seconds`` they took
        (default: since the step started)."""
        if not self.enabled or self.last == (bytes_done, records):
            return
        self.last = (bytes_done, records)
        seconds = perf_counter() - self.started if seconds is None else seconds
        share = min(bytes_done / self.total_bytes, 1.0) if self.total_bytes else 1.0
        rate = records / seconds if seconds > 0 else 0.0
        eta = seconds * (1 - share) / share if share > 0 else None
        logger.bind(
            event=PROGRESS_EVENT,
            task=self.name,
            records=records,
            percent=round(100 * share, 1),
            records_per_second=round(rate, 1),
            eta_seconds=None if eta is None else round(eta, 1),
            bytes_done=bytes_done,
            total_bytes=self.total_bytes,
        ).info(
            "{}: {:,} records, {:.0f}% of the input, {:,.0f} records/s", self.name, records, 100 * share, rate
        )


@contextmanager
def progress_bar(enabled: bool) -> Iterator[None]:
    """While the block runs, draw its progress events as bars on stderr (one per step): what
    the ``pipeline`` command shows. Other sinks should leave these events out."""
    if not enabled:
        yield
        return
    bars = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[records]:,} records"),
        TextColumn("{task.fields[rate]:,.0f} records/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def draw(message) -> None:
        event = message.record["extra"]
        if not tasks:  # drawn from the first event on: a run that fails before prints no bar
            bars.start()
        if event["task"] not in tasks:
            tasks[event["task"]] = bars.add_task(event["task"], total=event["total_bytes"], records=0, rate=0)
        bars.update(
            tasks[event["task"]],
            completed=event["bytes_done"],
            records=event["records"],
            rate=event["records_per_second"],
        )

    sink = logger.add(draw, level="INFO", filter=is_progress, format="{message}")
    try:
        yield
    finally:
        logger.remove(sink)
        if tasks:
            bars.stop()


def is_progress(record) -> bool:
    """Whether a log record is a progress event."""
    return record["extra"].get("event") == PROGRESS_EVENT
