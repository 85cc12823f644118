"""Where a night's time goes: Spark jobs, queries, table and log scans, Delta commits per step.

Reruns ``--date``'s night with ``--force`` on an existing lakehouse (``recs demo`` or
``bench_pipeline.py`` leave one; the rerun writes the same rows), once to warm up and then
``--repeats`` times measured, and prints the last run's counts per step with the median wall
seconds. The counts do not depend on the machine: a change that removes an action shows up
as a smaller number here whatever the load.

Usage: ``python benchmarks/bench_profile.py --lakehouse demo/lakehouse --date 2026-01-07
[--steps features --steps score]``.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import lakehouse_parser, machine, open_lakehouse, quiet_logs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = lakehouse_parser(__doc__)
    p.add_argument("--steps", action="append", help="steps to rerun (default: all five)")
    p.add_argument("--raw", type=Path, help="raw event logs (default: raw/ beside the lakehouse)")
    args = p.parse_args(argv)
    args.raw = args.raw or args.lakehouse.resolve().parent / "raw"
    quiet_logs()

    from rich.console import Console

    from recs.pipeline import STEPS, nightly
    from recs.profile import SparkProfiler, cost_table, jvm_lines, slowest_lines

    cfg, spark = open_lakehouse(args)
    steps = args.steps or list(STEPS)
    nightly(spark, cfg, args.date, steps=steps, force=True, force_train=True)  # warm-up
    walls: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        profiler = SparkProfiler(spark, cfg)
        report = nightly(spark, cfg, args.date, steps=steps, force=True, force_train=True, profiler=profiler)
        if not report.ok:
            raise SystemExit(f"{report.failed} failed for {args.date}: {report.error}")
        for cost in profiler.steps:
            walls.setdefault(cost.step, []).append(cost.seconds)
    jit_gc = jvm_lines(profiler.steps)  # the last run's, beside its own wall
    for cost in profiler.steps:
        cost.seconds = statistics.median(walls[cost.step])
    title = f"{args.date} on {machine()}: counts of the last run, median wall of {args.repeats}"
    console = Console()
    console.print(cost_table(profiler.steps, title))
    for line in slowest_lines(profiler.steps) + jit_gc:
        console.print(line, highlight=False)
    total = sum(c.seconds for c in profiler.steps)
    jobs = sum(c.jobs for c in profiler.steps)
    commits = sum(sum(c.commits.values()) for c in profiler.steps)
    print(f"night: {total:.1f} s wall, {jobs} Spark jobs, {commits} Delta commits")


if __name__ == "__main__":
    main()
