"""Files to raw batches: the inputs of a run, their formats, their records in order."""

from pipeline.extract.batches import RawBatch, scan_batches
from pipeline.extract.inputs import fingerprint, input_format, resolve_inputs
from pipeline.extract.readers import RAW_SCHEMA
from pipeline.extract.sniff import record_keys

__all__ = [
    "RAW_SCHEMA",
    "RawBatch",
    "fingerprint",
    "input_format",
    "record_keys",
    "resolve_inputs",
    "scan_batches",
]
