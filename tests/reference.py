"""The original processor in plain Python, one record at a time: an oracle for the pipeline.

It knows nothing of the pipeline (no import from it): each record of a JSONL file is, in
input order, parsed (numbers as JavaScript reads them: ``7.0`` is the integer 7), brought
from the legacy shape to the current one, validated, hashed and then decided against the
memories kept so far, as the original decided it (README, "Duplicates, as the original
decided them"):

1. the same content hash as a kept memory: an exact duplicate, skipped;
2. else an id a kept memory has: refused by the database (the primary key);
3. else a score above the threshold against a kept memory sharing a source message id:
   a near duplicate, merged;
4. else inserted: refused by the database if its emotional context's or relationship
   dynamics' id is taken, or a text holds a NUL character; kept otherwise.

Usage: ``python tests/reference.py FILE.jsonl`` prints the counts as JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

THRESHOLD = 0.7
MOODS = ("positive", "negative", "neutral", "mixed", "ambiguous")
LEGACY_PARTICIPANT = {"id": "legacy-user", "name": "Legacy User", "role": "unknown"}
STRING_LISTS = ("themes", "emotionalMarkers", "contextualEvents")
DYNAMICS_PARTS = ("overallDynamics", "participantDynamics", "communicationPatterns", "interactionQuality")
# The fields a memory's rows store.
STORED = ("id", "summary", "participants", "sourceMessageIds", "emotionalContext", "relationshipDynamics")
ISO8601 = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?)?")


@dataclass
class Counts:
    processed: int = 0
    successful: int = 0
    parse_errors: int = 0
    validation_errors: int = 0
    database_errors: int = 0
    duplicates_skipped: int = 0
    similar_merged: int = 0

    @property
    def failed(self) -> int:
        return self.parse_errors + self.validation_errors + self.database_errors


@dataclass
class Kept:
    """What the decisions read of the memories kept so far."""

    hashes: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)
    child_ids: dict[str, set[str]] = field(default_factory=lambda: {"ec": set(), "rd": set()})
    by_source: dict[str, list[dict]] = field(default_factory=dict)


def run(path: Path, threshold: float = THRESHOLD) -> Counts:
    counts, kept = Counts(), Kept()
    for raw in records(path):
        counts.processed += 1
        outcome = process(raw, kept, threshold)
        setattr(counts, outcome, getattr(counts, outcome) + 1)
    return counts


def records(path: Path) -> Iterator[bytes]:
    """The records of a JSONL file: its lines, blank ones left out (a leading BOM dropped)."""
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    for line in data.split(b"\n"):
        if line.strip():
            yield line


def process(line: bytes, kept: Kept, threshold: float) -> str:
    """The counter one record adds to."""
    try:
        raw = line.decode("utf-8")
        record = json.loads(raw, parse_constant=_not_json, parse_float=_js_number)
    except ValueError:  # invalid UTF-8, invalid JSON (UnicodeDecodeError and JSONDecodeError)
        return "parse_errors"
    if not isinstance(record, dict):
        return "parse_errors"
    memory = as_current(record, raw)
    if not valid(memory):
        return "validation_errors"
    digest = content_hash(memory)
    if digest in kept.hashes:
        return "duplicates_skipped"
    if memory["id"] in kept.ids:
        return "database_errors"
    candidates = {id(c): c for s in memory["sourceMessageIds"] for c in kept.by_source.get(s, ())}
    if any(score(memory, candidate) > threshold for candidate in candidates.values()):
        return "similar_merged"
    children = child_ids(memory)
    stored = [memory[name] for name in STORED if memory.get(name) is not None]
    if any(child in kept.child_ids[kind] for kind, child in children.items()) or _has_nul(stored):
        return "database_errors"
    kept.hashes.add(digest)
    kept.ids.add(memory["id"])
    for kind, child in children.items():
        kept.child_ids[kind].add(child)
    for source in set(memory["sourceMessageIds"]):
        kept.by_source.setdefault(source, []).append(memory)
    return "successful"


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _js_number(text: str) -> float | int:
    """A number written with a fraction or an exponent, as a JavaScript number: an integral
    one is an integer (``7.0`` is 7)."""
    number = float(text)
    return int(number) if number.is_integer() else number


def as_current(record: dict, raw: str) -> dict:
    """A legacy ``{id?, content?, messages?, summary?, confidence?}`` record (one with neither
    participants nor source message ids) in the current shape; others as they are."""
    if record.get("participants") is not None or record.get("sourceMessageIds") is not None:
        return record
    messages, content = record.get("messages"), record.get("content")
    return {
        **record,
        "id": record["id"] if record.get("id") is not None else derived_id(raw),
        "sourceMessageIds": messages
        if isinstance(messages, list)
        else (["legacy-content"] if content is not None else []),
        "participants": [LEGACY_PARTICIPANT],
        "summary": record.get("summary") or content or "Legacy memory",
        "confidence": record.get("confidence") or 5,
    }


def derived_id(raw: str) -> str:
    """A legacy record's id, from its text: the same on every run."""
    return "legacy-" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


