"""Scoring job: filters, exactly-k ranking, ad eligibility, Spark vs direct model scores."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from recs.score import load_promoted, ranking_inputs
from recs.score.ads import FREQUENCY_DAYS
from recs.score.rank import score_with_model
from recs.tables import read_date, read_range, read_table, table_path
from recs.train.artifacts import load_model
from tests.conftest import COLD_USER, NIGHTS, START

LAST = START + dt.timedelta(days=NIGHTS - 1)


@pytest.fixture(scope="module")
def recs_last(spark, pipeline):
    cfg, _ = pipeline
    return cfg, read_date(spark, cfg, "recommendations", LAST).cache()


def test_the_last_night_was_ranked_by_a_promoted_model(spark, pipeline, recs_last):
    cfg, _ = pipeline
    model = load_promoted(spark, cfg)
    assert model is not None
    _, recs = recs_last
    assert {r.model_version for r in recs.select("model_version").distinct().collect()} == {model.version}
    first = read_date(spark, cfg, "recommendations", START)
    assert {r.model_version for r in first.select("model_version").distinct().collect()} == {
        "none:candidate-order"
    }


def test_no_bought_out_of_stock_or_delisted_item_is_recommended(spark, recs_last):
    cfg, recs = recs_last
    window = cfg.score.bought_window_days
    bought = (
        read_range(spark, cfg, "events", LAST - dt.timedelta(days=window - 1), LAST)
        .where("event_type = 'purchase'")
        .select("user_id", "item_id")
        .distinct()
    )
    assert bought.count() > 0
    assert recs.join(bought, ["user_id", "item_id"]).count() == 0
    in_stock = read_date(spark, cfg, "items", LAST).where("in_stock").select("item_id")
    assert recs.join(in_stock, "item_id", "left_anti").count() == 0


def test_every_user_and_a_cold_start_user_get_exactly_k_ranked_rows(spark, recs_last):
    cfg, recs = recs_last
    k = cfg.score.k
    users = read_date(spark, cfg, "user_features", LAST).select("user_id")
    per_user = recs.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("n"),
        F.min("rank").alias("lo"),
        F.max("rank").alias("hi"),
        F.count_distinct("rank").alias("ranks"),
        F.count_distinct("item_id").alias("items"),
    )
    assert users.join(per_user, "user_id", "left_anti").count() == 0
    bad = per_user.where((F.col("n") != k) | (F.col("lo") != 1) | (F.col("hi") != k) | (F.col("ranks") != k))
    assert bad.count() == 0
    assert per_user.where(F.col("items") != k).count() == 0
    cold = recs.where(F.col("user_id") == COLD_USER).orderBy("rank").collect()
    assert len(cold) == k
    assert {r.candidate_source for r in cold} <= {"global_popular", "category_popular"}


def test_scores_do_not_increase_with_rank(recs_last):
    _, recs = recs_last
    rows = recs.select("user_id", "rank", "score").orderBy("user_id", "rank").toPandas()
    for _, g in rows.groupby("user_id"):
        assert np.all(np.diff(g["score"].to_numpy()) <= 0)
    assert rows["score"].between(0.0, 1.0).all()


def test_ads_respect_dates_status_targeting_budget_and_frequency_cap(spark, pipeline):
    cfg, _ = pipeline
    out = read_date(spark, cfg, "ad_candidates", LAST)
    assert out.count() > 0
    ads = read_date(spark, cfg, "ads", LAST).drop("item_id", "campaign_id", "bid")
    users = read_date(spark, cfg, "user_features", LAST).select("user_id", "country", "top_categories")
    joined = out.join(ads, "ad_id").join(users, "user_id")
    assert joined.count() == out.count()
    d = F.lit(LAST)
    violations = joined.where(
        (F.col("status") != "active")
        | (F.col("start_date") > d)
        | (F.col("end_date") < d)
        | (F.col("daily_budget") - F.coalesce("spend_today", F.lit(0.0)) <= 0)
        | ~((F.size("target_countries") == 0) | F.array_contains("target_countries", F.col("country")))
        | ~(
            (F.size("target_categories") == 0)
            | F.coalesce(F.arrays_overlap("target_categories", "top_categories"), F.lit(False))
        )
    )
    assert violations.count() == 0
    shown = (
        read_range(spark, cfg, "events", LAST - dt.timedelta(days=FREQUENCY_DAYS - 1), LAST)
        .where("event_type = 'ad_impression'")
        .groupBy("user_id", "ad_id")
        .count()
        .where(F.col("count") >= cfg.score.frequency_cap)
    )
    assert out.join(shown, ["user_id", "ad_id"]).count() == 0
    assert out.where(F.abs(F.col("ecpm") - F.col("pctr") * F.col("bid")) > 1e-12).count() == 0
    per_user = out.groupBy("user_id").agg(F.max("rank").alias("hi"), F.count(F.lit(1)).alias("n"))
    assert per_user.where((F.col("hi") != F.col("n")) | (F.col("n") > cfg.score.ads_per_user)).count() == 0


def test_spark_scores_equal_the_model_called_directly(spark, pipeline):
    cfg, _ = pipeline
    model = load_promoted(spark, cfg)
    users = read_date(spark, cfg, "user_features", LAST)
    items = read_date(spark, cfg, "item_features", LAST)
    pairs = (
        users.select("user_id", "country", "device")
        .limit(20)
        .crossJoin(items.select("item_id").limit(15))
        .withColumn("is_ad", F.lit(False))
        .withColumn("ad_id", F.lit(None).cast("string"))
    )
    inputs = ranking_inputs(
        spark,
        cfg,
        pairs.drop("country", "device"),
        users,
        items,
        model.spec,
        LAST,
        None,
        ["user_id", "item_id", "is_ad"],
    ).localCheckpoint()
    width = (model.spec.num_dense, model.spec.sparse_width)
    via_spark = {
        (r.user_id, r.item_id): r.score
        for r in score_with_model(inputs, model.artifact, width, batch_size=64).collect()
    }
    rows = inputs.orderBy("user_id", "item_id").collect()
    net, _, _ = load_model(model.artifact)
    dense = np.array([r.dense for r in rows], dtype=np.float32)
    sparse = np.array([r.sparse for r in rows], dtype=np.int64)
    with torch.inference_mode():
        logits = net(
            torch.from_numpy(dense), torch.from_numpy(sparse), torch.zeros(len(rows), dtype=torch.bool)
        )
    direct = torch.sigmoid(logits).numpy()
    assert len(via_spark) == len(rows) == 300
    np.testing.assert_allclose(
        [via_spark[(r.user_id, r.item_id)] for r in rows], direct, rtol=1e-5, atol=1e-7
    )
    assert np.std(direct) > 0


def test_recommendations_read_back_without_spark(spark, pipeline, recs_last):
    """Serving systems read the table with delta-rs or DuckDB, not Spark."""
    import duckdb
    from deltalake import DeltaTable

    cfg, recs = recs_last
    path = table_path(cfg, "recommendations")
    table = DeltaTable(path).to_pyarrow_table(filters=[("rec_date", "=", LAST)])
    assert table.num_rows == recs.count()
    con = duckdb.connect()
    con.register("recs", DeltaTable(path).to_pyarrow_dataset())
    n = con.execute(f"SELECT count(*) FROM recs WHERE rec_date = DATE '{LAST}' AND rank = 1").fetchone()[0]
    assert n == recs.where("rank = 1").count()
    assert read_table(spark, cfg, "recommendations").select("rec_date").distinct().count() == NIGHTS
