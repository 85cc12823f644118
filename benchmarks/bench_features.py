"""One nightly feature run over 14 days of history vs the floor: one scan + group-by of the day.

Set-up (not timed): ``--history-days`` days of smaller traffic are ingested and rolled up
(the rollups are all a nightly run reads of the past), then the measured day with about
``--events`` events is ingested. Timed, as medians after a warm-up, in one Spark session:

* features -- ``recs.features.run`` for the day: D's rollups, user/item features as of D
              from 28 days of rollups, training examples labelled D (features as of D-1);
* floor    -- one scan of D's ``events`` partition with a group-by (user, event type),
              executed to the end with the ``noop`` sink.

With ``--scale 4`` (default) the same is repeated for a day with 4x the events, to show how the
cost grows with the day's size.

Usage: ``python benchmarks/bench_features.py [--events 1000000] [--history-days 14]
[--history-events 50000] [--scale 4] [--repeats 2] [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_config, machine, median_time, quiet_logs, timed  # noqa: E402

START = dt.date(2026, 2, 1)
ITEMS = 5000


def copy_day(src: Path, dst: Path, day: dt.date) -> None:
    for feed in ("events", "catalog", "ads"):
        target = dst / "raw" / feed / f"dt={day}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(src / "raw" / feed / f"dt={day}", target)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000, help="events on the measured day")
    p.add_argument("--history-days", type=int, default=14)
    p.add_argument("--history-events", type=int, default=50_000, help="events per history day")
    p.add_argument("--scale", type=int, default=4, help="also measure a day this many times larger (0: skip)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--shuffle-partitions", type=int, default=8)
    p.add_argument("--workdir", type=Path)
    args = p.parse_args(argv)
    quiet_logs()

    from pyspark.sql import functions as F

    from recs import features, ingest
    from recs.sample_data import generate, users_for_events
    from recs.session import get_spark
    from recs.tables import read_date

    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-features-"))
    cfg = bench_config(root, args.shuffle_partitions)
    spark = get_spark(cfg)
    history = args.history_days
    days = [START + dt.timedelta(days=i) for i in range(history + 1)]
    measured_days = [days[-1]] + ([days[-1] + dt.timedelta(days=1)] if args.scale > 1 else [])
    sizes = [args.events] + ([args.events * args.scale] if args.scale > 1 else [])

    # History: the same user ids as the big days (users are numbered), lighter traffic.
    hist_users = users_for_events(args.history_events, days=history)
    gen_s, _ = timed(lambda: generate(root, users=hist_users, items=ITEMS, days=history, start=START, seed=5))
    print(f"history: {history} days x ~{args.history_events:,} events generated in {gen_s:.0f}s")
    setup_s, _ = timed(
        lambda: (
            [ingest.run(spark, cfg, d) for d in days[:-1]],
            features.write_rollups(spark, cfg, days[:-1], "bench-history"),
        )
    )
    print(f"history ingested and rolled up in {setup_s:.0f}s")

    rows = []
    for day, n in zip(measured_days, sizes, strict=True):
        big = root / f"day-{n}"
        users = users_for_events(n, days=1)
        generate(big, users=users, items=ITEMS, days=1, start=day, seed=11)
        copy_day(big, root, day)
        ingest_s, counts = timed(lambda d=day: ingest.run(spark, cfg, d))
        events = counts["events"].written

        def floor(d=day) -> None:
            (
                read_date(spark, cfg, "events", d)
                .groupBy("user_id", "event_type")
                .agg(F.count(F.lit(1)), F.max("event_time"))
                .write.format("noop")
                .mode("overwrite")
                .save()
            )

        warm = 1 if not rows else 0  # the first day's warm-up also warms the JVM for the larger one
        floor_s, floor_runs = median_time(floor, args.repeats, warmup=warm)
        feat_s, feat_runs = median_time(lambda d=day: features.run(spark, cfg, d), args.repeats, warmup=warm)
        rows.append((day, events, floor_s, feat_s, floor_runs, feat_runs, ingest_s))

    print(f"machine: {machine()}, Spark local[*], shuffle partitions {args.shuffle_partitions}")
    print(f"{'day':<11} {'events':>10} {'floor s':>8} {'features s':>10} {'ratio':>6}  (ingest s)")
    for day, events, floor_s, feat_s, floor_runs, feat_runs, ingest_s in rows:
        print(
            f"{day!s:<11} {events:>10,} {floor_s:>8.1f} {feat_s:>10.1f} {feat_s / floor_s:>5.1f}x  "
            f"({ingest_s:.0f})  floor runs {[round(t, 1) for t in floor_runs]}, "
            f"features runs {[round(t, 1) for t in feat_runs]}"
        )
    if len(rows) == 2:
        (_, e1, f1, t1, *_), (_, e2, f2, t2, *_) = rows
        print(f"{e2 / e1:.1f}x the events: features took {t2 / t1:.2f}x as long, the floor {f2 / f1:.2f}x")
    if not args.workdir:
        spark.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
