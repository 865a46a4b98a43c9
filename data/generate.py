"""Generate deterministic legacy "memory" exports as JSONL for the migration pipeline.

Usage:
    python data/generate.py --records N [--seed S] --out FILE [--expected FILE.json] [--clean]
                            [--id-prefix P]

The same seed and record count always give byte-identical output (one
``random.Random(seed)``, no clock, no uuid). Lines are written as they are
generated; only the small bookkeeping needed for duplicates is kept in memory.

A record is one non-blank line. Kinds of records:

* current   -- ``{"id", "summary", "confidence", "participants", "sourceMessageIds",
  "extractedAt"?, "emotionalContext"?, "relationshipDynamics"?}``. Loaded. Relationship
  dynamics take the original's shapes: ``participantDynamics`` an array of
  ``{"participants": [a, b], "dynamicType", "observations": [...]}`` (empty with one
  participant), ``communicationPatterns`` an array of strings, ``overallDynamics`` and
  ``interactionQuality`` (``{"quality", "indicators": [...]}``) objects.
* legacy    -- about 12%: a subset of ``{"id", "content", "messages", "summary",
  "confidence"}`` without participants or sourceMessageIds. Loaded.

Unless ``--clean`` is given, the export also holds (rates are of N; from
100 records on, every kind appears at least once):

* exact duplicates (~3%) -- a later copy of a loaded original with a new id and the
  same content hash (summary case/padding, participant order/case/padding and
  sourceMessageIds order varied), plus a few verbatim repeats of a whole line.
  Rejected: deduplication / exact_duplicate.
* near duplicates (~2%) -- a new id, the original's participants and
  sourceMessageIds, one or two summary words changed. Loaded (counted apart).
* id conflicts (~0.5%) -- a different record reusing a loaded original's id.
  Rejected: database / unique_violation.
* invalid records (~5%) -- each breaks exactly one rule of INVALID_REASONS, spread
  evenly, plus one record breaking three rules (MULTI_RULE_REASONS).
  Rejected: validation / the rule(s).
* malformed lines (~0.5%) -- invalid_json, not_an_object or invalid_utf8 (raw
  bytes). The last line is a truncated record with no newline. Rejected: parse.
* a few blank lines between records: not records, but they count as lines.

``--id-prefix`` is put before every id the export makes up (memories, legacy records, the
ids of emotional contexts and relationship dynamics, source message ids), so that exports
with different prefixes never share one: a second export to load on top of a first. Without
it the output is unchanged.

``--expected`` writes the ground truth: counts per pipeline stage, rejections per
reason, and every rejected (1-based, physical) line with its category and reasons.
"""

import hashlib
import json
import math
import random

import generation
from generation import LOADED, Reservoir

LEGACY_RATE = 0.12
SPECIAL_RATES = {
    "exact": 0.025,
    "verbatim": 0.005,
    "near": 0.02,
    "conflict": 0.005,
    "invalid": 0.05,
    "malformed": 0.005,
}
BLANK_LINE_RATE = 0.003

MOODS = ("positive", "negative", "neutral", "mixed", "ambiguous")
ROLES = ("friend", "family", "coworker", "partner", "self")
INVALID_REASONS = (
    "id:not_empty",
    "summary:not_blank",
    "summary:required",
    "confidence:in_range(1,10)",
    "confidence:type(integer)",
    "confidence:required",
    "participants:type(list)",
    "participants.id:not_empty",
    "sourceMessageIds:type(list)",
    "extractedAt:iso8601",
    "emotionalContext.primaryMood:isin(positive,negative,neutral,mixed,ambiguous)",
    "emotionalContext.intensity:in_range(1,10)",
    "emotionalContext.intensity:type(integer)",
    "emotionalContext.themes:type(list)",
    "emotionalContext:type(object)",
    "relationshipDynamics.overallDynamics:type(object_or_list)",
)
MULTI_RULE_REASONS = (
    "confidence:in_range(1,10)",
    "summary:not_blank",
    "extractedAt:iso8601",
)
MALFORMED_REASONS = ("invalid_json", "not_an_object", "invalid_utf8")
NOT_AN_OBJECT = ("[1, 2]", '"just a string"', "42", "null", "true", '[{"id": "mem-1"}]')
BARE_WORDS = ("undefined", "memory", "EOF", "<html>")
TRAILING_GARBAGE = (" garbage", "}", ",", " ;;")

