"""Batch sizes: ``pipeline bench``, ``--batch-size auto`` and its resume, on a real PostgreSQL."""

import csv
import itertools
import json
import re
import subprocess
import sys
import tomllib
from statistics import median
from urllib.parse import urlsplit, urlunsplit

import polars as pl
import pytest
from matplotlib.figure import Figure

from pipeline import BatchConfig, RunStopped, migrate
from pipeline.bench import (
    DEFAULT_BATCH_SIZES,
    BenchResult,
    Measurement,
    bench,
    best_size,
    fitted_sizes,
    record_count,
    summarized,
)
from pipeline.errors import ConfigError, DatabaseError
from pipeline.extract import scan_batches
from pipeline.load.connection import Connection
from pipeline.load.databases import database_url
from pipeline.run import autosize
from pipeline.run.autosize import AutoBatchSize
from tests.conftest import ROOT, assert_invariant, memory, rows, write_jsonl
from tests.test_cli import cli

SAMPLE = ROOT / "data" / "sample.jsonl"


def test_bench_compares_two_sizes_writes_csv_and_png_and_names_the_best(server_url, tmp_path):
    table, plot = tmp_path / "bench.csv", tmp_path / "bench.png"
    done = cli(
        "bench", SAMPLE, "--db", server_url, "--batch-sizes", "200,1000", "--repeat", "2",
        "--csv", table, "--plot", plot,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "best batch size: " in done.stdout
    progress = [line for line in done.stderr.splitlines() if line.startswith("batch size ")]
    assert len(progress) == 4  # each size twice
    written = list(csv.DictReader(table.open()))
    assert [r["batch_size"] for r in written] == ["200", "1000"]
    assert {r["runs"] for r in written} == {"2"}
    assert {r["exit_code"] for r in written} == {"0"}
    assert {r["processed"] for r in written} == {"1000"}
    assert all(float(r["peak_rss_mb"]) > 0 and float(r["load_seconds"]) > 0 for r in written)
    for r in written:
        speeds = float(r["rows_per_second_min"]), float(r["rows_per_second"]), float(r["rows_per_second_max"])
        assert 0 < speeds[0] <= speeds[1] <= speeds[2]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    databases = rows_of(server_url, "SELECT datname FROM pg_database WHERE datname LIKE 'bench_%'")
    assert databases == []


def rows_of(url: str, sql: str) -> list[dict]:
    loader = Connection(url)
    try:
        return rows(loader, sql)
    finally:
        loader.close()


def test_bench_repeats_each_size_and_shows_the_median_and_range(server_url, tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: figures.append(figure))
    path = write_jsonl(tmp_path / "in.jsonl", [memory(n) for n in range(1, 41)])
    result = bench(path, [10, "auto"], db_url=server_url, repeat=2, plot_path=tmp_path / "p.png")
    assert [s.batch_size for s in result.sizes] == [10, "auto"]
    for size in result.sizes:
        assert [m.repeat for m in size.measurements] == [1, 2]
        assert all(m.ok and m.processed == 40 and m.successful == 40 for m in size.measurements)
        speeds = [m.rows_per_second for m in size.measurements]
        assert size.rows_per_second == pytest.approx(median(speeds), abs=0.1)
        assert (size.rows_per_second_min, size.rows_per_second_max) == (min(speeds), max(speeds))
        assert size.peak_rss_mb == max(m.peak_rss_mb for m in size.measurements)
        assert f"{min(speeds):,.0f}-{max(speeds):,.0f}" in result.table()
    assert result.sizes[1].batch_sizes == [[autosize.START]] * 2
    assert result.best in (10, "auto")
    assert "best batch size: " in result.table()

    (figure,) = figures
    speed = figure.axes[0]
    assert speed.get_ylim()[0] == 0
    (bars,) = speed.containers  # the fixed size's median, with its range as an error bar
    ((_, low), (_, high)) = bars.lines[2][0].get_segments()[0]
    fixed = result.sizes[0]
    assert (low, high) == pytest.approx((fixed.rows_per_second_min, fixed.rows_per_second_max))


def test_bench_fits_its_default_sizes_to_the_file_and_runs_given_sizes_as_given(server_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(n) for n in range(1, 41)])
    default = bench(path, db_url=server_url, repeat=1)
    assert [s.batch_size for s in default.sizes] == [min(DEFAULT_BATCH_SIZES)]
    assert default.records == 40
    assert default.dropped == sorted(DEFAULT_BATCH_SIZES)[1:]
    assert f"left out the default sizes {default.dropped[0]:,}," in default.table()
    given = bench(path, [10, 5000], db_url=server_url, repeat=1)
    assert [(s.batch_size, s.processed) for s in given.sizes] == [(10, 40), (5000, 40)]
    assert given.dropped == []


