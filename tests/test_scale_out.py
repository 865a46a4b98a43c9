"""A run on Dask workers leaves what a run in one process leaves, whatever the workers, the
parts, the order tasks finish in, a worker killed or the run itself killed and resumed.

The export holds the generator's mix (exact and near duplicates, taken ids, legacy records
sharing the ``legacy-content`` source, broken lines), records the server refuses followed by
copies that must then load, and rows stored before the run.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from distributed import Client, LocalCluster

from pipeline import BatchConfig, migrate
from pipeline.dedup.known import KnownKeys
from pipeline.errors import InputError
from pipeline.extract.parts import Part, file_parts, part_lines, quotes_in, read_part, with_quote_states
from pipeline.extract.readers import END, file_frames
from pipeline.load.connection import Connection
from pipeline.load.databases import fresh_database
from pipeline.run import cluster as run_cluster
from pipeline.testing import cli
from tests.conftest import ROOT, TOTALS, final_state, memory, rows, write_jsonl

RECORDS = 2_400
STORED_BEFORE = 300


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """(rows stored before the run, the run's export)."""
    folder = tmp_path_factory.mktemp("scale-out")
    export = folder / "export.jsonl"
    generated = subprocess.run(
        [sys.executable, ROOT / "data" / "generate.py", "--records", str(RECORDS), "--out", export],
        capture_output=True,
        text=True,
    )
    assert generated.returncode == 0, generated.stderr
    lines = export.read_bytes().splitlines()
    # An id holding NUL is refused (PostgreSQL cannot store it); the copy after it is then no
    # duplicate and loads, next to it (one batch) and far from it (another part).
    refused = memory(90_001, id="refused\u0000near")
    far = memory(90_002, id="refused\u0000far")
    refusals = [refused, {**refused, "id": "kept-near"}, far]
    lines[40:40] = [json.dumps(record).encode() for record in refusals]
    lines.append(json.dumps({**far, "id": "kept-far"}).encode())
    # Two memories holding one emotional context id: the server refuses the second. Only the
    # context links them, so they must be decided in one group.
    context = {"id": "ec-shared", "primaryMood": "mixed", "intensity": 4, "themes": []}
    context |= {"emotionalMarkers": [], "contextualEvents": [], "temporalPatterns": {}}
    lines.insert(60, json.dumps(memory(90_003, emotionalContext=context)).encode())
    lines.append(json.dumps(memory(90_004, emotionalContext=context)).encode())
    export.write_bytes(b"\n".join(lines) + b"\n")
    before = folder / "before.jsonl"
    before.write_bytes(b"\n".join(lines[500 : 500 + STORED_BEFORE]) + b"\n")
    return before, export


def migrated(server_url: str, name: str, inputs, client=None, **settings) -> dict:
    """What the runs leave: the rows stored before, then the export (on ``client``'s workers)."""
    before, export = inputs
    url = fresh_database(server_url, name)
    migrate([str(before)], BatchConfig(log_progress=False), db_url=url)
    migrate([str(export)], BatchConfig(log_progress=False, **settings), db_url=url, client=client)
    return decisions(final_state(url))


def decisions(state: dict) -> dict:
    """The state but how the batches were cut (each is in the ledger once, whatever the cut)."""
    batches = state.pop("batches")
    assert batches["n"] == batches["d"]
    assert_totals_add_up(state["totals"])
    return state


def assert_totals_add_up(totals: dict) -> None:
    """The accounting invariant: every record processed is loaded, failed, skipped or merged."""
    not_loaded = totals["failed"] + totals["duplicates_skipped"] + totals["similar_merged"]
    assert totals["processed"] == totals["successful"] + not_loaded


@pytest.fixture(scope="module")
def one_process(server_url, inputs) -> dict:
    state = migrated(server_url, "scale_one_process", inputs)
    totals = state["totals"]
    # The export holds every kind of decision the workers must reproduce.
    assert totals["duplicates_skipped"] > STORED_BEFORE and totals["similar_merged"] > 0
    assert totals["errors_by_reason"]["unique_violation:memories_pkey"] > 0
    stored = {id_ for _, id_, _, _ in state["memories"]}
    assert {"kept-near", "kept-far"} <= stored
    assert totals["errors_by_reason"]["id:storable_text"] == 2  # the ids holding NUL
    assert totals["errors_by_reason"]["unique_violation:emotional_contexts_pkey"] == 1
    return state


class ShuffledClient(Client):
    """Tasks run in any order: each is given a random priority."""

    def submit(self, *args, **kwargs):
        return super().submit(*args, priority=random.randint(0, 1_000), **kwargs)


def local_cluster(workers: int, **env) -> LocalCluster:
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        dashboard_address=":0",
        env={"POLARS_MAX_THREADS": "1", **env},
    )


