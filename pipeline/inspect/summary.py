"""A run's rejects by category and reason, with what to fix: DuckDB SQL over the run's
rejects (without their raw text, read through Arrow); only the sample records come from
PostgreSQL after."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

import polars as pl

from pipeline.frames import CATEGORIES
from pipeline.inspect import duck
from pipeline.inspect.runs import resolve_run
from pipeline.inspect.text import arrow_frame, clip, format_rows
from pipeline.load.connection import Connection, connected
from pipeline.load.ledger import reject_samples, rejects_without_raw
from pipeline.load.server import resolve_url

TOP_VALUES = 8

# The bad value of a reject row, by category (DuckDB SQL). Validation messages end with
# "(got VALUE); fix the value in the source record" (pipeline.validate.failure_message);
# a refused key names itself ("id X is already taken", or the server's "Key (id)=(X)").
VALUE_PATTERNS = {
    "validation": r"\(got (.*)\); fix the value in the source record$",
    "database": r"^\S+ (.*) is already taken by another record|Key \([^)]*\)=\((.*)\) already exists",
}

VALUE_SQL = f"""CASE
    WHEN category = 'deduplication' THEN duplicate_of
    WHEN category = 'validation' AND regexp_matches(message, '{VALUE_PATTERNS["validation"]}')
        THEN regexp_extract(message, '{VALUE_PATTERNS["validation"]}', 1)
    WHEN category = 'database' AND regexp_matches(message, '{VALUE_PATTERNS["database"]}')
        THEN coalesce(nullif(regexp_extract(message, '{VALUE_PATTERNS["database"]}', 1), ''),
                      regexp_extract(message, '{VALUE_PATTERNS["database"]}', 2))
END"""

GOT = re.compile(r" \(got .*\)(?=; fix the value in the source record$)")


@dataclass(frozen=True)
class Recommendation:
    """What is wrong with the records of one reason, and what to do about them."""

    what: str
    records: int
    values: list[str]
    distinct_values: int
    fix: str
    values_are: str = "seen"

    def text(self) -> str:
        seen = ""
        if self.values:
            more = self.distinct_values - len(self.values)
            listed = ", ".join(self.values) + (f" and {more:,} more" if more > 0 else "")
            seen = f" ({self.values_are}: {listed})"
        plural = "record" if self.records == 1 else "records"
        return f"{self.records:,} {plural}: {self.what}{seen}; {self.fix}"


@dataclass(frozen=True)
class ReasonSummary:
    category: str
    reason: str
    records: int
    rows: int
    resolved: int
    fields: list[str]
    sample_file: str
    sample_line: int
    sample_raw: str
    recommendation: Recommendation


@dataclass(frozen=True)
class RejectSummary:
    """The rejects of one run, by category and reason; counts are records unless named rows."""

    run_id: str
    status: str
    records: int
    resolved: int
    by_category: dict[str, int]
    reasons: list[ReasonSummary] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, width: int = 100) -> str:
        return format_summary(self, width)


def summarize(db_url: str | None = None, run_id: str | None = None) -> RejectSummary:
    """The rejects of ``run_id`` (default: the latest run) grouped by category and reason.

    The counting is DuckDB SQL over the run's rejects (without their raw text, read
    through Arrow); only the sample records come from PostgreSQL after.
    """
    with connected(resolve_url(db_url)) as loader:
        run = resolve_run(loader, run_id)
        rejects = rejects_without_raw(loader, run.run_id)
        _, reasons, categories, values = map(arrow_frame, duck.queries(SUMMARY_SQL, {"rejects": rejects}))
        del rejects
        samples = _samples(loader, run.run_id, reasons)
    return build_summary(
        run.run_id, run.status, reasons.join(samples, on=KEY, how="left"), categories, values
    )


KEY = ["category", "reason"]

FIRST = "(resolved_by IS NOT NULL, source_file, source_line)"  # the sample: first unresolved record

SUMMARY_SQL = [
    f"""CREATE TEMP TABLE bad AS
    SELECT category, reason, field, source_file, source_line, resolved_by, similarity,
           {VALUE_SQL} AS value
    FROM rejects""",
    f"""SELECT category, reason,
           count(DISTINCT (source_file, source_line)) AS records, count(*) AS rows,
           count(DISTINCT CASE WHEN resolved_by IS NOT NULL THEN (source_file, source_line) END) AS resolved,
           coalesce(list_sort(list(DISTINCT field) FILTER (WHERE field IS NOT NULL)), []::VARCHAR[])
               AS fields,
           arg_min(source_file, {FIRST}) AS sample_file,
           arg_min(source_line, {FIRST}) AS sample_line,
           arg_min(value, {FIRST}) AS sample_value,
           min(similarity) AS low_score, max(similarity) AS high_score
    FROM bad GROUP BY category, reason
    ORDER BY list_position({list(CATEGORIES)}, category), records DESC, reason""",
    """SELECT category, count(DISTINCT (source_file, source_line)) AS records,
           count(DISTINCT CASE WHEN resolved_by IS NOT NULL THEN (source_file, source_line) END) AS resolved
    FROM bad GROUP BY ROLLUP (category)""",
    f"""SELECT category, reason, value, n, distinct_values FROM (
        SELECT category, reason, value, count(*) AS n,
               row_number() OVER (PARTITION BY category, reason ORDER BY count(*) DESC, value) AS rank,
               count(*) OVER (PARTITION BY category, reason) AS distinct_values
        FROM bad WHERE value IS NOT NULL GROUP BY category, reason, value)
    WHERE rank <= {TOP_VALUES} ORDER BY category, reason, rank""",
]


def _samples(loader: Connection, run_id: str, reasons: pl.DataFrame) -> pl.DataFrame:
    """The raw text and message of each reason's sample record."""
    if reasons.is_empty():
        return pl.DataFrame(schema=dict.fromkeys([*KEY, "sample_raw", "sample_message"], pl.String))
    records = reasons.select(*KEY, source_file="sample_file", source_line="sample_line")
    samples = arrow_frame(reject_samples(loader, run_id, records))
    return samples.rename({"raw": "sample_raw", "message": "sample_message"})


