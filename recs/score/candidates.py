"""Candidate generation: several named, capped sources per user, then the eligibility filters.

Every candidate keeps ``candidate_source`` and a ``source_score`` (the source's own order),
which ranks the night's output when no model has been promoted yet.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recs.frames import exact_sum, first_rows, top_n
from recs.schemas import interaction_events

# Earlier sources win when one item comes from several; also the no-model ordering.
SOURCES = ("recent", "covisit", "category_popular", "global_popular")
PRIORITY = {name: i for i, name in enumerate(SOURCES)}


def source_priority(source: str = "candidate_source") -> F.Column:
    """A source's rank in ``SOURCES`` (0 first), for ordering inside Spark."""
    table = F.create_map(*[x for name, p in PRIORITY.items() for x in (F.lit(name), F.lit(p))])
    return table[F.col(source)]


def days_between(col: str, start: dt.date, end: dt.date) -> F.Column:
    return F.col(col).between(F.lit(start), F.lit(end))


def recent_candidates(user_item_daily: DataFrame, as_of: dt.date, days: int, cap: int) -> DataFrame:
    """Items the user viewed, clicked or carted lately (bought ones are filtered later)."""
    recent = user_item_daily.where(
        days_between("event_date", as_of - dt.timedelta(days=days - 1), as_of)
        & ((F.col("views") + F.col("clicks") + F.col("carts")) > 0)
    )
    scored = recent.groupBy("user_id", "item_id").agg(
        (F.max("last_event_time").cast("double") / 1e9 + F.sum("carts")).alias("source_score")
    )
    return top_n(scored, ["user_id"], "source_score", cap).withColumn("candidate_source", F.lit("recent"))


SESSION_GAP_SECONDS = 30 * 60


def with_sessions(events: DataFrame, gap_seconds: int = SESSION_GAP_SECONDS) -> DataFrame:
    """``session_id`` where the logs have one; otherwise a session cut from the user's own
    time-ordered history, a new one after ``gap_seconds`` without an event. Shops that log
    no sessions still get co-visitation this way.
    """
    by_time = Window.partitionBy("user_id").orderBy("event_time", "event_id")
    gap = F.col("event_time").cast("long") - F.lag(F.col("event_time").cast("long")).over(by_time)
    starts = F.when(gap.isNull() | (gap > gap_seconds), 1).otherwise(0)
    number = F.sum("_start").over(by_time.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    logged = events.where(F.col("session_id").isNotNull())
    cut = events.where(F.col("session_id").isNull()).withColumn("_start", starts).withColumn("_n", number)
    pseudo = F.concat_ws("#", F.lit("user"), "user_id", F.col("_n").cast("string"))
    return logged.unionByName(cut.withColumn("session_id", pseudo).drop("_start", "_n"))


def covisitation(events: DataFrame, max_items_per_session: int, neighbours: int) -> DataFrame:
    """Item -> item neighbours from sessions; long sessions are capped so heavy users can't dominate."""
    touched = (
        with_sessions(
            events.where(F.col("item_id").isNotNull()).where(F.col("event_type").isin(*interaction_events()))
        )
        .groupBy("session_id", "item_id")
        .agg(F.max("event_time").alias("t"))
    )
    capped = top_n(
        touched.withColumn("_t", F.col("t").cast("double")), ["session_id"], "_t", max_items_per_session
    )
    pairs = (
        capped.alias("a")
        .join(capped.alias("b"), "session_id")
        .where(F.col("a.item_id") != F.col("b.item_id"))
        .groupBy(F.col("a.item_id").alias("item_id"), F.col("b.item_id").alias("neighbour"))
        .agg(F.count(F.lit(1)).cast("double").alias("weight"))
    )
    return top_n(pairs, ["item_id"], "weight", neighbours, tie="neighbour")


def covisit_candidates(user_features: DataFrame, neighbours: DataFrame, cap: int) -> DataFrame:
    recent = user_features.select("user_id", F.posexplode("recent_items").alias("pos", "item_id"))
    scored = (
        recent.join(neighbours, "item_id")
        .groupBy("user_id", F.col("neighbour").alias("item_id"))
        .agg(exact_sum(F.col("weight") / (F.col("pos") + 1)).alias("source_score"))
    )
    return top_n(scored, ["user_id"], "source_score", cap).withColumn("candidate_source", F.lit("covisit"))


def popularity(item_features: DataFrame) -> DataFrame:
    """A recent-weighted popularity score per in-stock item."""
    score = F.col("clicks_7d") * 2 + F.col("views_7d") + F.col("purchases_28d") * 3 + F.col("clicks_28d") / 4
    return item_features.where("in_stock").select(
        "item_id", "category_id", score.cast("double").alias("source_score")
    )


def category_popular_candidates(user_features: DataFrame, popular: DataFrame, cap: int) -> DataFrame:
    per_category = top_n(
        popular.where(F.col("category_id").isNotNull()), ["category_id"], "source_score", cap
    )
    users = user_features.select("user_id", F.posexplode("top_categories").alias("pos", "category_id"))
    scored = users.join(per_category, "category_id").select(
        "user_id", "item_id", (F.col("source_score") / (F.col("pos") + 1)).alias("source_score")
    )
    return top_n(scored, ["user_id"], "source_score", cap).withColumn(
        "candidate_source", F.lit("category_popular")
    )


def global_popular_candidates(users: DataFrame, popular: DataFrame, cap: int) -> DataFrame:
    """The same top items for everyone: what a user with no history (cold start) gets."""
    top = top_n(popular.withColumn("_all", F.lit(1)), ["_all"], "source_score", cap).drop(
        "_all", "category_id"
    )
    return (
        users.select("user_id")
        .crossJoin(F.broadcast(top))
        .withColumn("candidate_source", F.lit("global_popular"))
    )


def bought_items(user_item_daily: DataFrame, as_of: dt.date, window_days: int) -> DataFrame:
    start = as_of - dt.timedelta(days=window_days - 1)
    return (
        user_item_daily.where(days_between("event_date", start, as_of) & (F.col("purchases") > 0))
        .select("user_id", "item_id")
        .distinct()
    )


def merge_and_filter(candidates: list[DataFrame], bought: DataFrame, items: DataFrame) -> DataFrame:
    """One row per (user, item): the highest-priority source wins; ineligible items are removed.

    Removed: anything the user bought in the window, anything out of stock, and anything
    not in the current catalog snapshot (delisted / inactive).
    """
    cols = ["user_id", "item_id", "candidate_source", "source_score"]
    union = candidates[0].select(cols)
    for c in candidates[1:]:
        union = union.unionByName(c.select(cols))
    in_stock = items.where("in_stock").select("item_id", "category_id")
    # (user, item, source) is unique and each source has its own priority: a total order.
    return (
        first_rows(union, ["user_id", "item_id"], [source_priority(), F.col("source_score").desc()])
        .join(bought, ["user_id", "item_id"], "left_anti")
        .join(in_stock, "item_id")
    )
