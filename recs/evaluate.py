"""Offline evaluation: D-1's recommendations against what users did on D.

Ranking metrics (recall, NDCG, hit rate at each k; MRR at the largest k; catalog coverage)
are computed for the model's recommendations and, the same way, for three baselines built
from the same night's inputs: global popularity, the candidate sources' own order without
a model (what the ranker must beat to earn its place) and the user's recent items. The
candidate pool's recall (the share of D's items that any source proposed) bounds what any
ranker could reach. The serving model's AUC / log-loss on D's examples come alongside.
Results go to ``eval_metrics`` partitioned by ``eval_date``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recs.config import Config
from recs.errors import StepSkipped
from recs.frames import exact_mean, exact_sum, one_row, top_n
from recs.schemas import interaction_events
from recs.values import finite_or_none, metric_text

if TYPE_CHECKING:
    from recs.model.batches import ExampleStream
    from recs.model.dlrm import DLRM

log = logging.getLogger("recs")


def relevant_items(events: DataFrame) -> DataFrame:
    """(user_id, item_id) pairs the user interacted with: the ground truth."""
    return (
        events.where(F.col("event_type").isin(*interaction_events()) & F.col("item_id").isNotNull())
        .select("user_id", "item_id")
        .distinct()
    )


def ranking_aggregate(recs: DataFrame, relevant: DataFrame, ks: list[int]) -> DataFrame:
    """One row: the mean per-user metrics that ``ranking_values`` reads (see ``ranking_metrics``)."""
    users = recs.select("user_id").distinct().join(relevant.select("user_id").distinct(), "user_id")
    n_rel = relevant.join(users, "user_id").groupBy("user_id").agg(F.count(F.lit(1)).alias("n_rel"))
    hits = recs.join(relevant, ["user_id", "item_id"]).select("user_id", "rank")
    top = max(ks)
    aggs = [F.min(F.when(F.col("rank") <= top, F.col("rank"))).alias("first_hit")]
    for k in ks:
        in_k = F.col("rank") <= k
        aggs += [
            F.count_if(in_k).alias(f"hits_{k}"),
            exact_sum(F.when(in_k, 1.0 / F.log2(F.col("rank") + 1)).otherwise(0.0)).alias(f"dcg_{k}"),
        ]
    per_user = n_rel.join(hits.groupBy("user_id").agg(*aggs), "user_id", "left").fillna(0)
    means = [F.count(F.lit(1)).alias("users")]
    reciprocal = F.when(F.col("first_hit") > 0, 1.0 / F.col("first_hit")).otherwise(0.0)
    means.append(exact_mean(reciprocal).alias("mrr"))
    for k in ks:
        ideal = F.aggregate(
            F.sequence(F.lit(1), F.least(F.col("n_rel"), F.lit(k))),
            F.lit(0.0),
            lambda acc, i: acc + 1.0 / F.log2(i + 1),
        )
        means += [
            exact_mean(F.col(f"hits_{k}") / F.col("n_rel")).alias(f"recall_{k}"),
            exact_mean(F.col(f"dcg_{k}") / ideal).alias(f"ndcg_{k}"),
            exact_mean((F.col(f"hits_{k}") > 0).cast("double")).alias(f"hit_rate_{k}"),
        ]
    return per_user.agg(*means)


def ranking_values(row: dict, ks: list[int]) -> dict[tuple[str, int | None], float]:
    out: dict[tuple[str, int | None], float] = {("users_evaluated", None): float(row["users"] or 0)}
    out[("mrr", max(ks))] = _num(row["mrr"])
    for k in ks:
        for m in ("recall", "ndcg", "hit_rate"):
            out[(m, k)] = _num(row[f"{m}_{k}"])
    return out


def ranking_metrics(
    recs: DataFrame, relevant: DataFrame, ks: list[int]
) -> dict[tuple[str, int | None], float]:
    """Mean per-user metrics over users who have both recommendations and relevant items.

    ``recs`` has user_id, item_id, rank (1-based); relevance is binary. MRR counts a first
    hit only within the largest k, so systems with longer lists are not favoured.
    """
    return ranking_values(ranking_aggregate(recs, relevant, ks).first().asDict(), ks)


def _num(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def coverage_aggregate(recs: DataFrame, ks: list[int]) -> DataFrame:
    """One row: the distinct items in anyone's top k, for each k."""
    return recs.agg(
        *[F.count_distinct(F.when(F.col("rank") <= k, F.col("item_id"))).alias(f"c{k}") for k in ks]
    )


def catalog_size(catalog: DataFrame) -> DataFrame:
    return catalog.agg(F.count_if(F.col("in_stock")).alias("size"))


def coverage_values(row: dict, size: int | None, ks: list[int]) -> dict[tuple[str, int | None], float]:
    return {("coverage", k): (row[f"c{k}"] / size if size else float("nan")) for k in ks}


