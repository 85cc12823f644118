"""Budget pacing and audiences on hand-made rows whose answers are worked out by hand."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from recs.config import PacingConfig

SCORED = "user_id string, ad_id string, campaign_id string, pctr double, bid double"


def placements(spark, rows):
    return spark.createDataFrame(rows, SCORED).withColumn("ecpm", F.col("pctr") * F.col("bid"))


def budgets_of(spark, rows):
    from recs.score.pacing import campaign_budgets

    ads = spark.createDataFrame(rows, "ad_id string, campaign_id string, daily_budget double")
    return campaign_budgets(ads)


@pytest.fixture()
def market(spark):
    """One slot per user. Campaign A (budget 0.65) is everyone's first choice at eCPM 0.4, 0.3,
    0.2, 0.1; B (budget 0.1) pays 0.05 a slot; C has no budget and pays 0.01."""
    rows = []
    for user, pctr in zip(["u1", "u2", "u3", "u4"], [0.4, 0.3, 0.2, 0.1], strict=True):
        rows += [(user, "a1", "A", pctr, 1.0), (user, "b1", "B", 0.05, 1.0), (user, "c1", "C", 0.01, 1.0)]
    budgets = budgets_of(spark, [("a1", "A", 0.65), ("b1", "B", 0.1), ("c1", "C", None)])
    return placements(spark, rows), budgets


def lists(df):
    return {(r.user_id, r.rank): r.ad_id for r in df.collect()}


def test_pacing_keeps_each_campaigns_best_placements_within_budget_and_refills_the_slots(market):
    """A keeps u1 (0.4; u2 would make 0.7 > 0.65); u2..u4 fall to B, which affords two slots
    (0.05 + 0.05 = 0.1), so u4 falls to C, which has no budget."""
    from recs.score.pacing import pace

    scored, budgets = market
    paced = pace(scored, budgets, 1, PacingConfig(enabled=True, impressions_per_slot=1.0, rounds=3))

    assert lists(paced.ranked) == {("u1", 1): "a1", ("u2", 1): "b1", ("u3", 1): "b1", ("u4", 1): "c1"}
    assert paced.rounds == 2
    assert lists(paced.unpaced) == {(u, 1): "a1" for u in ("u1", "u2", "u3", "u4")}
    spend = paced.ranked.groupBy("campaign_id").agg(F.sum("expected_spend").alias("s")).collect()
    assert {r.campaign_id: r.s for r in spend} == pytest.approx({"A": 0.4, "B": 0.1, "C": 0.01})


def test_after_the_last_round_over_budget_placements_are_dropped_without_refilling(market):
    from recs.score.pacing import pace

    scored, budgets = market
    paced = pace(scored, budgets, 2, PacingConfig(enabled=True, impressions_per_slot=1.0, rounds=0))

    # Two slots each: unpaced, everyone has a1 then b1. A keeps u1; B keeps u1 and u2 (0.1).
    assert lists(paced.ranked) == {("u1", 1): "a1", ("u1", 2): "b1", ("u2", 1): "b1"}


def test_expected_impressions_per_slot_scale_the_spend_and_disabled_pacing_keeps_the_ecpm_order(market):
    from recs.score.pacing import pace

    scored, budgets = market
    # Two impressions a slot: A's best placement alone costs 0.8 > 0.65, B's one costs exactly 0.1.
    paced = pace(scored, budgets, 1, PacingConfig(enabled=True, impressions_per_slot=2.0, rounds=3))
    got = lists(paced.ranked)
    assert "a1" not in got.values() and sum(a == "b1" for a in got.values()) == 1
    assert lists(pace(scored, budgets, 1, PacingConfig(False, 2.0, 3)).ranked) == {
        (u, 1): "a1" for u in ("u1", "u2", "u3", "u4")
    }


def test_planned_spend_checks_report_each_budgeted_campaign_against_its_budget(spark, market):
    from recs.score.health import pacing_figures, planned_spend_checks
    from recs.score.pacing import pace

    scored, budgets = market
    paced = pace(scored, budgets, 1, PacingConfig(enabled=True, impressions_per_slot=1.0, rounds=3))

    checks = {r.subject: r for r in planned_spend_checks(paced.ranked, budgets).collect()}
    unpaced = {r.subject: r for r in planned_spend_checks(paced.unpaced, budgets).collect()}
    figures = pacing_figures(paced.ranked, paced.unpaced, budgets)

    assert set(checks) == {"A", "B"}  # C has no budget
    assert checks["A"].value == pytest.approx(0.4) and checks["A"].limit == 0.65 and checks["A"].ok
    assert checks["B"].value == pytest.approx(0.1) and checks["B"].ok  # exactly at budget
    assert unpaced["A"].value == pytest.approx(1.0) and not unpaced["A"].ok
    assert figures["planned_ecpm"] == pytest.approx(0.4 + 0.05 + 0.05 + 0.01)
    assert figures["unpaced_ecpm"] == pytest.approx(1.0)
    assert figures["campaigns_over_budget_unpaced"] == 1


def test_audiences_take_candidates_by_affinity_honour_targeting_and_caps_and_keep_each_users_best_ad(spark):
    from recs.score.audiences import affinity_scores, audience_candidates, audience_targets, top_users

    ads = spark.createDataFrame(
        [
            # ad, campaign, item, countries, categories
            ("ad1", "c1", "shoe1", [], []),
            ("ad3", "c1", "shoe2", [], []),
            ("ad2", "c2", "hat1", ["US"], ["bags"]),
        ],
        "ad_id string, campaign_id string, item_id string, "
        "target_countries array<string>, target_categories array<string>",
    )
    items = spark.createDataFrame(
        [("shoe1", "shoes", 0.1), ("shoe2", "shoes", 0.3), ("hat1", "hats", 0.2), ("bag1", "bags", 0.5)],
        "item_id string, category_id string, ctr_28d double",
    )
    users = spark.createDataFrame(
        [
            ("u1", "US", ["shoes", "hats"], 5),
            ("u2", "US", ["hats", "shoes"], 3),
            ("u3", "DE", ["shoes"], 10),
            ("u4", "US", ["bags"], 20),
            ("u5", "US", ["shoes"], 1),
            ("u6", "DE", ["bags"], 30),  # bags, but c2 targets the US only
            ("lapsed", None, None, None),
        ],
        "user_id string, country string, top_categories array<string>, active_days_28d int",
    )
    capped = spark.createDataFrame([("u1", "ad1")], "user_id string, ad_id string")

    targets = audience_targets(ads, items, ["hat1", "not-in-catalog"])
    candidates = audience_candidates(targets, users, capped, n=3)
    got = {(r.audience_id, r.user_id, r.ad_id) for r in candidates.collect()}

    # c1 (shoes): u3, u1, u5 by affinity then active days (u2 ranks shoes second); u1 has ad1 capped.
    want_c1 = {("c1", u, a) for u in ("u3", "u5") for a in ("ad1", "ad3")} | {("c1", "u1", "ad3")}
    # c2 targets bags in the US; the item audience of hat1 takes hats lovers.
    assert got == want_c1 | {("c2", "u4", "ad2"), ("hat1", "u2", None), ("hat1", "u1", None)}

    best = top_users(affinity_scores(candidates, items), size=2)
    rows = {(r.audience_id, r.rank): (r.user_id, r.ad_id, round(r.score, 6)) for r in best.collect()}
    assert rows == {
        ("c1", 1): ("u1", "ad3", 0.3),  # shoe2's CTR 0.3 x affinity 1; ties go to the smaller user_id
        ("c1", 2): ("u3", "ad3", 0.3),
        ("c2", 1): ("u4", "ad2", 0.2),
        ("hat1", 1): ("u2", None, 0.2),
        ("hat1", 2): ("u1", None, 0.1),  # hats are u1's second category: affinity 1/2
    }


def test_a_full_campaign_takes_no_more_slots_below_its_cut(spark):
    """A (budget 0.5) has two ads. Unpaced: u1 a1 0.4, u2 a1 0.3, u3 a2 0.25; A passes its
    budget at u2's 0.3, so every A placement from there down (a2 at 0.25 for u1..u3, a1 at
    0.2 for u3) is out at once, and one re-rank gives u2 and u3 the unbudgeted c1."""
    from recs.score.pacing import pace

    rows = [("u1", "a1", "A", 0.4, 1.0), ("u2", "a1", "A", 0.3, 1.0), ("u3", "a1", "A", 0.2, 1.0)]
    rows += [(u, "a2", "A", 0.25, 1.0) for u in ("u1", "u2", "u3")]
    rows += [(u, "c1", "C", 0.01, 1.0) for u in ("u1", "u2", "u3")]
    budgets = budgets_of(spark, [("a1", "A", 0.5), ("a2", "A", 0.5), ("c1", "C", None)])

    paced = pace(
        placements(spark, rows), budgets, 1, PacingConfig(enabled=True, impressions_per_slot=1.0, rounds=3)
    )

    assert lists(paced.ranked) == {("u1", 1): "a1", ("u2", 1): "c1", ("u3", 1): "c1"}
    assert paced.rounds == 1
