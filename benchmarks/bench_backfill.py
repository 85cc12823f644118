"""A first install's history: ``recs backfill --steps ingest --steps features`` vs its floor.

Logs shaped like a small real shop, not like the project's generator: ``quality_sim``'s
bursty users, views and purchases only (no impressions, carts, sessions or context), no ads
feed. ``--events`` sizes a day (about; the simulator draws it).

Both sides are whole processes, timed from start to exit, so each pays Spark's start:

* backfill -- the installed ``recs`` console script over ``--days`` days into an empty
              lakehouse (ingest + features for each day, as a first install runs it);
* floor    -- one process that starts Spark the same way, reads all those days' raw JSON
              with the explicit schema, groups by (day, user, event type) and writes one Delta
              table.

With ``--growth N`` the backfill is also run over the first N days, so the marginal cost of a
day is printed next to the total.

Usage: ``python benchmarks/bench_backfill.py [--days 6] [--events 700] [--growth 3]
[--repeats 1] [--workdir DIR]``. Whole processes take minutes each, so one run per side
is the default; the machine's noise shows between repeats.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402

FLOOR = """
import sys
from pyspark.sql import functions as F
from recs.config import load_config
from recs.schemas import raw_schema
from recs.session import get_spark

raw, out = sys.argv[1], sys.argv[2]
spark = get_spark(load_config(lakehouse=out, raw=raw, environ={}))
events = spark.read.schema(raw_schema("events")).json(raw + "/events")
daily = events.groupBy(F.to_date("event_time").alias("event_date"), "user_id", "event_type").count()
daily.write.format("delta").mode("overwrite").partitionBy("event_date").save(out + "/daily")
"""


def simulate(root: Path, days: int, events_per_day: int, seed: int) -> dict[str, int]:
    from quality_sim import SETTINGS, generate

    base = SETTINGS["views_purchases_only"]
    shop = dataclasses.replace(
        base,
        name="small_bursty_shop",
        bursty=True,
        sessions_mean=1.1,
        views_mean=2.5,
        max_views=6,
        days=days,
        # this setting logs about 0.42 event lines per user and day (measured at 700/day)
        users=max(50, int(events_per_day / 0.42)),
        items=max(100, events_per_day // 2),
    )
    return generate(root, shop, seed).events


def run_timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd[:3])}... exit {done.returncode}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def backfill(recs: str, root: Path, days: int, env: dict[str, str]) -> float:
    from quality_sim import START

    lakehouse = root / f"lakehouse-{days}"
    shutil.rmtree(lakehouse, ignore_errors=True)
    end = START + dt.timedelta(days=days - 1)
    cmd = [recs, "--lakehouse", str(lakehouse), "--raw", str(root / "raw"), "backfill"]
    cmd += ["--start", str(START), "--end", str(end), "--steps", "ingest", "--steps", "features"]
    return run_timed(cmd, env)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=6)
    p.add_argument("--events", type=int, default=700, help="events per day, about")
    p.add_argument("--growth", type=int, default=0, help="also backfill the first N days")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1, help="runs of each side; medians are printed")
    p.add_argument("--workdir", type=Path)
    args = p.parse_args(argv)
    if not 0 <= args.growth < args.days:
        p.error(f"--growth {args.growth} must be below --days {args.days}")

    recs = shutil.which("recs", path=str(Path(sys.executable).parent))
    if recs is None:
        sys.exit("the recs console script is not installed beside this python: pip install -e .")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    root.mkdir(parents=True, exist_ok=True)
    counts = simulate(root, args.days, args.events, args.seed)
    lines = sum(counts.values())
    # A scheduler's environment: no venv on PATH, idle OpenMP threads asleep.
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "PASSIVE"}
    env.update({k: v for k, v in os.environ.items() if k in ("JAVA_HOME", "TMPDIR")})

    floor_cmd = [sys.executable, "-c", FLOOR, str(root / "raw"), str(root / "floor")]
    floor = statistics.median(run_timed(floor_cmd, env) for _ in range(args.repeats))
    total = statistics.median(backfill(recs, root, args.days, env) for _ in range(args.repeats))
    print(f"machine: {machine()}; {args.days} days, {lines:,} event lines ({lines / args.days:,.0f}/day)")
    print(f"{'':<34}{'seconds':>10}{'per day':>10}")
    print(f"{'floor (one read, group, write)':<34}{floor:>10.1f}{floor / args.days:>10.1f}")
    print(f"{'recs backfill ingest + features':<34}{total:>10.1f}{total / args.days:>10.1f}")
    if args.growth:
        part = statistics.median(backfill(recs, root, args.growth, env) for _ in range(args.repeats))
        marginal = (total - part) / (args.days - args.growth)
        print(f"{f'recs backfill, first {args.growth} days':<34}{part:>10.1f}{part / args.growth:>10.1f}")
        print(f"marginal cost of a day: {marginal:.1f} s")
    print(f"backfill / floor: x{total / floor:.1f}")


if __name__ == "__main__":
    main()
