"""Orchestration on the shared three-night lakehouse: skip, force, fail and resume, spark-submit.

Tests in this module run in file order and build on each other's state (the forced rerun,
then the failure and the resume), which mirrors how an operator would meet these cases.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from recs.ledger import latest_runs
from recs.model.registry import promoted_model
from recs.pipeline import STEPS, nightly
from recs.score import load_promoted
from recs.tables import read_date, read_table, table_path
from tests.conftest import NIGHTS, START, copy_lakehouse

LAST = START + dt.timedelta(days=NIGHTS - 1)
OUTPUTS = [
    "events",
    "items",
    "ads",
    "user_daily",
    "item_daily",
    "user_item_daily",
    "user_category_daily",
    "user_features",
    "item_features",
    "candidate_pool",
    "training_examples",
    "recommendations",
    "ad_candidates",
    "audiences",
    "similar_items",
]  # bought_together too, but a first day with no pair bought twice writes no rows
PARTITION = {"events": "event_date", "items": "snapshot_date", "ads": "snapshot_date"}
COMPARED = [
    "training_examples",
    "user_features",
    "item_features",
    "candidate_pool",
    "recommendations",
    "ad_candidates",
    "audiences",
    "similar_items",
    "bought_together",
]


def versions(spark, cfg) -> dict[str, int]:
    names = [*OUTPUTS, "bought_together", "eval_metrics", "model_registry", "pipeline_runs"]
    return {n: DeltaTable.forPath(spark, table_path(cfg, n)).history(1).first().version for n in names}


def snapshot(spark, cfg, name: str, date: dt.date) -> list[tuple]:
    df = read_date(spark, cfg, name, date)
    return sorted(tuple(map(repr, r)) for r in df.select(sorted(df.columns)).collect())


def test_backfill_wrote_one_partition_per_night_in_every_output(spark, pipeline):
    cfg, reports = pipeline
    from recs.schemas import partition_column

    for name in OUTPUTS:
        col = PARTITION.get(name) or partition_column(name)
        days = {r[0] for r in read_table(spark, cfg, name).select(col).distinct().collect()}
        assert days == {START + dt.timedelta(days=i) for i in range(NIGHTS)}, name
    evaluated = {
        r[0] for r in read_table(spark, cfg, "eval_metrics").select("eval_date").distinct().collect()
    }
    assert evaluated == {START + dt.timedelta(days=i) for i in range(1, NIGHTS)}  # night 1 has no D-1 recs
    assert reports[0].skipped.get("train", "").startswith("no label days before")
    assert all(r.ran == list(STEPS) for r in reports[1:]), [r.ran for r in reports]


def test_the_promoted_model_beats_chance_on_generated_data(spark, pipeline):
    """The generator plants user tastes and item quality; 0.55 is well clear of chance there.

    Night 2's model learns from one label day whose features (as of night 0) are empty, so it
    may be rejected; night 3's, with a day of history behind its examples, must pass.
    """
    cfg, _ = pipeline
    row = promoted_model(spark, cfg, LAST)
    assert row is not None and row.validation_date == LAST
    assert row.metrics["auc"] > 0.55


def test_the_candidate_order_baseline_is_what_scoring_writes_without_a_model(spark, pipeline):
    """Night 1 has no model, so its recommendations are the candidate order; evaluation rebuilds
    that baseline from the same inputs on its own, and the two must agree wherever both lists
    reach (k <= score.k). No list drawn from the pool can recall more than the pool does.
    """
    cfg, _ = pipeline
    night2 = START + dt.timedelta(days=1)
    made = read_date(spark, cfg, "recommendations", START).select("model_version").distinct().collect()
    assert [r.model_version for r in made] == ["none:candidate-order"]
    metrics = {(r.metric, r.k): r for r in read_date(spark, cfg, "eval_metrics", night2).collect()}
    assert metrics[("users_evaluated", None)].value > 20
    for name in ("recall", "ndcg", "hit_rate"):
        row = metrics[(name, 10)]
        assert row.value == pytest.approx(row.candidate_order_value, abs=1e-12), name
        assert row.value != pytest.approx(row.baseline_value), name  # popularity is another list
    pool = metrics[("pool_recall", None)].value
    top = max(cfg.evaluate.ks)
    assert 0 < metrics[("recall", top)].candidate_order_value <= pool + 1e-12


def test_the_model_ranks_the_pool_better_than_its_order_without_a_model(spark, pipeline, tmp_path: Path):
    """The ranker's own contribution: LAST's lists (night 3's model) judged on the day after,
    beside the same pool in its sources' order. The raw data holds that day; a copy of the
    lakehouse ingests it and evaluates, so the shared nights stay as they were.
    """
    cfg, _ = pipeline
    judged = LAST + dt.timedelta(days=1)
    copy = copy_lakehouse(cfg, tmp_path / "lakehouse")
    report = nightly(spark, copy, judged, steps=["ingest", "features", "evaluate"])
    assert report.ok, (report.failed, report.error)
    rows = read_date(spark, copy, "eval_metrics", judged).where("arm = 'all'").collect()
    metrics = {(r.metric, r.k): r for r in rows}
    assert {r.model_version for r in rows} == {promoted_model(spark, cfg, LAST).model_version}
    assert metrics[("users_evaluated", None)].value > 50
    for name in ("recall", "ndcg"):
        row = metrics[(name, 10)]
        assert row.value > row.candidate_order_value + 0.02, (name, row.value, row.candidate_order_value)


def test_a_rerun_of_an_earlier_night_scores_with_the_model_it_had_then(spark, pipeline):
    """Re-scoring night 2 after night 3's model exists gives night 2's rows, not the newer model's."""
    cfg, _ = pipeline
    night2 = START + dt.timedelta(days=1)
    before = snapshot(spark, cfg, "recommendations", night2)
    newest = promoted_model(spark, cfg)
    assert newest.validation_date == LAST

    report = nightly(spark, cfg, night2, steps=["score"], force=True)

    assert report.ok and report.ran == ["score"]
    rows = read_date(spark, cfg, "recommendations", night2)
    used = {r.model_version for r in rows.select("model_version").distinct().collect()}
    then = promoted_model(spark, cfg, night2)
    assert used == {then.model_version if then else "none:candidate-order"}
    assert newest.model_version not in used
    assert snapshot(spark, cfg, "recommendations", night2) == before


def test_a_second_run_of_the_same_night_changes_nothing(spark, pipeline):
    cfg, _ = pipeline
    before = versions(spark, cfg)
    report = nightly(spark, cfg, LAST)
    assert report.ok and report.ran == []
    assert set(report.skipped) == set(STEPS)
    assert versions(spark, cfg) == before


def test_a_forced_rerun_redoes_every_step_and_ends_identical(spark, pipeline):
    cfg, _ = pipeline
    before = {n: snapshot(spark, cfg, n, LAST) for n in COMPARED}
    before_eval = snapshot(spark, cfg, "eval_metrics", LAST)
    old_versions = versions(spark, cfg)
    report = nightly(spark, cfg, LAST, force=True)
    assert report.ok and report.ran == list(STEPS)
    new_versions = versions(spark, cfg)
    assert all(new_versions[n] > old_versions[n] for n in COMPARED)
    for name in COMPARED:
        assert snapshot(spark, cfg, name, LAST) == before[name], name
    assert snapshot(spark, cfg, "eval_metrics", LAST) == before_eval


def test_a_failing_step_stops_the_night_and_the_next_run_resumes_there(spark, pipeline, tmp_path: Path):
    cfg, _ = pipeline
    model = load_promoted(spark, cfg, LAST)
    weights = Path(model.artifact) / "model.safetensors"
    assert weights.exists()
    before = snapshot(spark, cfg, "recommendations", LAST)
    recs_version = versions(spark, cfg)["recommendations"]
    shutil.copy(weights, tmp_path / "good")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))

    failed = nightly(spark, cfg, LAST, steps=["score", "evaluate"], force=True)
    assert failed.failed == "score" and "score" not in failed.ran and "evaluate" not in failed.ran
    assert "model.safetensors" in failed.error
    assert versions(spark, cfg)["recommendations"] == recs_version  # the previous version stands
    assert snapshot(spark, cfg, "recommendations", LAST) == before
    ledger = latest_runs(spark, cfg).where(F.col("run_date") == LAST)
    assert {r.step: r.status for r in ledger.collect()}["score"] == "failed"

    shutil.copy(tmp_path / "good", weights)  # the operator fixes the cause
    resumed = nightly(spark, cfg, LAST)
    assert resumed.ok and resumed.ran == ["score"]
    assert set(resumed.skipped) == {"ingest", "features", "train", "evaluate"}
    assert snapshot(spark, cfg, "recommendations", LAST) == before


