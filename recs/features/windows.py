"""Window features as of a date, computed from the daily rollups (never from raw events).

Point-in-time rule: features ``as_of = X`` see rollups with ``event_date <= X`` and the
catalog snapshot of X. A training example labelled D is built from features as of D-1.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recs.features.rollups import COUNTED
from recs.schemas import table_doc

WINDOWS: tuple[int, ...] = tuple(table_doc("user_features")["windows"])
LONGEST = max(WINDOWS)


AsOf = dt.date | Sequence[dt.date]


def as_of_dates(like: DataFrame, as_of: AsOf) -> DataFrame:
    """The as-of dates as a one-column frame (``as_of_date``) in ``like``'s session."""
    dates = [as_of] if isinstance(as_of, dt.date) else sorted(set(as_of))
    return like.sparkSession.createDataFrame([(d,) for d in dates], "as_of_date date")


def in_windows(daily: DataFrame, as_of: AsOf) -> DataFrame:
    """Each rollup row once for every as-of date whose longest window holds it, with that
    ``as_of_date`` and the row's ``_age`` in days: every feature is then a group-by on
    ``as_of_date`` and its key, for one night or a backfill's whole range alike."""
    age = F.datediff(F.col("as_of_date"), F.col("event_date"))
    return daily.join(F.broadcast(as_of_dates(daily, as_of)), age.between(0, LONGEST - 1)).withColumn(
        "_age", age
    )


def window_sums(daily: DataFrame, key: list[str], as_of: AsOf) -> DataFrame:
    """Per as-of date and key, each rollup count summed over each window ending that day."""
    aggs = [
        F.sum(F.when(F.col("_age") < w, F.col(c)).otherwise(F.lit(0))).cast("bigint").alias(f"{c}_{w}d")
        for c in COUNTED
        for w in WINDOWS
    ]
    return in_windows(daily, as_of).groupBy("as_of_date", *key).agg(*aggs)


def smoothed_rate(num: str, den: str, prior: float, base: str = "_base") -> F.Column:
    """(num + prior * base_rate) / (den + prior), clipped to [0, 1]: stable for sparse counts."""
    rate = (F.col(num) + F.lit(prior) * F.coalesce(F.col(base), F.lit(0.0))) / (F.col(den) + F.lit(prior))
    return F.least(F.greatest(rate, F.lit(0.0)), F.lit(1.0))


def base_rate(df: DataFrame, num: str, den: str, name: str = "_base") -> DataFrame:
    """The population rate per as-of date, joined to the rows instead of collected to the driver."""
    rate = F.coalesce(F.sum(num) / F.greatest(F.sum(den), F.lit(1)), F.lit(0.0))
    return df.groupBy("as_of_date").agg(rate.alias(name))


def ranked_list(
    df: DataFrame, key: list[str], value: str, score: F.Column, limit: int, name: str
) -> DataFrame:
    """Per key, up to ``limit`` values ordered by ``score`` desc (ties by value)."""
    ranked = F.sort_array(F.collect_list(F.struct((-score).alias("s"), F.col(value).alias("v"))))
    return df.groupBy(*key).agg(F.slice(F.transform(ranked, lambda x: x["v"]), 1, limit).alias(name))


