"""Near duplicates, decided exactly as the original did, without comparing every pair.

The original scored a new memory A against each stored memory B:
``0.5 * words + 0.3 * sources + 0.2 * participants`` (in that order, capped at 1.0) and
skipped A when the best score exceeded the threshold (0.7). Without a shared source
message id the score is at most 0.5 + 0.2 = 0.7, which never exceeds 0.7, so only
records sharing a source id are candidates: found by a join on exploded source ids
inside a batch, and through the ``memory_sources`` index against stored rows.

Shared sources alone are not selective: every legacy memory without messages has the
source ``legacy-content``. So candidates must also pass a prefix filter on words (as in
set-similarity joins): above 0.7 needs ``words > 0.4`` (the other terms add at most 0.5),
so A's word count found in B must exceed 0.4 x A's length. Ordering A's distinct words
rarest first, B must then contain one of A's first words, those whose removal leaves no
more than 0.4 x A's length behind: A's "prefix". Candidates share a source and a prefix
word, joined on the (source, word) pair.

Which candidate a record is finally refused for (records refused earlier are no
candidates) is decided with the other duplicates in ``dedup.resolve``.
"""

from __future__ import annotations

import polars as pl

PAIR_KEYS = ["record", "candidate"]
JOIN_ROWS_PER_CHUNK = 250_000
TERMS = ("words", "sources", "people")


def comparable_input(key: str) -> pl.Schema:
    """The columns ``comparable`` reads, keyed by ``key``."""
    return pl.Schema(
        {
            key: pl.String(),
            "summary": pl.String(),
            "sourceMessageIds": pl.List(pl.String),
            "people": pl.List(pl.String),
        }
    )