FIRST_NAMES = (
    "Sam",
    "Alex",
    "Jordan",
    "Maya",
    "Liam",
    "Priya",
    "Chen",
    "Noah",
    "Emma",
    "Olivia",
    "Mateo",
    "Aiko",
    "Kwame",
    "Ingrid",
    "Luca",
    "Nadia",
    "Omar",
    "Ravi",
    "Hannah",
    "Diego",
    "Yuki",
    "Grace",
    "Ben",
    "Lena",
    "Marcus",
    "Sofia",
    "Ethan",
    "Amara",
    "Jonas",
    "Leila",
    "Tariq",
    "Rosa",
    "Felix",
    "Mia",
    "Zoë",
    "José",
    "Jürgen",
)
LAST_NAMES = (
    "Carter",
    "Nguyen",
    "Patel",
    "Garcia",
    "Kim",
    "Okafor",
    "Rossi",
    "Silva",
    "Johansson",
    "Tanaka",
    "Dubois",
    "Cohen",
    "Murphy",
    "Novak",
    "Haddad",
    "Lopez",
    "Schmidt",
    "Brown",
    "Ivanova",
    "Müller",
)
ROSTER_SIZE = 300
PLACES = (
    "Lisbon",
    "the lake house",
    "Berlin",
    "Kyoto",
    "Porto",
    "Barcelona",
    "grandma's farm",
    "Chicago",
    "the mountains",
    "Montréal",
    "Dublin",
    "Seoul",
    "Vancouver",
    "Mexico City",
    "Copenhagen",
    "the old neighborhood",
)
VENUES = (
    "the Italian place downtown",
    "the rooftop bar",
    "their favorite diner",
    "the new ramen spot",
    "the park by the river",
    "the jazz club",
)
WHEN = (
    "next weekend",
    "on Friday",
    "tomorrow night",
    "after the holidays",
    "next month",
    "this Sunday",
    "before summer",
)
PROJECTS = ("quarterly report", "website launch", "budget review", "client pitch", "app release")
SUMMARY_TEMPLATES = (
    "{a} and {b} planned a weekend trip to {place} and argued about taking the train or driving.",
    "{a} told {b} about the surprise birthday party for {c} and asked everyone to keep it quiet.",
    "{a} vented about a stressful week at work after the {project} deadline moved up again.",
    "{a} and {b} had a long argument about chores and eventually agreed to split them evenly.",
    "{a} shared photos from the trip to {place} and said the food was the best part.",
    "{a} asked {b} for advice about a job offer from a startup in {place}.",
    "{a} apologized to {b} for missing dinner and promised to make it up {when}.",
    "{a} congratulated {b} on the new job and suggested celebrating at {venue} {when}.",
    "{a} and {b} talked about moving in together and worried about rent in {place}.",
    "{a} reminded {b} that {c}'s birthday is {when} and they still need a gift.",
    "{a} was nervous about presenting the {project} but {b} offered to rehearse with them.",
    "{a} and {b} caught up after months of silence and laughed about old school stories.",
    "{a} complained that the flight to {place} was delayed for six hours without any explanation.",
    "{a} asked {b} to feed the cat while they were away in {place} for a week.",
    "{a} and {b} disagreed about politics again and decided to drop the topic for now.",
    "{a} shared good news from the doctor and {b} was clearly relieved to hear it.",
    "{a} invited {b} to a concert at {venue} {when} and they bought tickets right away.",
    "{a} felt left out after {b} and {c} went hiking in {place} without them.",
    "{a} and {b} planned the menu for a family dinner {when} and argued about dessert.",
    "{a} told {b} that the team lost the {project} client and layoffs might follow soon.",
)
REWORDINGS = {
    "planned": "organized",
    "argued": "bickered",
    "trip": "getaway",
    "surprise": "secret",
    "party": "dinner",
    "stressful": "exhausting",
    "week": "month",
    "long": "heated",
    "chores": "money",
    "photos": "videos",
    "advice": "help",
    "missing": "skipping",
    "promised": "swore",
    "suggested": "proposed",
    "worried": "joked",
    "still": "really",
    "nervous": "anxious",
    "months": "years",
    "laughed": "talked",
    "flight": "train",
    "feed": "walk",
    "politics": "football",
    "good": "great",
    "concert": "show",
    "hiking": "camping",
    "menu": "music",
    "lost": "won",
}
SUMMARY_TAILS = (
    " They agreed to talk again {when}.",
    " {b} sent a long voice note later that evening.",
    " Nobody mentioned it again afterwards.",
    " It ended with a lot of laughing emojis.",
    " {a} said it meant a lot to them.",
)
SPECIAL_FRAGMENTS = (
    ' {b} replied "see you soon" twice.',
    " The photos were saved under C:\\Users\\{b}\\trip.",
    " PS:\tbring snacks and the speaker.",
    " Later:\ncall mom back about it.",
    " Party time 🎉🎂 for everyone.",
    " They tried the 日本語 menu at the ramen bar.",
    " Café crème for everyone, über lecker.",
    " Zoë joined the call at the end.",
)
LEGACY_OPENERS = (
    "Remember when",
    "I still think about how",
    "Never forget the day",
    "Note to self:",
)
LEGACY_ACTIVITIES = (
    "we got lost",
    "Sam burned the pancakes",
    "we missed the last bus",
    "it rained all week",
    "we adopted the dog",
    "the car broke down",
    "we sang karaoke",
    "Mom called at 3am",
    "we painted the kitchen",
    "the power went out",
    "we ran the half marathon",
    "we found that tiny bookshop",
    "Alex proposed",
    "we moved the piano",
    "the cake collapsed",
)
LEGACY_ERAS = (
    "last summer",
    "back in college",
    "on New Year's Eve",
    "during the move",
    "years ago",
    *(f"in {year}" for year in range(2005, 2024)),
)
THEMES = (
    "travel",
    "family",
    "work",
    "celebration",
    "conflict",
    "health",
    "friendship",
    "money",
    "food",
)
MARKERS = ("laughter", "exclamation marks", "short replies", "heart emoji", "apology", "sarcasm")
EVENTS = ("birthday", "job interview", "moving day", "vacation", "wedding", "exam", "breakup")
TIMES_OF_DAY = ("morning", "afternoon", "evening", "late night")
TONES = ("warm", "tense", "playful", "formal", "supportive")
DYNAMIC_TYPES = ("supportive", "playful", "tense", "protective", "competitive", "distant")
OBSERVATIONS = (
    "checks in after hard days",
    "teases about old habits",
    "avoids the topic of money",
    "makes the plans",
    "apologizes first",
    "replies within minutes",
    "shares photos without being asked",
)
COMMUNICATION_PATTERNS = (
    "quick back-and-forth texting",
    "long voice notes",
    "late-night messages",
    "emoji-heavy replies",
    "short replies",
    "plans made over video calls",
)
QUALITIES = ("warm", "strained", "neutral", "improving")
INDICATORS = (
    "mutual support",
    "active listening",
    "short replies",
    "unresolved tension",
    "shared humor",
    "apologies exchanged",
)
OFFSETS = ("+02:00", "-05:00", "+05:30", "+00:00", "+01:00")
DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _set(key, *values):
    def mutate(rec, rng):
        rec[key] = rng.choice(values)

    return mutate


