"""Audiences: for each campaign live on D+1 (and each item listed in ``[audiences]``), the users
most likely to click, as an ads team uploads them to a channel.

Scoring every user against every campaign grows as users x campaigns. Instead each audience
first takes its candidate users from category affinity: users whose top categories include
one the audience is about (the campaign's targeted categories, else its ads' items'
categories; a listed item's category), who pass the ad's country targeting and frequency cap,
at most ``candidates_per_audience`` of them, strongest affinity first. Only those are scored by
the model, so the cost is audiences x candidates whatever the number of users. A user whose
top categories miss the audience's is never a candidate.

A user's score for a campaign is the pCTR of the campaign's ad that suits them best. Users in
the experiment's holdout are scored without the model: the item's smoothed CTR times their
affinity (1 for their top category, 1/2 for the second, ...), a click probability of the
same scale, so both arms can share one ranking.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recs.frames import first_rows
from recs.score.ads import campaign_key

AUDIENCE = ["audience_type", "audience_id"]


def audience_targets(live_ads: DataFrame, items: DataFrame, item_ids: list[str]) -> DataFrame:
    """One row per ad of each live campaign and per listed item: (audience_type, audience_id,
    ad_id, item_id, categories, countries); an empty ``countries`` means everywhere.

    Listed items missing from the catalog get no row.
    """
    category = items.select("item_id", "category_id")
    campaigns = live_ads.join(category, "item_id", "left").select(
        F.lit("campaign").alias("audience_type"),
        campaign_key().alias("audience_id"),
        "ad_id",
        "item_id",
        F.when(F.size("target_categories") > 0, F.col("target_categories"))
        .otherwise(F.array("category_id"))
        .alias("categories"),
        F.col("target_countries").alias("countries"),
    )
    listed = category.where(F.col("item_id").isin(item_ids)).select(
        F.lit("item").alias("audience_type"),
        F.col("item_id").alias("audience_id"),
        F.lit(None).cast("string").alias("ad_id"),
        "item_id",
        F.array("category_id").alias("categories"),
        F.array().cast("array<string>").alias("countries"),
    )
    return campaigns.unionByName(listed)


def audience_candidates(targets: DataFrame, users: DataFrame, capped: DataFrame, n: int) -> DataFrame:
    """(audience, user_id, ad_id, item_id, affinity) for the ``n`` users of each audience with
    the strongest affinity to its categories (then the most active days, then user_id).

    ``users`` has user_id, country, top_categories and active_days_28d; ``capped`` holds the
    (user_id, ad_id) pairs over their frequency cap.
    """
    by_category = targets.select("*", F.explode("categories").alias("category_id")).drop("categories")
    tastes = users.select(
        "user_id",
        "country",
        F.coalesce("active_days_28d", F.lit(0)).alias("active_days"),
        F.posexplode("top_categories").alias("pos", "category_id"),
    )
    country_ok = (F.size("countries") == 0) | F.array_contains("countries", F.col("country"))
    pairs = (
        tastes.join(F.broadcast(by_category), "category_id")
        .where(F.coalesce(country_ok, F.lit(False)))
        .groupBy(*AUDIENCE, "user_id", "ad_id", "item_id")
        .agg(F.max(1.0 / (F.col("pos") + 1)).alias("affinity"), F.max("active_days").alias("active_days"))
        .join(capped, ["user_id", "ad_id"], "left_anti")  # a null ad_id (item audiences) is never capped
    )
    per_user = pairs.groupBy(*AUDIENCE, "user_id").agg(
        F.max("affinity").alias("affinity"), F.max("active_days").alias("active_days")
    )
    order = [F.col("affinity").desc(), F.col("active_days").desc(), F.col("user_id")]
    chosen = first_rows(per_user, AUDIENCE, order, n).select(*AUDIENCE, "user_id")
    return pairs.join(chosen, [*AUDIENCE, "user_id"]).drop("active_days")


def affinity_scores(candidates: DataFrame, item_features: DataFrame) -> DataFrame:
    """Without the model: the item's smoothed CTR x the user's affinity."""
    ctr = item_features.select("item_id", F.coalesce("ctr_28d", F.lit(0.0)).alias("_ctr"))
    return (
        candidates.join(ctr, "item_id", "left")
        .withColumn("score", F.coalesce("_ctr", F.lit(0.0)) * F.col("affinity"))
        .drop("_ctr")
    )


def top_users(scored: DataFrame, size: int) -> DataFrame:
    """Each audience's ``size`` best users (rank 1..), a user's best ad speaking for them."""
    best = first_rows(scored, [*AUDIENCE, "user_id"], [F.col("score").desc(), F.col("ad_id")])
    return first_rows(best, AUDIENCE, [F.col("score").desc(), F.col("user_id")], size, rank="rank")
