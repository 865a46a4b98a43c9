"""What refused rows cost: the same 1M clean records, with and without 0.2% conflicts.

Usage:
    python benchmarks/bench_isolation.py [--records 1000000] [--rate 0.002] [--out benchmarks/out]

Three inputs, each migrated into a fresh database with ``pipeline migrate``:

- ``clean``: ``data/generate.py --clean`` (valid, unique records);
- ``memory id conflicts``: every 1/rate-th record takes the id of a record 997 lines
  earlier (some in the same batch, most in an earlier one); the loader's key lookup
  refuses them before COPY;
- ``child id conflicts``: every 1/rate-th record's emotional context gets one shared id,
  which only the server's unique index can refuse: the COPY fails, and the loader
  isolates each refused row and removes its memory.

The target: each run with conflicts takes at most 1.5x the clean run's time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl
from common import argument_parser, fresh_databases, generate, machine, run_pipeline, save_results

TARGET = 1.5
SHIFT = 997


def main() -> int:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    clean = generate(args.records, 11, args.out, "--clean")
    step = round(1 / args.rate)
    inputs = {
        "clean": clean,
        "memory id conflicts": with_memory_id_conflicts(clean, step, args.out),
        "child id conflicts": with_child_id_conflicts(clean, step, args.out),
    }
    urls = fresh_databases(*(f"bench_isolation_{n}" for n in range(len(inputs))))
    runs = {}
    for (name, path), url in zip(inputs.items(), urls.values(), strict=True):
        report = args.out / f"isolation-report-{name.replace(' ', '-')}.json"
        runs[name] = run_pipeline(path, url, args.batch_size, report)
        if runs[name]["exit_code"] != 0:
            print(f"{name}: pipeline migrate failed", file=sys.stderr)
            return 1
        runs[name]["database_errors"] = json.loads(report.read_text())["database_errors"]
    base = runs["clean"]["seconds"]
    for run in runs.values():
        run["ratio_to_clean"] = round(run["seconds"] / base, 3)
    results = {
        "records": args.records,
        "rate": args.rate,
        "runs": runs,
        "machine": machine(),
        "target_met": all(r["ratio_to_clean"] <= TARGET for r in runs.values()),
    }
    save_results(args.out, "isolation-results.json", results)
    print("| input | seconds | database rejects | x clean |\n|---|---|---|---|")
    for name, run in runs.items():
        print(f"| {name} | {run['seconds']:.1f} | {run['database_errors']:,} | {run['ratio_to_clean']:.2f} |")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument("--rate", type=float, default=0.002)
    return parser.parse_args()


def picked(step: int) -> pl.Expr:
    return (pl.int_range(pl.len()) % step == step - 1) & (pl.int_range(pl.len()) >= SHIFT)


def with_memory_id_conflicts(clean: Path, step: int, out: Path) -> Path:
    lines = pl.read_lines(clean, name="raw")
    id_pattern = r'^\{"id": "([^"]+)"'
    earlier = pl.col("raw").str.extract(id_pattern).shift(SHIFT)
    changed = lines.select(
        pl.when(picked(step) & earlier.is_not_null() & pl.col("raw").str.contains(id_pattern))
        .then(pl.col("raw").str.replace(id_pattern, pl.lit('{"id": "') + earlier + pl.lit('"')))
        .otherwise(pl.col("raw"))
    )
    return _write(changed, out / f"{clean.stem}-id-conflicts.jsonl")


def with_child_id_conflicts(clean: Path, step: int, out: Path) -> Path:
    lines = pl.read_lines(clean, name="raw")
    context = '"emotionalContext": {'
    changed = lines.select(
        pl.when(picked(step) & pl.col("raw").str.contains(context, literal=True))
        .then(pl.col("raw").str.replace(context, context + '"id": "ec-shared", ', literal=True))
        .otherwise(pl.col("raw"))
    )
    return _write(changed, out / f"{clean.stem}-child-conflicts.jsonl")


def _write(lines: pl.DataFrame, path: Path) -> Path:
    path.write_text("\n".join(lines.to_series()) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
