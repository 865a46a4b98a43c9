"""What near-duplicate detection costs: the same file in ``--mode standard`` and ``--mode dedup``.

Usage:
    python benchmarks/bench_dedup.py [--records 1000000] [--batch-size N] [--out benchmarks/out]

``standard`` loads everything the database accepts (duplicates come back as database
rejects); ``dedup`` (the default) also finds exact and near duplicates of stored and
earlier records. Target: dedup at most 1.3x standard.
"""

from __future__ import annotations

import json
import sys

from common import argument_parser, fresh_databases, generate, machine, run_pipeline, save_results

TARGET = 1.3


def main() -> int:
    args = argument_parser(__doc__).parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = generate(args.records, 7, args.out)
    urls = fresh_databases("bench_mode_standard", "bench_mode_dedup")
    runs = {}
    for mode, url in zip(("standard", "dedup"), urls.values(), strict=True):
        report = args.out / f"mode-report-{mode}.json"
        runs[mode] = run_pipeline(source, url, args.batch_size, report, "--mode", mode)
        if runs[mode]["exit_code"] != 0:
            print(f"{mode}: pipeline migrate failed", file=sys.stderr)
            return 1
        data = json.loads(report.read_text())
        runs[mode] |= {k: data[k] for k in ("duplicates_skipped", "similar_merged", "database_errors")}
    ratio = round(runs["dedup"]["seconds"] / runs["standard"]["seconds"], 3)
    results = {
        "records": args.records,
        "batch_size": args.batch_size,
        "runs": runs,
        "ratio": ratio,
        "target_met": ratio <= TARGET,
        "machine": machine(),
    }
    save_results(args.out, "dedup-results.json", results)
    print("| mode | seconds | loaded | exact skipped | near merged | database rejects | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for mode, run in runs.items():
        print(
            f"| {mode} | {run['seconds']:.1f} | {run['successful']:,} | {run['duplicates_skipped']:,} | "
            f"{run['similar_merged']:,} | {run['database_errors']:,} | {run['peak_rss_mb']:,.0f} |"
        )
    print(f"\ndedup / standard = {ratio} (target <= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
