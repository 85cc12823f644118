"""Ingest against real local Spark + Delta on generated raw data."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from recs import ingest
from recs.cli import cli
from recs.tables import table_path
from tests.conftest import START

D1, D2 = START, START + dt.timedelta(days=1)
REASON_OF_KIND = {"wrong_day": "event_time_outside_partition"}


@pytest.fixture(scope="module")
def two_days(spark, tmp_path_factory, sample_root):
    from tests.conftest import make_config

    root, summary = sample_root
    cfg = make_config(tmp_path_factory.mktemp("lh-ingest"), root / "raw")
    counts = {d: ingest.run(spark, cfg, d) for d in (D1, D2)}
    return cfg, summary, counts


def events_of(spark, cfg, date):
    return spark.read.format("delta").load(table_path(cfg, "events")).where(F.col("event_date") == date)


def test_counts_add_up_and_match_the_generator(two_days):
    _, summary, counts = two_days
    for d in (D1, D2):
        c, s = counts[d]["events"], summary.day(d)
        assert c.read == s.lines
        assert c.read == c.written + c.quarantined + c.duplicates
        assert c.written == s.valid_events
        assert c.quarantined == s.quarantined
        assert c.duplicates == s.duplicates
        assert counts[d]["catalog"].written == s.catalog_items
        assert counts[d]["ads"].written == s.ads


def test_each_kind_of_bad_record_is_quarantined_with_its_reason(spark, two_days):
    cfg, summary, _ = two_days
    q = (
        spark.read.format("delta")
        .load(table_path(cfg, "events_quarantine"))
        .where(F.col("ingest_date") == D1)
    )
    reasons = {r.reason: r["count"] for r in q.where("source = 'events'").groupBy("reason").count().collect()}
    expected = {REASON_OF_KIND.get(k, k): n for k, n in summary.day(D1).bad.items() if n}
    assert reasons == expected
    assert q.where(F.col("raw").isNull() | (F.col("raw") == "")).count() == 0
    assert q.select("run_id").distinct().count() == 1


def test_duplicates_dropped_once(spark, two_days):
    cfg, _, _ = two_days
    ev = events_of(spark, cfg, D1)
    assert ev.count() == ev.select("event_id").distinct().count()


def test_rerun_is_identical_and_history_shows_the_replace(spark, two_days):
    cfg, _, _ = two_days
    before = sorted(events_of(spark, cfg, D2).collect())
    d1_files = set(events_of(spark, cfg, D1).inputFiles())
    again = ingest.run(spark, cfg, D2)["events"]
    after = sorted(events_of(spark, cfg, D2).collect())
    assert after == before
    assert again.written == len(after)
    last = DeltaTable.forPath(spark, table_path(cfg, "events")).history(1).first()
    assert last.operation == "WRITE"
    assert last.operationParameters["mode"] == "Overwrite"
    assert "2026-01-02" in last.operationParameters["predicate"]
    # Day D-1's partition is untouched: same files, same rows.
    assert set(events_of(spark, cfg, D1).inputFiles()) == d1_files


def test_ledger_records_the_runs(spark, two_days):
    cfg, _, _ = two_days
    runs = spark.read.format("delta").load(table_path(cfg, "pipeline_runs"))
    rows = runs.where("step = 'ingest'").collect()
    assert {r.run_date for r in rows} == {D1, D2}
    assert all(r.status == "succeeded" and r.row_counts["events_read"] > 0 for r in rows)


def test_missing_raw_partition_is_a_clear_error(spark, cfg):
    missing = START + dt.timedelta(days=300)
    result = CliRunner().invoke(
        cli, ["--lakehouse", cfg.lakehouse, "--raw", cfg.raw, "ingest", "--date", missing.isoformat()]
    )
    assert result.exit_code != 0
    assert "raw input partition not found" in result.output
    assert f"dt={missing.isoformat()}" in result.output
    assert "Traceback" not in result.output


def test_failed_run_is_recorded(spark, cfg):
    with pytest.raises(ingest.MissingInputError):
        ingest.run(spark, cfg, START + dt.timedelta(days=300))
    runs = spark.read.format("delta").load(table_path(cfg, "pipeline_runs")).collect()
    assert [r.status for r in runs] == ["failed"]
    assert "raw input partition not found" in runs[0].error


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[train]\nepochz = 3\n", "train.epochz"),
        ("[score]\nk = 'many'\n", "score.k"),
        ("[train]\ndevice = 'tpu'\n", "train.device"),
        ("lakehouse = [1\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, toml, needle):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = CliRunner().invoke(cli, ["--config", str(path), "ingest", "--date", "2026-01-01"])
    assert result.exit_code != 0
    assert needle in result.output


def test_environment_overrides_config(tmp_path):
    from recs.config import load_config

    cfg = load_config(environ={"RECS_TRAIN__EPOCHS": "9", "RECS_LAKEHOUSE": "s3://b/recs"})
    assert cfg.train.epochs == 9 and cfg.lakehouse == "s3://b/recs"
    assert load_config(lakehouse="/x", environ={"RECS_LAKEHOUSE": "/y"}).lakehouse == "/x"
