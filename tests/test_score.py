"""Scoring job: filters, exactly-k ranking, ad eligibility, Spark vs direct model scores."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from recs.features import read_history, user_item_window_of
from recs.model.artifacts import load_model
from recs.score import load_promoted, ranking_inputs
from recs.score.ads import FREQUENCY_DAYS
from recs.score.rank import score_with_model
from recs.tables import read_date, read_range, read_table, table_path
from tests.conftest import COLD_USER, NIGHTS, START, copy_lakehouse, uniform_rows

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


def capped_pairs(spark, cfg):
    """(user_id, ad_id) shown frequency_cap times or more in the 7 days ending on LAST, counted
    here from the events."""
    return (
        read_range(spark, cfg, "events", LAST - dt.timedelta(days=FREQUENCY_DAYS - 1), LAST)
        .where("event_type = 'ad_impression'")
        .groupBy("user_id", "ad_id")
        .count()
        .where(F.col("count") >= cfg.score.frequency_cap)
    )


def test_ad_candidates_are_capped_ranked_by_ecpm_and_respect_the_frequency_cap(spark, pipeline):
    """Structure of the written table; the eligibility rules have their own hand-made test below."""
    cfg, _ = pipeline
    out = read_date(spark, cfg, "ad_candidates", LAST)
    assert out.count() > 0
    shown = capped_pairs(spark, cfg)
    assert shown.count() > 0
    assert out.join(shown, ["user_id", "ad_id"]).count() == 0
    assert out.where(F.abs(F.col("ecpm") - F.col("pctr") * F.col("bid")) > 1e-12).count() == 0
    rows = out.select("user_id", "rank", "ecpm").toPandas().sort_values(["user_id", "rank"])
    for _, g in rows.groupby("user_id"):
        assert list(g["rank"]) == list(range(1, len(g) + 1)) and len(g) <= cfg.score.ads_per_user
        assert np.all(np.diff(g["ecpm"].to_numpy()) <= 0)


def organic_inputs(spark, cfg, model, pairs):
    """Ranking inputs of (user_id, item_id) ``pairs`` as organic rows of LAST, fixed in memory."""
    return ranking_inputs(
        pairs.withColumn("is_ad", F.lit(False)).withColumn("ad_id", F.lit(None).cast("string")),
        read_date(spark, cfg, "user_features", LAST),
        read_date(spark, cfg, "item_features", LAST),
        user_item_window_of(read_history(spark, cfg, LAST)),
        model.spec,
        None,
        ["user_id", "item_id", "is_ad"],
    ).localCheckpoint()


def test_spark_scores_equal_the_model_called_directly(spark, pipeline):
    cfg, _ = pipeline
    model = load_promoted(spark, cfg, LAST)
    users = read_date(spark, cfg, "user_features", LAST).select("user_id").limit(20)
    items = read_date(spark, cfg, "item_features", LAST).select("item_id").limit(15)
    inputs = organic_inputs(spark, cfg, model, users.crossJoin(items))
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


def test_a_rows_score_does_not_depend_on_how_spark_splits_and_orders_the_rows(spark, pipeline):
    # A rerun gets its rows in other partitions and another order (shuffle fetches race);
    # the score written for a row must still be the same, bit for bit.
    cfg, _ = pipeline
    model = load_promoted(spark, cfg, LAST)
    pool = read_date(spark, cfg, "candidate_pool", LAST).select("user_id", "item_id").limit(400)
    inputs = organic_inputs(spark, cfg, model, pool)
    width = (model.spec.num_dense, model.spec.sparse_width)

    def scores(frame):
        scored = score_with_model(frame, model.artifact, width, batch_size=64)
        return {(r.user_id, r.item_id): r.score for r in scored.collect()}

    first = scores(inputs.repartition(1).sortWithinPartitions("user_id", "item_id"))
    shuffled = scores(inputs.repartition(3).sortWithinPartitions(F.rand(seed=5)))
    assert len(first) == 400 and shuffled == first


def test_one_scoring_pass_for_every_output_gives_each_row_the_score_it_gets_alone(spark, pipeline):
    """The night scores the model arm of recommendations, ads and audiences in one pass over
    their union; each output's rows must get what scoring that output alone gives, to the bit
    (recommendations alone without the ad table, as each output was scored before)."""
    from recs.score import SCORED_COLUMNS, model_arm_scores, read_inputs, scores_of, scoring_rows

    cfg, _ = pipeline
    inputs = read_inputs(spark, cfg, LAST)
    model = inputs.model
    some = inputs.users.select("user_id").orderBy("user_id").limit(80).localCheckpoint()
    rows = {name: r.join(some, "user_id") for name, r in scoring_rows(inputs, inputs.pool, cfg).items()}
    together = model_arm_scores(inputs, rows, cfg).localCheckpoint()
    width = (model.spec.num_dense, model.spec.sparse_width)
    for output, candidates in rows.items():
        ads = None if output == "recommendations" else inputs.ads
        features = ranking_inputs(
            candidates,
            inputs.users,
            inputs.item_features,
            inputs.signals,
            model.spec,
            ads,
            SCORED_COLUMNS[output],
        )
        alone = score_with_model(
            features, model.artifact, width, batch_size=cfg.score.batch_size
        ).localCheckpoint()
        mine = scores_of(together, output)
        assert alone.count() > 0, output
        assert alone.exceptAll(mine).isEmpty() and mine.exceptAll(alone).isEmpty(), output


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
    for name in ("similar_items", "bought_together", "audiences"):  # the newer outputs too
        rows = DeltaTable(table_path(cfg, name)).to_pyarrow_table(filters=[("rec_date", "=", LAST)])
        assert rows.num_rows == read_date(spark, cfg, name, LAST).count() > 0, name
        con = duckdb.connect()
        con.register(name, DeltaTable(table_path(cfg, name)).to_pyarrow_dataset())
        n = con.execute(
            f"SELECT count(DISTINCT item_id) FROM {name} WHERE rec_date = DATE '{LAST}'"
        ).fetchone()[0]
        assert n == read_date(spark, cfg, name, LAST).select("item_id").distinct().count(), name


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

    # Completing the pool for the lapsed user leaves everyone else's list exactly as it was.
    def lists(c):
        recs = read_date(spark, c, "recommendations", LAST).where(F.col("user_id") != LAPSED)
        return sorted(
            tuple(r) for r in recs.select("user_id", "rank", "item_id", "candidate_source").collect()
        )

    assert lists(copy) == lists(cfg)


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


def test_the_bought_filter_reads_exactly_the_configured_window(spark, tmp_path):
    """bought_window_days = 30: bought on D and on D-29 is filtered, bought on D-30 is not."""
    from recs.config import replace_section
    from recs.score import read_candidate_inputs, recommendation_candidates
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

    sources = read_candidate_inputs(spark, cfg, d)
    candidates = recommendation_candidates(sources, cfg.score, users, item_features, items)

    assert sorted(r.item_id for r in candidates.collect()) == ["age30", "never"]


def test_similar_items_are_in_stock_other_items_that_share_the_anchors_category(spark, pipeline):
    """Ranks 1..n without gaps, never the anchor or an out-of-stock item, and neighbours share
    the anchor's category at least twice as often as an in-stock item drawn at random."""
    cfg, _ = pipeline
    items = read_date(spark, cfg, "items", LAST).toPandas()
    similar = read_date(spark, cfg, "similar_items", LAST).toPandas()
    category = dict(zip(items.item_id, items.category_id, strict=True))
    in_stock = set(items.item_id[items.in_stock])

    assert len(similar) > 0 and set(similar.item_id) <= set(items.item_id)
    assert not (similar.item_id == similar.neighbour_id).any()
    assert set(similar.neighbour_id) <= in_stock
    assert set(similar.source) <= {"covisit", "embedding"}  # a promoted model serves LAST
    for _, g in similar.groupby("item_id"):
        assert sorted(g["rank"]) == list(range(1, len(g) + 1)) and len(g) <= cfg.related.similar_items
        assert g.sort_values("rank").score.is_monotonic_decreasing
    same = (similar.item_id.map(category) == similar.neighbour_id.map(category)).mean()
    stocked = items[items.in_stock]
    per_category = stocked.category_id.value_counts()
    random_same = sum((n / len(stocked)) ** 2 for n in per_category)
    assert same >= 2 * random_same, (same, random_same)


