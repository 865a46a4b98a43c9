"""Looking at runs and their rejects: a summary with what to fix, DuckDB SQL over the
database, exports to fix and replay, the list of runs."""

from pipeline.inspect.duck import QueryError
from pipeline.inspect.export import ExportResult, export_rejects
from pipeline.inspect.query import format_table, query, write_query
from pipeline.inspect.runs import UnknownRunError, format_runs, list_runs, resolve_run
from pipeline.inspect.summary import RejectSummary, summarize

__all__ = [
    "ExportResult",
    "QueryError",
    "RejectSummary",
    "UnknownRunError",
    "export_rejects",
    "format_runs",
    "format_table",
    "list_runs",
    "query",
    "resolve_run",
    "summarize",
    "write_query",
]
