"""What the benchmarks share: inputs, fresh databases, a timed ``pipeline migrate``, digests of
what a run stored, CPU seconds from ``/proc``, the machine and the code measured."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import adbc_driver_postgresql
import polars as pl
import pyarrow as pa

from pipeline.bench import measured_run
from pipeline.config import BatchConfig
from pipeline.load.connection import Connection, connected, quoted
from pipeline.load.databases import database_url, fresh_database
from pipeline.load.server import start_embedded

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")

# What a run leaves, by content, one md5 per table (merge metadata without its timestamp):
# two runs with equal digests stored the same rows and rejects.
DIGESTS = {
    "memories": "SELECT md5(string_agg(concat_ws('|', id, content_hash, summary,"
    " deduplication_metadata - 'mergedAt'), ',' ORDER BY id)) FROM memories",
    "emotional_contexts": "SELECT md5(string_agg(concat_ws('|', id, memory_id, primary_mood, intensity),"
    " ',' ORDER BY id)) FROM emotional_contexts",
    "relationship_dynamics": "SELECT md5(string_agg(concat_ws('|', id, memory_id), ',' ORDER BY id))"
    " FROM relationship_dynamics",
    "pipeline_rejects": "SELECT md5(string_agg(concat_ws('|', source_file, source_line, category, reason,"
    " duplicate_of, similarity), ',' ORDER BY source_file, source_line, reason)) FROM pipeline_rejects",
}


def argument_parser(doc: str, migrates: bool = True, seed: bool = False) -> argparse.ArgumentParser:
    """The options benchmarks share: ``--out``; for those that migrate a generated file,
    ``--records`` and ``--batch-size``, and ``--seed`` where the seed is a choice."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if migrates:
        parser.add_argument("--records", type=int, default=1_000_000)
        parser.add_argument("--batch-size", type=int, default=BatchConfig().batch_size)
    if seed:
        parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    return parser


def save_results(out: Path, name: str, results: dict) -> None:
    (out / name).write_text(json.dumps(results, indent=2) + "\n")


def server_url() -> str:
    """The embedded server's URL (started when it is not running)."""
    return start_embedded(ROOT / ".pipeline")


def fresh_databases(*names: str) -> dict[str, str]:
    """Drop and create databases on the embedded server; their URLs by name."""
    server = server_url()
    return {name: fresh_database(server, name) for name in names}


def copy_database(template: str, name: str) -> str:
    """Drop ``name`` and create it as a copy of ``template`` on the embedded server; its URL.

    PostgreSQL refuses to copy a database someone is connected to: close yours first."""
    server = server_url()
    with connected(server) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {quoted(name)} TEMPLATE {quoted(template)}")
    return database_url(server, name)


def cpu_of(task: int | str, children: bool = False) -> float | None:
    """CPU seconds of ``task`` (a process id, or ``PID/task/TID`` for one thread), with those
    of its reaped children when asked; None once it has exited."""
    try:
        fields = Path(f"/proc/{task}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # utime, stime, cutime, cstime are fields 14-17 of stat, 12-15 after the command's ")".
    used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return used / TICKS


def postmaster() -> int:
    """The process id of the embedded server (the benchmarks' own, under ``.pipeline``)."""
    return int((ROOT / ".pipeline" / "pgdata" / "postmaster.pid").read_text().split()[0])


def server_processes() -> list[int]:
    """The embedded server's running processes but the postmaster: backends, workers."""
    pid = postmaster()
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def postgres_version(url: str) -> str:
    loader = Connection(url)
    version = loader.execute("SELECT version()").column(0)[0].as_py()
    loader.close()
    return version


def versions(url: str) -> dict:
    """The versions a result depends on; ``url`` names the server measured."""
    return {
        "python": platform.python_version(),
        "polars": pl.__version__,
        "pyarrow": pa.__version__,
        "adbc_driver_postgresql": adbc_driver_postgresql.__version__,
        "postgresql": postgres_version(url),
    }


def digests(url: str) -> dict[str, str]:
    """``DIGESTS`` of the database at ``url``."""
    db = Connection(url)
    try:
        return {table: db.execute(sql).column(0)[0].as_py() for table, sql in DIGESTS.items()}
    finally:
        db.close()


def git_commit() -> dict:
    """The commit measured, and whether the working tree differed from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
    return {"commit": head.stdout.strip(), "uncommitted_changes": bool(status.stdout.strip())}


def generate(records: int, seed: int, out: Path, *options: str) -> Path:
    """``data/generate.py`` output, cached per size, seed, options and generator version."""
    generator = ROOT / "data" / "generate.py"
    sources = (generator, ROOT / "data" / "generation.py")
    version = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:8]
    suffix = "".join(options).replace("-", "")
    path = out / f"memories-{records}-seed{seed}{suffix}-{version}.jsonl"
    if not path.exists():
        partial = path.with_suffix(".partial")
        subprocess.run(
            [
                sys.executable,
                generator,
                "--records",
                str(records),
                "--seed",
                str(seed),
                "--out",
                partial,
                *options,
            ],
            check=True,
        )
        partial.rename(path)
    return path


def run_pipeline(source: Path, url: str, batch_size: int, report: Path, *options: str) -> dict:
    """Run ``pipeline migrate``; its report's counts plus wall seconds and getrusage peak RSS.

    The report's peak RSS is the migration's own (``VmHWM``); getrusage's also holds this
    process's peak when it started the child (``ru_maxrss`` is carried over exec)."""
    command = [
        Path(sys.executable).with_name("pipeline"),
        "migrate",
        source,
        "--db",
        url,
        "--batch-size",
        str(batch_size),
        "--report",
        report,
        "--quiet",
        *options,
    ]
    report.unlink(missing_ok=True)
    # This child's own usage: RUSAGE_CHILDREN would also hold the generator's peak.
    exit_code, wall_seconds, peak_mb, _ = measured_run(command, report.with_suffix(".err"), cwd=ROOT)
    result = {"exit_code": exit_code, "wall_seconds": round(wall_seconds, 3)}
    if exit_code == 0:
        fields = ("processed", "successful", "seconds", "rows_per_second", "peak_rss_mb")
        data = json.loads(report.read_text())
        result |= {key: data[key] for key in fields}
        result["wall_rows_per_second"] = round(data["processed"] / wall_seconds, 1)
        result["peak_rss_mb_getrusage"] = round(peak_mb, 1)
    return result


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": models[0] if models else platform.machine(),
        "ram_gb": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2, 1),
    }
