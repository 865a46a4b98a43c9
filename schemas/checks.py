"""Named checks shared by the schemas.

A check's name is the second half of a reject's stable ``reason`` code
(``<field>:<check>``, e.g. ``confidence:in_range(1,10)``), so names never contain
spaces and never depend on the pandera version. Each check carries its hint (pandera's
``description``): what it wants, for the human-readable reject message.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl


def expr_check(name: str, expr_of, hint: str) -> pa.Check:
    """A named check from a function of the column expression, with its hint."""
    return pa.Check(
        lambda data: data.lazyframe.select(expr_of(pl.col(data.key))), name=name, description=hint
    )


def not_empty() -> pa.Check:
    return expr_check("not_empty", lambda col: col.str.len_chars() > 0, "must be a non-empty string")


def not_blank() -> pa.Check:
    return expr_check(
        "not_blank",
        lambda col: col.str.strip_chars().str.len_chars() > 0,
        "must contain at least one non-whitespace character",
    )


def in_range(low: int, high: int) -> pa.Check:
    return expr_check(
        f"in_range({low},{high})",
        lambda col: col.is_between(low, high),
        f"must be an integer from {low} to {high}",
    )


def isin(values: tuple[str, ...]) -> pa.Check:
    return expr_check(
        f"isin({','.join(values)})", lambda col: col.is_in(values), f"must be one of {', '.join(values)}"
    )


def items_not_null() -> pa.Check:
    return expr_check(
        "items_not_null",
        lambda col: col.list.eval(pl.element().is_not_null()).list.all(),
        "must be a list of strings without nulls",
    )


def iso8601() -> pa.Check:
    """Optional timestamps: a missing one passes, a present one must parse."""
    return expr_check(
        "iso8601",
        lambda col: col.is_null() | parse_iso8601(col).is_not_null(),
        "must be an ISO-8601 timestamp such as 2024-03-05T18:22:10Z",
    )


def parse_iso8601(col: pl.Expr) -> pl.Expr:
    """ISO-8601 text to a UTC timestamp; a timestamp without offset or a bare date counts as UTC."""
    return pl.coalesce(
        col.str.to_datetime("%+", time_zone="UTC", strict=False),
        col.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False).dt.replace_time_zone("UTC"),
        col.str.to_datetime("%Y-%m-%d", strict=False).dt.replace_time_zone("UTC"),
    )
