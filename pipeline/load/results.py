"""Reading rows: a query's result is a table, never None."""

from __future__ import annotations

import pyarrow as pa

from pipeline.load.connection import Connection


def result_of(conn: Connection, sql: str, parameters: tuple = ()) -> pa.Table:
    """The rows of a query (``Connection.execute`` returns None only for a statement without a
    result, which a query is not)."""
    result = conn.execute(sql, parameters)
    assert result is not None, sql
    return result
