"""The run configuration: one frozen object, checked when it is built."""

from __future__ import annotations

import codecs
from dataclasses import asdict, dataclass, fields
from typing import Literal, TypeVar

from pipeline.errors import ConfigError

Mode = Literal["dedup", "standard"]
AUTO = "auto"
# The connections a run opens per shard: one loads, one looks up stored rows.
CONNECTIONS = 2


@dataclass(frozen=True)
class TextOptions:
    """How text inputs are read, as a user declared it: ``encoding`` a Python codec name (None:
    UTF-8, or what a byte-order mark says), ``delimiter`` a CSV's one-character separator
    (None: a tab for ``.tsv``, else told by the header)."""

    encoding: str | None = None
    delimiter: str | None = None

    def __post_init__(self) -> None:
        if self.encoding is not None:
            checked_encoding(self.encoding)
        if self.delimiter is not None and (
            len(self.delimiter) != 1 or not self.delimiter.isascii() or self.delimiter in '"\r\n'
        ):
            raise ConfigError(
                f"delimiter must be one ASCII character other than a quote or line break, got "
                f"{self.delimiter!r}; e.g. --delimiter ';' or --delimiter tab"
            )


DEFAULT_TEXT = TextOptions()


def checked_encoding(name: str) -> str:
    """The codec's own name, or a ConfigError for a name Python knows no text codec by."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ConfigError(
            f"unknown encoding {name!r}; use a Python codec name such as utf-8, cp1252, latin-1 or utf-16"
        ) from None
    if not getattr(info, "_is_text_encoding", True):
        raise ConfigError(f"{name!r} is not a text encoding; use one such as utf-8, cp1252 or utf-16")
    return info.name


@dataclass(frozen=True)
class DecisionRules:
    """What a run decides by: a resume and a replay keep them, and an input that a completed
    run read whole under the same rules is not read again."""

    dataset: str
    mode: Mode
    validate_first: bool
    similarity_threshold: float
    self_name: str
    encoding: str | None
    delimiter: str | None


@dataclass(frozen=True)
class StopRules:
    """When a run stops short of its end: each command's own (a resume does not inherit them)."""

    continue_on_error: bool
    max_errors: int | None


@dataclass(frozen=True)
class Execution:
    """How a run is carried out: a resume may change these, but ``batch_size`` and ``shards``,
    by which the ledger numbers the batches it committed."""

    batch_size: int | Literal["auto"]
    memory_limit_mb: int
    partitioning: Literal["records", "ranges"]
    max_connections: int
    shards: int
    log_progress: bool
    dry_run: bool
    rejects_file: str | None


Part = TypeVar("Part", DecisionRules, StopRules, Execution)


