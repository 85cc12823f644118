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
from recs.frames import exact_sum

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


def event_with_context() -> Column:
    """(event_time, event_id, ctx) of an event: structs compare field by field, so the min or
    max of these picks the first or last event in ``EVENT_ORDER`` and carries its context."""
    return F.struct(*EVENT_ORDER, F.struct(*context_columns()).alias("ctx"))


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


def day_pairs(day_events: DataFrame) -> DataFrame:
    """Each (user, item) with an event on the day, from one shuffle of its events.

    ``_t``: when the user first interacted with the item (null: it was only shown);
    ``_led``: the context of the last impression at or before ``_t``; ``_shown``: the first
    impression's. Positives, impression negatives and the touched pairs the samplers avoid
    all read this one frame, so the day's events are grouped by pair once.
    """
    with_item = day_events.where(F.col("item_id").isNotNull())
    touch_time = F.when(F.col("event_type").isin(*INTERACTIONS), F.col("event_time"))
    shown = F.when(F.col("event_type") == "impression", event_with_context())
    by_pair = Window.partitionBy("user_id", "item_id")
    return (
        with_item.withColumn("_t", F.min(touch_time).over(by_pair))
        .groupBy("user_id", "item_id")
        .agg(
            F.min("_t").alias("_t"),
            F.max(F.when(F.col("event_time") <= F.col("_t"), shown)).alias("_led"),
            F.min(shown).alias("_shown"),
        )
    )


def positive_users(pairs: DataFrame, usual: DataFrame) -> DataFrame:
    """Users with positives on the day: how many, and their usual request context."""
    return (
        pairs.where(F.col("_t").isNotNull())
        .groupBy("user_id")
        .agg(F.count(F.lit(1)).alias("positives"))
        .join(usual.select("user_id", *CONTEXT_COLUMNS), "user_id", "left")
    )


def item_positives(pairs: DataFrame, usual: DataFrame) -> DataFrame:
    """One positive per (user, item) interacted with on the day, in the context that led to it.

    ``pairs`` is ``day_pairs`` of the day; ``usual`` is ``request_context`` of the users'
    features as of D-1.
    """
    with_usual = pairs.where(F.col("_t").isNotNull()).join(
        usual.select("user_id", F.struct(*CONTEXT_COLUMNS).alias("_usual")), "user_id", "left"
    )
    ctx = F.when(F.col("_led").isNotNull(), F.col("_led.ctx")).otherwise(F.col("_usual"))
    return with_usual.select(
        "user_id",
        "item_id",
        *[ctx[c].alias(c) for c in CONTEXT_COLUMNS],
        F.lit("positive").alias("source"),
        F.lit(1.0).alias("label"),
    )


def impression_negatives(pairs: DataFrame) -> DataFrame:
    """Items shown on the day and not interacted with, in the context of their first impression."""
    return pairs.where(F.col("_t").isNull() & F.col("_shown").isNotNull()).select(
        "user_id",
        "item_id",
        *[F.col(f"_shown.ctx.{c}").alias(c) for c in CONTEXT_COLUMNS],
        F.lit("impression").alias("source"),
        F.lit(0.0).alias("label"),
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
    users: DataFrame,
    touched: DataFrame,
    slots: DataFrame,
    per_positive: int,
    seed: int,
    date: dt.date,
) -> DataFrame:
    """Popularity-weighted items the user did not touch on ``date``, ``per_positive`` per positive.

    Draws are a hash of (user, date, draw number, seed), so the sample is the same on every
    rerun and on any number of partitions. They were never shown, so their context is the
    user's usual request context (``users`` is ``positive_users``), as at scoring time.
    """
    total_slots = slots.agg(F.max("slot").alias("_m"))
    wanted = users.withColumn("wanted", F.col("positives") * per_positive)
    draws = (
        wanted.withColumn("j", F.explode(F.sequence(F.lit(0), F.col("wanted") * 2 - 1)))
        .crossJoin(total_slots)
        .withColumn(
            "slot",
            F.pmod(F.xxhash64("user_id", F.lit(date.isoformat()), "j", F.lit(seed)), F.col("_m") + 1),
        )
        .join(F.broadcast(slots), "slot")
        .join(touched, ["user_id", "item_id"], "left_anti")
    )
    first_draw = Window.partitionBy("user_id", "item_id").orderBy("j")
    in_order = Window.partitionBy("user_id").orderBy("j")
    return (
        draws.withColumn("_r", F.row_number().over(first_draw))
        .where("_r = 1")
        .withColumn("_k", F.row_number().over(in_order))
        .where(F.col("_k") <= F.col("wanted"))
        .select(
            "user_id",
            "item_id",
            *CONTEXT_COLUMNS,
            F.lit("sampled").alias("source"),
            F.lit(0.0).alias("label"),
        )
    )


