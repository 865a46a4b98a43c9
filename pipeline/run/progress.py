"""The progress of a run, as loguru events; the ``pipeline`` command draws them as a bar.

Each step of a run that reads the input (``migrating``; ``grouping`` first with shards) sends
an INFO record bound ``event="progress"`` when a batch is done: ``task``, ``records`` (the
records of the batches done), ``percent`` (of the input bytes those batches hold),
``records_per_second``, ``eta_seconds``, ``bytes_done`` and ``total_bytes``. Like every log
record of the library, they show only once the caller enables ``pipeline`` logging.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from time import perf_counter
from typing import Any

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
    run_id: str = ""
    started: float = 0.0
    last: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.started = perf_counter()

    def update(self, bytes_done: int, records: int, seconds: float | None = None, rejected: int = 0) -> None:
        """``records`` and the input ``bytes_done`` of the batches done, ``rejected`` of them not
        loaded; ``seconds`` they took (default: since the step started)."""
        if not self.enabled or self.last == (bytes_done, records):
            return
        self.last = (bytes_done, records)
        seconds = perf_counter() - self.started if seconds is None else seconds
        share = min(bytes_done / self.total_bytes, 1.0) if self.total_bytes else 1.0
        rate = records / seconds if seconds > 0 else 0.0
        eta = seconds * (1 - share) / share if share > 0 else None
        logger.bind(
            event=PROGRESS_EVENT,
            run_id=self.run_id,
            task=self.name,
            records=records,
            percent=round(100 * share, 1),
            records_per_second=round(rate, 1),
            eta_seconds=None if eta is None else round(eta, 1),
            bytes_done=bytes_done,
            total_bytes=self.total_bytes,
            rejected=rejected,
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


@contextmanager
def progress_display(enabled: bool, interval: float, as_json: bool) -> Iterator[None]:
    """Progress on stderr: bars on a terminal; elsewhere (a scheduler, a container, a pipe) or
    as JSON lines, the latest progress every ``interval`` seconds, also before the first batch
    is done, so that a watcher always sees the run alive, and once more at the end."""
    if not enabled:
        yield
        return
    if sys.stderr.isatty() and not as_json:
        with progress_bar(True):
            yield
        return
    latest: dict[str, Any] = {}
    stop = threading.Event()

    def keep(message: Any) -> None:
        latest.update(record=message.record)

    def line() -> None:
        record = latest.get("record")
        if as_json:
            starting: dict[str, Any] = {"time": datetime.now().astimezone().isoformat(), "level": "INFO"}
            starting |= {"event": "progress"}
            starting |= {"run_id": None, "message": "starting: no batch done yet", "records": 0}
            sys.stderr.write(json_line(record) if record else json.dumps(starting) + "\n")
        else:
            sys.stderr.write(_progress_text(record))
        sys.stderr.flush()

    def tick() -> None:
        while not stop.wait(interval):
            line()

    sink = logger.add(keep, level="INFO", filter=is_progress)
    ticker = threading.Thread(target=tick, name="progress", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()
        logger.remove(sink)
        if latest:  # where the run got to, however short it was
            line()


def _progress_text(record: Any) -> str:
    now = datetime.now().strftime("%H:%M:%S")
    if record is None:
        return f"{now} PROGRESS starting: no batch done yet\n"
    event = record["extra"]
    eta = "" if event["eta_seconds"] is None else f", eta {event['eta_seconds']:,.0f}s"
    return (
        f"{now} PROGRESS {event['task']}: {event['records']:,} records, {event['percent']:.0f}% of "
        f"the input, {event['records_per_second']:,.0f} records/s{eta}, {event['rejected']:,} rejected\n"
    )


def json_line(record: Any) -> str:
    """A log record as one JSON object on one line: ``time``, ``level``, ``event`` (``log`` for
    a plain message), ``run_id``, ``message`` and the event's fields."""
    extra = dict(record["extra"])
    line = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "event": extra.pop("event", "log"),
        "run_id": extra.pop("run_id", None),
        "message": record["message"],
        **extra,
    }
    return json.dumps(line, default=str) + "\n"


def is_progress(record) -> bool:
    """Whether a log record is a progress event."""
    return record["extra"].get("event") == PROGRESS_EVENT
