"""Scoring stage: candidates -> filters -> DLRM ranking -> top-k recommendations and ad candidates.

``run(spark, cfg, date)`` uses features as of D and the model promoted as of D (hashing with
the model's own feature spec); with no promoted model yet it still writes recommendations,
ordered by the candidate sources themselves, and says so in ``model_version``. Every known
user (an event within ``score.user_retention_days``) gets rows, lapsed ones from the
fallback sources.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recs.config import (
    AudiencesConfig,
    Config,
    ExperimentConfig,
    HealthConfig,
    PacingConfig,
    RelatedConfig,
    ScoreConfig,
)
from recs.features.spec import FeatureSpec
from recs.frames import top_n
from recs.score.experiment import bucket, holdout_buckets

if TYPE_CHECKING:
    from recs.features.windows import UserItemWindow
    from recs.model.dlrm import DLRM
    from recs.score.pacing import Paced

log = logging.getLogger("recs")

NO_MODEL = "none:candidate-order"


@dataclass(frozen=True)
class ScoringModel:
    version: str
    artifact: str
    spec: FeatureSpec
    net: DLRM = field(compare=False, repr=False)  # loaded once on the driver; executors load their own


@dataclass(frozen=True)
class CandidateInputs:
    """What the candidate sources of ``date`` read besides users and items."""

    date: dt.date
    user_item_daily: DataFrame  # the longer of score.recent_days and score.bought_window_days
    events: DataFrame  # score.covisit_days of events, for co-visitation


@dataclass(frozen=True)
class ScoreInputs:
    """Everything the score step reads for ``date``."""

    date: dt.date
    users: DataFrame  # every known user, with user_features as of D (null outside the windows)
    item_features: DataFrame
    items: DataFrame
    ads: DataFrame  # optional: a shop without ads has an empty partition
    pool: DataFrame  # the candidate pool the features step stored for D
    sources: CandidateInputs  # for known users the stored pool lacks
    signals: UserItemWindow  # what the ranking's user-item signals are looked up in
    live_ads: DataFrame  # ads that may serve on D+1 (recs.score.ads.live_ads)
    capped: DataFrame  # (user_id, ad_id) pairs at the frequency cap in the 7 days ending on D
    baskets: DataFrame  # user_item_daily over related.bought_together_days
    model: ScoringModel | None  # promoted as of D; None ranks by the candidate sources
    item_vectors: DataFrame | None  # (bucket, vec) of the model's item embeddings


def load_promoted(spark: SparkSession, cfg: Config, date: dt.date) -> ScoringModel | None:
    """The model that serves ``date`` (validated on or before it), verified on the driver."""
    from recs.model.artifacts import load_model
    from recs.model.registry import artifact_location, promoted_model

    row = promoted_model(spark, cfg, date)
    if row is None:
        return None
    artifact = artifact_location(cfg, row.artifact_path)
    # Verify the artefact on the driver first: a corrupt model fails the step with a clear error.
    net, spec, _ = load_model(artifact)
    return ScoringModel(row.model_version, artifact, spec, net)


def read_scoring_users(
    spark: SparkSession, cfg: Config, date: dt.date, user_features: DataFrame | None = None
) -> DataFrame:
    """Every known user as of ``date`` with their features (null for users outside the windows)."""
    from recs.tables import read_date, read_range

    days = cfg.score.user_retention_days
    user_daily = read_range(spark, cfg, "user_daily", date - dt.timedelta(days=days - 1), date)
    if user_features is None:
        user_features = read_date(spark, cfg, "user_features", date)
    return with_known_users(user_daily, user_features, date, days)


def with_known_users(user_daily: DataFrame, user_features: DataFrame, date: dt.date, days: int) -> DataFrame:
    from recs.features.windows import known_users

    return known_users(user_daily, date, days).select("user_id").join(user_features, "user_id", "left")


def read_candidate_inputs(spark: SparkSession, cfg: Config, date: dt.date) -> CandidateInputs:
    from recs.tables import read_range

    s = cfg.score
    # Exactly the configured windows: recent items and the bought filter read their own days.
    days = max(s.recent_days, s.bought_window_days)
    return CandidateInputs(
        date=date,
        user_item_daily=read_range(spark, cfg, "user_item_daily", date - dt.timedelta(days=days - 1), date),
        events=read_range(spark, cfg, "events", date - dt.timedelta(days=s.covisit_days - 1), date),
    )


def read_pool(spark: SparkSession, cfg: Config, date: dt.date) -> DataFrame:
    """The pool the features step stored for ``date``; rebuilt from the same inputs if absent
    (a lakehouse from before the table existed), so both give the same rows.
    """
    from recs.features import read_features
    from recs.tables import read_range, table_exists, table_path

    if table_exists(spark, table_path(cfg, "candidate_pool")):
        pool = read_range(spark, cfg, "candidate_pool", date, date)
        if not pool.isEmpty():
            return pool
    users_f, items_f = read_features(spark, cfg, date)
    users = read_scoring_users(spark, cfg, date, users_f)
    items = read_range(spark, cfg, "items", date, date)
    return candidate_pool(read_candidate_inputs(spark, cfg, date), cfg.score, date, users, items_f, items)


def read_inputs(spark: SparkSession, cfg: Config, date: dt.date) -> ScoreInputs:
    from recs.features import read_history, user_item_window_of
    from recs.score.ads import FREQUENCY_DAYS, frequency_capped, live_ads, serving_date
    from recs.score.related import item_vectors
    from recs.tables import read_date, read_range

    model = load_promoted(spark, cfg, date)
    basket_days = dt.timedelta(days=cfg.related.bought_together_days - 1)
    ads = read_range(spark, cfg, "ads", date, date)
    ad_events = read_range(spark, cfg, "events", date - dt.timedelta(days=FREQUENCY_DAYS - 1), date)
    return ScoreInputs(
        date=date,
        users=read_scoring_users(spark, cfg, date),
        item_features=read_date(spark, cfg, "item_features", date),
        items=read_date(spark, cfg, "items", date),
        ads=ads,
        pool=read_pool(spark, cfg, date),
        sources=read_candidate_inputs(spark, cfg, date),
        signals=user_item_window_of(read_history(spark, cfg, date)),
        live_ads=live_ads(ads, serving_date(date)),
        capped=frequency_capped(ad_events, date, cfg.score.frequency_cap),
        baskets=read_range(spark, cfg, "user_item_daily", date - basket_days, date),
        model=model,
        item_vectors=item_vectors(spark, model.net, model.spec) if model else None,
    )


def with_context(rows: DataFrame, users: DataFrame) -> DataFrame:
    """Scoring-time context, defined once with training's: see ``request_context`` and
    ``with_pool_context`` (pool rows carry their source and position, ad rows none).
    """
    from recs.features.examples import request_context, with_pool_context

    return with_pool_context(rows.join(request_context(users), "user_id", "left"))


def ranking_inputs(
    rows: DataFrame,
    users: DataFrame,
    items: DataFrame,
    signals: UserItemWindow,
    spec: FeatureSpec,
    ads: DataFrame | None,
    keep: list[str],
) -> DataFrame:
    """``rows`` (user, item[, ad]) with features as of the signals' day, hashed with ``spec``."""
    from recs.features.inputs import assemble, feature_frame
    from recs.features.windows import signals_of

    pairs = rows.select("user_id", "item_id").where(F.col("item_id").isNotNull()).distinct()
    frame = feature_frame(with_context(rows, users), users, items, signals_of(pairs, signals), ads)
    return assemble(frame, spec, keep)


