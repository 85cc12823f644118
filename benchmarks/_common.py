"""Shared bits for the Spark benchmarks: a local session over a scratch lakehouse, timing."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

# Idle OpenMP threads must sleep, not spin, on a shared machine (torch is imported later).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def bench_config(root: Path, shuffle_partitions: int = 8):
    from recs.config import load_config, replace_section

    cfg = load_config(lakehouse=str(root / "lakehouse"), raw=str(root / "raw"), environ={})
    return replace_section(cfg, "spark", shuffle_partitions=shuffle_partitions)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = [timed(fn)[0] for _ in range(repeats)]
    return statistics.median(times), times


def quiet_logs() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("recs").setLevel(logging.WARNING)


def machine() -> str:
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def night_steps(spark, cfg, date) -> dict[str, float]:
    """Seconds each step of ``date``'s night took, as the ledger recorded them."""
    from pyspark.sql import functions as F

    from recs.tables import read_table

    runs = read_table(spark, cfg, "pipeline_runs").where(
        (F.col("run_date") == F.lit(date)) & F.col("status").isin("succeeded", "unhealthy")
    )
    return {r.step: r.duration_s for r in runs.orderBy("started_at").collect()}


def lakehouse_parser(doc: str):
    """Arguments of the benchmarks that read a scored lakehouse (``recs demo`` leaves one)."""
    import argparse
    import datetime as dt

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", type=Path, default=Path("demo/lakehouse"))
    p.add_argument("--date", type=dt.date.fromisoformat, required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shuffle-partitions", type=int, default=4)
    return p


def open_lakehouse(args):
    """(config, SparkSession) for the lakehouse, shuffle partitions (and ``raw``, where the
    benchmark takes it) of ``lakehouse_parser``'s args."""
    from recs.config import load_config, replace_section
    from recs.session import get_spark

    raw = getattr(args, "raw", None)
    cfg = load_config(lakehouse=str(args.lakehouse.resolve()), raw=raw and str(raw.resolve()), environ={})
    cfg = replace_section(cfg, "spark", shuffle_partitions=args.shuffle_partitions)
    return cfg, get_spark(cfg)
