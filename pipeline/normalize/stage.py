"""A batch's pure stages, from raw records to the records to load and the rejects so far:
decode (parse), the dataset's transform and content hash, validation."""

from __future__ import annotations

from datetime import datetime
from time import perf_counter

import polars as pl

from pipeline.config import BatchConfig
from pipeline.datasets.base import Dataset
from pipeline.normalize.decode import decode, type_errors, unstorable_text
from pipeline.normalize.validate import failure_rejects, unstorable_failures


def stage_batch(
    raw: pl.DataFrame,
    dataset: Dataset,
    config: BatchConfig,
    started_at: datetime,
    timings: dict[str, float] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Pure: raw records → (records to load, rejects of parse and validation).

    Duplicates are decided later (``decide``), against what is stored when the batch loads.
    ``timings``, when given, accumulates the seconds of ``parse`` (decode) and ``validate``
    (legacy transform, content hash, validation).
    """
    began = perf_counter()
    records, parse_rejects = decode(raw, dataset.input_dtype, frozenset(dataset.json_paths))
    parsed = perf_counter()
    prepared, failures = dataset.prepare(
        records,
        type_errors(records, dataset.input_dtype, dataset.lenient_fields),
        config,
        started_at,
    )
    if config.validate_first:  # else the database refuses the text, as the original's did
        unstorable = unstorable_text(records, dataset.input_dtype, frozenset(dataset.json_paths))
        failures = pl.concat([failures, unstorable_failures(unstorable)])
    valid = prepared.join(failures.select("record").unique(), on="record", how="anti")
    rejects = pl.concat([parse_rejects, failure_rejects(prepared, failures)])
    if timings is not None:
        add_seconds(timings, "parse", parsed - began)
        add_seconds(timings, "validate", perf_counter() - parsed)
    return valid, rejects


def add_seconds(stages: dict[str, float], stage: str, seconds: float) -> None:
    stages[stage] = stages.get(stage, 0.0) + seconds