def _set_nested(key, field, *values):
    def mutate(rec, rng):
        rec[key][field] = rng.choice(values)

    return mutate


def _drop_confidence(rec, rng):
    del rec["confidence"]


def _drop_summary(rec, rng):
    if rng.random() < 0.5:
        del rec["summary"]
    else:
        rec["summary"] = None


def _blank_participant_id(rec, rng):
    rng.choice(rec["participants"])["id"] = ""


MUTATIONS = dict(
    zip(
        INVALID_REASONS,
        (
            _set("id", ""),
            _set("summary", "   ", "  ", " "),
            _drop_summary,
            _set("confidence", 0, 11, -3, 42),
            _set("confidence", "high", 7.5, True),
            _drop_confidence,
            _set("participants", "Sam", "Sam, Alex"),
            _blank_participant_id,
            _set("sourceMessageIds", "msg-1", "msg-0001234"),
            _set("extractedAt", "yesterday", "31/12/2023", "last Tuesday"),
            _set_nested("emotionalContext", "primaryMood", "angry", "furious"),
            _set_nested("emotionalContext", "intensity", 0, 15),
            _set_nested("emotionalContext", "intensity", "very"),
            _set_nested("emotionalContext", "themes", "travel", "family, work"),
            _set("emotionalContext", "happy", "sad"),
            _set_nested("relationshipDynamics", "overallDynamics", 5),
        ),
        strict=True,
    )
)


