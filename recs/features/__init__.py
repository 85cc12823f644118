"""Feature stage: daily rollups -> window features as of D -> training examples labelled D.

``run(spark, cfg, date)`` reads day D's events once, writes D's rollups, rebuilds
``user_features``/``item_features`` as of D from at most 28 days of rollups, stores D's
``candidate_pool`` (what score ranks for D), and writes ``training_examples`` for label day D
with features, and the pool, as of D-1.
"""

from __future__ import annotations

import datetime as dt
import logging

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recs.config import Config
from recs.features.spec import FeatureSpec

log = logging.getLogger("recs")

ROLLUPS = ("user_daily", "item_daily", "user_item_daily", "user_category_daily")


def rollup_window(spark: SparkSession, cfg: Config, name: str, as_of: dt.date) -> DataFrame:
    from recs.features.windows import LONGEST
    from recs.tables import read_range

    return read_range(spark, cfg, name, as_of - dt.timedelta(days=LONGEST - 1), as_of)


def features_as_of(spark: SparkSession, cfg: Config, as_of: dt.date) -> tuple[DataFrame, DataFrame]:
    """(user_features, item_features) as of ``as_of``, computed from rollups and the catalog."""
    from recs.features.windows import item_window_features, user_window_features
    from recs.tables import read_range

    f = cfg.features
    users = user_window_features(
        rollup_window(spark, cfg, "user_daily", as_of),
        rollup_window(spark, cfg, "user_item_daily", as_of),
        rollup_window(spark, cfg, "user_category_daily", as_of),
        as_of,
        top_categories=f.top_categories,
        recent_items=f.recent_items,
        ctr_prior=f.ctr_prior_impressions,
    )
    items = item_window_features(
        rollup_window(spark, cfg, "item_daily", as_of),
        read_range(spark, cfg, "items", as_of, as_of),
        as_of,
        ctr_prior=f.ctr_prior_impressions,
    )
    return users, items


def stored_or_computed_features(
    spark: SparkSession, cfg: Config, as_of: dt.date
) -> tuple[DataFrame, DataFrame]:
    """Feature tables as of ``as_of`` as last night wrote them; recomputed from rollups if absent.

    Both come from ``features_as_of`` over the same rollups, so they are the same rows; the
    stored copy just saves recomputing it.
    """
    from recs.tables import read_range

    users = read_range(spark, cfg, "user_features", as_of, as_of)
    items = read_range(spark, cfg, "item_features", as_of, as_of)
    if users.isEmpty() or items.isEmpty():
        return features_as_of(spark, cfg, as_of)
    return users, items


def user_item_as_of(spark: SparkSession, cfg: Config, pairs: DataFrame, as_of: dt.date) -> DataFrame:
    from recs.features.windows import user_item_signals
    from recs.tables import read_range

    return user_item_signals(
        pairs,
        rollup_window(spark, cfg, "user_item_daily", as_of),
        rollup_window(spark, cfg, "user_category_daily", as_of),
        read_range(spark, cfg, "items", as_of, as_of),
        as_of,
    )


def write_rollups(spark: SparkSession, cfg: Config, date: dt.date, tag: str) -> dict[str, int]:
    from recs.features import rollups as R
    from recs.tables import committed_rows, read_date, read_range, replace_partition

    items = read_date(spark, cfg, "items", date)
    # Ads are optional: a shop without them has an empty ads partition, and no ad events.
    ads = read_range(spark, cfg, "ads", date, date)
    events = R.with_item_of_ads(read_date(spark, cfg, "events", date), ads)
    events.persist(StorageLevel.MEMORY_AND_DISK)  # one day, read by all four rollups
    frames = {
        "user_daily": R.user_daily(events, date),
        "item_daily": R.item_daily(events, date),
        "user_item_daily": R.user_item_daily(events, date),
        "user_category_daily": R.user_category_daily(events, items, date),
    }
    counts = {}
    for name, df in frames.items():
        replace_partition(df, cfg, name, date, tag=tag)
        counts[name] = committed_rows(spark, cfg, name, tag)
    events.unpersist()
    return counts


def write_pool(spark: SparkSession, cfg: Config, date: dt.date, tag: str) -> None:
    """Store D's candidate pool: score ranks it, evaluate judges it, D+1's examples learn from it."""
    from recs.score import candidate_pool, scoring_users
    from recs.tables import read_date, replace_partition

    users = scoring_users(spark, cfg, date)
    items_f = read_date(spark, cfg, "item_features", date)
    pool = candidate_pool(spark, cfg, date, users, items_f, read_date(spark, cfg, "items", date))
    replace_partition(pool, cfg, "candidate_pool", date, tag=tag)


