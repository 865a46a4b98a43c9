"""Where a migration's CPU goes: core-seconds per stage, sampled with py-spy.

Usage:
    python benchmarks/bench_cpu.py [--records 1000000] [--batch-size 20000] [--seed 7]
                                   [--rate 100] [--label NAME]

One ``pipeline migrate`` of the generated file into a fresh database ``bench_cpu``, run under
``py-spy record`` (raw stacks of every Python thread), and each thread's CPU time (user +
system, read from ``/proc`` until it exits) split over the stages (``STAGES``, by the deepest
stage function of a stack): py-spy counts a thread that waits for a core, or for another
thread, as busy, so only shares are taken from its samples. The shares still lean toward the
stages that wait longest for a core (the parse: 12 core-seconds here, 5.2 by the thread's own
clock); ``bench_server.py`` and ``perf`` give budgets that sample no Python stacks.

- A Python thread's own CPU goes to its samples outside Polars, in proportion, but those
  waiting for another thread of the process (``WAITS``: a queue, a future, a lock).
- With ``POLARS_MAX_THREADS=1`` Polars computes on threads of its own (``polars-*``,
  ``async-executor-*``) while the calling thread waits: their CPU goes to the samples of any
  Python thread inside a Polars call, in proportion.
- Other threads that run no Python are a line each, by name.

The server's CPU time is that of every PostgreSQL process over the run (the reaped backends'
included).

Results go to stdout as a markdown table and to ``benchmarks/results/cpu-budget[-LABEL].json``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from time import perf_counter, sleep

from common import (
    ROOT,
    argument_parser,
    cpu_of,
    fresh_databases,
    generate,
    git_commit,
    machine,
    postmaster,
    save_results,
    server_processes,
)

# Stage by the deepest frame of a stack that names one of these functions (file, function).
STAGES = (
    ("read", "pipeline/extract/"),
    ("fingerprint", "fingerprint (pipeline/extract/inputs.py"),
    ("parse", "decode (pipeline/normalize/decode.py"),
    ("parse", "type_errors (pipeline/normalize/decode.py"),
    ("transform + hash", "prepare (pipeline/datasets/"),
    ("validate (pandera)", "schema_failures (pipeline/normalize/validate.py"),
    ("rejects", "failure_rejects (pipeline/normalize/validate.py"),
    ("plan", "plan_load (pipeline/dedup/plan.py"),
    ("look up + decide", "decide_early (pipeline/run/commit.py"),
    ("load", "commit (pipeline/run/commit.py"),
    ("load: COPY", "ingest (pipeline/load/connection.py"),
    ("start", "known_keys (pipeline/load/lookups.py"),
    ("finish", "fold_merges (pipeline/load/ledger/merges.py"),
)
# A stack whose deepest frame is in one of these waits for another thread of the process.
WAITS = ("(threading.py", "(concurrent/futures/", "(queue.py")
# Threads that compute for whichever Python thread waits in a call into their library.
POOLS = {"polars": "(polars/", "async-executor": "(polars/"}


def main() -> int:
    parser = argument_parser(__doc__, seed=True)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--label", default="", help="a name for the results file")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = generate(args.records, args.seed, args.out)
    url = fresh_databases("bench_cpu")["bench_cpu"]
    samples = args.out / "cpu-budget.raw"
    server_before = server_cpu()
    began = perf_counter()
    threads, exit_code = profiled_migrate(source, url, args.batch_size, samples, args.rate)
    wall = perf_counter() - began
    server = server_cpu() - server_before
    if exit_code != 0:
        print(f"pipeline migrate failed with exit code {exit_code}", file=sys.stderr)
        return 1
    stages = stage_seconds(samples, threads)
    client_cpu = sum(used for _, used in threads.values())
    results = {
        **git_commit(),
        "records": args.records,
        "batch_size": args.batch_size,
        "wall_seconds": round(wall, 2),
        "client_cpu_seconds": round(client_cpu, 2),
        "server_cpu_seconds": round(server, 2),
        "stages": {stage: round(seconds, 2) for stage, seconds in stages.most_common()},
        "machine": machine(),
    }
    name = f"cpu-budget{'-' + args.label if args.label else ''}.json"
    save_results(ROOT / "benchmarks" / "results", name, results)
    print(markdown(results))
    return 0


def profiled_migrate(
    source: Path, url: str, batch_size: int, samples: Path, rate: int
) -> tuple[dict[int, float], int]:
    """Run the migration under py-spy; the CPU seconds of each thread of the pipeline process
    (by thread id) and py-spy's exit code."""
    command = ["py-spy", "record", "--format", "raw", "--threads", "--rate", str(rate), "--output", samples]
    command += ["--", sys.executable, "-m", "pipeline", "migrate", source, "--db", url]
    command += ["--batch-size", str(batch_size), "--quiet"]
    env = os.environ | {"POLARS_MAX_THREADS": "1"}
    spy = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    threads: dict[int, tuple[str, float]] = {}
    watcher = threading.Thread(target=_watch_child_threads, args=(spy.pid, threads), daemon=True)
    watcher.start()
    exit_code = spy.wait()
    watcher.join()
    return threads, exit_code