def coverage(recs: DataFrame, catalog: DataFrame, ks: list[int]) -> dict[tuple[str, int | None], float]:
    """Share of the in-stock catalog that appears in anyone's top k."""
    row = one_row(coverage_aggregate(recs, ks), catalog_size(catalog))
    return coverage_values(row, row["size"], ks)


def popularity_recs(users: DataFrame, item_features: DataFrame, k: int) -> DataFrame:
    """The baseline: everyone gets the same most popular in-stock items, ranked 1..k."""
    from recs.score.candidates import popularity

    ranked = top_n(popularity(item_features), [], "source_score", k, rank="rank")
    return users.crossJoin(F.broadcast(ranked.select("item_id", "rank")))


def pool_recall_aggregate(candidates: DataFrame, relevant: DataFrame, users: DataFrame) -> DataFrame:
    """One row, ``pool_recall``: see ``pool_recall``."""
    rel = relevant.join(users, "user_id")
    per_user = (
        rel.join(
            candidates.select("user_id", "item_id", F.lit(1).alias("_in")), ["user_id", "item_id"], "left"
        )
        .groupBy("user_id")
        .agg((F.count("_in") / F.count(F.lit(1))).alias("r"))
    )
    return per_user.agg(exact_mean("r").alias("pool_recall"))


def pool_recall(candidates: DataFrame, relevant: DataFrame, users: DataFrame) -> float:
    """Mean over ``users`` with relevant items of the share of them that the pool proposed."""
    return _num(pool_recall_aggregate(candidates, relevant, users).first()[0])


def baseline_lists(candidates: DataFrame, k: int) -> dict[str, DataFrame]:
    """The no-model rankings of a night's candidate pool (numbered by ``pool_positions``):
    source order, and recent items alone."""
    from recs.score import fallback_scores, top_k

    recent = candidates.where(F.col("candidate_source") == "recent").withColumn(
        "score", F.col("source_score")
    )
    return {
        "candidate_order": top_k(fallback_scores(candidates), k, 0),
        "recent": top_k(recent, k, 0),
    }


@dataclass(frozen=True)
class EvalInputs:
    """What judging rec_date D-1 against day D reads."""

    recs: DataFrame  # D-1's recommendations
    events: DataFrame  # D's events: the ground truth
    items: DataFrame  # item_features as of D-1: popularity and the catalog for coverage
    pool: DataFrame  # the candidate pool score ranked on D-1
    version: str  # the model that made the recommendations
    model: DLRM | None  # that model, to judge on D's examples (None: no model, or none stored)
    examples: ExampleStream | None


def read_inputs(spark: SparkSession, cfg: Config, date: dt.date) -> EvalInputs:
    """Everything evaluation reads for ``date``; skips when D-1 has no recommendations."""
    from recs.model.artifacts import load_model
    from recs.model.batches import examples_for_dates
    from recs.model.registry import artifact_location, model_row
    from recs.score import NO_MODEL, read_pool
    from recs.tables import read_date, read_range

    rec_date = date - dt.timedelta(days=1)
    recs = read_range(spark, cfg, "recommendations", rec_date, rec_date)
    if recs.isEmpty():
        raise StepSkipped(f"no recommendations for {rec_date} to judge")
    # With a holdout, its rows say none:candidate-order; the model is the other rows'.
    ranked = recs.where(F.col("model_version") != NO_MODEL).select("model_version").first()
    version = ranked.model_version if ranked else NO_MODEL
    model = examples = None
    row = model_row(spark, cfg, version)
    if row is not None:
        model, spec, _ = load_model(artifact_location(cfg, row.artifact_path))
        examples = examples_for_dates(cfg, [date], spec, batch_size=cfg.train.batch_size)
    return EvalInputs(
        recs=recs,
        events=read_date(spark, cfg, "events", date),
        items=read_date(spark, cfg, "item_features", rec_date),
        pool=read_pool(spark, cfg, rec_date),
        version=version,
        model=model,
        examples=examples,
    )


def model_quality(model: DLRM | None, examples: ExampleStream | None) -> dict[str, float]:
    """AUC and log-loss of the model that made the recommendations, on D's examples."""
    from recs.model.metrics import evaluate as evaluate_model

    if model is None or examples is None:
        return {}
    metrics = evaluate_model(model, examples, "cpu")
    return {k: metrics[k] for k in ("auc", "logloss") if k in metrics}


def arms(recs: DataFrame) -> dict[str, DataFrame]:
    """Users per experiment arm: ``all``, and with a holdout (rows ranked without the model
    beside rows ranked with it) ``model`` and ``holdout`` as well."""
    from recs.score import NO_MODEL

    users = recs.select("user_id", (F.col("model_version") == NO_MODEL).alias("held")).distinct()
    out = {"all": users.select("user_id").distinct()}
    if users.select("held").distinct().count() > 1:
        out["model"] = users.where(~F.col("held")).select("user_id")
        out["holdout"] = users.where("held").select("user_id")
    return out


