"""Ingest: raw JSON lines for one date -> ``events``, ``items``, ``ads`` (+ ``events_quarantine``).

Raw lines are read as text first so a record that fails anywhere (malformed JSON, a missing
id, a bad timestamp) is quarantined with its exact raw text and a reason. Counts obey
``read = written + quarantined + duplicates``, checked against what Delta says it wrote.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import statistics
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from recs.config import Config
from recs.errors import CountMismatchError, FeedRejectedError, MissingInputError
from recs.ledger import record_step
from recs.schemas import raw_doc, raw_schema
from recs.tables import committed_rows, read_range, replace_partition, table_exists, table_path

log = logging.getLogger("recs")

CORRUPT = "_corrupt_record"
ITEM_EVENTS = tuple(raw_doc("events")["event_types"]["item"])
AD_EVENTS = tuple(raw_doc("events")["event_types"]["ad"])
AD_STATUSES = ("active", "paused", "ended")


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


def input_files(spark: SparkSession, path: str) -> list[str] | None:
    """The data files of a raw partition (None when the folder does not exist)."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(hpath):
        return None
    return [
        str(s.getPath())
        for s in fs.listStatus(hpath)
        if s.isFile() and not s.getPath().getName().startswith((".", "_"))
    ]


def require_input(spark: SparkSession, path: str) -> None:
    """Fail with the path in the message when a raw partition is absent or empty."""
    files = input_files(spark, path)
    if files is None:
        raise MissingInputError(f"raw input partition not found: {path}")
    if not files:
        raise MissingInputError(f"raw input partition has no files: {path}")


def read_lines(spark: SparkSession, path: str | None) -> DataFrame:
    """Every raw line, blank ones included (they are counted and quarantined), with its file.

    ``raw`` keeps the line's bytes as read (Spark does not validate UTF-8 here), so a line
    that is not UTF-8 can be quarantined with its exact bytes. ``path=None`` (an optional
    feed that was not delivered) gives no lines.
    """
    if path is None:
        return spark.createDataFrame([], "raw string, source_file string")
    return spark.read.text(path).select(
        F.col("value").alias("raw"), F.col("_metadata.file_path").alias("source_file")
    )


def parse_json(lines: DataFrame, schema: T.StructType, max_line_bytes: int) -> DataFrame:
    """Parse each line against ``schema``; unparseable lines keep null fields and ``malformed`` set.

    Lines over ``max_line_bytes`` are not parsed at all (``too_long``): one runaway record
    must not cost the parser gigabytes.
    """
    with_corrupt = T.StructType([*schema.fields, T.StructField(CORRUPT, T.StringType())])
    too_long = F.octet_length("raw") > max_line_bytes
    utf8 = F.is_valid_utf8("raw")
    text = F.when(~too_long & utf8, F.col("raw"))
    parsed = F.from_json(text, with_corrupt, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT})
    selected = lines.select(
        "raw", "source_file", too_long.alias("too_long"), (~utf8).alias("not_utf8"), parsed.alias("r")
    )
    return selected.select(
        "raw",
        "source_file",
        *[F.col(f"r.{f.name}").alias(f.name) for f in schema.fields],
        "too_long",
        "not_utf8",
        (F.trim("raw") == "").alias("blank"),
        (F.col("r").isNull() | F.col(f"r.{CORRUPT}").isNotNull()).alias("malformed"),
    )


def line_checks() -> list[tuple[Column, str]]:
    """Checks every feed starts with, before any field is looked at."""
    return [
        (F.col("not_utf8"), "invalid_utf8"),
        (F.col("blank"), "blank_line"),
        (F.col("too_long"), "line_too_long"),
        (F.col("malformed"), "malformed_json"),
    ]


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
        *line_checks(),
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
    """Flag every valid row but one per ``key`` (deterministic: first by ``order``, then raw text).

    Only valid rows compete: an invalid twin goes to quarantine and never displaces a valid copy.
    """
    valid = F.col("reason").isNull()
    w = Window.partitionBy(key, valid).orderBy(*[F.col(c).asc_nulls_last() for c in order], F.col("raw"))
    n = F.when(valid, F.row_number().over(w))
    return df.withColumn("duplicate", F.coalesce(n > 1, F.lit(False)))


def mark_already_stored(events: DataFrame, stored_ids: DataFrame) -> DataFrame:
    """Flag valid events whose ``event_id`` an earlier day already stored as duplicates.

    A late event may arrive in D-1's files and again in D's; keeping both would count it
    twice in rollups and labels. ``stored_ids`` holds the event ids of the earlier days
    inside the lateness window.
    """
    seen = stored_ids.select("event_id", F.lit(True).alias("_seen")).distinct()
    again = F.col("reason").isNull() & F.coalesce(F.col("_seen"), F.lit(False))
    return (
        events.join(seen, "event_id", "left")
        .withColumn("duplicate", F.col("duplicate") | again)
        .drop("_seen")
    )


