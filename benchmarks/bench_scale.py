"""One process against Dask workers on the same export: the engine's overhead and each phase.

Usage:
    python benchmarks/bench_scale.py [--records 1000000] [--batch-size 20000] [--seed 7]
                                     [--workers 1,2] [--sharded 2:2] [--repeat 3]
                                     [--out benchmarks/out]

Each round runs ``pipeline migrate`` once in one process, once per ``--workers`` count
(a local cluster the command starts and stops: its start is in the wall time) and once per
``--sharded`` WORKERS:SHARDS pair (``--shards``: a first pass finds the groups, then the
shards decide and load side by side), each into a fresh database, the order rotating from
round to round. Every run's stored rows and rejects
are digested (``common.DIGESTS``): a run on workers must leave exactly what one process leaves.
Reported per variant: the median wall seconds of the rounds, the report's stage seconds of
that run (on workers, read to plan are summed over the workers; ``wait`` is the time the
loading process waited for them) and the ratio to one process.

A last run on the largest worker count, through the library, reads each worker's peak RSS.
Results go to stdout as a markdown table and to
``benchmarks/results/scale-results[-RECORDS].json``, with the commit measured.
"""

from __future__ import annotations

import json
import statistics
import sys

from common import (
    ROOT,
    argument_parser,
    digests,
    fresh_databases,
    generate,
    git_commit,
    machine,
    run_pipeline,
    save_results,
    versions,
)

from pipeline import BatchConfig, migrate
from pipeline.run.autosize import peak_rss_mb
from pipeline.run.cluster import dask_client

TARGET_SLOWER = 1.10
STAGES = ("group", "read", "parse", "validate", "plan", "wait", "lookup", "load")


def main() -> int:
    parser = argument_parser(__doc__, seed=True)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare with one process")
    parser.add_argument("--sharded", default="2:2", help="WORKERS:SHARDS pairs to compare too ('' for none)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = generate(args.records, args.seed, args.out)
    variants = [(0, 1), *((int(n), 1) for n in args.workers.split(","))]
    variants += [tuple(int(n) for n in pair.split(":")) for pair in args.sharded.split(",") if pair]
    runs: dict[tuple[int, int], list[dict]] = {v: [] for v in variants}
    for round_number in range(args.repeat):
        shift = round_number % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            run = measure(source, args, *variant)
            if run is None:
                return 1
            runs[variant].append(run)
    results = summarize(runs, args)
    results["worker_peak_rss_mb"] = worker_peaks(source, args.batch_size, max(w for w, _ in variants))
    name = "scale-results" + ("" if args.records == 1_000_000 else f"-{args.records}") + ".json"
    save_results(ROOT / "benchmarks" / "results", name, results)
    print(markdown(results))
    return 0 if results["same_results"] else 1


def measure(source, args, workers: int, shards: int) -> dict | None:
    url = fresh_databases("bench_scale")["bench_scale"]
    report = args.out / f"scale-report-{workers}-{shards}.json"
    options = ["--workers", str(workers)] if workers else []
    options += ["--shards", str(shards)] if shards > 1 else []
    run = run_pipeline(source, url, args.batch_size, report, *options)
    if run["exit_code"] != 0:
        print(f"pipeline migrate {' '.join(options)} failed: exit {run['exit_code']}", file=sys.stderr)
        return None
    run["stage_seconds"] = json.loads(report.read_text())["stage_seconds"]
    run["digests"] = digests(url)
    run["versions"] = versions(url)
    print(f"workers={workers} shards={shards}: {run['wall_seconds']:.1f}s", file=sys.stderr)
    return run


def worker_peaks(source, batch_size: int, workers: int) -> list[float]:
    """Each worker's peak RSS over one more run on ``workers`` workers (through the library:
    the command's workers are gone when it returns)."""
    url = fresh_databases("bench_scale")["bench_scale"]
    config = BatchConfig(batch_size=batch_size, log_progress=False)
    with dask_client(workers) as client:
        migrate([str(source)], config, db_url=url, client=client)
        return sorted(round(mb, 1) for mb in client.run(peak_rss_mb).values())


def summarize(runs: dict[tuple[int, int], list[dict]], args) -> dict:
    def median_run(variant: tuple[int, int]) -> dict:
        ordered = sorted(runs[variant], key=lambda r: r["wall_seconds"])
        return ordered[len(ordered) // 2]

    alone = statistics.median(r["wall_seconds"] for r in runs[0, 1])
    variants = {}
    for (workers, shards), measured in runs.items():
        middle = median_run((workers, shards))
        wall = middle["wall_seconds"]
        name = "one process" if not workers else f"{workers} workers"
        variants[name + (f", {shards} shards" if shards > 1 else "")] = {
            "wall_seconds": wall,
            "walls": [r["wall_seconds"] for r in measured],
            "ratio_to_one_process": round(wall / alone, 3),
            "report_seconds": middle["seconds"],
            "peak_rss_mb_loading_process": middle["peak_rss_mb"],
            "stage_seconds": middle["stage_seconds"],
            "processed": middle["processed"],
            "successful": middle["successful"],
        }
    all_digests = [r["digests"] for measured in runs.values() for r in measured]
    # The target is the engine's alone: shards add a pass over the input.
    slowest = max(v["ratio_to_one_process"] for name, v in variants.items() if "shards" not in name)
    return {
        "records_in": args.records,
        "batch_size": args.batch_size,
        "variants": variants,
        "same_results": all(d == all_digests[0] for d in all_digests),
        "digests": all_digests[0],
        "target": f"every worker count (one shard) at most {TARGET_SLOWER}x one process's wall time",
        "target_met": slowest <= TARGET_SLOWER,
        "machine": machine(),
        "versions": runs[0, 1][0]["versions"],
        **git_commit(),
    }


def markdown(results: dict) -> str:
    lines = [
        f"{results['records_in']:,} records, batch size {results['batch_size']:,}; "
        f"same rows and rejects in every run: {results['same_results']}",
        "",
        "| variant | wall s (median) | all runs | x one process | " + " | ".join(STAGES) + " | peak RSS MB |",
        "|---" * (len(STAGES) + 5) + "|",
    ]
    for name, v in results["variants"].items():
        stages = [f"{v['stage_seconds'].get(s, 0):.1f}" for s in STAGES]
        walls = ", ".join(f"{w:.1f}" for w in v["walls"])
        lines.append(
            f"| {name} | {v['wall_seconds']:.1f} | {walls} | {v['ratio_to_one_process']:.2f} | "
            + " | ".join(stages)
            + f" | {v['peak_rss_mb_loading_process']:.0f} |"
        )
    lines.append(
        f"\nPeak RSS of each worker: {', '.join(f'{mb:.0f}' for mb in results['worker_peak_rss_mb'])} MB"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