def test_bought_together_equals_a_direct_count_of_user_day_baskets(spark, pipeline):
    """An independent pandas count over the raw rollup rows of the window."""
    cfg, _ = pipeline
    r = cfg.related
    ui = read_range(
        spark, cfg, "user_item_daily", LAST - dt.timedelta(days=r.bought_together_days - 1), LAST
    ).toPandas()
    items = read_date(spark, cfg, "items", LAST).toPandas()
    baskets = ui[(ui.carts > 0) | (ui.purchases > 0)][["user_id", "event_date", "item_id"]].drop_duplicates()
    assert baskets.groupby(["user_id", "event_date"]).size().max() <= r.max_basket_items  # no cap applies
    holding = baskets.groupby("item_id").size()
    pairs = baskets.merge(baskets, on=["user_id", "event_date"], suffixes=("", "_n"))
    pairs = pairs[pairs.item_id != pairs.item_id_n]
    support = pairs.groupby(["item_id", "item_id_n"]).size()
    in_stock = set(items.item_id[items.in_stock])
    want = {}
    for (a, b), n in support.items():
        if n >= r.bought_together_min_support and b in in_stock and a in set(items.item_id):
            want.setdefault(a, []).append((-n / holding[a], -n, b))
    expected = sorted(
        (a, rank, b, round(-conf, 9), -n)
        for a, rows in want.items()
        for rank, (conf, n, b) in enumerate(sorted(rows)[: r.bought_together], start=1)
    )

    got = read_date(spark, cfg, "bought_together", LAST).toPandas()
    assert (
        sorted((x.item_id, x.rank, x.neighbour_id, round(x.score, 9), x.support) for x in got.itertuples())
        == expected
    )
    assert len(expected) > 0