# The columns each model-ranked output keeps from its rows, beside the model's ``score``.
SCORED_COLUMNS = {
    "recommendations": ["user_id", "item_id", "candidate_source", "category_id", "is_ad", "bucket"],
    "ad_candidates": ["user_id", "ad_id", "campaign_id", "item_id", "bid", "is_ad", "bucket"],
    "audiences": ["audience_type", "audience_id", "user_id", "ad_id", "item_id", "is_ad", "bucket"],
}


def model_scores(
    rows: Mapping[str, DataFrame], inputs: ScoreInputs, model: ScoringModel, s: ScoreConfig, device: str
) -> DataFrame:
    """The rows of each output (named as in ``SCORED_COLUMNS``) with ``output``, their
    ``SCORED_COLUMNS`` and the model's ``score``, computed on the executors.

    All outputs share one feature join and one pass of the ranking UDF: a row's features and
    score do not depend on the rows beside it (``assemble``, ``DLRM.predict_numpy``).
    """
    from recs.score.rank import score_with_model

    tagged = [r.withColumn("output", F.lit(name)) for name, r in rows.items()]
    union = functools.reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), tagged)
    keep = ["output", *dict.fromkeys(c for name in rows for c in SCORED_COLUMNS[name])]
    features = ranking_inputs(
        union, inputs.users, inputs.item_features, inputs.signals, model.spec, inputs.ads, keep
    )
    return score_with_model(
        features,
        model.artifact,
        (model.spec.num_dense, model.spec.sparse_width),
        device=device,
        batch_size=s.batch_size,
        threads=s.threads_per_task,
    )


