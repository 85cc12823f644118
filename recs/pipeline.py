"""Orchestration: one night (``nightly``) and a range of nights (``backfill``).

The run ledger decides what to do: a step already recorded as succeeded for a date is
skipped unless forced, so a night that failed half-way resumes at the failed step.

A failed training does not cost a night of recommendations: the night goes on and scores
with the model promoted as of D (or the fallback ranking when there is none), and the
night is ``degraded``. Any other failed step stops the night: what follows depends on it.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recs.errors import StepSkipped

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from recs.config import Config
    from recs.profile import SparkProfiler

log = logging.getLogger("recs")

__all__ = ["STEPS", "StepSkipped", "backfill", "nightly", "plan_night"]

# The one list of steps, in night order, and the module whose ``run(spark, cfg, date)`` does
# each. The CLI's choices and the spark-submit wrapper's jobs/ follow it; a test holds the
# Airflow DAG (which must parse without recs installed) to it.
STEP_MODULES = {
    "ingest": "recs.ingest",
    "features": "recs.features",
    "train": "recs.train",
    "score": "recs.score",
    "evaluate": "recs.evaluate",
}
STEPS = tuple(STEP_MODULES)
# Steps whose failure leaves the rest of the night able to run (with yesterday's model).
NON_BLOCKING = frozenset({"train"})


def step_function(step: str) -> Callable[[SparkSession, Config, dt.date], object]:
    """The step's ``run``, imported on demand: a night that only scores never loads the trainer."""
    if step not in STEP_MODULES:
        raise ValueError(f"unknown step {step!r}; steps are {', '.join(STEPS)}")
    return importlib.import_module(STEP_MODULES[step]).run


def train_due(cfg: Config, date: dt.date, has_promoted_model: bool) -> bool:
    """daily: every night; weekly: Mondays (or whenever nothing is promoted yet); never: only forced."""
    schedule = cfg.train.schedule
    if schedule == "daily":
        return True
    if schedule == "weekly":
        return date.weekday() == 0 or not has_promoted_model
    return False


@dataclass
class NightReport:
    date: dt.date
    ran: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failed: str | None = None
    error: str | None = None
    degraded: str | None = None  # why the night ran without a step it wanted
    unhealthy: str | None = None  # output health checks the night's rows broke

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def status(self) -> str:
        """succeeded | degraded (recommendations written, a non-blocking step failed) | failed."""
        if self.failed:
            return "failed"
        if self.unhealthy:
            return "unhealthy"
        return "degraded" if self.degraded else "succeeded"


def plan_night(
    spark: SparkSession,
    cfg: Config,
    date: dt.date,
    steps: Iterable[str] = STEPS,
    force: bool = False,
    done: set[str] | None = None,
) -> list[str]:
    """The steps a night would run, in order (already-succeeded ones left out unless forced).

    ``done``: the date's succeeded steps when the caller read the ledger for a whole range.
    """
    from recs.ledger import succeeded_steps

    if force:
        done = set()
    elif done is None:
        done = succeeded_steps(spark, cfg, date)
    return [s for s in STEPS if s in set(steps) and s not in done]


