"""The one place that builds the SparkSession.

Locally it sets master, Delta (via delta-spark's pip helper, which resolves the Delta JARs
from Maven once and then from the Ivy cache) and small-data settings. Under
``spark-submit`` it defers to the launcher: master, packages and resources come from the
command line / spark-defaults, and only settings the launcher left unset are filled in.
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from recs.config import Config

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}

# Always UTC: event_time is UTC and dates are computed from it.
COMMON_CONF = {
    "spark.sql.session.timeZone": "UTC",
    # Keep outputs readable by delta-rs, DuckDB and Trino: no deletion vectors.
    "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def delta_package() -> str:
    """Maven coordinates of the Delta JAR matching the installed delta-spark (for --packages)."""
    from importlib.metadata import version

    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_2.13:{version('delta-spark')}"


def launched_by_spark_submit() -> bool:
    """spark-submit (and the pyspark shell) start the JVM first and hand Python its gateway."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def use_this_interpreter_for_workers() -> None:
    """Run Spark's Python workers on the interpreter that runs recs, unless told otherwise.

    Schedulers call ``/path/to/venv/bin/recs`` without activating the venv; PySpark would
    then start the first ``python3`` on ``PATH`` for its workers (often the system one,
    without pyarrow or torch). A local session reads the worker interpreter from
    ``PYSPARK_PYTHON`` only, so that is what is set; a value the user set is kept.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def local_conf(cfg: Config) -> dict[str, str]:
    return {
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.default.parallelism": str(cfg.spark.shuffle_partitions),
        "spark.ui.enabled": str(cfg.spark.ui_enabled).lower(),
        "spark.driver.memory": cfg.spark.driver_memory,
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "4",
        "spark.sql.adaptive.enabled": "true",
        "spark.driver.extraJavaOptions": "-Dderby.system.home=/tmp/recs-derby",
        "spark.sql.warehouse.dir": os.path.join(os.environ.get("TMPDIR", "/tmp"), "recs-warehouse"),
        "spark.python.worker.reuse": "true",
        "spark.ui.showConsoleProgress": "false",
    }


def get_spark(cfg: Config) -> SparkSession:
    """Return the active session, or build one suited to where we are running."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(cfg.spark.app_name)
    if launched_by_spark_submit():
        from pyspark import SparkConf

        launcher = SparkConf()  # holds what spark-submit / spark-defaults already set
        for key, value in {**DELTA_CONF, **COMMON_CONF}.items():
            if not launcher.contains(key):
                builder = builder.config(key, value)
        return builder.getOrCreate()

    from delta import configure_spark_with_delta_pip

    builder = builder.master(cfg.spark.master)
    use_this_interpreter_for_workers()
    for key, value in {**DELTA_CONF, **COMMON_CONF, **local_conf(cfg)}.items():
        builder = builder.config(key, value)
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