def model_arm_scores(inputs: ScoreInputs, rows: Mapping[str, DataFrame], cfg: Config) -> DataFrame | None:
    """``model_scores`` of the model arm of each output's ``rows`` (see ``scoring_rows``); None
    while no model is promoted."""
    if inputs.model is None:
        return None
    holdout = holdout_buckets(cfg.experiment.holdout_share)
    arms = {name: model_arm(r, holdout) for name, r in rows.items()}
    return model_scores(arms, inputs, inputs.model, cfg.score, cfg.train.device)


def scores_of(scored: DataFrame | None, output: str) -> DataFrame | None:
    """One output's rows of ``model_scores``."""
    if scored is None:
        return None
    return scored.where(F.col("output") == output).select(*SCORED_COLUMNS[output], "score")


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
        scored = top_n(scored, ["user_id", "category_id"], "score", max_per_category, tie=key)
    return top_n(scored, ["user_id"], "score", k, tie=key, rank="rank")


def recommendation_candidates(
    sources: CandidateInputs, s: ScoreConfig, users: DataFrame, items_f: DataFrame, items: DataFrame
) -> DataFrame:
    """Every source's candidates for ``users``, merged, without bought or unavailable items."""
    from recs.score import candidates as C

    date, ui = sources.date, sources.user_item_daily
    popular = C.popularity(items_f)
    neighbours = C.covisitation(sources.events, s.covisit_max_items_per_session, s.covisit_neighbours)
    found = [
        C.recent_candidates(ui, date, s.recent_days, s.recent_cap),
        C.covisit_candidates(users, neighbours, s.recent_cap * 3),
        C.category_popular_candidates(users, popular, s.category_popular_cap),
        C.global_popular_candidates(users, popular, max(s.global_popular_cap, s.k)),
    ]
    return C.merge_and_filter(found, C.bought_items(ui, date, s.bought_window_days), items)


def candidate_pool(
    sources: CandidateInputs,
    s: ScoreConfig,
    date: dt.date,
    users: DataFrame,
    items_f: DataFrame,
    items: DataFrame,
) -> DataFrame:
    """Every eligible candidate of ``users`` as of ``date``, numbered in the no-model order.

    The recent source reads every user's rollups, so rows are kept for ``users`` only.
    """
    pool = recommendation_candidates(sources, s, users, items_f, items).join(
        users.select("user_id"), "user_id"
    )
    return pool_positions(pool).withColumn("pool_date", F.lit(date))


def users_missing_from(pool: DataFrame, users: DataFrame) -> DataFrame:
    """Known users the stored pool lacks: a user that an older day's rerun added since the
    features step ran would otherwise get nothing."""
    return users.join(pool.select("user_id").distinct(), "user_id", "left_anti")


def model_arm(rows: DataFrame, holdout: int) -> DataFrame:
    """The rows the model ranks: all but the holdout buckets."""
    return rows if holdout == 0 else rows.where(F.col("bucket") >= holdout)


