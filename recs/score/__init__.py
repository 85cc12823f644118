"""Scoring stage: candidates -> filters -> DLRM ranking -> top-k recommendations and ad candidates.

``run(spark, cfg, date)`` uses features as of D and the model promoted as of D (hashing with
the model's own feature spec); with no promoted model yet it still writes recommendations,
ordered by the candidate sources themselves, and says so in ``model_version``. Every known
user (an event within ``score.user_retention_days``) gets rows, lapsed ones from the
fallback sources.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recs.config import Config

log = logging.getLogger("recs")

NO_MODEL = "none:candidate-order"


@dataclass(frozen=True)
class ScoringModel:
    version: str
    artifact: str
    spec: object  # FeatureSpec


def load_promoted(spark: SparkSession, cfg: Config, date: dt.date) -> ScoringModel | None:
    """The model that serves ``date`` (validated on or before it), verified on the driver."""
    from recs.model.artifacts import load_model
    from recs.model.registry import artifact_location, promoted_model

    row = promoted_model(spark, cfg, date)
    if row is None:
        return None
    artifact = artifact_location(cfg, row.artifact_path)
    # Verify the artefact on the driver first: a corrupt model fails the step with a clear error.
    _, spec, _ = load_model(artifact)
    return ScoringModel(row.model_version, artifact, spec)


def scoring_users(
    spark: SparkSession, cfg: Config, date: dt.date, user_features: DataFrame | None = None
) -> DataFrame:
    """Every known user as of ``date`` with their features (null for users outside the windows)."""
    from recs.features.windows import known_users
    from recs.tables import read_date, read_range

    days = cfg.score.user_retention_days
    user_daily = read_range(spark, cfg, "user_daily", date - dt.timedelta(days=days - 1), date)
    known = known_users(user_daily, date, days).select("user_id")
    if user_features is None:
        user_features = read_date(spark, cfg, "user_features", date)
    return known.join(user_features, "user_id", "left")


def with_context(rows: DataFrame, users: DataFrame) -> DataFrame:
    """Scoring-time context, defined once with training's: see ``request_context`` and
    ``with_pool_context`` (pool rows carry their source and position, ad rows none).
    """
    from recs.features.examples import request_context, with_pool_context

    return with_pool_context(rows.join(request_context(users), "user_id", "left"))


def ranking_inputs(
    spark: SparkSession,
    cfg: Config,
    rows: DataFrame,
    users: DataFrame,
    items: DataFrame,
    spec,
    date: dt.date,
    ads: DataFrame | None,
    keep: list[str],
) -> DataFrame:
    """``rows`` (user, item[, ad]) with features as of ``date``, hashed with ``spec``: model-ready."""
    from recs.features import user_item_as_of
    from recs.features.inputs import assemble, feature_frame

    pairs = rows.select("user_id", "item_id").where(F.col("item_id").isNotNull()).distinct()
    frame = feature_frame(
        with_context(rows, users), users, items, user_item_as_of(spark, cfg, pairs, date), ads
    )
    return assemble(frame, spec, keep)


def model_scores(
    spark: SparkSession,
    cfg: Config,
    rows: DataFrame,
    users: DataFrame,
    items: DataFrame,
    model: ScoringModel,
    date: dt.date,
    ads: DataFrame | None,
    keep: list[str],
) -> DataFrame:
    from recs.score.rank import score_with_model

    inputs = ranking_inputs(spark, cfg, rows, users, items, model.spec, date, ads, keep)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.score.batch_size))
    return score_with_model(
        inputs,
        model.artifact,
        (model.spec.num_dense, model.spec.sparse_width),
        device=cfg.train.device,
        batch_size=cfg.score.batch_size,
        threads=cfg.score.threads_per_task,
    )


def pool_positions(candidates: DataFrame) -> DataFrame:
    """Each user's candidates numbered 1.. in the no-model order: source priority, then each
    source's own score, then item_id. Scoring without a model serves this order, and the
    model sees the position as a feature (what it has to improve on).
    """
    from recs.score.candidates import source_priority

    w = Window.partitionBy("user_id").orderBy(
        source_priority(), F.col("source_score").desc(), F.col("item_id")
    )
    return candidates.withColumn("position", F.row_number().over(w))


def fallback_scores(pool: DataFrame) -> DataFrame:
    """Without a model: the pool's own order, score = 1/position."""
    return pool.withColumn("score", 1.0 / F.col("position"))


