"""Ingest: raw JSON lines for one date -> ``events``, ``items``, ``ads`` (+ ``events_quarantine``).

Raw lines are read as text first so a record that fails anywhere (malformed JSON, a missing
id, a bad timestamp) is quarantined with its exact raw text and a reason. Counts obey
``read = written + quarantined + duplicates``, checked against what Delta says it wrote.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from recs.config import Config
from recs.ledger import record_step
from recs.schemas import raw_doc, raw_schema
from recs.tables import last_commit_rows, replace_partition

log = logging.getLogger("recs")

CORRUPT = "_corrupt_record"
ITEM_EVENTS = tuple(raw_doc("events")["event_types"]["item"])
AD_EVENTS = tuple(raw_doc("events")["event_types"]["ad"])
AD_STATUSES = ("active", "paused", "ended")


class MissingInputError(FileNotFoundError):
    """A raw input partition the step needs is not there."""


class CountMismatchError(RuntimeError):
    """read != written + quarantined + duplicates: something was lost or invented."""


@dataclass(frozen=True)
class FeedCounts:
    read: int
    written: int
    quarantined: int
    duplicates: int

    def check(self, feed: str) -> None:
        if self.read != self.written + self.quarantined + self.duplicates:
            raise CountMismatchError(
                f"{feed}: read {self.read} != written {self.written} + quarantined "
                f"{self.quarantined} + duplicates {self.duplicates}"
            )


def raw_partition(cfg: Config, feed: str, date: dt.date) -> str:
    return f"{cfg.raw.rstrip('/')}/{feed}/dt={date.isoformat()}"


def require_input(spark: SparkSession, path: str) -> None:
    """Fail with the path in the message when a raw partition is absent or empty."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(hpath):
        raise MissingInputError(f"raw input partition not found: {path}")
    files = [
        s for s in fs.listStatus(hpath) if s.isFile() and not s.getPath().getName().startswith((".", "_"))
    ]
    if not files:
        raise MissingInputError(f"raw input partition has no files: {path}")


def read_lines(spark: SparkSession, path: str) -> DataFrame:
    """Non-blank raw lines with the file each came from."""
    return (
        spark.read.text(path)
        .select(F.col("value").alias("raw"), F.col("_metadata.file_path").alias("source_file"))
        .where(F.trim("raw") != "")
    )


def parse_json(lines: DataFrame, schema: T.StructType) -> DataFrame:
    """Parse each line against ``schema``; unparseable lines keep null fields and ``malformed`` set."""
    with_corrupt = T.StructType([*schema.fields, T.StructField(CORRUPT, T.StringType())])
    parsed = F.from_json("raw", with_corrupt, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT})
    return lines.select("raw", "source_file", parsed.alias("r")).select(
        "raw",
        "source_file",
        *[F.col(f"r.{f.name}").alias(f.name) for f in schema.fields],
        (F.col("r").isNull() | F.col(f"r.{CORRUPT}").isNotNull()).alias("malformed"),
    )


def first_failure(checks: list[tuple[Column, str]]) -> Column:
    """The reason of the first failing check, or null when the record is valid."""
    reason = F.lit(None).cast("string")
    for failed, name in reversed(checks):
        reason = F.when(failed, F.lit(name)).otherwise(reason)
    return reason


def blank(c: str) -> Column:
    return F.col(c).isNull() | (F.trim(F.col(c)) == "")


def validate_events(parsed: DataFrame, date: dt.date, lateness_hours: int) -> DataFrame:
    """Add ``event_time`` (parsed) and ``reason`` (null = valid) to parsed raw events."""
    start = dt.datetime.combine(date, dt.time()) - dt.timedelta(hours=lateness_hours)
    end = dt.datetime.combine(date + dt.timedelta(days=1), dt.time())
    ts = F.try_to_timestamp(F.col("event_time"))
    checks = [
        (F.col("malformed"), "malformed_json"),
        (blank("event_id"), "missing_event_id"),
        (blank("user_id"), "missing_user_id"),
        (blank("event_type"), "missing_event_type"),
        (~F.col("event_type").isin(*ITEM_EVENTS, *AD_EVENTS), "unknown_event_type"),
        (ts.isNull(), "bad_event_time"),
        ((ts < F.lit(start)) | (ts >= F.lit(end)), "event_time_outside_partition"),
        (F.col("event_type").isin(*ITEM_EVENTS) & blank("item_id"), "missing_item_id"),
        (F.col("event_type").isin(*AD_EVENTS) & blank("ad_id"), "missing_ad_id"),
        (F.col("price") < 0, "negative_price"),
        (F.col("position") < 0, "negative_position"),
    ]
    return parsed.withColumn("reason", first_failure(checks)).withColumn("event_time", ts)


def mark_duplicates(df: DataFrame, key: str, order: list[str]) -> DataFrame:
    """Flag every valid row but one per ``key`` (deterministic: first by ``order``, then raw text)."""
    w = Window.partitionBy(key).orderBy(*[F.col(c).asc_nulls_last() for c in order], F.col("raw"))
    n = F.when(F.col("reason").isNull(), F.row_number().over(w))
    return df.withColumn("duplicate", F.coalesce(n > 1, F.lit(False)))


