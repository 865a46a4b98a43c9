"""The keys of the stored rows, held by the run: which records of a batch may be stored.

Looking every record of a batch up in the table's indexes cost the server about 90 ms
a batch of 20,000 against a million stored rows, to find the few hundred that are there.
The run reads the stored keys once when it starts and adds each batch's loaded rows; a
batch then looks up in the table only the records whose id or content hash it has met.
Keys are 64-bit hashes (16 bytes a stored row), kept in sorted runs: a batch's keys form
a run, and a run merges into the one before it once it is as long, so each key is merged
a few times (log of the batches) instead of once per batch. A collision only costs a
lookup: what a record matches is always read from the table. Rows that another writer
stores during the run are not known here: their copies are found among the near-duplicate
candidates (read from the table), or else refused by the unique constraints as database
rejects (DESIGN: the unique constraint is the final judge of exact duplicates).
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

KEY_COLUMNS = ("id", "content_hash")


class KnownKeys:
    """The ids and content hashes of the stored rows, as runs of sorted 64-bit hashes."""

    def __init__(self, stored: Iterable[pl.DataFrame] = ()) -> None:
        """``stored``: frames of stored rows (``id``, ``content_hash``), hashed one by one so
        that a big table's keys never sit in memory as text."""
        hashed = [_hashed(rows) for rows in stored]
        self._runs = {
            column: [pl.concat([pl.Series(column, [], pl.UInt64), *(h[column] for h in hashed)]).sort()]
            for column in KEY_COLUMNS
        }

    def add(self, rows: pl.DataFrame) -> None:
        """Note ``rows`` (``id``, ``content_hash``) as stored."""
        for column, keys in _hashed(rows).items():
            runs = self._runs[column]
            runs.append(keys.sort())
            while len(runs) > 1 and runs[-1].len() >= runs[-2].len():
                last = runs.pop()
                runs[-1] = runs[-1].to_frame().merge_sorted(last.to_frame(), key=column).to_series()

    def maybe_stored(self, records: pl.DataFrame) -> pl.DataFrame:
        """The ``records`` whose id or content hash may be stored."""
        found = pl.repeat(False, records.height, eager=True)
        for column, keys in _hashed(records).items():
            # Sorted, the keys look runs up in order: about twice as fast in a big run.
            order = keys.arg_sort()
            wanted = keys.gather(order)
            in_column = pl.repeat(False, records.height, eager=True)
            for run in self._runs[column]:
                in_column |= _among(wanted, run)
            found = found.scatter(order.filter(in_column), True)
        return records.filter(found)


def _hashed(rows: pl.DataFrame) -> dict[str, pl.Series]:
    return {column: rows[column].hash() for column in KEY_COLUMNS}


def _among(values: pl.Series, known: pl.Series) -> pl.Series:
    if known.is_empty():
        return pl.repeat(False, values.len(), eager=True)
    at = known.search_sorted(values).clip(upper_bound=known.len() - 1)
    return known.gather(at) == values
