"""Where a step's time goes in Spark: jobs, queries, table scans and Delta commits per step.

A step's cost on small data is mostly per action (a job's scheduling, a Delta snapshot, a
commit), not per row, so counting actions says more than a profile of the Python code. The
counts come from Spark's own status stores (kept whether or not the UI runs) and from the
tables' ``_delta_log`` folders, read through Hadoop's FileSystem so any lakehouse URI works.
``recs nightly --profile`` prints them; ``benchmarks/bench_profile.py`` compares runs.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from recs.config import Config
from recs.tables import lakehouse_root

# A file scan's "Location: <Index>[(n paths)] [path, ...]" (simple and formatted explain modes), and
# the scans of a Delta snapshot's cached log state (one per snapshot query).
_LOCATION = re.compile(r"Location: \w+(?:\([^)]*\))? ?\[([^\]]+)\]")
_GROUPS = itertools.count()  # job group ids unique within the process, across profilers
_LOG_STATE = re.compile(r"^\(\d+\) Scan ExistingRDD Delta Table State.* - (\S+)$", re.MULTILINE)


@dataclass
class StepCost:
    """What one step asked of Spark and Delta."""

    step: str
    seconds: float = 0.0
    jobs: int = 0
    queries: int = 0
    query_seconds: float = 0.0
    scans: Counter[str] = field(default_factory=Counter)  # table name (or path) -> file scans
    commits: Counter[str] = field(default_factory=Counter)  # table name -> Delta versions added
    slowest: list[tuple[float, str]] = field(default_factory=list)  # (seconds, query description)
    # The driver JVM's own clocks, summed over its compiler and collector threads: time no
    # Spark metric shows, and much of a small step's in a young JVM.
    jit_seconds: float = 0.0
    gc_seconds: float = 0.0

    @property
    def table_scans(self) -> int:
        return sum(n for t, n in self.scans.items() if "_delta_log" not in t)

    @property
    def log_scans(self) -> int:
        """Scans of Delta logs and checkpoints (snapshot loads), not of table data."""
        return sum(n for t, n in self.scans.items() if "_delta_log" in t)


def scanned_locations(plan: str) -> list[str]:
    """Paths of the file scans in a physical plan's text (one entry per scan node)."""
    files = [loc.split(",")[0].strip() for loc in _LOCATION.findall(plan)]
    return files + [path.split(" ")[0] for path in _LOG_STATE.findall(plan)]


def table_of(path: str, root: str) -> str:
    """The lakehouse table a scanned path belongs to, or the path itself when outside it."""
    root = root.rstrip("/")
    for prefix in (root, "file:" + root, "file://" + root, "file:///" + root.lstrip("/")):
        if path.startswith(prefix + "/"):
            rest = path[len(prefix) + 1 :].split("/")
            return rest[0] + ("/_delta_log" if "_delta_log" in rest else "")
    return path


