"""Airflow 2.x DAG for the recs nightly: ingest >> features >> train >> score >> evaluate.

One run per day. The run whose logical date is D (``{{ ds }}``) processes D's data; with the
daily schedule below it starts at 02:30 UTC on D+1, once D is complete (leave room for late
raw files). Every step is ``deploy/spark-submit.sh STEP --date D`` on the worker, so the same
command a person would type is what the scheduler runs, and any run can be repeated.

Airflow Variables (Admin > Variables):
  recs_repo       checkout of this repository on the workers (default /opt/recs)
  recs_lakehouse  lakehouse root, e.g. s3://example-bucket/recs
  recs_raw        raw input root, e.g. s3a://example-bucket/raw
Cluster settings (SPARK_MASTER, DEPLOY_MODE, DEPLOY_VENV, ...) come from the worker's
environment; see deploy/spark-submit.sh --help. Do not define ad-hoc RECS_* variables on the
workers: the jobs read every RECS_* variable as a config override.

Backfills: unpause with catchup (runs every missed day, oldest first, one at a time), or
``airflow dags backfill -s 2026-01-01 -e 2026-01-10 recs_nightly``. Days must run in order:
features as of D build on the rollups of earlier days, hence max_active_runs=1 and
depends_on_past.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.utils.trigger_rule import TriggerRule

STEPS = ("ingest", "features", "train", "score", "evaluate")
# Trigger rules: score runs whatever train did (skipped with exit 99, or failed: the night is
# then degraded and scores with the model promoted as of the date); the score step itself
# refuses a date whose features step did not succeed. evaluate runs unless score failed;
# ingest and features need their upstream to succeed.
TRIGGER = {"score": TriggerRule.ALL_DONE, "evaluate": TriggerRule.NONE_FAILED}


def step_command(step: str) -> str:
    """The shell command for one step; Jinja renders the {{ }} parts on each run.

    It must not end in ".sh", or BashOperator would read it as a template file name.
    """
    return (
        "{{ var.value.get('recs_repo', '/opt/recs') }}/deploy/spark-submit.sh "
        + step
        + " --date {{ ds }}"
        + " --lakehouse {{ var.value.recs_lakehouse }}"
        + " --raw {{ var.value.recs_raw }}"
    )


default_args = {
    "owner": "recs",
    # A day runs only after the same step succeeded (or was skipped) the day before.
    "depends_on_past": True,
    "retries": 2,
    "retry_delay": timedelta(minutes=10),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=4),
}

with DAG(
    dag_id="recs_nightly",
    description="recs: events -> features -> DLRM -> recommendations and ad candidates (Delta)",
    schedule="30 2 * * *",  # Airflow < 2.4: schedule_interval=
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=True,
    max_active_runs=1,
    default_args=default_args,
    tags=["recs", "spark", "delta"],
) as dag:
    tasks = {}
    for step in STEPS:
        tasks[step] = BashOperator(
            task_id=step,
            bash_command=step_command(step),
            # A job exiting 99 is marked skipped (BashOperator's default skip code): train does
            # that when there is nothing to train on yet or training is not due by train.schedule;
            # evaluate when there are no recommendations of the day before. Exit 1 is a failure.
            # (Client mode only: YARN cluster mode reports 1 for any failure.)
            trigger_rule=TRIGGER.get(step, TriggerRule.ALL_SUCCESS),
        )
        # SparkSubmitOperator alternative (apache-airflow-providers-apache-spark), with the
        # env archive / packages / confs that spark-submit.sh adds spelled out:
        #   SparkSubmitOperator(
        #       task_id=step, conn_id="spark_default",
        #       application="/opt/recs/jobs/" + step + ".py", py_files="/opt/recs/jobs/_entry.py",
        #       packages="io.delta:delta-spark_4.2_2.13:4.4.0",
        #       archives="/path/to/recs-env.tar.gz#environment",
        #       properties_file="/opt/recs/deploy/spark-defaults.conf",
        #       conf={"spark.pyspark.python": "./environment/bin/python"},
        #       application_args=["--date", "{{ ds }}", "--lakehouse", "{{ var.value.recs_lakehouse }}"],
        #   )

    tasks["ingest"] >> tasks["features"] >> tasks["train"] >> tasks["score"] >> tasks["evaluate"]
    tasks["features"] >> tasks["score"]
