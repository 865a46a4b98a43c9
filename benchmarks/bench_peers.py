"""The pipeline beside its peers, on the same generated file, in one run.

Usage:
    python benchmarks/bench_peers.py [--records 1000000] [--seed 7] [--batch-size 20000]
                                     [--sample 2000] [--repeat 1] [--with-dlt]
                                     [--with-pgloader] [--out benchmarks/out]

On the embedded PostgreSQL (``./.pipeline/``), each in a fresh database:

a. ceiling: plain ADBC COPY of exactly the rows the pipeline loaded into the user's three
   tables (same DDL), one COPY per table in one transaction (``bench_core.copy_ceiling``);
b. this pipeline: ``pipeline migrate`` as a subprocess (as ``bench_core``, first load); with
   ``--repeat N``, N rounds of a run and its ceiling (the ceiling first in odd rounds), and
   the peers compared with the run of median seconds;
c. the original's approach, one record at a time in plain Python over the pipeline's
   connection: parse, legacy transform, validate, hash, look up the exact hash and
   the stored memories sharing a source id (GIN index) and score them, then INSERT
   the memory and its parts (or the reject) in one transaction per record. Timed on
   the first ``--sample`` records and extrapolated linearly, which flatters it: its
   lookups get slower as the table fills;
d. dlt (``--with-dlt``): its documented JSONL path (``filesystem`` + ``read_jsonl``
   into ``postgres``), installed into its own venv under OUT so the project's
   packages stay as they are. dlt stops at the first malformed line, so it reads a
   pre-filtered copy holding only the lines that are JSON objects; it validates and
   deduplicates nothing (it loads every object, nested lists as child tables);
e. pgloader (``--with-pgloader``, the Debian package): CSVs of the pipeline's final rows
   into the same indexed tables, one run per table: pure loading, no checks.

A peer that cannot be installed or fails is reported as such in the results, not a
crash. Results (seconds, records/s, ratios to the pipeline, peak RSS where known, the
machine and versions) go to ``OUT/peers-results.json`` and a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from urllib.parse import parse_qs, urlsplit

import pyarrow.csv as pacsv
from bench_core import measure_pairs, pair_runs
from common import argument_parser, fresh_databases, generate, machine, save_results, versions

from pipeline.config import BatchConfig
from pipeline.datasets.memories import DATASET
from pipeline.load.connection import Connection
from pipeline.load.ledger import ensure_schema, start_run

DBS = ("peers_pipeline", "peers_ceiling", "peers_original", "peers_dlt", "peers_pgloader")
MOODS = {"positive", "negative", "neutral", "mixed", "ambiguous"}
LEGACY_PARTICIPANT = {"id": "legacy-user", "name": "Legacy User", "role": "unknown"}
THRESHOLD = 0.7


def main() -> int:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = generate(args.records, args.seed, args.out)
    urls = fresh_databases(*DBS)
    results: dict = {"records_in": args.records, "source": str(source), "batch_size": args.batch_size}

    # The peers are compared with the pipeline run of median seconds (a shared machine moves
    # one run by 10%); each run's ceiling is measured right after it.
    pairs = measure_pairs(args, source, BatchConfig().similarity_threshold, databases="peers")
    if pairs is None:
        return 1
    pair = sorted(pairs, key=lambda p: p["pipeline"]["wall_seconds"])[len(pairs) // 2]
    pipeline, ceiling = pair["pipeline"], pair["ceiling"]
    results["pipeline"] = {
        "seconds": pipeline["wall_seconds"],
        "records_per_second": pipeline["wall_rows_per_second"],
        "loaded": pipeline["successful"],
        "peak_rss_mb": pipeline["peak_rss_mb"],
        "what": "parse, validate, hash, dedup (exact and near), load, every reject recorded",
    }
    results["ceiling"] = {
        "seconds": ceiling["seconds"],
        "records_per_second": ceiling["input_records_per_second"],
        "loaded": ceiling["memories"],
        "what": f"ADBC COPY of the pipeline's final rows ({len(ceiling['rows'])} tables), no work",
    }
    results["runs"] = pair_runs(pairs)
    results["original"] = original_approach(source, urls["peers_original"], args.sample, args.records)
    results["dlt"] = (
        run_dlt(source, urls["peers_dlt"], args.out) if args.with_dlt else {"skipped": "use --with-dlt"}
    )
    results["pgloader"] = (
        run_pgloader(urls["peers_pipeline"], urls["peers_pgloader"], args.out, args.records)
        if args.with_pgloader
        else {"skipped": "use --with-pgloader"}
    )
    base = results["pipeline"]["records_per_second"]
    for name in ("ceiling", "pipeline", "original", "dlt", "pgloader"):
        if "records_per_second" in results[name]:
            results[name]["x_pipeline"] = round(results[name]["records_per_second"] / base, 3)
    results["machine"] = machine()
    results["versions"] = versions(urls["peers_pipeline"])
    save_results(args.out, "peers-results.json", results)
    print(markdown(results))
    return 0


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, seed=True)
    parser.add_argument("--sample", type=int, default=2_000, help="records the original approach runs")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the pipeline and its ceiling N times; the peers are compared with the run "
        "of median seconds (every run is kept under 'runs')",
    )
    parser.add_argument("--with-dlt", action="store_true", help="install dlt[postgres] in OUT/venv-dlt")
    parser.add_argument("--with-pgloader", action="store_true", help="apt-get install pgloader")
    return parser.parse_args()


# --- (c) the original's approach: one record at a time --------------------------------------


def original_approach(source: Path, url: str, sample: int, records: int) -> dict:
    loader = Connection(url)
    ensure_schema(loader, DATASET)
    # The original's lookup by shared source id, given the index that serves it best.
    loader.execute("CREATE INDEX IF NOT EXISTS memories_gin ON memories USING gin (source_message_ids)")
    run_id = "original-approach"
    started = datetime.now(UTC)
    start_run(loader, run_id, started, {"approach": "one record at a time"}, [])
    outcomes: dict[str, int] = {}
    began = perf_counter()
    with source.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if number > sample:
                break
            if line.strip():
                outcome = one_record(loader, run_id, str(source), number, line.rstrip("\n"), started)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
    seconds = perf_counter() - began
    loader.close()
    done = sum(outcomes.values())
    rate = done / seconds
    return {
        "sample_records": done,
        "sample_seconds": round(seconds, 3),
        "outcomes": outcomes,
        "records_per_second": round(rate, 1),
        "seconds": round(records / rate, 1),
        "extrapolated": True,
        "what": "per record: parse, validate, hash, look up hash and shared-source memories, "
        "score, INSERT (one transaction each); extrapolated from the sample",
    }


def one_record(
    loader: Connection, run_id: str, source: str, line_no: int, raw: str, started: datetime
) -> str:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        return reject(loader, run_id, source, line_no, raw, "parse", "invalid_json", str(exc))
    if not isinstance(record, dict):
        return reject(loader, run_id, source, line_no, raw, "parse", "not_an_object", "not an object")
    memory = legacy(record, raw)
    problem = invalid(memory)
    if problem:
        return reject(loader, run_id, source, line_no, raw, "validation", problem, problem)
    digest = content_hash(memory)
    loader.execute("BEGIN")
    try:
        found = loader.execute("SELECT id FROM memories WHERE content_hash = $1", (digest,)).to_pylist()
        if found:
            loader.execute("ROLLBACK")
            return reject(loader, run_id, source, line_no, raw, "deduplication", "exact_duplicate", "")
        similar = most_similar(loader, memory)
        if similar is not None:
            loader.execute("ROLLBACK")
            return reject(loader, run_id, source, line_no, raw, "deduplication", "similar_duplicate", "")
        insert(loader, memory, digest, started)
        loader.execute("COMMIT")
    except Exception as exc:  # the database refused the record: the original logged and went on
        loader.execute("ROLLBACK")
        return reject(loader, run_id, source, line_no, raw, "database", "refused", str(exc)[:200])
    return "loaded"


def legacy(record: dict, raw: str) -> dict:
    if "participants" in record or "sourceMessageIds" in record:
        return record
    messages = record.get("messages")
    return {
        **record,
        "id": record.get("id") or "legacy-" + hashlib.sha256(raw.encode()).hexdigest()[:32],
        "sourceMessageIds": messages
        if isinstance(messages, list)
        else (["legacy-content"] if record.get("content") is not None else []),
        "participants": [LEGACY_PARTICIPANT],
        "summary": record.get("summary") or record.get("content") or "Legacy memory",
        "confidence": record.get("confidence") or 5,
    }


def invalid(m: dict) -> str | None:
    """The first failed check, as a reason code (the main rules, in plain Python)."""
    if not isinstance(m.get("id"), str) or not m["id"]:
        return "id:not_empty"
    if not isinstance(m.get("summary"), str) or not m["summary"].strip():
        return "summary:not_blank"
    confidence = m.get("confidence")
    if not isinstance(confidence, int) or isinstance(confidence, bool) or not 1 <= confidence <= 10:
        return "confidence:in_range(1,10)"
    people = m.get("participants")
    if not isinstance(people, list) or not all(
        isinstance(p, dict) and isinstance(p.get("id"), str) and p["id"] for p in people
    ):
        return "participants:type(list)"
    sources = m.get("sourceMessageIds")
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        return "sourceMessageIds:type(list)"
    if m.get("extractedAt") is not None:
        try:
            datetime.fromisoformat(str(m["extractedAt"]).replace("Z", "+00:00"))
        except ValueError:
            return "extractedAt:iso8601"
    context = m.get("emotionalContext")
    if context is not None and (
        not isinstance(context, dict)
        or context.get("primaryMood") not in MOODS
        or not isinstance(context.get("intensity"), int)
        or not 1 <= context["intensity"] <= 10
    ):
        return "emotionalContext:invalid"
    dynamics = m.get("relationshipDynamics")
    if dynamics is not None and not isinstance(dynamics, dict):
        return "relationshipDynamics:type(object)"
    return None


def content_hash(m: dict) -> str:
    people = sorted(
        (
            {
                "id": p["id"],
                "name": str(p.get("name", "")).lower().strip(),
                "role": str(p.get("role", "")).lower().strip(),
            }
            for p in m["participants"]
        ),
        key=lambda p: p["id"],
    )
    compact = {"separators": (",", ":"), "ensure_ascii": False}
    text = "|".join(
        (
            m["summary"].strip().lower(),
            json.dumps(people, **compact),
            json.dumps(sorted(m["sourceMessageIds"]), **compact),
            str(m["confidence"]),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def most_similar(loader: Connection, m: dict) -> str | None:
    """The stored memory sharing a source id that scores above the threshold, as the original scored."""
    if not m["sourceMessageIds"]:
        return None
    stored = loader.execute(
        "SELECT id, summary, source_message_ids, participants::text AS participants FROM memories "
        "WHERE source_message_ids && ARRAY(SELECT jsonb_array_elements_text($1::jsonb))",
        (json.dumps(m["sourceMessageIds"]),),
    ).to_pylist()
    words = m["summary"].strip().lower().split(" ")
    people = [p["id"] for p in m["participants"]]
    for row in stored:
        other = row["summary"].strip().lower()
        theirs = [p["id"] for p in json.loads(row["participants"])]
        score = (
            0.5 * (1.0 if other == " ".join(words) else share(words, other.split(" ")))
            + 0.3 * share(m["sourceMessageIds"], row["source_message_ids"])
            + 0.2 * share(people, theirs)
        )
        if min(score, 1.0) > THRESHOLD:
            return row["id"]
    return None


def share(a: list, b: list) -> float:
    longest = max(len(a), len(b))
    if not longest:
        return 0.0
    found = set(b)
    return sum(1 for item in a if item in found) / longest


def insert(loader: Connection, m: dict, digest: str, started: datetime) -> None:
    compact = {"separators": (",", ":"), "ensure_ascii": False}
    extracted = m.get("extractedAt") or started.isoformat()
    loader.execute(
        "INSERT INTO memories (id, source_message_ids, participants, summary, confidence, content_hash,"
        " extracted_at) VALUES ($1, ARRAY(SELECT jsonb_array_elements_text($2::jsonb)), $3::jsonb, $4,"
        " $5, $6, $7::timestamptz)",
        (
            m["id"],
            json.dumps(m["sourceMessageIds"]),
            json.dumps(m["participants"], **compact),
            m["summary"],
            m["confidence"],
            digest,
            str(extracted),
        ),
    )
    context = m.get("emotionalContext")
    if context:
        loader.execute(
            "INSERT INTO emotional_contexts (id, memory_id, primary_mood, intensity, themes,"
            " emotional_markers, contextual_events, temporal_patterns)"
            " VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7::jsonb, $8::jsonb)",
            (
                context.get("id") or f"ec-{m['id']}",
                m["id"],
                context["primaryMood"],
                context["intensity"],
                *(
                    json.dumps(context.get(k, default), **compact)
                    for k, default in (
                        ("themes", []),
                        ("emotionalMarkers", []),
                        ("contextualEvents", []),
                        ("temporalPatterns", {}),
                    )
                ),
            ),
        )
    dynamics = m.get("relationshipDynamics")
    if dynamics:
        parts = ("overallDynamics", "participantDynamics", "communicationPatterns", "interactionQuality")
        loader.execute(
            "INSERT INTO relationship_dynamics (id, memory_id, overall_dynamics, participant_dynamics,"
            " communication_patterns, interaction_quality)"
            " VALUES ($1, $2, $3::jsonb, $4::jsonb, $5::jsonb, $6::jsonb)",
            (
                dynamics.get("id") or f"rd-{m['id']}",
                m["id"],
                *(json.dumps(dynamics.get(k, {}), **compact) for k in parts),
            ),
        )


def reject(loader, run_id, source, line_no, raw, category, reason, message) -> str:
    loader.execute(
        "INSERT INTO pipeline_rejects (run_id, source_file, source_line, category, reason, message, raw)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        (run_id, source, line_no, category, reason, message or reason, raw.replace("\x00", "\\u0000")),
    )
    return category


# --- (d) dlt ---------------------------------------------------------------------------------

DLT_SCRIPT = """
import json, resource, sys, time
import dlt
from dlt.sources.filesystem import filesystem, read_jsonl