@dataclass(frozen=True)
class BatchConfig:
    """How a migration runs (the original's ``BatchProcessingConfig``, plus our knobs): one
    flat object to build, read in parts that say who may change them (``rules``,
    ``stop_rules``, ``execution``) and ``replay_of``, where a run's records came from.

    batch_size: records read, validated and committed together, or ``"auto"``: the
        run picks the size during the run from measured throughput and memory
        (``pipeline.run.autosize``), within ``memory_limit_mb``.
    continue_on_error: keep going past rejected records (the default); when off,
        the run stops at the first failed record (``--fail-fast``).
    validate_first: run the pandera validation stage before loading; when off,
        the database is the only judge of a record.
    log_progress: send a progress event through loguru as each batch commits
        (``pipeline.run.progress``): quiet until the caller enables ``pipeline`` logging;
        the ``pipeline`` command draws them as a bar.
    mode: ``dedup`` rejects exact duplicates before loading; ``standard`` lets the
        database's unique constraint refuse them, as the original did.
    max_errors: stop (status ``aborted``) once more than this many records failed.
    similarity_threshold: near-duplicate score above which a memory is merged.
    dataset: which dataset plug-in reads the input (``memories``, ``messages``).
    self_name: the export owner's name, for chat messages they sent without one.
    replay_of: the run whose rejects this run replays (set by ``pipeline replay``).
    partitioning: how the inputs are cut into batches: ``records`` (``batch_size`` records
        at a time, read in order by the process that runs the migration) or ``ranges``
        (JSONL files in newline-aligned byte ranges, Parquet files in row ranges, of about
        ``batch_size`` records each, or the size ``auto`` starts from; each read by
        whichever worker prepares it). A run on a cluster cuts ``ranges``; a resumed run
        cuts its batches as it first did.
    max_connections: database connections the run may open. It opens two per shard (one
        loads, one looks up stored rows), whatever the number of workers of a cluster:
        workers never connect.
    shards: how many groups of records are decided and loaded side by side, each in input
        order through its own two connections (``pipeline.run.sharding``). Records that can
        affect each other (sharing a content hash, a key or a source) are always in one
        shard, so the results are those of one shard; more than one needs a fixed
        ``batch_size`` (the input is cut twice, alike: once for the groups, once to load).
    memory_limit_mb: with ``batch_size="auto"``, the resident memory the run should stay
        under (sizes stop growing at 70% of it and halve above 85%); unused otherwise.
    encoding: the Python codec text inputs (JSONL, JSON, CSV) are in; None: UTF-8, or UTF-16
        after its byte-order mark (``pipeline.extract.encoding``).
    delimiter: the one character separating a CSV's cells; None: told by its header (a tab
        for ``.tsv``).
    dry_run: every stage runs, against the stored rows read in read-only transactions, and
        nothing is written to the database; the rejects go to ``rejects_file`` (``.parquet``,
        ``.jsonl`` or ``.csv``; None: ``RUN_ID-rejects.parquet`` in the current directory).
    """

    batch_size: int | Literal["auto"] = 20_000
    continue_on_error: bool = True
    validate_first: bool = True
    log_progress: bool = True
    mode: Mode = "dedup"
    max_errors: int | None = None
    similarity_threshold: float = 0.7
    dataset: str = "memories"
    self_name: str = "Me"
    replay_of: str | None = None
    memory_limit_mb: int = 1024
    partitioning: Literal["records", "ranges"] = "records"
    max_connections: int = 2
    shards: int = 1
    encoding: str | None = None
    delimiter: str | None = None
    dry_run: bool = False
    rejects_file: str | None = None

    def __post_init__(self) -> None:
        TextOptions(self.encoding, self.delimiter)  # refuses an unknown codec or a bad delimiter
        if self.batch_size != AUTO and (
            not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1
        ):
            raise ConfigError(f"batch_size must be a positive integer or 'auto', got {self.batch_size!r}")
        if not isinstance(self.memory_limit_mb, int) or self.memory_limit_mb < 64:
            raise ConfigError(
                f"memory_limit_mb must be an integer of at least 64, got {self.memory_limit_mb!r}"
            )
        if self.mode not in ("dedup", "standard"):
            raise ConfigError(f"mode must be 'dedup' or 'standard', got {self.mode!r}")
        if not isinstance(self.shards, int) or isinstance(self.shards, bool) or self.shards < 1:
            raise ConfigError(f"shards must be a positive integer, got {self.shards!r}")
        if not isinstance(self.max_connections, int) or self.max_connections < CONNECTIONS * self.shards:
            raise ConfigError(
                f"max_connections must be at least {CONNECTIONS * self.shards}: each of the "
                f"{self.shards} shard(s) loads on one connection and looks up stored rows on "
                f"another, got {self.max_connections!r}"
            )
        if self.shards > 1 and self.batch_size == AUTO:
            raise ConfigError(
                "shards need a fixed batch_size: the input is cut twice (to group the records, "
                "then to load them) and both cuts must be alike"
            )
        if self.partitioning not in ("records", "ranges"):
            raise ConfigError(f"partitioning must be 'records' or 'ranges', got {self.partitioning!r}")
        if self.max_errors is not None and self.max_errors < 0:
            raise ConfigError(f"max_errors must be 0 or more, got {self.max_errors!r}")
        if not 0.0 <= self.similarity_threshold <= 1.0:
            raise ConfigError(
                f"similarity_threshold must be between 0 and 1, got {self.similarity_threshold!r}"
            )

    @property
    def text(self) -> TextOptions:
        """How text inputs are read."""
        return TextOptions(self.encoding, self.delimiter)

    @property
    def rules(self) -> DecisionRules:
        return self._part(DecisionRules)

    @property
    def stop_rules(self) -> StopRules:
        return self._part(StopRules)

    @property
    def execution(self) -> Execution:
        return self._part(Execution)

    def _part(self, part: type[Part]) -> Part:
        return part(**{f.name: getattr(self, f.name) for f in fields(part)})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, settings: dict) -> BatchConfig:
        """The config a run recorded (``to_dict``); settings this version does not know are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in settings.items() if name in known})
