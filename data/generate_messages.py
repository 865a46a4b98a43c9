"""Generate deterministic chat-message CSV exports for the ``messages`` dataset.

Usage:
    python data/generate_messages.py --rows N [--seed S] --out FILE.csv [--expected FILE.json] [--clean]

The same seed and row count always give byte-identical output (one
``random.Random(seed)``, no clock, no uuid). Rows are written as they are
generated; only a bounded pool of earlier rows is kept, for duplicates.

The columns are those of the original system's exports: Chat Session, Message Date,
Delivered Date, Read Date, Edited Date, Service, Type, Sender ID, Sender Name, Status,
Replying to, Subject, Text, Attachment, Attachment type. Loaded rows include quoted
multi-line text, emoji, commas and quotes, links (``http://``, ``https://``, ``www.``,
the same link repeated in another case or form), attachments with and without text,
and outgoing messages without a sender name (stored under the owner name, "Me").
The content hash covers the Message Date, sender, Sender ID, Text and Attachment cells
exactly as written, so padding one of them makes another message.

Unless ``--clean`` is given, the export also holds (rates are of N; from 100 rows
on, every kind appears at least once):

* missing date (~1.5%)   -- Message Date empty or blank. validation / ``Message Date:required``.
* missing sender (~1.5%) -- an incoming row whose Sender Name is empty or blank.
  validation / ``Sender Name:required``.
* empty message (~1.5%)  -- no text (or blank text) and no attachment.
  validation / ``Text:empty_message``.
* invalid date (~2%)     -- an unparsable Message, Delivered, Read or Edited Date, in turn.
  validation / ``<column>:datetime``.
* one row with no date, no sender and no text: the three reasons above.
* padded cells (~1%)     -- a message with spaces around some of the cells the hash
  covers (Message Date, Sender Name, Sender ID, Text, Attachment). Loaded; its id comes
  from the cells as written.
* exact duplicates (~3.5%) -- a later copy of a loaded row: verbatim, or re-exported
  (another status, a padded read date: fields the content hash leaves out).
  deduplication / ``exact_duplicate`` with ``duplicate_of`` the original's id.

``--expected`` writes the ground truth: counts per category and reason, the links,
assets and owner-named messages that load, and every rejected row's (1-based,
physical) first line with its category and reasons.
"""

import csv
import hashlib
import random
from datetime import datetime, timedelta

import generation
from generation import LOADED, Reservoir

from pipeline.datasets.messages import HEADERS

OWNER = "Me"
OWNER_FULL_NAME = "Alex Rivera"
SPECIAL_RATES = {
    "missing_date": 0.015,
    "missing_sender": 0.015,
    "empty": 0.015,
    "invalid_date": 0.02,
    "padded": 0.01,
    "verbatim": 0.025,
    "reexport": 0.01,
}
START = datetime(2023, 1, 1, 8, 0, 0)

DATE_FIELDS = ("Message Date", "Delivered Date", "Read Date", "Edited Date")
HASHED = ("Message Date", "Sender Name", "Sender ID", "Text", "Attachment")
PADDINGS = (" {}", "{} ", "  {}  ", "\t{} ")
INVALID_DATES = (
    "yesterday",
    "05/03/2024 18:22",
    "2024-02-30 08:15:00",
    "2024-13-01 10:00:00",
    "Tue Mar 5 2024",
    "18:22:10",
)
MULTI_REASONS = ("Message Date:required", "Sender Name:required", "Text:empty_message")
OFFSETS = ("+02:00", "-05:00", "+05:30", "+01:00")

