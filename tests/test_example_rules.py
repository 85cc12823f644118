"""Training-example rules on hand-made rows: request context, impression and ad examples, pool
negatives, user-item signals."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F


def test_context_is_the_request_context_so_it_cannot_give_the_label_away(spark):
    """Positives are logged on product_page, a surface impressions never use.

    If an example took its context from the label event, the surface alone would separate
    positives from negatives (AUC 1); taken from the impression that led to it, it carries
    no label information (AUC about 0.5).
    """
    import random

    from recs.features.examples import label_rows

    day = dt.date(2026, 4, 2)
    rng = random.Random(3)
    events, users = [], []
    for u in range(60):
        user = f"u{u}"
        users.append((user, "mobile", "US", 9))
        for i in range(8):
            item, surface, hour = f"i{i}", rng.choice(["home", "search"]), rng.randrange(24)
            t = dt.datetime(2026, 4, 2, hour, 0)
            events.append((f"{user}-imp-{i}", user, "impression", item, surface, "mobile", "US", t))
            if rng.random() < 0.3:  # clicked through: the view is logged on the product page
                seen = t + dt.timedelta(minutes=1)
                events.append((f"{user}-view-{i}", user, "view", item, "product_page", "mobile", "US", seen))
    day_events = spark.createDataFrame(
        events,
        "event_id string, user_id string, event_type string, item_id string, surface string, "
        "device string, country string, event_time timestamp",
    ).withColumn("ad_id", F.lit(None).cast("string"))
    user_features = spark.createDataFrame(
        users, "user_id string, device string, country string, top_hour int"
    )
    item_features = spark.createDataFrame(
        [(f"i{i}", True, 1, 1, 1) for i in range(8)],
        "item_id string, in_stock boolean, views_28d long, clicks_28d long, impressions_28d long",
    )
    ads = spark.createDataFrame([], "ad_id string, item_id string")

    pool = spark.createDataFrame([], "user_id string, item_id string, candidate_source string, position int")
    rows = label_rows(
        day_events,
        ads,
        item_features,
        user_features,
        pool,
        per_positive=1,
        pool_per_positive=0,
        seed=1,
        date=day,
    ).where(F.col("source").isin("positive", "impression"))
    got = rows.select("label", "context__surface").toPandas()

    assert set(got["context__surface"]) == {"home", "search"}
    share = got.groupby("context__surface")["label"].mean()  # in-sample target encoding
    auc = rank_auc(got["label"].tolist(), got["context__surface"].map(share).tolist())
    assert got["label"].sum() > 100 and abs(auc - 0.5) < 0.06, auc


def test_a_positive_takes_the_impression_before_it_or_else_the_users_usual_context(spark):
    """u1's usual request (features as of D-1): desktop, DE, 20h, scored on home. On D:
    i1 shown on search (mobile, US, 10h) then viewed: the impression's context; i2 viewed with
    no impression: the usual one; i3 viewed at 11h and only shown at 12h: the usual one too."""
    from recs.features.examples import day_pairs, item_positives, request_context

    t = dt.datetime(2026, 4, 2, 10, 0)
    hour = dt.timedelta(hours=1)
    events = [
        ("e1", "u1", "impression", "i1", "search", "mobile", "US", t),
        ("e2", "u1", "view", "i1", "product_page", "mobile", "US", t + dt.timedelta(minutes=1)),
        ("e3", "u1", "view", "i2", "product_page", "mobile", "US", t + 5 * hour),
        ("e4", "u1", "view", "i3", "product_page", "mobile", "US", t + hour),
        ("e5", "u1", "impression", "i3", "search", "mobile", "US", t + 2 * hour),
    ]
    day_events = spark.createDataFrame(
        events,
        "event_id string, user_id string, event_type string, item_id string, surface string, "
        "device string, country string, event_time timestamp",
    )
    usual = request_context(
        spark.createDataFrame(
            [("u1", "desktop", "DE", 20)], "user_id string, device string, country string, top_hour int"
        )
    )
    got = {
        r.item_id: (r.context__surface, r.context__device, r.context__country, r.context__hour)
        for r in item_positives(day_pairs(day_events), usual).collect()
    }
    assert got == {
        "i1": ("search", "mobile", "US", 10),
        "i2": ("home", "desktop", "DE", 20),
        "i3": ("home", "desktop", "DE", 20),
    }


def test_impression_negatives_and_ad_examples_take_the_context_of_their_first_event(spark):
    """u1: i1 shown twice, never touched -> a negative in the first impression's context; i2
    shown then viewed -> a positive, not a negative. u2: i3 shown twice in the same second,
    on different surfaces: the smaller event_id is first. Ads: a1 shown then clicked -> label 1
    in the impression's context; a2 only shown -> label 0; each carries its promoted item."""
    from recs.features.examples import ad_examples, day_pairs, impression_negatives

    t = dt.datetime(2026, 4, 2, 10, 0)
    minute = dt.timedelta(minutes=1)
    events = [
        ("e1", "u1", "impression", "i1", None, "search", "mobile", "US", t),
        ("e2", "u1", "impression", "i1", None, "home", "desktop", "US", t + 120 * minute),
        ("e3", "u1", "impression", "i2", None, "home", "mobile", "US", t - 60 * minute),
        ("e4", "u1", "view", "i2", None, "product_page", "mobile", "US", t - 55 * minute),
        ("e9", "u2", "impression", "i3", None, "search", "tablet", "FR", t + 60 * minute),
        ("e0", "u2", "impression", "i3", None, "home", "tablet", "FR", t + 60 * minute),
        ("e5", "u1", "ad_impression", "i9", "a1", "search", "tablet", "FR", t - 120 * minute),
        ("e6", "u1", "ad_click", "i9", "a1", "home", "mobile", "FR", t - 119 * minute),
        ("e7", "u1", "ad_impression", "i8", "a2", "home", "desktop", "DE", t + 180 * minute),
    ]
    day_events = spark.createDataFrame(
        events,
        "event_id string, user_id string, event_type string, item_id string, ad_id string, "
        "surface string, device string, country string, event_time timestamp",
    )
    ads = spark.createDataFrame([("a1", "i9"), ("a2", "i8")], "ad_id string, item_id string")

    def context(r):
        return (r.context__surface, r.context__device, r.context__country, r.context__hour)

    negatives = {
        (r.user_id, r.item_id): context(r) for r in impression_negatives(day_pairs(day_events)).collect()
    }
    assert negatives == {
        ("u1", "i1"): ("search", "mobile", "US", 10),
        ("u2", "i3"): ("home", "tablet", "FR", 11),
    }
    got = {
        (r.user_id, r.ad_id): (r.item_id, r.label, *context(r))
        for r in ad_examples(day_events, ads).collect()
    }
    assert got == {
        ("u1", "a1"): ("i9", 1.0, "search", "tablet", "FR", 8),
        ("u1", "a2"): ("i8", 0.0, "home", "desktop", "DE", 13),
    }


