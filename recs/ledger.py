"""The run ledger (``pipeline_runs``): what ran, for which date, how it ended, what it counted.

The nightly/backfill orchestration reads it to skip steps that already succeeded and to
resume after a failure, so every step records itself through ``record_step``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recs.config import Config
from recs.errors import StepNotDoneError, StepSkipped
from recs.frames import first_rows
from recs.schemas import table_schema
from recs.tables import append_rows, read_table, table_exists, table_path

log = logging.getLogger("recs")


# unhealthy: the step wrote its rows but they broke an output health check. It counts as done
# (a rerun would write the same rows); the night shows unhealthy until the date is scored
# again, and `recs restore` can put back the previous rows meanwhile.
DONE_STATUSES = ("succeeded", "skipped", "unhealthy")


@dataclass
class StepRun:
    """Filled in by a step while it runs; written to ``pipeline_runs`` when it ends."""

    step: str
    date: dt.date
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    counts: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "succeeded"  # what a run that raises nothing is recorded as


def _ledger_row(
    run: StepRun, status: str, started: dt.datetime, finished: dt.datetime, elapsed: float, error: str | None
) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "step": run.step,
        "run_date": run.date,
        "status": status,
        "started_at": started,
        "finished_at": finished,
        "duration_s": float(elapsed),
        "row_counts": {k: int(v) for k, v in run.counts.items()},
        "details": json.dumps(run.details, default=str, sort_keys=True),
        "error": error[:4000] if error else None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


@contextmanager
def record_step(spark: SparkSession, cfg: Config, step: str, date: dt.date) -> Iterator[StepRun]:
    """Append a ``running`` ledger row, run the block, then append how it ended.

    The first row is what ``recs status`` shows as crashed when the process dies without
    reaching the second (``kill -9``, a lost node).
    """
    run = StepRun(step, date)
    started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    t0 = time.perf_counter()
    log.info("%s %s: started (run %s)", step, date, run.run_id)
    running = _ledger_row(run, "running", started, started, 0.0, None)
    append_rows(spark.createDataFrame([running], table_schema("pipeline_runs")), cfg, "pipeline_runs")
    error: str | None = None
    status = "succeeded"
    try:
        yield run
        status = run.status
    except StepSkipped as exc:
        status, error = "skipped", str(exc)
        raise
    except BaseException as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        elapsed = time.perf_counter() - t0
        finished = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        row = _ledger_row(run, status, started, finished, elapsed, error)
        try:
            append_rows(spark.createDataFrame([row], table_schema("pipeline_runs")), cfg, "pipeline_runs")
        except Exception:  # the ledger must never hide the step's own error
            log.exception("could not record %s %s in pipeline_runs", step, date)
        counts = ", ".join(f"{k}={v}" for k, v in run.counts.items())
        log.info("%s %s: %s in %.1fs (%s)", step, date, status, elapsed, counts)


def latest_runs(spark: SparkSession, cfg: Config):
    """The last ledger row for each (step, run_date), or None when nothing ran yet."""
    if not table_exists(spark, table_path(cfg, "pipeline_runs")):
        return None
    # A run's final row has its running row's started_at and a later finished_at.
    order = [F.col("started_at").desc(), F.col("finished_at").desc(), F.col("run_id").desc()]
    return first_rows(read_table(spark, cfg, "pipeline_runs"), ["step", "run_date"], order)


def succeeded_steps(spark: SparkSession, cfg: Config, date: dt.date) -> set[str]:
    """Steps whose latest run for ``date`` succeeded (or was skipped: nothing to do)."""
    latest = latest_runs(spark, cfg)
    if latest is None:
        return set()
    done = (F.col("run_date") == F.lit(date)) & F.col("status").isin(*DONE_STATUSES)
    rows = latest.where(done).select("step")
    return {r.step for r in rows.collect()}


def succeeded_by_date(spark: SparkSession, cfg: Config, dates: list[dt.date]) -> dict[dt.date, set[str]]:
    """``succeeded_steps`` of each of ``dates``, from one read of the ledger (a backfill's range)."""
    latest = latest_runs(spark, cfg)
    done: dict[dt.date, set[str]] = {d: set() for d in dates}
    if latest is None or not dates:
        return done
    rows = latest.where(F.col("run_date").isin(dates) & F.col("status").isin(*DONE_STATUSES))
    for r in rows.select("run_date", "step").collect():
        done[r.run_date].add(r.step)
    return done


STALE_RUNNING = dt.timedelta(hours=24)


def shown_status(row: Any, now: dt.datetime | None = None, host: str | None = None) -> str:
    """A ledger row's status as an operator should read it: a dead ``running`` is ``crashed``.

    On this host, a running row whose process is gone crashed; elsewhere, one older than a
    day is taken to have crashed.
    """
    if row.status != "running":
        return row.status
    host = host or socket.gethostname()
    if row.host == host and row.pid is not None:
        return "running" if _alive(int(row.pid)) else "crashed"
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return "crashed" if now - row.started_at > STALE_RUNNING else "running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def night_status(step_statuses: dict[str, str]) -> str:
    """One night's state from its steps' shown statuses (see ``shown_status``).

    crashed or running beats everything; a failed step other than train fails the night; a
    failed train with recommendations written is ``degraded``.
    """
    states = set(step_statuses.values())
    for state in ("crashed", "running"):
        if state in states:
            return state
    failed = {step for step, st in step_statuses.items() if st == "failed"}
    if failed - {"train"}:
        return "failed"
    if failed and step_statuses.get("score") not in DONE_STATUSES:
        return "failed"
    if "unhealthy" in states:
        return "unhealthy"
    return "degraded" if failed else "succeeded"


def require_done(spark: SparkSession, cfg: Config, step: str, date: dt.date, *, by: str) -> None:
    """Refuse to run ``by`` on ``date`` when ``step``'s latest run for it did not finish well.

    Dates with no record of ``step`` at all (tables written by other means) are let through:
    the ledger can only vouch for what it saw.
    """
    latest = latest_runs(spark, cfg)
    if latest is None:
        return
    row = latest.where((F.col("step") == step) & (F.col("run_date") == F.lit(date))).first()
    if row is not None and row.status not in DONE_STATUSES:
        raise StepNotDoneError(
            f"{by} {date}: {step} for {date} is recorded as {shown_status(row)}; "
            f"run `recs {step} --date {date}` first"
        )
