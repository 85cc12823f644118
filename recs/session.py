"""The one place that builds the SparkSession.

Locally it sets master, Delta (via delta-spark's pip helper, which resolves the Delta JARs
from Maven once and then from the Ivy cache) and small-data settings. Under
``spark-submit`` it defers to the launcher: master, packages and resources come from the
command line / spark-defaults, and only settings the launcher left unset are filled in.
"""

from __future__ import annotations

import os
import sys

from pyspark import SparkConf
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


# How long a cluster application waits for its first executor (spark.recs.executorWaitTimeout).
EXECUTOR_WAIT_S = 300


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


def executors_expected(conf: SparkConf) -> bool:
    """Whether the application should hold an executor as soon as it starts: any cluster
    master, unless dynamic allocation may scale it to none while idle."""
    master = conf.get("spark.master", "local")
    if master.startswith("local"):
        return False
    if conf.get("spark.dynamicAllocation.enabled", "false").lower() != "true":
        return True
    floor = ("spark.dynamicAllocation.minExecutors", "spark.dynamicAllocation.initialExecutors")
    return max(int(conf.get(key, "0")) for key in floor) > 0


def wait_for_executors(spark: SparkSession, timeout_s: float, poll_s: float = 2.0) -> None:
    """Fail with the requested sizes when no executor registers within ``timeout_s``.

    A cluster with no node big enough for one executor never places it, and Spark waits
    forever for resources; a scheduler then sees a hung night instead of a failure.
    """
    import time

    from recs.errors import ClusterResourcesError

    sc = spark.sparkContext
    deadline = time.monotonic() + timeout_s
    while sc._jsc.sc().getExecutorMemoryStatus().size() <= 1:  # the driver counts as one
        if time.monotonic() >= deadline:
            conf = sc.getConf()
            asked = ", ".join(
                f"{key}={conf.get(key, '(default)')}"
                for key in ("spark.executor.cores", "spark.executor.memory", "spark.executor.memoryOverhead")
            )
            raise ClusterResourcesError(
                f"no executor registered with {conf.get('spark.master')} within {timeout_s:g} s; "
                f"no node can fit one executor of {asked}: lower them or add capacity "
                f"(spark.recs.executorWaitTimeout={timeout_s:g}s; 0 waits forever)"
            )
        time.sleep(poll_s)


def get_spark(cfg: Config) -> SparkSession:
    """Return the active session, or build one suited to where we are running."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder
    if launched_by_spark_submit():
        from pyspark import SparkContext

        # Attach to spark-submit's JVM first: only a JVM-backed SparkConf holds what
        # spark-submit and spark-defaults set (a bare one is empty, and --name would be lost).
        SparkContext._ensure_initialized()
        launcher = SparkConf()
        if not launcher.contains("spark.app.name"):  # keep the submitter's --name
            builder = builder.appName(cfg.spark.app_name)
        for key, value in {**DELTA_CONF, **COMMON_CONF}.items():
            if not launcher.contains(key):
                builder = builder.config(key, value)
        spark = builder.getOrCreate()
        conf = spark.sparkContext.getConf()
        setting = conf.get("spark.recs.executorWaitTimeout", f"{EXECUTOR_WAIT_S}s")
        # Spark's own parser reads "300s", "5min" or "300" (seconds) as it would its settings.
        timeout = spark.sparkContext._jvm.org.apache.spark.network.util.JavaUtils.timeStringAsSec(setting)
        if executors_expected(conf) and timeout > 0:
            wait_for_executors(spark, float(timeout))
        return spark

    from delta import configure_spark_with_delta_pip

    builder = builder.appName(cfg.spark.app_name).master(cfg.spark.master)
    use_this_interpreter_for_workers()
    for key, value in {**DELTA_CONF, **COMMON_CONF, **local_conf(cfg)}.items():
        builder = builder.config(key, value)
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    # Top-n over a whole small frame (the top 1% of items, globally popular items) is a window
    # without a partition, which Spark warns about on every run; locally that drowns the output.
    jvm = spark.sparkContext._jvm
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        "org.apache.spark.sql.execution.window.WindowExec", jvm.org.apache.logging.log4j.Level.ERROR
    )
    return spark
