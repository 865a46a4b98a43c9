"""Run pandera schemas over whole columns and turn their failures into reject rows."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from pipeline.frames import reject_frame

FAILURE_SCHEMA = pl.Schema(
    {
        "record": pl.UInt32,
        "field": pl.String,
        "check": pl.String,
        "value": pl.String,
        "hint": pl.String,
    }
)
# pandera's own check of a column that may not be null, under our name.
REQUIRED = ("required", "is required and was missing or null")


def schema_failures(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> pl.DataFrame:
    """Every failed (record, field, check) of ``frame``, which carries a ``record`` column."""
    if frame.is_empty():
        return pl.DataFrame(schema=FAILURE_SCHEMA)
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        if cases["index"].null_count():
            raise RuntimeError(f"schema {schema.name} does not fit its frame:\n{cases}") from exc
        check = pl.col("check").replace("not_nullable", REQUIRED[0])
        return cases.select(
            record=frame["record"].gather(cases["index"]),
            field=pl.col("column"),
            check=check,
            value=pl.col("failure_case").cast(pl.String),
            hint=check.replace_strict(_hints(schema), default=None, return_dtype=pl.String),
        ).cast(FAILURE_SCHEMA)
    return pl.DataFrame(schema=FAILURE_SCHEMA)


def _hints(schema: pa.DataFrameSchema) -> dict[str, str]:
    """What each check of ``schema`` wants, by check name (each check carries its own)."""
    checks = (check for column in schema.columns.values() for check in column.checks)
    return dict([REQUIRED, *((check.name, check.description) for check in checks if check.description)])


def type_failures(type_errors: pl.DataFrame) -> pl.DataFrame:
    """Fields of the wrong JSON type, in the same shape as schema failures."""
    return type_errors.select(
        "record",
        "field",
        check=pl.format("type({})", "expected"),
        value="got",
        hint=pl.format("must be of JSON type {}", "expected"),
    ).cast(FAILURE_SCHEMA)


# A text field holding what PostgreSQL text and jsonb cannot hold, as the original's database
# refused it: JSON.parse reads both.
STORABLE_TEXT = (
    "storable_text",
    "must not hold a NUL character (\\u0000) or half of a surrogate pair (a lone \\ud800 to "
    "\\udfff): PostgreSQL cannot store either",
)


def unstorable_failures(fields: pl.DataFrame) -> pl.DataFrame:
    """The fields (``record``, ``field``) holding text PostgreSQL cannot store, as failures."""
    check, hint = STORABLE_TEXT
    return fields.select("record", "field", check=pl.lit(check), value=None, hint=pl.lit(hint)).cast(
        FAILURE_SCHEMA
    )


def combine(type_errors: pl.DataFrame, failures: list[pl.DataFrame]) -> pl.DataFrame:
    """Type errors first; a field of the wrong type is not reported again as missing."""
    typed = type_failures(type_errors)
    checked = pl.concat([pl.DataFrame(schema=FAILURE_SCHEMA), *failures])
    checked = checked.join(typed, on=["record", "field"], how="anti")
    return pl.concat([typed, checked]).unique(maintain_order=True)


def failure_message() -> pl.Expr:
    hint = pl.coalesce("hint", pl.format("failed check {}", "check"))
    got = (
        pl.when(pl.col("value").is_null())
        .then(pl.lit(""))
        .otherwise(pl.format(" (got {})", pl.col("value").str.slice(0, 80)))
    )
    return pl.format("{} {}{}; fix the value in the source record", "field", hint, got)


def failure_rejects(records: pl.DataFrame, failures: pl.DataFrame) -> pl.DataFrame:
    """One reject row per failed check, carrying the record's position and raw text."""
    return reject_frame(
        failures.lazy().join(
            records.lazy().select("record", "source_file", "source_line", "raw"), on="record"
        ),
        category="validation",
        reason=pl.format("{}:{}", "field", "check"),
        field=pl.col("field"),
        message=failure_message(),
    )
