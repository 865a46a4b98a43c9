"""Where the server's CPU goes during a migration, process by process, beside the client's.

Usage:
    python benchmarks/bench_server.py [--records 1000000] [--batch-size 20000]

One ``pipeline migrate`` of the generated file (seed 7) into a fresh database ``bench_server``,
with no profiler. Every 0.1 s the embedded server's ``pg_stat_activity`` names each process
(backend type, database, the statement it runs) and ``/proc`` gives its CPU seconds so far; a
process's last reading less its reading before the run is what it spent on the run. The
run's client backends are told apart by what they ran: the one that ran COPY is the loader,
the other the lookups. The client's CPU seconds are the child's (``getrusage``: user +
system).

Results go to stdout as a markdown table and to ``benchmarks/results/server-cpu.json``.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import threading
from collections import Counter
from time import perf_counter, sleep

from common import (
    ROOT,
    argument_parser,
    cpu_of,
    fresh_databases,
    generate,
    git_commit,
    machine,
    save_results,
    server_processes,
    server_url,
)

from pipeline.load.connection import connected

DATABASE = "bench_server"


def main() -> int:
    args = argument_parser(__doc__).parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = generate(args.records, 7, args.out)
    url = fresh_databases(DATABASE)[DATABASE]
    command = [sys.executable, "-m", "pipeline", "migrate", source, "--db", url]
    command += ["--batch-size", str(args.batch_size), "--quiet"]
    processes = {pid: _noted("", "", cpu_of(pid) or 0.0) for pid in server_processes()}
    began = perf_counter()
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watcher = threading.Thread(target=_watch_server, args=(run, processes), daemon=True)
    watcher.start()
    exit_code = run.wait()
    wall = perf_counter() - began
    watcher.join()
    if exit_code != 0:
        print(f"pipeline migrate failed with exit code {exit_code}", file=sys.stderr)
        return 1
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = Counter()
    for process in processes.values():
        server[_role(process)] += process["cpu"] - process["before"]
    results = {
        **git_commit(),
        "records": args.records,
        "batch_size": args.batch_size,
        "wall_seconds": round(wall, 2),
        "client_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "server_cpu_seconds": round(sum(server.values()), 2),
        "server": {role: round(seconds, 2) for role, seconds in server.most_common()},
        "machine": machine(),
    }
    save_results(args.out, "server-cpu.json", results)
    save_results(ROOT / "benchmarks" / "results", "server-cpu.json", results)
    print("| process | core-seconds |\n|---|---|")
    for role, seconds in results["server"].items():
        print(f"| {role} | {seconds:.2f} |")
    print(f"| **server, all** | **{results['server_cpu_seconds']:.2f}** |")
    print(f"| **client (pipeline process)** | **{results['client_cpu_seconds']:.2f}** |")
    print(f"| wall seconds | {results['wall_seconds']:.2f} |")
    return 0


def _watch_server(run: subprocess.Popen, processes: dict[int, dict]) -> None:
    """Until ``run`` ends, note each server process's kind, statements and CPU seconds."""
    with connected(server_url()) as admin:
        while run.poll() is None:
            # A transaction's first read of the statistics is kept until it ends: read afresh.
            admin.execute("SELECT pg_stat_clear_snapshot()")
            rows = admin.execute(
                "SELECT pid, backend_type AS kind, coalesce(datname, '') AS database,"
                " split_part(ltrim(query), ' ', 1) AS verb, state FROM pg_stat_activity"
            ).to_pylist()
            for row in rows:
                process = processes.setdefault(row["pid"], _noted(row["kind"], row["database"]))
                process.update(kind=row["kind"], database=row["database"])
                if row["state"] == "active":
                    process["ran"][row["verb"].upper()] += 1
            for pid, process in processes.items():
                if (used := cpu_of(pid)) is not None:
                    process["cpu"] = used
            sleep(0.1)


def _noted(kind: str, database: str, before: float = 0.0) -> dict:
    """A server process as watched: CPU seconds ``before`` the run, the last reading (``cpu``)."""
    return {"kind": kind, "database": database, "ran": Counter(), "before": before, "cpu": before}


def _role(process: dict) -> str:
    if process["kind"] != "client backend" or process["database"] != DATABASE:
        return process["kind"] if process["database"] in ("", DATABASE) else "other databases"
    return "the run's loader (COPY, rejects, ledger)" if process["ran"]["COPY"] else "the run's lookups"


if __name__ == "__main__":
    sys.exit(main())
