"""Replay fixed rejects: migrate an edited export as a new run, then mark what now loads.

The new run is an ordinary migration (same dataset and rules as the run it replays,
``BatchConfig(replay_of=...)`` in its config), so nothing is loaded twice and both
runs keep their accounting. Afterwards, each replayed record that loaded marks its
original reject rows ``resolved_by`` the new run; nothing is deleted.

Which original a replayed record comes from, in this order (each original and each
record is matched at most once):

1. ``origin``: CSV and Parquet exports carry ``run_id``, ``source_file`` and
   ``source_line`` on every row, so the origin travels with the row however the
   rows are edited, sorted or deleted.
2. ``unchanged``: the record's text equals an original's raw text.
3. ``id``: the record's ``id`` equals an original's, and is unique on both sides.
4. ``position``: a JSONL export's sidecar ``FILE.origin`` lists the origin of each
   line. The records matched by 2 and 3 are anchors; between two neighbouring
   anchors, the records left are paired with the sidecar's lines in order when both
   hold as many (no line was added or removed there). If anchors are out of order
   (lines were moved), no record is matched by position.

A record matched by none (say its id was changed and a line next to it deleted)
still loads, but marks nothing; the result counts these. Replaying the same file
again loads nothing (its records are duplicates now) and marks nothing: only
unresolved rejects are candidates, and only records that loaded mark them.

A record that is still the text of an ``invalid_utf8`` reject (U+FFFD where its bad
bytes were) is skipped with a warning naming it: loading it would store that loss as
if it were the record. The rest is replayed from ``FILE.replay.jsonl``, a copy with
those lines blank, so every other line keeps its number; their rejects stay unresolved.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import polars as pl
from loguru import logger

from pipeline.config import BatchConfig
from pipeline.errors import InputError
from pipeline.extract import RAW_SCHEMA, scan_batches
from pipeline.inspect.export import export_format, origin_path
from pipeline.inspect.runs import resolve_run
from pipeline.load.connection import connected
from pipeline.load.ledger import rejected_source_lines, resolve_rejects, unresolved_rejects
from pipeline.load.server import resolve_url
from pipeline.run.migrate import migrate
from pipeline.run.report import RunResult

# Skipped lossy records named one by one in the warning; more are counted.
NAMED_SKIPS = 20
# Settings a replay takes from the run it replays: the same rules judge the fixed records.
INHERITED = ("dataset", "mode", "validate_first", "similarity_threshold", "self_name")
KINDS = ("origin", "unchanged", "id", "position")
KEYS = ["source_file", "source_line"]
ORIGIN = {"origin_run": pl.String, "origin_file": pl.String, "origin_line": pl.Int64}
MATCH_SCHEMA = pl.Schema(
    {
        "position": pl.Int64,
        "source_file": pl.String,
        "source_line": pl.Int64,
        "matched_by": pl.String,
    }
)
ORIGINALS_SCHEMA = {
    "raw": pl.String,
    "source_file": pl.String,
    "source_line": pl.Int64,
    "run_id": pl.String,
    "reason": pl.String,
}


@dataclass(frozen=True)
class ReplayResult:
    """The replay run's own result, and what it did to the rejects of the run it replays."""

    run: RunResult
    replay_of: str
    records: int
    loaded: int
    resolved: int
    matched: dict[str, int] = field(default_factory=dict)
    untraced_loaded: int = 0
    skipped: int = 0

    def to_dict(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "run": self.run.to_dict()}

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def summary(self) -> str:
        traced = sum(self.matched.values())
        how = ", ".join(f"{n:,} by {kind}" for kind, n in self.matched.items() if n)
        lines = [
            self.run.summary(),
            f"replay of {self.replay_of}: {traced:,} of {self.records:,} records traced to its rejects"
            + (f" ({how})" if how else ""),
            f"  resolved  {self.resolved:,} rejected records of {self.replay_of}",
        ]
        if self.skipped:
            lines.append(
                f"  skipped   {self.skipped:,} still the text of invalid_utf8 rejects (U+FFFD where the "
                "bad bytes were): those rejects stay unresolved"
            )
        if self.untraced_loaded:
            lines.append(
                f"  {self.untraced_loaded:,} loaded records match no reject of {self.replay_of} "
                "(id changed and lines added or removed around them): those rejects stay unresolved"
            )
        return "\n".join(lines)


