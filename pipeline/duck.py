"""DuckDB, the only module that imports it: fast JSON validity here, SQL over rejects later."""

from __future__ import annotations

import duckdb
import polars as pl


def json_valid(lines: pl.Series) -> pl.Series:
    """True where the text is JSON by DuckDB's reading (five times faster than Polars' check).

    DuckDB also accepts NaN, Infinity and trailing commas, which strict readers refuse;
    callers fall back to a strict check when the strict reader complains.
    """
    with duckdb.connect() as connection:
        connection.register("lines", lines.to_frame("raw"))
        return connection.sql("SELECT json_valid(raw) AS valid FROM lines").pl()["valid"]
