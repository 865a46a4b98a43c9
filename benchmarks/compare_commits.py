"""Two commits compared from ``bench_core.py`` results: medians per scenario and commit, and
whether every run of both stored the same rows and rejects.

Usage:
    python benchmarks/compare_commits.py --before B1.json B2.json ... --after A1.json A2.json ...
                                         [--note TEXT] [--out benchmarks/results/core-before-after.json]

Each file is one ``bench_core.py`` invocation's ``core-results*.json`` (any ``--repeat``,
``--scenarios`` and ``--similarity-threshold``); a first load with ``--similarity-threshold 1``
is its own scenario, "first, exact duplicates only". Run the commits in alternating rounds (A B, B A,
A B ...) so that drift on the machine hits both. Per scenario and commit: the median pipeline
wall seconds, ceiling seconds and ratio over every run, the highest peak RSS and every run;
the change of each median after against before, in %; ``--note`` keeps what the figures alone
do not say (another workload during a round, say).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from common import ROOT, save_results

FIGURES = ("pipeline_seconds", "ceiling_seconds", "ratio")
EXACT = ", exact duplicates only"  # a scenario run with --similarity-threshold 1


def runs_by_scenario(paths: list[Path]) -> tuple[dict[str, list[dict]], list[dict]]:
    """Every run in ``paths`` by scenario, and each file's facts (commit, machine, versions)."""
    scenarios: dict[str, list[dict]] = {}
    files = []
    for path in paths:
        result = json.loads(path.read_text())
        exact = result["similarity_threshold"] >= 1
        for name, summary in result["scenarios"].items():
            for run in summary["runs"]:
                scenarios.setdefault(name + (EXACT if exact else ""), []).append(
                    {
                        "file": path.name,
                        "pipeline_seconds": run["pipeline"]["wall_seconds"],
                        "ceiling_seconds": run["ceiling"]["seconds"],
                        "ratio": run["ratio"],
                        "peak_rss_mb": run["pipeline"]["peak_rss_mb"],
                        "digests": run["pipeline"]["digests"],
                    }
                )
        keys = ("commit", "uncommitted_changes", "timestamp_utc", "machine", "versions")
        files.append({"file": path.name} | {key: result[key] for key in keys})
    return scenarios, files


def summary(runs: list[dict]) -> dict:
    medians = {name: round(statistics.median(run[name] for run in runs), 3) for name in FIGURES}
    return medians | {"peak_rss_mb": max(run["peak_rss_mb"] for run in runs), "runs": runs}


def compare(before: list[Path], after: list[Path], note: str | None = None) -> dict:
    sides = {"before": runs_by_scenario(before), "after": runs_by_scenario(after)}
    files = {side: side_files for side, (_, side_files) in sides.items()}
    every = [f for side_files in files.values() for f in side_files]
    machines = {json.dumps(f["machine"], sort_keys=True) for f in every}
    result: dict = {
        "commits": {side: sorted({f["commit"] for f in side_files}) for side, side_files in files.items()},
        "machine": every[0]["machine"] if len(machines) == 1 else "differs: see files",
        "note": note,
        "scenarios": {},
        "files": files,
    }
    for name in [n for n in sides["before"][0] if n in sides["after"][0]]:
        both = {side: summary(scenarios[name]) for side, (scenarios, _) in sides.items()}
        digests = [run["digests"] for s in both.values() for run in s["runs"]]
        change = {
            f: round(100 * (both["after"][f] / both["before"][f] - 1), 1) for f in (*FIGURES, "peak_rss_mb")
        }
        result["scenarios"][name] = both | {
            "same_digests": all(d == digests[0] for d in digests),
            "runs_compared": len(digests),
            "change_percent": change,
        }
    return result


def markdown(result: dict) -> str:
    lines = [
        "| scenario | commit | pipeline s | ceiling s | ratio | peak RSS MB | runs | same digests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in result["scenarios"].items():
        for side in ("before", "after"):
            c, commits = s[side], ", ".join(result["commits"][side])
            lines.append(
                f"| {name} | {side} {commits} | {c['pipeline_seconds']:.2f} | {c['ceiling_seconds']:.2f} "
                f"| {c['ratio']:.3f} | {c['peak_rss_mb']:.0f} | {len(c['runs'])} "
                f"| {'yes' if s['same_digests'] else 'NO'} ({s['runs_compared']} runs) |"
            )
        change = " | ".join(f"{v:+.1f}%" for v in s["change_percent"].values())
        lines.append(f"| {name} | after / before | {change} | | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, nargs="+", required=True)
    parser.add_argument("--after", type=Path, nargs="+", required=True)
    parser.add_argument("--note", help="what the figures alone do not say, kept in the results")
    default = ROOT / "benchmarks" / "results" / "core-before-after.json"
    parser.add_argument("--out", type=Path, default=default)
    args = parser.parse_args()
    result = compare(args.before, args.after, args.note)
    save_results(args.out.parent, args.out.name, result)
    print(markdown(result))
    return 0 if all(s["same_digests"] for s in result["scenarios"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