SYSTEM_SEP = "::"  # system name :: aggregate column, in an arm's one-row query


def arm_rows(
    inputs: EvalInputs, relevant: DataFrame, users: DataFrame, ks: list[int], arm: str, date: dt.date
) -> list[dict[str, object]]:
    """The ranking metrics of the lists served to ``users``, beside each baseline on them."""
    top = max(ks)
    pool = inputs.pool.join(users, "user_id")
    systems = {
        "model": inputs.recs.join(users, "user_id"),
        "popularity": popularity_recs(users, inputs.items, top),
        **baseline_lists(pool, top),
    }
    # Every figure of the arm in one query: each system's aggregates side by side.
    parts = [catalog_size(inputs.items), pool_recall_aggregate(pool, relevant, users)]
    for name, df in systems.items():
        both = ranking_aggregate(df, relevant, ks).crossJoin(coverage_aggregate(df, ks))
        parts.append(both.select(*[F.col(c).alias(f"{name}{SYSTEM_SEP}{c}") for c in both.columns]))
    row = one_row(*parts)
    results = {}
    for name in systems:
        own = {c.split(SYSTEM_SEP, 1)[1]: v for c, v in row.items() if c.startswith(name + SYSTEM_SEP)}
        results[name] = ranking_values(own, ks) | coverage_values(own, row["size"], ks)
    version = inputs.version
    rows = [
        metric_row(m, k, v, version, date, {name: results[name].get((m, k)) for name in results}, arm)
        for (m, k), v in results["model"].items()
    ]
    rows.append(metric_row("pool_recall", None, _num(row["pool_recall"]), version, date, None, arm))
    return rows


def metric_rows(inputs: EvalInputs, ks: list[int], date: dt.date) -> list[dict[str, object]]:
    """``eval_metrics`` rows for ``date``: each ranking metric for the served lists beside each
    baseline and the pool's recall, for all users and for each experiment arm; the model's AUC /
    log-loss; NaN stored as null."""
    relevant = relevant_items(inputs.events)
    rows = [
        r
        for arm, users in arms(inputs.recs).items()
        for r in arm_rows(inputs, relevant, users, ks, arm, date)
    ]
    for name, value in model_quality(inputs.model, inputs.examples).items():
        rows.append(metric_row(name, None, value, inputs.version, date, None, "all"))
    return [finite_or_none(r) for r in rows]


def run(spark: SparkSession, cfg: Config, date: dt.date) -> dict[str, int]:
    from recs.ledger import record_step
    from recs.schemas import table_schema
    from recs.tables import replace_partition

    with record_step(spark, cfg, "evaluate", date) as step:
        inputs = read_inputs(spark, cfg, date)
        # Each is read once per arm and system: by the baselines, the pool's recall, the lists.
        inputs.pool.cache()
        inputs.recs.cache()
        rows = metric_rows(inputs, sorted(set(cfg.evaluate.ks)), date)
        inputs.pool.unpersist()
        inputs.recs.unpersist()
        replace_partition(
            spark.createDataFrame(rows, table_schema("eval_metrics")), cfg, "eval_metrics", date
        )
        step.counts["metrics"] = len(rows)
        step.counts["users_evaluated"] = int(
            next(r["value"] for r in rows if r["metric"] == "users_evaluated")
        )
        for r in rows:
            if r["k"] in (None, 10):
                log.info(
                    "evaluate %s: %-24s k=%-4s model %s  popularity %s  candidate order %s  recent %s",
                    date,
                    r["metric"] if r["arm"] == "all" else f"{r['metric']} ({r['arm']} arm)",
                    r["k"],
                    metric_text(r["value"]),
                    metric_text(r["baseline_value"]),
                    metric_text(r["candidate_order_value"]),
                    metric_text(r["recent_value"]),
                )
        return dict(step.counts)


BASELINE_COLUMNS = {
    "popularity": "baseline_value",
    "candidate_order": "candidate_order_value",
    "recent": "recent_value",
}


def metric_row(
    metric: str,
    k: int | None,
    value: float,
    version: str,
    date: dt.date,
    baselines: dict[str, float | None] | None = None,
    arm: str = "all",
) -> dict[str, object]:
    """One ``eval_metrics`` row; ``baselines`` maps a system name (or "model") to its value."""
    row: dict[str, object] = {"metric": metric, "k": k, "value": value}
    for name, column in BASELINE_COLUMNS.items():
        row[column] = (baselines or {}).get(name)
    row |= {"arm": arm, "model_version": version, "eval_date": date}
    return row