def by_arm(
    rows: DataFrame,
    model: ScoringModel | None,
    holdout: int,
    scored: DataFrame | None,
    without: Callable[[DataFrame], DataFrame],
) -> DataFrame:
    """``score`` for ``rows`` (which carry ``bucket``): the model's (``scored``, its ranking of
    ``model_arm(rows)``) for the model arm, ``without`` for the holdout buckets and for everyone
    while no model is promoted; ``model_version`` says which ranked each row."""
    if model is None:
        return without(rows).withColumn("model_version", F.lit(NO_MODEL))
    if scored is None:
        raise ValueError(f"model {model.version} is promoted but no rows were scored with it")
    scored = scored.withColumn("model_version", F.lit(model.version))
    if holdout == 0:
        return scored
    held = without(rows.where(F.col("bucket") < holdout)).withColumn("model_version", F.lit(NO_MODEL))
    return scored.unionByName(held, allowMissingColumns=True)


def scoring_rows(inputs: ScoreInputs, pool: DataFrame, cfg: Config) -> dict[str, DataFrame]:
    """The rows each model-ranked output chooses among, with their experiment ``bucket``: the
    recommendation pool, the eligible (user, ad) pairs and each audience's candidates."""
    from recs.score.ads import eligible_pairs
    from recs.score.audiences import audience_candidates, audience_targets

    salt, a = cfg.experiment.salt, cfg.audiences
    targets = audience_targets(inputs.live_ads, inputs.items, a.items)
    pairs = eligible_pairs(inputs.users, inputs.live_ads, inputs.capped)
    audiences = audience_candidates(targets, inputs.users, inputs.capped, a.candidates_per_audience)
    rows = {
        "recommendations": pool.withColumns({"is_ad": F.lit(False), "ad_id": F.lit(None).cast("string")}),
        "ad_candidates": pairs.withColumn("is_ad", F.lit(True)),
        "audiences": audiences.withColumn("is_ad", F.col("ad_id").isNotNull()),
    }
    return {name: r.withColumn("bucket", bucket(salt)) for name, r in rows.items()}


def rank_recommendations(
    inputs: ScoreInputs, rows: DataFrame, scored: DataFrame | None, s: ScoreConfig, e: ExperimentConfig
) -> DataFrame:
    """The ``recommendations`` rows of ``inputs.date``: the pool (``rows``) ranked by the model
    (``scored``: ``scores_of`` its model arm), by its own order for the holdout or for everyone
    without a model; top k per user."""
    ranked = by_arm(rows, inputs.model, holdout_buckets(e.holdout_share), scored, fallback_scores)
    return top_k(ranked, s.k, s.max_per_category).select(
        "user_id",
        "rank",
        "item_id",
        "score",
        "candidate_source",
        "model_version",
        "bucket",
        F.lit(inputs.date).alias("rec_date"),
    )


def rank_ads(
    inputs: ScoreInputs,
    rows: DataFrame,
    scored: DataFrame | None,
    s: ScoreConfig,
    p: PacingConfig,
    e: ExperimentConfig,
) -> Paced:
    """The ``ad_candidates`` rows of ``inputs.date``: the eligible (user, ad) pairs (``rows``)
    by eCPM (pCTR x bid), pCTR from the model (``scored``), or the item's smoothed CTR for the
    holdout and without a model; then paced so that no campaign is planned past its daily
    budget (``recs.score.pacing``).
    """
    from recs.score.pacing import campaign_budgets, pace

    def without(rows: DataFrame) -> DataFrame:
        ctr = inputs.item_features.select("item_id", F.col("ctr_28d").alias("score"))
        return rows.join(ctr, "item_id", "left").fillna({"score": 0.0})

    ranked = by_arm(rows, inputs.model, holdout_buckets(e.holdout_share), scored, without)
    ranked = ranked.withColumnRenamed("score", "pctr").withColumn("ecpm", F.col("pctr") * F.col("bid"))
    if p.enabled:  # every pacing round re-ranks it: rank once, and cut the plan there
        ranked = ranked.localCheckpoint()
    paced = pace(ranked, campaign_budgets(inputs.live_ads), s.ads_per_user, p)
    columns = (
        "user_id",
        "rank",
        "ad_id",
        "campaign_id",
        "item_id",
        "pctr",
        "bid",
        "ecpm",
        "expected_spend",
        "model_version",
        "bucket",
        F.lit(inputs.date).alias("rec_date"),
    )
    return dataclasses.replace(paced, ranked=paced.ranked.select(*columns))


