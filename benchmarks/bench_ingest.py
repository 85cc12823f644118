"""Ingest throughput vs the floor: a plain Spark read-and-count of the same JSON.

Generates one day of about ``--events`` raw events (1M by default), then times, as medians
over ``--repeats`` runs after a warm-up, in the same Spark session:

* ingest -- ``recs.ingest.run`` for the day: parse with the explicit schema, validate,
            de-duplicate, write ``events`` / ``items`` / ``ads`` and the quarantine (Delta,
            replaceWhere), check the counts, record the run;
* floor  -- ``spark.read.schema(raw schema).json(path)`` over the same files, every field
            parsed and written once as a Delta table (overwrite): the least a day's ingest
            must do. The read + count alone (which parses no field) is printed beside it.

Usage: ``python benchmarks/bench_ingest.py [--events 1000000] [--repeats 3] [--workdir DIR]``.
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

DAY = dt.date(2026, 3, 2)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shuffle-partitions", type=int, default=8)
    p.add_argument("--workdir", type=Path, help="kept when given; a temporary folder otherwise")
    args = p.parse_args(argv)
    quiet_logs()

    from recs import ingest
    from recs.sample_data import generate, users_for_events
    from recs.schemas import raw_schema
    from recs.session import get_spark

    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    users = users_for_events(args.events, days=1)
    gen_s, summary = timed(lambda: generate(root, users=users, items=5000, days=1, start=DAY, seed=3))
    lines = summary.day(DAY).lines
    print(f"generated {lines:,} event lines for {users:,} users in {gen_s:.1f}s")

    cfg = bench_config(root, args.shuffle_partitions)
    spark = get_spark(cfg)
    path = str(root / "raw" / "events" / f"dt={DAY}")
    schema = raw_schema("events")

    floor_table = str(root / "floor" / "events")

    def floor() -> None:
        spark.read.schema(schema).json(path).write.format("delta").mode("overwrite").save(floor_table)

    count_s, count_runs = median_time(lambda: spark.read.schema(schema).json(path).count(), args.repeats)
    floor_s, floor_runs = median_time(floor, args.repeats)
    ingest_s, ingest_runs = median_time(lambda: ingest.run(spark, cfg, DAY), args.repeats)
    counts = ingest.run(spark, cfg, DAY)["events"]
    assert counts.read == lines and counts.read == counts.written + counts.quarantined + counts.duplicates

    print(f"machine: {machine()}, Spark local[*], shuffle partitions {args.shuffle_partitions}")
    print(
        f"events: {lines:,} read, {counts.written:,} written, {counts.quarantined:,} quarantined, "
        f"{counts.duplicates:,} duplicates"
    )
    assert spark.read.format("delta").load(floor_table).count() == lines
    print(
        f"read + count JSON:           {count_s:7.2f}s  {lines / count_s:>12,.0f} events/s  "
        f"runs {[round(t, 1) for t in count_runs]}"
    )
    print(
        f"floor  (read, parse, write): {floor_s:7.2f}s  {lines / floor_s:>12,.0f} events/s  "
        f"runs {[round(t, 1) for t in floor_runs]}"
    )
    print(
        f"ingest (recs.ingest.run):    {ingest_s:7.2f}s  {lines / ingest_s:>12,.0f} events/s  "
        f"runs {[round(t, 1) for t in ingest_runs]}"
    )
    print(f"ratio ingest / floor: {ingest_s / floor_s:.2f}x")
    if not args.workdir:
        spark.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