@pytest.mark.parametrize(
    ("workers", "batch_size", "shared_memory"), [(1, 37, True), (2, 53, False), (3, 101, True)]
)
def test_workers_leave_what_one_process_leaves(
    server_url, inputs, one_process, workers, batch_size, shared_memory, monkeypatch
):
    """Results come back in shared memory, or in the messages as from another host."""
    if not shared_memory:
        monkeypatch.setattr(run_cluster, "SHARED_MEMORY", None)
    random.seed(workers)
    with local_cluster(workers) as cluster, ShuffledClient(cluster) as client:
        state = migrated(server_url, f"scale_workers_{workers}", inputs, client, batch_size=batch_size)
    assert state == one_process


@pytest.mark.parametrize("shards", [1, 2])
def test_a_killed_worker_is_replaced_and_the_results_are_the_same(
    server_url, inputs, one_process, tmp_path, shards
):
    """With shards, the worker dies in the first pass, which finds the groups."""
    marker = tmp_path / "killed"
    settings = {"batch_size": 61, "shards": shards, "max_connections": 2 * shards}
    with (
        local_cluster(2, PIPELINE_KILL_AT="prepare:3", PIPELINE_KILL_ONCE=str(marker)) as cluster,
        Client(cluster) as client,
    ):
        state = migrated(server_url, f"scale_worker_killed_{shards}", inputs, client, **settings)
    assert marker.exists(), "no worker was killed"
    assert state == one_process


@pytest.mark.parametrize(
    ("kill_at", "start_on", "resume_on"),
    [
        ("staged:2", ["--workers", "2"], ["--workers", "2"]),
        ("copy:4", ["--workers", "2"], []),
        ("accounted:5", ["--workers", "2"], ["--workers", "3"]),
        ("committed:3", [], ["--workers", "2"]),
    ],
    ids=[
        "staged-on-workers",
        "copy-then-one-process",
        "accounted-then-other-workers",
        "one-process-then-workers",
    ],
)
def test_a_killed_run_resumes_to_the_same_results(
    server_url, inputs, one_process, kill_at, start_on, resume_on
):
    """A run cuts its batches as it started: in parts on workers, in records in one process."""
    before, export = inputs
    name = f"scale_driver_{kill_at.replace(':', '_')}_{len(start_on)}_{len(resume_on)}"
    url = fresh_database(server_url, name)
    migrate([str(before)], BatchConfig(log_progress=False), db_url=url)
    args = ("migrate", export, "--db", url, "--batch-size", "211", "--run-id", "R", "--quiet")
    killed = cli(*args, *start_on, env={"PIPELINE_KILL_AT": kill_at})
    assert killed.returncode == -9, killed.stderr
    left = dead_runs_folders()
    assert left or not start_on  # a killed run cannot remove its shared-memory folder
    resumed = cli("migrate", "--resume", "R", "--db", url, "--quiet", *resume_on)
    assert resumed.returncode == 0, resumed.stderr
    assert decisions(final_state(url)) == one_process
    if resume_on:  # a run on workers removes what killed runs left
        assert not set(left) & set(dead_runs_folders())