# --- validation ---------------------------------------------------------------------------


def valid(m: dict) -> bool:
    return (
        _text(m.get("id"))
        and isinstance(m.get("summary"), str)
        and bool(m["summary"].strip())
        and _integer(m.get("confidence"), 1, 10)
        and isinstance(m.get("participants"), list)
        and all(_participant(p) for p in m["participants"])
        and _strings(m.get("sourceMessageIds"))
        and (m.get("extractedAt") is None or _timestamp(m["extractedAt"]))
        and (m.get("emotionalContext") is None or _emotional_context(m["emotionalContext"]))
        and (m.get("relationshipDynamics") is None or _relationship_dynamics(m["relationshipDynamics"]))
    )


def _text(value) -> bool:
    return isinstance(value, str) and value != ""


def _integer(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _participant(p) -> bool:
    return (
        isinstance(p, dict)
        and _text(p.get("id"))
        and isinstance(p.get("name"), str)
        and isinstance(p.get("role"), str)
    )


def _timestamp(value) -> bool:
    if not isinstance(value, str) or not ISO8601.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _structure(part: dict, key: str) -> bool:
    """A JSON part: left out (it defaults), or an object or a list; a scalar or null is not."""
    return key not in part or isinstance(part[key], dict | list)


def _emotional_context(ec) -> bool:
    return (
        isinstance(ec, dict)
        and ec.get("primaryMood") in MOODS
        and _integer(ec.get("intensity"), 1, 10)
        and all(ec.get(name) is None or _strings(ec[name]) for name in STRING_LISTS)
        and _structure(ec, "temporalPatterns")
    )


def _relationship_dynamics(rd) -> bool:
    return isinstance(rd, dict) and all(_structure(rd, part) for part in DYNAMICS_PARTS)


# --- content hash, similarity, stored rows ------------------------------------------------


def content_hash(m: dict) -> str:
    people = sorted(
        (
            {"id": p["id"], "name": p["name"].lower().strip(), "role": p["role"].lower().strip()}
            for p in m["participants"]
        ),
        key=lambda p: p["id"],
    )
    text = "|".join(
        (
            m["summary"].strip().lower(),
            _compact(people),
            _compact(sorted(m["sourceMessageIds"])),
            str(m["confidence"]),
        )
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _compact(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def score(a: dict, b: dict) -> float:
    """The original's similarity of memory a to memory b: ``0.5 * words + 0.3 * sources +
    0.2 * participants``, added in that order, capped at 1.0; NaN (a term of two empty lists)
    stays NaN, which exceeds no threshold."""
    text_a, text_b = a["summary"].strip().lower(), b["summary"].strip().lower()
    words = 1.0 if text_a == text_b else _share(text_a.split(" "), text_b.split(" "))
    sources = _share(a["sourceMessageIds"], b["sourceMessageIds"])
    people = _share([p["id"] for p in a["participants"]], [p["id"] for p in b["participants"]])
    total = 0.5 * words + 0.3 * sources + 0.2 * people
    return 1.0 if total > 1.0 else total


def _share(mine: list, theirs: list) -> float:
    """How many of my items (repeats counted) the other list holds, over the longer length."""
    longer = max(len(mine), len(theirs))
    if not longer:
        return math.nan
    present = set(theirs)
    return sum(1 for item in mine if item in present) / longer


def child_ids(m: dict) -> dict[str, str]:
    """The ids of the record's child rows: given, or derived from the memory's id."""
    ids = {}
    for kind, name in (("ec", "emotionalContext"), ("rd", "relationshipDynamics")):
        part = m.get(name)
        if part is not None:
            ids[kind] = part["id"] if part.get("id") is not None else f"{kind}-{m['id']}"
    return ids


def _has_nul(value) -> bool:
    """PostgreSQL stores no NUL character, in text or in jsonb."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


if __name__ == "__main__":
    counts = run(Path(sys.argv[1]))
    print(json.dumps({**asdict(counts), "failed": counts.failed}, indent=2))
