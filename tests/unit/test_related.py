"""Item-to-item lists on hand-made rows: similar items and items bought together."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from recs.config import load_config
from recs.features.spec import load_spec
from recs.hashing import hash_bucket
from recs.score.related import bought_together, similar_items
from tests.conftest import uniform_rows

D = dt.date(2026, 6, 30)


def related(**values):
    return dataclasses.replace(load_config(environ={}).related, **values)


def test_bought_together_counts_user_day_baskets_in_the_window_with_support_and_cap(spark):
    day = dt.timedelta(days=1)
    t = dt.datetime(2026, 6, 1)
    rows = []
    for user, date, basket in [
        ("u1", D, {"a": (2, 0), "c": (1, 1), "b": (1, 0)}),  # capped to its 2 strongest: a, c
        ("u2", D - day, {"a": (1, 0), "b": (0, 1)}),
        ("u3", D - 27 * day, {"a": (1, 0), "b": (1, 0)}),  # the window's first day
        ("u4", D - 28 * day, {"a": (1, 0), "b": (1, 0)}),  # outside the 28 days
        ("u5", D, {"a": (1, 0), "d": (1, 0)}),  # d is out of stock
    ]:
        for item, (purchases, carts) in basket.items():
            rows.append(
                {"user_id": user, "item_id": item, "purchases": purchases, "carts": carts}
                | {"event_date": date, "last_event_time": t}
            )
    rows.append({"user_id": "u6", "item_id": "a", "views": 3, "event_date": D, "last_event_time": t})
    rows.append({"user_id": "u6", "item_id": "b", "views": 3, "event_date": D, "last_event_time": t})
    ui = uniform_rows(spark, "user_item_daily", rows)
    items = spark.createDataFrame(
        [("a", True), ("b", True), ("c", True), ("d", False)], "item_id string, in_stock boolean"
    )
    r = related(bought_together_days=28, bought_together_min_support=2, max_basket_items=2)

    got = sorted(tuple(x) for x in bought_together(ui, items, D, r).collect())

    # a is in 4 baskets (u1, u2, u3, u5), b in 2 (u2, u3 once u1 is capped); a+b in 2.
    assert got == [("a", 1, "b", 2 / 4, 2, "bought_together"), ("b", 1, "a", 2 / 2, 2, "bought_together")]


@pytest.fixture()
def catalog(spark):
    items = spark.createDataFrame(
        [("x1", "c1", True), ("x2", "c1", True), ("x3", "c1", True), ("x4", "c1", False), ("y1", "c2", True)],
        "item_id string, category_id string, in_stock boolean",
    )
    clicks = {"x1": 5, "x2": 3, "x3": 1, "x4": 9, "y1": 2}  # popularity = 2 x clicks_7d here
    features = spark.createDataFrame(
        [(i, c, s, clicks[i], 0, 0, 0) for i, c, s in [tuple(r) for r in items.collect()]],
        "item_id string, category_id string, in_stock boolean, clicks_7d long, views_7d long, "
        "purchases_28d long, clicks_28d long",
    )
    covisit = spark.createDataFrame(
        [("x1", "y1", 4.0), ("x1", "x2", 2.0)], "item_id string, neighbour string, weight double"
    )
    return items, features, covisit


def test_similar_items_blend_covisitation_with_embeddings_in_the_anchors_category(spark, catalog):
    items, features, covisit = catalog
    spec = load_spec()
    f = next(f for f in spec.sparse if f.name == "item_id")
    vec = {"x1": [1.0, 0.0], "x2": [0.0, 1.0], "x3": [1.0, 0.1], "x4": [0.0, 1.0], "y1": [0.0, 1.0]}
    vectors = spark.createDataFrame(
        [(hash_bucket(f.name, i, f.buckets), v) for i, v in vec.items()], "bucket int, vec array<float>"
    )
    r = related(similar_items=2, similar_pool_per_category=10, embedding_weight=0.5)

    got = {
        (x.item_id, x.rank): (x.neighbour_id, round(x.score, 4), x.source)
        for x in similar_items(items, features, covisit, vectors, spec, r).collect()
    }

    cos_x1_x3 = 1 / (1 + 0.01) ** 0.5
    assert got == {
        ("x1", 1): ("y1", 1.0, "covisit"),  # the strongest co-visit, another category
        ("x1", 2): ("x2", 0.5, "covisit"),  # half as often; x3 (0.5 x 0.995) just below
        ("x2", 1): ("x3", round(0.5 * 0.1 * cos_x1_x3, 4), "embedding"),  # x1 is orthogonal
        ("x2", 2): ("x1", 0.0, "embedding"),
        ("x3", 1): ("x1", round(0.5 * cos_x1_x3, 4), "embedding"),
        ("x3", 2): ("x2", round(0.5 * 0.1 * cos_x1_x3, 4), "embedding"),
        ("x4", 1): ("x2", 0.5, "embedding"),  # an out-of-stock anchor still gets neighbours
        ("x4", 2): ("x3", round(0.5 * 0.1 * cos_x1_x3, 4), "embedding"),
    }  # y1 is alone in c2 and co-viewed with nothing: no rows; x4 is never a neighbour


def test_without_a_model_similar_items_fall_back_to_the_categorys_popular_items(spark, catalog):
    items, features, covisit = catalog
    r = related(similar_items=2, similar_pool_per_category=10, embedding_weight=0.5)

    got = sorted(tuple(x) for x in similar_items(items, features, covisit, None, None, r).collect())

    assert [x for x in got if x[0] == "x3"] == [
        ("x3", "x1", 0.5 / 1, "category_popular", 1),  # x1 is the most popular in-stock item of c1
        ("x3", "x2", 0.5 / 2, "category_popular", 2),
    ]