def test_the_cli_reports_status_and_a_failure_exits_non_zero(pipeline, tmp_path: Path):
    from click.testing import CliRunner

    from recs.cli import cli

    cfg, _ = pipeline
    runner = CliRunner()
    status = runner.invoke(cli, ["--lakehouse", cfg.lakehouse, "status"])
    assert status.exit_code == 0, status.output
    assert "promoted" in status.output and "score" in status.output
    plan = runner.invoke(
        cli,
        [
            "--lakehouse",
            cfg.lakehouse,
            "--raw",
            cfg.raw,
            "backfill",
            "--start",
            str(START),
            "--end",
            str(LAST),
        ]
        + ["--dry-run", "--force", "--steps", "score"],
    )
    assert plan.exit_code == 0, plan.output
    assert plan.output.count("score") >= NIGHTS
    chart = tmp_path / "report.png"
    report = runner.invoke(cli, ["--lakehouse", cfg.lakehouse, "report", "--out", str(chart)])
    assert report.exit_code == 0, report.output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = runner.invoke(
        cli, ["--lakehouse", cfg.lakehouse, "--raw", cfg.raw, "ingest", "--date", "2030-01-01"]
    )
    assert missing.exit_code != 0 and "dt=2030-01-01" in missing.output


def test_spark_submit_runs_the_ingest_job_in_local_mode(sample_root, tmp_path: Path):
    """spark-submit ships with pyspark; found there, it needs no activated venv on PATH."""
    import pyspark

    from recs.session import delta_package

    root, summary = sample_root
    lakehouse = tmp_path / "lakehouse"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    cmd = [
        str(Path(pyspark.__file__).parent / "bin" / "spark-submit"),
        "--master",
        "local[2]",
        "--packages",
        delta_package(),
        "--conf",
        "spark.sql.shuffle.partitions=2",
        "--conf",
        "spark.ui.enabled=false",
        str(repo / "jobs" / "ingest.py"),
        "--date",
        str(START),
        "--lakehouse",
        str(lakehouse),
        "--raw",
        str(root / "raw"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    from deltalake import DeltaTable as RustTable

    events = RustTable(str(lakehouse / "events")).to_pyarrow_table()
    assert events.num_rows == summary.day(START).valid_events


def test_the_entry_points_exit_99_when_not_due_or_nothing_to_do(spark, pipeline, monkeypatch):
    """What the Airflow DAG reads: 99 = skipped, and a weekly schedule does not train on a Saturday."""
    import sys as _sys

    cfg, _ = pipeline
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "jobs"))
    from _entry import EXIT_SKIPPED, run_step

    registry = versions(spark, cfg)["model_registry"]
    assert LAST.weekday() != 0 and promoted_model(spark, cfg, LAST) is not None  # not a Monday
    monkeypatch.setenv("RECS_TRAIN__SCHEDULE", "weekly")
    args = ["--lakehouse", cfg.lakehouse, "--raw", cfg.raw]
    monkeypatch.setattr(_sys, "argv", ["train.py", "--date", str(LAST), *args])
    assert run_step("train", "train") == EXIT_SKIPPED
    assert versions(spark, cfg)["model_registry"] == registry  # nothing was trained
    monkeypatch.setattr(_sys, "argv", ["evaluate.py", "--date", str(START), *args])
    assert run_step("evaluate", "evaluate") == EXIT_SKIPPED  # no recommendations the day before


