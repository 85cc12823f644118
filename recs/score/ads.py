"""Ad candidates: eligibility (dates, status, targeting, budget, frequency cap), then eCPM.

Ad candidates with ``rec_date = D`` are served on D+1, so they are judged for D+1: the
campaign's start and end dates must cover D+1, its status is taken from D's inventory
snapshot (the latest one known), and its budget is D+1's, a new day's ``daily_budget``
(D's ``spend_today`` is spent on D and says nothing about D+1). The frequency cap counts
the user's impressions of each ad over the 7 days ending on D, the last days before serving.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

FREQUENCY_DAYS = 7


def serving_date(rec_date: dt.date) -> dt.date:
    """Outputs of ``rec_date`` D are shown on D+1."""
    return rec_date + dt.timedelta(days=1)


def campaign_key() -> F.Column:
    """An ad without a campaign counts as a campaign of its own (for budgets and audiences)."""
    return F.coalesce("campaign_id", "ad_id")


def live_ads(ads: DataFrame, serve_on: dt.date) -> DataFrame:
    """Ads that may serve on ``serve_on``: active status, inside their dates, a budget for the day.

    ``ads`` is the latest snapshot before ``serve_on``; a null budget means no limit.
    """
    d = F.lit(serve_on)
    return ads.where(
        (F.col("status") == "active")
        & (F.col("start_date").isNull() | (F.col("start_date") <= d))
        & (F.col("end_date").isNull() | (F.col("end_date") >= d))
        & (F.coalesce("daily_budget", F.lit(float("inf"))) > 0)
        & (F.col("bid") > 0)
    )


def frequency_capped(events: DataFrame, date: dt.date, cap: int) -> DataFrame:
    """(user_id, ad_id) pairs already shown ``cap`` or more times in the last 7 days."""
    start = date - dt.timedelta(days=FREQUENCY_DAYS - 1)
    return (
        events.where(F.col("event_date").between(F.lit(start), F.lit(date)))
        .where((F.col("event_type") == "ad_impression") & F.col("ad_id").isNotNull())
        .groupBy("user_id", "ad_id")
        .agg(F.count(F.lit(1)).alias("shown"))
        .where(F.col("shown") >= cap)
        .select("user_id", "ad_id")
    )


def eligible_pairs(users: DataFrame, ads: DataFrame, capped: DataFrame) -> DataFrame:
    """(user, ad) pairs whose targeting matches the user's country and category interests.

    ``users`` has user_id, country and top_categories; an empty target list means everyone.
    """
    country_ok = (F.size("target_countries") == 0) | F.array_contains("target_countries", F.col("country"))
    category_ok = (F.size("target_categories") == 0) | F.arrays_overlap("target_categories", "top_categories")
    return (
        users.select("user_id", "country", "top_categories")
        .crossJoin(
            F.broadcast(
                ads.select("ad_id", "campaign_id", "item_id", "bid", "target_countries", "target_categories")
            )
        )
        .where(country_ok & F.coalesce(category_ok, F.lit(False)))
        .join(capped, ["user_id", "ad_id"], "left_anti")
        .select("user_id", "ad_id", "campaign_id", "item_id", "bid")
    )
