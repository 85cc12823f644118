"""Offline evaluation metrics against a direct computation on a tiny hand-made case."""

from __future__ import annotations

import math

import pytest
from pyspark.sql import functions as F

from recs.evaluate import baseline_lists, coverage, pool_recall, ranking_metrics
from recs.score import pool_positions

RECS = {"a": ["x", "y", "z"], "b": ["p", "q", "r"], "d": ["x", "p", "q"]}  # d did nothing on D
RELEVANT = {"a": {"y", "w"}, "b": {"r"}, "c": {"x"}}  # c had no recommendations


def direct(k: int, recs: dict[str, list[str]] = RECS) -> dict[str, float]:
    """The textbook definitions, one user at a time."""
    users = sorted(set(recs) & set(RELEVANT))
    recall, ndcg, hit, rr = [], [], [], []
    for u in users:
        ranked, rel = recs[u], RELEVANT[u]
        gains = [1.0 if item in rel else 0.0 for item in ranked]
        recall.append(sum(gains[:k]) / len(rel))
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))
        ideal = sum(1 / math.log2(i + 2) for i in range(min(len(rel), k)))
        ndcg.append(dcg / ideal)
        hit.append(1.0 if any(gains[:k]) else 0.0)
        first = next((i + 1 for i, g in enumerate(gains) if g), None)
        rr.append(1 / first if first else 0.0)
    n = len(users)
    return {"recall": sum(recall) / n, "ndcg": sum(ndcg) / n, "hit_rate": sum(hit) / n, "mrr": sum(rr) / n}


def test_ranking_metrics_equal_the_textbook_definitions(spark):
    recs = spark.createDataFrame(
        [(u, item, rank) for u, items in RECS.items() for rank, item in enumerate(items, 1)],
        "user_id string, item_id string, rank int",
    )
    relevant = spark.createDataFrame(
        [(u, item) for u, items in RELEVANT.items() for item in items], "user_id string, item_id string"
    )
    got = ranking_metrics(recs, relevant, [2, 3])
    assert got[("users_evaluated", None)] == 2
    for k in (2, 3):
        want = direct(k)
        for metric in ("recall", "ndcg", "hit_rate"):
            assert got[(metric, k)] == pytest.approx(want[metric]), (metric, k)
        assert got[("mrr", 3)] == pytest.approx(want["mrr"])
    # Spelled out for k = 2: user a hits y at rank 2 of 2 relevant, user b misses.
    assert got[("recall", 2)] == pytest.approx(0.25)
    assert got[("ndcg", 2)] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)) / 2)
    assert got[("mrr", 3)] == pytest.approx((1 / 2 + 1 / 3) / 2)
    # MRR stops at the largest k: b's first hit at rank 3 is outside a top 2.
    assert ranking_metrics(recs, relevant, [2])[("mrr", 2)] == pytest.approx((1 / 2 + 0) / 2)


def test_each_arm_and_system_of_one_keyed_query_equals_the_textbook_on_its_own_users(spark):
    """Evaluation computes every (arm, system) cell of a night in one query; each cell must
    give what the textbook gives on that cell's lists alone, and a cell without users reads
    as no one evaluated (NaN metrics, zero coverage)."""
    from recs.evaluate import (
        coverage_aggregate,
        coverage_values,
        pool_recall_aggregate,
        ranking_aggregate,
        ranking_values,
    )

    systems = {"served": RECS, "reversed": {u: items[::-1] for u, items in RECS.items()}}
    arms = {"all": {"a", "b", "d"}, "one": {"a"}, "empty": set()}
    lists = spark.createDataFrame(
        [
            (arm, name, u, item, rank)
            for arm, users in arms.items()
            for name, recs in systems.items()
            for u, items in recs.items()
            if u in users
            for rank, item in enumerate(items, 1)
        ],
        "arm string, system string, user_id string, item_id string, rank int",
    )
    relevant = spark.createDataFrame(
        [(u, item) for u, items in RELEVANT.items() for item in items], "user_id string, item_id string"
    )
    arm, system = F.col("arm"), F.col("system")
    cells = {f"{a}/{s}/": (arm == a) & (system == s) for a in arms for s in systems}
    ranking = ranking_aggregate(lists, relevant, [2, 3], ["arm", "system"], cells).first().asDict()
    covered = coverage_aggregate(lists, [2, 3], ["arm", "system"], cells).first().asDict()
    for a, users in arms.items():
        for s, recs in systems.items():
            own = {u: items for u, items in recs.items() if u in users}
            prefix = f"{a}/{s}/"
            cell = {c[len(prefix) :]: v for c, v in (ranking | covered).items() if c.startswith(prefix)}
            got = ranking_values(cell, [2, 3]) | coverage_values(cell, 7, [2, 3])
            assert got[("users_evaluated", None)] == len(set(own) & set(RELEVANT)), prefix
            for k in (2, 3):
                in_top = {item for items in own.values() for item in items[:k]}
                assert got[("coverage", k)] == pytest.approx(len(in_top) / 7), (prefix, k)
                if not set(own) & set(RELEVANT):
                    assert math.isnan(got[("recall", k)]) and math.isnan(got[("mrr", 3)]), prefix
                    continue
                want = direct(k, own)
                for metric in ("recall", "ndcg", "hit_rate"):
                    assert got[(metric, k)] == pytest.approx(want[metric]), (prefix, metric, k)
                assert got[("mrr", 3)] == pytest.approx(direct(3, own)["mrr"]), prefix

    # The pool's recall per arm: a (1 of 2 relevant proposed) and b (1 of 1); d did nothing.
    pool = spark.createDataFrame(
        [(u, item) for u, items in RECS.items() for item in items], "user_id string, item_id string"
    )
    users = spark.createDataFrame(
        [(u, a) for a, members in arms.items() for u in members], "user_id string, arm string"
    )
    per_arm = {f"{a}/": arm == a for a in arms}
    recall = pool_recall_aggregate(pool, relevant, users, ["arm"], per_arm).first().asDict()
    assert recall["all/pool_recall"] == pytest.approx((1 / 2 + 1) / 2)
    assert recall["one/pool_recall"] == pytest.approx(1 / 2)
    assert recall["empty/pool_recall"] is None


