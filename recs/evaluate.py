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
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, SparkSession
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


def only(where: Column | None, c: Column) -> Column:
    """``c`` on the rows where ``where`` holds, null (left out of aggregates) elsewhere; ``c``
    itself without a condition."""
    return c if where is None else F.when(where, c)


def cell_conditions(cells: Mapping[str, Column] | None) -> list[tuple[str, Column | None]]:
    """(column prefix, row condition) of each cell; one unnamed cell of all rows without cells."""
    return list(cells.items()) if cells else [("", None)]


def per_user_hits(recs: DataFrame, relevant: DataFrame, ks: list[int], keys: Sequence[str] = ()) -> DataFrame:
    """One row per user (and value of ``keys``) with both recommendations and relevant items:
    how many items are relevant, the rank of the first hit within the largest k, and the hits
    and DCG at each k."""
    keys = list(keys)
    users = recs.select(*keys, "user_id").distinct().join(relevant.select("user_id").distinct(), "user_id")
    n_rel = relevant.join(users, "user_id").groupBy(*keys, "user_id").agg(F.count(F.lit(1)).alias("n_rel"))
    hits = recs.join(relevant, ["user_id", "item_id"]).select(*keys, "user_id", "rank")
    top = max(ks)
    aggs = [F.min(F.when(F.col("rank") <= top, F.col("rank"))).alias("first_hit")]
    for k in ks:
        in_k = F.col("rank") <= k
        aggs += [
            F.count_if(in_k).alias(f"hits_{k}"),
            exact_sum(F.when(in_k, 1.0 / F.log2(F.col("rank") + 1)).otherwise(0.0)).alias(f"dcg_{k}"),
        ]
    return n_rel.join(hits.groupBy(*keys, "user_id").agg(*aggs), [*keys, "user_id"], "left").fillna(0)


def ranking_means(ks: list[int], where: Column | None = None, prefix: str = "") -> list[Column]:
    """The means ``ranking_values`` reads, over the per-user rows where ``where`` holds (all
    rows without it), each named ``prefix`` + its name."""
    users = F.count(F.lit(1)) if where is None else F.count_if(where)
    means = [users.alias(f"{prefix}users")]
    reciprocal = F.when(F.col("first_hit") > 0, 1.0 / F.col("first_hit")).otherwise(0.0)
    means.append(exact_mean(only(where, reciprocal)).alias(f"{prefix}mrr"))
    for k in ks:
        ideal = F.aggregate(
            F.sequence(F.lit(1), F.least(F.col("n_rel"), F.lit(k))),
            F.lit(0.0),
            lambda acc, i: acc + 1.0 / F.log2(i + 1),
        )
        means += [
            exact_mean(only(where, F.col(f"hits_{k}") / F.col("n_rel"))).alias(f"{prefix}recall_{k}"),
            exact_mean(only(where, F.col(f"dcg_{k}") / ideal)).alias(f"{prefix}ndcg_{k}"),
            exact_mean(only(where, (F.col(f"hits_{k}") > 0).cast("double"))).alias(f"{prefix}hit_rate_{k}"),
        ]
    return means


def ranking_aggregate(
    recs: DataFrame,
    relevant: DataFrame,
    ks: list[int],
    keys: Sequence[str] = (),
    cells: Mapping[str, Column] | None = None,
) -> DataFrame:
    """One row: the mean per-user metrics that ``ranking_values`` reads (see ``ranking_metrics``);
    with ``keys``, one set per cell (column prefix -> which key values it averages over)."""
    per_user = per_user_hits(recs, relevant, ks, keys)
    return per_user.agg(
        *[c for prefix, where in cell_conditions(cells) for c in ranking_means(ks, where, prefix)]
    )


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


def coverage_aggregate(
    recs: DataFrame,
    ks: list[int],
    keys: Sequence[str] = (),
    cells: Mapping[str, Column] | None = None,
) -> DataFrame:
    """One row: the distinct items in anyone's top k, for each k (and each cell, as in
    ``ranking_aggregate``). An item is in a top k when its best rank is."""
    best = recs.where(F.col("item_id").isNotNull()).groupBy(*keys, "item_id").agg(F.min("rank").alias("best"))
    counts = [
        F.count_if(only(where, F.col("best") <= k)).alias(f"{prefix}c{k}")
        for prefix, where in cell_conditions(cells)
        for k in ks
    ]
    return best.agg(*counts)


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


