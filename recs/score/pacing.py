"""Budget pacing: keep each campaign's planned spend for the serving day within its budget.

Ranking every user's ads by eCPM alone lets a popular campaign win far more slots than its
daily budget pays for. A placement (one user's slot for one ad) is expected to spend
``pctr x bid x impressions_per_slot`` (bids are per click). Pacing keeps, for each campaign,
its placements in descending eCPM order while their running spend fits the budget; the
others are dropped, with every placement of the campaign below that cut, and the users'
lists are re-ranked so the freed slots go to their next ads. A re-rank can push another
campaign over, so this repeats up to ``pacing.rounds`` times; what is still over after the
last round is dropped without refilling, so no campaign ends over its budget.

Each round is a top-k per user and one running sum per campaign (a window partitioned by
campaign): it scales with the number of placements, and a campaign's placements share one
task.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recs.config import PacingConfig
from recs.frames import exact_sum, first_rows, top_n
from recs.score.ads import campaign_key

PLACEMENT = ["user_id", "ad_id"]


@dataclass(frozen=True)
class Paced:
    """The paced top-k ads per user and what pacing did to them."""

    ranked: DataFrame  # top-k per user with ``rank`` and ``expected_spend``
    unpaced: DataFrame  # the same ranking without budgets, to report what pacing cost
    budgets: DataFrame  # (campaign, budget)
    rounds: int  # re-ranks it took (0: no campaign was over budget)


def campaign_budgets(ads: DataFrame) -> DataFrame:
    """(campaign, budget) of the campaigns with a budget; the smallest if their ads disagree.

    A null ``daily_budget`` is no limit: such campaigns get no row.
    """
    return (
        ads.where(F.col("daily_budget").isNotNull())
        .groupBy(campaign_key().alias("campaign"))
        .agg(F.min("daily_budget").alias("budget"))
    )


def with_expected_spend(rows: DataFrame, impressions_per_slot: float) -> DataFrame:
    return rows.withColumn("expected_spend", F.col("pctr") * F.col("bid") * F.lit(impressions_per_slot))


def over_budget(ranked: DataFrame, budgets: DataFrame) -> DataFrame:
    """Placements of ``ranked`` whose campaign's running spend, highest eCPM first, passes its budget."""
    w = (
        Window.partitionBy("campaign")
        .orderBy(F.col("ecpm").desc(), *PLACEMENT)
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    return (
        ranked.withColumn("campaign", campaign_key())
        .join(F.broadcast(budgets), "campaign")
        .withColumn("_spent", exact_sum("expected_spend", w))
        .where(F.col("_spent") > F.col("budget"))
        .select(*PLACEMENT, "campaign", "ecpm")
    )


def past_the_cut(scored: DataFrame, over: DataFrame) -> DataFrame:
    """Every placement of ``scored`` that sorts at or after its campaign's first over-budget one.

    Dropping only the over placements lets the campaign's next ads take the freed slots, and
    its budget is passed again in the next round; a full campaign takes no more below its cut.
    """
    cut = first_rows(over, ["campaign"], [F.col("ecpm").desc(), *PLACEMENT]).select(
        "campaign", F.col("ecpm").alias("_ecpm"), F.col("user_id").alias("_user"), F.col("ad_id").alias("_ad")
    )
    after = (F.col("ecpm") < F.col("_ecpm")) | (
        (F.col("ecpm") == F.col("_ecpm"))
        & (
            (F.col("user_id") > F.col("_user"))
            | ((F.col("user_id") == F.col("_user")) & (F.col("ad_id") >= F.col("_ad")))
        )
    )
    return (
        scored.withColumn("campaign", campaign_key())
        .join(F.broadcast(cut), "campaign")
        .where(after)
        .select(*PLACEMENT)
    )


def planned_spend(ranked: DataFrame, budgets: DataFrame) -> DataFrame:
    """(campaign, spend, budget) for each budgeted campaign that won a slot."""
    return (
        ranked.groupBy(campaign_key().alias("campaign"))
        .agg(exact_sum("expected_spend").alias("spend"))
        .join(budgets, "campaign")
    )


def pace(scored: DataFrame, budgets: DataFrame, k: int, p: PacingConfig) -> Paced:
    """The top ``k`` ads per user by ``ecpm`` (``scored`` is every eligible placement with
    pctr, bid and ecpm), within every campaign's budget.

    Each round's frames are checkpointed: a round's plan holds every earlier one, and without
    the cut it doubles with each round. Checkpoint ``scored`` too (it holds the model scoring).
    """
    scored = with_expected_spend(scored, p.impressions_per_slot)

    def top_k(rows: DataFrame) -> DataFrame:
        return top_n(rows, ["user_id"], "ecpm", k, tie="ad_id", rank="rank")

    ranked = unpaced = top_k(scored)
    if not p.enabled:
        return Paced(ranked, unpaced, budgets, 0)
    ranked = unpaced = ranked.localCheckpoint()
    dropped: DataFrame | None = None
    for done in range(p.rounds + 1):
        over = over_budget(ranked, budgets).localCheckpoint()
        if over.isEmpty():
            return Paced(ranked, unpaced, budgets, done)
        if done == p.rounds:
            break
        beyond = past_the_cut(scored, over)
        dropped = (beyond if dropped is None else dropped.unionByName(beyond)).localCheckpoint()
        ranked = top_k(scored.join(dropped, PLACEMENT, "left_anti")).localCheckpoint()
    # Still over after the last re-rank: drop without refilling, then number the ranks again.
    rest = ranked.join(over.select(*PLACEMENT), PLACEMENT, "left_anti").drop("rank")
    return Paced(top_k(rest), unpaced, budgets, p.rounds)