def nightly(
    spark: SparkSession,
    cfg: Config,
    date: dt.date,
    *,
    steps: Iterable[str] = STEPS,
    force: bool = False,
    force_train: bool = False,
    profiler: SparkProfiler | None = None,
    written: dict[str, int] | None = None,
    done: set[str] | None = None,
) -> NightReport:
    """Run the night's steps in order; stop at the first failure (the report says which).

    With a ``profiler``, each step that runs is measured by it (jobs, queries, scans, commits).
    ``written``: what a backfill's range pass already wrote for the date (rows per table), so
    the features step goes on from there. ``done``: see ``plan_night``.
    """
    from recs.model.registry import promoted_model

    wanted = list(steps)
    unknown = sorted(set(wanted) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown steps {unknown}; steps are {', '.join(STEPS)}")
    report = NightReport(date)
    todo = plan_night(spark, cfg, date, wanted, force, done)
    for step in STEPS:
        if step in wanted and step not in todo:
            report.skipped[step] = "already succeeded"
    for step in todo:
        if (
            step == "train"
            and not force_train
            and not train_due(cfg, date, promoted_model(spark, cfg, date) is not None)
        ):
            report.skipped[step] = f"not due (schedule={cfg.train.schedule})"
            log.info("nightly %s: train not due (schedule=%s)", date, cfg.train.schedule)
            continue
        started = time.perf_counter()
        try:
            options = {"written": written} if step == "features" and written else {}
            with profiler.measure(step) if profiler else nullcontext():
                result = step_function(step)(spark, cfg, date, **options)
        except StepSkipped as exc:
            report.skipped[step] = str(exc)
            log.warning("nightly %s: %s skipped: %s", date, step, exc)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if step in NON_BLOCKING:
                report.degraded = f"{step} failed: {error}"
                report.seconds[step] = time.perf_counter() - started
                log.error("nightly %s: %s failed (%s); scoring with the current model", date, step, error)
                continue
            report.failed, report.error = step, error
            log.error("nightly %s: %s failed: %s; the next run resumes here", date, step, report.error)
            return report
        else:
            report.ran.append(step)
            if isinstance(result, dict) and result.get("health_checks_failed"):
                report.unhealthy = f"{result['health_checks_failed']} output health checks failed"
        report.seconds[step] = time.perf_counter() - started
    return report


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"backfill end {end} is before start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def backfill(
    spark: SparkSession,
    cfg: Config,
    start: dt.date,
    end: dt.date,
    *,
    steps: Iterable[str] = STEPS,
    force: bool = False,
    on_day: Callable[[NightReport], None] | None = None,
    profiler: SparkProfiler | None = None,
) -> list[NightReport]:
    """Nights ``start..end`` in date order (later days build on earlier rollups); stops at a failure.

    Over several days the work that does not depend on earlier nights goes first, for the
    whole range: every day's ingest, then the rollups and window features of all the days whose
    features step is due, one query and one commit per table instead of one per table and
    day. Each night then runs its remaining steps as it would alone; the tables end the same
    as nights one by one.
    """
    from recs.ledger import succeeded_by_date

    wanted = [s for s in STEPS if s in set(steps)]
    days = date_range(start, end)
    # A night records only its own date's steps, so one read of the ledger serves the range.
    done = succeeded_by_date(spark, cfg, days)
    if len(days) == 1 or "features" not in wanted:
        return _one_by_one(spark, cfg, days, wanted, force, on_day, profiler, done)

    ingested: dict[dt.date, NightReport] = {}
    ready = days
    if "ingest" in wanted:
        for i, day in enumerate(days):
            ingested[day] = nightly(
                spark, cfg, day, steps=["ingest"], force=force, profiler=profiler, done=done[day]
            )
            if not ingested[day].ok:  # the nights before it still run; the backfill stops there
                ready = days[:i]
                break
    due = [d for d in ready if force or "features" not in done[d]]
    written = range_pass(spark, cfg, due, profiler)

    reports = []
    rest = [s for s in wanted if s != "ingest"]
    for day in ready:
        report = nightly(
            spark,
            cfg,
            day,
            steps=rest,
            force=force,
            profiler=profiler,
            written=written.get(day),
            done=done[day],
        )
        if day in ingested:
            report = _joined(ingested[day], report)
        reports.append(report)
        if on_day:
            on_day(report)
        if not report.ok:
            return reports
    failed = [r for r in ingested.values() if not r.ok]
    for report in failed:
        reports.append(report)
        if on_day:
            on_day(report)
    return reports


def range_pass(
    spark: SparkSession, cfg: Config, days: list[dt.date], profiler: SparkProfiler | None
) -> dict[dt.date, dict[str, int]]:
    """The rollups, then the window features, of ``days`` (those whose features step is due),
    one query per table for them all; rows per day and table of what was written.

    What fails here is left to the nights, which write it one by one and report the error.
    """
    import uuid

    from recs.features import rollup_ready, write_rollups, write_window_features

    ready = rollup_ready(spark, cfg, days)
    if len(ready) < 2:  # nothing to share: each night writes its own
        return {}
    log.info("backfill: rollups and window features of %s..%s in one pass", ready[0], ready[-1])
    tag = f"recs-range-{uuid.uuid4().hex}"
    written: dict[dt.date, dict[str, int]] = {}
    for part, write in (("rollups", write_rollups), ("window features", write_window_features)):
        try:
            with profiler.measure(f"range {part}") if profiler else nullcontext():
                counts = write(spark, cfg, ready, tag)
        except Exception as exc:
            log.warning(
                "backfill: %s of the range failed (%s: %s); the nights write them one by one",
                part,
                type(exc).__name__,
                exc,
            )
            break
        for day, tables in counts.items():
            written.setdefault(day, {}).update(tables)
    return written


def _one_by_one(
    spark: SparkSession,
    cfg: Config,
    days: list[dt.date],
    steps: list[str],
    force: bool,
    on_day: Callable[[NightReport], None] | None,
    profiler: SparkProfiler | None,
    done: dict[dt.date, set[str]],
) -> list[NightReport]:
    reports = []
    for day in days:
        report = nightly(spark, cfg, day, steps=steps, force=force, profiler=profiler, done=done[day])
        reports.append(report)
        if on_day:
            on_day(report)
        if not report.ok:
            break
    return reports


def _joined(first: NightReport, then: NightReport) -> NightReport:
    """One night's report from its ingest (run ahead with the range's) and the steps after."""
    then.ran = first.ran + then.ran
    then.skipped = {**first.skipped, **then.skipped}
    then.seconds = {**first.seconds, **then.seconds}
    return then
