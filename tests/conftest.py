"""One local SparkSession for the whole run, plus a tiny generated raw dataset.

Settings follow Delta's own test utilities: few shuffle partitions, few snapshot
partitions, UI off, and a fresh lakehouse directory per test module or test.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recs.config import Config, load_config, replace_section  # noqa: E402

START = dt.date(2026, 1, 1)
DAYS = 5


def make_config(lakehouse: Path, raw: Path) -> Config:
    cfg = load_config(lakehouse=str(lakehouse), raw=str(raw), environ={})
    return replace_section(cfg, "spark", shuffle_partitions=2, driver_memory="2g")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from recs.session import get_spark

    cfg = make_config(tmp_path_factory.mktemp("unused-lh"), tmp_path_factory.mktemp("unused-raw"))
    session = get_spark(cfg)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> tuple[Path, object]:
    """Raw data for DAYS days, small enough for the whole suite to reuse."""
    from recs.sample_data import generate

    root = tmp_path_factory.mktemp("sample")
    summary = generate(root, users=300, items=120, days=DAYS, start=START, seed=11)
    return root, summary


@pytest.fixture()
def cfg(tmp_path, sample_root) -> Config:
    """A fresh, empty lakehouse over the shared sample raw data."""
    root, _ = sample_root
    return make_config(tmp_path / "lakehouse", root / "raw")


COLD_USER = "cold-start-user"
NIGHTS = 3  # the shared pipeline runs START .. START + NIGHTS - 1


def copy_lakehouse(cfg: Config, dest: Path) -> Config:
    """``cfg`` pointed at a copy of its lakehouse: tests that change tables leave the shared one alone."""
    import dataclasses
    import shutil

    shutil.copytree(cfg.lakehouse, dest)
    return dataclasses.replace(cfg, lakehouse=str(dest))


def pipeline_config(lakehouse: Path, raw: Path) -> Config:
    """Small enough for the suite: a 3-day training window, two epochs, k = 20."""
    cfg = make_config(lakehouse, raw)
    cfg = replace_section(cfg, "train", window_days=3, epochs=2, auc_floor=0.55)
    return replace_section(cfg, "score", k=20, ads_per_user=5)


def add_cold_start_user(raw: Path, day: dt.date) -> None:
    """A user whose only event is one impression: no history to personalise from."""
    import json

    event = {
        "event_id": "cold-start-impression",
        "event_time": f"{day}T12:00:00Z",
        "user_id": COLD_USER,
        "session_id": "cold-session",
        "event_type": "impression",
        "item_id": "i00000",
        "surface": "home",
        "position": 1,
        "device": "mobile",
        "country": "US",
    }
    (raw / "events" / f"dt={day}" / "part-cold.jsonl").write_text(json.dumps(event) + "\n")


@pytest.fixture(scope="session")
def pipeline(spark, tmp_path_factory):
    """Three nights of the full pipeline on fresh sample data, shared by the pipeline tests.

    Night 1 has nothing to train on (fallback ranking, evaluation skipped), night 2 trains
    the first model, night 3 trains again against it and evaluates night 2's model.
    """
    from recs.pipeline import backfill
    from recs.sample_data import generate

    root = tmp_path_factory.mktemp("pipeline")
    # One day more than the nights: what users did the day after, to judge the last night by.
    # (A world's days depend on its length; in this one some pair is bought together twice.)
    generate(root, users=300, items=120, days=NIGHTS + 1, start=START, seed=6)
    last = START + dt.timedelta(days=NIGHTS - 1)
    add_cold_start_user(root / "raw", last)
    cfg = pipeline_config(root / "lakehouse", root / "raw")
    reports = backfill(spark, cfg, START, last)
    assert [r.ok for r in reports] == [True] * NIGHTS, [(r.failed, r.error) for r in reports]
    return cfg, reports


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