def rank_audiences(
    inputs: ScoreInputs, rows: DataFrame, scored: DataFrame | None, a: AudiencesConfig, e: ExperimentConfig
) -> DataFrame:
    """The ``audiences`` rows of ``inputs.date``: each live campaign's and listed item's ``a.size``
    users by pCTR (``scored``), among the candidates chosen by category affinity (``rows``,
    ``recs.score.audiences``)."""
    from recs.score.audiences import affinity_scores, top_users

    def without(rows: DataFrame) -> DataFrame:
        return affinity_scores(rows, inputs.item_features)

    ranked = by_arm(rows, inputs.model, holdout_buckets(e.holdout_share), scored, without)
    return top_users(ranked, a.size).select(
        "audience_type",
        "audience_id",
        "rank",
        "user_id",
        "ad_id",
        "item_id",
        "score",
        "model_version",
        "bucket",
        F.lit(inputs.date).alias("rec_date"),
    )


def related_items(inputs: ScoreInputs, s: ScoreConfig, r: RelatedConfig) -> tuple[DataFrame, DataFrame]:
    """(``similar_items``, ``bought_together``) rows of ``inputs.date``."""
    from recs.score.candidates import covisitation
    from recs.score.related import bought_together, similar_items

    date, model = inputs.date, inputs.model
    covisit = covisitation(inputs.sources.events, s.covisit_max_items_per_session, s.covisit_neighbours)
    spec = model.spec if model else None
    similar = similar_items(inputs.items, inputs.item_features, covisit, inputs.item_vectors, spec, r)
    similar = similar.select(
        "item_id",
        "rank",
        "neighbour_id",
        "score",
        "source",
        F.lit(model.version if model else NO_MODEL).alias("model_version"),
        F.lit(date).alias("rec_date"),
    )
    together = bought_together(inputs.baskets, inputs.items, date, r).withColumn("rec_date", F.lit(date))
    return similar, together


def health_rows(
    recs: DataFrame,
    previous: DataFrame,
    ads: DataFrame,
    users: DataFrame,
    items: DataFrame,
    k: int,
    limits: HealthConfig,
    date: dt.date,
) -> tuple[dict[str, float | None], list[tuple], list[str]]:
    """(figures, ``output_health`` rows, a line for each failed check) of the rows written."""
    from recs.score import health as H

    figures = H.output_figures(recs, users, previous, items, k, ads)
    checks = H.checks(figures, limits)
    rows = [(c.name, None, c.value, c.limit, c.kind, c.ok, date) for c in checks]
    return figures, rows, [f"{c.name} = {c.value:.4g} ({c.kind} {c.limit:g})" for c in checks if not c.ok]


def spend_health(ads: DataFrame, paced: Paced, date: dt.date) -> tuple[DataFrame, dict, list[str]]:
    """(``output_health`` rows of planned spend per campaign, pacing figures, failed checks)."""
    from recs.score import health as H

    spend = H.planned_spend_checks(ads, paced.budgets).withColumn("rec_date", F.lit(date))
    figures = {"rounds": paced.rounds} | H.pacing_figures(ads, paced.unpaced, paced.budgets)
    over = spend.where(~F.col("ok")).orderBy("subject").limit(20).collect()
    return spend, figures, [f"planned_spend[{r.subject}] = {r.value:.4g} (max {r.limit:g})" for r in over]