folder, url = sys.argv[1], sys.argv[2]
began = time.perf_counter()
pipeline = dlt.pipeline("peers_dlt", destination=dlt.destinations.postgres(url), dataset_name="dlt_data",
                        pipelines_dir=folder + "/.dlt-pipelines")
info = pipeline.run(filesystem(bucket_url=folder, file_glob="*.jsonl") | read_jsonl(), table_name="memories")
seconds = time.perf_counter() - began
rows = pipeline.last_trace.last_normalize_info.row_counts
print(json.dumps({"seconds": seconds, "row_counts": rows, "version": dlt.__version__,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_dlt(source: Path, url: str, out: Path) -> dict:
    venv = out / "venv-dlt"
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "dlt[postgres]"],
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        return {
            "failed": f"could not install dlt[postgres]: {(exc.stderr or exc.stdout or '').strip()[-400:]}"
        }
    folder = out / "dlt-input"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    kept = objects_only(source, folder / "memories.jsonl")
    began = perf_counter()
    done = subprocess.run(
        [python, "-c", DLT_SCRIPT, str(folder), dlt_url(url)], capture_output=True, text=True
    )
    wall = perf_counter() - began
    if done.returncode != 0:
        return {"failed": f"dlt exited {done.returncode}: {last_error(done.stderr)}"}
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "seconds": round(wall, 3),
        "records_per_second": round(kept / wall, 1),
        "records_read": kept,
        "row_counts": data["row_counts"],
        "peak_rss_mb": round(data["peak_rss_mb"], 1),
        "version": data["version"],
        "what": "documented JSONL path (filesystem | read_jsonl) into postgres, default loader; reads a "
        "pre-filtered copy (JSON objects only: it stops at the first malformed line); no validation, "
        "no dedup; nested lists become child tables",
    }


def last_error(stderr: str) -> str:
    """The lines of a failed tool's stderr that name the error (its tail when none does)."""
    named = [line.strip() for line in stderr.splitlines() if "Error" in line or "Exception" in line]
    return " / ".join(named[-3:])[-600:] if named else stderr.strip()[-600:]


def objects_only(source: Path, target: Path) -> int:
    """Copy the lines that are JSON objects (decoded as UTF-8); their count."""
    kept = 0
    with source.open("rb") as lines, target.open("wb") as copy:
        for line in lines:
            try:
                if isinstance(json.loads(line.decode("utf-8")), dict):
                    copy.write(line if line.endswith(b"\n") else line + b"\n")
                    kept += 1
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
    return kept


# --- (e) pgloader ----------------------------------------------------------------------------


def run_pgloader(pipeline_url: str, url: str, out: Path, records: int) -> dict:
    """pgloader loads CSVs of the pipeline's final rows, table by table (parents first), into
    the same indexed tables; its seconds are the sum of its runs."""
    if shutil.which("pgloader") is None:
        for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "pgloader"]):
            done = subprocess.run(
                step, capture_output=True, text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            )
            if done.returncode != 0:
                return {"failed": f"{' '.join(step)} exited {done.returncode}: {done.stderr.strip()[-400:]}"}
    version = subprocess.run(["pgloader", "--version"], capture_output=True, text=True).stdout.strip()
    target = Connection(url)
    ensure_schema(target, DATASET)
    target.close()
    source = Connection(pipeline_url)
    seconds, csv_rows = 0.0, {}
    for table in DATASET.tables:
        names = source.execute(f"SELECT * FROM {table.name} LIMIT 0").schema.names
        columns = [c for c in names if c not in ("created_at", "updated_at")]
        rows = source.execute(f"SELECT {', '.join(f'{c}::text AS {c}' for c in columns)} FROM {table.name}")
        csv_path = out / f"pgloader-{table.name}.csv"
        pacsv.write_csv(rows, csv_path, pacsv.WriteOptions(include_header=False))
        command = out / f"pgloader-{table.name}.load"
        command.write_text(
            f"LOAD CSV FROM '{csv_path.resolve()}' ({', '.join(columns)})\n"
            f"  INTO {pgloader_url(url)}?tablename={table.name} ({', '.join(columns)})\n"
            "  WITH fields optionally enclosed by '\"', fields escaped by double-quote,\n"
            "       fields terminated by ',', batch rows = 25000;\n"
        )
        began = perf_counter()
        done = subprocess.run(["pgloader", str(command)], capture_output=True, text=True)
        seconds += perf_counter() - began
        if done.returncode != 0:
            source.close()
            return {
                "failed": f"pgloader exited {done.returncode} on {table.name}: "
                f"{last_error(done.stderr + done.stdout)}",
                "version": version,
            }
        csv_rows[table.name] = rows.num_rows
    source.close()
    check = Connection(url)
    count = "SELECT count(*) AS n FROM {}"
    loaded = {t.name: check.execute(count.format(t.name)).to_pylist()[0]["n"] for t in DATASET.tables}
    check.close()
    return {
        "seconds": round(seconds, 3),
        "records_per_second": round(records / seconds, 1),
        "loaded": loaded,
        "csv_rows": csv_rows,
        "version": version,
        "what": f"CSVs of the pipeline's final rows into the same {len(DATASET.tables)} indexed tables, one "
        "pgloader run per table (no checks); records/s counts input records, as for the pipeline",
    }