CONTACTS = (
    ("Sam Carter", "+15550100231"),
    ("Maya Patel", "maya.patel@icloud.com"),
    ("Jordan Kim", "+15550100877"),
    ("Zoë Müller", "+491701234567"),
    ("José García", "+34600111222"),
    ("山田 太郎", "+819012345678"),
    ("Priya Nguyen", "priya.n@me.com"),
    ("Liam O'Brien", "+353871234567"),
)
GROUPS = (
    ("Family 👨‍👩‍👧", (0, 3, 6)),
    ("Trip to Lisbon, 2024", (1, 2, 4)),
    ('Book club "Tuesdays"', (5, 7, 1)),
)
SENTENCES = (
    "Are we still on for dinner tonight?",
    "Running ten minutes late, sorry!",
    "Can you pick up milk on the way home",
    "That was the best concert ever",
    "Did you see the game last night?",
    "I'll call you after the meeting",
    "Happy birthday!! Hope it's a great one",
    "Landed safely, taxi now",
    "Thanks again for the help with the move",
    "Who's bringing the speaker?",
    "Let me check and get back to you",
    "ok",
    "Sounds good",
    "Miss you already",
    "The train is delayed again",
)
AWKWARD = (
    'She said "no way", then left, lol',
    "Price was $1,299.99, can you believe it?",
    'He texted "see you soon" twice, "just in case"',
    "Meet at 7, not 8, okay?",
    "Café crème, über lecker, très bien",
    "The 日本語 menu was, honestly, confusing",
    'Quote of the day: "done is better than perfect"',
    "Tabs\tand  double  spaces stay as written",
)
EMOJI = ("🎉", "😂", "❤️", "👍🏽", "👨‍👩‍👧", "🙈", "🍕", "✈️", "🎂🎈")
LINK_HOSTS = (
    ("https", "www.nytimes.com", "2024/03/05/travel/lisbon-guide.html"),
    ("https", "youtu.be", "dQw4w9WgXcQ"),
    ("https", "maps.google.com", "?q=Rua+Augusta+Lisboa"),
    ("http", "www.example.org", "menu/today"),
    ("https", "github.com", "octo/Spoon-Knife/issues/42"),
    ("https", "www.airbnb.com", "rooms/48213577?guests=4&adults=4"),
    ("http", "blog.example.net", "posts/first-light"),
    ("https", "open.spotify.com", "track/4uLU6hMCjMI75M1A2tKUQC"),
    ("https", "docs.google.com", "document/d/1aBcD_eFgH/edit"),
    ("https", "www.bbc.co.uk", "news/articles/c4ngk"),
)
LINK_LEADS = ("Look at this", "Here you go:", "Found it", "This one?", "Saved for later")
ATTACHMENTS = (
    ("IMG_{n:04d}.HEIC", "image/heic"),
    ("IMG_{n:04d}.jpeg", "image/jpeg"),
    ("VID_{n:04d}.MOV", "video/quicktime"),
    ("Audio Message {n}.m4a", "audio/x-m4a"),
    ("Invoice, March {n}.pdf", "application/pdf"),
    ("scan {n} (2).png", "image/png"),
)
REPLIES = ('Sam: "see you soon"', "Maya: Are we still on for dinner tonight?", "Jordan: 👍🏽")


def timestamp_text(moment, rng):
    """The export's usual format, sometimes ISO-8601 (UTC, an offset or fractions)."""
    style = rng.random()
    if style < 0.85:
        return f"{moment:%Y-%m-%d %H:%M:%S}"
    if style < 0.93:
        return f"{moment:%Y-%m-%dT%H:%M:%S}Z"
    if style < 0.98:
        return f"{moment:%Y-%m-%dT%H:%M:%S}{rng.choice(OFFSETS)}"
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{rng.randint(0, 999):03d}Z"


def content_hash(row, self_name=OWNER):
    """The original system's hash of a row: its cells as written (see pipeline/datasets/messages.py)."""
    sender = row["Sender Name"]
    if not sender.strip():
        sender = self_name if row["Type"].lower() == "outgoing" else ""
    parts = (row["Message Date"], sender, row["Sender ID"], row["Text"], row["Attachment"])
    return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()


def message_id(row):
    return "msg-" + content_hash(row)[:24]