def test_a_holdout_gets_the_candidate_order_and_evaluation_reports_each_arm(spark, pipeline, tmp_path):
    """experiment.holdout_share = 0.5: users in buckets 0..49 (bucket = salted hash of the user,
    recomputed here in pure Python) get their pool's own order; the others get exactly the
    lists the model gave them before; eval_metrics splits every metric by arm."""
    from recs.config import replace_section
    from recs.hashing import spark_xxhash64
    from recs.pipeline import nightly
    from recs.score import NO_MODEL
    from recs.tables import replace_partition

    cfg, _ = pipeline
    served, judged = LAST, LAST + dt.timedelta(days=1)  # LAST is the night a model served
    copy = replace_section(copy_lakehouse(cfg, tmp_path / "lakehouse"), "experiment", holdout_share=0.5)
    salt = copy.experiment.salt
    assert nightly(spark, copy, served, steps=["score"], force=True).ok
    # What users do on the day after: LAST's events again, enough to judge both arms by.
    next_day = read_date(spark, cfg, "events", LAST).withColumn("event_date", F.lit(judged))
    replace_partition(next_day, copy, "events", judged)
    assert nightly(spark, copy, judged, steps=["evaluate"], force=True).ok

    recs = read_date(spark, copy, "recommendations", served).toPandas()
    before = read_date(spark, cfg, "recommendations", served).toPandas()
    pool = read_date(spark, cfg, "candidate_pool", served).toPandas()
    assert (recs.bucket == recs.user_id.map(lambda u: spark_xxhash64(salt, u) % 100)).all()
    held = recs[recs.bucket < 50]
    assert 0 < held.user_id.nunique() < recs.user_id.nunique()
    assert (held.model_version == NO_MODEL).all() and (
        recs[recs.bucket >= 50].model_version != NO_MODEL
    ).all()
    for user, g in held.groupby("user_id"):
        by_position = pool[pool.user_id == user].sort_values("position").item_id.tolist()
        assert g.sort_values("rank").item_id.tolist() == by_position[: cfg.score.k], user

    def model_arm(df):
        rows = df[df.user_id.isin(recs[recs.bucket >= 50].user_id)]
        return rows.sort_values(["user_id", "rank"])[["user_id", "rank", "item_id", "score"]]

    now, then = model_arm(recs), model_arm(before)
    assert (
        now[["user_id", "rank", "item_id"]].values.tolist()
        == then[["user_id", "rank", "item_id"]].values.tolist()
    )
    # float32 forward passes over differently composed batches agree to rounding only
    np.testing.assert_allclose(now.score.to_numpy(), then.score.to_numpy(), rtol=1e-5)
    ads = read_date(spark, copy, "ad_candidates", served).toPandas()
    assert ((ads.bucket < 50) == (ads.model_version == NO_MODEL)).all()

    ev = read_date(spark, copy, "eval_metrics", judged).toPandas()
    users = ev[ev.metric == "users_evaluated"].set_index("arm").value
    assert set(users.index) == {"all", "model", "holdout"}
    assert users["model"] + users["holdout"] == users["all"] > 0
    held_recall = ev[(ev.arm == "holdout") & (ev.metric == "recall") & (ev.k == 10)].iloc[0]
    assert held_recall.value == pytest.approx(held_recall.candidate_order_value)  # served = pool order