def ad_examples(day_events: DataFrame, ads: DataFrame) -> DataFrame:
    """One example per (user, ad) shown or clicked on the day; label = clicked.

    Its context is that of the pair's first ad event, from the same grouping as the label.
    """
    ad_events = day_events.where(
        F.col("event_type").isin("ad_impression", "ad_click") & F.col("ad_id").isNotNull()
    )
    pairs = ad_events.groupBy("user_id", "ad_id").agg(
        F.min(event_with_context()).alias("_first"),
        F.max((F.col("event_type") == "ad_click").cast("double")).alias("label"),
    )
    promoted = ads.select("ad_id", F.col("item_id").alias("promoted_item"))
    return pairs.join(promoted, "ad_id", "left").select(
        "user_id",
        F.col("promoted_item").alias("item_id"),
        "ad_id",
        *[F.col(f"_first.ctx.{c}").alias(c) for c in CONTEXT_COLUMNS],
        F.lit("ad").alias("source"),
        "label",
    )


def pool_negatives(
    users: DataFrame,
    touched: DataFrame,
    pool: DataFrame,
    per_positive: int,
    seed: int,
    date: dt.date,
) -> DataFrame:
    """Candidates from the user's pool as of D-1 that they did not touch on ``date``.

    ``per_positive`` per positive, picked by a hash of (user, item, date, seed): the same on
    every rerun. These are the near misses the ranker has to order at serving time (the
    user's own recent items, their neighbours, their categories' best sellers), which
    popularity-sampled items rarely are. ``users`` is ``positive_users``: their usual
    request context is the rows' context.
    """
    wanted = users.withColumn("wanted", F.col("positives") * per_positive)
    order = Window.partitionBy("user_id").orderBy("_h", "item_id")
    return (
        pool.select("user_id", "item_id")
        .join(wanted, "user_id")
        .join(touched, ["user_id", "item_id"], "left_anti")
        .withColumn("_h", F.xxhash64("user_id", "item_id", F.lit(date.isoformat()), F.lit(seed)))
        .withColumn("_k", F.row_number().over(order))
        .where(F.col("_k") <= F.col("wanted"))
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
    pairs = day_pairs(day_events)
    users = positive_users(pairs, usual)
    touched = pairs.select("user_id", "item_id")
    slots = popularity_slots(item_features_as_of, slot_resolution, power)
    organic = (
        item_positives(pairs, usual)
        .unionByName(impression_negatives(pairs))
        .unionByName(sample_negatives(users, touched, slots, per_positive, seed, date))
    )
    if pool_per_positive > 0:
        pooled = pool_negatives(users, touched, pool_as_of, pool_per_positive, seed, date)
        organic = organic.unionByName(pooled)
    organic = organic.withColumn("ad_id", F.lit(None).cast("string"))
    rows = organic.unionByName(ad_examples(day_events, ads_as_of))
    rows = rows.withColumn("is_ad", F.col("source") == "ad").withColumn("weight", F.lit(1.0))
    return with_pool_context(rows, pool_as_of)