def classify_catalog(parsed: DataFrame) -> DataFrame:
    checks = [
        *line_checks(),
        (blank("item_id"), "missing_item_id"),
        (F.col("price") < 0, "negative_price"),
        (F.col("created_date").isNotNull() & F.try_to_date("created_date").isNull(), "bad_created_date"),
    ]
    return mark_duplicates(parsed.withColumn("reason", first_failure(checks)), "item_id", [])


def classify_ads(parsed: DataFrame) -> DataFrame:
    bad_date = [F.col(c).isNotNull() & F.try_to_date(c).isNull() for c in ("start_date", "end_date")]
    checks = [
        *line_checks(),
        (blank("ad_id"), "missing_ad_id"),
        (F.col("bid").isNull() | (F.col("bid") < 0), "bad_bid"),
        (~F.lower("status").isin(*AD_STATUSES) | F.col("status").isNull(), "unknown_status"),
        (bad_date[0] | bad_date[1], "bad_date"),
    ]
    return mark_duplicates(parsed.withColumn("reason", first_failure(checks)), "ad_id", [])


def outcome_counts(classified: DataFrame) -> FeedCounts:
    """Each outcome counted on its own, so ``FeedCounts.check`` can catch a row in two or none."""
    valid = F.col("reason").isNull()
    row = classified.agg(
        F.count(F.lit(1)).alias("read"),
        F.count_if(valid & ~F.col("duplicate")).alias("written"),
        F.count_if(~valid).alias("quarantined"),
        F.count_if(F.col("duplicate")).alias("duplicates"),
    ).first()
    return FeedCounts(row.read, row.written, row.quarantined, row.duplicates)


def valid_rows(classified: DataFrame) -> DataFrame:
    return classified.where(F.col("reason").isNull() & ~F.col("duplicate"))


