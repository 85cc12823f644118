"""Scoring job: filters, exactly-k ranking, ad eligibility, Spark vs direct model scores."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from recs.model.artifacts import load_model
from recs.score import load_promoted, ranking_inputs
from recs.score.ads import FREQUENCY_DAYS
from recs.score.rank import score_with_model
from recs.tables import read_date, read_range, read_table, table_path
from tests.conftest import COLD_USER, NIGHTS, START, copy_lakehouse

LAST = START + dt.timedelta(days=NIGHTS - 1)


@pytest.fixture(scope="module")
def recs_last(spark, pipeline):
    cfg, _ = pipeline
    return cfg, read_date(spark, cfg, "recommendations", LAST).cache()


def test_the_last_night_was_ranked_by_a_promoted_model(spark, pipeline, recs_last):
    cfg, _ = pipeline
    model = load_promoted(spark, cfg, LAST)
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


def test_ad_candidates_are_capped_ranked_by_ecpm_and_respect_the_frequency_cap(spark, pipeline):
    """Structure of the written table; the eligibility rules have their own hand-made test below."""
    cfg, _ = pipeline
    out = read_date(spark, cfg, "ad_candidates", LAST)
    assert out.count() > 0
    shown = (
        read_range(spark, cfg, "events", LAST - dt.timedelta(days=FREQUENCY_DAYS - 1), LAST)
        .where("event_type = 'ad_impression'")
        .groupBy("user_id", "ad_id")
        .count()
        .where(F.col("count") >= cfg.score.frequency_cap)
    )
    assert shown.count() > 0
    assert out.join(shown, ["user_id", "ad_id"]).count() == 0
    assert out.where(F.abs(F.col("ecpm") - F.col("pctr") * F.col("bid")) > 1e-12).count() == 0
    rows = out.select("user_id", "rank", "ecpm").toPandas().sort_values(["user_id", "rank"])
    for _, g in rows.groupby("user_id"):
        assert list(g["rank"]) == list(range(1, len(g) + 1)) and len(g) <= cfg.score.ads_per_user
        assert np.all(np.diff(g["ecpm"].to_numpy()) <= 0)


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


def uniform_rows(spark, name: str, rows: list[dict]):
    """Rows of table ``name`` with every column the caller leaves out set to 0 / null."""
    from pyspark.sql import types as T

    from recs.schemas import table_schema

    schema = table_schema(name)
    numeric = (T.LongType, T.IntegerType, T.DoubleType, T.FloatType)
    epoch = {T.TimestampType: dt.datetime(2000, 1, 1), T.DateType: dt.date(2000, 1, 1)}
    zero = {
        f.name: 0 if isinstance(f.dataType, numeric) else epoch.get(type(f.dataType)) for f in schema.fields
    }
    return spark.createDataFrame([{**zero, **r} for r in rows], schema)


def test_the_bought_filter_reads_exactly_the_configured_window(spark, tmp_path):
    """bought_window_days = 30: bought on D and on D-29 is filtered, bought on D-30 is not."""
    from recs.config import replace_section
    from recs.score import recommendation_candidates
    from recs.tables import replace_partition
    from tests.conftest import make_config

    cfg = replace_section(make_config(tmp_path / "lh", tmp_path / "raw"), "score", bought_window_days=30)
    d = dt.date(2026, 3, 31)
    for age in (0, 29, 30):
        day = d - dt.timedelta(days=age)
        t = dt.datetime.combine(day, dt.time(12))
        bought = uniform_rows(
            spark,
            "user_item_daily",
            [{"user_id": "u", "item_id": f"age{age}", "purchases": 1, "last_event_time": t}],
        )
        replace_partition(bought.withColumn("event_date", F.lit(day)), cfg, "user_item_daily", day)
    no_events = uniform_rows(spark, "events", []).withColumn("event_date", F.lit(d))
    replace_partition(no_events, cfg, "events", d)
    catalog = ["age0", "age29", "age30", "never"]
    items = spark.createDataFrame(
        [(i, "c", True) for i in catalog], "item_id string, category_id string, in_stock boolean"
    )
    item_features = spark.createDataFrame(
        [(i, "c", True, 5, 5, 1, 5) for i in catalog],
        "item_id string, category_id string, in_stock boolean, clicks_7d long, views_7d long, "
        "purchases_28d long, clicks_28d long",
    )
    users = spark.createDataFrame(
        [("u", [], [])], "user_id string, recent_items array<string>, top_categories array<string>"
    )

    candidates = recommendation_candidates(spark, cfg, d, users, item_features, items)

    assert sorted(r.item_id for r in candidates.collect()) == ["age30", "never"]


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


def test_spark_scores_equal_the_model_called_directly(spark, pipeline):
    cfg, _ = pipeline
    model = load_promoted(spark, cfg, LAST)
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


LAPSED = "lapsed-user"


@pytest.fixture(scope="module")
def rescored_copy(spark, pipeline, tmp_path_factory):
    """A copy of the pipeline lakehouse with a lapsed user, rescored for LAST by the console script.

    The script is called by its absolute path with PATH cut down to the system directories and
    no venv variables, as cron, Airflow or Kubernetes call it: Spark's Python workers must still
    run on the interpreter that has pyarrow and torch.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    from recs.tables import replace_partition

    cfg, _ = pipeline
    copy = copy_lakehouse(cfg, tmp_path_factory.mktemp("copy") / "lakehouse")
    long_ago = LAST - dt.timedelta(days=40)  # outside every feature window, inside the retention
    t = dt.datetime.combine(long_ago, dt.time(9))
    lapsed = uniform_rows(spark, "user_daily", [{"user_id": LAPSED, "views": 3, "last_event_time": t}])
    replace_partition(lapsed.withColumn("event_date", F.lit(long_ago)), copy, "user_daily", long_ago)

    script = Path(sys.executable).parent / "recs"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "OMP_WAIT_POLICY": "PASSIVE",
        "RECS_SCORE__K": str(cfg.score.k),
        "RECS_SCORE__ADS_PER_USER": str(cfg.score.ads_per_user),
        "RECS_SPARK__SHUFFLE_PARTITIONS": str(cfg.spark.shuffle_partitions),
        "RECS_SPARK__DRIVER_MEMORY": "2g",
    }
    cmd = [str(script), "--lakehouse", copy.lakehouse, "--raw", cfg.raw, "score", "--date", str(LAST)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    return cfg, copy, done


def test_the_console_script_scores_when_called_by_its_path_with_a_bare_path(spark, rescored_copy):
    cfg, copy, done = rescored_copy
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    model = load_promoted(spark, copy, LAST)
    assert model.artifact.startswith(copy.lakehouse)  # the copy is self-contained
    rescored = read_date(spark, copy, "recommendations", LAST).where(F.col("user_id") != LAPSED)
    original = read_date(spark, cfg, "recommendations", LAST)
    assert {r.model_version for r in rescored.select("model_version").distinct().collect()} == {model.version}

    def lists(df):
        return sorted(
            (r.user_id, r.rank, r.item_id) for r in df.select("user_id", "rank", "item_id").collect()
        )

    assert lists(rescored) == lists(original)


def test_a_user_whose_only_event_is_40_days_old_still_gets_k_rows(spark, rescored_copy):
    cfg, copy, done = rescored_copy
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    rows = read_date(spark, copy, "recommendations", LAST).where(F.col("user_id") == LAPSED).collect()
    assert sorted(r.rank for r in rows) == list(range(1, cfg.score.k + 1))
    assert len({r.item_id for r in rows}) == cfg.score.k
    assert {r.candidate_source for r in rows} == {"global_popular"}
    assert read_date(spark, cfg, "user_features", LAST).where(F.col("user_id") == LAPSED).count() == 0


def test_a_shop_without_ads_runs_every_step_and_writes_no_ad_rows(spark, tmp_path):
    """No ads feed and no ad events: the night still writes features, examples and recommendations."""
    import shutil

    from recs.pipeline import nightly
    from recs.sample_data import generate
    from tests.conftest import pipeline_config

    generate(tmp_path, users=80, items=40, days=1, start=START, seed=3)
    raw = tmp_path / "raw"
    shutil.rmtree(raw / "ads")
    for part in (raw / "events").rglob("*.jsonl"):
        kept = [line for line in part.read_text().splitlines() if '"event_type":"ad_' not in line]
        part.write_text("\n".join(kept) + "\n")
    cfg = pipeline_config(tmp_path / "lakehouse", raw)

    report = nightly(spark, cfg, START, steps=["ingest", "features", "score"])

    assert report.ok and report.ran == ["ingest", "features", "score"], report
    assert read_table(spark, cfg, "ads").count() == 0
    examples = read_date(spark, cfg, "training_examples", START)
    assert examples.count() > 0 and examples.where("is_ad").count() == 0
    assert read_date(spark, cfg, "recommendations", START).count() > 0
    assert read_range(spark, cfg, "ad_candidates", START, START).count() == 0


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


def test_every_night_stores_its_health_checks_and_they_pass_on_generated_data(spark, pipeline):
    cfg, _ = pipeline
    rows = read_date(spark, cfg, "output_health", LAST).collect()
    assert {r.check for r in rows} >= {
        "short_user_share",
        "users_without_rows",
        "catalog_coverage",
        "bad_scores",
    }
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]


