"""End-to-end migration against the ceiling of a plain COPY into the user's tables, for a first
load and an incremental one.

Usage:
    python benchmarks/bench_core.py [--records 1000000] [--batch-size 20000] [--seed 7]
                                    [--scenarios first,incremental] [--similarity-threshold 0.7]
                                    [--repeat 3] [--out benchmarks/out]

On the embedded PostgreSQL (``./.pipeline/``), with the input ``data/generate.py`` writes (N
records with its realistic bad rows; cached in OUT):

* first: ``pipeline migrate`` (a subprocess) into a fresh empty database ``bench_pipeline``.
  Ceiling: the rows it stored, copied into a fresh ``bench_ceiling`` holding only the three
  user tables, empty.
* incremental: the tables already hold about N rows. ``bench_base`` is built once per
  invocation by migrating a second file of N records (seed + 1, every id prefixed ``base-``,
  so no memory or source message id is shared with the first file). Each round migrates the
  first file into ``bench_pipeline``, a copy of ``bench_base`` (``CREATE DATABASE ...
  TEMPLATE``). Ceiling: the rows that run added (keys not in ``bench_base``), copied into
  ``bench_ceiling``, another copy of ``bench_base``.

The ceiling writes only the user's tables (``USER_TABLES``, made from the dataset's DDL: the same
keys, unique constraints, foreign keys and checks; none of the pipeline's own tables): one
transaction, one binary COPY (ADBC ingest) per table, parents first. Only that transaction is
timed. The pipeline's wall seconds hold everything else it does: process start-up, schema,
parsing, validation, hashing, deduplication, rejects and its run ledger.

``ratio = ceiling seconds / pipeline wall seconds``. Each of the ``--repeat`` rounds measures,
per scenario, one pipeline run and one ceiling: the pipeline first in even rounds, the ceiling
first in odd ones. Every ceiling of a scenario copies the rows its first run stored; every
run's stored rows and rejects are digested (``common.DIGESTS``) to show they are the same.
Reported per scenario: the median pipeline seconds, the median ceiling seconds, the median of
the rounds' ratios, the peak RSS (highest VmHWM of the runs) and every run under ``runs``.
Targets: ratio at least 1.0 for a first load (1.1 with ``--similarity-threshold 1``), 0.8 for
an incremental one; peak RSS at most 1024 MB. Results go to stdout as a markdown table and to
``benchmarks/results/core-results[-exact-dedup][-RECORDS].json`` (RECORDS when not 1,000,000).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter

import pyarrow as pa
import pyarrow.compute as pc
from common import (
    ROOT,
    argument_parser,
    copy_database,
    digests,
    fresh_databases,
    generate,
    git_commit,
    machine,
    run_pipeline,
    save_results,
    server_url,
    versions,
)

from pipeline.config import BatchConfig
from pipeline.datasets.base import Table
from pipeline.datasets.memories import DATASET
from pipeline.load.connection import Connection

# The user's tables, parents first. The dataset's other tables are the pipeline's own business.
USER_TABLES = ("memories", "emotional_contexts", "relationship_dynamics")
SCENARIOS = ("first", "incremental")
TARGET_RATIO = {"first": 1.0, "incremental": 0.8}
TARGET_RATIO_EXACT_DEDUP = 1.1  # a first load with --similarity-threshold 1
TARGET_RSS_MB = 1024
BASE_ID_PREFIX = "base-"
RESULTS = ROOT / "benchmarks" / "results"


@dataclass
class Base:
    """The incremental scenario's starting point: the database and the keys it holds."""

    name: str
    keys: dict[str, pa.Array]
    facts: dict


@dataclass
class Bench:
    """What every round of one invocation shares."""

    source: Path
    batch_size: int
    threshold: float
    out: Path  # where the runs' reports go
    databases: str = "bench"  # the databases' name prefix
    base: Base | None = None
    rows: dict[str, dict[str, pa.Table]] = field(default_factory=dict)  # by scenario: what the ceiling copies


