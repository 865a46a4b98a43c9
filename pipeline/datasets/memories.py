"""Memories extracted from chat history, with emotional context and relationship dynamics."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from pipeline.config import BatchConfig
from pipeline.datasets.base import Dataset, NearDuplicates, Table
from pipeline.expressions import json_text, sha256_hex
from pipeline.normalize.decode import structure_errors
from pipeline.normalize.validate import combine, schema_failures
from pipeline.schemas.checks import parse_iso8601
from pipeline.schemas.emotional_context import EMOTIONAL_CONTEXT
from pipeline.schemas.memory import MEMORY, PARTICIPANT
from pipeline.schemas.relationship_dynamics import PARTS, RELATIONSHIP_DYNAMICS

PARTICIPANT_DTYPE = pl.Struct({"id": pl.String, "name": pl.String, "role": pl.String})
EMOTIONAL_CONTEXT_DTYPE = pl.Struct(
    {
        "id": pl.String,
        "primaryMood": pl.String,
        "intensity": pl.Int64,
        "themes": pl.List(pl.String),
        "emotionalMarkers": pl.List(pl.String),
        "contextualEvents": pl.List(pl.String),
        "temporalPatterns": pl.String,
    }
)
RELATIONSHIP_DYNAMICS_DTYPE = pl.Struct({"id": pl.String, **{part: pl.String for part in PARTS}})
INPUT = pl.Struct(
    {
        "id": pl.String,
        "summary": pl.String,
        "confidence": pl.Int64,
        "participants": pl.List(PARTICIPANT_DTYPE),
        "sourceMessageIds": pl.List(pl.String),
        "extractedAt": pl.String,
        "emotionalContext": EMOTIONAL_CONTEXT_DTYPE,
        "relationshipDynamics": RELATIONSHIP_DYNAMICS_DTYPE,
        "content": pl.String,
        "messages": pl.List(pl.String),
    }
)
# The parts validated as rows of their own (``part_rows``), by their field in ``INPUT``.
PART_DTYPES = {
    "emotionalContext": EMOTIONAL_CONTEXT_DTYPE,
    "relationshipDynamics": RELATIONSHIP_DYNAMICS_DTYPE,
}
LEGACY_PARTICIPANT = {"id": "legacy-user", "name": "Legacy User", "role": "unknown"}
# Parts held as JSON: an object or a list, stored as given.
STRUCTURES = ("emotionalContext.temporalPatterns", *(f"relationshipDynamics.{part}" for part in PARTS))
# Parts of an emotional context or relationship dynamics that may be left out.
PART_DEFAULTS = {
    "themes": [],
    "emotionalMarkers": [],
    "contextualEvents": [],
    "temporalPatterns": "{}",
    **dict.fromkeys(PARTS, "{}"),
}


def prepare(
    records: pl.DataFrame, type_errors: pl.DataFrame, config: BatchConfig, started_at: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    type_errors = pl.concat([type_errors, structure_errors(records, STRUCTURES)])
    current = transform_legacy(records.with_row_index("record"), type_errors).with_columns(
        content_hash=content_hash(),
        extracted_at=pl.when(pl.col("extractedAt").is_null())
        .then(pl.lit(started_at).dt.convert_time_zone("UTC"))
        .otherwise(parse_iso8601(pl.col("extractedAt"))),
    )
    failures = (
        [
            schema_failures(MEMORY, current),
            schema_failures(PARTICIPANT, participant_rows(current)),
            schema_failures(EMOTIONAL_CONTEXT, part_rows(current, "emotionalContext")),
            schema_failures(RELATIONSHIP_DYNAMICS, part_rows(current, "relationshipDynamics")),
        ]
        if config.validate_first
        else []
    )
    return current, combine(type_errors, failures)


def transform_legacy(records: pl.DataFrame, type_errors: pl.DataFrame) -> pl.DataFrame:
    """Legacy ``{id?, content?, messages?, summary?, confidence?}`` records in the current shape.

    A record is legacy when it has neither ``participants`` nor ``sourceMessageIds``.
    Its id, when missing, is derived from its text so that reruns give the same id.
    """
    mistyped = type_errors.filter(pl.col("field").is_in(["participants", "sourceMessageIds"]))
    legacy = (
        pl.col("participants").is_null()
        & pl.col("sourceMessageIds").is_null()
        & ~pl.col("record").is_in(mistyped["record"].implode())
    )
    non_empty = lambda name: pl.when(pl.col(name) != "").then(pl.col(name))  # noqa: E731
    return records.with_columns(
        pl.when(legacy & pl.col("id").is_null())
        .then(pl.lit("legacy-") + sha256_hex(pl.col("raw")).str.head(32))
        .otherwise(pl.col("id"))
        .alias("id"),
        pl.when(legacy)
        .then(
            pl.when(pl.col("messages").is_not_null())
            .then(pl.col("messages"))
            .when(pl.col("content").is_not_null())
            .then(pl.lit(["legacy-content"]))
            .otherwise(pl.lit([], pl.List(pl.String)))
        )
        .otherwise(pl.col("sourceMessageIds"))
        .alias("sourceMessageIds"),
        pl.when(legacy)
        .then(pl.lit([LEGACY_PARTICIPANT], pl.List(PARTICIPANT_DTYPE)))
        .otherwise(pl.col("participants"))
        .alias("participants"),
        pl.when(legacy)
        .then(pl.coalesce(non_empty("summary"), non_empty("content"), pl.lit("Legacy memory")))
        .otherwise(pl.col("summary"))
        .alias("summary"),
        pl.when(legacy & (pl.col("confidence").is_null() | (pl.col("confidence") == 0)))
        .then(pl.lit(5, pl.Int64))
        .otherwise(pl.col("confidence"))
        .alias("confidence"),
    )


def content_hash() -> pl.Expr:
    """The original system's hash (the content hash contract of docs/design.md), column-wise."""
    person = pl.element().struct
    participants = (
        pl.col("participants")
        .list.eval(
            pl.struct(
                id=person.field("id"),
                name=person.field("name").str.to_lowercase().str.strip_chars(),
                role=person.field("role").str.to_lowercase().str.strip_chars(),
            )
        )
        .list.eval(pl.element().sort_by(pl.element().struct.field("id"), maintain_order=True))
    )
    text = pl.concat_str(
        [
            pl.col("summary").str.strip_chars().str.to_lowercase(),
            json_text(participants),
            json_text(pl.col("sourceMessageIds").list.sort()),
            pl.col("confidence").cast(pl.String),
        ],
        separator="|",
    )
    return sha256_hex(text)


