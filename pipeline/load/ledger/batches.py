"""``pipeline_batches``: one row per committed batch, per shard: the ledger a resume goes on from,
and what a retried batch reads to know whether its COMMIT landed."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.frames import REJECT_SCHEMA, RejectCounts, similarity_bins
from pipeline.load.connection import Connection
from pipeline.load.results import result_of


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch did; ``committed`` is False when fail-fast rolled it back."""

    loaded: int
    rejects: pl.DataFrame
    committed: bool = True


def run_history(conn: Connection, run_id: str) -> tuple[list[dict], RejectCounts]:
    """A run's committed batches and reject counts, to resume its report."""
    with conn.transaction("reading the run's batches"):
        batches = result_of(
            conn,
            "SELECT batch_no, sum(rows_in)::bigint AS rows_in, sum(loaded)::bigint AS loaded,"
            " max(seconds) AS seconds FROM pipeline_batches"
            " WHERE run_id = $1 GROUP BY batch_no ORDER BY batch_no",
            (run_id,),
        ).to_pylist()
        records = result_of(
            conn,
            "SELECT category, count(DISTINCT (source_file, source_line)) AS n "
            "FROM pipeline_rejects WHERE run_id = $1 GROUP BY category",
            (run_id,),
        ).to_pylist()
        rows = result_of(
            conn,
            "SELECT reason, count(*) AS n FROM pipeline_rejects WHERE run_id = $1 GROUP BY reason",
            (run_id,),
        ).to_pylist()
        similar = result_of(
            conn,
            "SELECT similarity FROM pipeline_rejects WHERE run_id = $1 AND reason = 'similar_duplicate'",
            (run_id,),
        )
    counts = RejectCounts(
        records={r["category"]: r["n"] for r in records},
        rows={r["reason"]: r["n"] for r in rows},
        similarity_bins=similarity_bins(pl.DataFrame(similar)["similarity"]),
    )
    return batches, counts


def committed_shards(conn: Connection, run_id: str) -> dict[int, set[int]]:
    """Batch number → the shards that committed it, of a run."""
    with conn.transaction("reading the run's batches"):
        ledger = result_of(
            conn, "SELECT batch_no, shard FROM pipeline_batches WHERE run_id = $1", (run_id,)
        ).to_pylist()
    shards: dict[int, set[int]] = {}
    for row in ledger:
        shards.setdefault(row["batch_no"], set()).add(row["shard"])
    return shards


def committed_outcome(
    conn: Connection, run_id: str, batch_no: int, shard: int, lines: pl.DataFrame
) -> BatchOutcome | None:
    """What a batch (a shard's part of it) did, if it committed (its COMMIT may have landed as
    the connection broke); ``lines``: (source_file, source_line) of its records."""
    with conn.transaction(f"checking batch {batch_no}"):
        ledger = result_of(
            conn,
            "SELECT source_file, first_line, last_line, loaded FROM pipeline_batches "
            "WHERE run_id = $1 AND batch_no = $2 AND shard = $3",
            (run_id, batch_no, shard),
        ).to_pylist()
        if not ledger:
            return None
        row = ledger[0]
        rejects = result_of(
            conn,
            f"SELECT {', '.join(REJECT_SCHEMA)} FROM pipeline_rejects "
            "WHERE run_id = $1 AND source_file = $2 AND source_line BETWEEN $3 AND $4",
            (run_id, row["source_file"], row["first_line"], row["last_line"]),
        )
    # Other shards' records of the batch share its lines' range.
    found = pl.DataFrame(rejects).cast(pl.Schema(REJECT_SCHEMA))
    return BatchOutcome(loaded=row["loaded"], rejects=found.join(lines, on=list(lines.columns), how="semi"))


def record_batch(conn: Connection, run_id: str, batch_no: int, ledger: dict, loaded: int) -> None:
    """The ledger row of a batch (of its shard, ``ledger["shard"]``), in its transaction: what a
    resume goes on from."""
    conn.execute(
        "INSERT INTO pipeline_batches (run_id, batch_no, source_file, first_line,"
        " last_line, rows_in, loaded, rejected, seconds, shard)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        (
            run_id,
            batch_no,
            ledger["source_file"],
            ledger["first_line"],
            ledger["last_line"],
            ledger["rows_in"],
            loaded,
            ledger["rows_in"] - loaded,
            ledger["seconds"],
            ledger["shard"],
        ),
    )


def forget_records(conn: Connection, run_id: str, shard: int) -> bool:
    """Remove a run's ledger rows of ``shard`` and the rejects of the records they hold; whether
    there were any."""
    with conn.transaction("reading the record that stopped the run again"):
        forgotten = conn.execute(
            "DELETE FROM pipeline_batches WHERE run_id = $1 AND shard = $2 RETURNING source_file, first_line",
            (run_id, shard),
        )
        if forgotten is None or not forgotten.num_rows:
            return False
        conn.execute(
            "DELETE FROM pipeline_rejects WHERE run_id = $1 AND (source_file, source_line) IN "
            "(SELECT * FROM unnest($2::text[], $3::bigint[]))",
            (run_id, forgotten.column(0).to_pylist(), forgotten.column(1).to_pylist()),
        )
    return True