def quarantined_rows(classified: DataFrame, source: str, run_id: str, date: dt.date) -> DataFrame:
    """Rejected lines with their reason; a line that is not UTF-8 also keeps its exact bytes."""
    return classified.where(F.col("reason").isNotNull()).select(
        F.lit(source).alias("source"),
        F.make_valid_utf8("raw").alias("raw"),
        F.when(F.col("not_utf8"), F.base64(F.col("raw").cast("binary"))).alias("raw_base64"),
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


def stored_event_ids(spark: SparkSession, cfg: Config, date: dt.date) -> DataFrame | None:
    """Event ids stored for the earlier days that a late event of ``date`` could also be in."""
    days = math.ceil(cfg.ingest.allowed_lateness_hours / 24)
    if days == 0 or not table_exists(spark, table_path(cfg, "events")):
        return None
    return read_range(spark, cfg, "events", date - dt.timedelta(days=days), date - dt.timedelta(days=1))


def classify_feeds(
    spark: SparkSession, cfg: Config, paths: dict[str, str | None], date: dt.date
) -> dict[str, DataFrame]:
    """Each feed's raw lines with ``reason`` (null = valid) and ``duplicate`` set."""
    max_bytes = cfg.ingest.max_line_bytes
    events = validate_events(
        parse_json(read_lines(spark, paths["events"]), raw_schema("events"), max_bytes),
        date,
        cfg.ingest.allowed_lateness_hours,
    )
    events = mark_duplicates(events, "event_id", ["event_time"])
    earlier = stored_event_ids(spark, cfg, date)
    if earlier is not None:
        events = mark_already_stored(events, earlier)
    catalog = parse_json(read_lines(spark, paths["catalog"]), raw_schema("catalog"), max_bytes)
    ads = parse_json(read_lines(spark, paths.get("ads")), raw_schema("ads"), max_bytes)
    return {"events": events, "catalog": classify_catalog(catalog), "ads": classify_ads(ads)}


FEEDS = ("events", "catalog", "ads")
REQUIRED_FEEDS = ("events", "catalog")  # ads are optional: a shop may run no ads at all
VOLUME_HISTORY_DAYS = 7
TARGETS = {"events": "events", "catalog": "items", "ads": "ads"}
BUILDERS = {"events": events_table_rows, "catalog": items_table_rows, "ads": ads_table_rows}


def recent_event_counts(spark: SparkSession, cfg: Config, date: dt.date) -> list[int]:
    """Valid events written on each of the 7 days before ``date``, from the ledger (no table scan)."""
    from recs.ledger import latest_runs

    latest = latest_runs(spark, cfg)
    if latest is None:
        return []
    start = date - dt.timedelta(days=VOLUME_HISTORY_DAYS)
    rows = (
        latest.where(
            (F.col("step") == "ingest")
            & (F.col("status") == "succeeded")
            & F.col("run_date").between(F.lit(start), F.lit(date - dt.timedelta(days=1)))
        )
        .select(F.col("row_counts")["events_written"].alias("n"))
        .collect()
    )  # at most 7 rows
    return [r.n for r in rows if r.n is not None]


def check_feeds(
    counts: dict[str, FeedCounts], paths: dict[str, str | None], cfg: Config, history: list[int]
) -> None:
    """Refuse a day whose feeds cannot make a sound night, naming the feed, the figure and the limit.

    Events and the catalog need valid rows; no feed may have more than
    ``ingest.max_bad_fraction`` of its lines quarantined; the day's valid events may not fall
    below ``ingest.min_volume_ratio`` of the median of the last 7 ingested days (3 needed).
    """
    limit = cfg.ingest.max_bad_fraction
    for feed in REQUIRED_FEEDS:
        c = counts[feed]
        if c.written == 0:
            raise FeedRejectedError(
                f"{feed} feed {paths[feed]} has no valid rows (read {c.read} lines, quarantined "
                f"{c.quarantined}); see events_quarantine for the reasons"
            )
    for feed, c in counts.items():
        if c.read and c.quarantined / c.read > limit:
            raise FeedRejectedError(
                f"{feed} feed {paths[feed]}: {c.quarantined} of {c.read} lines quarantined "
                f"({c.quarantined / c.read:.1%}), more than ingest.max_bad_fraction = {limit:.1%}"
            )
    ratio = cfg.ingest.min_volume_ratio
    if ratio > 0 and len(history) >= 3:
        usual = statistics.median(history)
        if counts["events"].written < ratio * usual:
            raise FeedRejectedError(
                f"events feed {paths['events']}: {counts['events'].written} valid events, below "
                f"ingest.min_volume_ratio = {ratio} of the last {len(history)} days' median ({usual:.0f})"
            )


def run(spark: SparkSession, cfg: Config, date: dt.date) -> dict[str, FeedCounts]:
    """Ingest the raw events, catalog and ads of ``date``; returns the counts per feed.

    The quarantine is written first, so rejected rows and their reasons are kept even when a
    later write fails. Each feed's written count is checked against its own Delta commit.
    """
    paths: dict[str, str | None] = {feed: raw_partition(cfg, feed, date) for feed in FEEDS}
    with record_step(spark, cfg, "ingest", date) as step:
        for feed in REQUIRED_FEEDS:
            require_input(spark, paths[feed])
        if not input_files(spark, paths["ads"]):  # a shop without ads: no ad rows, nothing else changes
            log.info("ingest %s: no ads feed at %s; the day has no ads", date, paths["ads"])
            step.details["ads_feed"] = "absent"
            paths["ads"] = None
        classified = classify_feeds(spark, cfg, paths, date)
        for df in classified.values():
            df.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts = {feed: outcome_counts(df) for feed, df in classified.items()}
            for feed, c in counts.items():
                c.check(feed)
            quarantine = None
            for feed, df in classified.items():
                q = quarantined_rows(df, feed, step.run_id, date)
                quarantine = q if quarantine is None else quarantine.unionByName(q)
            tag = f"recs-ingest-{step.run_id}"
            # The quarantine first: rejected rows and their reasons are kept even when the day is refused.
            replace_partition(quarantine, cfg, "events_quarantine", date, tag=tag)
            step.details["tables_written"] = ["events_quarantine"]
            quarantined = committed_rows(spark, cfg, "events_quarantine", tag)
            expected = sum(c.quarantined for c in counts.values())
            if quarantined != expected:
                raise CountMismatchError(f"quarantine: classified {expected} rows, Delta wrote {quarantined}")
            # Refused feeds replace nothing: readers keep whatever D held before.
            check_feeds(counts, paths, cfg, recent_event_counts(spark, cfg, date))
            for feed, df in classified.items():
                replace_partition(BUILDERS[feed](valid_rows(df), date), cfg, TARGETS[feed], date, tag=tag)
                step.details["tables_written"].append(TARGETS[feed])
                written = committed_rows(spark, cfg, TARGETS[feed], tag)
                if written != counts[feed].written:
                    raise CountMismatchError(
                        f"{feed}: classified {counts[feed].written} valid rows, Delta wrote {written}"
                    )
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
