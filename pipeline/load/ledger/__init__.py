"""The run ledger: the pipeline's own tables and every statement about them.

``pipeline_runs`` (a run's settings, status and result, and its inputs: each ``path``, ``size``
and ``sha256``, and ``loaded_by`` the run that loaded one it skipped), ``pipeline_batches`` (one
row per committed batch, per shard: the ledger a resume goes on from), ``pipeline_rejects`` and
``pipeline_merges`` (near duplicates merged into a kept row, folded into its
``deduplication_metadata`` when the run ends). One module per table; ``schema`` builds them in
numbered steps (``pipeline_schema`` records those a database took), ``views`` names them for
``pipeline rejects --sql``.
"""

from pipeline.load.ledger.batches import (
    BatchOutcome,
    committed_outcome,
    committed_shards,
    forget_records,
    record_batch,
    run_history,
)
from pipeline.load.ledger.merges import fold_merges, ingest_merges
from pipeline.load.ledger.rejects import (
    damaged_inputs,
    ingest_rejects,
    reject_samples,
    rejected_source_lines,
    rejects_without_raw,
    resolve_rejects,
    unresolved_rejects,
)
from pipeline.load.ledger.runs import (
    RunRow,
    find_run,
    finish_run,
    latest_run,
    record_inputs,
    runs_listing,
    runs_reading,
    start_run,
)
from pipeline.load.ledger.schema import ensure_schema, has_ledger
from pipeline.load.ledger.views import QUERY_NAMES, run_filter

__all__ = [
    "QUERY_NAMES",
    "BatchOutcome",
    "RunRow",
    "committed_outcome",
    "committed_shards",
    "damaged_inputs",
    "ensure_schema",
    "find_run",
    "finish_run",
    "fold_merges",
    "forget_records",
    "has_ledger",
    "ingest_merges",
    "ingest_rejects",
    "latest_run",
    "record_batch",
    "record_inputs",
    "reject_samples",
    "rejected_source_lines",
    "rejects_without_raw",
    "resolve_rejects",
    "run_filter",
    "run_history",
    "runs_listing",
    "runs_reading",
    "start_run",
    "unresolved_rejects",
]
