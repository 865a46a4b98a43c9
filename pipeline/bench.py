"""``pipeline bench``: migrate one file at several batch sizes and name the best one.

Each migration gets a fresh database (``bench_<size>``, dropped first and after, on
the server of ``db_url`` or the embedded one) and a full ``pipeline migrate`` in its
own process, so each peak RSS is that migration's alone (read with ``wait4``, and
from the run's report). The run's report gives throughput and seconds per stage.

Each size is migrated ``repeat`` times, in rounds (every size once, then again), so a
change in the machine's load falls on every size alike. A size's figures are the
medians of its runs, with the range of its throughput; its peak RSS is the highest of
its runs. The best size is the fastest whose peak RSS stayed under
``memory_limit_mb`` (the fastest of all when none did). ``"auto"`` may be one of the
sizes, to compare ``--batch-size auto`` with fixed sizes.

The default sizes are fitted to the file: a size at or above its record count loads
it in one batch, so only the smallest of those is kept. Sizes given are run as given.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from time import perf_counter
from typing import Literal

import polars as pl

from pipeline.config import AUTO, BatchConfig
from pipeline.errors import ConfigError
from pipeline.extract import input_format, resolve_inputs, scan_batches
from pipeline.extract.inputs import as_source
from pipeline.extract.readers import CSV_OPTIONS
from pipeline.extract.sources import Source
from pipeline.load.databases import drop_database, fresh_database
from pipeline.load.server import redact, resolve_url

DEFAULT_BATCH_SIZES = (1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 200_000)
DEFAULT_REPEAT = 3
STAGES = ("read", "parse", "validate", "plan", "lookup", "load")
INSTALL_HINT = "pip install 'matplotlib>=3.8'"
SIZES_HELP = (
    "comma-separated sizes to compare; auto may be one of them (default: "
    f"{','.join(map(str, DEFAULT_BATCH_SIZES))}, up to the first that holds the whole file)"
)
REPEAT_HELP = "migrations per size; the table shows their median and range"
CSV_FIELDS = (
    "batch_size",
    "runs",
    "exit_code",
    "processed",
    "successful",
    "seconds",
    "wall_seconds",
    "rows_per_second",
    "rows_per_second_min",
    "rows_per_second_max",
    "wall_rows_per_second",
    "peak_rss_mb",
    "peak_rss_mb_min",
    *(f"{stage}_seconds" for stage in STAGES),
    "batch_sizes",
    "error",
)


@dataclass
class Measurement:
    """One migration: its report's figures, wall time and the process's peak RSS.
    ``repeat`` is which run of its size it was (from 1)."""

    batch_size: int | str
    exit_code: int
    repeat: int = 1
    processed: int = 0
    successful: int = 0
    seconds: float = 0.0
    wall_seconds: float = 0.0
    rows_per_second: float = 0.0
    wall_rows_per_second: float = 0.0
    peak_rss_mb: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class SizeResult:
    """One size's runs: the medians of the figures of those that completed, the range of their
    throughput and peak RSS (``peak_rss_mb`` is the highest), and the first failure if any."""

    batch_size: int | str
    measurements: list[Measurement]
    exit_code: int = 0
    processed: int = 0
    successful: int = 0
    seconds: float = 0.0
    wall_seconds: float = 0.0
    rows_per_second: float = 0.0
    rows_per_second_min: float = 0.0
    rows_per_second_max: float = 0.0
    wall_rows_per_second: float = 0.0
    peak_rss_mb: float = 0.0
    peak_rss_mb_min: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # The sizes each completed run cut its batches at (``auto`` changes them).
    batch_sizes: list[list[int]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Every run completed: a size that failed once is not a candidate."""
        return self.exit_code == 0

    @property
    def runs(self) -> int:
        return len(self.measurements)

    @property
    def failures(self) -> int:
        return sum(not m.ok for m in self.measurements)

    def row(self) -> dict:
        return {
            **{name: getattr(self, name) for name in CSV_FIELDS if hasattr(self, name)},
            **{f"{stage}_seconds": self.stage_seconds.get(stage) for stage in STAGES},
            "batch_sizes": "; ".join(" ".join(map(str, sizes)) for sizes in self.batch_sizes),
        }