def test_ranking_metrics_do_not_depend_on_how_the_rows_are_laid_out(spark):
    """A rerun reads the same rows in other files and partitions: the figures must not move,
    not even in the last bit (eval_metrics of a rerun is compared row for row)."""
    import random
    from fractions import Fraction

    rng = random.Random(3)
    rows = [(f"u{u}", f"i{rng.randrange(300)}", rank) for u in range(1500) for rank in range(1, 21)]
    picks = [(u, rng.randrange(1, 9)) for u in range(1500)]
    rel = sorted({(f"u{u}", f"i{rng.randrange(300)}") for u, n in picks for _ in range(n)})
    recs = spark.createDataFrame(rows, "user_id string, item_id string, rank int")
    relevant = spark.createDataFrame(rel, "user_id string, item_id string")
    layouts = [
        (recs.coalesce(1), relevant.coalesce(1)),
        (recs.repartition(7), relevant.repartition(3)),
        (recs.orderBy(F.rand(5)).repartition(5, "rank"), relevant.orderBy(F.rand(2))),
    ]
    results = [ranking_metrics(r, v, [5, 20]) for r, v in layouts]
    assert results[1] == results[0] and results[2] == results[0]

    # MRR against exact rational arithmetic: first hit within the list, over users with relevant items.
    wanted = {}
    for u, item in rel:
        wanted.setdefault(u, set()).add(item)
    first = {}
    for u, item, rank in rows:
        if item in wanted.get(u, ()) and rank < first.get(u, 99):
            first[u] = rank
    users = {u for u, _, _ in rows} & set(wanted)
    mrr = sum((Fraction(1, first[u]) for u in users if u in first), Fraction(0)) / len(users)
    assert results[0][("mrr", 20)] == pytest.approx(float(mrr), rel=1e-15, abs=0)


def test_coverage_counts_distinct_in_stock_items_in_anyones_top_k(spark):
    recs = spark.createDataFrame(
        [(u, item, rank) for u, items in RECS.items() for rank, item in enumerate(items, 1)],
        "user_id string, item_id string, rank int",
    )
    catalog = spark.createDataFrame(
        [(i, i != "gone") for i in ("x", "y", "z", "p", "q", "r", "w", "gone")],
        "item_id string, in_stock boolean",
    )
    got = coverage(recs, catalog, [1, 2, 3])
    assert got[("coverage", 1)] == pytest.approx(2 / 7)  # x, p
    assert got[("coverage", 2)] == pytest.approx(4 / 7)  # x, y, p, q
    assert got[("coverage", 3)] == pytest.approx(6 / 7)


def test_baselines_rank_the_candidate_pool_without_a_model(spark):
    candidates = spark.createDataFrame(
        [
            ("u", "i1", "recent", 5.0),
            ("u", "i2", "recent", 9.0),
            ("u", "i3", "covisit", 100.0),
            ("u", "i4", "global_popular", 50.0),
            ("v", "i4", "global_popular", 50.0),
        ],
        "user_id string, item_id string, candidate_source string, source_score double",
    )
    lists = baseline_lists(pool_positions(candidates), 3)

    def ranked(name):
        rows = lists[name].select("user_id", "item_id", "rank").collect()
        return sorted((r.user_id, r.rank, r.item_id) for r in rows)

    # Source priority first (recent, covisit, ..., global_popular), then each source's own score.
    assert ranked("candidate_order") == [("u", 1, "i2"), ("u", 2, "i1"), ("u", 3, "i3"), ("v", 1, "i4")]
    assert ranked("recent") == [("u", 1, "i2"), ("u", 2, "i1")]

    relevant = spark.createDataFrame(
        [("u", "i3"), ("u", "i9"), ("v", "i4")], "user_id string, item_id string"
    )
    users = spark.createDataFrame([("u",), ("v",)], "user_id string")
    assert pool_recall(candidates, relevant, users) == pytest.approx((1 / 2 + 1) / 2)