def test_a_size_that_failed_in_one_run_is_reported_and_not_chosen():
    fine = [Measurement(10, 0, repeat=n, processed=5, rows_per_second=50.0 * n) for n in (1, 2)]
    flaky = [Measurement(20, 0, processed=5, rows_per_second=500.0), Measurement(20, 1, 2, error="boom")]
    sizes = [summarized(10, fine), summarized(20, flaky)]
    result = BenchResult("in.jsonl", 1024, 2, sizes, best_size(sizes, 1024))
    assert (sizes[1].ok, sizes[1].failures, sizes[1].error) == (False, 1, "boom")
    assert result.best == 10
    assert "20: failed 1 of 2 runs (exit 1): boom" in result.table()


def test_fitted_sizes_keep_one_size_that_loads_the_whole_file():
    sizes = (100, 500, 1000, 5000)
    assert fitted_sizes(sizes, 40) == ([100], [500, 1000, 5000])
    assert fitted_sizes(sizes, 500) == ([100, 500], [1000, 5000])
    assert fitted_sizes(sizes, 501) == ([100, 500, 1000], [5000])
    assert fitted_sizes(sizes, 10_000) == (list(sizes), [])


def test_record_count_counts_the_records_each_format_holds(tmp_path):
    records = [memory(n) for n in range(1, 8)]
    jsonl = tmp_path / "in.jsonl"
    lines = [json.dumps(r) for r in records]
    jsonl.write_text("\n".join([*lines[:3], "", "   ", *lines[3:]]))  # blank lines, no final newline
    table = pl.DataFrame({"id": [r["id"] for r in records], "summary": [r["summary"] for r in records]})
    table = table.with_columns(pl.col("summary").str.replace("Sam", "Sam\nand"))  # quoted newlines
    table.write_csv(tmp_path / "in.csv")
    table.write_parquet(tmp_path / "in.parquet")
    (tmp_path / "in.json").write_text(json.dumps(records))
    for name in ("in.jsonl", "in.csv", "in.parquet", "in.json"):
        assert record_count(tmp_path / name) == len(records), name


def test_bench_refuses_a_bad_size_or_repeat_before_migrating(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1)])
    nowhere = "postgresql://nobody@127.0.0.1:9/none"
    with pytest.raises(ConfigError, match="positive integer or 'auto'"):
        bench(path, [100, 0], db_url=nowhere)
    with pytest.raises(ConfigError, match="--repeat must be 1 or more"):
        bench(path, [100], db_url=nowhere, repeat=0)


def test_bench_without_matplotlib_says_how_to_install_it_before_migrating(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1)])
    # The package is not on PyPI: the hint names the bench extra's own requirements.
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["bench"]
    with pytest.raises(ConfigError, match=re.escape(f"pip install {' '.join(repr(r) for r in extra)}")):
        bench(path, [100], db_url="postgresql://nobody@127.0.0.1:9/none", plot_path=tmp_path / "p.png")


