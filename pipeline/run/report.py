"""The run report: data first (``RunResult.to_dict`` is the JSON contract), text second."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from pipeline.errors import InputError
from pipeline.frames import RejectCounts

FAILED_CATEGORIES = {
    "parse": "parse_errors",
    "validation": "validation_errors",
    "database": "database_errors",
}

# The ignored paths a summary names; the JSON report lists them all.
IGNORED_SHOWN = 5


@dataclass
class BatchReport:
    rows_in: int
    loaded: int
    rejected: int
    seconds: float


@dataclass
class RunResult:
    """Counts of one run.

    ``processed = successful + failed + duplicates_skipped + similar_merged`` always holds.
    ``batch_sizes``: the sizes batches were cut at, in order, each listed when it changes
    (one entry unless ``batch_size`` is ``"auto"``). ``stage_seconds``: seconds spent in
    ``read``, ``parse``, ``validate`` (transform, hash, checks), ``plan`` (rows as Arrow,
    links inside the batch, near-duplicate input), ``lookup`` (stored rows and the dedup
    decision, on the lookup thread) and ``load`` (waiting for the decision, COPY, rejects,
    ledger, on the loader thread) by this process; the threads overlap, so the stages add up
    to more than ``seconds``. ``ignored_paths``: what the directories and globs named held that
    the run does not read (``path`` and ``why``: hidden, directory, unknown format).
    ``damaged_inputs``: compressed inputs read up to damage in their data (``path``, ``line``).
    ``resized_inputs``: inputs whose size changed during the run (``path``, ``size_at_start``,
    ``size_at_end``). ``skipped_inputs``: inputs not read, their content migrated whole by a
    completed run under the same rules (``file`` as given, its ``sha256``, that ``run_id``);
    their records are not counted.
    """

    run_id: str
    status: str = "running"
    dataset: str = "memories"
    mode: str = "dedup"
    batch_size: int | str = 0
    inputs: list[str] = field(default_factory=list)
    database: str = ""
    processed: int = 0
    successful: int = 0
    parse_errors: int = 0
    validation_errors: int = 0
    database_errors: int = 0
    duplicates_skipped: int = 0
    similar_merged: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    stop_reason: str | None = None
    batches: list[BatchReport] = field(default_factory=list)
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    similarity_histogram: dict[str, int] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    ignored_paths: list[dict[str, str]] = field(default_factory=list)
    resized_inputs: list[dict] = field(default_factory=list)
    damaged_inputs: list[dict] = field(default_factory=list)
    skipped_inputs: list[dict] = field(default_factory=list)
    dry_run: bool = False
    rejects_file: str | None = None

    @property
    def failed(self) -> int:
        return self.parse_errors + self.validation_errors + self.database_errors

    @property
    def success_rate(self) -> float:
        return round(100 * self.successful / self.processed, 2) if self.processed else 0.0

    @property
    def deduplication_rate(self) -> float:
        skipped = self.duplicates_skipped + self.similar_merged
        return round(100 * skipped / self.processed, 2) if self.processed else 0.0

    @property
    def rows_per_second(self) -> float:
        return round(self.processed / self.seconds, 1) if self.seconds else 0.0

    def add_stage_seconds(self, seconds: Mapping[str, float]) -> None:
        """Add the seconds a piece of work spent in each stage (the values it returned)."""
        for stage, spent in seconds.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + spent

    def add_batch(self, rows_in: int, loaded: int, rejects: pl.DataFrame, seconds: float) -> None:
        """Count one committed batch."""
        self.add_counts(RejectCounts.of(rejects))
        self.processed += rows_in
        self.successful += loaded
        self.batches.append(BatchReport(rows_in, loaded, rows_in - loaded, round(seconds, 3)))

    def add_counts(self, counts: RejectCounts) -> None:
        for category, name in FAILED_CATEGORIES.items():
            setattr(self, name, getattr(self, name) + counts.records.get(category, 0))
        self.similar_merged += counts.similar
        self.duplicates_skipped += counts.records.get("deduplication", 0) - counts.similar
        for label, n in counts.similarity_bins.items():
            self.similarity_histogram[label] = self.similarity_histogram.get(label, 0) + n
        for reason, rows in counts.rows.items():
            self.errors_by_reason[reason] = self.errors_by_reason.get(reason, 0) + rows

    def count_committed(self, batches: list[dict], counts: RejectCounts) -> None:
        """Count exactly the committed batches (the ledger) and their rejects, replacing the
        counts so far: to go on from where a run stopped, or to record where it stopped."""
        self.processed = self.successful = self.parse_errors = self.validation_errors = 0
        self.database_errors = self.duplicates_skipped = self.similar_merged = 0
        self.errors_by_reason, self.similarity_histogram, self.batches = {}, {}, []
        self.add_counts(counts)
        for batch in batches:
            self.processed += batch["rows_in"]
            self.successful += batch["loaded"]
            self.batches.append(
                BatchReport(
                    batch["rows_in"], batch["loaded"], batch["rows_in"] - batch["loaded"], batch["seconds"]
                )
            )

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(
            failed=self.failed,
            success_rate=self.success_rate,
            deduplication_rate=self.deduplication_rate,
            rows_per_second=self.rows_per_second,
            seconds=round(self.seconds, 3),
            peak_rss_mb=round(self.peak_rss_mb, 1),
            errors_by_reason=dict(sorted(self.errors_by_reason.items(), key=lambda kv: -kv[1])),
            similarity_histogram=dict(sorted(self.similarity_histogram.items())),
            stage_seconds={stage: round(s, 3) for stage, s in self.stage_seconds.items()},
        )
        return data

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def summary(self, top: int = 8) -> str:
        would = "would load" if self.dry_run else "loaded"
        lines = [
            f"{'dry run' if self.dry_run else 'run'} {self.run_id}: {self.status}"
            + (f" ({self.stop_reason})" if self.stop_reason else ""),
            f"  database  {self.database}",
            f"  processed {self.processed:,} records in {self.seconds:.1f}s "
            f"({self.rows_per_second:,.0f} records/s, peak RSS {self.peak_rss_mb:,.0f} MB)",
            f"  {would:<9} {self.successful:,} ({self.success_rate}%)",
            f"  failed    {self.failed:,} (parse {self.parse_errors:,}, validation "
            f"{self.validation_errors:,}, database {self.database_errors:,})",
            f"  skipped   {self.duplicates_skipped:,} exact duplicates, "
            f"{self.similar_merged:,} near duplicates merged",
        ]
        if self.stage_seconds:
            spent = ", ".join(f"{stage} {s:.1f}s" for stage, s in self.stage_seconds.items())
            lines.append(f"  stages    {spent} (load overlaps the others)")
        if self.dry_run:
            lines += [
                "  nothing was written to the database; what only the server refuses (a check, a "
                "foreign key) was not checked",
                f"  rejects   {self.rejects_file}: pipeline rejects --file {self.rejects_file}",
            ]
        lines += [
            f"  {'would skip' if self.dry_run else 'not read '} {s['file']}: run {s['run_id']} migrated "
            "the same content under the same rules (--recheck reads it again)"
            for s in self.skipped_inputs
        ]
        lines += [f"  ignored   {i['path']} ({i['why']})" for i in self.ignored_paths[:IGNORED_SHOWN]]
        if len(self.ignored_paths) > IGNORED_SHOWN:
            more = len(self.ignored_paths) - IGNORED_SHOWN
            lines.append(f"  ignored   … and {more:,} more (the JSON report lists them all)")
        lines += [
            f"  resized   {r['path']} changed size during the run ({r['size_at_start']:,} → "
            f"{r['size_at_end']:,} bytes): read as it was when the run began reading it"
            for r in self.resized_inputs
        ]
        lines += [
            f"  damaged   {d['path']}: stopped at line {d['line']:,}, where its compressed data is "
            "damaged or cut short; the records before it loaded, the rest did not"
            for d in self.damaged_inputs
        ]
        if self.batch_size == "auto":
            lines.append(f"  batch sizes chosen: {' → '.join(f'{n:,}' for n in self.batch_sizes)}")
        if self.errors_by_reason:
            lines.append("  top reasons:")
            for reason, count in sorted(self.errors_by_reason.items(), key=lambda kv: -kv[1])[:top]:
                lines.append(f"    {count:>9,}  {reason}")
            if not self.dry_run:
                lines.append(f"  inspect them: pipeline rejects --run {self.run_id}")
        return "\n".join(lines)


def check_writable(path: Path) -> None:
    """Refuse, before a run writes anything, a report path that cannot be written: a missing
    directory, a directory, a place without write permission. An existing file is left as it
    is; a file created to try is removed again."""
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "it is a directory")
        if not path.parent.is_dir():
            raise FileNotFoundError(2, f"{path.parent} is no directory")
        existed = path.exists()
        with path.open("a"):
            pass
        if not existed:
            os.remove(path)
    except OSError as exc:
        raise InputError(
            f"--report {path}: cannot write there ({exc.strerror or exc}); name a file in an "
            "existing directory you can write to",
            path=str(path),
        ) from None