def _watch_child_threads(parent: int, threads: dict[int, tuple[str, float]]) -> None:
    """Keep in ``threads`` the name and CPU seconds of each thread of ``parent``'s child until
    it is gone."""
    child = None
    while child is None:
        children = Path(f"/proc/{parent}/task/{parent}/children")
        if not children.exists():
            return
        found = children.read_text().split()
        child = int(found[0]) if found else None
        sleep(0.05)
    while (tasks := Path(f"/proc/{child}/task")).exists():
        try:
            ids = [int(task.name) for task in tasks.iterdir()]
        except FileNotFoundError:
            return
        for tid in ids:
            if (used := cpu_of(f"{child}/task/{tid}")) is not None:
                name = threads[tid][0] if tid in threads else _thread_name(child, tid)
                threads[tid] = (name, used)
        sleep(0.1)


def _thread_name(pid: int, tid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except FileNotFoundError:
        return "?"


def server_cpu() -> float:
    """CPU seconds of the embedded server's processes, with those of its exited backends."""
    own = cpu_of(postmaster(), children=True) or 0.0
    return own + sum(cpu_of(pid) or 0.0 for pid in server_processes())


def stage_seconds(samples: Path, threads: dict[int, tuple[str, float]]) -> Counter:
    """Each stage's CPU seconds (the module's docstring says how; the rest of a Python thread's
    is ``other``)."""
    own: dict[int, Counter] = {}  # by thread: samples outside any pool's library
    waiting: dict[str, Counter] = {marker: Counter() for marker in POOLS.values()}
    for line in samples.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        frames = stack.split(";")
        tid = int(frames[0].split("(", 1)[1].split(")", 1)[0])
        stage = _stage(frames[1:])
        markers = [marker for marker in waiting if marker in stack]
        for marker in markers:
            waiting[marker][stage] += int(count)
        if not markers and not frames[-1].startswith(WAITS, frames[-1].rfind("(")):
            own.setdefault(tid, Counter())[stage] += int(count)
    seconds: Counter = Counter()
    for tid, (name, used) in threads.items():
        pool = name.rstrip("0123456789-_")
        sampled = waiting[POOLS[pool]] if pool in POOLS else own.get(tid)
        if not sampled:
            seconds[f"thread {pool}" if tid not in own else "other"] += used
            continue
        total = sum(sampled.values())
        for stage, n in sampled.items():
            seconds[stage] += used * n / total
    return seconds


def _stage(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, marker in reversed(STAGES):
            if marker in frame:
                return stage
    return "other"


def markdown(r: dict) -> str:
    lines = ["| stage | client core-seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.2f} |" for stage, seconds in r["stages"].items()]
    lines += [
        f"| **client, all** | **{r['client_cpu_seconds']:.2f}** |",
        f"| **server (PostgreSQL)** | **{r['server_cpu_seconds']:.2f}** |",
        f"| wall seconds | {r['wall_seconds']:.2f} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