def test_bench_says_when_it_may_not_create_databases(server_url, tmp_path):
    admin = Connection(server_url)
    admin.execute("DROP ROLE IF EXISTS bench_nocreate")
    admin.execute("CREATE ROLE bench_nocreate LOGIN")
    admin.close()
    parts = urlsplit(server_url)
    url = urlunsplit(parts._replace(netloc="bench_nocreate@" + parts.netloc.rpartition("@")[2]))
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1)])
    with pytest.raises(DatabaseError, match="needs a user allowed to CREATE DATABASE"):
        bench(path, [100], db_url=url)


def test_database_url_keeps_the_socket_query():
    assert database_url("postgresql://u:p@/postgres?host=/tmp/x&port=5", "bench_10") == (
        "postgresql://u:p@/bench_10?host=/tmp/x&port=5"
    )


def test_scan_batches_asks_a_callable_for_each_batch_size(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(n) for n in range(1, 11)])
    sizes = iter([1, 2, 3, 100])
    current = {"size": next(sizes)}

    def size() -> int:
        return current["size"]

    cut = []
    for batch in scan_batches([path], size):
        cut.append(batch.frame["source_line"].to_list())
        current["size"] = next(sizes, 100)
    assert cut == [[1], [2, 3], [4, 5, 6], [7, 8, 9, 10]]


# The controller, fed with made-up measurements: (rows, rows staged next, seconds, rss, peak rss).
def feed(controller: AutoBatchSize, *steps) -> list[int]:
    return [controller.observe(*step) for step in steps]


def test_auto_doubles_while_throughput_improves_then_returns_to_the_faster_size():
    c = AutoBatchSize(memory_limit_mb=1000, size=10_000)
    sizes = feed(
        c,
        (10_000, 10_000, 9.0, 300, 300),  # the first batch is warm-up: not measured
        (10_000, 10_000, 1.0, 300, 300),  # 10k/s: try 20k
        (10_000, 20_000, 1.0, 300, 300),  # overlaps a 20k batch: not clean
        (20_000, 20_000, 1.0, 300, 300),  # 20k/s, +100%: try 40k
        (40_000, 40_000, 1.9, 300, 300),  # 21k/s, +5.3%: try 80k
        (80_000, 80_000, 3.9, 300, 300),  # 20.5k/s, slower: back to 40k and stay
        (40_000, 40_000, 0.1, 300, 300),
    )
    assert sizes == [10_000, 20_000, 20_000, 40_000, 80_000, 40_000, 40_000]
    assert c.settled


def test_auto_stops_growing_near_the_memory_limit_and_halves_above_it():
    c = AutoBatchSize(memory_limit_mb=1000, size=10_000, warm=True)
    assert feed(c, (10_000, 10_000, 1.0, 600, 700)) == [10_000]  # peak at 70%: stays
    assert c.settled
    c = AutoBatchSize(memory_limit_mb=1000, size=40_000, warm=True)
    assert feed(c, (40_000, 40_000, 1.0, 900, 900), (40_000, 20_000, 1.0, 900, 900)) == [20_000, 20_000]
    assert feed(c, (20_000, 20_000, 1.0, 900, 900)) == [10_000]
    c = AutoBatchSize(memory_limit_mb=1000, size=2_000, warm=True)
    assert feed(c, (2_000, 2_000, 1.0, 950, 950)) == [autosize.FLOOR]


