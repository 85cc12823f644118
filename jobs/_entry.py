"""Shared argument parsing and exit codes for the spark-submit entry points (kept tiny on purpose).

Exit codes, as deploy/airflow/recs_dag.py expects them: 0 done, 99 skipped (nothing to do
for the date, or training not due by ``train.schedule``), 1 failed, 3 a degraded night
(nightly only: training failed, recommendations were written with the current model), 4
unhealthy (score or nightly: the rows are written but broke an output health check).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging

from recs.config import Config, load_config

EXIT_OK, EXIT_FAILED, EXIT_DEGRADED, EXIT_UNHEALTHY, EXIT_SKIPPED = 0, 1, 3, 4, 99


def parse(description: str) -> tuple[Config, dt.date, argparse.Namespace]:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--date", required=True, type=dt.date.fromisoformat, help="YYYY-MM-DD")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--lakehouse", help="lakehouse root URI")
    p.add_argument("--raw", help="raw input root URI")
    p.add_argument(
        "--force", action="store_true", help="redo steps that already succeeded; train when not due"
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return load_config(args.config, lakehouse=args.lakehouse, raw=args.raw), args.date, args


def session(cfg: Config):
    """The SparkSession; a cluster that cannot place an executor ends the job with one line."""
    from recs.errors import ClusterResourcesError
    from recs.session import get_spark

    try:
        return get_spark(cfg)
    except ClusterResourcesError as exc:
        logging.getLogger("recs").error("%s", exc)
        raise SystemExit(EXIT_FAILED) from None


def run_step(step: str, description: str) -> int:
    """Run one step for ``--date`` and return its exit code."""
    from recs.errors import StepSkipped
    from recs.model.registry import promoted_model
    from recs.pipeline import step_function, train_due

    cfg, date, args = parse(description)
    log = logging.getLogger("recs")
    spark = session(cfg)
    if (
        step == "train"
        and not args.force
        and not train_due(cfg, date, promoted_model(spark, cfg, date) is not None)
    ):
        log.info("train %s not due (train.schedule = %s)", date, cfg.train.schedule)
        return EXIT_SKIPPED
    try:
        result = step_function(step)(spark, cfg, date)
    except StepSkipped as exc:
        log.warning("%s %s skipped: %s", step, date, exc)
        return EXIT_SKIPPED
    except Exception:
        log.exception("%s %s failed", step, date)
        return EXIT_FAILED
    if isinstance(result, dict) and result.get("health_checks_failed"):
        return EXIT_UNHEALTHY
    return EXIT_OK