class SparkProfiler:
    """Measures steps one after another in one SparkSession (not thread-safe)."""

    def __init__(self, spark: SparkSession, cfg: Config) -> None:
        self.spark = spark
        self.root = lakehouse_root(cfg)  # absolute, as the scanned paths are
        self.steps: list[StepCost] = []
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self._jvm = jvm
        self._sql_store = spark._jsparkSession.sharedState().statusStore()  # type: ignore[attr-defined]
        self._mx = jvm.java.lang.management.ManagementFactory

    @contextmanager
    def measure(self, step: str) -> Iterator[StepCost]:
        sc = self.spark.sparkContext
        cost = StepCost(step)
        group = f"recs-profile-{next(_GROUPS)}-{step}"
        before_commits = self._log_versions()
        first_query = self._last_query_id() + 1
        sc.setLocalProperty("spark.jobGroup.id", group)
        clocks = self._jvm_clocks()
        started = time.perf_counter()
        try:
            yield cost
        finally:
            cost.seconds = time.perf_counter() - started
            cost.jit_seconds, cost.gc_seconds = (
                after - before for after, before in zip(self._jvm_clocks(), clocks, strict=True)
            )
            sc.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
            self._drain()
            cost.jobs = len(sc.statusTracker().getJobIdsForGroup(group))
            self._read_queries(cost, first_query)
            after = self._log_versions()
            cost.commits = +Counter({t: n - before_commits.get(t, 0) for t, n in after.items()})  # new only
            self.steps.append(cost)

    def _jvm_clocks(self) -> tuple[float, float]:
        """(JIT compilation, GC) seconds the driver JVM has spent so far (its MXBeans count ms)."""
        mx = self._mx
        jit = mx.getCompilationMXBean().getTotalCompilationTime() / 1e3
        gc = sum(max(int(b.getCollectionTime()), 0) for b in mx.getGarbageCollectorMXBeans()) / 1e3
        return jit, gc

    def _drain(self) -> None:
        """Wait until Spark's listeners have seen every event of the step."""
        self.spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty()  # type: ignore[union-attr]

    def _last_query_id(self) -> int:
        self._drain()
        count = self._sql_store.executionsCount()
        if count == 0:
            return -1
        return int(self._sql_store.executionsList(int(count) - 1, 1).apply(0).executionId())

    def _read_queries(self, cost: StepCost, first_id: int) -> None:
        count = int(self._sql_store.executionsCount())
        it = self._sql_store.executionsList(max(count - 1000, 0), 1000).iterator()
        slow: list[tuple[float, str]] = []
        while it.hasNext():
            q = it.next()
            if int(q.executionId()) < first_id:
                continue
            cost.queries += 1
            done = q.completionTime()
            seconds = (done.get().getTime() - q.submissionTime()) / 1000 if done.isDefined() else 0.0
            cost.query_seconds += seconds
            for path in scanned_locations(q.physicalPlanDescription()):
                cost.scans[table_of(path, self.root)] += 1
            slow.append((seconds, str(q.description())))
        cost.slowest = sorted(slow, reverse=True)[:5]

    def _log_versions(self) -> dict[str, int]:
        """Commit files in each lakehouse table's ``_delta_log`` (the count grows by one per commit)."""
        jvm = self._jvm
        hconf = self.spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
        root = jvm.org.apache.hadoop.fs.Path(self.root)
        fs = root.getFileSystem(hconf)
        if not fs.exists(root):
            return {}
        out: dict[str, int] = {}
        for table in fs.listStatus(root):
            log = jvm.org.apache.hadoop.fs.Path(table.getPath(), "_delta_log")
            if table.isDirectory() and fs.exists(log):
                out[table.getPath().getName()] = sum(
                    1 for f in fs.listStatus(log) if f.getPath().getName().endswith(".json")
                )
        return out


def by_step(costs: list[StepCost]) -> list[StepCost]:
    """One summed cost per step name, in first-seen order (a backfill runs each step per day)."""
    out: dict[str, StepCost] = {}
    for c in costs:
        total = out.setdefault(c.step, StepCost(c.step))
        total.seconds += c.seconds
        total.jobs += c.jobs
        total.queries += c.queries
        total.query_seconds += c.query_seconds
        total.jit_seconds += c.jit_seconds
        total.gc_seconds += c.gc_seconds
        total.scans.update(c.scans)
        total.commits.update(c.commits)
        total.slowest = sorted(total.slowest + c.slowest, reverse=True)[:5]
    return list(out.values())


def cost_table(steps: list[StepCost], title: str):
    """A rich table, one row per step (numbers only, so it fits 80 columns)."""
    from rich.table import Table

    table = Table(title=title)
    for name in ("step", "wall s", "jobs", "queries", "query s", "table scans", "log scans", "commits"):
        table.add_column(name, justify="left" if name == "step" else "right", no_wrap=True)
    for c in steps:
        table.add_row(
            c.step,
            f"{c.seconds:.1f}",
            str(c.jobs),
            str(c.queries),
            f"{c.query_seconds:.1f}",
            str(c.table_scans),
            str(c.log_scans),
            str(sum(c.commits.values())),
        )
    return table


def jvm_lines(steps: list[StepCost]) -> list[str]:
    """Each step's JIT compiling and GC time in the driver JVM (with local executors, theirs too)."""
    return [
        f"{c.step}: JVM compiling code {c.jit_seconds:.1f} s, collecting garbage {c.gc_seconds:.1f} s "
        f"(in {c.seconds:.1f} s wall)"
        for c in steps
    ]


def slowest_lines(steps: list[StepCost], per_step: int = 3) -> list[str]:
    """Each step's slowest queries (nested queries overlap their parent's time)."""
    lines = []
    for c in steps:
        if c.slowest:
            lines.append(f"{c.step}: " + "; ".join(f"{s:.1f}s {d}" for s, d in c.slowest[:per_step]))
    return lines
