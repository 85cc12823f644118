"""The step profiler counts what Spark and Delta did: commits, scans, jobs."""

from __future__ import annotations

import datetime as dt
import os

from recs.profile import (
    SparkProfiler,
    by_step,
    cost_table,
    jvm_lines,
    scanned_locations,
    slowest_lines,
    table_of,
)
from recs.tables import read_date, replace_partition
from tests.conftest import make_config, uniform_rows

D = dt.date(2026, 4, 2)

PLAN = """== Physical Plan ==
AdaptiveSparkPlan isFinalPlan=true
+- SortMergeJoin [user_id#1], [user_id#9], Inner
   :- FileScan parquet [user_id#1] Batched: true, DataFilters: [], Format: Parquet, \
Location: PreparedDeltaFileIndex(1 paths)[file:/lh/user_features], PartitionFilters: []
   +- FileScan parquet [user_id#9] Batched: true, Format: Parquet, \
Location: TahoeBatchFileIndex(2 paths)[file:/lh/events/_delta_log/00000.checkpoint.parquet, file:/x], \
PartitionFilters: []

(1) Scan parquet
Location: PreparedDeltaFileIndex [file:/lh/recommendations]
(2) Scan ExistingRDD Delta Table State #0 - file:///lh/recommendations/_delta_log
"""


def test_scans_are_named_by_the_lakehouse_table_they_read() -> None:
    paths = scanned_locations(PLAN)
    assert paths == [
        "file:/lh/user_features",
        "file:/lh/events/_delta_log/00000.checkpoint.parquet",
        "file:/lh/recommendations",
        "file:///lh/recommendations/_delta_log",
    ]
    tables = ["user_features", "events/_delta_log", "recommendations", "recommendations/_delta_log"]
    assert [table_of(p, "/lh") for p in paths] == tables
    assert table_of("file:/elsewhere/t", "/lh") == "file:/elsewhere/t"
    assert table_of("s3a://bucket/lh/users/part-0.parquet", "s3a://bucket/lh") == "users"


def test_profiler_counts_two_commits_then_a_read_without_commits(spark, tmp_path) -> None:
    cfg = make_config(tmp_path / "lh", tmp_path / "raw")
    row = {
        "user_id": "u1",
        "rank": 1,
        "item_id": "i1",
        "score": 1.0,
        "candidate_source": "recent",
        "model_version": "m",
        "rec_date": D,
    }
    profiler = SparkProfiler(spark, cfg)

    with profiler.measure("write"):
        replace_partition(uniform_rows(spark, "recommendations", [row]), cfg, "recommendations", D)
        replace_partition(uniform_rows(spark, "recommendations", [row, row]), cfg, "recommendations", D)
    with profiler.measure("read"):
        assert read_date(spark, cfg, "recommendations", D).count() == 2

    write, read = profiler.steps
    assert dict(write.commits) == {"recommendations": 2}
    assert write.jobs > 0 and write.queries > 0
    assert f"write recommendations {D}" in [text for _, text in write.slowest]
    # The JVM's compiler threads can't have spent more than every core for the whole step (a
    # unit slip of ms for s would exceed it); a JVM that compiled all it needs may spend none.
    assert 0 <= write.jit_seconds <= write.seconds * (os.cpu_count() or 1), write.jit_seconds
    assert 0 <= write.gc_seconds <= write.seconds * (os.cpu_count() or 1)
    assert jvm_lines([write])[0].startswith(f"write: JVM compiling code {write.jit_seconds:.1f} s, ")
    assert not read.commits
    assert read.scans["recommendations"] >= 1 and read.table_scans >= 1
    assert read.jobs >= 1 and read.seconds > 0
    again = SparkProfiler(spark, cfg)  # a second profiler counts its own jobs only
    with again.measure("read"):
        read_date(spark, cfg, "recommendations", D).count()
    assert 0 < again.steps[0].jobs <= read.jobs  # with shared job groups it would hold both reads
    lines = slowest_lines([write, read])
    assert lines[0].startswith("write: ") and f"write recommendations {D}" in lines[0]
    assert cost_table([write, read], "t").row_count == 2
    total = by_step([write, read, read])
    assert [c.step for c in total] == ["write", "read"]
    assert (
        total[1].jobs == 2 * read.jobs
        and total[1].scans["recommendations"] == 2 * read.scans["recommendations"]
        and total[1].jit_seconds == 2 * read.jit_seconds
    )