def replay(
    path: str | os.PathLike[str],
    of_run: str,
    config: BatchConfig | None = None,
    db_url: str | None = None,
    run_id: str | None = None,
) -> ReplayResult:
    """Migrate the fixed export ``path`` as a new run and resolve the rejects of ``of_run`` it fixes."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file", path=str(path))
    with connected(resolve_url(db_url)) as loader:
        original = resolve_run(loader, of_run)
        with loader.transaction(f"reading the rejects of {of_run}"):
            batches = (pl.from_arrow(b) for b in unresolved_rejects(loader, of_run))
            originals = _concat(batches, ORIGINALS_SCHEMA).with_columns(_record_id())
    source, origins, sidecar = replay_input(path)
    records = read_records(source).join(origins, on="position", how="left")
    matches = match_origins(records, originals, of_run, sidecar)
    lossy = lossy_records(records, matches, originals)
    if not lossy.is_empty():
        logger.warning(_skip_warning(path, source, lossy))
        skipped = lossy["position"].implode()
        records = records.filter(~pl.col("position").is_in(skipped))
        matches = matches.filter(~pl.col("position").is_in(skipped))
        source = _without_lines(source, lossy["line"], path.with_name(path.name + ".replay.jsonl"))

    inherited = {k: original.config[k] for k in INHERITED if k in original.config}
    config = replace(config or BatchConfig(), **inherited, replay_of=of_run)
    run = migrate([glob.escape(str(source))], config, db_url=db_url, run_id=run_id)

    with connected(resolve_url(db_url)) as loader:
        again = pl.Series(rejected_source_lines(loader, run.run_id), dtype=pl.Int64).implode()
        loaded = records.filter(~pl.col("line").is_in(again))
        fixed = matches.join(loaded.select("position"), on="position")
        resolved = resolve_rejects(loader, of_run, run.run_id, fixed)
    counts = dict(matches["matched_by"].value_counts().iter_rows())
    return ReplayResult(
        run=run,
        replay_of=of_run,
        records=records.height,
        loaded=loaded.height,
        resolved=resolved,
        matched={kind: counts.get(kind, 0) for kind in KINDS},
        untraced_loaded=loaded.height - fixed.height,
        skipped=lossy.height,
    )


def replay_input(path: Path) -> tuple[Path, pl.DataFrame, pl.DataFrame]:
    """The JSONL file to migrate, each record's own origin, and the sidecar's lines.

    A JSONL export is migrated as it is; its records carry no origin of their own
    and the sidecar ``FILE.origin`` (if there) lists origins by line. A CSV or
    Parquet export becomes ``FILE.replay.jsonl`` beside it, each record with the
    origin its row carries; a row whose ``raw`` was emptied is left out.
    """
    fmt = export_format(path)
    if fmt == "jsonl":
        listed = origin_path(path)
        sidecar = (
            pl.read_ndjson(listed, schema=_SIDECAR) if listed.is_file() else pl.DataFrame(schema=_SIDECAR)
        )
        return path, pl.DataFrame(schema={"position": pl.Int64, **ORIGIN}), sidecar
    try:
        table = pl.read_csv(path, infer_schema=False) if fmt == "csv" else pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{path}: cannot be read as {fmt} ({exc})", path=str(path)) from exc
    if "raw" not in table.columns:
        raise InputError(f"{path}: no raw column; replay a file written by `pipeline rejects --export`")
    kept = table.with_columns(
        pl.lit(None).alias(c) for c in ("run_id", "source_file", "source_line") if c not in table.columns
    ).filter(pl.col("raw").is_not_null() & (pl.col("raw").str.strip_chars() != ""))
    source = path.with_name(path.name + ".replay.jsonl")
    # JSON allows a line break only between tokens, where a space means the same.
    lines = kept["raw"].str.replace_all(r"\r\n|\r|\n", " ")
    source.write_bytes((lines + "\n").str.join("").item().encode() if len(lines) else b"")
    origins = kept.with_row_index("position").select(
        pl.col("position").cast(pl.Int64),
        origin_run=pl.col("run_id").cast(pl.String),
        origin_file=pl.col("source_file").cast(pl.String),
        origin_line=pl.col("source_line").cast(pl.Int64, strict=False),
    )
    return source, origins, pl.DataFrame(schema=_SIDECAR)


_SIDECAR = {"run_id": pl.String, "source_file": pl.String, "source_line": pl.Int64}


def read_records(path: Path) -> pl.DataFrame:
    """The records of a JSONL file as the migration numbers them: position, line, raw, id."""
    frames = (batch.frame for batch in scan_batches([path], 100_000))
    return _concat(frames, RAW_SCHEMA).select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("position"),
        pl.col("source_line").alias("line"),
        "raw",
        _record_id(),
    )


def match_origins(
    records: pl.DataFrame, originals: pl.DataFrame, run_id: str, sidecar: pl.DataFrame
) -> pl.DataFrame:
    """Pure: which original reject each replayed record comes from (see the module's doc).

    ``records``: position, raw, id, and origin_run/origin_file/origin_line when the
    record carries its origin; ``originals``: source_file, source_line, raw, id of the
    run's unresolved rejects; ``sidecar``: run_id, source_file, source_line per line
    of a JSONL export. Returns position, source_file, source_line and ``matched_by``.
    """
    found = [pl.DataFrame(schema=MATCH_SCHEMA)]

    def left() -> tuple[pl.DataFrame, pl.DataFrame]:
        done = pl.concat(found)
        return records.join(done, on="position", how="anti"), originals.join(done, on=KEYS, how="anti")

    named = records.filter(pl.col("origin_run") == run_id)
    found.append(_pairs(named, originals, ["origin_file", "origin_line"], KEYS, "origin"))

    rest, candidates = left()
    nth = pl.int_range(pl.len()).over("raw").alias("nth")
    rest, candidates = rest.sort("position").with_columns(nth), candidates.with_columns(nth)
    found.append(_pairs(rest, candidates, ["raw", "nth"], ["raw", "nth"], "unchanged"))

    rest, candidates = left()
    unique = pl.col("id").is_not_null() & pl.col("id").is_unique()
    found.append(_pairs(rest.filter(unique), candidates.filter(unique), ["id"], ["id"], "id"))

    rest, candidates = left()
    by_line = _by_position(rest, pl.concat(found), sidecar, records.height)
    found.append(_pairs(by_line.filter(pl.col("run_id") == run_id), candidates, KEYS, KEYS, "position"))
    return pl.concat(found)


def _by_position(
    rest: pl.DataFrame, anchored: pl.DataFrame, sidecar: pl.DataFrame, records: int
) -> pl.DataFrame:
    """The sidecar line of each record left, where the anchors around it say lines did not shift."""
    if sidecar.is_empty() or rest.is_empty():
        return pl.DataFrame(schema={"position": pl.Int64, **_SIDECAR})
    listed = sidecar.with_row_index("slot").with_columns(pl.col("slot").cast(pl.Int64))
    anchors = anchored.join(listed, on=KEYS).select("position", "slot").sort("position")
    if not anchors["slot"].is_sorted() or anchors["slot"].n_unique() != anchors.height:
        return pl.DataFrame(schema={"position": pl.Int64, **_SIDECAR})  # lines were moved
    ends = pl.DataFrame({"position": [-1, records], "slot": [-1, listed.height]}, schema=anchors.schema)
    anchors = pl.concat([anchors, ends]).sort("position")
    before = anchors.rename({"position": "p0", "slot": "s0"})
    after = anchors.rename({"position": "p1", "slot": "s1"})
    placed = (
        rest.select("position")
        .sort("position")
        .join_asof(before, left_on="position", right_on="p0", strategy="backward")
        .join_asof(after, left_on="position", right_on="p1", strategy="forward")
        .filter(pl.col("p1") - pl.col("p0") == pl.col("s1") - pl.col("s0"))
        .select("position", slot=pl.col("s0") + pl.col("position") - pl.col("p0"))
    )
    return placed.join(listed, on="slot").drop("slot")


def _pairs(
    records: pl.DataFrame, originals: pl.DataFrame, left_on: list[str], right_on: list[str], how: str
) -> pl.DataFrame:
    joined = records.select("position", *left_on).join(
        originals.select(*{*KEYS, *right_on}), left_on=left_on, right_on=right_on, coalesce=False
    )
    if left_on == KEYS:  # the right side's keys came back suffixed
        joined = joined.drop(KEYS).rename({f"{k}_right": k for k in KEYS})
    return joined.select("position", *KEYS, matched_by=pl.lit(how)).cast(MATCH_SCHEMA)


def lossy_records(records: pl.DataFrame, matches: pl.DataFrame, originals: pl.DataFrame) -> pl.DataFrame:
    """The records still holding the text of an ``invalid_utf8`` reject: position, line, and
    the reject's source_file and source_line, in line order. That text has U+FFFD where the
    bad bytes were: replaying it unchanged would load the loss as if it were the record."""
    return (
        matches.join(originals.filter(pl.col("reason") == "invalid_utf8"), on=KEYS)
        .join(records.select("position", "line", "raw"), on="position", suffix="_replayed")
        .filter(pl.col("raw") == pl.col("raw_replayed"))
        .select("position", "line", *KEYS)
        .unique("position")
        .sort("line")
    )


def _skip_warning(path: Path, source: Path, lossy: pl.DataFrame) -> str:
    """Which records are skipped: by line of ``path`` when it is the JSONL replayed, always by
    the reject each repeats."""
    reject = pl.format("{}:{}", *KEYS)
    named = (
        pl.format("line {} ({})", "line", reject) if source == path else pl.format("the row of {}", reject)
    )
    shown = lossy.head(NAMED_SKIPS).select(named.str.join(", ")).item()
    more = f" and {lossy.height - NAMED_SKIPS:,} more" if lossy.height > NAMED_SKIPS else ""
    records = "1 record" if lossy.height == 1 else f"{lossy.height:,} records"
    return (
        f"{path}: skipped {records} still holding the text of an invalid_utf8 reject, with U+FFFD "
        f"where the bad bytes were: {shown}{more}; restore the text from a UTF-8 copy of the source "
        "to replay it"
    )


def _without_lines(source: Path, lines: pl.Series, target: Path) -> Path:
    """``source`` written to ``target`` with ``lines`` (1-based) blank: a blank line is no record,
    and the others keep their numbers. The bytes of every other line are kept as they are."""
    text = source.read_bytes().split(b"\n")
    for line in lines:  # the few skipped lines, not the records
        text[line - 1] = b""
    target.write_bytes(b"\n".join(text))
    return target


def _record_id() -> pl.Expr:
    return pl.col("raw").str.json_path_match("$.id").alias("id")


def _concat(frames, schema: dict) -> pl.DataFrame:
    frames = list(frames)
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)