def pool_recall_aggregate(
    candidates: DataFrame,
    relevant: DataFrame,
    users: DataFrame,
    keys: Sequence[str] = (),
    cells: Mapping[str, Column] | None = None,
) -> DataFrame:
    """One row, ``pool_recall``: see ``pool_recall``; with ``keys`` (columns of ``users``), one
    figure per cell, as in ``ranking_aggregate``."""
    rel = relevant.join(users, "user_id")
    per_user = (
        rel.join(
            candidates.select("user_id", "item_id", F.lit(1).alias("_in")), ["user_id", "item_id"], "left"
        )
        .groupBy(*keys, "user_id")
        .agg((F.count("_in") / F.count(F.lit(1))).alias("r"))
    )
    means = [
        exact_mean(only(where, F.col("r"))).alias(f"{prefix}pool_recall")
        for prefix, where in cell_conditions(cells)
    ]
    return per_user.agg(*means)


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


def arms(recs: DataFrame) -> tuple[DataFrame, list[str]]:
    """(user_id, arm) for each experiment arm a user's lists count in, and the arms: ``all``,
    and with a holdout (rows ranked without the model beside rows ranked with it) ``model`` or
    ``holdout`` as well."""
    from recs.score import NO_MODEL

    users = recs.select("user_id", (F.col("model_version") == NO_MODEL).alias("held")).distinct()
    if users.select("held").distinct().count() < 2:
        return users.select("user_id", F.lit("all").alias("arm")).distinct(), ["all"]
    arm = F.explode(F.array(F.lit("all"), F.when(F.col("held"), "holdout").otherwise("model")))
    return users.select("user_id", arm.alias("arm")).distinct(), ["all", "model", "holdout"]


SYSTEM_SEP = "::"  # arm :: system :: aggregate column, in the night's one-row query


def system_lists(
    inputs: EvalInputs, users: DataFrame, pool: DataFrame, top: int
) -> tuple[DataFrame, list[str]]:
    """(system, user_id, item_id, rank): the lists served to ``users`` (all who were served) and
    each baseline's from the same ``pool``; and the systems' names."""
    systems = {
        "model": inputs.recs,
        "popularity": popularity_recs(users, inputs.items, top),
        **baseline_lists(pool, top),
    }
    lists = [
        df.select(F.lit(name).alias("system"), "user_id", "item_id", "rank") for name, df in systems.items()
    ]
    return functools.reduce(DataFrame.unionByName, lists), list(systems)


def metric_rows(inputs: EvalInputs, ks: list[int], date: dt.date) -> list[dict[str, object]]:
    """``eval_metrics`` rows for ``date``: each ranking metric for the served lists beside each
    baseline and the pool's recall, for all users and for each experiment arm; the model's AUC /
    log-loss; NaN stored as null.

    Every figure comes from one query: each arm's and system's aggregates side by side.
    """
    relevant = relevant_items(inputs.events)
    arm_users, names = arms(inputs.recs)
    users = arm_users.select("user_id").distinct()
    pool = inputs.pool.join(users, "user_id")
    lists, systems = system_lists(inputs, users, pool, max(ks))
    lists = lists.join(arm_users, "user_id")
    arm, system = F.col("arm"), F.col("system")
    cells = {f"{a}{SYSTEM_SEP}{s}{SYSTEM_SEP}": (arm == a) & (system == s) for a in names for s in systems}
    row = one_row(
        catalog_size(inputs.items),
        pool_recall_aggregate(
            pool, relevant, arm_users, ["arm"], {f"{a}{SYSTEM_SEP}": arm == a for a in names}
        ),
        ranking_aggregate(lists, relevant, ks, ["arm", "system"], cells),
        coverage_aggregate(lists, ks, ["arm", "system"], cells),
    )
    version, rows = inputs.version, []
    for a in names:
        results = {}
        for s in systems:
            prefix = f"{a}{SYSTEM_SEP}{s}{SYSTEM_SEP}"
            own = {c[len(prefix) :]: v for c, v in row.items() if c.startswith(prefix)}
            results[s] = ranking_values(own, ks) | coverage_values(own, row["size"], ks)
        rows += [
            metric_row(m, k, v, version, date, {s: results[s].get((m, k)) for s in results}, a)
            for (m, k), v in results["model"].items()
        ]
        recall = _num(row[f"{a}{SYSTEM_SEP}pool_recall"])
        rows.append(metric_row("pool_recall", None, recall, version, date, None, a))
    for name, value in model_quality(inputs.model, inputs.examples).items():
        rows.append(metric_row(name, None, value, inputs.version, date, None, "all"))
    return [finite_or_none(r) for r in rows]


def run(spark: SparkSession, cfg: Config, date: dt.date) -> dict[str, int]:
    from recs.ledger import record_step
    from recs.schemas import table_schema
    from recs.tables import replace_partition

    with record_step(spark, cfg, "evaluate", date) as step:
        inputs = read_inputs(spark, cfg, date)
        # Both are read several times by the one metrics query: the lists, baselines, pool recall.
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