def test_a_failed_training_still_writes_the_nights_recommendations(spark, pipeline, tmp_path: Path):
    """Training fails (examples of a foreign feature spec); score runs with the current model."""
    from click.testing import CliRunner

    from recs.cli import cli
    from recs.tables import replace_partition

    cfg, _ = pipeline
    copy = copy_lakehouse(cfg, tmp_path / "lakehouse")
    foreign = read_date(spark, copy, "training_examples", LAST).withColumn("spec_hash", F.lit("another-spec"))
    replace_partition(foreign.localCheckpoint(), copy, "training_examples", LAST)
    recs_before = versions(spark, copy)["recommendations"]

    common = ["--lakehouse", copy.lakehouse, "--raw", cfg.raw]
    env = {"RECS_SCORE__K": str(cfg.score.k), "RECS_TRAIN__WINDOW_DAYS": str(cfg.train.window_days)}
    night = CliRunner().invoke(
        cli,
        [*common, "nightly", "--date", str(LAST), "--force", "--steps", "train", "--steps", "score"],
        env=env,
    )

    assert night.exit_code == 3, night.output
    assert "degraded" in night.output and "TrainingDataError" in night.output
    assert versions(spark, copy)["recommendations"] > recs_before
    used = {
        r.model_version
        for r in read_date(spark, copy, "recommendations", LAST).select("model_version").collect()
    }
    assert used == {promoted_model(spark, cfg, LAST).model_version}
    status = CliRunner().invoke(cli, [*common, "status"])
    assert f"night {LAST}: degraded" in status.output