def participant_rows(current: pl.DataFrame) -> pl.DataFrame:
    return (
        current.select("record", "participants")
        .filter(pl.col("participants").list.len() > 0)
        .explode("participants")
        .select(
            "record",
            *(
                pl.col("participants").struct.field(f).alias(f"participants.{f}")
                for f in ("id", "name", "role")
            ),
        )
    )


def part_rows(current: pl.DataFrame, part: str) -> pl.DataFrame:
    """One row per record that has this optional part, its fields as ``part.field`` columns."""
    field = pl.col(part).struct.field
    return current.filter(pl.col(part).is_not_null()).select(
        "record",
        *(
            (
                field(f.name).fill_null(pl.lit(PART_DEFAULTS[f.name], f.dtype))
                if f.name in PART_DEFAULTS
                else field(f.name)
            ).alias(f"{part}.{f.name}")
            for f in PART_DTYPES[part].fields
        ),
    )


def memory_rows(prepared: pl.DataFrame) -> pl.DataFrame:
    return prepared.select(
        "record",
        "id",
        source_message_ids="sourceMessageIds",
        participants=json_text(pl.col("participants")),
        summary="summary",
        confidence="confidence",
        content_hash="content_hash",
        deduplication_metadata=pl.lit(None, pl.String),
        extracted_at="extracted_at",
    )


def emotional_context_rows(prepared: pl.DataFrame) -> pl.DataFrame:
    part = part_rows(prepared.select("record", "id", "emotionalContext"), "emotionalContext")
    ec = lambda name: pl.col(f"emotionalContext.{name}")  # noqa: E731
    return part.join(prepared.select("record", "id"), on="record").select(
        "record",
        id=pl.coalesce(ec("id"), pl.lit("ec-") + pl.col("id")),
        memory_id="id",
        primary_mood=ec("primaryMood"),
        intensity=ec("intensity"),
        themes=json_text(ec("themes")),
        emotional_markers=json_text(ec("emotionalMarkers")),
        contextual_events=json_text(ec("contextualEvents")),
        temporal_patterns=ec("temporalPatterns"),
    )


def relationship_dynamics_rows(prepared: pl.DataFrame) -> pl.DataFrame:
    part = part_rows(prepared.select("record", "relationshipDynamics"), "relationshipDynamics")
    rd = lambda name: pl.col(f"relationshipDynamics.{name}")  # noqa: E731
    return part.join(prepared.select("record", "id"), on="record").select(
        "record",
        id=pl.coalesce(rd("id"), pl.lit("rd-") + pl.col("id")),
        memory_id="id",
        overall_dynamics=rd("overallDynamics"),
        participant_dynamics=rd("participantDynamics"),
        communication_patterns=rd("communicationPatterns"),
        interaction_quality=rd("interactionQuality"),
    )


MEMORIES_TABLE = Table(
    name="memories",
    ddl=(
        """CREATE TABLE IF NOT EXISTS memories (
            id text PRIMARY KEY,
            source_message_ids text[] NOT NULL,
            participants jsonb NOT NULL,
            summary text NOT NULL,
            confidence smallint NOT NULL CHECK (confidence BETWEEN 1 AND 10),
            content_hash char(64) NOT NULL UNIQUE,
            deduplication_metadata jsonb,
            extracted_at timestamptz NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now())""",
    ),
    rows=memory_rows,
    json_columns=("participants", "deduplication_metadata"),
    int16_columns=("confidence",),
)