def top_k(scored: DataFrame, k: int, max_per_category: int, key: str = "item_id") -> DataFrame:
    """Rank 1..k per user by score desc, ties by ``key``; optionally at most N per category."""
    if max_per_category > 0:
        per_cat = Window.partitionBy("user_id", "category_id").orderBy(F.col("score").desc(), F.col(key))
        scored = scored.withColumn("_c", F.row_number().over(per_cat)).where(F.col("_c") <= max_per_category)
    w = Window.partitionBy("user_id").orderBy(F.col("score").desc(), F.col(key))
    return scored.withColumn("rank", F.row_number().over(w)).where(F.col("rank") <= k)


def recommendation_candidates(spark: SparkSession, cfg: Config, date: dt.date, users, items_f, items):
    from recs.score import candidates as C
    from recs.tables import read_range

    s = cfg.score
    # Exactly the configured windows: recent items and the bought filter read their own days.
    days = max(s.recent_days, s.bought_window_days)
    ui = read_range(spark, cfg, "user_item_daily", date - dt.timedelta(days=days - 1), date)
    popular = C.popularity(items_f)
    events = read_range(spark, cfg, "events", date - dt.timedelta(days=s.covisit_days - 1), date)
    neighbours = C.covisitation(events, s.covisit_max_items_per_session, s.covisit_neighbours)
    sources = [
        C.recent_candidates(ui, date, s.recent_days, s.recent_cap),
        C.covisit_candidates(users, neighbours, s.recent_cap * 3),
        C.category_popular_candidates(users, popular, s.category_popular_cap),
        C.global_popular_candidates(users, popular, max(s.global_popular_cap, s.k)),
    ]
    return C.merge_and_filter(sources, C.bought_items(ui, date, s.bought_window_days), items)


def candidate_pool(
    spark: SparkSession, cfg: Config, date: dt.date, users: DataFrame, items_f: DataFrame, items: DataFrame
) -> DataFrame:
    """Every eligible candidate of ``users`` as of ``date``, numbered in the no-model order."""
    pool = recommendation_candidates(spark, cfg, date, users, items_f, items)
    return pool_positions(pool).withColumn("pool_date", F.lit(date))


def stored_pool(spark: SparkSession, cfg: Config, date: dt.date) -> DataFrame:
    """The pool the features step stored for ``date``; rebuilt from the same inputs if absent
    (a lakehouse from before the table existed), so both give the same rows.
    """
    from recs.features import stored_or_computed_features
    from recs.tables import read_range, table_exists, table_path

    if table_exists(spark, table_path(cfg, "candidate_pool")):
        pool = read_range(spark, cfg, "candidate_pool", date, date)
        if not pool.isEmpty():
            return pool
    users_f, items_f = stored_or_computed_features(spark, cfg, date)
    users = scoring_users(spark, cfg, date, users_f)
    items = read_range(spark, cfg, "items", date, date)
    return candidate_pool(spark, cfg, date, users, items_f, items)


def complete_pool(
    spark: SparkSession,
    cfg: Config,
    date: dt.date,
    pool: DataFrame,
    users: DataFrame,
    items_f: DataFrame,
    items: DataFrame,
) -> DataFrame:
    """``pool`` plus candidates, from the same sources, for known users it lacks.

    The stored pool covers every user known when the features step ran; a user that an
    older day's rerun added since would otherwise get nothing.
    """
    missing = users.join(pool.select("user_id").distinct(), "user_id", "left_anti")
    if missing.isEmpty():
        return pool
    log.warning("score %s: %d known users are not in the stored pool; adding theirs", date, missing.count())
    # The recent source reads every user's rollups, so keep the missing users' rows only.
    extra = candidate_pool(spark, cfg, date, missing, items_f, items).join(
        missing.select("user_id"), "user_id"
    )
    return pool.unionByName(extra)


def ad_rows(spark: SparkSession, cfg: Config, date: dt.date, users: DataFrame, ads: DataFrame) -> DataFrame:
    from recs.score.ads import FREQUENCY_DAYS, eligible_pairs, frequency_capped, live_ads, serving_date
    from recs.tables import read_range

    events = read_range(spark, cfg, "events", date - dt.timedelta(days=FREQUENCY_DAYS - 1), date)
    capped = frequency_capped(events, date, cfg.score.frequency_cap)
    return eligible_pairs(users, live_ads(ads, serving_date(date)), capped)


