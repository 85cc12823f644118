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
os.environ.setdefault("PYSPARK_PYTHON", os.environ.get("PYSPARK_PYTHON", "python3"))

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
