"""The shard of every record of a run (``--shards S``), from a first pass over its input.

The pass reads, decodes, validates and hashes every batch (on the workers of a cluster) and
keeps only the values records may share (``dedup.groups``): about 16 bytes a value, 5 to 8
values a memory. The loading process then groups the records and gives each group a shard;
each shard's records are decided and loaded in input order by its own threads and
connections (``pipelining``), side by side with the other shards'. The pass costs a second
read and staging of the input, where the workers have it to spare.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from time import perf_counter

import polars as pl

from pipeline.config import BatchConfig
from pipeline.dedup.groups import KEY_SCHEMA, shards_of
from pipeline.extract.sources import Source
from pipeline.normalize.stage import add_seconds
from pipeline.run.autosize import BatchSizer
from pipeline.run.prepared import OrderedMap, batch_keys, numbered_work
from pipeline.run.progress import ProgressTask


def record_shards(
    files: Sequence[Source | Path],
    dataset_name: str,
    config: BatchConfig,
    started_at: datetime,
    in_order: OrderedMap,
    stop: threading.Event,
) -> tuple[dict[int, pl.DataFrame], dict[str, float]]:
    """Batch number → (record, shard) of the records of the batch to be decided, and the
    seconds the pass spent per stage; with progress events of its own (``grouping``). ``stop``
    set (Ctrl-C) ends the pass with ``KeyboardInterrupt``."""
    stages: dict[str, float] = {}
    progress = ProgressTask("grouping", sum(f.stat().st_size for f in files), config.log_progress)
    sizer = BatchSizer(config.batch_size, config.memory_limit_mb)
    work = numbered_work(files, config, sizer, in_order)
    # Where each batch handed to ``in_order`` reaches, taken back as its keys come.
    reaching: deque[int] = deque()

    def arguments() -> Iterator[tuple]:
        for number, item, bytes_done, _ in work:
            reaching.append(bytes_done)
            yield number, item, dataset_name, config, started_at

    keys = [pl.DataFrame(schema={"batch": pl.UInt32, **KEY_SCHEMA})]
    grouped = 0  # records to be decided, read so far
    for batch, seconds in in_order(batch_keys, arguments()):
        if stop.is_set():
            raise KeyboardInterrupt
        keys.append(batch)
        for stage, spent in seconds.items():
            add_seconds(stages, stage, spent)
        grouped += batch["record"].n_unique()
        progress.update(reaching.popleft(), grouped)
    began = perf_counter()
    assigned = shards_of(pl.concat(keys), config.shards)
    add_seconds(stages, "group", perf_counter() - began)
    by_batch = assigned.partition_by("batch", as_dict=True)
    return {batch: frame.drop("batch") for (batch,), frame in by_batch.items()}, stages