def main() -> int:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = generate(args.records, args.seed, args.out)
    bench = Bench(source, args.batch_size, args.similarity_threshold, args.out)
    if "incremental" in args.scenarios:
        bench.base = build_base(bench, args.records, args.seed + 1)
        if bench.base is None:
            return 1
    rounds: dict[str, list[dict]] = {scenario: [] for scenario in args.scenarios}
    for number in range(args.repeat):
        for scenario in args.scenarios:
            measured = measure_round(bench, scenario, number)
            if measured is None:
                return 1
            rounds[scenario].append(measured)
    results = {
        "records_in": args.records,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "similarity_threshold": args.similarity_threshold,
        "scenarios": {name: summarize(name, measured, bench) for name, measured in rounds.items()},
        "machine": machine(),
        "versions": versions(server_url()),
        **git_commit(),
        "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    save_results(RESULTS, results_name(args.records, args.similarity_threshold), results)
    print(markdown(results))
    return 0 if all(s["same_digests"] for s in results["scenarios"].values()) else 1


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, seed=True)
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        type=lambda text: tuple(dict.fromkeys(text.split(","))),  # in order, once each
        help="first (into an empty database), incremental (onto about N stored rows), or both",
    )
    parser.add_argument(
        "--similarity-threshold",
        type=float,
        default=BatchConfig().similarity_threshold,
        help="1 measures exact deduplication only (no near-duplicate detection)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds; medians are reported (a shared machine moves a run by 10%%), every run kept",
    )
    args = parser.parse_args()
    if not args.scenarios or not set(args.scenarios) <= set(SCENARIOS):
        parser.error(f"--scenarios takes {' and/or '.join(SCENARIOS)}, comma-separated")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def results_name(records: int, threshold: float) -> str:
    """One file per kind of run, so that a small or exact-dedup run keeps the 1M figures."""
    name = "core-results" + ("" if threshold < 1 else "-exact-dedup")
    return name + ("" if records == 1_000_000 else f"-{records}") + ".json"


def build_base(bench: Bench, records: int, seed: int) -> Base | None:
    """``<databases>_base``: another file of as many records, none of its ids in the first's."""
    source = generate(records, seed, bench.out, "--id-prefix", BASE_ID_PREFIX)
    name = f"{bench.databases}_base"
    url = fresh_databases(name)[name]
    run = migrate(bench, source, url, "base")
    if run is None:
        return None
    keys = stored_keys(url)
    rows = {table: len(k) for table, k in keys.items()}
    return Base(name, keys, {"source": str(source), "seed": seed, "pipeline": run, "rows": rows})


def stored_keys(url: str) -> dict[str, pa.Array]:
    """Each user table's keys; first vacuumed and analyzed, as a database in service would be,
    so that copies of it neither plan blind nor set hint bits during a timed run."""
    loader = Connection(url)
    try:
        loader.execute("VACUUM ANALYZE")
        return {
            t.name: loader.execute(f"SELECT {t.key} FROM {t.name}").column(0).combine_chunks()
            for t in user_tables()
        }
    finally:
        loader.close()  # a database cannot be copied while anyone is connected to it


def measure_pairs(
    args: argparse.Namespace, source: Path, similarity_threshold: float, databases: str = "bench"
) -> list[dict] | None:
    """``args.repeat`` rounds of the first-load scenario (for bench_peers); None once a run fails."""
    bench = Bench(source, args.batch_size, similarity_threshold, args.out, databases)
    pairs = []
    for number in range(args.repeat):
        measured = measure_round(bench, "first", number)
        if measured is None:
            return None
        pairs.append(measured)
    return pairs


def pair_runs(pairs: list[dict]) -> list[dict]:
    """Each round's main figures."""
    return [
        {"pipeline_seconds": r["pipeline"]["wall_seconds"], "ceiling_seconds": r["ceiling"]["seconds"]}
        | {"ratio": r["ratio"], "peak_rss_mb": r["pipeline"]["peak_rss_mb"]}
        for r in pairs
    ]


def measure_round(bench: Bench, scenario: str, number: int) -> dict | None:
    """A pipeline run and a ceiling; the ceiling first in odd rounds, so that neither always
    runs second (on a warmer cache, after the other's checkpoint). None when the run fails."""
    ceiling_first = number % 2 == 1
    if ceiling_first:
        ceiling = measure_ceiling(bench, scenario)
    pipeline = measure_pipeline(bench, scenario)
    if pipeline is None:
        return None
    if not ceiling_first:
        ceiling = measure_ceiling(bench, scenario)
    ceiling["input_records_per_second"] = round(pipeline["processed"] / ceiling["seconds"], 1)
    return {
        "round": number,
        "order": "ceiling first" if ceiling_first else "pipeline first",
        "pipeline": pipeline,
        "ceiling": ceiling,
        "ratio": round(ceiling["seconds"] / pipeline["wall_seconds"], 3),
    }


