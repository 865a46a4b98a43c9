"""Column-wise migration of legacy memory exports into PostgreSQL.

    from pipeline import BatchConfig, migrate
    result = migrate(["export.jsonl"], BatchConfig(batch_size=50_000), db_url="postgresql://...")

Importing ``pipeline`` only defines names: each is imported from its module when first used.
The library logs through loguru under the name ``pipeline`` and stays quiet until
``logger.enable("pipeline")``. The pipeline runs its own threads over frames of one batch
each; set ``POLARS_MAX_THREADS=1`` before Polars is imported for the best throughput (the
``pipeline`` command does).
"""

from importlib import import_module

from loguru import logger

_HOMES = {
    "BatchConfig": "pipeline.config",
    "ConfigError": "pipeline.errors",
    "DatabaseError": "pipeline.errors",
    "InputError": "pipeline.errors",
    "PipelineError": "pipeline.errors",
    "RunInterrupted": "pipeline.errors",
    "RunStopped": "pipeline.errors",
    "QueryError": "pipeline.inspect",
    "RejectSummary": "pipeline.inspect",
    "UnknownRunError": "pipeline.inspect",
    "export_rejects": "pipeline.inspect",
    "list_runs": "pipeline.inspect",
    "query": "pipeline.inspect",
    "summarize": "pipeline.inspect",
    "write_query": "pipeline.inspect",
    "ReplayResult": "pipeline.replaying",
    "replay": "pipeline.replaying",
    "RunResult": "pipeline.run.report",
    "migrate": "pipeline.run.migrate",
    "recorded_config": "pipeline.run.migrate",
    "stage_batch": "pipeline.normalize.stage",
    "resolve_url": "pipeline.load.server",
    "start_embedded": "pipeline.load.server",
    "stop_embedded": "pipeline.load.server",
}
__all__ = sorted(_HOMES)

logger.disable("pipeline")


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return __all__
