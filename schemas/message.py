"""A chat message from a CSV export, after the owner name is applied: one row per CSV row.

Fields are named as the export's CSV headers (``Message Date``, ``Sender Name``…), so a
reject's reason (``Message Date:datetime``) names the column to fix in the file.
``Text`` holds the message's content (its text, else its attachment's file name, else
an empty string), so ``Text:empty_message`` marks a row with neither.
"""

import pandera.polars as pa
import polars as pl

from pipeline.schemas.checks import expr_check, isin

DIRECTIONS = ("incoming", "outgoing")
DATE_FIELDS = ("Message Date", "Delivered Date", "Read Date", "Edited Date")


def parse_export_datetime(col: pl.Expr) -> pl.Expr:
    """Export timestamps to UTC: ``2024-03-05 18:22:10[.fff]``, ``… 18:22`` and ISO-8601.

    A timestamp with an offset is converted to UTC; one without is taken as UTC.
    """
    naive = lambda fmt: col.str.to_datetime(fmt, strict=False).dt.replace_time_zone("UTC")  # noqa: E731
    return pl.coalesce(
        col.str.to_datetime("%+", time_zone="UTC", strict=False),
        naive("%Y-%m-%d %H:%M:%S%.f"),
        naive("%Y-%m-%dT%H:%M:%S%.f"),
        naive("%Y-%m-%d %H:%M"),
    )


def export_datetime() -> pa.Check:
    """A present timestamp must parse (a missing one is left to ``required``/``nullable``)."""
    return expr_check(
        "datetime",
        lambda col: col.is_null() | parse_export_datetime(col).is_not_null(),
        "must be a date and time such as 2024-03-05 18:22:10 or 2024-03-05T18:22:10+02:00"
        " (without an offset it is read as UTC)",
    )


def not_empty_message() -> pa.Check:
    return expr_check(
        "empty_message",
        lambda col: col.str.len_chars() > 0,
        "is empty and the row has no Attachment either; a message needs one of them",
    )


MESSAGE = pa.DataFrameSchema(
    {
        "Message Date": pa.Column(pl.String, export_datetime()),
        "Delivered Date": pa.Column(pl.String, export_datetime(), nullable=True),
        "Read Date": pa.Column(pl.String, export_datetime(), nullable=True),
        "Edited Date": pa.Column(pl.String, export_datetime(), nullable=True),
        "Sender Name": pa.Column(pl.String),
        "Type": pa.Column(pl.String, isin(DIRECTIONS)),
        "Text": pa.Column(pl.String, not_empty_message()),
    },
    name="message",
)
