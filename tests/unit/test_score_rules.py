"""Scoring rules on hand-made rows: ad eligibility, the bought window, window sums, health, co-visitation."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from tests.conftest import uniform_rows


def test_ad_eligibility_is_judged_for_the_serving_day(spark):
    """Rows for rec_date D are served on D+1: dates and budget are D+1's, status is D's snapshot."""
    from recs.score.ads import eligible_pairs, frequency_capped, live_ads, serving_date

    d = dt.date(2026, 3, 10)
    day = dt.timedelta(days=1)
    ads = spark.createDataFrame(
        [
            # ad, status, start, end, budget, spent on D, bid, countries, categories
            ("ends_on_d", "active", None, d, 10.0, 0.0, 1.0, [], []),
            ("starts_d_plus_1", "active", d + day, None, 10.0, 0.0, 1.0, [], []),
            ("spent_out_on_d", "active", d - day, d + day, 10.0, 10.0, 1.0, [], []),
            ("paused", "paused", None, None, 10.0, 0.0, 1.0, [], []),
            ("no_budget", "active", None, None, 0.0, 0.0, 1.0, [], []),
            ("unlimited", "active", None, None, None, None, 1.0, [], []),
            ("free", "active", None, None, 10.0, 0.0, 0.0, [], []),
            ("germany", "active", None, None, 10.0, 0.0, 1.0, ["DE"], []),
            ("shoes", "active", None, None, 10.0, 0.0, 1.0, [], ["shoes"]),
            ("starts_d_plus_2", "active", d + 2 * day, None, 10.0, 0.0, 1.0, [], []),
        ],
        "ad_id string, status string, start_date date, end_date date, daily_budget double, "
        "spend_today double, bid double, target_countries array<string>, target_categories array<string>",
    ).withColumns({"campaign_id": F.col("ad_id"), "item_id": F.lit("i1")})
    users = spark.createDataFrame(
        [("us", "US", ["shoes"]), ("de", "DE", ["hats"]), ("lapsed", None, None)],
        "user_id string, country string, top_categories array<string>",
    )
    # "us" saw starts_d_plus_1 three times in the 7 days ending D (capped); "de" twice, once 7 days ago.
    events = spark.createDataFrame(
        [("us", "starts_d_plus_1", d - dt.timedelta(days=k)) for k in (0, 3, 6)]
        + [("de", "starts_d_plus_1", d - dt.timedelta(days=k)) for k in (1, 7)],
        "user_id string, ad_id string, event_date date",
    ).withColumn("event_type", F.lit("ad_impression"))

    pairs = eligible_pairs(users, live_ads(ads, serving_date(d)), frequency_capped(events, d, 3))

    got = sorted((r.user_id, r.ad_id) for r in pairs.collect())
    everyone = ["spent_out_on_d", "unlimited"]
    want = sorted(
        [("us", a) for a in [*everyone, "shoes"]]
        + [("de", a) for a in [*everyone, "starts_d_plus_1", "germany"]]
        + [("lapsed", a) for a in [*everyone, "starts_d_plus_1"]]
    )
    assert got == want


def test_window_sums_at_the_edges_of_the_1_7_and_28_day_windows(spark):
    from recs.features.windows import window_sums

    as_of = dt.date(2026, 3, 31)
    ages = {0: 1, 6: 2, 7: 4, 27: 8, 28: 16, 30: 32}  # 31 days of data; views are powers of two
    daily = uniform_rows(
        spark,
        "user_daily",
        [{"user_id": "u", "views": v, "event_date": as_of - dt.timedelta(days=a)} for a, v in ages.items()],
    )

    got = window_sums(daily, ["user_id"], as_of).first()

    assert (got.views_1d, got.views_7d, got.views_28d) == (1, 1 + 2, 1 + 2 + 4 + 8)


def test_known_users_are_everyone_seen_within_retention_with_first_and_last_seen(spark):
    """Retention 365 days as of D: an event at age 364 counts, age 365 does not, a later day
    never does; first/last seen are taken within the retention window."""
    from recs.features.windows import known_users

    d = dt.date(2026, 6, 30)
    ago = lambda n: d - dt.timedelta(days=n)  # noqa: E731
    user_daily = spark.createDataFrame(
        [
            ("lapsed-long", ago(400)),
            ("lapsed-long", ago(10)),
            ("edge-in", ago(364)),
            ("edge-out", ago(365)),
            ("future-only", d + dt.timedelta(days=1)),
            ("today", d),
            ("today", ago(3)),
        ],
        "user_id string, event_date date",
    )
    got = {
        r.user_id: (r.first_seen_date, r.last_seen_date) for r in known_users(user_daily, d, 365).collect()
    }
    assert got == {
        "lapsed-long": (ago(10), ago(10)),
        "edge-in": (ago(364), ago(364)),
        "today": (ago(3), d),
    }


def test_output_health_figures_on_hand_made_rows(spark):
    from recs.config import load_config
    from recs.score.health import ad_figures, checks, recommendation_figures

    recs = spark.createDataFrame(
        [("a", "x", 0.9), ("a", "y", 0.5), ("a", "z", 0.1), ("b", "x", 0.8), ("b", "w", float("nan"))],
        "user_id string, item_id string, score double",
    )
    known = spark.createDataFrame([("a",), ("b",), ("c",)], "user_id string")
    previous = spark.createDataFrame([("a", "x"), ("a", "y"), ("a", "q")], "user_id string, item_id string")
    catalog = spark.createDataFrame(
        [(i, i != "gone") for i in ("x", "y", "z", "w", "p", "q", "r", "s", "gone")],
        "item_id string, in_stock boolean",
    )
    ads = spark.createDataFrame(
        [("a", "k1", 0.1, 0.2), ("a", "k2", 0.2, 0.1), ("b", "k1", 0.3, 0.3)],
        "user_id string, campaign_id string, pctr double, ecpm double",
    )

    figures = recommendation_figures(recs, known, previous, catalog, k=3) | ad_figures(ads)

    assert figures["short_user_share"] == pytest.approx(1 / 2)  # b has 2 of 3
    assert figures["users_without_rows"] == 1  # c
    assert figures["top1pct_slot_share"] == pytest.approx(2 / 5)  # x: 2 of 5 slots (top 1% of 4 items = 1)
    assert figures["catalog_coverage"] == pytest.approx(4 / 8)
    assert figures["overlap_with_previous"] == pytest.approx(2 / 3)  # only a has a previous list
    assert figures["bad_scores"] == 1
    assert figures["ads_per_user"] == pytest.approx(1.5)
    assert figures["campaign_slot_share"] == pytest.approx(2 / 3)
    assert figures["bad_ad_scores"] == 0
    verdict = {c.name: c.ok for c in checks(figures, load_config(environ={}).health)}
    assert verdict == {
        "short_user_share": False,
        "users_without_rows": False,
        "top1pct_slot_share": True,
        "catalog_coverage": True,
        "overlap_with_previous": True,
        "bad_scores": False,
        "campaign_slot_share": True,
        "bad_ad_scores": True,
    }


def test_covisitation_cuts_sessions_from_a_users_history_when_the_logs_have_none(spark):
    """u1 logs no sessions: 10:00 i1, 10:20 i2, then 11:00 i3 (40 minutes later, a new
    session). u2 logs a session that spans two hours: one session all the same.
    """
    from recs.score.candidates import covisitation

    def at(h, m):
        return dt.datetime(2026, 5, 1, h, m)

    events = spark.createDataFrame(
        [
            ("e1", "u1", None, "view", "i1", at(10, 0)),
            ("e2", "u1", None, "view", "i2", at(10, 20)),
            ("e3", "u1", None, "purchase", "i3", at(11, 0)),
            ("e4", "u2", "s9", "view", "i4", at(8, 0)),
            ("e5", "u2", "s9", "view", "i5", at(10, 0)),
            ("e6", "u2", "s9", "impression", "i6", at(10, 1)),  # not an interaction
        ],
        "event_id string, user_id string, session_id string, event_type string, item_id string, "
        "event_time timestamp",
    )
    pairs = {(r.item_id, r.neighbour) for r in covisitation(events, 30, 10).collect()}
    assert pairs == {("i1", "i2"), ("i2", "i1"), ("i4", "i5"), ("i5", "i4")}


def test_the_bought_filter_spans_exactly_its_window(spark):
    """bought_window_days = 30: bought on D and on D-29 is filtered, bought on D-30 is not;
    a cart alone is not a purchase."""
    from recs.score.candidates import bought_items

    d = dt.date(2026, 3, 31)
    t = dt.datetime(2026, 3, 1, 12)
    rows = [
        {"user_id": "u", "item_id": f"age{age}", "purchases": 1, "event_date": d - dt.timedelta(days=age)}
        for age in (0, 29, 30)
    ] + [{"user_id": "u", "item_id": "carted", "carts": 1, "event_date": d}]
    ui = uniform_rows(spark, "user_item_daily", [r | {"last_event_time": t} for r in rows])

    got = sorted(r.item_id for r in bought_items(ui, d, 30).collect())

    assert got == ["age0", "age29"]
