"""Daily rollups: each day of ``events`` summarised per user, item, user x item, user x category.

Every rollup is grouped by ``event_date``: a night passes one day's events and gets that
day's rows, a backfill passes a range and gets every day's rows from one query per table, the
same rows either way. Every window feature is then a sum over at most 28 rollup partitions,
so a 90-day backfill reads each raw day once.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recs.frames import top_n
from recs.schemas import interaction_events

# Column in the rollups -> event types it counts.
COUNTED = {
    "impressions": ["impression"],
    "views": ["view"],
    "clicks": ["click"],
    "carts": ["add_to_cart"],
    "purchases": ["purchase"],
    "ad_impressions": ["ad_impression"],
    "ad_clicks": ["ad_click"],
}
INTERACTIONS = interaction_events()


def count_columns() -> list[Column]:
    return [F.count_if(F.col("event_type").isin(*types)).alias(name) for name, types in COUNTED.items()]


def mode_of(df: DataFrame, key: list[str], column: str) -> DataFrame:
    """The most frequent non-null value of ``column`` per key (ties: smallest value)."""
    counts = df.where(F.col(column).isNotNull()).groupBy(*key, column).agg(F.count(F.lit(1)).alias("n"))
    return top_n(counts, key, "n", 1, tie=column).select(*key, column)


def with_item_of_ads(events: DataFrame, ads: DataFrame) -> DataFrame:
    """Ad events name an ad; give them the item the ad promoted that day, so item-level counts
    include them."""
    promoted = ads.select(
        "ad_id", F.col("snapshot_date").alias("event_date"), F.col("item_id").alias("_ad_item")
    )
    return (
        events.join(F.broadcast(promoted), ["ad_id", "event_date"], "left")
        .withColumn("item_id", F.coalesce("item_id", "_ad_item"))
        .drop("_ad_item")
    )


def user_daily(events: DataFrame) -> DataFrame:
    key = ["event_date", "user_id"]
    counts = events.groupBy(*key).agg(*count_columns(), F.max("event_time").alias("last_event_time"))
    with_hour = events.withColumn("hour", F.hour("event_time"))
    out = counts
    for column, name in (("device", "device"), ("country", "country"), ("hour", "top_hour")):
        out = out.join(mode_of(with_hour, key, column).withColumnRenamed(column, name), key, "left")
    return out


def item_daily(events: DataFrame) -> DataFrame:
    return events.where(F.col("item_id").isNotNull()).groupBy("event_date", "item_id").agg(*count_columns())


def user_item_daily(events: DataFrame) -> DataFrame:
    return (
        events.where(F.col("item_id").isNotNull())
        .groupBy("event_date", "user_id", "item_id")
        .agg(*count_columns(), F.max("event_time").alias("last_event_time"))
    )


def user_category_daily(events: DataFrame, items: DataFrame) -> DataFrame:
    """Interactions per user and category, each event's item as the catalog stood that day."""
    categories = items.select("item_id", F.col("snapshot_date").alias("event_date"), "category_id").where(
        F.col("category_id").isNotNull()
    )
    return (
        events.where(F.col("event_type").isin(*INTERACTIONS))
        .join(categories, ["item_id", "event_date"])
        .groupBy("event_date", "user_id", "category_id")
        .agg(F.count(F.lit(1)).alias("interactions"))
    )