def test_pool_negatives_come_from_the_users_own_pool_and_rows_carry_its_position(spark):
    """Hand-made pool as of D-1: u1 has five candidates and touches two of them on D."""
    from recs.features.examples import label_rows

    day = dt.date(2026, 4, 2)
    t = dt.datetime(2026, 4, 2, 10, 0)
    events = [
        ("e1", "u1", "view", "p1", t),  # in u1's pool at position 1
        ("e2", "u1", "impression", "p2", t),  # touched (shown), so never a negative of either kind
        ("e3", "u1", "view", "x9", t),  # a positive outside the pool
        ("e4", "u2", "view", "p1", t),  # u2 has no pool: no pool negatives
    ]
    day_events = (
        spark.createDataFrame(
            events, "event_id string, user_id string, event_type string, item_id string, event_time timestamp"
        )
        .withColumns({c: F.lit("x") for c in ("surface", "device", "country")})
        .withColumn("ad_id", F.lit(None).cast("string"))
    )
    pool = spark.createDataFrame(
        [("u1", f"p{i}", "recent" if i < 3 else "global_popular", i) for i in range(1, 6)],
        "user_id string, item_id string, candidate_source string, position int",
    )
    users = spark.createDataFrame(
        [("u1", "mobile", "US", 9), ("u2", "mobile", "US", 9)],
        "user_id string, device string, country string, top_hour int",
    )
    items = spark.createDataFrame(
        [(f"p{i}", True, 1, 1, 1) for i in range(1, 6)] + [("x9", True, 1, 1, 1)],
        "item_id string, in_stock boolean, views_28d long, clicks_28d long, impressions_28d long",
    )
    ads = spark.createDataFrame([], "ad_id string, item_id string")

    def rows(per_positive):
        out = label_rows(
            day_events,
            ads,
            items,
            users,
            pool,
            per_positive=1,
            pool_per_positive=per_positive,
            seed=3,
            date=day,
        )
        return {
            (r.user_id, r.item_id, r.source): (r.context__candidate_source, r.context__pool_position)
            for r in out.collect()
        }

    two = rows(1)  # u1 has 2 positives (p1, x9): 2 pool negatives from {p3, p4, p5}
    pooled = {(u, i) for u, i, s in two if s == "pool"}
    assert len(pooled) == 2 and {i for _, i in pooled} <= {"p3", "p4", "p5"}
    assert two[("u1", "p1", "positive")] == ("recent", 1)
    assert two[("u1", "x9", "positive")] == (None, None)
    assert two[("u2", "p1", "positive")] == (None, None)  # p1 is in u1's pool, not u2's
    for u, i in pooled:
        assert two[(u, i, "pool")] == ("global_popular", int(i[1]))
    everything = rows(10)
    assert {i for u, i, s in everything if s == "pool"} == {"p3", "p4", "p5"}
    assert not any(s == "pool" for _, _, s in rows(0))
    assert rows(1) == two  # the same draw on a rerun