def user_window_features(
    user_daily: DataFrame,
    user_item_daily: DataFrame,
    user_category_daily: DataFrame,
    as_of: AsOf,
    *,
    top_categories: int,
    recent_items: int,
    ctr_prior: float,
) -> DataFrame:
    """One row per user active in the longest window ending at each as-of date."""
    key = ["as_of_date", "user_id"]
    sums = window_sums(user_daily, ["user_id"], as_of)
    latest = (
        in_windows(user_daily, as_of)
        .groupBy(*key)
        .agg(
            F.countDistinct("event_date").cast("int").alias("active_days_28d"),
            F.datediff(F.col("as_of_date"), F.max("event_date")).alias("days_since_last_event"),
            *[
                F.max_by(c, F.when(F.col(c).isNotNull(), F.col("event_date"))).alias(c)
                for c in ("device", "country", "top_hour")
            ],
        )
    )
    cats = ranked_list(
        in_windows(user_category_daily, as_of)
        .groupBy(*key, "category_id")
        .agg(F.sum("interactions").alias("n")),
        key,
        "category_id",
        F.col("n"),
        top_categories,
        "top_categories",
    )
    touched = in_windows(user_item_daily, as_of).where(
        (F.col("views") + F.col("clicks") + F.col("carts") + F.col("purchases")) > 0
    )
    recent = ranked_list(
        touched.groupBy(*key, "item_id").agg(F.max("last_event_time").alias("t")),
        key,
        "item_id",
        F.col("t").cast("long"),
        recent_items,
        "recent_items",
    )
    empty = F.array().cast("array<string>")
    return (
        sums.join(latest, key)
        .join(cats, key, "left")
        .join(recent, key, "left")
        .join(F.broadcast(base_rate(sums, "clicks_28d", "impressions_28d")), "as_of_date", "left")
        .withColumn("ctr_28d", smoothed_rate("clicks_28d", "impressions_28d", ctr_prior))
        .withColumn("top_categories", F.coalesce("top_categories", empty))
        .withColumn("recent_items", F.coalesce("recent_items", empty))
        .drop("_base")
    )


def known_users(user_daily: DataFrame, as_of: dt.date, retention_days: int) -> DataFrame:
    """Every user with an event in the ``retention_days`` ending at ``as_of``: the user dimension.

    Recommendations go to all of them, not only to users active in the feature windows, so a
    user who comes back after months still finds a list.
    """
    age = F.datediff(F.lit(as_of), F.col("event_date"))
    return (
        user_daily.where((age >= 0) & (age < retention_days))
        .groupBy("user_id")
        .agg(F.min("event_date").alias("first_seen_date"), F.max("event_date").alias("last_seen_date"))
    )


def item_window_features(
    item_daily: DataFrame, items: DataFrame, as_of: AsOf, *, ctr_prior: float
) -> DataFrame:
    """Every item of each as-of date's catalog snapshot, with zero counts when it had no activity."""
    sums = window_sums(item_daily, ["item_id"], as_of)
    count_cols = [c for c in sums.columns if c not in ("as_of_date", "item_id")]
    catalog = items.join(
        F.broadcast(as_of_dates(items, as_of)), F.col("snapshot_date") == F.col("as_of_date")
    ).select(
        "as_of_date",
        "item_id",
        "category_id",
        "brand",
        "price",
        "in_stock",
        F.datediff(F.col("as_of_date"), F.col("created_date")).alias("age_days"),
    )
    joined = catalog.join(sums, ["as_of_date", "item_id"], "left").fillna(0, subset=count_cols)
    # A day without activity has no sums and so no base rate: smoothed_rate reads it as 0.
    return (
        joined.join(F.broadcast(base_rate(sums, "clicks_28d", "impressions_28d")), "as_of_date", "left")
        .join(F.broadcast(base_rate(sums, "purchases_28d", "views_28d", "_conv")), "as_of_date", "left")
        .withColumn("ctr_28d", smoothed_rate("clicks_28d", "impressions_28d", ctr_prior))
        .withColumn("conversion_28d", smoothed_rate("purchases_28d", "views_28d", ctr_prior, "_conv"))
        .drop("_base", "_conv")
    )


@dataclass(frozen=True)
class UserItemWindow:
    """Per-user sums over the longest window ending on ``as_of``: what every pair's signals
    are looked up in. A step that scores several sets of pairs builds (and caches) it once."""

    as_of: dt.date
    meta: DataFrame  # item_id, category_id, brand
    views: DataFrame  # per (user, item)
    categories: DataFrame  # per (user, category)
    brands: DataFrame  # per (user, brand)
    totals: DataFrame  # per user

    def frames(self) -> tuple[DataFrame, ...]:
        return (self.meta, self.views, self.categories, self.brands, self.totals)