def comparable(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """What a score needs of a memory: its normalized summary, words, sources and participant ids.

    Words are kept as 64-bit hashes: they are only compared, and joins, groups and set
    intersections on integers are several times cheaper than on strings (two different
    words sharing a hash, odds about 2^-64 a pair, would count as one).
    """
    normalized = pl.col("summary").str.strip_chars().str.to_lowercase()
    return frame.select(
        pl.col(key),
        text=normalized,
        words=normalized.str.split(" ").list.eval(pl.element().hash()),
        sources="sourceMessageIds",
        people="people",
    )


def words_needed(threshold: float) -> float:
    """The share of A's words B must hold for a score above ``threshold`` (the other terms
    add at most 0.3 + 0.2)."""
    return max(0.0, (threshold - 0.5) / 0.5)


def prefix_words(batch: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Each record's prefix, one of whose words any memory it is similar to holds: ``record``,
    ``word``, ``mass`` (the word's repeats), ``rest`` (the record's word mass outside its
    prefix) and ``length``.

    ``batch`` is a ``comparable`` frame keyed by ``record``; rarity is counted in it. Any
    order of words gives a valid prefix; rarest first gives short, selective ones.
    Without a bound on words (threshold 0.5 or lower) every word is in the prefix.
    """
    words = batch.select("record", word="words", length=pl.col("words").list.len()).explode("word")
    counted = words.group_by("record", "word").agg(pl.len().alias("mass"), pl.col("length").first())
    rarity = counted.group_by("word").agg(pl.len().alias("frequency"))
    ordered = counted.join(rarity, on="word").sort(["record", "frequency"])
    remaining = pl.col("mass").cum_sum(reverse=True).over("record")
    needed = words_needed(threshold) * pl.col("length")
    return (
        ordered.with_columns(in_prefix=remaining > needed)
        .with_columns(rest=pl.col("mass").filter(~pl.col("in_prefix")).sum().over("record"))
        .filter("in_prefix")
        .select("record", "word", "mass", "rest", "length")
    )


def record_sources(batch: pl.DataFrame) -> pl.DataFrame:
    """(record, source), once per distinct source of each record of a ``comparable`` frame."""
    return batch.select("record", source=pl.col("sources").list.unique()).explode("source").drop_nulls()


def probe_keys(
    batch: pl.DataFrame, sources: pl.DataFrame, offered: pl.DataFrame, threshold: float
) -> pl.DataFrame:
    """The (source, prefix word) pairs the records of ``batch`` look for, on the sources
    ``offered`` only: a memory sharing no source cannot be similar, so records without an
    offered source need no prefix.

    ``batch`` is a ``comparable`` frame keyed by ``record``, ``sources`` its
    ``record_sources``, ``offered`` a frame with a ``source`` column.
    """
    on_offered = sources.join(offered, on="source", how="semi")
    probing = batch.join(on_offered.select("record").unique(), on="record", how="semi")
    return prefix_words(probing, threshold).join(on_offered, on="record").with_columns(pair_key())


def target_keys(targets: pl.DataFrame, probes: pl.DataFrame) -> pl.DataFrame:
    """The (source, word) pairs each target offers to ``probes`` (``probe_keys``): ``candidate``,
    ``source``, ``word``, ``target_length``. ``targets`` is a ``comparable`` frame keyed by
    ``candidate``; words in no probe's prefix can pair nothing and are left out."""
    wanted = probes.select("word").unique()
    return (
        targets.select(
            "candidate",
            word=pl.col("words").list.unique(),
            source=pl.col("sources").list.unique(),
            target_length=pl.col("words").list.len(),
        )
        .explode("word")
        .join(wanted, on="word", how="semi")
        .explode("source")
        .drop_nulls()
        .with_columns(pair_key())
    )


def pair_key() -> pl.Expr:
    """One 64-bit key for a (source, word) pair: probes and targets are joined on it, far
    cheaper than on a string and a word. A collision only pairs more records to score."""
    return pl.struct("source", "word").hash().alias("key")


def candidate_pairs(
    probes: pl.DataFrame, keys: pl.DataFrame, threshold: float, earlier_only: bool
) -> pl.DataFrame:
    """(record, candidate): the targets sharing a source and a prefix word with each probe,
    and able to reach the words share a score above ``threshold`` needs.

    ``probes`` comes from ``probe_keys`` and ``keys`` from ``target_keys``. Joining on
    the (source, word) pair keeps a hub source or a common word from pairing everything.
    A's words found in B are at most the prefix words B holds plus A's words outside the
    prefix; a pair whose bound stays at or under the needed share is dropped before
    scoring. With ``earlier_only`` (targets from the same batch), a record pairs with
    earlier ones only.
    """
    shared = (
        probes.join(keys.drop("source", "word"), on="key")
        .filter(pl.col("candidate") < pl.col("record") if earlier_only else pl.lit(True))
        .unique([*PAIR_KEYS, "word"])
    )
    bound = pl.col("mass").sum() + pl.col("rest").first()
    longer = pl.max_horizontal(pl.col("length").first(), pl.col("target_length").first())
    return (
        shared.group_by(PAIR_KEYS)
        .agg(reachable=bound > words_needed(threshold) * longer)
        .filter("reachable")
        .select(PAIR_KEYS)
    )


def similar_pairs(
    probes: pl.DataFrame,
    keys: pl.DataFrame,
    a: pl.DataFrame,
    b: pl.DataFrame,
    threshold: float,
    earlier_only: bool,
) -> pl.DataFrame:
    """(record, candidate, score) for the pairs whose score exceeds ``threshold``.

    ``probes`` and ``keys`` as for ``candidate_pairs``; ``a`` and ``b`` as for ``scores``.
    Records are taken in chunks whose key joins stay near ``JOIN_ROWS_PER_CHUNK`` rows, so a
    run of mutually similar records (templated texts) costs time, not memory.
    """
    found = [
        scores(candidate_pairs(chunk, keys, threshold, earlier_only), a, b).filter(
            exceeds(pl.col("score"), threshold)
        )
        for chunk in _chunks(probes, keys) or [probes.clear()]
    ]
    return pl.concat(found)


def _chunks(probes: pl.DataFrame, keys: pl.DataFrame) -> list[pl.DataFrame]:
    """``probes`` split by record into chunks joining about ``JOIN_ROWS_PER_CHUNK`` keys each;
    records joining none are left out."""
    fanout = keys.group_by("key").len()
    joined = probes.join(fanout, on="key").group_by("record").agg(pl.col("len").sum())
    chunk = joined.sort("record").select("record", chunk=pl.col("len").cum_sum() // JOIN_ROWS_PER_CHUNK)
    return probes.join(chunk, on="record").partition_by("chunk", include_key=False)


def scores(pairs: pl.DataFrame, a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """``pairs`` (record, candidate) with the original's score of record A against candidate B.

    ``a`` and ``b`` are ``comparable`` frames keyed by ``record`` and ``candidate``.
    """
    joined = pairs.join(a, on="record").join(b, on="candidate", suffix="_b")
    share = {
        column: pl.lit(_found(joined, column))
        / pl.max_horizontal(pl.col(column).list.len(), pl.col(f"{column}_b").list.len())
        for column in TERMS
    }
    words = pl.when(pl.col("text") == pl.col("text_b")).then(1.0).otherwise(share["words"])
    # The original adds the terms in this order; at exactly 0.7 the rounding decides.
    score = (0.5 * words + 0.3 * share["sources"]) + 0.2 * share["people"]
    # Capped like Math.min(1.0, score), which keeps NaN (both lists of a term empty) as NaN.
    return joined.select(*PAIR_KEYS, score=pl.when(exceeds(score, 1.0)).then(1.0).otherwise(score))


def exceeds(score: pl.Expr, threshold: float) -> pl.Expr:
    """``score > threshold`` as JavaScript compares: NaN exceeds nothing (Polars orders NaN last)."""
    return ~score.is_nan() & (score > threshold)


def _found(joined: pl.DataFrame, column: str) -> pl.Series:
    """How many of A's items (repeats counted) occur among B's, for each row of ``joined``.

    Without repeats in A that is the size of the intersection; the rows whose A repeats
    an item are counted item by item.
    """
    items, other = pl.col(column), pl.col(f"{column}_b")
    counts = joined.select(
        found=items.list.set_intersection(other).list.len().cast(pl.UInt32),
        repeats=items.list.n_unique() < items.list.len(),
    )
    if not counts["repeats"].any():
        return counts["found"]
    repeating = joined.select(column, f"{column}_b").with_row_index("row").filter(counts["repeats"])
    items_a = repeating.select("row", item=column).explode("item").drop_nulls("item")
    items_b = repeating.select("row", item=f"{column}_b").explode("item").drop_nulls("item").unique()
    counted = items_a.join(items_b, on=["row", "item"], how="semi").group_by("row").agg(found=pl.len())
    found = counts.select(pl.when("repeats").then(0).otherwise("found")).to_series().cast(pl.UInt32)
    return found.scatter(counted["row"], counted["found"].cast(pl.UInt32))