def test_known_keys_keep_no_batch_handed_over_in_shared_memory(tmp_path):
    """The run keeps the ids of the rows it loads for the whole run: a batch's shared-memory
    file must be unmapped once the batch is done all the same."""
    known = KnownKeys()
    ids = [f"memory-{n:020d}" for n in range(1_000)]  # longer than the 12 bytes a view holds itself
    folder = run_cluster._shared_folder(run_cluster.SHARED_MEMORY or tempfile.gettempdir())
    try:
        batch = pl.DataFrame({"record": range(1_000), "id": ids, "raw": ["x" * 500] * 1_000}).with_columns(
            content_hash=pl.col("id"), sources=pl.concat_list(pl.col("id"))
        )
        handed = run_cluster.ArrowFrame(batch, folder)
        received = handed.data()
        loaded = received.filter(pl.col("record") % 2 == 0)
        known.add(loaded.select("id", "content_hash"), loaded.select("id", "sources"))
        del received, loaded
        assert known.citing(pl.Series(ids[2:4])).to_list() == ids[2:3]
        assert handed.path not in Path("/proc/self/maps").read_text()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_known_keys_noted_by_shards_at_once_are_all_known():
    """Each shard's lookup thread notes its loaded rows while the others look theirs up."""
    known = KnownKeys()
    batches = [
        pl.DataFrame(
            {
                "id": [f"s{shard}-{n}-{i}" for i in range(50)],
                "content_hash": [f"h{shard}-{n}-{i}" for i in range(50)],
                "sources": [[f"m{shard}-{n}-{i}"] for i in range(50)],
            }
        )
        for shard in range(4)
        for n in range(150)
    ]

    def note(shard: int) -> None:
        for loaded in batches[shard * 150 : (shard + 1) * 150]:
            known.add(loaded.select("id", "content_hash"), loaded.select("id", "sources"))
            known.maybe_stored(loaded.select("id", "content_hash"))

    threads = [threading.Thread(target=note, args=(shard,)) for shard in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = pl.concat(batches)
    assert known.maybe_stored(every.select("id", "content_hash")).height == every.height
    sources = every["sources"].list.first()
    assert sorted(known.citing(sources)) == sorted(every["id"])


@pytest.mark.parametrize(("shards", "workers", "batch_size"), [(2, None, 37), (3, 2, 53)])
def test_shards_leave_what_one_process_leaves(server_url, inputs, one_process, shards, workers, batch_size):
    """Each group of records that can affect each other (a hash, a key, a source) is decided
    in one shard, in input order, while the other shards decide and load theirs."""
    random.seed(shards)
    settings = {"batch_size": batch_size, "shards": shards, "max_connections": 2 * shards}
    if workers is None:
        state = migrated(server_url, f"scale_shards_{shards}", inputs, **settings)
    else:
        with local_cluster(workers) as cluster, ShuffledClient(cluster) as client:
            state = migrated(server_url, f"scale_shards_{shards}_on_{workers}", inputs, client, **settings)
    assert state == one_process


@pytest.mark.parametrize(
    ("kill_at", "start_on", "resume_on"),
    [
        ("prepare:5", [], ["--workers", "2"]),
        ("committed:7", ["--workers", "2"], []),
        ("copy:9", ["--workers", "2"], ["--workers", "2"]),
    ],
    ids=["finding-the-groups", "one-shard-committed", "copying"],
)
def test_a_killed_run_with_shards_resumes_to_the_same_results(
    server_url, inputs, one_process, kill_at, start_on, resume_on
):
    """Each shard goes on after its own last committed part of a batch; the groups are found
    again, alike."""
    before, export = inputs
    url = fresh_database(server_url, f"scale_shards_killed_{kill_at.replace(':', '_')}")
    migrate([str(before)], BatchConfig(log_progress=False), db_url=url)
    args = ("migrate", export, "--db", url, "--batch-size", "211", "--run-id", "S", "--quiet")
    killed = cli(*args, "--shards", "2", *start_on, env={"PIPELINE_KILL_AT": kill_at})
    assert killed.returncode == -9, killed.stderr
    other = cli("migrate", "--resume", "S", "--db", url, "--shards", "3")
    assert other.returncode == 2 and "shards was 2, now 3" in other.stderr
    resumed = cli("migrate", "--resume", "S", "--db", url, "--quiet", *resume_on)
    assert resumed.returncode == 0, resumed.stderr
    assert decisions(final_state(url)) == one_process


def dead_runs_folders() -> list[str]:
    """The shared-memory folders of runs whose process is gone."""
    folders = [path.name for path in Path("/dev/shm").glob("pipeline-*-*")]
    return [name for name in folders if not Path(f"/proc/{name.split('-')[1]}").exists()]


@pytest.mark.parametrize("batch_size", ["90", "auto"])
def test_the_command_on_an_existing_scheduler_reports_what_one_process_does(server_url, batch_size):
    sample = ROOT / "data" / "sample.jsonl"
    alone = cli("migrate", sample, "--db", fresh_database(server_url, "scale_cli_alone"), "--format=json")
    with local_cluster(2) as cluster:
        url = fresh_database(server_url, "scale_cli_cluster")
        spread = cli(
            "migrate", sample, "--db", url, "--cluster", cluster.scheduler_address,
            "--batch-size", batch_size, "--format=json",
        )  # fmt: skip
    assert alone.returncode == spread.returncode == 0, spread.stderr
    reports = [json.loads(done.stdout) for done in (alone, spread)]
    assert [{k: report[k] for k in TOTALS} for report in reports] == [{k: reports[0][k] for k in TOTALS}] * 2
    assert_totals_add_up(reports[1])
    assert reports[1]["stage_seconds"]["wait"] > 0


@pytest.mark.parametrize("shards", ["1", "2"])
def test_fail_fast_on_workers_stops_and_resumes_to_what_one_process_leaves(
    server_url, inputs, one_process, shards
):
    before, export = inputs
    url = fresh_database(server_url, f"scale_fail_fast_{shards}")
    migrate([str(before)], BatchConfig(log_progress=False), db_url=url)
    args = ("migrate", export, "--db", url, "--batch-size", "300", "--run-id", "F", "--quiet")
    stopped = cli(*args, "--workers", "2", "--fail-fast", "--shards", shards)
    assert stopped.returncode == 1
    assert "--fail-fast" in stopped.stderr and "Traceback" not in stopped.stderr
    resumed = cli("migrate", "--resume", "F", "--db", url, "--quiet", "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert decisions(final_state(url)) == one_process


@pytest.mark.parametrize("shards", [1, 2])
def test_a_run_on_three_workers_holds_two_connections_per_shard(server_url, inputs, shards):
    """Workers never connect: the shards' loader and lookup connections are all the server sees."""
    _, export = inputs
    url = fresh_database(server_url, f"scale_connections_{shards}")
    seen: list[int] = []
    done = threading.Event()
    watcher = Connection(url)

    def watch() -> None:
        while not done.is_set():
            # Autovacuum workers show in the database too: only clients count.
            sql = (
                "SELECT count(*) AS n FROM pg_stat_activity"
                " WHERE datname = current_database() AND backend_type = 'client backend'"
            )
            seen.append(rows(watcher, sql)[0]["n"] - 1)
            time.sleep(0.02)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        with local_cluster(3) as cluster, Client(cluster) as client:
            config = BatchConfig(log_progress=False, batch_size=50, shards=shards, max_connections=2 * shards)
            assert_totals_add_up(migrate([str(export)], config, db_url=url, client=client).to_dict())
    finally:
        done.set()
        thread.join()
        watcher.close()
    assert max(seen) == 2 * shards


def test_parquet_in_row_ranges_gives_the_same_results(server_url, tmp_path):
    path = tmp_path / "memories.parquet"
    records = [memory(n, confidence=n % 12) for n in range(300)] + [memory(n) for n in range(0, 300, 7)]
    pl.DataFrame(records).write_parquet(path, row_group_size=40)
    assert _both_ways(server_url, path, lambda url: decisions(final_state(url)), batch_size=29)


@pytest.mark.parametrize(
    ("batch_size", "ranges"),
    [
        (100, [(0, 80), (80, 160), (160, 240), (240, 300)]),
        (29, [(0, 29), (29, 40), (40, 69), (69, 80)]),
        (1_000, [(0, 300)]),
    ],
)
def test_parquet_parts_end_where_row_groups_end(tmp_path, batch_size, ranges):
    """No two parts decode one row group, and no part holds more than a batch."""
    path = tmp_path / "groups.parquet"
    pl.DataFrame({"n": range(300)}).write_parquet(path, row_group_size=40)
    parts = file_parts(path, batch_size)
    assert [(part.start, part.stop) for part in parts][: len(ranges)] == ranges
    assert parts[-1].stop == 300 and all(part.stop - part.start <= batch_size for part in parts)


@pytest.mark.parametrize("shards", [1, 2])
def test_csv_in_byte_ranges_gives_the_same_results(server_url, shards):
    """A CSV's quoted cells hold line breaks: the workers' ranges start in them."""
    path = ROOT / "data" / "messages_sample.csv"
    sharded = {"shards": shards, "max_connections": 2 * shards}
    assert _both_ways(server_url, path, _messages_state, sharded, dataset="messages", batch_size=23)


def test_a_csv_run_killed_on_workers_resumes_to_what_one_process_leaves(server_url):
    """The resumed run counts the lines of the parts it committed before, quoted cells and all."""
    path = ROOT / "data" / "messages_sample.csv"
    alone = fresh_database(server_url, "scale_csv_alone")
    migrate([str(path)], BatchConfig(log_progress=False, dataset="messages"), db_url=alone)
    url = fresh_database(server_url, "scale_csv_resumed")
    settings = ("--db", url, "--quiet", "--workers", "2")
    run = ("migrate", path, "--dataset", "messages", "--batch-size", "23", "--run-id", "C", *settings)
    killed = cli(*run, env={"PIPELINE_KILL_AT": "committed:4"})
    assert killed.returncode == -9, killed.stderr
    resumed = cli("migrate", "--resume", "C", *settings)
    assert resumed.returncode == 0, resumed.stderr
    assert _messages_state(url) == _messages_state(alone)


def _both_ways(server_url: str, path: Path, state, on_workers: dict | None = None, **settings) -> bool:
    """Whether ``path`` migrated in one process and on two workers (with ``on_workers``
    settings too) leaves the same ``state``."""
    states = []
    for workers in (None, 2):
        url = fresh_database(server_url, f"scale_{path.suffix[1:]}_{workers or 0}")
        config = BatchConfig(log_progress=False, **settings, **((on_workers or {}) if workers else {}))
        if workers is None:
            migrate([str(path)], config, db_url=url)
        else:
            with local_cluster(workers) as cluster, Client(cluster) as client:
                migrate([str(path)], config, db_url=url, client=client)
        states.append(state(url))
    assert states[0]["totals"]["successful"] > 0
    for state in states:
        assert_totals_add_up(state["totals"])
    return states[0] == states[1]


def _messages_state(url: str) -> dict:
    db = Connection(url)
    try:
        result = json.loads(rows(db, "SELECT result::text AS r FROM pipeline_runs")[0]["r"])
        return {
            "messages": rows(db, "SELECT id, content_hash, text FROM messages ORDER BY id"),
            "links": rows(db, "SELECT message_id, url FROM message_links ORDER BY 1, 2"),
            "rejects": rows(
                db,
                "SELECT source_line, category, reason, duplicate_of FROM pipeline_rejects ORDER BY 1, 2, 3",
            ),
            "totals": {k: result[k] for k in TOTALS},
        }
    finally:
        db.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "2", "--cluster", "tcp://127.0.0.1:1"], "choose one"),
        (["--cluster", "tcp://127.0.0.1:1"], "cannot reach the Dask scheduler at tcp://127.0.0.1:1"),
        (["--max-connections", "1"], "max_connections must be at least 2"),
        (["--shards", "3", "--max-connections", "4"], "max_connections must be at least 6"),
        (["--shards", "2", "--batch-size", "auto"], "shards need a fixed batch_size"),
    ],
)
def test_cluster_mistakes_are_one_clear_line(db_url, tmp_path, args, message):
    export = write_jsonl(tmp_path / "one.jsonl", [memory(1)])
    done = cli("migrate", export, "--db", db_url, *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_broken_csv_on_workers_is_one_clear_line_naming_its_bytes(db_url, tmp_path):
    """A quote left open far into the file: the worker's error is this process's, with no
    traceback (a worker logs a task that raises), and the part's bytes in it."""
    rows = ["id,summary,confidence"] + [f"m{n},summary number {n},5" for n in range(3_000)]
    rows[2_001] = 'm2000,a quote "left open,5'
    path = tmp_path / "open-quote.csv"
    path.write_text("\n".join(rows) + "\n")
    alone = cli("migrate", path, "--db", db_url, "--batch-size", "500", "--quiet")
    spread = cli("migrate", path, "--db", db_url, "--batch-size", "500", "--quiet", "--workers", "2")
    assert alone.returncode == spread.returncode == 2
    assert "cannot be read at bytes" in spread.stderr and "Traceback" not in spread.stderr
    assert spread.stderr.count("\n") == 1


def test_a_csv_gone_before_its_quotes_are_counted_is_an_input_error(tmp_path):
    """Counted on a worker, the error comes back as this process's (``cluster._Failed``)."""
    with pytest.raises(InputError, match=r"gone\.csv: cannot be read"):
        quotes_in(Part(str(tmp_path / "gone.csv"), 0, 10))


def test_parts_of_blank_lines_only_are_batches_of_no_records(server_url, tmp_path):
    """Cut in byte ranges (here, without a cluster), a run of blank lines longer than a part
    makes parts without records: they are counted, and change nothing."""
    lines = [json.dumps(memory(n)) for n in range(6)]
    path = tmp_path / "gaps.jsonl"
    path.write_text("\n".join(lines[:3] + [""] * 5_000 + lines[3:] + ["  "] * 2_000) + "\n")
    states = []
    for partitioning in ("records", "ranges"):
        url = fresh_database(server_url, f"scale_gaps_{partitioning}")
        config = BatchConfig(log_progress=False, batch_size=2, partitioning=partitioning)
        result = migrate([str(path)], config, db_url=url)
        states.append((decisions(final_state(url)), result.processed, result.successful))
    assert states[0] == states[1] == (states[0][0], 6, 6)
    db = Connection(url)
    empty = rows(db, "SELECT count(*) AS n FROM pipeline_batches WHERE rows_in = 0")[0]["n"]
    db.close()
    assert empty > 0  # the parts without records are in the ledger too


JSONL_EDGES = [
    "\ufeff" + json.dumps(memory(1)),
    "",
    json.dumps(memory(2)) + "\r",
    "   ",
    json.dumps(memory(3, summary="x" * 3_000)),
    '{"id": "broken',
    "INVALID not utf-8",
    json.dumps(memory(4)),
    "",
    "",
    json.dumps(memory(5)),
]


# Cells a CSV row may hold (each quoted as a CSV writer would): separators, doubled quotes,
# line breaks of both kinds, a cell longer than a seek and full of both, nothing at all.
CSV_CELLS = [
    "plain",
    "a, b",
    'she said "hi"',
    "two\nlines",
    "windows\r\nbreak",
    '"',
    "",
    ('"x" ' * 20_000) + "\nend",
    '{"nested": "json", "n": 1}',
]


def _csv_edges(eol: str) -> str:
    """A CSV with a byte-order mark, a quoted header, blank lines and every kind of cell."""
    rows = ['\ufeff"id","text",note']
    for n in range(40):
        quoted = CSV_CELLS[n * 7 % len(CSV_CELLS)].replace('"', '""')
        note = "x" if n % 3 else ""
        rows.append(f'{n},"{quoted}",{note}')
        if n % 11 == 5:
            rows.append("")
    return eol.join(rows)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 1_000])
