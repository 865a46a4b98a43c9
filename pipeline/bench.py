"""``pipeline bench``: migrate one file at several batch sizes and name the best one.

Each size gets a fresh database (``bench_<size>``, dropped first and after, on the
server of ``db_url`` or the embedded one) and a full ``pipeline migrate`` in its own
process, so each peak RSS is that migration's alone (read with ``wait4``, and from
the run's report). The run's report gives throughput and seconds per stage. The best
size is the fastest whose peak RSS stayed under ``memory_limit_mb`` (the fastest of
all when none did). ``"auto"`` may be one of the sizes, to compare ``--batch-size
auto`` with fixed sizes.
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
from time import perf_counter

from pipeline.config import AUTO, BatchConfig
from pipeline.errors import ConfigError
from pipeline.extract import resolve_inputs
from pipeline.load.databases import drop_database, fresh_database
from pipeline.load.server import redact, resolve_url

DEFAULT_BATCH_SIZES = (1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 200_000)
STAGES = ("read", "parse", "validate", "plan", "lookup", "load")
INSTALL_HINT = "pip install 'memory-pipeline[bench]' (or pip install matplotlib)"
CSV_FIELDS = (
    "batch_size",
    "exit_code",
    "processed",
    "successful",
    "seconds",
    "wall_seconds",
    "rows_per_second",
    "wall_rows_per_second",
    "peak_rss_mb",
    *(f"{stage}_seconds" for stage in STAGES),
    "batch_sizes",
    "error",
)


@dataclass
class SizeResult:
    """One size's migration: its report's figures, wall time and the process's peak RSS."""

    batch_size: int | str
    exit_code: int
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

    def row(self) -> dict:
        return {
            **{name: getattr(self, name) for name in CSV_FIELDS if hasattr(self, name)},
            **{f"{stage}_seconds": self.stage_seconds.get(stage) for stage in STAGES},
            "batch_sizes": " ".join(map(str, self.batch_sizes)),
        }