def build_summary(
    run_id: str, status: str, reasons: pl.DataFrame, categories: pl.DataFrame, values: pl.DataFrame
) -> RejectSummary:
    """Pure: the summary from the counts per reason and per category, and the bad values seen."""
    seen = {
        (key[0], key[1]): (part["value"].to_list(), int(part["distinct_values"][0]))
        for key, part in values.group_by(*KEY, maintain_order=True)
    }
    total = categories.filter(pl.col("category").is_null())
    per_category = dict(
        categories.filter(pl.col("category").is_not_null()).select("category", "records").iter_rows()
    )
    return RejectSummary(
        run_id=run_id,
        status=status,
        records=int(total["records"].sum()),
        resolved=int(total["resolved"].sum()),
        by_category={c: per_category[c] for c in CATEGORIES if c in per_category},
        reasons=[
            ReasonSummary(
                category=row["category"],
                reason=row["reason"],
                records=row["records"],
                rows=row["rows"],
                resolved=row["resolved"],
                fields=row["fields"],
                sample_file=row["sample_file"],
                sample_line=row["sample_line"],
                sample_raw=row["sample_raw"],
                recommendation=recommend(
                    row["category"],
                    row["records"],
                    row["sample_message"],
                    *seen.get((row["category"], row["reason"]), ([], 0)),
                    row["sample_value"],
                    (row["low_score"], row["high_score"]),
                ),
            )
            for row in reasons.iter_rows(named=True)
        ],
    )


def recommend(
    category: str,
    records: int,
    message: str,
    values: list[str],
    distinct_values: int,
    sample_value: str | None = None,
    scores: tuple[float | None, float | None] = (None, None),
) -> Recommendation:
    """Pure: one reason's advice, from a sample message ("what is wrong; what to do").

    The sample's own bad value is taken out of the message, the values seen are listed apart;
    near duplicates say the range of their similarity ``scores`` (lowest, highest).
    """
    what, _, fix = GOT.sub("", message).rpartition("; ")
    if not what:
        what, fix = message, "fix what the message names in the source records"
    shown = [_shown(v) for v in values]
    if category == "deduplication":
        fix = "nothing to fix unless they should differ; they need no replay"
        low, high = scores
        if low is None or high is None:
            what = "the same content (content hash) as a kept record"
            return Recommendation(what, records, shown, distinct_values, fix, values_are="duplicates of")
        score = f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f} to {high:.2f}"
        what = (
            f"a near duplicate (similarity {score}) of a kept memory, merged into it"
            if records == 1
            else f"near duplicates (similarity {score}) of kept memories, merged into them"
        )
        return Recommendation(what, records, shown, distinct_values, fix, values_are="kept")
    if category == "database" and sample_value:
        what = what.replace(sample_value, "…")  # "id … is already taken by another record"
    return Recommendation(what, records, shown, distinct_values, fix)


def format_summary(summary: RejectSummary, width: int = 100) -> str:
    """Pure: the summary as a table and one recommendation per reason."""
    categories = ", ".join(f"{c} {n:,}" for c, n in summary.by_category.items())
    lines = [
        f"run {summary.run_id} ({summary.status}): {summary.records:,} rejected records"
        + (f" ({categories})" if categories else "")
        + (f", {summary.resolved:,} resolved by a replay" if summary.resolved else ""),
    ]
    if not summary.reasons:
        return lines[0]
    rows = [
        [r.category, r.reason, f"{r.records:,}", f"{r.rows:,}", f"{r.resolved:,}", ", ".join(r.fields)]
        for r in summary.reasons
    ]
    lines += ["", *format_rows(["category", "reason", "records", "rows", "resolved", "field"], rows)]
    for r in summary.reasons:
        sample = f"{r.sample_file}:{r.sample_line}  {r.sample_raw}"
        lines += [
            "",
            f"{r.category} {r.reason}",
            f"  {r.recommendation.text()}",
            f"  sample {clip(sample, width - 9)}",
        ]
    lines += [
        "",
        f"to fix them: pipeline rejects --run {summary.run_id} --export fix.jsonl, edit fix.jsonl, "
        f"then pipeline replay fix.jsonl --of {summary.run_id}",
    ]
    return "\n".join(lines)


def _shown(value: str) -> str:
    """A bad value as a user reads it: quoted when blank, padded or holding a comma."""
    if value == "" or value != value.strip() or ", " in value:
        return json.dumps(value, ensure_ascii=False)
    return value