def measure_pipeline(bench: Bench, scenario: str) -> dict | None:
    """``pipeline migrate`` into ``<databases>_pipeline``: its figures and the digests of what it
    stored. After a scenario's first run, the rows its ceilings copy are read."""
    name = f"{bench.databases}_pipeline"
    url = copy_database(bench.base.name, name) if scenario == "incremental" else fresh_databases(name)[name]
    run = migrate(bench, bench.source, url, scenario)
    if run is None:
        return None
    run["digests"] = digests(url)
    if scenario not in bench.rows:
        bench.rows[scenario] = stored_rows(url, bench.base.keys if scenario == "incremental" else None)
    print(f"{scenario}: pipeline {run['wall_seconds']:.2f}s", file=sys.stderr)
    return run


def migrate(bench: Bench, source: Path, url: str, label: str) -> dict | None:
    """``pipeline migrate`` of ``source`` into ``url``: its figures, or None when it failed."""
    report = bench.out / f"{bench.databases}-report-{label}.json"
    run = run_pipeline(source, url, bench.batch_size, report, "--similarity-threshold", str(bench.threshold))
    if run["exit_code"] != 0:
        failed = f"pipeline migrate ({label}) failed: exit {run['exit_code']}"
        print(f"{failed}, see {report.with_suffix('.err')}", file=sys.stderr)
        return None
    return run


def measure_ceiling(bench: Bench, scenario: str) -> dict:
    """The scenario's rows COPYed into ``<databases>_ceiling``: an empty one with the user tables
    for a first load, a copy of the base for an incremental one."""
    name = f"{bench.databases}_ceiling"
    if scenario == "incremental":
        url = copy_database(bench.base.name, name)
    else:
        url = fresh_databases(name)[name]
        create_user_tables(url)
    tables = bench.rows[scenario]
    seconds = round(copy_ceiling(url, tables), 3)
    print(f"{scenario}: ceiling {seconds:.2f}s", file=sys.stderr)
    rows = {table: arrow.num_rows for table, arrow in tables.items()}
    return {"seconds": seconds, "rows": rows, "memories": rows["memories"]}


def user_tables() -> list[Table]:
    by_name = {table.name: table for table in DATASET.tables}
    return [by_name[name] for name in USER_TABLES]


def create_user_tables(url: str) -> None:
    loader = Connection(url)
    try:
        with loader.transaction("creating the user tables"):
            for table in user_tables():
                for statement in table.ddl:
                    loader.execute(statement)
    finally:
        loader.close()


def stored_rows(url: str, base_keys: dict[str, pa.Array] | None = None) -> dict[str, pa.Table]:
    """The user tables' rows, shaped as the pipeline sends them; with ``base_keys``, only those
    the run added (rows of the base it updated, e.g. by a near-duplicate merge, are left out)."""
    tables = read_loaded_rows(url)
    if base_keys is None:
        return tables
    return {
        t.name: tables[t.name].filter(pc.invert(pc.is_in(tables[t.name][t.key], value_set=base_keys[t.name])))
        for t in user_tables()
    }


def read_loaded_rows(url: str) -> dict[str, pa.Table]:
    """Every row of the user tables, shaped as the pipeline sends them: JSON as json-typed text,
    without the timestamps the server fills in."""
    loader = Connection(url)
    tables = {}
    for table in user_tables():
        columns = loader.execute(f"SELECT * FROM {table.name} LIMIT 0").schema.names
        columns = [c for c in columns if c not in ("created_at", "updated_at")]
        select = ", ".join(f"{c}::text AS {c}" if c in table.json_columns else c for c in columns)
        arrow = loader.execute(f"SELECT {select} FROM {table.name}")
        for name in table.json_columns:
            index = arrow.schema.get_field_index(name)
            storage = arrow.column(index).combine_chunks()
            arrow = arrow.set_column(
                index, name, pa.ExtensionArray.from_storage(pa.json_(pa.string()), storage)
            )
        tables[table.name] = arrow
    loader.close()
    return tables