def record_health(
    spark: SparkSession, cfg: Config, date: dt.date, users: DataFrame, items: DataFrame, *, tag: str
) -> tuple[dict[str, float | None], list[str]]:
    """Check the partitions just written and store the checks in ``output_health``.

    Returns the figures and a line for each failed check.
    """
    from recs.schemas import table_schema
    from recs.score import health as H
    from recs.tables import read_date, read_range, replace_partition

    day_before = date - dt.timedelta(days=1)
    recs = read_date(spark, cfg, "recommendations", date)
    previous = read_range(spark, cfg, "recommendations", day_before, day_before)
    ads = read_range(spark, cfg, "ad_candidates", date, date)
    figures = H.recommendation_figures(recs, users, previous, items, cfg.score.k) | H.ad_figures(ads)
    checks = H.checks(figures, cfg.health)
    rows = [(c.name, c.value, c.limit, c.kind, c.ok, date) for c in checks]
    health = spark.createDataFrame(rows, table_schema("output_health"))
    replace_partition(health, cfg, "output_health", date, tag=tag)
    return figures, [f"{c.name} = {c.value:.4g} ({c.kind} {c.limit:g})" for c in checks if not c.ok]


def run(spark: SparkSession, cfg: Config, date: dt.date) -> dict[str, int]:
    from recs.ledger import record_step, require_done
    from recs.tables import committed_rows, read_date, read_range, replace_partition

    s = cfg.score
    with record_step(spark, cfg, "score", date) as step:
        tag = f"recs-score-{step.run_id}"
        require_done(spark, cfg, "features", date, by="score")
        # Read by the candidate sources, the ranking context, ad targeting and the health checks.
        users = scoring_users(spark, cfg, date).persist(StorageLevel.MEMORY_AND_DISK)
        items_f = read_date(spark, cfg, "item_features", date)
        items = read_date(spark, cfg, "items", date)
        ads = read_range(spark, cfg, "ads", date, date)  # optional: no ads, no ad candidates
        model = load_promoted(spark, cfg, date)
        version = model.version if model else NO_MODEL
        step.details["model_version"] = version
        if model is None:
            log.warning("score %s: no promoted model; ranking by candidate sources", date)

        candidates = complete_pool(spark, cfg, date, stored_pool(spark, cfg, date), users, items_f, items)
        candidates.persist(StorageLevel.MEMORY_AND_DISK)
        step.counts["candidate_pairs"] = candidates.count()
        if model is not None:
            rows = candidates.withColumn("is_ad", F.lit(False)).withColumn(
                "ad_id", F.lit(None).cast("string")
            )
            keep = ["user_id", "item_id", "candidate_source", "category_id", "is_ad"]
            scored = model_scores(spark, cfg, rows, users, items_f, model, date, None, keep)
        else:
            scored = fallback_scores(candidates)
        recs = top_k(scored, s.k, s.max_per_category).select(
            "user_id",
            "rank",
            "item_id",
            "score",
            "candidate_source",
            F.lit(version).alias("model_version"),
            F.lit(date).alias("rec_date"),
        )
        replace_partition(recs, cfg, "recommendations", date, tag=tag)
        candidates.unpersist()

        pairs = ad_rows(spark, cfg, date, users, ads)
        if model is not None:
            rows = pairs.withColumn("is_ad", F.lit(True))
            keep = ["user_id", "ad_id", "campaign_id", "item_id", "bid", "is_ad"]
            ad_scored = model_scores(spark, cfg, rows, users, items_f, model, date, ads, keep)
        else:
            ctr = items_f.select("item_id", F.col("ctr_28d").alias("score"))
            ad_scored = pairs.join(ctr, "item_id", "left").fillna({"score": 0.0})
        ranked = top_k(
            ad_scored.withColumn("pctr", F.col("score")).withColumn("score", F.col("pctr") * F.col("bid")),
            s.ads_per_user,
            0,
            key="ad_id",
        )
        ad_out = ranked.select(
            "user_id",
            "rank",
            "ad_id",
            "campaign_id",
            "item_id",
            "pctr",
            "bid",
            F.col("score").alias("ecpm"),
            F.lit(version).alias("model_version"),
            F.lit(date).alias("rec_date"),
        )
        replace_partition(ad_out, cfg, "ad_candidates", date, tag=tag)

        figures, failed = record_health(spark, cfg, date, users, items, tag=tag)
        users.unpersist()
        step.counts.update(
            {
                "users_scored": int(figures["users_with_rows"]),
                "users_with_fewer_than_k": int(figures["users_short_of_k"]),
                "users_without_rows": int(figures["users_without_rows"]),
                "recommendation_rows": committed_rows(spark, cfg, "recommendations", tag),
                "ad_candidate_rows": committed_rows(spark, cfg, "ad_candidates", tag),
                "health_checks_failed": len(failed),
            }
        )
        if failed:
            step.status = "unhealthy"
            step.details["unhealthy"] = failed
            log.error("score %s: output health checks failed: %s", date, "; ".join(failed))
        return dict(step.counts)