def user_item_window(
    user_item_daily: DataFrame,
    user_category_daily: DataFrame,
    items: DataFrame,
    as_of: dt.date,
) -> UserItemWindow:
    """The sums ``signals_of`` reads; only rollups up to ``as_of`` count."""
    in_window = F.datediff(F.lit(as_of), "event_date").between(0, LONGEST - 1)
    ui = user_item_daily.where(in_window)
    interacted = (F.col("views") + F.col("clicks") + F.col("carts") + F.col("purchases")) > 0
    day_end = F.to_timestamp(F.lit(f"{as_of + dt.timedelta(days=1)} 00:00:00"))  # session time zone: UTC
    views = ui.groupBy("user_id", "item_id").agg(
        F.sum("views").alias("views_28d"),
        F.sum("clicks").alias("clicks_28d"),
        F.sum("carts").alias("carts_28d"),
        F.datediff(F.lit(as_of), F.max(F.when(F.col("views") > 0, F.col("event_date")))).alias(
            "days_since_view"
        ),
        # The last event of the last day with an interaction: hours, not days, so that items
        # of the same day are told apart (the no-model order does the same).
        (
            (day_end.cast("long") - F.max(F.when(interacted, F.col("last_event_time"))).cast("long")) / 3600.0
        ).alias("hours_since_touch"),
    )
    meta = items.select("item_id", "category_id", "brand")
    cat = (
        user_category_daily.where(in_window)
        .groupBy("user_id", "category_id")
        .agg(
            F.sum("interactions").alias("_cat_n"),
            F.datediff(F.lit(as_of), F.max("event_date")).alias("days_since_category"),
        )
    )
    touched = ui.withColumn("_n", F.col("views") + F.col("clicks") + F.col("carts") + F.col("purchases"))
    brand = (
        touched.join(meta.select("item_id", "brand"), "item_id")
        .groupBy("user_id", "brand")
        .agg(F.sum("_n").alias("_brand_n"))
    )
    totals = touched.groupBy("user_id").agg(F.sum("_n").alias("_total"))
    return UserItemWindow(as_of, meta, views, cat, brand, totals)


def signals_of(pairs: DataFrame, window: UserItemWindow) -> DataFrame:
    """For (user_id, item_id) pairs: prior views, clicks and carts of the item, how long ago
    the user last touched it and its category, and the user's category/brand affinity.

    These separate a user's own taste and intent from popularity, which the item features
    already carry. One row per input pair.
    """
    return (
        pairs.join(window.meta, "item_id", "left")
        .join(window.views, ["user_id", "item_id"], "left")
        .join(window.categories, ["user_id", "category_id"], "left")
        .join(window.brands, ["user_id", "brand"], "left")
        .join(window.totals, "user_id", "left")
        .select(
            *pairs.columns,
            F.coalesce("views_28d", F.lit(0)).alias("views_28d"),
            F.coalesce("clicks_28d", F.lit(0)).alias("clicks_28d"),
            F.coalesce("carts_28d", F.lit(0)).alias("carts_28d"),
            F.col("days_since_view"),
            F.col("hours_since_touch"),
            F.col("days_since_category"),
            F.coalesce(F.try_divide("_cat_n", "_total"), F.lit(0.0)).alias("category_affinity"),
            F.coalesce(F.try_divide("_brand_n", "_total"), F.lit(0.0)).alias("brand_affinity"),
        )
    )


def user_item_signals(
    pairs: DataFrame,
    user_item_daily: DataFrame,
    user_category_daily: DataFrame,
    items: DataFrame,
    as_of: dt.date,
) -> DataFrame:
    """``signals_of`` the pairs, from the rollups up to ``as_of``."""
    return signals_of(pairs, user_item_window(user_item_daily, user_category_daily, items, as_of))