def test_user_item_signals_count_the_window_and_time_the_last_touch(spark):
    """As of 2026-04-10: u touched i1 on 04-09 at 18:00 (a cart) and on 03-01 (outside the
    28 days); i2 was only shown to u (an impression day: no interaction); i3 is in a category
    u last touched on 04-05.
    """
    from recs.features.windows import user_item_signals

    as_of = dt.date(2026, 4, 10)

    def day(d, item, views, clicks, carts, purchases, t):
        return (
            "u",
            item,
            views,
            clicks,
            carts,
            purchases,
            dt.datetime.fromisoformat(t),
            dt.date.fromisoformat(d),
        )

    ui = spark.createDataFrame(
        [
            day("2026-04-09", "i1", 1, 1, 1, 0, "2026-04-09 18:00:00"),
            day("2026-04-02", "i1", 2, 0, 0, 0, "2026-04-02 09:00:00"),
            day("2026-03-01", "i1", 5, 5, 5, 0, "2026-03-01 09:00:00"),
            day("2026-04-10", "i2", 0, 0, 0, 0, "2026-04-10 23:00:00"),
        ],
        "user_id string, item_id string, views long, clicks long, carts long, purchases long, "
        "last_event_time timestamp, event_date date",
    )
    uc = spark.createDataFrame(
        [("u", "c1", 4, dt.date(2026, 4, 9)), ("u", "c2", 1, dt.date(2026, 4, 5))],
        "user_id string, category_id string, interactions long, event_date date",
    )
    items = spark.createDataFrame(
        [("i1", "c1", "b1"), ("i2", "c1", "b1"), ("i3", "c2", "b2")],
        "item_id string, category_id string, brand string",
    )
    pairs = spark.createDataFrame([("u", "i1"), ("u", "i2"), ("u", "i3")], "user_id string, item_id string")
    got = {r.item_id: r for r in user_item_signals(pairs, ui, uc, items, as_of).collect()}

    assert (got["i1"].views_28d, got["i1"].clicks_28d, got["i1"].carts_28d) == (3, 1, 1)
    assert got["i1"].days_since_view == 1
    assert got["i1"].hours_since_touch == pytest.approx(30.0)  # 04-09 18:00 to the end of 04-10
    assert got["i2"].hours_since_touch is None and got["i2"].days_since_view is None
    assert got["i1"].days_since_category == 1 and got["i3"].days_since_category == 5
    assert got["i3"].views_28d == 0 and got["i3"].carts_28d == 0


def rank_auc(labels: list[float], scores: list[float]) -> float:
    """Mann-Whitney AUC with ties counted half: the textbook definition, written out."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))
