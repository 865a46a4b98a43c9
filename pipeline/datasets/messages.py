"""Chat-message CSV exports: one message per row, with the links in its text and its attachment.

The export has no ids, so a message's id is derived from its content hash: an exact
repeat of a row has the same id and hash, and the shared dedup stage and the loader's
stored-key check treat it as a duplicate (``exact_duplicate``) or, on a rerun, as
already loaded.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from pipeline.config import BatchConfig
from pipeline.datasets.base import Dataset, Table
from pipeline.expressions import sha256_hex
from pipeline.normalize.validate import combine, schema_failures
from pipeline.schemas.message import MESSAGE, parse_export_datetime

HEADERS = (
    "Chat Session",
    "Message Date",
    "Delivered Date",
    "Read Date",
    "Edited Date",
    "Service",
    "Type",
    "Sender ID",
    "Sender Name",
    "Status",
    "Replying to",
    "Subject",
    "Text",
    "Attachment",
    "Attachment type",
)
INPUT = pl.Struct(dict.fromkeys(HEADERS, pl.String))
ID_PREFIX = "msg-"
ID_HEX_CHARS = 24
# http(s):// or www. up to whitespace, quotes or angle brackets; trailing punctuation is
# sentence punctuation, not part of the link ("see www.x.org." / "(https://x.org/a)").
URL_PATTERN = r"(?i)\b(?:https?://|www\.)[^\s<>\"'`]+"
URL_TRAILING = ".,;:!?)]}"


def prepare(
    records: pl.DataFrame, type_errors: pl.DataFrame, config: BatchConfig, started_at: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows in their target shape (owner name applied, dates in UTC, id and hash derived)."""
    current = records.with_row_index("record").with_columns(
        date_text=_trimmed("Message Date"),
        direction=_trimmed("Type").str.to_lowercase(),
        sender_id=_trimmed("Sender ID"),
        attachment=_trimmed("Attachment"),
        sent_at=parse_export_datetime(_trimmed("Message Date")),
        delivered_at=parse_export_datetime(_trimmed("Delivered Date")),
        read_at=parse_export_datetime(_trimmed("Read Date")),
        edited_at=parse_export_datetime(_trimmed("Edited Date")),
    )
    current = current.with_columns(
        sender=pl.coalesce(
            _trimmed("Sender Name"),
            pl.when(pl.col("direction") == "outgoing").then(pl.lit(config.self_name.strip() or None)),
        )
    ).with_columns(content_hash=content_hash())
    current = current.with_columns(id=pl.lit(ID_PREFIX) + pl.col("content_hash").str.head(ID_HEX_CHARS))
    failures = [schema_failures(MESSAGE, validation_frame(current))] if config.validate_first else []
    return current, combine(type_errors, failures)


def _trimmed(name: str) -> pl.Expr:
    """The cell without surrounding whitespace; null when nothing is left."""
    value = pl.col(name).str.strip_chars()
    return pl.when(value != "").then(value)


def content_hash() -> pl.Expr:
    """The original importer's hash: SHA-256 of ``Message Date|sender|Sender ID|Text|Attachment``.

    Every cell exactly as the export wrote it, padding included (an empty cell is an
    empty string), so that a row the original stored has the same hash here. The sender
    is the Sender Name as written; for a row without one (empty or blank), the sender
    stored: the owner name for an outgoing message, else nothing.
    """
    written_name = pl.when(_trimmed("Sender Name").is_not_null()).then(pl.col("Sender Name"))
    sender = pl.coalesce(written_name, "sender")
    parts = [pl.col("Message Date"), sender, pl.col("Sender ID"), pl.col("Text"), pl.col("Attachment")]
    return sha256_hex(pl.concat_str([part.fill_null("") for part in parts], separator="|"))


def validation_frame(current: pl.DataFrame) -> pl.DataFrame:
    """The values the ``MESSAGE`` schema checks, under the export's column names."""
    has_text = pl.col("Text").str.strip_chars() != ""
    return current.select(
        "record",
        pl.col("date_text").alias("Message Date"),
        *(_trimmed(name) for name in ("Delivered Date", "Read Date", "Edited Date")),
        pl.col("sender").alias("Sender Name"),
        pl.col("direction").alias("Type"),
        pl.coalesce(pl.when(has_text).then(pl.col("Text")), "attachment", pl.lit("")).alias("Text"),
    )