class MessageFactory:
    """Builds fresh rows; message times only move forward, so no two rows share a hash."""

    def __init__(self, rng):
        self.rng = rng
        self.clock = START
        self.next_attachment = 0

    def tick(self):
        self.clock += timedelta(seconds=self.rng.randint(5, 4 * 3600))
        return self.clock

    def row(self):
        """A valid message, with its links (normalized, lowercased) and attachment flag."""
        rng = self.rng
        moment = self.tick()
        session, members = self.session()
        outgoing = rng.random() < 0.45
        row = dict.fromkeys(HEADERS, "")
        row.update(
            {
                "Chat Session": session,
                "Message Date": timestamp_text(moment, rng),
                "Service": "iMessage" if rng.random() < 0.8 else "SMS",
                "Type": "Outgoing" if outgoing else "Incoming",
            }
        )
        if outgoing:
            row["Delivered Date"] = f"{moment + timedelta(seconds=rng.randint(1, 30)):%Y-%m-%d %H:%M:%S}"
            row["Status"] = rng.choice(("Read", "Delivered", "Sent"))
            if rng.random() < 0.15:
                row["Sender Name"] = OWNER_FULL_NAME
        else:
            name, sender_id = CONTACTS[rng.choice(members)]
            row.update({"Sender Name": name, "Sender ID": sender_id, "Status": "Read"})
            if rng.random() < 0.6:
                row["Read Date"] = f"{moment + timedelta(minutes=rng.randint(0, 90)):%Y-%m-%d %H:%M:%S}"
        if rng.random() < 0.02:
            row["Edited Date"] = f"{moment + timedelta(seconds=rng.randint(10, 600)):%Y-%m-%d %H:%M:%S}"
        if rng.random() < 0.05:
            row["Replying to"] = rng.choice(REPLIES)
        if rng.random() < 0.02:
            row["Subject"] = rng.choice(("Re: dinner", "Photos 📷", "Plans, again"))
        links = set()
        shape = rng.random()
        if shape < 0.08:
            self.attach(row)
        else:
            if shape < 0.18:
                self.attach(row)
            row["Text"], links = self.text()
        return row, links

    def session(self):
        if self.rng.random() < 0.3:
            return self.rng.choice(GROUPS)
        index = self.rng.randrange(len(CONTACTS))
        return CONTACTS[index][0], (index,)

    def attach(self, row):
        self.next_attachment += 1
        pattern, kind = self.rng.choice(ATTACHMENTS)
        row["Attachment"] = pattern.format(n=self.next_attachment)
        row["Attachment type"] = kind

    def text(self):
        """Message text and the set of its links as the pipeline should store them (lowercased)."""
        rng = self.rng
        shape = rng.random()
        if shape < 0.15:
            return self.link_text()
        if shape < 0.27:
            lines = rng.sample(SENTENCES, rng.randint(2, 3))
            return "\n".join(lines) + rng.choice(("", "\n", f"\n{rng.choice(EMOJI)}")), set()
        if shape < 0.37:
            return rng.choice(AWKWARD), set()
        text = rng.choice(SENTENCES)
        if rng.random() < 0.2:
            text += " " + rng.choice(EMOJI)
        return text, set()

    def link_text(self):
        rng = self.rng
        chosen = rng.sample(LINK_HOSTS, rng.randint(1, 2))
        parts, links = [rng.choice(LINK_LEADS)], set()
        for scheme, host, path in chosen:
            canonical = f"{scheme}://{host}/{path}"
            links.add(canonical.lower())
            forms = [self.written_link(scheme, host, path)]
            if rng.random() < 0.4:  # the same link again, in another case or form
                forms.append(self.written_link(scheme, host, path, variant=True))
            for form in forms:
                parts.append(rng.choice(("{}", "{}.", "({})", "{},", "{}!", "{}\n")).format(form))
        if rng.random() < 0.3:
            parts.append(rng.choice(EMOJI))
        return " ".join(parts), links

    def written_link(self, scheme, host, path, variant=False):
        rng = self.rng
        text = f"{scheme}://{host}/{path}"
        if scheme == "https" and host.startswith("www.") and rng.random() < 0.5:
            text = f"{host}/{path}"
        if variant:
            shout = lambda t: t.replace("www.", "WWW.").replace("https", "HTTPS")  # noqa: E731
            text = rng.choice((str.upper, shout))(text)
        return text