def summarized(batch_size: int | str, measurements: list[Measurement]) -> SizeResult:
    """A size's figures over its runs."""
    done = [m for m in measurements if m.ok]
    failed = next((m for m in measurements if not m.ok), None)
    result = SizeResult(batch_size, measurements)
    if failed is not None:
        result.exit_code, result.error = failed.exit_code, failed.error
    if not done:
        return result
    speeds = [m.rows_per_second for m in done]
    peaks = [m.peak_rss_mb for m in done]
    result.processed, result.successful = done[0].processed, done[0].successful
    result.seconds = round(median(m.seconds for m in done), 3)
    result.wall_seconds = round(median(m.wall_seconds for m in done), 3)
    result.rows_per_second = round(median(speeds), 1)
    result.rows_per_second_min, result.rows_per_second_max = min(speeds), max(speeds)
    result.wall_rows_per_second = round(median(m.wall_rows_per_second for m in done), 1)
    result.peak_rss_mb, result.peak_rss_mb_min = max(peaks), min(peaks)
    result.stage_seconds = {
        stage: round(median(m.stage_seconds.get(stage, 0.0) for m in done), 3) for stage in STAGES
    }
    result.batch_sizes = [m.batch_sizes for m in done]
    return result


@dataclass
class BenchResult:
    """Every size's figures and the best size; ``records``, the file's count (None when the sizes
    were given), and ``dropped``, the default sizes left out as loading it in one batch too."""

    source: str
    memory_limit_mb: int
    repeat: int
    sizes: list[SizeResult]
    best: int | str | None
    records: int | None = None
    dropped: list[int] = field(default_factory=list)
    csv: Path | None = None
    plot: Path | None = None

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "memory_limit_mb": self.memory_limit_mb,
            "repeat": self.repeat,
            "records": self.records,
            "dropped": self.dropped,
            "best": self.best,
            "sizes": [
                s.row() | {"stage_seconds": s.stage_seconds, "measurements": list(map(vars, s.measurements))}
                for s in self.sizes
            ],
        }

    def table(self) -> str:
        head = ("batch size", "records/s", "min-max", "records/s wall", "peak RSS MB", "seconds", *STAGES)
        lines: list[tuple[str, ...]] = [head]
        for s in (s for s in self.sizes if s.ok):
            size = f"{s.batch_size:,}" if isinstance(s.batch_size, int) else s.batch_size
            lines.append(
                (
                    size + (" *" if s.batch_size == self.best else ""),
                    f"{s.rows_per_second:,.0f}",
                    f"{s.rows_per_second_min:,.0f}-{s.rows_per_second_max:,.0f}",
                    f"{s.wall_rows_per_second:,.0f}",
                    f"{s.peak_rss_mb:,.0f}",
                    f"{s.seconds:.2f}",
                    *(f"{s.stage_seconds.get(stage, 0.0):.2f}" for stage in STAGES),
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        text = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
        text += [
            f"{s.batch_size}: failed {s.failures} of {s.runs} runs (exit {s.exit_code}): {s.error}"
            for s in self.sizes
            if not s.ok
        ]
        runs = "one run" if self.repeat == 1 else f"the median of {self.repeat} runs, and their min-max"
        text.append(
            f"records/s: records per second of the migration (its report), {runs}; wall: including "
            "process start-up. Peak RSS: the highest run's. Seconds and stage seconds: medians; "
            "load runs beside the others."
        )
        if self.dropped:
            text.append(self.dropped_note())
        text.append(self.verdict())
        return "\n".join(text)

    def dropped_note(self) -> str:
        sizes = ", ".join(f"{n:,}" for n in self.dropped)
        return (
            f"left out the default sizes {sizes}: the file holds {self.records:,} records, which a "
            "smaller size already loads in one batch (name sizes with --batch-sizes to run them)"
        )

    def verdict(self) -> str:
        chosen = next((s for s in self.sizes if s.batch_size == self.best and s.ok), None)
        if chosen is None:
            return "best batch size: none (every size failed)"
        chose = "; ".join(" → ".join(f"{n:,}" for n in sizes) for sizes in chosen.batch_sizes)
        auto = f" (it chose {chose})" if chosen.batch_size == AUTO else ""
        return (
            f"best batch size: {chosen.batch_size}{auto}: {chosen.rows_per_second:,.0f} records/s, "
            f"peak RSS {chosen.peak_rss_mb:,.0f} MB (limit {self.memory_limit_mb:,} MB)"
        )


def bench(
    path: str | os.PathLike[str],
    batch_sizes: Sequence[int | Literal["auto"]] | None = None,
    db_url: str | None = None,
    *,
    repeat: int = DEFAULT_REPEAT,
    csv_path: Path | None = None,
    plot_path: Path | None = None,
    memory_limit_mb: int = 1024,
    on_run: Callable[[Measurement], None] | None = None,
) -> BenchResult:
    """Migrate ``path`` ``repeat`` times per batch size, each into a fresh database; figures per
    size and the best. ``batch_sizes`` None: the defaults fitted to the file (``fitted_sizes``).

    ``on_run`` is called after each migration (for progress). Writes ``csv_path`` and
    ``plot_path`` (PNG; needs matplotlib, the ``bench`` extra) when given.
    """
    (source,) = resolve_inputs([path])
    if repeat < 1:
        raise ConfigError(f"--repeat must be 1 or more, not {repeat}")
    records: int | None = None
    dropped: list[int] = []
    if batch_sizes is None:
        records = record_count(source)
        batch_sizes, dropped = fitted_sizes(DEFAULT_BATCH_SIZES, records)
    if not batch_sizes:
        raise ConfigError("give at least one batch size")
    for size in batch_sizes:
        BatchConfig(batch_size=size, memory_limit_mb=memory_limit_mb)  # validates
    if plot_path is not None:
        _pyplot()  # fail before the migrations, not after
    server = resolve_url(db_url)
    runs: dict[int | Literal["auto"], list[Measurement]] = {size: [] for size in batch_sizes}
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as scratch:
        for number in range(1, repeat + 1):
            for size in runs:
                measurement = _one_run(source, server, size, memory_limit_mb, Path(scratch))
                measurement.repeat = number
                runs[size].append(measurement)
                if on_run:
                    on_run(measurement)
    sizes = [summarized(size, measurements) for size, measurements in runs.items()]
    result = BenchResult(
        str(source), memory_limit_mb, repeat, sizes, best_size(sizes, memory_limit_mb), records, dropped
    )
    if csv_path is not None:
        write_csv(result, csv_path)
        result.csv = csv_path
    if plot_path is not None:
        write_plot(result, plot_path)
        result.plot = plot_path
    return result


def record_count(path: Source | Path) -> int:
    """How many records ``path`` holds, without validating them: JSONL lines are read but not
    parsed (blank ones are no records), a CSV's rows counted, a Parquet file's taken from its
    metadata; a JSON array is parsed, as every migration of it does."""
    source = as_source(path)
    fmt = input_format(source)
    if fmt == "csv" and not (source.streamed or source.transcoded or source.remote):
        lazy = pl.scan_csv(source.location, separator=source.delimiter, **CSV_OPTIONS)
        return lazy.select(pl.len()).collect().item()
    if fmt == "parquet":
        return pl.scan_parquet(source.location).select(pl.len()).collect().item()
    return sum(batch.frame.height for batch in scan_batches([source], max(DEFAULT_BATCH_SIZES)))


def fitted_sizes(sizes: Sequence[int], records: int) -> tuple[list[int], list[int]]:
    """(kept, dropped): the sizes below ``records`` and the smallest at or above it, which
    loads them in one batch; each larger size would load that same single batch."""
    whole = min((size for size in sizes if size >= records), default=None)
    kept = [size for size in sizes if size < records or size == whole]
    return kept, [size for size in sizes if size not in kept]


def _one_run(
    source: Source, server: str, size: int | str, memory_limit_mb: int, scratch: Path
) -> Measurement:
    name = f"bench_{size}"
    url = fresh_database(server, name)
    try:
        return _migrate(source, url, size, memory_limit_mb, scratch / name)
    finally:
        drop_database(server, name)


def _migrate(source: Source, url: str, size: int | str, memory_limit_mb: int, scratch: Path) -> Measurement:
    """``pipeline migrate`` in its own process; the figures of its report."""
    report = scratch.with_suffix(".json")
    command = [sys.executable, "-m", "pipeline", "migrate", str(source), "--db", url]
    command += ["--batch-size", str(size), "--memory-limit", str(memory_limit_mb)]
    command += ["--report", str(report), "--quiet"]
    exit_code, wall, peak_mb, stderr = measured_run(command, scratch.with_suffix(".err"))
    if exit_code != 0:
        return Measurement(size, exit_code, wall_seconds=wall, error=redact(stderr.strip()[-300:]))
    data = json.loads(report.read_text())
    return Measurement(
        size,
        exit_code,
        processed=data["processed"],
        successful=data["successful"],
        seconds=data["seconds"],
        wall_seconds=round(wall, 3),
        rows_per_second=data["rows_per_second"],
        wall_rows_per_second=round(data["processed"] / wall, 1) if wall else 0.0,
        peak_rss_mb=round(max(peak_mb, data["peak_rss_mb"]), 1),
        stage_seconds=data.get("stage_seconds", {}),
        batch_sizes=data.get("batch_sizes", []),
    )


def measured_run(command: list, stderr_path: Path, cwd: Path | None = None) -> tuple[int, float, float, str]:
    """Run ``command``; its exit code, wall seconds, its own peak RSS (MB, ``ru_maxrss``: carried
    over exec, so it also holds this process's peak when that was higher) and its stderr."""
    with stderr_path.open("w+") as stderr:
        began = perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
        wall = perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        return process.returncode, wall, usage.ru_maxrss / 1024, stderr.read()


def best_size(results: list[SizeResult], memory_limit_mb: int) -> int | str | None:
    """The fastest size (median) whose every run completed with its peak RSS under the limit;
    the fastest completed one when none stayed under it."""
    done = [s for s in results if s.ok]
    fits = [s for s in done if s.peak_rss_mb <= memory_limit_mb] or done
    return max(fits, key=lambda s: s.rows_per_second).batch_size if fits else None


def write_csv(result: BenchResult, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(s.row() for s in result.sizes)


def write_plot(result: BenchResult, path: Path) -> None:
    """Throughput (from 0) and peak RSS against batch size (log scale), each size's range as an
    error bar; auto as a dashed line over its shaded range."""
    plt = _pyplot()
    fixed = [s for s in result.sizes if s.ok and isinstance(s.batch_size, int)]
    fixed.sort(key=lambda s: s.batch_size)
    auto = [s for s in result.sizes if s.ok and s.batch_size == AUTO]
    figure, (speed, memory) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), constrained_layout=True)
    sizes = [s.batch_size for s in fixed]
    medians = [s.rows_per_second for s in fixed]
    below = [s.rows_per_second - s.rows_per_second_min for s in fixed]
    above = [s.rows_per_second_max - s.rows_per_second for s in fixed]
    speed.errorbar(sizes, medians, yerr=[below, above], marker="o", capsize=4)
    peaks = [s.peak_rss_mb for s in fixed]
    lower = [s.peak_rss_mb - s.peak_rss_mb_min for s in fixed]
    memory.errorbar(sizes, peaks, yerr=[lower, [0.0] * len(fixed)], marker="o", capsize=4, color="tab:orange")
    memory.axhline(result.memory_limit_mb, color="grey", linestyle=":", label="memory limit")
    for s in auto:
        speed.axhline(s.rows_per_second, color="tab:green", linestyle="--", label="auto")
        speed.axhspan(s.rows_per_second_min, s.rows_per_second_max, color="tab:green", alpha=0.15)
        memory.axhline(s.peak_rss_mb, color="tab:green", linestyle="--", label="auto")
        memory.axhspan(s.peak_rss_mb_min, s.peak_rss_mb, color="tab:green", alpha=0.15)
    if isinstance(result.best, int):
        best = next(s for s in fixed if s.batch_size == result.best)
        speed.plot([best.batch_size], [best.rows_per_second], "r*", markersize=14, label="best")
    runs = f"median of {result.repeat} runs, bars: min-max" if result.repeat > 1 else "one run"
    speed.set_ylabel(f"records / s\n({runs})")
    memory.set_ylabel("peak RSS (MB)\n(highest run's)")
    memory.set_xlabel("batch size (records)")
    if sizes:
        memory.set_xscale("log")
        if max(peaks) > 10 * min(s.peak_rss_mb_min for s in fixed):
            memory.set_yscale("log")
        memory.set_xticks(sizes, [f"{n:,}" for n in sizes], rotation=30)
        memory.minorticks_off()
    speed.set_ylim(bottom=0)
    speed.set_title(f"{Path(result.source).name}\n{result.verdict()}", fontsize=8)
    for axes in (speed, memory):
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(f"--plot needs matplotlib: {INSTALL_HINT}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