@pytest.mark.parametrize("trailing_newline", [True, False])
@pytest.mark.parametrize("kind", ["jsonl", "csv", "csv-crlf"])
def test_parts_hold_the_records_of_the_whole_file(tmp_path, batch_size, trailing_newline, kind):
    eol = "\r\n" if kind.endswith("crlf") else "\n"
    invalid_utf8 = "\udcff\udcfe"  # written back as the bytes ff fe
    text = "\n".join(JSONL_EDGES).replace("INVALID", invalid_utf8) if kind == "jsonl" else _csv_edges(eol)
    path = tmp_path / f"edges.{kind.split('-')[0]}"
    path.write_bytes((text + (eol if trailing_newline else "")).encode(errors="surrogateescape"))
    whole = pl.concat(file_frames(path, 1_000, frozenset())).drop(END)
    parts = file_parts(path, batch_size)
    assert len(parts) > 1 or batch_size == 1_000
    if kind != "jsonl":
        assert whole.height == 44
        parts = with_quote_states(parts, [quotes_in(part) for part in parts])
    frames, before = [], 0
    for part in parts:
        frame, lines = read_part(part)
        assert part_lines(part) == lines
        frames.append(frame.with_columns(pl.col("source_line") + before))
        before += lines
    assert pl.concat(frames).equals(whole)