class Export:
    """Turns a planned kind into one CSV row and its pipeline outcome.

    An outcome is ``(category, reasons, duplicate_of)``; category ``loaded`` for kept rows.
    """

    def __init__(self, rng):
        self.rng = rng
        self.factory = MessageFactory(rng)
        self.pool = Reservoir(rng)
        self.invalid_dates = 0
        self.builders = {
            "message": self.message,
            "missing_date": self.missing_date,
            "missing_sender": self.missing_sender,
            "empty": self.empty,
            "invalid_date": self.invalid_date,
            "padded": self.padded,
            "multi": self.multi,
            "verbatim": self.verbatim,
            "reexport": self.reexport,
        }

    def can_build(self, kind):
        return kind not in ("verbatim", "reexport") or len(self.pool) > 0

    def build(self, kind):
        """(row, outcome, links, attachment, owner_named)."""
        return self.builders[kind]()

    def message(self):
        row, links = self.factory.row()
        return self.loaded(row, links)

    def loaded(self, row, links):
        self.pool.offer(row)
        owner_named = row["Type"] == "Outgoing" and not row["Sender Name"]
        return row, LOADED, links, bool(row["Attachment"]), owner_named

    def padded(self):
        """A message with spaces around some of its hashed cells; stored values are trimmed."""
        row, links = self.factory.row()
        filled = [name for name in HASHED if row[name]]
        for name in self.rng.sample(filled, self.rng.randint(1, len(filled))):
            row[name] = self.rng.choice(PADDINGS).format(row[name])
        return self.loaded(row, links)

    def rejected(self, row, category, reasons, duplicate_of=None):
        return row, (category, reasons, duplicate_of), set(), False, False

    def missing_date(self):
        row, _ = self.factory.row()
        row["Message Date"] = self.rng.choice(("", "   "))
        return self.rejected(row, "validation", ("Message Date:required",))

    def missing_sender(self):
        row = self.incoming()
        row["Sender Name"] = self.rng.choice(("", " "))
        return self.rejected(row, "validation", ("Sender Name:required",))

    def incoming(self):
        while True:
            row, _ = self.factory.row()
            if row["Type"] == "Incoming":
                return row

    def empty(self):
        row, _ = self.factory.row()
        row.update({"Text": self.rng.choice(("", " ", "  \n ")), "Attachment": "", "Attachment type": ""})
        return self.rejected(row, "validation", ("Text:empty_message",))

    def invalid_date(self):
        field = DATE_FIELDS[self.invalid_dates % len(DATE_FIELDS)]
        self.invalid_dates += 1
        row, _ = self.factory.row()
        row[field] = self.rng.choice(INVALID_DATES)
        return self.rejected(row, "validation", (f"{field}:datetime",))

    def multi(self):
        row = self.incoming()
        row.update(
            dict.fromkeys(("Message Date", "Sender Name", "Text", "Attachment", "Attachment type"), "")
        )
        return self.rejected(row, "validation", MULTI_REASONS)

    def verbatim(self):
        original = self.pool.pick()
        return self.rejected(dict(original), "deduplication", ("exact_duplicate",), message_id(original))

    def reexport(self):
        """The same message exported again: only fields outside the hash differ (a padded read date)."""
        original = self.pool.pick()
        row = dict(original)
        row["Status"] = "Read" if original["Status"] != "Read" else "Delivered"
        read = original["Read Date"] or original["Delivered Date"] or original["Message Date"].strip()
        row["Read Date"] = f" {read.strip()}  "
        return self.rejected(row, "deduplication", ("exact_duplicate",), message_id(original))


class Ledger(generation.Ledger):
    """Ground truth: counts per category and reason, stored links and assets, rejected lines."""

    def __init__(self):
        super().__init__()
        self.links = 0
        self.assets = 0
        self.owner_named = 0
        self.multi_line = 0

    def add(self, line_number, kind, row, outcome, links, attachment, owner_named):
        if self.count(line_number, outcome):
            self.links += len(links)
            self.assets += attachment
            self.owner_named += owner_named
            self.multi_line += "\n" in row["Text"]

    def loaded_totals(self):
        return {
            "links": self.links,
            "assets": self.assets,
            "owner_named": self.owner_named,
            "multi_line": self.multi_line,
        }


def special_counts(n):
    counts = generation.special_counts(n, SPECIAL_RATES, {"invalid_date": len(DATE_FIELDS)})
    if n >= generation.MIN_FOR_ALL_KINDS:
        counts["multi"] = 1
    return counts


def plan_kinds(n, clean, rng):
    return generation.shuffled_plan(n, {} if clean else special_counts(n), "message", rng)


class RowWriter:
    """Writes the header, then each row; a row's cells may hold line breaks."""

    def __init__(self, out):
        self.writer = csv.DictWriter(out, HEADERS, lineterminator="\n")
        self.writer.writeheader()
        self.line_number = 2  # line 1 is the header

    def __call__(self, index, row):
        self.writer.writerow(row)
        line_number = self.line_number
        self.line_number += 1 + sum(value.count("\n") for value in row.values())
        return line_number


def generate(n, seed, clean, out_path):
    rng = random.Random(seed)
    plan = plan_kinds(n, clean, rng)
    with out_path.open("w", encoding="utf-8", newline="") as out:
        return generation.write_all(plan, Export(rng), Ledger(), RowWriter(out), "message")


def main():
    generation.main(
        __doc__,
        generate,
        unit="rows",
        unit_help="number of messages (CSV rows)",
        file_kind="CSV",
        clean_items="messages",
    )


if __name__ == "__main__":
    main()