def test_an_unhealthy_night_keeps_its_rows_and_restore_puts_back_the_previous_ones(spark, pipeline, tmp_path):
    """k = 5 and a concentration limit of 0: unhealthy, exit 4; restore returns the k = 20 lists."""

    from click.testing import CliRunner

    from recs.cli import cli

    cfg, _ = pipeline
    copy = copy_lakehouse(cfg, tmp_path / "lakehouse")

    def lists():
        rows = read_date(spark, copy, "recommendations", LAST).select("user_id", "rank", "item_id").collect()
        return sorted(tuple(r) for r in rows)

    before = lists()
    common = ["--lakehouse", copy.lakehouse, "--raw", cfg.raw]
    env = {"RECS_SCORE__K": "5", "RECS_HEALTH__MAX_TOP1PCT_SLOT_SHARE": "0.0"}
    night = CliRunner().invoke(
        cli, [*common, "nightly", "--date", str(LAST), "--force", "--steps", "score"], env=env
    )

    assert night.exit_code == 4, night.output
    assert len(lists()) == 5 * len({u for u, _, _ in before})  # the new rows are written
    health = {r.check: r for r in read_date(spark, copy, "output_health", LAST).collect()}
    assert not health["top1pct_slot_share"].ok and health["top1pct_slot_share"].limit == 0.0
    status = CliRunner().invoke(cli, [*common, "status"])
    assert f"night {LAST}: unhealthy" in status.output

    restored = CliRunner().invoke(cli, [*common, "restore", "--date", str(LAST)])

    assert restored.exit_code == 0, restored.output
    assert lists() == before
    assert all(r.ok for r in read_date(spark, copy, "output_health", LAST).collect())


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
