"""Delta table I/O: where tables live, reading a snapshot, replacing one date atomically.

Every write of a dated table is ``overwrite`` + ``replaceWhere`` on its partition column:
one atomic Delta commit that swaps exactly that date's files, so a rerun never duplicates
rows, other dates are untouched, and a crash mid-write leaves the previous version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recs.config import Config
from recs.errors import MissingTableError, NothingToRestoreError
from recs.schemas import conform, partition_column


def lakehouse_root(cfg: Config) -> str:
    """The lakehouse as an absolute URI: a relative local path means nothing on an executor."""
    root = cfg.lakehouse.rstrip("/")
    if "://" in root:
        return root
    return str(Path(root).resolve())


def table_path(cfg: Config, name: str) -> str:
    return f"{lakehouse_root(cfg)}/{name}"


def table_exists(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def read_table(spark: SparkSession, cfg: Config, name: str) -> DataFrame:
    path = table_path(cfg, name)
    if not table_exists(spark, path):
        raise MissingTableError(f"Delta table {name!r} does not exist at {path}; run the step that writes it")
    return spark.read.format("delta").load(path)


def read_date(spark: SparkSession, cfg: Config, name: str, date: dt.date) -> DataFrame:
    """One partition of a dated table; an empty partition is an error naming the step to run."""
    part = partition_column(name)
    df = read_table(spark, cfg, name).where(F.col(part) == F.lit(date))
    if df.isEmpty():
        raise MissingTableError(
            f"table {name!r} has no rows for {part}={date}; run that step for {date} first"
        )
    return df


def read_range(spark: SparkSession, cfg: Config, name: str, start: dt.date, end: dt.date) -> DataFrame:
    """Rows of a dated table with start <= date <= end (partition-pruned)."""
    part = partition_column(name)
    return read_table(spark, cfg, name).where(F.col(part).between(F.lit(start), F.lit(end)))


def replace_partition(
    df: DataFrame,
    cfg: Config,
    name: str,
    date: dt.date | Sequence[dt.date],
    *,
    tag: str | None = None,
) -> None:
    """Atomically replace table ``name``'s partition for ``date`` (or for each of several
    dates, in the same commit) with ``df`` (conformed to the schema).

    ``tag`` is stored as the commit's ``userMetadata`` so ``committed_rows`` can find this
    very commit later, whatever other writers committed meanwhile.
    """
    part = partition_column(name)
    if part is None:
        raise ValueError(f"table {name!r} is not partitioned; use append_rows")
    dates = [date] if isinstance(date, dt.date) else sorted(set(date))
    if not dates:
        raise ValueError(f"table {name!r}: no dates to replace")
    # Each date is spelled out (not a range): restore_partition finds a date's commits by it.
    days = ", ".join(f"DATE'{d.isoformat()}'" for d in dates)
    where = f"{part} = {days}" if len(dates) == 1 else f"{part} IN ({days})"
    out = conform(df, name)
    writer = (
        out.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", where)
        # New nullable columns in schemas/ extend an existing table instead of failing the write.
        .option("mergeSchema", "true")
        .partitionBy(part)
    )
    if tag is not None:
        writer = writer.option("userMetadata", tag)
    span = dates[0].isoformat() if len(dates) == 1 else f"{dates[0]}..{dates[-1]}"
    with described(out, f"write {name} {span}"):
        writer.save(table_path(cfg, name))


def committed_rows(spark: SparkSession, cfg: Config, name: str, tag: str, *, search: int = 100) -> int:
    """Rows written by the commit tagged ``tag`` (see ``replace_partition``), from Delta's metrics.

    Writing no rows where the partition held none makes no commit at all, and a commit that
    wrote no file has no ``numOutputRows``: both are 0 rows, not a missing count.
    """
    from delta.tables import DeltaTable

    if not table_exists(spark, table_path(cfg, name)):
        return 0
    history = DeltaTable.forPath(spark, table_path(cfg, name)).history(search)
    found = history.where(F.col("userMetadata") == tag).select("operationMetrics").first()
    return 0 if found is None else int((found[0] or {}).get("numOutputRows", 0))


def append_rows(df: DataFrame, cfg: Config, name: str) -> None:
    """Append to an unpartitioned ledger-style table (pipeline_runs, model_registry)."""
    out = conform(df, name)
    with described(out, f"append {name}"):
        out.write.format("delta").mode("append").option("mergeSchema", "true").save(table_path(cfg, name))


@contextmanager
def described(df: DataFrame, text: str) -> Iterator[None]:
    """Name the Spark jobs and query of a write after its table: the Spark UI, the history
    server and ``--profile`` then show "write user_features 2026-01-04", not "save at <unknown>"."""
    sc = df.sparkSession.sparkContext
    before = sc.getLocalProperty("spark.job.description")
    sc.setJobDescription(text)
    try:
        yield
    finally:
        sc.setLocalProperty("spark.job.description", before)  # type: ignore[arg-type]


def restore_partition(spark: SparkSession, cfg: Config, name: str, date: dt.date) -> int:
    """Put back the rows ``date``'s partition held before its latest replacement, in one commit.

    Finds the newest commit whose ``replaceWhere`` covered ``date`` and rewrites the partition
    from the version just before it (time travel: files are there until ``VACUUM``). Returns
    the version the rows came from.
    """
    from delta.tables import DeltaTable

    part = partition_column(name)
    path = table_path(cfg, name)
    if not table_exists(spark, path):
        raise MissingTableError(f"Delta table {name!r} does not exist at {path}; nothing to restore")
    history = DeltaTable.forPath(spark, path).history()
    predicate = F.coalesce(F.col("operationParameters")["predicate"], F.lit(""))
    latest = history.where(predicate.contains(f"'{date.isoformat()}'")).agg(F.max("version")).first()[0]
    if not latest:  # never replaced, or only by the commit that created the table
        raise NothingToRestoreError(f"table {name!r} has no earlier version of {part}={date} to restore")
    before = latest - 1
    rows = (
        spark.read.format("delta").option("versionAsOf", before).load(path).where(F.col(part) == F.lit(date))
    )
    replace_partition(rows.localCheckpoint(), cfg, name, date)
    return before