def _socket(url: str) -> tuple[str, str, str, str]:
    """User, socket directory, port and database of the embedded server's URL."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return parts.username or "postgres", query["host"][0], query.get("port", ["5432"])[0], parts.path


def dlt_url(url: str) -> str:
    """dlt wants a host and a password: the socket goes in the query; the embedded server
    trusts local connections, so the password is a placeholder it ignores."""
    user, socket, port, database = _socket(url)
    return f"postgresql://{user}:unused@localhost:{port}{database}?host={socket}"


def pgloader_url(url: str) -> str:
    """pgloader names a Unix socket directory as ``unix:DIR``."""
    user, socket, port, database = _socket(url)
    return f"postgresql://{user}@unix:{socket}:{port}{database}"


def markdown(r: dict) -> str:
    lines = [
        "| approach | seconds | records/s | x pipeline | peak RSS MB | notes |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("ceiling", "pipeline", "original", "dlt", "pgloader"):
        p = r[name]
        if "records_per_second" not in p:
            lines.append(f"| {name} | | | | | {p.get('failed') or p.get('skipped')} |")
            continue
        seconds = f"{p['seconds']:,.1f}" + (" (extrapolated)" if p.get("extrapolated") else "")
        rss = f"{p['peak_rss_mb']:,.0f}" if p.get("peak_rss_mb") else ""
        lines.append(
            f"| {name} | {seconds} | {p['records_per_second']:,.0f} | {p['x_pipeline']:.3f} | {rss} "
            f"| {p['what']} |"
        )
    m = r["machine"]
    lines.append("")
    lines.append(
        f"{r['records_in']:,} records, batch size {r['batch_size']:,}; {m['nproc']} CPUs, {m['cpu']}, "
        f"{m['ram_gb']} GB RAM; {r['versions']['postgresql'].split(' on ')[0]}"
    )
    runs = "; ".join(f"{x['pipeline_seconds']:.1f} / {x['ceiling_seconds']:.1f}" for x in r["runs"])
    lines.append(f"every run (pipeline s / ceiling s): {runs}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