def message_rows(prepared: pl.DataFrame) -> pl.DataFrame:
    return prepared.select(
        "record",
        "id",
        "sent_at",
        "sender",
        "sender_id",
        text="Text",
        direction="direction",
        service="Service",
        chat_session="Chat Session",
        status="Status",
        replying_to="Replying to",
        subject="Subject",
        delivered_at="delivered_at",
        read_at="read_at",
        edited_at="edited_at",
        content_hash="content_hash",
    )


def normalized_url(url: pl.Expr) -> pl.Expr:
    """Sentence punctuation dropped, ``www.`` links given ``https://``, the scheme lowercased."""
    url = url.str.strip_chars_end(URL_TRAILING)
    url = (
        pl.when(url.str.to_lowercase().str.starts_with("www.")).then(pl.lit("https://") + url).otherwise(url)
    )
    return url.str.replace(r"(?i)^https://", "https://").str.replace(r"(?i)^http://", "http://")


def link_rows(prepared: pl.DataFrame) -> pl.DataFrame:
    """The links of each message's text, normalized, once per message ignoring case."""
    link = pl.element()
    urls = (
        pl.col("Text")
        .str.extract_all(URL_PATTERN)
        .list.eval(normalized_url(link))
        .list.eval(
            link.filter(link.str.contains(r"^https?://\w") & link.str.to_lowercase().is_first_distinct())
        )
    )
    return (
        prepared.select("record", "id", url=urls)
        .explode("url")
        .filter(pl.col("url").is_not_null())
        .select(
            "record",
            id=pl.format("{}-l{}", "id", pl.int_range(1, pl.len() + 1).over("record")),
            message_id="id",
            url="url",
        )
    )


def asset_rows(prepared: pl.DataFrame) -> pl.DataFrame:
    return prepared.filter(pl.col("attachment").is_not_null()).select(
        "record",
        id=pl.col("id") + pl.lit("-a1"),
        message_id="id",
        filename="attachment",
        type=_trimmed("Attachment type"),
    )


MESSAGES_TABLE = Table(
    name="messages",
    ddl=(
        """CREATE TABLE IF NOT EXISTS messages (
            id text PRIMARY KEY,
            sent_at timestamptz NOT NULL,
            sender text NOT NULL,
            sender_id text,
            text text,
            direction text NOT NULL CHECK (direction IN ('incoming','outgoing')),
            service text, chat_session text, status text, replying_to text, subject text,
            delivered_at timestamptz, read_at timestamptz, edited_at timestamptz,
            content_hash char(64) NOT NULL UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now())""",
    ),
    rows=message_rows,
)

MESSAGE_LINKS_TABLE = Table(
    name="message_links",
    ddl=(
        """CREATE TABLE IF NOT EXISTS message_links (
            id text PRIMARY KEY,
            message_id text NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            url text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now())""",
        # Also the index the cascade from messages uses.
        "CREATE UNIQUE INDEX IF NOT EXISTS message_links_message_id_url_key"
        " ON message_links (message_id, lower(url))",
    ),
    rows=link_rows,
)

MESSAGE_ASSETS_TABLE = Table(
    name="message_assets",
    ddl=(
        """CREATE TABLE IF NOT EXISTS message_assets (
            id text PRIMARY KEY,
            message_id text NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            filename text NOT NULL,
            type text,
            created_at timestamptz NOT NULL DEFAULT now())""",
        "CREATE INDEX IF NOT EXISTS message_assets_message_id_idx ON message_assets (message_id)",
    ),
    rows=asset_rows,
)

DATASET = Dataset(
    name="messages",
    input_dtype=INPUT,
    prepare=prepare,
    tables=(MESSAGES_TABLE, MESSAGE_LINKS_TABLE, MESSAGE_ASSETS_TABLE),
    hash_constraint="messages_content_hash_key",
)
