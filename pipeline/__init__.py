"""Column-wise migration of legacy memory exports into PostgreSQL.

    from pipeline import BatchConfig, migrate
    result = migrate(["export.jsonl"], BatchConfig(batch_size=50_000), db_url="postgresql://...")

The library logs through loguru but stays quiet until ``logger.enable("pipeline")``.
"""

from loguru import logger

from pipeline.config import BatchConfig
from pipeline.database import resolve_url, start_embedded, stop_embedded
from pipeline.errors import ConfigError, DatabaseError, InputError, PipelineError, RunStopped
from pipeline.report import RunResult
from pipeline.runner import migrate, stage_batch

logger.disable("pipeline")

__all__ = [
    "BatchConfig",
    "ConfigError",
    "DatabaseError",
    "InputError",
    "PipelineError",
    "RunResult",
    "RunStopped",
    "migrate",
    "resolve_url",
    "stage_batch",
    "start_embedded",
    "stop_embedded",
]
