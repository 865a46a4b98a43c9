"""The keys of the stored rows, held by the run: which records of a batch may be stored.

Looking every record of a batch up in the table's indexes cost the server about 90 ms
a batch of 20,000 against a million stored rows, to find the few hundred that are there.
The run reads the stored keys once when it starts and adds each batch's loaded rows; a
batch then looks up in the table only the records whose id or content hash it has met.
Keys are 64-bit hashes, kept sorted (16 bytes a stored row). A collision only costs a
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
    """The ids and content hashes of the stored rows, as sorted 64-bit hashes."""

    def __init__(self, stored: Iterable[pl.DataFrame] = ()) -> None:
        """``stored``: frames of stored rows (``id``, ``content_hash``), hashed one by one so
        that a big table's keys never sit in memory as text."""
        hashed = [_hashed(rows) for rows in stored]
        self._keys = {
            column: pl.concat([pl.Series(column, [], pl.UInt64), *(h[column] for h in hashed)]).sort()
            for column in KEY_COLUMNS
        }

    def add(self, rows: pl.DataFrame) -> None:
        """Note ``rows`` (``id``, ``content_hash``) as stored."""
        hashed = _hashed(rows)
        self._keys = {
            column: known.to_frame().merge_sorted(hashed[column].sort().to_frame(), key=column).to_series()
            for column, known in self._keys.items()
        }

    def maybe_stored(self, records: pl.DataFrame) -> pl.DataFrame:
        """The ``records`` whose id or content hash may be stored."""
        hashed, known = _hashed(records), self._keys
        return records.filter(
            _among(hashed["id"], known["id"]) | _among(hashed["content_hash"], known["content_hash"])
        )


def _hashed(rows: pl.DataFrame) -> dict[str, pl.Series]:
    return {column: rows[column].hash() for column in KEY_COLUMNS}


def _among(values: pl.Series, known: pl.Series) -> pl.Series:
    if known.is_empty():
        return pl.repeat(False, values.len(), eager=True)
    at = known.search_sorted(values).clip(upper_bound=known.len() - 1)
    return known.gather(at) == values