def run(spark: SparkSession, cfg: Config, date: dt.date) -> dict[str, int]:
    """Rank D's pool and eligible ads; write recommendations, ad candidates, audiences, the
    item-to-item tables and the night's health checks."""
    from recs.ledger import record_step, require_done
    from recs.schemas import table_schema
    from recs.tables import committed_rows, read_date, read_range, replace_partition

    s = cfg.score
    with record_step(spark, cfg, "score", date) as step:
        tag = f"recs-score-{step.run_id}"
        require_done(spark, cfg, "features", date, by="score")
        inputs = read_inputs(spark, cfg, date)
        # Read by the candidate sources, the ranking context, ad targeting and the health checks.
        inputs.users.persist(StorageLevel.MEMORY_AND_DISK)
        inputs.capped.persist(StorageLevel.MEMORY_AND_DISK)  # ad lists and audiences: one events scan
        for frame in inputs.signals.frames():  # recommendations, ads, audiences: one window sum
            frame.persist(StorageLevel.MEMORY_AND_DISK)
        step.details["model_version"] = inputs.model.version if inputs.model else NO_MODEL
        if inputs.model is None:
            log.warning("score %s: no promoted model; ranking by candidate sources", date)
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(s.batch_size))

        pool = inputs.pool
        missing = users_missing_from(pool, inputs.users)
        if not missing.isEmpty():
            log.warning("score %s: %d known users lack a stored pool; adding theirs", date, missing.count())
            extra = candidate_pool(inputs.sources, s, date, missing, inputs.item_features, inputs.items)
            # The recent source reads every user's rollups, so keep the missing users' rows only.
            pool = pool.unionByName(extra.join(missing.select("user_id"), "user_id"))
        pool.persist(StorageLevel.MEMORY_AND_DISK)
        step.counts["candidate_pairs"] = pool.count()
        rows, e = scoring_rows(inputs, pool, cfg), cfg.experiment
        # Recommendations, ads and audiences, scored by one pass of the model and kept for all three.
        scored = model_arm_scores(inputs, rows, cfg)
        if scored is not None:
            scored.persist(StorageLevel.MEMORY_AND_DISK)
        ranked = rank_recommendations(
            inputs, rows["recommendations"], scores_of(scored, "recommendations"), s, e
        )
        replace_partition(ranked, cfg, "recommendations", date, tag=tag)
        pool.unpersist()
        paced = rank_ads(inputs, rows["ad_candidates"], scores_of(scored, "ad_candidates"), s, cfg.pacing, e)
        replace_partition(paced.ranked, cfg, "ad_candidates", date, tag=tag)
        audiences = rank_audiences(
            inputs, rows["audiences"], scores_of(scored, "audiences"), cfg.audiences, e
        )
        replace_partition(audiences, cfg, "audiences", date, tag=tag)
        if scored is not None:
            scored.unpersist()
        similar, together = related_items(inputs, s, cfg.related)
        replace_partition(similar, cfg, "similar_items", date, tag=tag)
        replace_partition(together, cfg, "bought_together", date, tag=tag)

        day_before = date - dt.timedelta(days=1)
        ads = read_range(spark, cfg, "ad_candidates", date, date)
        figures, rows, failed = health_rows(
            read_date(spark, cfg, "recommendations", date),
            read_range(spark, cfg, "recommendations", day_before, day_before),
            ads,
            inputs.users,
            inputs.items,
            s.k,
            cfg.health,
            date,
        )
        health = spark.createDataFrame(rows, table_schema("output_health"))
        if cfg.pacing.enabled:
            spend, pacing, over = spend_health(ads, paced, date)
            health = health.unionByName(spend)
            failed += over
            step.details["pacing"] = pacing
        replace_partition(health, cfg, "output_health", date, tag=tag)
        inputs.users.unpersist()
        inputs.capped.unpersist()
        for frame in inputs.signals.frames():
            frame.unpersist()
        step.counts.update(
            {
                "users_scored": int(figures["users_with_rows"]),
                "users_with_fewer_than_k": int(figures["users_short_of_k"]),
                "users_without_rows": int(figures["users_without_rows"]),
                "recommendation_rows": committed_rows(spark, cfg, "recommendations", tag),
                "ad_candidate_rows": committed_rows(spark, cfg, "ad_candidates", tag),
                "audience_rows": committed_rows(spark, cfg, "audiences", tag),
                "similar_items_rows": committed_rows(spark, cfg, "similar_items", tag),
                "bought_together_rows": committed_rows(spark, cfg, "bought_together", tag),
                "health_checks_failed": len(failed),
            }
        )
        if failed:
            step.status = "unhealthy"
            step.details["unhealthy"] = failed
            log.error("score %s: output health checks failed: %s", date, "; ".join(failed))
        return dict(step.counts)