def live_campaign_budgets(spark, cfg, date):
    """Budgets of the campaigns that may serve on date + 1, worked out again in pandas."""
    ads = read_date(spark, cfg, "ads", date).toPandas()
    serve = date + dt.timedelta(days=1)
    live = ads[
        (ads.status == "active")
        & (ads.start_date.isna() | (ads.start_date <= serve))
        & (ads.end_date.isna() | (ads.end_date >= serve))
    ]
    return live, live.groupby(live.campaign_id.fillna(live.ad_id)).daily_budget.min()


def test_audiences_hold_eligible_users_of_live_campaigns_ranked_by_the_models_score(spark, pipeline):
    cfg, _ = pipeline
    aud = read_date(spark, cfg, "audiences", LAST).toPandas()
    live, _ = live_campaign_budgets(spark, cfg, LAST)
    users = read_date(spark, cfg, "user_features", LAST).toPandas().set_index("user_id")
    shown = capped_pairs(spark, cfg).toPandas()
    capped = set(zip(shown.user_id, shown.ad_id, strict=True))

    campaigns = aud[aud.audience_type == "campaign"]
    assert len(campaigns) > 0 and set(campaigns.audience_id) <= set(live.campaign_id)
    assert (aud.model_version == load_promoted(spark, cfg, LAST).version).all()
    ad = live.set_index("ad_id")
    category = {r.item_id: r.category_id for r in read_date(spark, cfg, "items", LAST).collect()}
    for _, g in aud.groupby(["audience_type", "audience_id"]):
        g = g.sort_values("rank")
        assert list(g["rank"]) == list(range(1, len(g) + 1)) and len(g) <= cfg.audiences.size
        assert g.user_id.is_unique and g.score.is_monotonic_decreasing
    for r in campaigns.itertuples():
        a = ad.loc[r.ad_id]
        assert a.campaign_id == r.audience_id and (r.user_id, r.ad_id) not in capped
        u = users.loc[r.user_id]
        assert len(a.target_countries) == 0 or u.country in list(a.target_countries)
        wanted = list(a.target_categories) or [category[a.item_id]]
        assert set(wanted) & set(u.top_categories), (r.user_id, r.audience_id)


def test_pacing_keeps_every_campaigns_planned_spend_within_its_budget(spark, pipeline, tmp_path):
    """200 expected impressions a slot: unpaced, campaigns overspend; paced, none does (summed
    here from the written rows against the budgets in the ads snapshot), the lists stay ranked
    by eCPM, and output_health reports each campaign's planned spend."""
    import json

    from recs.config import replace_section
    from recs.pipeline import nightly

    cfg, _ = pipeline
    copy = replace_section(copy_lakehouse(cfg, tmp_path / "lakehouse"), "pacing", impressions_per_slot=200.0)
    assert nightly(spark, copy, LAST, steps=["score"], force=True).ok

    ads = read_date(spark, copy, "ad_candidates", LAST).toPandas()
    _, budgets = live_campaign_budgets(spark, copy, LAST)
    assert np.allclose(ads.expected_spend, ads.pctr * ads.bid * 200.0)
    spend = ads.groupby(ads.campaign_id.fillna(ads.ad_id)).expected_spend.sum()
    assert (spend <= budgets.reindex(spend.index).fillna(np.inf) * (1 + 1e-9)).all()
    for _, g in ads.sort_values(["user_id", "rank"]).groupby("user_id"):
        assert list(g["rank"]) == list(range(1, len(g) + 1)) and np.all(np.diff(g.ecpm.to_numpy()) <= 0)
    health = read_date(spark, copy, "output_health", LAST).toPandas()
    planned = health[health.check == "planned_spend"].set_index("subject")
    assert planned.ok.all() and len(planned) > 0
    np.testing.assert_allclose(planned.value, spend.reindex(planned.index), rtol=1e-9)
    runs = read_table(spark, copy, "pipeline_runs").where("step = 'score' AND status = 'succeeded'")
    details = json.loads(runs.orderBy(F.col("finished_at").desc()).first().details)
    assert details["pacing"]["campaigns_over_budget_unpaced"] > 0
    assert 0 < details["pacing"]["planned_ecpm"] < details["pacing"]["unpaced_ecpm"]
