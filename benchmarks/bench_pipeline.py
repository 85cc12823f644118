"""The demo-sized pipeline end to end: wall time per step, and the evaluation table.

Runs what ``recs demo`` runs (generated data, history days ingested and featurised, two full
nights) in ``--workdir``, then prints each step's wall time per night from ``pipeline_runs``
and the last night's ``eval_metrics``: the model's recommendations against the popularity
baseline computed the same way, on the same users.

Usage: ``python benchmarks/bench_pipeline.py [--users 1500 --items 400 --days 6] [--workdir DIR]``.
The lakehouse it leaves behind is what ``bench_score.py --lakehouse DIR/lakehouse`` scores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_config, machine, quiet_logs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=1500)
    p.add_argument("--items", type=int, default=400)
    p.add_argument("--days", type=int, default=6)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workdir", type=Path, default=Path("bench-pipeline"))
    p.add_argument(
        "--existing", action="store_true", help="only report on a finished run in --workdir (e.g. ./demo)"
    )
    args = p.parse_args(argv)
    quiet_logs()

    from pyspark.sql import functions as F

    from recs.demo import START, run_demo
    from recs.session import get_spark
    from recs.tables import read_table

    cfg = bench_config(args.workdir.resolve())
    t0 = time.perf_counter()
    if not args.existing:
        run_demo(cfg, args.workdir, users=args.users, items=args.items, days=args.days, seed=args.seed)
    total = time.perf_counter() - t0
    spark = get_spark(cfg)
    last = START + dt.timedelta(days=args.days - 1)

    runs = read_table(spark, cfg, "pipeline_runs").where("status in ('succeeded', 'skipped')")
    wall = runs.groupBy("run_date").pivot("step").agg(F.round(F.sum("duration_s"), 1)).orderBy("run_date")
    whole = "" if args.existing else f"; whole demo {total:.0f}s"
    print(f"\nmachine: {machine()}; {args.users} users, {args.items} items, {args.days} days{whole}")
    print("wall seconds per step and night (pipeline_runs):")
    wall.show(truncate=False)
    ev = read_table(spark, cfg, "eval_metrics").where(F.col("eval_date") == F.lit(last))
    print(f"evaluation of {last - dt.timedelta(days=1)}'s recommendations against {last}'s behaviour:")
    ev.select(
        "metric", "k", F.round("value", 4).alias("model"), F.round("baseline_value", 4).alias("popularity")
    ).orderBy("metric", "k").show(50, truncate=False)


if __name__ == "__main__":
    main()