def classify_catalog(parsed: DataFrame) -> DataFrame:
    checks = [
        (F.col("malformed"), "malformed_json"),
        (blank("item_id"), "missing_item_id"),
        (F.col("price") < 0, "negative_price"),
        (F.col("created_date").isNotNull() & F.try_to_date("created_date").isNull(), "bad_created_date"),
    ]
    return mark_duplicates(parsed.withColumn("reason", first_failure(checks)), "item_id", [])


def classify_ads(parsed: DataFrame) -> DataFrame:
    bad_date = [F.col(c).isNotNull() & F.try_to_date(c).isNull() for c in ("start_date", "end_date")]
    checks = [
        (F.col("malformed"), "malformed_json"),
        (blank("ad_id"), "missing_ad_id"),
        (F.col("bid").isNull() | (F.col("bid") < 0), "bad_bid"),
        (~F.lower("status").isin(*AD_STATUSES) | F.col("status").isNull(), "unknown_status"),
        (bad_date[0] | bad_date[1], "bad_date"),
    ]
    return mark_duplicates(parsed.withColumn("reason", first_failure(checks)), "ad_id", [])


def outcome_counts(classified: DataFrame) -> FeedCounts:
    row = classified.agg(
        F.count(F.lit(1)).alias("read"),
        F.count_if(F.col("reason").isNotNull()).alias("quarantined"),
        F.count_if(F.col("duplicate")).alias("duplicates"),
    ).first()
    return FeedCounts(row.read, row.read - row.quarantined - row.duplicates, row.quarantined, row.duplicates)


def valid_rows(classified: DataFrame) -> DataFrame:
    return classified.where(F.col("reason").isNull() & ~F.col("duplicate"))


def quarantined_rows(classified: DataFrame, source: str, run_id: str, date: dt.date) -> DataFrame:
    return classified.where(F.col("reason").isNotNull()).select(
        F.lit(source).alias("source"),
        "raw",
        "reason",
        "source_file",
        F.lit(run_id).alias("run_id"),
        F.lit(date).alias("ingest_date"),
    )


def events_table_rows(valid: DataFrame, date: dt.date) -> DataFrame:
    return valid.withColumn("event_date", F.lit(date))


def items_table_rows(valid: DataFrame, date: dt.date) -> DataFrame:
    return valid.select(
        "item_id",
        "category_id",
        "brand",
        "price",
        F.coalesce("in_stock", F.lit(False)).alias("in_stock"),
        F.try_to_date("created_date").alias("created_date"),
        F.lit(date).alias("snapshot_date"),
    )


def ads_table_rows(valid: DataFrame, date: dt.date) -> DataFrame:
    empty = F.array().cast("array<string>")
    return valid.select(
        "ad_id",
        "campaign_id",
        "advertiser_id",
        "item_id",
        "bid",
        "daily_budget",
        "spend_today",
        F.try_to_date("start_date").alias("start_date"),
        F.try_to_date("end_date").alias("end_date"),
        F.lower("status").alias("status"),
        F.coalesce("target_countries", empty).alias("target_countries"),
        F.coalesce("target_categories", empty).alias("target_categories"),
        F.lit(date).alias("snapshot_date"),
    )


def run(spark: SparkSession, cfg: Config, date: dt.date) -> dict[str, FeedCounts]:
    """Ingest the raw events, catalog and ads of ``date``; returns the counts per feed."""
    paths = {feed: raw_partition(cfg, feed, date) for feed in ("events", "catalog", "ads")}
    with record_step(spark, cfg, "ingest", date) as step:
        for path in paths.values():
            require_input(spark, path)
        events = validate_events(
            parse_json(read_lines(spark, paths["events"]), raw_schema("events")),
            date,
            cfg.ingest.allowed_lateness_hours,
        )
        classified = {
            "events": mark_duplicates(events, "event_id", ["event_time"]),
            "catalog": classify_catalog(
                parse_json(read_lines(spark, paths["catalog"]), raw_schema("catalog"))
            ),
            "ads": classify_ads(parse_json(read_lines(spark, paths["ads"]), raw_schema("ads"))),
        }
        for df in classified.values():
            df.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts = {feed: outcome_counts(df) for feed, df in classified.items()}
            targets = {"events": "events", "catalog": "items", "ads": "ads"}
            builders = {"events": events_table_rows, "catalog": items_table_rows, "ads": ads_table_rows}
            quarantine = None
            for feed, df in classified.items():
                replace_partition(builders[feed](valid_rows(df), date), cfg, targets[feed], date)
                written = last_commit_rows(spark, cfg, targets[feed])
                c = counts[feed]
                if written != c.written:
                    raise CountMismatchError(
                        f"{feed}: classified {c.written} valid rows, Delta wrote {written}"
                    )
                c.check(feed)
                q = quarantined_rows(df, feed, step.run_id, date)
                quarantine = q if quarantine is None else quarantine.unionByName(q)
            replace_partition(quarantine, cfg, "events_quarantine", date)
            reasons = (
                classified["events"].where(F.col("reason").isNotNull()).groupBy("reason").count().collect()
            )
        finally:
            for df in classified.values():
                df.unpersist()
        for feed, c in counts.items():
            for k, v in vars(c).items():
                step.counts[f"{feed}_{k}"] = v
        step.details["quarantine_reasons"] = {r.reason: r["count"] for r in reasons}
        for feed, c in counts.items():
            log.info(
                "ingest %s %s: read %d = written %d + quarantined %d + duplicates %d",
                date,
                feed,
                c.read,
                c.written,
                c.quarantined,
                c.duplicates,
            )
        return counts
