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


def recommendation_figures(
    recs: DataFrame, known_users: DataFrame, previous: DataFrame, catalog: DataFrame, k: int
) -> dict[str, float | None]:
    """Figures of one rec_date's recommendations (all Spark aggregates, a row or two each)."""
    per_user = recs.groupBy("user_id").agg(F.count(F.lit(1)).alias("n"))
    users = per_user.agg(F.count(F.lit(1)).alias("users"), F.count_if(F.col("n") < k).alias("short")).first()
    missing = known_users.select("user_id").join(per_user, "user_id", "left_anti").count()
    slots = recs.groupBy("item_id").agg(F.count(F.lit(1)).alias("slots"))
    everything = Window.partitionBy()
    ranked = slots.withColumn("_r", F.row_number().over(everything.orderBy(F.col("slots").desc(), "item_id")))
    ranked = ranked.withColumn("_top", F.ceil(F.count(F.lit(1)).over(everything) * 0.01))
    share = ranked.agg(
        (F.sum(F.when(F.col("_r") <= F.col("_top"), F.col("slots"))) / F.sum("slots")).alias("top"),
        F.count(F.lit(1)).alias("items"),
    ).first()
    in_stock = catalog.where("in_stock").count()
    overlap = (
        recs.select("user_id", "item_id")
        .join(previous.select("user_id", "item_id", F.lit(1).alias("_was")), ["user_id", "item_id"], "left")
        .join(previous.select("user_id").distinct(), "user_id")
        .groupBy("user_id")
        .agg((F.count("_was") / F.count(F.lit(1))).alias("o"))
        .agg(F.avg("o"))
        .first()[0]
    )
    bad = recs.where(_bad("score")).count()
    return {
        "users_with_rows": float(users.users),  # counted, not checked
        "users_short_of_k": float(users.short),
        "short_user_share": (users.short / users.users) if users.users else None,
        "users_without_rows": float(missing),
        "top1pct_slot_share": None if share.top is None else float(share.top),
        "catalog_coverage": (share["items"] / in_stock) if in_stock else None,
        "overlap_with_previous": None if overlap is None else float(overlap),
        "bad_scores": float(bad),
    }


def ad_figures(ads: DataFrame) -> dict[str, float | None]:
    """Figures of one rec_date's ad candidates: depth per user, campaign concentration, bad pCTRs."""
    per_user = ads.groupBy("user_id").agg(F.count(F.lit(1)).alias("n")).agg(F.avg("n")).first()[0]
    per_campaign = ads.groupBy("campaign_id").agg(F.count(F.lit(1)).alias("n"))
    top = per_campaign.agg((F.max("n") / F.sum("n")).alias("share")).first().share
    bad = ads.where(_bad("pctr") | _bad("ecpm")).count()
    return {
        "ads_per_user": None if per_user is None else float(per_user),
        "campaign_slot_share": None if top is None else float(top),  # the largest campaign's
        "bad_ad_scores": float(bad),
    }


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

    planned = paced.agg(F.sum("ecpm")).first()[0]
    free = unpaced.agg(F.sum("ecpm")).first()[0]
    over = planned_spend(unpaced, budgets).where(~within_budget())
    return {
        "planned_ecpm": float(planned or 0.0),
        "unpaced_ecpm": float(free or 0.0),
        "campaigns_over_budget_unpaced": float(over.count()),
    }
