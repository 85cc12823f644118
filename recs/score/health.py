"""Output health: the checks a serving team looks at before a night's lists go live.

Each check is a figure of the written rows of one ``rec_date`` against a configured limit
(``[health]``); a broken limit marks the night ``unhealthy``. The rows stay written (a Delta
version of their own), and ``recs restore`` puts back the previous version if they must not
be served.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recs.config import HealthConfig
from recs.frames import exact_mean, exact_sum, one_row


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    limit: float
    kind: str  # "max": value must not exceed limit; "min": value must reach it

    @property
    def ok(self) -> bool:
        if self.value is None:  # nothing to judge (e.g. no previous day to overlap with)
            return True
        return self.value <= self.limit if self.kind == "max" else self.value >= self.limit


def _bad(c: str) -> F.Column:
    return F.col(c).isNull() | F.isnan(c) | (F.col(c) < 0)


def recommendation_aggregates(
    recs: DataFrame, known_users: DataFrame, previous: DataFrame, catalog: DataFrame, k: int
) -> list[DataFrame]:
    """The one-row aggregates ``recommendation_values`` reads: each user's rows, overlap with
    their previous list and bad scores from one pass over ``recs``, the item slots from another."""
    before = previous.select("user_id", "item_id").distinct()
    had = before.select("user_id").distinct().withColumn("_had", F.lit(True))
    per_user = (
        recs.select("user_id", "item_id", "score")
        .join(before.withColumn("_was", F.lit(1)), ["user_id", "item_id"], "left")
        .groupBy("user_id")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.count("_was").alias("was"),
            F.count_if(_bad("score")).alias("bad"),
        )
        .join(had, "user_id", "left")
    )
    users = per_user.agg(
        F.count(F.lit(1)).alias("users"),
        F.count_if(F.col("n") < k).alias("short"),
        exact_mean(F.when(F.col("_had"), F.col("was") / F.col("n"))).alias("overlap"),
        F.sum("bad").alias("bad"),
    )
    missing = (
        known_users.select("user_id")
        .join(per_user, "user_id", "left_anti")
        .agg(F.count(F.lit(1)).alias("missing"))
    )
    slots = recs.groupBy("item_id").agg(F.count(F.lit(1)).alias("slots"))
    everything = Window.partitionBy()
    ranked = slots.withColumn("_r", F.row_number().over(everything.orderBy(F.col("slots").desc(), "item_id")))
    ranked = ranked.withColumn("_top", F.ceil(F.count(F.lit(1)).over(everything) * 0.01))
    share = ranked.agg(
        (F.sum(F.when(F.col("_r") <= F.col("_top"), F.col("slots"))) / F.sum("slots")).alias("top"),
        F.count(F.lit(1)).alias("items"),
    )
    in_stock = catalog.agg(F.count_if(F.col("in_stock")).alias("in_stock"))
    return [users, missing, share, in_stock]


def recommendation_values(f: dict) -> dict[str, float | None]:
    return {
        "users_with_rows": float(f["users"]),  # counted, not checked
        "users_short_of_k": float(f["short"]),
        "short_user_share": (f["short"] / f["users"]) if f["users"] else None,
        "users_without_rows": float(f["missing"]),
        "top1pct_slot_share": None if f["top"] is None else float(f["top"]),
        "catalog_coverage": (f["items"] / f["in_stock"]) if f["in_stock"] else None,
        "overlap_with_previous": None if f["overlap"] is None else float(f["overlap"]),
        "bad_scores": float(f["bad"] or 0),
    }


def ad_aggregates(ads: DataFrame) -> list[DataFrame]:
    """The one-row aggregates ``ad_values`` reads."""
    per_user = ads.groupBy("user_id").agg(F.count(F.lit(1)).alias("n")).agg(F.avg("n").alias("per_user"))
    per_campaign = ads.groupBy("campaign_id").agg(F.count(F.lit(1)).alias("n"))
    top = per_campaign.agg((F.max("n") / F.sum("n")).alias("share"))
    bad = ads.agg(F.count_if(_bad("pctr") | _bad("ecpm")).alias("bad_ads"))
    return [per_user, top, bad]


def ad_values(f: dict) -> dict[str, float | None]:
    return {
        "ads_per_user": None if f["per_user"] is None else float(f["per_user"]),
        "campaign_slot_share": None if f["share"] is None else float(f["share"]),  # the largest campaign's
        "bad_ad_scores": float(f["bad_ads"]),
    }


def recommendation_figures(
    recs: DataFrame, known_users: DataFrame, previous: DataFrame, catalog: DataFrame, k: int
) -> dict[str, float | None]:
    """Figures of one rec_date's recommendations (all Spark aggregates, one row back)."""
    return recommendation_values(one_row(*recommendation_aggregates(recs, known_users, previous, catalog, k)))


def ad_figures(ads: DataFrame) -> dict[str, float | None]:
    """Figures of one rec_date's ad candidates: depth per user, campaign concentration, bad pCTRs."""
    return ad_values(one_row(*ad_aggregates(ads)))


def output_figures(
    recs: DataFrame, known_users: DataFrame, previous: DataFrame, catalog: DataFrame, k: int, ads: DataFrame
) -> dict[str, float | None]:
    """``recommendation_figures`` and ``ad_figures`` of one rec_date, from one query."""
    f = one_row(*recommendation_aggregates(recs, known_users, previous, catalog, k), *ad_aggregates(ads))
    return recommendation_values(f) | ad_values(f)


def checks(figures: dict[str, float | None], limits: HealthConfig) -> list[Check]:
    """Each figure against its limit (``[health]`` names the limit after the figure)."""
    out = []
    for name, value in figures.items():
        for kind in ("max", "min"):
            limit = getattr(limits, f"{kind}_{name}", None)
            if limit is not None:
                out.append(Check(name, value, float(limit), kind))
    return out


# A campaign's spend summed in another order than pacing's running sum can differ in the
# last bits; a budget met exactly must not read as broken.
SPEND_TOLERANCE = 1e-9


def within_budget() -> F.Column:
    return F.col("spend") <= F.col("budget") * (1 + SPEND_TOLERANCE)


def planned_spend_checks(ads: DataFrame, budgets: DataFrame) -> DataFrame:
    """One ``planned_spend`` check per budgeted campaign with slots: its planned spend for the
    serving day (``expected_spend`` summed) against its daily budget; ``subject`` names it."""
    from recs.score.pacing import planned_spend

    spend = planned_spend(ads, budgets)
    return spend.select(
        F.lit("planned_spend").alias("check"),
        F.col("campaign").alias("subject"),
        F.col("spend").alias("value"),
        F.col("budget").alias("limit"),
        F.lit("max").alias("kind"),
        within_budget().alias("ok"),
    )


def pacing_figures(paced: DataFrame, unpaced: DataFrame, budgets: DataFrame) -> dict[str, float | None]:
    """What pacing cost: planned eCPM against the unpaced ranking's, and the campaigns it held back."""
    from recs.score.pacing import planned_spend

    f = one_row(
        paced.agg(exact_sum("ecpm").alias("planned")),
        unpaced.agg(exact_sum("ecpm").alias("free")),
        planned_spend(unpaced, budgets).agg(F.count_if(~within_budget()).alias("over")),
    )
    return {
        "planned_ecpm": float(f["planned"] or 0.0),
        "unpaced_ecpm": float(f["free"] or 0.0),
        "campaigns_over_budget_unpaced": float(f["over"]),
    }
