"""What the synthetic-export generators share: the plan of kinds, the write loop, the ledger
of expected outcomes and the command line.

``data/generate.py`` (memory JSONL) and ``data/generate_messages.py`` (chat CSV) run as
scripts, so this module, beside them, is on ``sys.path``. Each brings its own record
factory, ``Export`` (``can_build(kind)``, ``build(kind)`` giving the record first and its
outcome next) and kinds; "plain" names the kind of an ordinary record.

An outcome is ``(category, reasons, duplicate_of)``; LOADED for kept records.
"""

import argparse
import json
from collections import Counter
from pathlib import Path

POOL_CAPACITY = 10_000
MIN_FOR_ALL_KINDS = 100
LOADED = ("loaded", (), None)


class Reservoir:
    """A bounded, uniformly sampled pool of earlier records (reservoir sampling)."""

    def __init__(self, rng, capacity=POOL_CAPACITY):
        self.rng = rng
        self.capacity = capacity
        self.items = []
        self.seen = 0

    def __len__(self):
        return len(self.items)

    def offer(self, item):
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
            return
        slot = self.rng.randrange(self.seen)
        if slot < self.capacity:
            self.items[slot] = item

    def pick(self):
        return self.rng.choice(self.items)

    def take(self):
        """Remove and return a random item, so it is never picked again."""
        index = self.rng.randrange(len(self.items))
        self.items[index], self.items[-1] = self.items[-1], self.items[index]
        return self.items.pop()


class Ledger:
    """Ground truth: counts per pipeline stage and reason, and every rejected line.

    A generator's ledger adds its own ``add`` (which calls ``count``) and may add figures
    to the JSON: ``more_counts`` after the stage counts, ``loaded_totals`` after the reasons.
    """

    CATEGORIES = ("loaded", "parse", "validation", "deduplication", "database")

    def __init__(self):
        self.counts = dict.fromkeys(self.CATEGORIES, 0)
        self.by_reason = Counter()
        self.lines = {}

    def count(self, line_number, outcome):
        """Count an outcome, keeping a rejected one under its line; whether it loaded."""
        category, reasons, duplicate_of = outcome
        self.counts[category] += 1
        if category == "loaded":
            return True
        self.by_reason.update(reasons)
        entry = {"category": category, "reasons": list(reasons)}
        if duplicate_of is not None:
            entry["duplicate_of"] = duplicate_of
        self.lines[str(line_number)] = entry
        return False

    def more_counts(self):
        return {}

    def loaded_totals(self):
        return {}

    def to_json(self):
        return {
            "records": sum(self.counts.values()),
            **self.counts,
            **self.more_counts(),
            "by_reason": dict(sorted(self.by_reason.items())),
            **self.loaded_totals(),
            "lines": self.lines,
        }


def special_counts(n, rates, minimums):
    """How many records of each special kind an export of n records holds: its rate of n,
    and from MIN_FOR_ALL_KINDS records on at least its minimum (1 unless given)."""
    counts = {kind: round(rate * n) for kind, rate in rates.items()}
    if n >= MIN_FOR_ALL_KINDS:
        counts = {kind: max(count, minimums.get(kind, 1)) for kind, count in counts.items()}
    return counts


def shuffled_plan(n, counts, plain, rng):
    """The kinds of n records in file order: ``counts`` of each kind, plain ones for the rest."""
    counts = {**counts, plain: max(n - sum(counts.values()), 0)}
    plan = [kind for kind, count in counts.items() for _ in range(count)]
    rng.shuffle(plan)
    return plan[:n]


def buildable_kind(plan, index, export, plain):
    """Swap a kind that needs an earlier original (a duplicate, a conflict) with a later
    plain record while no original exists yet."""
    kind = plan[index]
    if export.can_build(kind):
        return kind
    for later in range(index + 1, len(plan)):
        if plan[later] == plain:
            plan[index], plan[later] = plan[later], kind
            return plain
    return plain


def write_all(plan, export, ledger, write, plain):
    """Build and write every planned record in turn, entering its outcome in the ledger.

    ``write(index, record)`` writes a record and gives the (1-based) line it starts on;
    the ledger's ``add`` takes that line, the kind, then all ``export.build`` gave.
    """
    for index in range(len(plan)):
        kind = buildable_kind(plan, index, export, plain)
        record, *outcome = export.build(kind)
        ledger.add(write(index, record), kind, record, *outcome)
    return ledger


def parse_args(doc, unit, unit_help, file_kind, clean_items, options=None):
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(f"--{unit}", type=int, required=True, help=unit_help)
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--out", type=Path, required=True, help=f"{file_kind} file to write")
    parser.add_argument("--expected", type=Path, help="also write the ground truth JSON here")
    parser.add_argument("--clean", action="store_true", help=f"only valid, unique {clean_items}")
    if options:
        options(parser)
    return parser.parse_args()


def main(doc, generate, *, unit, unit_help, file_kind, clean_items, options=None):
    """Write ``generate(n, seed, clean, out)``'s export and, with --expected, its ledger's JSON.

    ``doc``'s first paragraph is the --help description; ``unit`` names the count option
    (--records, --rows), ``file_kind`` the --out file and ``clean_items`` what --clean keeps.
    ``options(parser)``, when given, adds a generator's own options: their values reach
    ``generate`` as keywords.
    """
    args = parse_args(doc, unit, unit_help, file_kind, clean_items, options)
    shared = {unit, "seed", "out", "expected", "clean"}
    own = {name: value for name, value in vars(args).items() if name not in shared}
    ledger = generate(getattr(args, unit), args.seed, args.clean, args.out, **own)
    if args.expected:
        text = json.dumps(ledger.to_json(), ensure_ascii=False, indent=2) + "\n"
        args.expected.write_text(text, encoding="utf-8")
