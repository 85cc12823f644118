"""Feature job: point-in-time correctness, rollup windows vs raw events, negatives."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

from pyspark.sql import functions as F

from recs import features
from recs.features.rollups import COUNTED
from recs.features.windows import WINDOWS
from recs.tables import read_date, read_table, replace_partition
from tests.conftest import NIGHTS, START

LAST = START + dt.timedelta(days=NIGHTS - 1)
KEYS = ["user_id", "item_id", "ad_id", "source"]


def test_window_features_equal_a_direct_count_over_events(spark, pipeline):
    cfg, _ = pipeline
    stored = read_date(spark, cfg, "user_features", LAST)
    users = [r.user_id for r in stored.orderBy(F.col("views_28d").desc(), "user_id").limit(5).collect()]
    events = read_table(spark, cfg, "events").where(F.col("user_id").isin(users))
    age = F.datediff(F.lit(LAST), F.col("event_date"))
    direct = events.groupBy("user_id").agg(
        *[
            F.count_if((age >= 0) & (age < w) & F.col("event_type").isin(*types)).alias(f"{name}_{w}d")
            for name, types in COUNTED.items()
            for w in WINDOWS
        ]
    )
    columns = [f"{name}_{w}d" for name in COUNTED for w in WINDOWS]
    got = {r.user_id: r.asDict() for r in stored.where(F.col("user_id").isin(users)).collect()}
    want = {r.user_id: r.asDict() for r in direct.collect()}
    assert set(got) == set(want) == set(users)
    for u in users:
        assert {c: got[u][c] for c in columns} == {c: want[u][c] for c in columns}, u
    assert sum(got[u]["views_28d"] for u in users) > sum(got[u]["views_1d"] for u in users) > 0


def test_the_ledger_counts_each_source_as_the_tables_hold_it(spark, pipeline):
    """The per-source counts are taken while writing, not by reading back: they must still
    be what a reader of the tables finds (no source left out, none counted twice)."""
    import json

    cfg, _ = pipeline
    runs = read_table(spark, cfg, "pipeline_runs").where(
        (F.col("step") == "features") & (F.col("run_date") == F.lit(LAST)) & (F.col("status") == "succeeded")
    )
    details = json.loads(runs.orderBy(F.col("finished_at").desc()).first().details)
    for name, column, key in (
        ("candidate_pool", "candidate_source", "pool_by_source"),
        ("training_examples", "source", "examples_by_source"),
    ):
        direct = read_date(spark, cfg, name, LAST).groupBy(column).count().collect()
        assert details[key] == {r[column]: r["count"] for r in direct}, name
    assert {"positive", "sampled", "ad"} <= set(details["examples_by_source"])


def test_negatives_never_include_the_users_own_positives(spark, pipeline):
    cfg, _ = pipeline
    ex = read_table(spark, cfg, "training_examples")
    positives = ex.where("source = 'positive'").select("user_id", "item_id", "label_date")
    negatives = ex.where(F.col("source").isin("impression", "sampled"))
    assert negatives.count() > 0 and positives.count() > 0
    assert negatives.join(positives, ["user_id", "item_id", "label_date"]).count() == 0
    labels = {(r.source, r.label) for r in ex.select("source", "label").distinct().collect()}
    assert {("positive", 1.0), ("impression", 0.0), ("sampled", 0.0)} <= labels
    assert {lab for s, lab in labels if s == "ad"} == {0.0, 1.0}
    assert ex.where(F.col("label").isNull() | F.col("dense").isNull() | F.col("sparse").isNull()).count() == 0


def test_events_on_the_label_day_change_no_feature_of_its_examples(spark, pipeline, tmp_path: Path):
    """Copy the lakehouse, add a burst of activity for one user on day D, rebuild D's features.

    The user's features *as of D* change (so the test can fail), but every example labelled D
    that exists in both runs keeps exactly the same dense and sparse features.
    """
    cfg, _ = pipeline
    copy = tmp_path / "lakehouse"
    shutil.copytree(cfg.lakehouse, copy)
    cfg2 = dataclasses.replace(cfg, lakehouse=str(copy))

    before = read_date(spark, cfg2, "training_examples", LAST).cache()
    user = before.where("source = 'positive'").orderBy("user_id").first().user_id
    day_events = read_date(spark, cfg2, "events", LAST)
    template = day_events.where(F.col("user_id") == user).limit(1)
    touched = {r.item_id for r in day_events.where(F.col("user_id") == user).select("item_id").collect()}
    fresh = [r.item_id for r in read_date(spark, cfg2, "items", LAST).orderBy("item_id").collect()]
    fresh = [i for i in fresh if i not in touched][:5]
    burst = None
    for n, item in enumerate(fresh):
        for kind in ("view", "click", "add_to_cart", "purchase"):
            row = template.withColumns(
                {
                    "event_id": F.lit(f"leak-{n}-{kind}"),
                    "event_type": F.lit(kind),
                    "item_id": F.lit(item),
                    "ad_id": F.lit(None).cast("string"),
                }
            )
            burst = row if burst is None else burst.unionByName(row)
    replace_partition(day_events.unionByName(burst).localCheckpoint(), cfg2, "events", LAST)

    features.run(spark, cfg2, LAST)

    after = read_date(spark, cfg2, "training_examples", LAST)
    old_user = read_date(spark, cfg, "user_features", LAST).where(F.col("user_id") == user).first()
    new_user = read_date(spark, cfg2, "user_features", LAST).where(F.col("user_id") == user).first()
    assert new_user.purchases_1d == old_user.purchases_1d + len(fresh)

    a = before.select(*KEYS, F.col("dense").alias("d0"), F.col("sparse").alias("s0"))
    b = after.select(*KEYS, F.col("dense").alias("d1"), F.col("sparse").alias("s1"))
    both = a.alias("a").join(b.alias("b"), [F.col(f"a.{k}").eqNullSafe(F.col(f"b.{k}")) for k in KEYS])
    assert both.where(F.col("a.user_id") == user).count() > 0
    changed = both.where((F.col("d0") != F.col("d1")) | (F.col("s0") != F.col("s1")))
    assert changed.count() == 0
    new_positives = after.where((F.col("user_id") == user) & F.col("item_id").isin(fresh))
    assert new_positives.where("source = 'positive'").count() == len(fresh)


def test_a_range_pass_writes_the_rows_of_the_nights_one_by_one(spark, pipeline, tmp_path: Path):
    """The shared pipeline's backfill wrote every day's rollups and window features in one
    commit per table; nights one by one over a copy must write the same rows, and the range's
    commit must still let ``recs restore`` find each of its dates."""
    from delta.tables import DeltaTable

    from recs.features import ROLLUPS, WINDOW_TABLES
    from recs.tables import restore_partition, table_path
    from tests.conftest import copy_lakehouse

    cfg, _ = pipeline
    days = [START + dt.timedelta(days=i) for i in range(NIGHTS)]
    for name in (*ROLLUPS, *WINDOW_TABLES):  # the range pass ran
        tags = DeltaTable.forPath(spark, table_path(cfg, name)).history().select("userMetadata")
        assert any((r[0] or "").startswith("recs-range-") for r in tags.collect()), name

    copy = copy_lakehouse(cfg, tmp_path / "lakehouse")
    per_day = {d: features.write_rollups(spark, copy, [d], f"test-{d}")[d] for d in days}
    for d in days:  # window features read the rollups just rewritten
        per_day[d].update(features.write_window_features(spark, copy, [d], f"test-{d}")[d])
    for name in (*ROLLUPS, *WINDOW_TABLES):
        ranged, nightly = read_table(spark, cfg, name), read_table(spark, copy, name)
        assert ranged.count() == nightly.count() > 0, name
        assert ranged.exceptAll(nightly).count() == 0 and nightly.exceptAll(ranged).count() == 0, name
        part = "as_of_date" if name in WINDOW_TABLES else "event_date"
        by_day = {r[0]: r[1] for r in nightly.groupBy(part).count().collect()}
        assert {d: per_day[d][name] for d in days} == by_day, name

    # The ledger's counts of each night are its own day's rows, not the range's.
    runs = read_table(spark, cfg, "pipeline_runs").where("step = 'features' AND status = 'succeeded'")
    logged = {r.run_date: r.row_counts for r in runs.collect()}
    for d in days:
        assert {n: logged[d][f"{n}_rows"] for n in per_day[d]} == per_day[d], d

    # The range pass over tables that already hold those days: same counts, one commit each.
    ranged = features.write_rollups(spark, copy, days, "test-range")
    for d, tables in features.write_window_features(spark, copy, days, "test-range").items():
        ranged[d].update(tables)
    assert ranged == per_day
    for name in ("user_daily", "user_features"):
        version = DeltaTable.forPath(spark, table_path(copy, name)).history(1).first().version
        assert restore_partition(spark, copy, name, days[1]) == version - 1, name
