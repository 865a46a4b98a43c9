"""Tables as text and as frames: what the inspecting commands print."""

from __future__ import annotations

import re

import polars as pl
import pyarrow as pa


def format_rows(header: list[str], rows: list[list[str]]) -> list[str]:
    """Pure: aligned columns, two spaces apart; columns whose cells look numeric align right."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    numeric = [
        all(re.fullmatch(r"-?[\d,.]+s?|", str(row[i])) for row in rows) and bool(rows)
        for i in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if right else str(c).ljust(w)
            for c, w, right in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def clip(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: max(width - 1, 10)] + "…"


def arrow_frame(table: pa.Table) -> pl.DataFrame:
    """Arrow from the server as Polars (JSON columns as their text)."""
    columns = [
        pa.chunked_array([chunk.storage for chunk in column.chunks], column.type.storage_type)
        if isinstance(column.type, pa.BaseExtensionType)
        else column
        for column in table.columns
    ]
    return pl.DataFrame(pa.Table.from_arrays(columns, names=table.column_names))
