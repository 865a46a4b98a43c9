"""A batch's last stage before its COPY: which records are refused (duplicates, key conflicts)
and which are kept, against what is stored and the batch's own earlier records.

Pure: a run decides each batch on its lookup thread while the previous batch copies,
and the loader decides one itself, in its transaction, when that lookup failed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import polars as pl

from pipeline.config import BatchConfig
from pipeline.datasets.base import Dataset
from pipeline.dedup.plan import LoadPlan
from pipeline.dedup.resolve import StoredMatches, decision_rejects, resolve, similar_edges, similar_to
from pipeline.dedup.similarity import similar_pairs


@dataclass(frozen=True)
class Decision:
    """``refused``: reject rows with their ``record``; ``kept``: ``record``, ``id`` and
    ``content_hash`` of the records to copy; ``merges``: per kept memory, the near
    duplicates merged into it (``duplicate_of``, ``merged_ids``, ``merged_sources``);
    ``found``: what stored rows said, to decide again without records the server refused."""

    refused: pl.DataFrame
    kept: pl.DataFrame
    merges: pl.DataFrame
    found: StoredMatches


def without_refused(decision: Decision, records: pl.DataFrame, failed: pl.DataFrame) -> Decision | None:
    """``decision`` less the ``failed`` records (kept, but refused by the server), when no record
    it refused depends on them: none is a duplicate of one, shares its id or its content hash.
    Deciding again would then keep the same records but these. None when one does: the batch
    must be decided again (``decide``)."""
    gone = records.join(failed.select("record").unique(), on="record", how="semi")
    refused = decision.refused.select("record", "duplicate_of").join(
        records.select("record", "id", "content_hash"), on="record"
    )
    depends = refused.filter(
        pl.col("duplicate_of").is_in(gone["id"].implode())
        | pl.col("id").is_in(gone["id"].implode())
        | pl.col("content_hash").is_in(gone["content_hash"].implode())
    )
    if not depends.is_empty():
        return None
    return replace(decision, kept=decision.kept.join(gone.select("record"), on="record", how="anti"))


def decide(dataset: Dataset, plan: LoadPlan, config: BatchConfig, found: StoredMatches) -> Decision:
    """``dedup.resolve`` over the batch, given what stored rows say about it (``found``)."""
    root = dataset.tables[0]
    records = plan.records
    stored, stored_similar = found.keys, found.similar
    edges = plan.edges
    if plan.near is not None and not records.is_empty():
        # A record the stored rows refuse is refused whatever the batch holds, so it is
        # no candidate for later records: leaving it out keeps a run of mutually similar
        # records (templated legacy texts) from pairing quadratically batch after batch.
        settled = pl.concat([stored["record"], stored_similar["record"]]).unique()
        near = plan.near
        keys = near.batch_keys.filter(~pl.col("candidate").is_in(settled.implode()))
        targets = near.batch.rename({"record": "candidate"})
        threshold = config.similarity_threshold
        inside = similar_pairs(near.batch_probes, keys, near.batch, targets, threshold, True)
        edges = pl.concat([edges, similar_edges(inside)])
    decisions = resolve(records, stored, stored_similar, edges, config.mode)
    refused = decision_rejects(
        records,
        decisions,
        root.key,
        f"{root.name}_pkey",
        dataset.hash_constraint,
        config.similarity_threshold,
    ).with_columns(record=decisions["record"])
    similar = decisions.filter(pl.col("outcome") == "similar_duplicate").join(records, on="record")
    merges = (
        similar.group_by("duplicate_of").agg(
            merged_ids=pl.col("id"),
            merged_sources=pl.col("sourceMessageIds")
            .list.explode(keep_nulls=False, empty_as_null=False)
            .unique(maintain_order=True),
        )
        if not similar.is_empty()
        else similar
    )
    kept = records.join(decisions.select("record"), on="record", how="anti")
    return Decision(refused, kept.select("record", "id", "content_hash"), merges, found)


def decide_against(
    dataset: Dataset,
    plan: LoadPlan,
    config: BatchConfig,
    keys: pl.DataFrame,
    candidates: pl.DataFrame | None,
    earlier: tuple[LoadPlan, pl.DataFrame] | None = None,
) -> Decision:
    """``decide`` given what stored rows say (``load.lookups.stored_rows``: ``keys`` and near-duplicate
    ``candidates``), with the ``earlier`` batch's rows (``record``, ``id``, ``content_hash``)
    also taken as stored when given."""
    earlier_near = earlier[0].near if earlier is not None else None
    if earlier is not None and earlier_near is not None and candidates is not None:
        memories = earlier_near.batch.join(earlier[1].select("record", candidate="id"), on="record")
        candidates = pl.concat([candidates, memories.select(candidates.columns)]).unique("candidate")
    found = StoredMatches(keys, similar_to(plan.near, candidates, config.similarity_threshold))
    if earlier is not None:
        found = found.with_rows(plan.records.select("record", "id", "content_hash"), earlier[1])
    return decide(dataset, plan, config, found)