@dataclass
class BenchResult:
    source: str
    memory_limit_mb: int
    sizes: list[SizeResult]
    best: int | str | None
    csv: Path | None = None
    plot: Path | None = None

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "memory_limit_mb": self.memory_limit_mb,
            "best": self.best,
            "sizes": [s.row() | {"stage_seconds": s.stage_seconds} for s in self.sizes],
        }

    def table(self) -> str:
        head = ("batch size", "rows/s", "rows/s wall", "peak RSS MB", "seconds", *STAGES)
        lines = [head]
        for s in (s for s in self.sizes if s.ok):
            size = f"{s.batch_size:,}" if isinstance(s.batch_size, int) else s.batch_size
            lines.append(
                (
                    size + (" *" if s.batch_size == self.best else ""),
                    f"{s.rows_per_second:,.0f}",
                    f"{s.wall_rows_per_second:,.0f}",
                    f"{s.peak_rss_mb:,.0f}",
                    f"{s.seconds:.2f}",
                    *(f"{s.stage_seconds.get(stage, 0.0):.2f}" for stage in STAGES),
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        text = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
        text += [f"{s.batch_size}: failed (exit {s.exit_code}): {s.error}" for s in self.sizes if not s.ok]
        text.append(
            "rows/s: records per second of the migration (its report); wall: including process "
            "start-up. Stage seconds: load runs beside the others."
        )
        text.append(self.verdict())
        return "\n".join(text)

    def verdict(self) -> str:
        chosen = next((s for s in self.sizes if s.batch_size == self.best and s.ok), None)
        if chosen is None:
            return "best batch size: none (every migration failed)"
        chose = " → ".join(f"{n:,}" for n in chosen.batch_sizes)
        auto = f" (it chose {chose})" if chosen.batch_size == AUTO else ""
        return (
            f"best batch size: {chosen.batch_size}{auto}: {chosen.rows_per_second:,.0f} rows/s, "
            f"peak RSS {chosen.peak_rss_mb:,.0f} MB (limit {self.memory_limit_mb:,} MB)"
        )


def bench(
    path: str | Path,
    batch_sizes: Sequence[int | str] = DEFAULT_BATCH_SIZES,
    db_url: str | None = None,
    *,
    csv_path: Path | None = None,
    plot_path: Path | None = None,
    memory_limit_mb: int = 1024,
    on_size: Callable[[SizeResult], None] | None = None,
) -> BenchResult:
    """Migrate ``path`` once per batch size into a fresh database; figures per size and the best.

    ``on_size`` is called after each size (for progress). Writes ``csv_path`` and
    ``plot_path`` (PNG; needs matplotlib, the ``bench`` extra) when given.
    """
    (source,) = resolve_inputs([path])
    if not batch_sizes:
        raise ConfigError("give at least one batch size")
    for size in batch_sizes:
        BatchConfig(batch_size=size, memory_limit_mb=memory_limit_mb)  # validates
    if plot_path is not None:
        _pyplot()  # fail before the migrations, not after
    server = resolve_url(db_url)
    results = []
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as scratch:
        for size in batch_sizes:
            results.append(_one_size(source, server, size, memory_limit_mb, Path(scratch)))
            if on_size:
                on_size(results[-1])
    result = BenchResult(str(source), memory_limit_mb, results, _best(results, memory_limit_mb))
    if csv_path is not None:
        write_csv(result, csv_path)
        result.csv = csv_path
    if plot_path is not None:
        write_plot(result, plot_path)
        result.plot = plot_path
    return result


def _one_size(source: Path, server: str, size: int | str, memory_limit_mb: int, scratch: Path) -> SizeResult:
    name = f"bench_{size}"
    url = fresh_database(server, name)
    try:
        return _migrate(source, url, size, memory_limit_mb, scratch / name)
    finally:
        drop_database(server, name)


def _migrate(source: Path, url: str, size: int | str, memory_limit_mb: int, scratch: Path) -> SizeResult:
    """``pipeline migrate`` in its own process; the figures of its report."""
    report = scratch.with_suffix(".json")
    command = [sys.executable, "-m", "pipeline", "migrate", str(source), "--db", url]
    command += ["--batch-size", str(size), "--memory-limit", str(memory_limit_mb)]
    command += ["--report", str(report), "--quiet"]
    exit_code, wall, peak_mb, stderr = measured_run(command, scratch.with_suffix(".err"))
    if exit_code != 0:
        return SizeResult(size, exit_code, wall_seconds=wall, error=redact(stderr.strip()[-300:]))
    data = json.loads(report.read_text())
    return SizeResult(
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


def _best(results: list[SizeResult], memory_limit_mb: int) -> int | str | None:
    done = [s for s in results if s.ok]
    fits = [s for s in done if s.peak_rss_mb <= memory_limit_mb] or done
    return max(fits, key=lambda s: s.rows_per_second).batch_size if fits else None


def write_csv(result: BenchResult, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(s.row() for s in result.sizes)


def write_plot(result: BenchResult, path: Path) -> None:
    """Throughput and peak RSS against batch size (log scale); auto as a dashed line."""
    plt = _pyplot()
    fixed = [s for s in result.sizes if s.ok and isinstance(s.batch_size, int)]
    fixed.sort(key=lambda s: s.batch_size)
    auto = [s for s in result.sizes if s.ok and s.batch_size == AUTO]
    figure, (speed, memory) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), constrained_layout=True)
    sizes = [s.batch_size for s in fixed]
    speed.plot(sizes, [s.rows_per_second for s in fixed], marker="o")
    memory.plot(sizes, [s.peak_rss_mb for s in fixed], marker="o", color="tab:orange")
    memory.axhline(result.memory_limit_mb, color="grey", linestyle=":", label="memory limit")
    for s in auto:
        speed.axhline(s.rows_per_second, color="tab:green", linestyle="--", label="auto")
        memory.axhline(s.peak_rss_mb, color="tab:green", linestyle="--", label="auto")
    if isinstance(result.best, int):
        best = next(s for s in fixed if s.batch_size == result.best)
        speed.plot([best.batch_size], [best.rows_per_second], "r*", markersize=14, label="best")
    speed.set_ylabel("records / s")
    memory.set_ylabel("peak RSS (MB)")
    memory.set_xlabel("batch size (records)")
    if sizes:
        memory.set_xscale("log")
        if max(s.peak_rss_mb for s in fixed) > 10 * min(s.peak_rss_mb for s in fixed):
            memory.set_yscale("log")
        memory.set_xticks(sizes, [f"{n:,}" for n in sizes], rotation=30)
        memory.minorticks_off()
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
