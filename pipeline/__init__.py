"""Column-wise migration of legacy memory exports into PostgreSQL.

    from pipeline import BatchConfig, migrate
    result = migrate(["export.jsonl"], BatchConfig(batch_size=50_000), db_url="postgresql://...")

The library logs through loguru but stays quiet until ``logger.enable("pipeline")``.
"""

import os

# The pipeline keeps both cores busy with threads of its own (reading, looking up, loading)
# over frames of one batch each; Polars splitting such small frames across its own pool
# costs more CPU than it wins (1M records: 1.3 s faster with one Polars thread). Set before
# Polars is first imported; an explicit POLARS_MAX_THREADS wins.
os.environ.setdefault("POLARS_MAX_THREADS", "1")

from loguru import logger

from pipeline.config import BatchConfig
from pipeline.database import resolve_url, start_embedded, stop_embedded
from pipeline.duck import QueryError
from pipeline.errors import ConfigError, DatabaseError, InputError, PipelineError, RunStopped
from pipeline.inspector import (
    RejectSummary,
    UnknownRunError,
    export_rejects,
    list_runs,
    query,
    summarize,
    write_query,
)
from pipeline.replay import ReplayResult, replay
from pipeline.report import RunResult
from pipeline.runner import migrate, stage_batch

logger.disable("pipeline")

__all__ = [
    "BatchConfig",
    "ConfigError",
    "DatabaseError",
    "InputError",
    "PipelineError",
    "QueryError",
    "RejectSummary",
    "ReplayResult",
    "RunResult",
    "RunStopped",
    "UnknownRunError",
    "export_rejects",
    "list_runs",
    "migrate",
    "query",
    "replay",
    "resolve_url",
    "stage_batch",
    "start_embedded",
    "stop_embedded",
    "summarize",
    "write_query",
]
