"""Training examples for one label day: positives, impression and sampled negatives, ad examples.

Labels come from day D's events; every feature joined onto them is as of D-1, so nothing
from D (or later) can leak into an example's inputs.

An example's context (surface, hour, device, country) is that of the request that led to
it, never the label event's own: views, carts and purchases are logged on the product page,
so their surface would give the label away, and scoring never sees such a context. A
positive takes the context of the impression of the item that preceded it that day; one
without an impression, and every sampled negative, takes the user's usual context as of
D-1, built by ``request_context`` exactly as scoring builds it.

The ranker is served the candidate pool, so it is trained on it too: besides negatives the
user was shown (impressions) and popularity-sampled ones, each positive brings negatives
drawn from the user's own pool as of D-1 (what they would have been served on D), and every
row carries the pool's source and position of its item as of D-1, as scoring rows do.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recs.features.rollups import INTERACTIONS
from recs.frames import exact_sum, first_rows

CONTEXT = ("device", "country", "surface")
EXAMPLE_KEYS = ["user_id", "item_id", "ad_id", "source", "label", "weight", "is_ad"]
EXAMPLE_SOURCES = ("positive", "impression", "sampled", "pool", "ad")  # every row's ``source``


CONTEXT_COLUMNS = [f"context__{c}" for c in (*CONTEXT, "hour")]
POOL_COLUMNS = {"context__candidate_source": "candidate_source", "context__pool_position": "position"}
SCORING_SURFACE = "home"
# The first of a user's events on an item: earliest, ties by event_id (unique).
EVENT_ORDER = ("event_time", "event_id")


def context_columns() -> list[Column]:
    return [F.col(c).alias(f"context__{c}") for c in CONTEXT] + [F.hour("event_time").alias("context__hour")]


def request_context(user_features: DataFrame) -> DataFrame:
    """The context a recommendation request of the user is scored in: their usual device,
    country and hour, on the home surface. Training uses the same for rows without a logged one.
    """
    return user_features.select(
        "user_id",
        F.col("device").alias("context__device"),
        F.col("country").alias("context__country"),
        F.lit(SCORING_SURFACE).alias("context__surface"),
        F.col("top_hour").alias("context__hour"),
    )


def item_positives(day_events: DataFrame, usual: DataFrame) -> DataFrame:
    """One positive per (user, item) touched on the day, in the context that led to it.

    ``usual`` is ``request_context`` of the users' features as of D-1.
    """
    touched = day_events.where(F.col("event_type").isin(*INTERACTIONS) & F.col("item_id").isNotNull())
    first = first_rows(touched, ["user_id", "item_id"], EVENT_ORDER).select(
        "user_id", "item_id", F.col("event_time").alias("_t")
    )
    shown = day_events.where((F.col("event_type") == "impression") & F.col("item_id").isNotNull()).select(
        "user_id", "item_id", "event_time", "event_id", F.struct(*context_columns()).alias("_ctx")
    )
    led = (
        first.join(shown, ["user_id", "item_id"])
        .where(F.col("event_time") <= F.col("_t"))
        .groupBy("user_id", "item_id")
        .agg(F.max_by("_ctx", F.struct("event_time", "event_id")).alias("_ctx"))
    )
    with_usual = first.join(led, ["user_id", "item_id"], "left").join(
        usual.select("user_id", F.struct(*CONTEXT_COLUMNS).alias("_usual")), "user_id", "left"
    )
    ctx = F.when(F.col("_ctx").isNotNull(), F.col("_ctx")).otherwise(F.col("_usual"))
    return with_usual.select(
        "user_id",
        "item_id",
        *[ctx[c].alias(c) for c in CONTEXT_COLUMNS],
        F.lit("positive").alias("source"),
        F.lit(1.0).alias("label"),
    )


def impression_negatives(day_events: DataFrame, positives: DataFrame) -> DataFrame:
    shown = day_events.where((F.col("event_type") == "impression") & F.col("item_id").isNotNull())
    return (
        first_rows(shown, ["user_id", "item_id"], EVENT_ORDER)
        .join(positives.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti")
        .select(
            "user_id",
            "item_id",
            *context_columns(),
            F.lit("impression").alias("source"),
            F.lit(0.0).alias("label"),
        )
    )


def popularity_slots(item_features: DataFrame, resolution: int, power: float = 1.0) -> DataFrame:
    """Each in-stock item owns a run of integer slots proportional to popularity ** ``power``.

    A uniform draw over ``[0, total_slots)`` then picks items popularity-weighted through an
    equi-join on the slot, which Spark does well (a range join it does not).
    """
    popularity = F.col("views_28d") + F.col("clicks_28d") + F.col("impressions_28d") / 10 + 1.0
    weight = F.pow(popularity, F.lit(float(power)))
    items = item_features.where("in_stock").select("item_id", weight.alias("w"))
    total = items.agg(exact_sum("w").alias("_total"))
    sized = items.crossJoin(total).select(
        "item_id",
        F.greatest(F.lit(1), F.round(F.col("w") / F.col("_total") * resolution)).cast("long").alias("n"),
    )
    # A whole-table window: fine for a catalog (small next to events), and it makes slots stable.
    cumulative = Window.orderBy("item_id").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    ends = sized.withColumn("end", F.sum("n").over(cumulative))
    return ends.select(
        "item_id", F.explode(F.sequence(F.col("end") - F.col("n"), F.col("end") - 1)).alias("slot")
    )


def sample_negatives(
    positives: DataFrame,
    touched: DataFrame,
    slots: DataFrame,
    per_positive: int,
    seed: int,
    date: dt.date,
    usual: DataFrame,
) -> DataFrame:
    """Popularity-weighted items the user did not touch on ``date``, ``per_positive`` per positive.

    Draws are a hash of (user, date, draw number, seed), so the sample is the same on every
    rerun and on any number of partitions. They were never shown, so their context is the
    user's usual request context (``usual``), as at scoring time.
    """
    total_slots = slots.agg(F.max("slot").alias("_m"))
    per_user = (
        positives.select("user_id")
        .distinct()
        .join(usual.select("user_id", *CONTEXT_COLUMNS), "user_id", "left")
    )
    wanted = positives.groupBy("user_id").agg((F.count(F.lit(1)) * per_positive).alias("wanted"))
    draws = (
        wanted.withColumn("j", F.explode(F.sequence(F.lit(0), F.col("wanted") * 2 - 1)))
        .crossJoin(total_slots)
        .withColumn(
            "slot",
            F.pmod(F.xxhash64("user_id", F.lit(date.isoformat()), "j", F.lit(seed)), F.col("_m") + 1),
        )
        .join(F.broadcast(slots), "slot")
        .join(touched.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti")
    )
    first_draw = Window.partitionBy("user_id", "item_id").orderBy("j")
    in_order = Window.partitionBy("user_id").orderBy("j")
    return (
        draws.withColumn("_r", F.row_number().over(first_draw))
        .where("_r = 1")
        .withColumn("_k", F.row_number().over(in_order))
        .where(F.col("_k") <= F.col("wanted"))
        .join(per_user, "user_id")
        .select(
            "user_id",
            "item_id",
            *CONTEXT_COLUMNS,
            F.lit("sampled").alias("source"),
            F.lit(0.0).alias("label"),
        )
    )


def ad_examples(day_events: DataFrame, ads: DataFrame) -> DataFrame:
    """One example per (user, ad) shown or clicked on the day; label = clicked."""
    ad_events = day_events.where(
        F.col("event_type").isin("ad_impression", "ad_click") & F.col("ad_id").isNotNull()
    )
    clicked = ad_events.groupBy("user_id", "ad_id").agg(
        F.max((F.col("event_type") == "ad_click").cast("double")).alias("label")
    )
    promoted = ads.select("ad_id", F.col("item_id").alias("promoted_item"))
    return (
        first_rows(ad_events, ["user_id", "ad_id"], EVENT_ORDER)
        .select("user_id", "ad_id", F.col("item_id").alias("event_item"), *context_columns())
        .join(clicked, ["user_id", "ad_id"])
        .join(promoted, "ad_id", "left")
        .select(
            "user_id",
            F.col("promoted_item").alias("item_id"),
            "ad_id",
            *[F.col(f"context__{c}") for c in (*CONTEXT, "hour")],
            F.lit("ad").alias("source"),
            "label",
        )
    )


def pool_negatives(
    positives: DataFrame,
    touched: DataFrame,
    pool: DataFrame,
    per_positive: int,
    seed: int,
    date: dt.date,
    usual: DataFrame,
) -> DataFrame:
    """Candidates from the user's pool as of D-1 that they did not touch on ``date``.

    ``per_positive`` per positive, picked by a hash of (user, item, date, seed): the same on
    every rerun. These are the near misses the ranker has to order at serving time (the
    user's own recent items, their neighbours, their categories' best sellers), which
    popularity-sampled items rarely are.
    """
    wanted = positives.groupBy("user_id").agg((F.count(F.lit(1)) * per_positive).alias("wanted"))
    order = Window.partitionBy("user_id").orderBy("_h", "item_id")
    return (
        pool.select("user_id", "item_id")
        .join(wanted, "user_id")
        .join(touched.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti")
        .withColumn("_h", F.xxhash64("user_id", "item_id", F.lit(date.isoformat()), F.lit(seed)))
        .withColumn("_k", F.row_number().over(order))
        .where(F.col("_k") <= F.col("wanted"))
        .join(usual.select("user_id", *CONTEXT_COLUMNS), "user_id", "left")
        .select(
            "user_id",
            "item_id",
            *CONTEXT_COLUMNS,
            F.lit("pool").alias("source"),
            F.lit(0.0).alias("label"),
        )
    )


def with_pool_context(rows: DataFrame, pool: DataFrame | None = None) -> DataFrame:
    """Add each row's pool source and position as context columns, null outside the pool.

    Scoring rows come from the pool and carry both already; training rows look theirs up in
    the pool of the day before the label (``pool``). Ads are ranked apart from the pool, so
    their rows never get one.
    """
    if pool is None:
        present = all(c in rows.columns for c in POOL_COLUMNS.values())
        out = rows.withColumns(
            {ctx: F.col(col) if present else F.lit(None) for ctx, col in POOL_COLUMNS.items()}
        )
    else:
        looked_up = pool.select("user_id", "item_id", *[F.col(c).alias(x) for x, c in POOL_COLUMNS.items()])
        out = rows.join(looked_up, ["user_id", "item_id"], "left")
    not_ad = ~F.coalesce(F.col("is_ad"), F.lit(False))
    return out.withColumns(
        {
            "context__candidate_source": F.when(not_ad, F.col("context__candidate_source").cast("string")),
            "context__pool_position": F.when(not_ad, F.col("context__pool_position").cast("int")),
        }
    )


def label_rows(
    day_events: DataFrame,
    ads_as_of: DataFrame,
    item_features_as_of: DataFrame,
    user_features_as_of: DataFrame,
    pool_as_of: DataFrame,
    *,
    per_positive: int,
    pool_per_positive: int,
    seed: int,
    date: dt.date,
    power: float = 1.0,
    slot_resolution: int = 1 << 16,
) -> DataFrame:
    """All labelled (user, item[, ad]) rows of ``date`` with their context, before features."""
    usual = request_context(user_features_as_of)
    positives = item_positives(day_events, usual)
    touched = day_events.where(F.col("item_id").isNotNull()).select("user_id", "item_id").distinct()
    slots = popularity_slots(item_features_as_of, slot_resolution, power)
    organic = positives.unionByName(impression_negatives(day_events, positives)).unionByName(
        sample_negatives(positives, touched, slots, per_positive, seed, date, usual)
    )
    if pool_per_positive > 0:
        pooled = pool_negatives(positives, touched, pool_as_of, pool_per_positive, seed, date, usual)
        organic = organic.unionByName(pooled)
    organic = organic.withColumn("ad_id", F.lit(None).cast("string"))
    rows = organic.unionByName(ad_examples(day_events, ads_as_of))
    rows = rows.withColumn("is_ad", F.col("source") == "ad").withColumn("weight", F.lit(1.0))
    return with_pool_context(rows, pool_as_of)