def rows_by(spark: SparkSession, cfg: Config, name: str, date: dt.date, column: str) -> dict[str, int]:
    """Row counts of ``name``'s ``date`` partition per value of ``column``: a few rows back."""
    from recs.tables import read_range

    counts = read_range(spark, cfg, name, date, date).groupBy(column).count().collect()
    return {r[column]: r["count"] for r in counts}


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


def training_examples(
    spark: SparkSession, cfg: Config, date: dt.date, spec: FeatureSpec
) -> tuple[DataFrame, DataFrame]:
    """(joined feature frame, examples) labelled ``date``, every feature as of ``date - 1``."""
    from recs.features.examples import EXAMPLE_KEYS, label_rows
    from recs.features.inputs import assemble, feature_frame
    from recs.score import stored_pool
    from recs.tables import read_date, read_range

    as_of = date - dt.timedelta(days=1)
    users, items = stored_or_computed_features(spark, cfg, as_of)
    ads_as_of = read_range(spark, cfg, "ads", as_of, as_of)
    rows = label_rows(
        read_date(spark, cfg, "events", date),
        ads_as_of,
        items,
        users,
        stored_pool(spark, cfg, as_of),
        per_positive=cfg.features.negatives_per_positive,
        pool_per_positive=cfg.features.pool_negatives_per_positive,
        power=cfg.features.negative_sampling_power,
        seed=cfg.features.seed,
        date=date,
    )
    pairs = rows.select("user_id", "item_id").where(F.col("item_id").isNotNull()).distinct()
    frame = feature_frame(rows, users, items, user_item_as_of(spark, cfg, pairs, as_of), ads_as_of)
    return frame, assemble(frame, spec, EXAMPLE_KEYS).withColumns(
        {"spec_hash": F.lit(spec.spec_hash), "label_date": F.lit(date)}
    )


def canonical_order(examples: DataFrame, cfg: Config) -> DataFrame:
    """Same rows -> same files in the same order, so retraining on a rewritten day is reproducible.

    Rows reach a shuffle's output in whatever order map outputs are fetched; hashing into a
    fixed number of partitions and sorting within them by the example key removes that.
    The trainer reads the files in name order (Spark numbers them by partition).
    """
    keys = ("user_id", "item_id", "ad_id", "source")  # unique per label day
    return examples.repartition(cfg.spark.shuffle_partitions, "user_id").sortWithinPartitions(*keys)


def run(spark: SparkSession, cfg: Config, date: dt.date) -> dict[str, int]:
    """Build rollups and features for ``date`` and training examples labelled ``date``."""
    from recs.features.inputs import collision_rates
    from recs.features.spec import load_spec
    from recs.ledger import record_step
    from recs.tables import committed_rows, replace_partition

    spec = load_spec()
    with record_step(spark, cfg, "features", date) as step:
        tag = f"recs-features-{step.run_id}"
        step.counts.update({f"{k}_rows": v for k, v in write_rollups(spark, cfg, date, tag).items()})
        users, items = features_as_of(spark, cfg, date)
        replace_partition(users, cfg, "user_features", date, tag=tag)
        step.counts["user_features_rows"] = committed_rows(spark, cfg, "user_features", tag)
        replace_partition(items, cfg, "item_features", date, tag=tag)
        step.counts["item_features_rows"] = committed_rows(spark, cfg, "item_features", tag)
        write_pool(spark, cfg, date, tag)
        step.counts["candidate_pool_rows"] = committed_rows(spark, cfg, "candidate_pool", tag)
        step.details["pool_by_source"] = rows_by(spark, cfg, "candidate_pool", date, "candidate_source")

        frame, examples = training_examples(spark, cfg, date, spec)
        # Kept for the collision statistics below, which would otherwise rebuild the whole join.
        frame.persist(StorageLevel.MEMORY_AND_DISK)
        replace_partition(canonical_order(examples, cfg), cfg, "training_examples", date, tag=tag)
        step.counts["training_examples_rows"] = committed_rows(spark, cfg, "training_examples", tag)
        step.details["examples_by_source"] = rows_by(spark, cfg, "training_examples", date, "source")
        quiet = silent_sources(step.details["pool_by_source"], step.details["examples_by_source"])
        if quiet:
            step.details["silent_sources"] = quiet
            log.warning("features %s: sources without rows: %s", date, "; ".join(quiet))
        rates = collision_rates(frame, spec)
        frame.unpersist()
        step.details["collision_rate"] = rates
        step.details["spec_hash"] = spec.spec_hash
        for name, rate in rates.items():
            log.info("features %s: hash collision rate %-12s %.4f", date, name, rate)
        return dict(step.counts)