EMOTIONAL_CONTEXTS_TABLE = Table(
    name="emotional_contexts",
    ddl=(
        """CREATE TABLE IF NOT EXISTS emotional_contexts (
            id text PRIMARY KEY,
            memory_id text NOT NULL UNIQUE REFERENCES memories(id) ON DELETE CASCADE,
            primary_mood text NOT NULL
                CHECK (primary_mood IN ('positive','negative','neutral','mixed','ambiguous')),
            intensity smallint NOT NULL CHECK (intensity BETWEEN 1 AND 10),
            themes jsonb NOT NULL, emotional_markers jsonb NOT NULL,
            contextual_events jsonb NOT NULL, temporal_patterns jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now())""",
    ),
    rows=emotional_context_rows,
    json_columns=("themes", "emotional_markers", "contextual_events", "temporal_patterns"),
    int16_columns=("intensity",),
)


RELATIONSHIP_DYNAMICS_TABLE = Table(
    name="relationship_dynamics",
    ddl=(
        """CREATE TABLE IF NOT EXISTS relationship_dynamics (
            id text PRIMARY KEY,
            memory_id text NOT NULL UNIQUE REFERENCES memories(id) ON DELETE CASCADE,
            overall_dynamics jsonb NOT NULL, participant_dynamics jsonb NOT NULL,
            communication_patterns jsonb NOT NULL, interaction_quality jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now())""",
    ),
    rows=relationship_dynamics_rows,
    json_columns=(
        "overall_dynamics",
        "participant_dynamics",
        "communication_patterns",
        "interaction_quality",
    ),
)


# The sources every stored memory cites, read once when a run starts (``dedup.known``); then the
# near-duplicate candidates of a batch, by key: the stored memories citing one of its sources.
CITED_SQL = "SELECT id, source_message_ids AS sources FROM memories"
CANDIDATES_SQL = """
SELECT m.id AS candidate, m.summary, m.source_message_ids AS "sourceMessageIds",
       ARRAY(SELECT p->>'id' FROM jsonb_array_elements(m.participants) p) AS people
FROM memories m WHERE m.id = ANY($1)"""

# Merged ids are appended in order (merge time, batch, position in the batch), and a source
# already noted on the row is not noted again, so folding in steps gives what one fold would.
NOTED_SOURCES = "COALESCE(m.deduplication_metadata->'mergedSourceMessageIds', '[]')"
FOLD_MERGES_SQL = f"""
WITH ids AS (
    SELECT kept_id, max(merged_at) AS merged_at,
        jsonb_agg(id ORDER BY merged_at, batch_no, n) AS ids
    FROM pipeline_merges, unnest(merged_ids) WITH ORDINALITY AS u(id, n)
    GROUP BY kept_id),
sources AS (
    SELECT kept_id, array_agg(source ORDER BY merged_at, batch_no, n) AS sources
    FROM (
        SELECT DISTINCT ON (kept_id, source) kept_id, source, merged_at, batch_no, n
        FROM pipeline_merges, unnest(merged_sources) WITH ORDINALITY AS u(source, n)
        ORDER BY kept_id, source, merged_at, batch_no, n) first_seen
    GROUP BY kept_id),
noted AS (
    UPDATE memories m SET updated_at = now(),
        deduplication_metadata = jsonb_build_object(
            'originalHash', m.content_hash,
            'mergedWith', COALESCE(m.deduplication_metadata->'mergedWith', '[]') || g.ids,
            'mergeReason', 'similar_duplicate',
            'mergedAt', g.merged_at,
            'mergedSourceMessageIds', {NOTED_SOURCES} || COALESCE((
                SELECT jsonb_agg(source ORDER BY n)
                FROM unnest(s.sources) WITH ORDINALITY AS u(source, n)
                WHERE NOT {NOTED_SOURCES} ? source), '[]'))
    FROM ids g LEFT JOIN sources s USING (kept_id)
    WHERE m.id = g.kept_id
    RETURNING m.id AS kept_id)
DELETE FROM pipeline_merges p USING noted WHERE p.kept_id = noted.kept_id"""

DATASET = Dataset(
    name="memories",
    input_dtype=INPUT,
    prepare=prepare,
    tables=(MEMORIES_TABLE, EMOTIONAL_CONTEXTS_TABLE, RELATIONSHIP_DYNAMICS_TABLE),
    csv_json_columns=(
        "confidence",
        "participants",
        "sourceMessageIds",
        "emotionalContext",
        "relationshipDynamics",
        "messages",
    ),
    hash_constraint="memories_content_hash_key",
    # The original silently ignores a legacy record's ``messages`` when it is not a list.
    lenient_fields=("messages", "content"),
    json_paths=STRUCTURES,
    near_duplicates=NearDuplicates(
        cited_sql=CITED_SQL, candidates_sql=CANDIDATES_SQL, fold_sql=FOLD_MERGES_SQL
    ),
)