def copy_ceiling(url: str, tables: dict[str, pa.Table]) -> float:
    """Seconds of one transaction holding one binary COPY per user table, parents first."""
    loader = Connection(url)
    try:
        began = perf_counter()
        loader.execute("BEGIN")
        for name in USER_TABLES:
            loader.ingest(name, tables[name])
        loader.execute("COMMIT")
        return perf_counter() - began
    finally:
        loader.close()


def target_ratio(scenario: str, threshold: float) -> float:
    return TARGET_RATIO_EXACT_DEDUP if scenario == "first" and threshold >= 1 else TARGET_RATIO[scenario]


def summarize(scenario: str, rounds: list[dict], bench: Bench) -> dict:
    """Medians over the rounds, the targets, and whether every run stored the same."""
    runs = [r["pipeline"] for r in rounds]
    ratio = statistics.median(r["ratio"] for r in rounds)
    peak = max(run["peak_rss_mb"] for run in runs)
    target = target_ratio(scenario, bench.threshold)
    summary = {
        "pipeline_wall_seconds": statistics.median(run["wall_seconds"] for run in runs),
        "pipeline_report_seconds": statistics.median(run["seconds"] for run in runs),
        "ceiling_seconds": statistics.median(r["ceiling"]["seconds"] for r in rounds),
        "ratio": round(ratio, 3),
        "peak_rss_mb": peak,
        "processed": runs[0]["processed"],
        "loaded": runs[0]["successful"],
        "ceiling_rows": rounds[0]["ceiling"]["rows"],
        "targets": {"ratio_at_least": target, "peak_rss_mb_at_most": TARGET_RSS_MB},
        "targets_met": {"ratio": ratio >= target, "peak_rss": peak <= TARGET_RSS_MB},
        "same_digests": all(run["digests"] == runs[0]["digests"] for run in runs),
        "digests": runs[0]["digests"],
        "runs": rounds,
    }
    if scenario == "incremental":
        summary["base"] = bench.base.facts
    return summary


def markdown(r: dict) -> str:
    m, v = r["machine"], r["versions"]
    commit = r["commit"] + (" with uncommitted changes" if r["uncommitted_changes"] else "")
    lines = [
        f"{r['records_in']:,} records (seed {r['seed']}), batch size {r['batch_size']:,}, "
        f"similarity threshold {r['similarity_threshold']}; commit {commit}, {r['timestamp_utc']}",
        f"{m['nproc']} CPUs, {m['cpu']}, {m['ram_gb']} GB RAM; polars {v['polars']}, pyarrow {v['pyarrow']}, "
        f"adbc_driver_postgresql {v['adbc_driver_postgresql']}, {v['postgresql'].split(' on ')[0]}",
        "",
        "| scenario | pipeline s | ceiling s | ratio | target | peak RSS MB (<= 1024) | targets met"
        " | rows copied | every round: pipeline s / ceiling s / ratio | same rows and rejects |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in r["scenarios"].items():
        met = s["targets_met"]
        rounds = "; ".join(
            f"{x['pipeline']['wall_seconds']:.2f} / {x['ceiling']['seconds']:.2f} / {x['ratio']:.3f}"
            for x in s["runs"]
        )
        lines.append(
            f"| {name} | {s['pipeline_wall_seconds']:.2f} | {s['ceiling_seconds']:.2f} | {s['ratio']:.3f} "
            f"| >= {s['targets']['ratio_at_least']} | {s['peak_rss_mb']:,.0f} "
            f"| ratio {'yes' if met['ratio'] else 'NO'}, RSS {'yes' if met['peak_rss'] else 'NO'} "
            f"| {sum(s['ceiling_rows'].values()):,} | {rounds} "
            f"| {'yes' if s['same_digests'] else 'NO: the runs stored different rows or rejects'} |"
        )
    if "incremental" in r["scenarios"]:
        base = r["scenarios"]["incremental"]["base"]["rows"]
        lines.append(f"\nIncremental: the base holds {', '.join(f'{n:,} {t}' for t, n in base.items())}.")
    lines.append("Seconds: the rounds' medians; ratio: median of the rounds' ceiling s / pipeline wall s.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