def test_auto_never_goes_above_the_ceiling():
    c = AutoBatchSize(memory_limit_mb=100_000, size=autosize.CEILING // 2 + 1, warm=True)
    assert feed(c, (c.size, c.size, 1.0, 1, 1)) == [autosize.CEILING]
    assert feed(c, (autosize.CEILING,) * 2 + (0.5, 1, 1)) == [autosize.CEILING]
    assert c.settled


def test_auto_batch_size_run_keeps_the_accounting_and_reports_its_sizes(db_url, db, monkeypatch):
    monkeypatch.setattr(autosize, "START", 100)
    monkeypatch.setattr(autosize, "FLOOR", 50)
    monkeypatch.setattr(autosize, "CEILING", 400)
    config = BatchConfig(batch_size="auto", memory_limit_mb=100_000, log_progress=False)
    result = migrate([str(SAMPLE)], config, db_url=db_url)
    assert_invariant(result, db)
    assert result.status == "completed" and result.processed == 1000
    report = result.to_dict()
    assert report["batch_size"] == "auto"
    assert report["batch_sizes"][0] == 100
    assert all(50 <= size <= 400 for size in report["batch_sizes"])
    assert {b["rows_in"] for b in report["batches"][:-1]} <= set(report["batch_sizes"])
    assert set(report["stage_seconds"]) == {"read", "parse", "validate", "plan", "lookup", "load"}
    assert "batch sizes chosen: 100" in result.summary()


def test_resume_of_an_auto_sized_run_cuts_committed_batches_at_their_recorded_sizes(
    db_url, db, tmp_path, monkeypatch
):
    records = [memory(n) for n in range(1, 101)]
    records[24] = "{broken"  # line 25, in the 7th batch
    path = write_jsonl(tmp_path / "in.jsonl", records)
    # Always "faster": sizes double after each clean measurement, 2, 2, 2, 4, 4, 8, 8, 16, ...
    monkeypatch.setattr(autosize, "START", 2)
    monkeypatch.setattr(autosize, "FLOOR", 1)
    monkeypatch.setattr(autosize, "GAIN", -1.0)
    config = BatchConfig(batch_size="auto", memory_limit_mb=100_000, log_progress=False)
    with pytest.raises(RunStopped):
        migrate([str(path)], BatchConfig(**{**config.to_dict(), "max_errors": 0}), db_url=db_url, run_id="A")
    ledger = rows(db, "SELECT first_line, last_line FROM pipeline_batches ORDER BY batch_no")
    assert [(b["first_line"], b["last_line"]) for b in ledger] == [
        (1, 2), (3, 4), (5, 6), (7, 10), (11, 14), (15, 22), (23, 30),
    ]  # fmt: skip
    # A fresh controller would start elsewhere: the resumed run must replay the ledger's sizes.
    monkeypatch.setattr(autosize, "START", 5)
    monkeypatch.setattr(autosize, "GAIN", 0.05)
    result = migrate([str(path)], config, db_url=db_url, resume="A")
    assert_invariant(result, db)
    assert (result.processed, result.successful, result.parse_errors) == (100, 99, 1)
    assert result.batch_sizes[:3] == [2, 4, 8]
    ledger = rows(db, "SELECT first_line, last_line FROM pipeline_batches ORDER BY batch_no")
    assert ledger[0]["first_line"] == 1 and ledger[-1]["last_line"] == 100
    assert all(b["first_line"] == a["last_line"] + 1 for a, b in itertools.pairwise(ledger))
    assert rows(db, "SELECT count(*) AS n FROM memories")[0]["n"] == 99


def test_cli_batch_size_auto_and_bad_values(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [memory(1), memory(2)])
    report = tmp_path / "r.json"
    done = cli("migrate", path, "--db", db_url, "--batch-size", "auto", "--report", report, "--quiet")
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    assert (data["batch_size"], data["batch_sizes"], data["successful"]) == ("auto", [autosize.START], 2)
    for bad in ("lots", "0", "-5"):
        done = cli("migrate", path, "--db", db_url, "--batch-size", bad)
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_peak_rss_is_the_process_own_not_the_peak_of_the_process_that_started_it():
    # ru_maxrss is carried over exec: a child of a process holding 400 MB would report 400 MB.
    script = (
        "import os, subprocess, sys\n"
        "ballast = bytearray(400 * 2**20)\n"
        "probe = 'from pipeline.run.autosize import peak_rss_mb; print(peak_rss_mb())'\n"
        "print(subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True).stdout)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert 0 < float(done.stdout) < 300, done.stdout + done.stderr
