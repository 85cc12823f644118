"""Feature stage: daily rollups -> window features as of D -> training examples labelled D.

``run(spark, cfg, date)`` reads day D's events once, writes D's rollups, rebuilds
``user_features``/``item_features`` as of D from at most 28 days of rollups, stores D's
``candidate_pool`` (what score ranks for D), and writes ``training_examples`` for label day D
with features, and the pool, as of D-1.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recs.config import Config, FeaturesConfig
from recs.features.spec import FeatureSpec

if TYPE_CHECKING:
    from recs.features.windows import UserItemWindow

log = logging.getLogger("recs")

ROLLUPS = ("user_daily", "item_daily", "user_item_daily", "user_category_daily")
WINDOW_TABLES = ("user_features", "item_features")


@dataclass(frozen=True)
class History:
    """The daily rollups of the longest window ending on ``as_of``, and the catalog as of then:
    every window feature as of that day is a function of these alone."""

    as_of: dt.date
    user_daily: DataFrame
    item_daily: DataFrame
    user_item_daily: DataFrame
    user_category_daily: DataFrame
    items: DataFrame


def read_history(spark: SparkSession, cfg: Config, as_of: dt.date, since: dt.date | None = None) -> History:
    """The rollups and catalog that features as of ``as_of`` read; with ``since``, those of
    every as-of date from ``since`` to ``as_of`` (a backfill's range)."""
    from recs.features.windows import LONGEST
    from recs.tables import read_range

    first = since or as_of
    start = first - dt.timedelta(days=LONGEST - 1)
    rollups = {name: read_range(spark, cfg, name, start, as_of) for name in ROLLUPS}
    return History(as_of=as_of, items=read_range(spark, cfg, "items", first, as_of), **rollups)


def features_as_of(
    history: History, f: FeaturesConfig, dates: Sequence[dt.date] | None = None
) -> tuple[DataFrame, DataFrame]:
    """(user_features, item_features) as of the history's last day, or as of each of ``dates``
    (from a history that covers all their windows)."""
    from recs.features.windows import item_window_features, user_window_features

    as_of = history.as_of if dates is None else dates
    users = user_window_features(
        history.user_daily,
        history.user_item_daily,
        history.user_category_daily,
        as_of,
        top_categories=f.top_categories,
        recent_items=f.recent_items,
        ctr_prior=f.ctr_prior_impressions,
    )
    items = item_window_features(history.item_daily, history.items, as_of, ctr_prior=f.ctr_prior_impressions)
    return users, items


def read_features(spark: SparkSession, cfg: Config, as_of: dt.date) -> tuple[DataFrame, DataFrame]:
    """Feature tables as of ``as_of`` as that night wrote them; recomputed from rollups if absent.

    Both come from ``features_as_of`` over the same rollups, so they are the same rows; the
    stored copy just saves recomputing it.
    """
    from recs.tables import read_range

    users = read_range(spark, cfg, "user_features", as_of, as_of)
    items = read_range(spark, cfg, "item_features", as_of, as_of)
    if users.isEmpty() or items.isEmpty():
        return features_as_of(read_history(spark, cfg, as_of), cfg.features)
    return users, items


def user_item_window_of(history: History) -> UserItemWindow:
    """The per-user sums that user-item signals as of the history's last day are looked up in."""
    from recs.features.windows import user_item_window

    return user_item_window(
        history.user_item_daily, history.user_category_daily, history.items, history.as_of
    )


def user_item_as_of(history: History, pairs: DataFrame) -> DataFrame:
    """The user-item signals of ``pairs`` as of the history's last day."""
    from recs.features.windows import signals_of

    return signals_of(pairs, user_item_window_of(history))


def write_rollups(
    spark: SparkSession, cfg: Config, dates: Sequence[dt.date], tag: str
) -> dict[dt.date, dict[str, int]]:
    """Write the four rollups of ``dates`` (one commit per table); rows per date and table.

    One date is a night. Several are a backfill's first pass: each table's rows for the whole
    range come from one query, and they are the rows the nights one by one would write, since
    a day's rollups depend on that day's events, catalog and ads alone. Every date needs its
    events and catalog snapshot (``rollup_ready`` says which have them).
    """
    from recs.features import rollups as R
    from recs.tables import read_date, read_range

    dates = sorted(set(dates))
    if len(dates) == 1:  # a night: an empty partition is an error naming the step to run
        events = read_date(spark, cfg, "events", dates[0])
        items = read_date(spark, cfg, "items", dates[0])
    else:
        events = read_range(spark, cfg, "events", dates[0], dates[-1]).where(F.col("event_date").isin(dates))
        items = read_range(spark, cfg, "items", dates[0], dates[-1]).where(F.col("snapshot_date").isin(dates))
    # Ads are optional: a shop without them has an empty ads partition, and no ad events.
    ads = read_range(spark, cfg, "ads", dates[0], dates[-1])
    events = R.with_item_of_ads(events, ads)
    events.persist(StorageLevel.MEMORY_AND_DISK)  # read by all four rollups
    frames = {
        "user_daily": R.user_daily(events),
        "item_daily": R.item_daily(events),
        "user_item_daily": R.user_item_daily(events),
        "user_category_daily": R.user_category_daily(events, items),
    }
    try:
        return write_dated(spark, cfg, frames, dates, tag)
    finally:
        events.unpersist()


def write_window_features(
    spark: SparkSession, cfg: Config, dates: Sequence[dt.date], tag: str
) -> dict[dt.date, dict[str, int]]:
    """Write ``user_features`` and ``item_features`` as of each of ``dates`` (one query and one
    commit per table); rows per date and table. The rollups of every window must be written."""
    dates = sorted(set(dates))
    history = read_history(spark, cfg, dates[-1], since=dates[0])
    users, items = features_as_of(history, cfg.features, dates)
    return write_dated(spark, cfg, {"user_features": users, "item_features": items}, dates, tag)


def write_dated(
    spark: SparkSession, cfg: Config, frames: dict[str, DataFrame], dates: list[dt.date], tag: str
) -> dict[dt.date, dict[str, int]]:
    """Replace ``dates``' partitions of each table with its frame; rows per date and table."""
    from recs.schemas import partition_column
    from recs.tables import committed_rows, read_range, replace_partition

    counts: dict[dt.date, dict[str, int]] = {d: {} for d in dates}
    for name, df in frames.items():
        replace_partition(df, cfg, name, dates, tag=tag)
        if len(dates) == 1:
            counts[dates[0]][name] = committed_rows(spark, cfg, name, tag)
            continue
        # The commit's metrics hold one total; a few rows back per table for the range.
        written = read_range(spark, cfg, name, dates[0], dates[-1]).groupBy(partition_column(name)).count()
        per_date = {r[0]: r[1] for r in written.collect()}
        for d in dates:
            counts[d][name] = per_date.get(d, 0)
    return counts


def rollup_ready(spark: SparkSession, cfg: Config, dates: Sequence[dt.date]) -> list[dt.date]:
    """Those of ``dates`` with events and a catalog snapshot: the rest are left to their own
    night, which fails saying what is missing."""
    from recs.tables import read_range

    if not dates:
        return []
    lo, hi = min(dates), max(dates)
    present = [
        {r[0] for r in read_range(spark, cfg, name, lo, hi).select(column).distinct().collect()}
        for name, column in (("events", "event_date"), ("items", "snapshot_date"))
    ]
    return sorted(d for d in set(dates) if all(d in days for days in present))


def write_pool(spark: SparkSession, cfg: Config, date: dt.date, tag: str) -> dict[str, int]:
    """Store D's candidate pool: score ranks it, evaluate judges it, D+1's examples learn from it.
    Returns its rows per candidate source, counted as they were written."""
    from recs.frames import counting
    from recs.score import candidate_pool, read_candidate_inputs, read_scoring_users
    from recs.score.candidates import SOURCES
    from recs.tables import read_date, replace_partition

    users = read_scoring_users(spark, cfg, date)
    items_f = read_date(spark, cfg, "item_features", date)
    items = read_date(spark, cfg, "items", date)
    pool = candidate_pool(read_candidate_inputs(spark, cfg, date), cfg.score, date, users, items_f, items)
    pool, by_source = counting(pool, "candidate_source", SOURCES)
    replace_partition(pool, cfg, "candidate_pool", date, tag=tag)
    return by_source()


def silent_sources(pool: dict[str, int], examples: dict[str, int]) -> list[str]:
    """Candidate sources and example kinds that produced nothing, with what they need.

    A shop that logs no impressions or sessions still gets the rest; this says which parts
    sat out, so an empty source is never silent.
    """
    from recs.score.candidates import SOURCES

    needs = {
        "recent": "views, clicks or carts in score.recent_days",
        "covisit": "two items touched in one session (or one burst of a user's events)",
        "category_popular": "users with a top category and in-stock items in it",
        "global_popular": "in-stock items with views, clicks or purchases",
        "impression": "impression events on the label day",
        "sampled": "positives on the label day and in-stock items",
        "pool": "positives of users with a candidate pool the day before",
        "ad": "ad impressions on the label day",
    }
    quiet = [f"pool source {s}: none ({needs[s]})" for s in SOURCES if not pool.get(s)]
    return quiet + [
        f"examples {s}: none ({needs[s]})"
        for s in ("impression", "sampled", "pool", "ad")
        if not examples.get(s)
    ]


@dataclass(frozen=True)
class ExampleInputs:
    """What the examples labelled D are built from: D's events, and everything else as of D-1."""

    date: dt.date
    events: DataFrame
    ads: DataFrame
    users: DataFrame
    items: DataFrame
    pool: DataFrame
    history: History


def read_example_inputs(spark: SparkSession, cfg: Config, date: dt.date) -> ExampleInputs:
    from recs.score import read_pool
    from recs.tables import read_date, read_range

    as_of = date - dt.timedelta(days=1)
    users, items = read_features(spark, cfg, as_of)
    return ExampleInputs(
        date=date,
        events=read_date(spark, cfg, "events", date),
        ads=read_range(spark, cfg, "ads", as_of, as_of),
        users=users,
        items=items,
        pool=read_pool(spark, cfg, as_of),
        history=read_history(spark, cfg, as_of),
    )


def example_rows(inputs: ExampleInputs, f: FeaturesConfig) -> DataFrame:
    """The labelled (user, item[, ad]) rows of ``inputs.date`` with their context, before features."""
    from recs.features.examples import label_rows

    return label_rows(
        inputs.events,
        inputs.ads,
        inputs.items,
        inputs.users,
        inputs.pool,
        per_positive=f.negatives_per_positive,
        pool_per_positive=f.pool_negatives_per_positive,
        power=f.negative_sampling_power,
        seed=f.seed,
        date=inputs.date,
    )


def training_examples(
    inputs: ExampleInputs, rows: DataFrame, spec: FeatureSpec
) -> tuple[DataFrame, DataFrame]:
    """(joined feature frame, examples) of ``example_rows``, every feature as of the day before."""
    from recs.features.examples import EXAMPLE_KEYS
    from recs.features.inputs import assemble, feature_frame

    pairs = rows.select("user_id", "item_id").where(F.col("item_id").isNotNull()).distinct()
    signals = user_item_as_of(inputs.history, pairs)
    frame = feature_frame(rows, inputs.users, inputs.items, signals, inputs.ads)
    return frame, assemble(frame, spec, EXAMPLE_KEYS).withColumns(
        {"spec_hash": F.lit(spec.spec_hash), "label_date": F.lit(inputs.date)}
    )


def canonical_order(examples: DataFrame, cfg: Config) -> DataFrame:
    """Same rows -> same files in the same order, so retraining on a rewritten day is reproducible.

    Rows reach a shuffle's output in whatever order map outputs are fetched; hashing into a
    fixed number of partitions and sorting within them by the example key removes that.
    The trainer reads the files in name order (Spark numbers them by partition).
    """
    keys = ("user_id", "item_id", "ad_id", "source")  # unique per label day
    return examples.repartition(cfg.spark.shuffle_partitions, "user_id").sortWithinPartitions(*keys)


def run(
    spark: SparkSession, cfg: Config, date: dt.date, *, written: dict[str, int] | None = None
) -> dict[str, int]:
    """Build rollups and features for ``date`` and training examples labelled ``date``.

    ``written``: rows per table of what a backfill's range pass already wrote for ``date``
    (its rollups, and its window features); the night goes on from there.
    """
    from recs.features.examples import EXAMPLE_SOURCES
    from recs.features.inputs import collision_rates
    from recs.features.spec import load_spec
    from recs.frames import counting
    from recs.ledger import record_step
    from recs.tables import committed_rows, replace_partition

    spec = load_spec()
    with record_step(spark, cfg, "features", date) as step:
        tag = f"recs-features-{step.run_id}"
        done = dict(written or {})
        if done:
            step.details["range_pass"] = sorted(done)
        if not set(ROLLUPS) <= set(done):
            done.update(write_rollups(spark, cfg, [date], tag)[date])
        if not set(WINDOW_TABLES) <= set(done):
            done.update(write_window_features(spark, cfg, [date], tag)[date])
        step.counts.update({f"{k}_rows": v for k, v in done.items()})
        step.details["pool_by_source"] = write_pool(spark, cfg, date, tag)
        step.counts["candidate_pool_rows"] = committed_rows(spark, cfg, "candidate_pool", tag)

        inputs = read_example_inputs(spark, cfg, date)
        # Kept: the rows feed both the feature joins and the user-item pairs, and a plan that
        # held them twice would also plan (and file-list for Delta) every read under them twice.
        rows = example_rows(inputs, cfg.features).persist(StorageLevel.MEMORY_AND_DISK)
        frame, examples = training_examples(inputs, rows, spec)
        # Kept for the collision statistics below, which would otherwise rebuild the whole join.
        frame.persist(StorageLevel.MEMORY_AND_DISK)
        examples, by_source = counting(canonical_order(examples, cfg), "source", EXAMPLE_SOURCES)
        replace_partition(examples, cfg, "training_examples", date, tag=tag)
        step.counts["training_examples_rows"] = committed_rows(spark, cfg, "training_examples", tag)
        step.details["examples_by_source"] = by_source()
        quiet = silent_sources(step.details["pool_by_source"], step.details["examples_by_source"])
        if quiet:
            step.details["silent_sources"] = quiet
            log.warning("features %s: sources without rows: %s", date, "; ".join(quiet))
        rates = collision_rates(frame, spec)
        frame.unpersist()
        rows.unpersist()
        step.details["collision_rate"] = rates
        step.details["spec_hash"] = spec.spec_hash
        for name, rate in rates.items():
            log.info("features %s: hash collision rate %-12s %.4f", date, name, rate)
        return dict(step.counts)
