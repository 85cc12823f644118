"""What order-independent sums cost: ``recs.frames.exact_sum`` against Spark's double ``sum``.

Both aggregate the same cached rows (``--rows`` doubles in ``--groups`` groups, then one
count over the groups), so the ratio is the price of a decimal sum per row. It also checks
what the decimal buys: the double sums of two layouts of the same rows (one partition in
one order, several partitions in another) can differ; the exact sums may not.

Usage: ``python benchmarks/bench_exact_sum.py --rows 5000000 --groups 100000 --repeats 3``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_config, machine, median_time, quiet_logs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=5_000_000)
    p.add_argument("--groups", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shuffle-partitions", type=int, default=4)
    args = p.parse_args(argv)
    quiet_logs()

    from pyspark.sql import functions as F

    from recs.frames import exact_sum
    from recs.session import get_spark

    cfg = bench_config(Path(tempfile.mkdtemp(prefix="bench-exact-")), args.shuffle_partitions)
    spark = get_spark(cfg)
    # Weights like a co-visit score: counts over positions, from a few thousand down to fractions.
    rows = spark.range(args.rows).select(
        (F.col("id") % args.groups).alias("k"), (F.rand(1) * 3000 / (F.col("id") % 20 + 1)).alias("v")
    )
    rows = rows.cache()
    rows.count()

    def grouped(agg) -> None:
        rows.groupBy("k").agg(agg.alias("s")).agg(F.count("s")).collect()

    double_s, _ = median_time(lambda: grouped(F.sum("v")), args.repeats)
    exact_s, _ = median_time(lambda: grouped(exact_sum("v")), args.repeats)

    ordered = rows.coalesce(1).sortWithinPartitions("v")
    shuffled = rows.repartition(args.shuffle_partitions + 3)

    def totals(df) -> tuple[float, float]:
        row = df.agg(F.sum("v"), exact_sum("v")).first()
        return row[0], row[1]

    (double_a, exact_a), (double_b, exact_b) = totals(ordered), totals(shuffled)
    print(f"machine: {machine()}; {args.rows:,} rows in {args.groups:,} groups; median of {args.repeats}")
    print(f"grouped sum  double {double_s:.2f} s  exact {exact_s:.2f} s  ratio x{exact_s / double_s:.2f}")
    print(f"double total  one layout {double_a!r}  another {double_b!r}  same: {double_a == double_b}")
    print(f"exact total   one layout {exact_a!r}  another {exact_b!r}  same: {exact_a == exact_b}")
    spark.stop()


if __name__ == "__main__":
    main()
