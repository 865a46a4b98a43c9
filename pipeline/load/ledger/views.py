"""The ledger's tables as ``pipeline rejects --sql`` names them, and which of them ``--run``
narrows to one run."""

from __future__ import annotations

from pipeline.sqltext import literal

QUERY_NAMES = {"rejects": "pipeline_rejects", "runs": "pipeline_runs", "batches": "pipeline_batches"}

# A run's own rows of these; ``pipeline_runs`` stays whole, for joins to the other runs.
_RUN_SCOPED = {"pipeline_rejects", "pipeline_batches"}


def run_filter(table: str, run_id: str | None) -> str:
    """The WHERE clause that keeps ``run_id``'s rows of ``table``: empty without a run, and for
    a table ``--run`` does not narrow."""
    return f"WHERE run_id = {literal(run_id)}" if run_id and table in _RUN_SCOPED else ""
