"""Small column expressions used by more than one stage."""

from __future__ import annotations

import polars as pl
import polars_hash


def json_text(expr: pl.Expr) -> pl.Expr:
    """The compact JSON text of a value (string, list, struct), non-ASCII kept as is.

    Polars encodes structs only, so the value is wrapped as ``{"v":...}`` and unwrapped.
    """
    return pl.struct(expr.alias("v")).struct.json_encode().str.slice(5).str.head(-1)


def sha256_hex(expr: pl.Expr) -> pl.Expr:
    """SHA-256 of the UTF-8 text, lowercase hex; stable across Polars versions."""
    # The class behind ``expr.chash``: a namespace registered at runtime has no type.
    return polars_hash.CryptographicHashingNameSpace(expr).sha2_256()
