"""What the run holds of the stored rows: which records of a batch may be stored, and which
stored rows cite a batch's sources (its near-duplicate candidates).

Looking every record of a batch up in the table's indexes cost the server about 90 ms
a batch of 20,000 against a million stored rows, to find the few hundred that are there.
The run reads the stored keys once when it starts and adds each batch's loaded rows; a
batch then looks up in the table only the records whose id or content hash it has met.
Keys are 64-bit hashes (16 bytes a stored row), kept in sorted runs: a batch's keys form
a run, and a run merges into the one before it once it is as long, so each key is merged
a few times (log of the batches) instead of once per batch. A collision only costs a
lookup: what a record matches is always read from the table.

The sources work the same way, so a batch reads from the table only the rows that cite one
of its sources, by key: each stored row's id once, and per source it cites a pair of 32-bit
numbers (the source's hash, the row's place among the ids): 8 bytes a pair. A table of its
own on the server cost a COPY of three rows per memory and a probe per source of every batch
(about 4 of the server's 24 core-seconds per million records); held here, it writes nothing the
user did not ask for. A collision only adds a candidate (a few per batch of 20,000 against a
million rows), which shares no source and is dismissed.

With shards, every shard's threads share one ``KnownKeys`` (a lock keeps it whole): a shard
never meets another's keys but through a collision, which only costs a lookup.

Rows that another writer stores during the run are not known here: their copies are refused
by the unique constraints as database rejects (DESIGN: the unique constraint is the final
judge of exact duplicates), and they are no near-duplicate candidates for this run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import polars as pl
import pyarrow as pa

KEY_COLUMNS = ("id", "content_hash")
NO_CITATIONS = pl.DataFrame(schema={"source": pl.UInt32, "row": pl.UInt32})


class SortedRuns:
    """Frames sorted by ``key``; the last merges into the one before it once it is as long."""

    def __init__(self, key: str, first: pl.DataFrame) -> None:
        self.key = key
        self.runs = [first.sort(key)]

    def add(self, frame: pl.DataFrame) -> None:
        runs = self.runs
        runs.append(frame.sort(self.key))
        while len(runs) > 1 and runs[-1].height >= runs[-2].height:
            last = runs.pop()
            runs[-1] = runs[-1].merge_sorted(last, key=self.key)


class KnownKeys:
    """The ids and content hashes of the stored rows as sorted 64-bit hashes, and the sources
    they cite."""

    def __init__(self, stored: Iterable[pl.DataFrame] = (), cited: Iterable[pl.DataFrame] = ()) -> None:
        """``stored``: frames of stored rows (``id``, ``content_hash``), hashed one by one so
        that a big table's keys never sit in memory as text; ``cited``: frames of stored rows'
        ``id`` and ``sources`` (a list)."""
        self._lock = threading.Lock()
        hashed = [_hashed(rows) for rows in stored]
        self._keys = {
            column: SortedRuns(
                column, pl.concat([pl.Series(column, [], pl.UInt64), *(h[column] for h in hashed)]).to_frame()
            )
            for column in KEY_COLUMNS
        }
        self._citing_ids = pl.Series("id", [], pl.String)
        self._cited = SortedRuns("source", NO_CITATIONS)
        for rows in cited:
            self._cite(rows)
        self._citing_ids = self._citing_ids.rechunk()

    def add(self, rows: pl.DataFrame, cited: pl.DataFrame | None = None) -> None:
        """Note ``rows`` (``id``, ``content_hash``) as stored, and what they cite (``id``,
        ``sources``) when given."""
        hashed = _hashed(rows)
        with self._lock:
            for column, keys in hashed.items():
                self._keys[column].add(keys.to_frame())
            if cited is not None:
                self._cite(cited)

    def _cite(self, rows: pl.DataFrame) -> None:
        first = self._citing_ids.len()
        self._citing_ids.append(_own_copy(rows["id"]))
        pairs = rows.select(
            row=pl.int_range(first, first + rows.height, dtype=pl.UInt32),
            source=pl.col("sources").list.unique(),
        )
        self._cited.add(pairs.explode("source").drop_nulls().select(_source_hash(pl.col("source")), "row"))

    def maybe_stored(self, records: pl.DataFrame) -> pl.DataFrame:
        """The ``records`` whose id or content hash may be stored."""
        found = pl.repeat(False, records.height, eager=True)
        with self._lock:
            runs = {column: list(self._keys[column].runs) for column in KEY_COLUMNS}
        for column, keys in _hashed(records).items():
            # Sorted, the keys look runs up in order: about twice as fast in a big run.
            order = keys.arg_sort()
            wanted = keys.gather(order)
            in_column = pl.repeat(False, records.height, eager=True)
            for run in runs[column]:
                in_column |= _among(wanted, run[column])
            found = found.scatter(order.filter(in_column), True)
        return records.filter(found)

    def citing(self, sources: pl.Series) -> pl.Series:
        """The distinct ids of stored rows citing one of ``sources`` (or a source sharing its hash)."""
        wanted = sources.drop_nulls().to_frame("source").select(_source_hash(pl.col("source")))["source"]
        wanted = wanted.unique().sort()
        rows = [pl.Series("row", [], pl.UInt32)]
        with self._lock:
            cited, citing_ids = list(self._cited.runs), self._citing_ids.clone()
        for run in cited:
            # Most sources are cited nowhere yet: find where each would start, and only for
            # those found where the rows citing them end.
            keys = run["source"]
            first = keys.search_sorted(wanted, "left")
            found = _among(wanted, keys, first)
            last = keys.search_sorted(wanted.filter(found), "right")
            rows.append(run["row"].gather(pl.int_ranges(first.filter(found), last, eager=True).explode()))
        return citing_ids.gather(pl.concat(rows).unique()).unique()


def _own_copy(strings: pl.Series) -> pl.Series:
    """``strings`` holding their own bytes. Strings gathered from a frame share its buffers:
    kept for the run, they would keep every batch's buffers alive (on a cluster, every
    batch's shared-memory file: 1.2 GB more at 1M records on 2 workers)."""
    return pl.Series(strings.name, strings.to_arrow().cast(pa.large_string()))


def _hashed(rows: pl.DataFrame) -> dict[str, pl.Series]:
    return {column: rows[column].hash() for column in KEY_COLUMNS}


def _source_hash(source: pl.Expr) -> pl.Expr:
    return (source.hash() % 2**32).cast(pl.UInt32).alias("source")


def _among(values: pl.Series, known: pl.Series, at: pl.Series | None = None) -> pl.Series:
    """Whether each of ``values`` is in the sorted ``known``; ``at``: where it would go, when
    already searched."""
    if known.is_empty():
        return pl.repeat(False, values.len(), eager=True)
    at = known.search_sorted(values) if at is None else at
    return known.gather(at.clip(upper_bound=known.len() - 1)) == values
