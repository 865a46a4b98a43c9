"""What a batch sends to the database, worked out before its transaction opens.

Everything here is pure and needs no stored rows, so the run computes it while
the database is still copying the previous batch: each table's rows as Arrow the
server accepts, the links between records of the batch (same hash, same id), and
what near-duplicate lookups need (normalized words, sources and participants, each
record's rare-word prefix). The loader then only looks up what is stored, decides
and copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from pipeline.config import BatchConfig
from pipeline.datasets.base import Dataset, Table
from pipeline.dedup.resolve import key_edges
from pipeline.dedup.similarity import comparable, probe_keys, record_sources, similar_pairs, target_keys


@dataclass(frozen=True)
class NearDuplicateInput:
    """A batch as near-duplicate scoring sees it (``similarity.comparable``), its records'
    distinct ``sources`` (to find stored memories with), and for pairs inside the batch the
    keys records look for and offer, on sources two records share."""

    batch: pl.DataFrame
    sources: pl.DataFrame
    batch_probes: pl.DataFrame
    batch_keys: pl.DataFrame

    def similar_to(self, memories: pl.DataFrame, threshold: float) -> pl.DataFrame:
        """(record, candidate_id, score): the records similar to ``memories`` above
        ``threshold``; ``memories`` is a ``comparable`` frame keyed by ``candidate``, which
        becomes ``candidate_id``."""
        offered = (
            memories.select("candidate", source=pl.col("sources").list.unique())
            .explode("source")
            .join(self.sources, on="source", how="semi")
        )
        probes = probe_keys(self.batch, self.sources, offered, threshold)
        keys = target_keys(memories.join(offered, on="candidate", how="semi"), probes)
        found = similar_pairs(probes, keys, self.batch, memories, threshold, False)
        return found.rename({"candidate": "candidate_id"})


@dataclass(frozen=True)
class LoadPlan:
    """``records`` to load, each table's rows as Arrow (with ``record``), the batch's
    exact and key links (``dedup.key_edges``), and near-duplicate input when enabled."""

    records: pl.DataFrame
    tables: dict[str, pa.Table]
    edges: pl.DataFrame
    near: NearDuplicateInput | None


def plan_load(records: pl.DataFrame, dataset: Dataset, config: BatchConfig) -> LoadPlan:
    near = near_enabled(dataset, config)
    return LoadPlan(
        records=records,
        tables={table.name: table_arrow(table, table.rows(records)) for table in dataset.tables},
        edges=key_edges(records),
        near=near_duplicate_input(records, config.similarity_threshold) if near else None,
    )


def near_enabled(dataset: Dataset, config: BatchConfig) -> bool:
    # A score is capped at 1.0, so a threshold of 1 or more turns near duplicates off.
    return (
        config.mode == "dedup" and dataset.near_duplicates is not None and config.similarity_threshold < 1.0
    )


def near_duplicate_input(records: pl.DataFrame, threshold: float) -> NearDuplicateInput:
    batch = comparable(
        records.with_columns(people=pl.col("participants").list.eval(pl.element().struct.field("id"))),
        "record",
    )
    sources = record_sources(batch)
    shared = sources.group_by("source").len().filter(pl.col("len") > 1).select("source")
    probes = probe_keys(batch, sources, shared, threshold)
    sharing = batch.join(sources.join(shared, on="source", how="semi"), on="record", how="semi")
    keys = target_keys(sharing.rename({"record": "candidate"}), probes)
    return NearDuplicateInput(batch, sources, probes, keys.join(shared, on="source", how="semi"))


def cited_by(plan: LoadPlan, rows: pl.DataFrame) -> pl.DataFrame | None:
    """``id`` and ``sources`` of the ``rows`` (``record``, ``id``) of ``plan``; None without
    near duplicates."""
    if plan.near is None:
        return None
    return plan.near.batch.join(rows.select("record", "id"), on="record").select("id", "sources")


def loaded_records(plan: LoadPlan, rejects: pl.DataFrame) -> pl.DataFrame:
    """``record``, ``id`` and ``content_hash`` of the records of ``plan`` that loaded: none of
    their lines is in ``rejects``, the batch's rejects."""
    lines = ["source_file", "source_line"]
    loaded = plan.records.join(rejects.select(lines), on=lines, how="anti")
    return loaded.select("record", "id", "content_hash")


def table_arrow(table: Table, rows: pl.DataFrame) -> pa.Table:
    """Arrow the server accepts: JSON columns as the JSON extension type, smallints as int16.

    ``record`` stays (first column) so the loader can drop refused records; it is not sent.
    """
    frame = rows.with_columns(pl.col(c).cast(pl.Int16, strict=False) for c in table.int16_columns)
    arrow = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
    for name in table.json_columns:
        index = arrow.schema.get_field_index(name)
        column = arrow.column(index).cast(pa.string())
        storage = column.combine_chunks() if column.num_chunks else pa.array([], pa.string())
        arrow = arrow.set_column(index, name, pa.ExtensionArray.from_storage(pa.json_(pa.string()), storage))
    return arrow
