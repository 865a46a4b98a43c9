"""Inspecting and exporting a million rejects: summary, DuckDB SQL and each export format.

Usage:
    python benchmarks/bench_rejects.py [--rows 1000000] [--out benchmarks/out]

What it measures, on the embedded PostgreSQL (``./.pipeline/``):

1. Data: a fresh database ``bench_rejects`` gets one ``pipeline_runs`` row and
   ROWS synthetic ``pipeline_rejects`` rows written straight from Arrow (no
   migration): every category, twelve reasons, validation records failing one to
   three checks (so records < rows), realistic raw records of about 450 bytes.
2. Steps, each in its own process (so each peak RSS, VmHWM, is its own), through the
   library calls the CLI makes:
   ``summary`` (``pipeline rejects``), ``sql group-by`` (``--sql "SELECT category,
   reason, count(*) ... GROUP BY ALL"``, reads two columns), ``sql over raw``
   (``--sql`` with a LIKE on ``raw``, reads the raw text of every row), and
   ``export`` to ``.jsonl``, ``.csv`` and ``.parquet`` (one line per record).

Results go to stdout as a markdown table and to ``OUT/rejects-results.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter

import polars as pl
from common import ROOT, argument_parser, machine, save_results, versions

from pipeline import inspect as inspector
from pipeline.datasets.memories import DATASET
from pipeline.load.connection import Connection
from pipeline.load.databases import fresh_database
from pipeline.load.ledger import ensure_schema
from pipeline.load.server import start_embedded
from pipeline.run.autosize import peak_rss_mb

RUN_ID = "bench-rejects"
DATABASE = "bench_rejects"
CHUNK = 100_000
# (reason, field, message) of the validation rejects; {} is the bad value.
VALIDATION = [
    ("confidence:in_range(1,10)", "confidence", "must be an integer from 1 to 10", ["0", "11", "42"]),
    ("summary:not_blank", "summary", "must contain at least one non-whitespace character", [" "]),
    ("id:not_empty", "id", "must be a non-empty string", [""]),
    (
        "extractedAt:iso8601",
        "extractedAt",
        "must be an ISO-8601 timestamp such as 2024-03-05T18:22:10Z",
        ["yesterday", "never"],
    ),
    ("confidence:type(integer)", "confidence", "must be of JSON type integer", ["high", "7.5"]),
    (
        "emotionalContext.primaryMood:isin(positive,negative,neutral,mixed,ambiguous)",
        "emotionalContext.primaryMood",
        "must be one of positive, negative, neutral, mixed, ambiguous",
        ["angry", "furious"],
    ),
    ("participants:type(list)", "participants", "must be of JSON type list", ["Sam"]),
]
STEPS = {
    "summary": "summarize",
    "sql group-by": "SELECT category, reason, count(*) AS n FROM rejects GROUP BY ALL ORDER BY n DESC",
    "sql over raw": "SELECT count(*) AS n FROM rejects WHERE raw LIKE '%Sam%'",
    "export .jsonl": "fix.jsonl",
    "export .csv": "fix.csv",
    "export .parquet": "fix.parquet",
}


def main() -> int:
    args = parse_args()
    if args.step:
        return run_step(args)
    args.out.mkdir(parents=True, exist_ok=True)
    url = fresh_database(start_embedded(ROOT / ".pipeline"), DATABASE)

    began = perf_counter()
    records = fill(url, args.rows)
    fill_seconds = perf_counter() - began
    steps = {name: step(name, url, args.out) for name in STEPS}
    results = {
        "rows": args.rows,
        "records": records,
        "fill_seconds": round(fill_seconds, 2),
        "steps": steps,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(url),
    }
    save_results(args.out, "rejects-results.json", results)
    print(markdown(results))
    return 0


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, migrates=False)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    return parser.parse_args()


def fill(url: str, rows: int) -> int:
    """A run with ``rows`` reject rows, written in chunks straight into ``pipeline_rejects``."""
    loader = Connection(url)
    ensure_schema(loader, DATASET)
    loader.start_run(RUN_ID, datetime.now(UTC), {"dataset": "memories", "batch_size": 25_000}, [])
    frame = synthetic_rejects(rows)
    for start in range(0, frame.height, CHUNK):
        loader.execute("BEGIN")
        loader.ingest("pipeline_rejects", frame.slice(start, CHUNK).to_arrow())
        loader.execute("COMMIT")
    loader.execute("ANALYZE pipeline_rejects")
    loader.finish_run(RUN_ID, "completed", {"processed": frame["source_line"].n_unique()})
    loader.close()
    return frame.select("source_line").n_unique()


def synthetic_rejects(rows: int) -> pl.DataFrame:
    """Reject rows like a migration's: 2% parse, 60% validation, 30% duplicates, 8% database."""
    n = int(rows / 1.6) + 1
    record = pl.int_range(n, dtype=pl.Int64, eager=True).to_frame("record")
    share = pl.col("record") % 100
    records = record.with_columns(
        source_line=pl.col("record") * 2 + 1,
        category=pl.when(share < 2)
        .then(pl.lit("parse"))
        .when(share < 62)
        .then(pl.lit("validation"))
        .when(share < 92)
        .then(pl.lit("deduplication"))
        .otherwise(pl.lit("database")),
        checks=pl.when(share.is_between(2, 61)).then(1 + (pl.col("record") % 3)).otherwise(1),
        raw=template(
            '{"id": "mem-{}", "summary": "Sam and Alex talked about the trip to the lake house number {}, '
            'the budget, who drives and what to cook on the first evening", "confidence": {}, '
            '"participants": [{"id": "p1", "name": "Sam", "role": "friend"}, {"id": "p2", "name": '
            '"Alex", "role": "friend"}], "sourceMessageIds": ["m{}-a", "m{}-b", "m{}-c"], '
            '"extractedAt": "2024-05-01T10:00:00Z", "emotionalContext": {"primaryMood": "positive", '
            '"intensity": 6, "themes": ["travel", "planning"]}}',
            "record",
            "record",
            pl.col("record") % 12,
            "record",
            "record",
            "record",
        ),
    )
    rejects = records.with_columns(check=pl.int_ranges("checks")).explode("check").head(rows)
    reasons = pl.DataFrame(
        {
            "slot": list(range(len(VALIDATION))),
            "v_reason": [r for r, *_ in VALIDATION],
            "v_field": [f for _, f, *_ in VALIDATION],
            "v_hint": [h for _, _, h, _ in VALIDATION],
            "v_values": [v for *_, v in VALIDATION],
        }
    )
    slot = ((pl.col("record") + pl.col("check") * 3) % len(VALIDATION)).alias("slot")
    rejects = rejects.with_columns(slot).join(reasons, on="slot", how="left")
    value = pl.col("v_values").list.get(pl.col("record") % pl.col("v_values").list.len())
    duplicate_of = pl.format("mem-{}", pl.col("record") // 7)
    return rejects.select(
        run_id=pl.lit(RUN_ID),
        source_file=pl.lit("exports/memories-2024.jsonl"),
        source_line="source_line",
        category="category",
        reason=pl.when(pl.col("category") == "parse")
        .then(pl.lit("invalid_json"))
        .when(pl.col("category") == "validation")
        .then(pl.col("v_reason"))
        .when(pl.col("category") == "deduplication")
        .then(pl.lit("exact_duplicate"))
        .otherwise(pl.lit("unique_violation:memories_pkey")),
        field=pl.when(pl.col("category") == "validation")
        .then(pl.col("v_field"))
        .when(pl.col("category") == "deduplication")
        .then(pl.lit("content_hash"))
        .when(pl.col("category") == "database")
        .then(pl.lit("id")),
        message=pl.when(pl.col("category") == "parse")
        .then(pl.lit("the record is not valid JSON; fix the text or drop the record"))
        .when(pl.col("category") == "validation")
        .then(pl.format("{} {} (got {}); fix the value in the source record", "v_field", "v_hint", value))
        .when(pl.col("category") == "deduplication")
        .then(
            pl.format(
                "same content hash as memory {}; nothing to fix unless the two should differ", duplicate_of
            )
        )
        .otherwise(
            pl.format(
                "id mem-{} is already taken by another record; give this record another id (SQLSTATE 23505)",
                "record",
            )
        ),
        raw=pl.when(pl.col("category") == "parse").then(pl.col("raw").str.head(-40)).otherwise("raw"),
        duplicate_of=pl.when(pl.col("category") == "deduplication").then(duplicate_of),
        similarity=pl.lit(None, pl.Float32),
    )


def template(text: str, *values: str | pl.Expr) -> pl.Expr:
    """``text`` with each ``{}`` replaced by the next value (``pl.format`` reads other braces)."""
    parts = text.split("{}")
    exprs = [pl.lit(parts[0])]
    for value, part in zip(values, parts[1:], strict=True):
        exprs += [(pl.col(value) if isinstance(value, str) else value).cast(pl.String), pl.lit(part)]
    return pl.concat_str(exprs)


def step(name: str, url: str, out: Path) -> dict:
    """Run one step in a fresh process; it reports its own seconds and peak RSS."""
    done = subprocess.run(
        [sys.executable, __file__, "--step", name, "--url", url, "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{name:<16} {result['seconds']:>7.2f}s  {result['peak_rss_mb']:>6,.0f} MB", file=sys.stderr)
    return result


def run_step(args: argparse.Namespace) -> int:
    what = STEPS[args.step]
    began = perf_counter()
    if what == "summarize":
        summary = inspector.summarize(args.url, RUN_ID)
        detail = {"reasons": len(summary.reasons), "records": summary.records}
    elif what.startswith("SELECT"):
        table = inspector.query(what, args.url, RUN_ID)
        detail = {"result_rows": table.num_rows}
    else:
        done = inspector.export_rejects(args.out / what, args.url, RUN_ID)
        detail = {"records": done.records, "bytes": done.path.stat().st_size}
        for written in (done.path, done.origin):  # hundreds of MB each, measured, not kept
            if written is not None:
                written.unlink()
    seconds = perf_counter() - began
    print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1), **detail}))
    return 0


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"{r['rows']:,} reject rows ({r['records']:,} records), written in {r['fill_seconds']:.1f}s; "
        f"{m['nproc']} CPUs, {m['ram_gb']} GB RAM, {r['versions']['postgresql'].split(' on ')[0]}",
        "",
        "| step | seconds | peak RSS MB | result |",
        "|---|---|---|---|",
    ]
    for name, s in r["steps"].items():
        result = ", ".join(f"{k} {v:,}" for k, v in s.items() if k not in ("seconds", "peak_rss_mb"))
        lines.append(f"| {name} | {s['seconds']:.2f} | {s['peak_rss_mb']:,.0f} | {result} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