def test_the_report_axis_spans_the_dates_it_draws():
    """One evaluated night is drawn on a 2-day axis around it, not on years of empty axis."""
    import pandas as pd

    from recs.report import date_limits

    lo, hi = date_limits([dt.date(2026, 1, 3)])
    assert (lo, hi) == (pd.Timestamp("2026-01-02"), pd.Timestamp("2026-01-04"))
    lo, hi = date_limits([dt.date(2026, 1, 3), dt.date(2026, 3, 1)])
    assert (lo, hi) == (pd.Timestamp("2026-01-02"), pd.Timestamp("2026-03-02"))


def test_a_backfill_that_meets_a_missing_day_finishes_the_nights_before_it(spark, cfg):
    """Every day's ingest runs ahead of the range pass; a day without raw input stops the
    backfill there, after the nights before it ran all their steps, and reports that day last."""
    from recs.pipeline import backfill
    from tests.conftest import DAYS

    last_raw = START + dt.timedelta(days=DAYS - 1)
    days = [last_raw - dt.timedelta(days=1), last_raw, last_raw + dt.timedelta(days=1)]
    reports = backfill(spark, cfg, days[0], days[-1], steps=["features", "ingest"])
    assert [(r.date, r.ran, r.failed) for r in reports] == [
        (days[0], ["ingest", "features"], None),
        (days[1], ["ingest", "features"], None),
        (days[2], [], "ingest"),
    ]
    assert "raw input partition not found" in reports[-1].error
    user_daily = read_table(spark, cfg, "user_daily").groupBy("event_date").count().collect()
    assert sorted(r.event_date for r in user_daily) == days[:2]
    history = DeltaTable.forPath(spark, table_path(cfg, "user_daily")).history()
    assert history.count() == 1  # both days' rollups in one commit
    assert {r.run_date: r.status for r in latest_runs(spark, cfg).where("step = 'features'").collect()} == {
        days[0]: "succeeded",
        days[1]: "succeeded",
    }
