"""Offline evaluation: D-1's recommendations against what users did on D.

Ranking metrics (recall, NDCG, hit rate at each k; MRR; catalog coverage) are computed for
the model's recommendations and, the same way, for a popularity baseline; the promoted
model's AUC / log-loss on D's training examples come alongside. Results go to
``eval_metrics`` partitioned by ``eval_date``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recs.config import Config

log = logging.getLogger("recs")

RELEVANT_EVENTS = ("view", "click", "add_to_cart", "purchase")


def relevant_items(events: DataFrame) -> DataFrame:
    """(user_id, item_id) pairs the user interacted with: the ground truth."""
    return (
        events.where(F.col("event_type").isin(*RELEVANT_EVENTS) & F.col("item_id").isNotNull())
        .select("user_id", "item_id")
        .distinct()
    )


def ranking_metrics(
    recs: DataFrame, relevant: DataFrame, ks: list[int]
) -> dict[tuple[str, int | None], float]:
    """Mean per-user metrics over users who have both recommendations and relevant items.

    ``recs`` has user_id, item_id, rank (1-based); relevance is binary.
    """
    users = recs.select("user_id").distinct().join(relevant.select("user_id").distinct(), "user_id")
    n_rel = relevant.join(users, "user_id").groupBy("user_id").agg(F.count(F.lit(1)).alias("n_rel"))
    hits = recs.join(relevant, ["user_id", "item_id"]).select("user_id", "rank")
    aggs = [F.min("rank").alias("first_hit")]
    for k in ks:
        in_k = F.col("rank") <= k
        aggs += [
            F.count_if(in_k).alias(f"hits_{k}"),
            F.sum(F.when(in_k, 1.0 / F.log2(F.col("rank") + 1)).otherwise(0.0)).alias(f"dcg_{k}"),
        ]
    per_user = n_rel.join(hits.groupBy("user_id").agg(*aggs), "user_id", "left").fillna(0)
    means = [F.count(F.lit(1)).alias("users")]
    means.append(F.avg(F.when(F.col("first_hit") > 0, 1.0 / F.col("first_hit")).otherwise(0.0)).alias("mrr"))
    for k in ks:
        ideal = F.aggregate(
            F.sequence(F.lit(1), F.least(F.col("n_rel"), F.lit(k))),
            F.lit(0.0),
            lambda acc, i: acc + 1.0 / F.log2(i + 1),
        )
        means += [
            F.avg(F.col(f"hits_{k}") / F.col("n_rel")).alias(f"recall_{k}"),
            F.avg(F.col(f"dcg_{k}") / ideal).alias(f"ndcg_{k}"),
            F.avg((F.col(f"hits_{k}") > 0).cast("double")).alias(f"hit_rate_{k}"),
        ]
    row = per_user.agg(*means).first().asDict()
    out: dict[tuple[str, int | None], float] = {("users_evaluated", None): float(row["users"] or 0)}
    out[("mrr", None)] = _num(row["mrr"])
    for k in ks:
        for m in ("recall", "ndcg", "hit_rate"):
            out[(m, k)] = _num(row[f"{m}_{k}"])
    return out


def _num(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def coverage(recs: DataFrame, catalog: DataFrame, ks: list[int]) -> dict[tuple[str, int | None], float]:
    """Share of the in-stock catalog that appears in anyone's top k."""
    size = catalog.where("in_stock").count()
    aggs = [F.count_distinct(F.when(F.col("rank") <= k, F.col("item_id"))).alias(f"c{k}") for k in ks]
    row = recs.agg(*aggs).first()
    return {("coverage", k): (row[f"c{k}"] / size if size else float("nan")) for k in ks}


def popularity_recs(users: DataFrame, item_features: DataFrame, k: int) -> DataFrame:
    """The baseline: everyone gets the same most popular in-stock items, ranked 1..k."""
    from recs.score.candidates import popularity, top_n

    top = top_n(popularity(item_features).withColumn("_all", F.lit(1)), ["_all"], "source_score", k)
    ranked = top.withColumn(
        "rank", F.row_number().over(Window.orderBy(F.col("source_score").desc(), "item_id"))
    )
    return users.crossJoin(F.broadcast(ranked.select("item_id", "rank")))


def model_quality(spark: SparkSession, cfg: Config, date: dt.date, version: str) -> dict[str, float]:
    """AUC and log-loss of the model that made the recommendations, on D's examples."""
    from recs.train import examples_for_dates
    from recs.train.artifacts import load_model
    from recs.train.loop import evaluate as evaluate_model
    from recs.train.registry import model_row

    row = model_row(spark, cfg, version)
    if row is None:
        return {}
    model, spec, _ = load_model(row.artifact_path)
    stream = examples_for_dates(spark, cfg, [date], spec, batch_size=cfg.train.batch_size, shuffle=False)
    if stream is None:
        return {}
    metrics = evaluate_model(model, stream, "cpu")
    return {k: metrics[k] for k in ("auc", "logloss") if k in metrics}


def run(spark: SparkSession, cfg: Config, date: dt.date) -> dict[str, int]:
    from recs.ledger import record_step
    from recs.schemas import table_schema
    from recs.tables import read_date, read_range, replace_partition

    ks = sorted(set(cfg.evaluate.ks))
    rec_date = date - dt.timedelta(days=1)
    with record_step(spark, cfg, "evaluate", date) as step:
        recs = read_range(spark, cfg, "recommendations", rec_date, rec_date)
        first = recs.select("model_version").first()
        if first is None:
            log.warning("evaluate %s: no recommendations for %s; nothing to judge", date, rec_date)
            step.details["skipped"] = f"no recommendations for {rec_date}"
            return {}
        version = first.model_version
        relevant = relevant_items(read_date(spark, cfg, "events", date))
        items_prev = read_date(spark, cfg, "item_features", rec_date)
        users = recs.select("user_id").distinct()
        baseline = popularity_recs(users, items_prev, max(ks))
        model_m = ranking_metrics(recs, relevant, ks) | coverage(recs, items_prev, ks)
        base_m = ranking_metrics(baseline, relevant, ks) | coverage(baseline, items_prev, ks)
        rows = [
            {
                "metric": m,
                "k": k,
                "value": v,
                "baseline_value": base_m.get((m, k)),
                "model_version": version,
                "eval_date": date,
            }
            for (m, k), v in model_m.items()
        ]
        for name, value in model_quality(spark, cfg, date, version).items():
            rows.append(
                {
                    "metric": name,
                    "k": None,
                    "value": value,
                    "baseline_value": None,
                    "model_version": version,
                    "eval_date": date,
                }
            )
        clean = [
            {
                **r,
                "value": None if _nan(r["value"]) else r["value"],
                "baseline_value": None if _nan(r["baseline_value"]) else r["baseline_value"],
            }
            for r in rows
        ]
        replace_partition(
            spark.createDataFrame(clean, table_schema("eval_metrics")), cfg, "eval_metrics", date
        )
        step.counts["metrics"] = len(clean)
        step.counts["users_evaluated"] = int(model_m[("users_evaluated", None)])
        for r in clean:
            if r["k"] in (None, 10):
                log.info(
                    "evaluate %s: %-16s k=%-4s model %s  popularity %s",
                    date,
                    r["metric"],
                    r["k"],
                    _fmt(r["value"]),
                    _fmt(r["baseline_value"]),
                )
        return dict(step.counts)


def _nan(v: float | None) -> bool:
    return v is not None and isinstance(v, float) and math.isnan(v)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"