def dumps(rec):
    return json.dumps(rec, ensure_ascii=False)


class RecordFactory:
    """Builds fresh records with unique ids, message ids and (legacy) texts."""

    def __init__(self, rng, id_prefix=""):
        self.rng = rng
        self.id_prefix = id_prefix
        self.next_memory = 0
        self.next_message = 0
        self.next_legacy = 0
        self.next_aux = 0
        self.legacy_texts = set()
        self.roster = [
            (f"p-{i}", f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}")
            for i in range(1, ROSTER_SIZE + 1)
        ]
        self.roster.append((f"p-{ROSTER_SIZE + 1}", "山田 太郎"))

    def memory_id(self):
        self.next_memory += 1
        return f"{self.id_prefix}mem-{self.next_memory:06d}"

    def aux_id(self, prefix):
        self.next_aux += 1
        return f"{self.id_prefix}{prefix}-{self.next_aux}"

    def message_ids(self, prefix="msg-", width=7):
        ids = []
        for _ in range(self.rng.randint(1, 6)):
            self.next_message += self.rng.randint(1, 3)
            ids.append(f"{self.id_prefix}{prefix}{self.next_message:0{width}d}")
        return ids

    def recase(self, text):
        """Change letter case without changing ``text.lower()``."""
        variant = self.rng.choice((str.upper, str.lower, str.title, str.swapcase))(text)
        return variant if variant.lower() == text.lower() else text

    def pad(self, text):
        return self.rng.choice(("", " ", "  ", "\t")) + text + self.rng.choice(("", " ", "   "))

    def participants(self):
        people = self.rng.sample(self.roster, self.rng.randint(1, 4))
        result = []
        for person_id, name in people:
            if self.rng.random() < 0.05:
                name = self.pad(self.recase(name))
            result.append({"id": person_id, "name": name, "role": self.rng.choice(ROLES)})
        return result

    def summary(self, participants):
        rng = self.rng
        firsts = [p["name"].split()[0].capitalize() for p in participants]
        names = list(dict.fromkeys(firsts + rng.sample(FIRST_NAMES, 5)))
        text = rng.choice(SUMMARY_TEMPLATES)
        if rng.random() < 0.35:
            text += rng.choice(SUMMARY_TAILS)
        if rng.random() < 0.05:
            text += rng.choice(SPECIAL_FRAGMENTS)
        return text.format(
            a=names[0],
            b=names[1],
            c=names[2],
            place=rng.choice(PLACES),
            venue=rng.choice(VENUES),
            when=rng.choice(WHEN),
            project=rng.choice(PROJECTS),
        )

    def timestamp(self):
        rng = self.rng
        month = rng.randint(1, 12)
        stamp = (
            f"{rng.randint(2021, 2024)}-{month:02d}-{rng.randint(1, DAYS_IN_MONTH[month - 1]):02d}"
            f"T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        )
        style = rng.random()
        if style < 0.75:
            return stamp + "Z"
        if style < 0.87:
            return stamp + rng.choice(OFFSETS)
        if style < 0.94:
            return f"{stamp}.{rng.randint(0, 999):03d}Z"
        return f"{stamp}.{rng.randint(0, 999_999):06d}{rng.choice(OFFSETS)}"

    def emotional_context(self):
        rng = self.rng
        context = {
            "primaryMood": rng.choice(MOODS),
            "intensity": rng.randint(1, 10),
            "themes": rng.sample(THEMES, rng.randint(1, 3)),
            "emotionalMarkers": rng.sample(MARKERS, rng.randint(0, 3)),
            "contextualEvents": rng.sample(EVENTS, rng.randint(0, 2)),
            "temporalPatterns": {
                "timeOfDay": rng.choice(TIMES_OF_DAY),
                "recurring": rng.random() < 0.3,
            },
        }
        if rng.random() < 0.3:
            context = {"id": self.aux_id("ec"), **context}
        return context

    def relationship_dynamics(self, participants):
        rng = self.rng
        ids = [p["id"] for p in participants]
        pairs = [[a, b] for i, a in enumerate(ids) for b in ids[i + 1 :]]
        # The original's shapes: participant dynamics and communication patterns are arrays.
        dynamics = {
            "overallDynamics": {"tone": rng.choice(TONES), "closeness": rng.randint(1, 10)},
            "participantDynamics": [
                {
                    "participants": pair,
                    "dynamicType": rng.choice(DYNAMIC_TYPES),
                    "observations": rng.sample(OBSERVATIONS, rng.randint(1, 2)),
                }
                for pair in rng.sample(pairs, min(len(pairs), 3))
            ],
            "communicationPatterns": rng.sample(COMMUNICATION_PATTERNS, rng.randint(1, 3)),
            "interactionQuality": {
                "quality": rng.choice(QUALITIES),
                "indicators": rng.sample(INDICATORS, rng.randint(1, 3)),
            },
        }
        if rng.random() < 0.3:
            dynamics = {"id": self.aux_id("rd"), **dynamics}
        return dynamics

    def current(self, complete=False):
        """A valid current record; ``complete`` forces every optional section."""
        rng = self.rng
        participants = self.participants()
        rec = {
            "id": self.memory_id(),
            "summary": self.summary(participants),
            "confidence": rng.randint(1, 10),
            "participants": participants,
            "sourceMessageIds": self.message_ids(),
        }
        if complete or rng.random() < 0.9:
            rec["extractedAt"] = self.timestamp()
        if complete or rng.random() < 0.6:
            rec["emotionalContext"] = self.emotional_context()
        if complete or rng.random() < 0.45:
            rec["relationshipDynamics"] = self.relationship_dynamics(participants)
        return rec

    def legacy_text(self):
        """A legacy sentence not used before (legacy records without messages
        would otherwise share a content hash)."""
        rng = self.rng
        while True:
            text = (
                f"{rng.choice(LEGACY_OPENERS)} {rng.choice(LEGACY_ACTIVITIES)} "
                f"{rng.choice(LEGACY_ERAS)} with {rng.choice(FIRST_NAMES)} "
                f"near {rng.choice(PLACES)}."
            )
            if text.lower() not in self.legacy_texts:
                self.legacy_texts.add(text.lower())
                return text

    def legacy(self):
        rng = self.rng
        shape = rng.randrange(6)
        if shape == 0:
            return {"content": self.legacy_text()}
        if shape == 1:
            confidence = rng.choice((0, rng.randint(1, 10)))
            return {"content": self.legacy_text(), "confidence": confidence}
        if shape == 2:
            return {"id": self.legacy_id(), "content": self.legacy_text()}
        if shape == 3:
            return {"summary": self.legacy_text(), "confidence": rng.randint(1, 10)}
        messages = self.message_ids(prefix="m", width=1)
        if shape == 4:
            participants = rng.sample(self.roster, 2)
            summary = self.summary([{"name": name} for _, name in participants])
            return {"id": self.legacy_id(), "messages": messages, "summary": summary}
        return {"id": self.legacy_id(), "content": self.legacy_text(), "messages": messages}

    def legacy_id(self):
        self.next_legacy += 1
        return f"{self.id_prefix}legacy-{self.next_legacy}"


class Export:
    """Turns a planned kind into the bytes of one line and its pipeline outcome.

    An outcome is ``(category, reasons, duplicate_of)``; LOADED for kept lines.
    """

    def __init__(self, rng, id_prefix=""):
        self.rng = rng
        self.factory = RecordFactory(rng, id_prefix)
        self.current_pool = Reservoir(rng)
        self.verbatim_pool = Reservoir(rng)
        self.invalid_count = 0
        self.malformed_count = 0
        self.builders = {
            "current": self.current,
            "legacy": self.legacy,
            "exact": self.exact_duplicate,
            "verbatim": self.verbatim_repeat,
            "near": self.near_duplicate,
            "conflict": self.id_conflict,
            "invalid": self.invalid,
            "multi": self.multi_invalid,
            "malformed": self.malformed,
            "truncated_end": self.truncated_end,
        }

    def can_build(self, kind):
        if kind == "verbatim":
            return len(self.verbatim_pool) > 0
        if kind in ("exact", "near", "conflict"):
            return len(self.current_pool) > 0
        return True

    def build(self, kind):
        line, outcome = self.builders[kind]()
        if isinstance(line, str):
            line = (line + "\n").encode("utf-8")
        return line, outcome

    def current(self):
        rec = self.factory.current()
        line = dumps(rec)
        self.current_pool.offer((rec, line))
        self.verbatim_pool.offer((rec, line))
        return line, LOADED

    def legacy(self):
        rec = self.factory.legacy()
        line = dumps(rec)
        if "id" in rec:
            self.verbatim_pool.offer((rec, line))
        return line, LOADED

    def exact_duplicate(self):
        original, _ = self.current_pool.pick()
        participants = [self.vary_participant(p) for p in original["participants"]]
        message_ids = list(original["sourceMessageIds"])
        self.rng.shuffle(participants)
        self.rng.shuffle(message_ids)
        summary = self.factory.pad(self.factory.recase(original["summary"]))
        rec = {
            **original,
            "id": self.factory.memory_id(),
            "summary": summary if summary != original["summary"] else f" {summary}",
            "participants": participants,
            "sourceMessageIds": message_ids,
        }
        return dumps(rec), ("deduplication", ("exact_duplicate",), original["id"])

    def vary_participant(self, person):
        factory = self.factory
        return {
            "id": person["id"],
            "name": factory.pad(factory.recase(person["name"])),
            "role": factory.pad(factory.recase(person["role"])),
        }

    def verbatim_repeat(self):
        original, line = self.verbatim_pool.pick()
        return line, ("deduplication", ("exact_duplicate",), original["id"])

    def near_duplicate(self):
        original, _ = self.current_pool.take()
        summary = self.reword(original["summary"])
        rec = {**original, "id": self.factory.memory_id(), "summary": summary}
        # A new memory gets new child rows: copied child ids would collide with the original's.
        for part in ("emotionalContext", "relationshipDynamics"):
            if part in rec:
                rec[part] = {k: v for k, v in rec[part].items() if k != "id"}
        return dumps(rec), LOADED

    def reword(self, summary):
        """Swap one or two words for others (every template has a word of REWORDINGS)."""
        words = summary.split(" ")
        candidates = [i for i, word in enumerate(words) if word in REWORDINGS]
        for index in self.rng.sample(candidates, min(len(candidates), self.rng.randint(1, 2))):
            words[index] = REWORDINGS[words[index]]
        return " ".join(words)

    def id_conflict(self):
        original, _ = self.current_pool.take()
        rec = self.factory.current()
        while rec["summary"].lower() == original["summary"].lower():
            rec["summary"] = self.factory.summary(rec["participants"])
        rec["id"] = original["id"]
        return dumps(rec), ("database", ("unique_violation",), None)

    def invalid(self):
        reason = INVALID_REASONS[self.invalid_count % len(INVALID_REASONS)]
        self.invalid_count += 1
        rec = self.factory.current(complete=True)
        MUTATIONS[reason](rec, self.rng)
        return dumps(rec), ("validation", (reason,), None)

    def multi_invalid(self):
        rec = self.factory.current(complete=True)
        rec.update(confidence=11, summary="  ", extractedAt="never")
        return dumps(rec), ("validation", MULTI_RULE_REASONS, None)

    def malformed(self):
        reason = MALFORMED_REASONS[self.malformed_count % len(MALFORMED_REASONS)]
        self.malformed_count += 1
        if reason == "invalid_json":
            builders = (self.truncated, self.trailing_garbage, self.single_quoted, self.bare_word)
            line = self.rng.choice(builders)()
        elif reason == "not_an_object":
            line = self.rng.choice(NOT_AN_OBJECT)
        else:
            line = self.invalid_utf8()
        return line, ("parse", (reason,), None)

    def truncated(self):
        line = dumps(self.factory.current())
        return line[: self.rng.randint(10, len(line) - 2)]

    def trailing_garbage(self):
        return dumps(self.factory.current()) + self.rng.choice(TRAILING_GARBAGE)

    def single_quoted(self):
        return f"{{'id': '{self.factory.memory_id()}', 'summary': 'Quick chat about lunch plans'}}"

    def bare_word(self):
        return self.rng.choice(BARE_WORDS)

    def invalid_utf8(self):
        rec = self.factory.current()
        rec["summary"] = "\x00"
        before, after = dumps(rec).encode("utf-8").split(b"\\u0000")
        return before + b"Caf\xff\xfe trip notes" + after + b"\n"

    def truncated_end(self):
        return self.truncated().encode("utf-8"), ("parse", ("invalid_json",), None)


def as_current(record):
    """A legacy record in the current shape, as the original's transform made it."""
    if "participants" in record or "sourceMessageIds" in record:
        return record
    messages = record.get("messages")
    sources = messages if isinstance(messages, list) else (["legacy-content"] if "content" in record else [])
    return {
        "id": record.get("id"),
        "summary": record.get("summary") or record.get("content") or "Legacy memory",
        "sourceMessageIds": sources,
        "participants": [{"id": "legacy-user", "name": "Legacy User", "role": "unknown"}],
    }


def original_score(a, b):
    """The original system's similarity of memory a to memory b, one pair at a time (NaN kept)."""
    summary_a, summary_b = a["summary"].strip().lower(), b["summary"].strip().lower()
    words_a, words_b = summary_a.split(" "), summary_b.split(" ")
    words = 1.0 if summary_a == summary_b else share(words_a, words_b)
    sources = share(a["sourceMessageIds"], b["sourceMessageIds"])
    people = share([p["id"] for p in a["participants"]], [p["id"] for p in b["participants"]])
    score = 0.5 * words + 0.3 * sources + 0.2 * people
    return 1.0 if score > 1.0 else score


def share(mine, theirs):
    longer = max(len(mine), len(theirs))
    return sum(1 for item in mine if item in theirs) / longer if longer else math.nan


class NearDuplicates:
    """The original's sequential rule: a memory whose best score against the memories kept
    so far exceeds the threshold is skipped; candidates share a source message id."""

    def __init__(self, threshold=0.7):
        self.threshold = threshold
        self.kept_by_source = {}

    def best_match(self, record):
        """(id, score) of the best kept memory above the threshold, or None; keeps the record if none."""
        memory = as_current(record)
        candidates = {id(c): c for s in memory["sourceMessageIds"] for c in self.kept_by_source.get(s, ())}
        scored = [(original_score(memory, c), c["id"]) for c in candidates.values()]
        above = [(score, kept_id) for score, kept_id in scored if score > self.threshold]
        if above:
            best = max(score for score, _ in above)
            return min(kept_id for score, kept_id in above if score == best), best
        # Only what a score reads: whole records held for millions of lines took 16 GB at 4M.
        kept = {
            "id": memory["id"],
            "summary": memory["summary"],
            "sourceMessageIds": memory["sourceMessageIds"],
            "participants": [{"id": p["id"]} for p in memory["participants"]],
        }
        for source in memory["sourceMessageIds"]:
            self.kept_by_source.setdefault(source, []).append(kept)
        return None


class Ledger(generation.Ledger):
    """Ground truth: counts per pipeline stage, near duplicates and every rejected line."""

    def __init__(self):
        super().__init__()
        self.near_duplicates = 0
        self.similar = NearDuplicates()

    def add(self, line_number, kind, line, outcome):
        if outcome == LOADED:
            record = json.loads(line)
            if "id" not in record:  # the pipeline derives it from the record's text
                record["id"] = "legacy-" + hashlib.sha256(line.rstrip(b"\n")).hexdigest()[:32]
            match = self.similar.best_match(record)
            if match is not None:
                outcome = ("deduplication", ("similar_duplicate",), match[0])
        if kind == "near":
            self.near_duplicates += 1
        self.count(line_number, outcome)

    def more_counts(self):
        return {"near_duplicates": self.near_duplicates}


def special_counts(n):
    """How many records of each non-plain kind an export of n records holds."""
    minimums = {"invalid": len(INVALID_REASONS) + 1, "malformed": len(MALFORMED_REASONS)}
    counts = generation.special_counts(n, SPECIAL_RATES, minimums)
    counts["multi"] = min(counts["invalid"], 1)
    counts["invalid"] -= counts["multi"]
    return counts


def plan_kinds(n, clean, rng):
    """The kind of every record, in file order (shuffled, truncated line last)."""
    if n == 0:
        return []
    tail = [] if clean else ["truncated_end"]
    counts = {"legacy": round(LEGACY_RATE * n)}
    if not clean:
        counts.update(special_counts(n))
    return generation.shuffled_plan(n - len(tail), counts, "current", rng) + tail


def blank_line_positions(n, clean, rng):
    """Indexes of the records that get a blank line written before them."""
    if clean or n < 2:
        return set()
    count = min(max(round(BLANK_LINE_RATE * n), 1), n - 1)
    return set(rng.sample(range(1, n), count))


class LineWriter:
    """Writes each line's bytes, a blank line first before the records of ``blanks``."""

    def __init__(self, out, blanks):
        self.out = out
        self.blanks = blanks
        self.line_number = 0

    def __call__(self, index, line):
        if index in self.blanks:
            self.out.write(b"\n")
            self.line_number += 1
        self.out.write(line)
        self.line_number += 1
        return self.line_number


def generate(n, seed, clean, out_path, id_prefix=""):
    rng = random.Random(seed)
    plan = plan_kinds(n, clean, rng)
    blanks = blank_line_positions(n, clean, rng)
    with out_path.open("wb") as out:
        export = Export(rng, id_prefix)
        return generation.write_all(plan, export, Ledger(), LineWriter(out, blanks), "current")


def id_prefix_option(parser):
    parser.add_argument(
        "--id-prefix",
        default="",
        help="put before every id the export makes up, so that exports with different "
        "prefixes share no memory or source message id (default: none)",
    )


def main():
    generation.main(
        __doc__,
        generate,
        unit="records",
        unit_help="number of records (non-blank lines)",
        file_kind="JSONL",
        clean_items="records",
        options=id_prefix_option,
    )


if __name__ == "__main__":
    main()
