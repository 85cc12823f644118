"""Item-to-item lists for item pages and carts: ``similar_items`` and ``bought_together``.

Similar items blend two kinds of evidence. Co-visitation (items viewed in the same sessions)
is strong where there is traffic; the trained model's item embeddings place items the model
learned to treat alike close together, and reach items too new or rare to be co-viewed.
Embedding neighbours are looked for among the most popular in-stock items of the anchor's
own category, so the work grows with items x ``related.similar_pool_per_category``, not with
items squared. Without a promoted model the same pool is ordered by popularity.

Bought together counts baskets: one user's carts and purchases of one day (no session or
order id is needed, so shops that log neither still get the list).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recs.config import RelatedConfig
from recs.features.spec import FeatureSpec, SparseFeature
from recs.frames import first_rows, top_n
from recs.hashing import hash_bucket_col

if TYPE_CHECKING:
    from recs.model.dlrm import DLRM

ITEM_FEATURE_SOURCE = "item.item_id"


def item_feature(spec: FeatureSpec) -> SparseFeature | None:
    """The sparse feature that hashes the item id (its table holds the item embeddings)."""
    return next((f for f in spec.sparse if f.source == ITEM_FEATURE_SOURCE and not f.multi), None)


def item_vectors(spark: SparkSession, model: DLRM, spec: FeatureSpec) -> DataFrame | None:
    """(bucket, vec) for every row of the model's item-id embedding table; None when its spec
    has no item-id feature. The table comes from the model (a few MB), not the lakehouse.
    """
    import pandas as pd

    f = item_feature(spec)
    if f is None:
        return None
    table = model.table(f.name).float().numpy()
    frame = pd.DataFrame({"bucket": np.arange(len(table), dtype=np.int32), "vec": list(table)})
    return spark.createDataFrame(frame, "bucket int, vec array<float>")


def with_vectors(
    items: DataFrame, vectors: DataFrame, spec: FeatureSpec, column: str = "item_id"
) -> DataFrame:
    """``items`` with ``vec``: the embedding of the bucket its ``column`` hashes to."""
    f = item_feature(spec)
    assert f is not None, "with_vectors needs a spec with an item-id feature"
    bucket = hash_bucket_col(f.name, F.col(column), f.buckets)
    return items.withColumn("bucket", bucket).join(F.broadcast(vectors), "bucket", "left").drop("bucket")


def cosine(a: str, b: str) -> Column:
    dot = F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0), lambda acc, v: acc + v)
    norm_a = F.sqrt(F.aggregate(F.transform(a, lambda x: x * x), F.lit(0.0), lambda acc, v: acc + v))
    norm_b = F.sqrt(F.aggregate(F.transform(b, lambda x: x * x), F.lit(0.0), lambda acc, v: acc + v))
    return F.when((norm_a > 0) & (norm_b > 0), dot / (norm_a * norm_b))


def category_pools(item_features: DataFrame, size: int) -> DataFrame:
    """(category_id, neighbour_id, pop_rank): the ``size`` most popular in-stock items per category."""
    from recs.score.candidates import popularity

    popular = popularity(item_features).withColumnRenamed("item_id", "neighbour_id")
    return top_n(popular, ["category_id"], "source_score", size, tie="neighbour_id", rank="pop_rank").select(
        "category_id", "neighbour_id", "pop_rank"
    )


def similar_items(
    items: DataFrame,
    item_features: DataFrame,
    covisit: DataFrame,
    vectors: DataFrame | None,
    spec: FeatureSpec | None,
    r: RelatedConfig,
) -> DataFrame:
    """Top ``r.similar_items`` in-stock neighbours of every catalog item.

    ``covisit`` is (item_id, neighbour, weight) from :func:`recs.score.candidates.covisitation`.
    Score = the pair's share of the anchor's strongest co-visitation weight (0..1) plus
    ``r.embedding_weight`` x the cosine of their embeddings (clipped at 0), or x 1/pop_rank
    without a model. Ties by neighbour id.
    """
    anchors = items.select("item_id", "category_id")
    in_stock = items.where("in_stock").select(F.col("item_id").alias("neighbour_id"))
    strongest = Window.partitionBy("item_id")
    shares = covisit.select(
        "item_id",
        F.col("neighbour").alias("neighbour_id"),
        (F.col("weight") / F.max("weight").over(strongest)).alias("covisit"),
    )
    pooled = anchors.join(category_pools(item_features, r.similar_pool_per_category), "category_id").select(
        "item_id", "neighbour_id", "pop_rank"
    )
    pairs = (
        pooled.join(shares, ["item_id", "neighbour_id"], "full")
        .join(in_stock, "neighbour_id")
        .join(anchors.select("item_id"), "item_id")
        .where(F.col("item_id") != F.col("neighbour_id"))
        .fillna({"covisit": 0.0})
    )
    if vectors is not None and spec is not None:
        pairs = with_vectors(pairs, vectors, spec).withColumnRenamed("vec", "_a")
        pairs = with_vectors(pairs, vectors, spec, "neighbour_id").withColumnRenamed("vec", "_b")
        closeness = F.greatest(F.coalesce(cosine("_a", "_b"), F.lit(0.0)), F.lit(0.0))
        fallback = "embedding"
    else:
        closeness = F.coalesce(1.0 / F.col("pop_rank"), F.lit(0.0))
        fallback = "category_popular"
    scored = pairs.select(
        "item_id",
        "neighbour_id",
        (F.col("covisit") + r.embedding_weight * closeness).alias("score"),
        F.when(F.col("covisit") > 0, "covisit").otherwise(fallback).alias("source"),
    )
    return top_n(scored, ["item_id"], "score", r.similar_items, tie="neighbour_id", rank="rank")


def bought_together(
    user_item_daily: DataFrame, items: DataFrame, as_of: dt.date, r: RelatedConfig
) -> DataFrame:
    """Top ``r.bought_together`` in-stock items carted or bought with each item, by confidence.

    A basket is one user's carted or purchased items on one day within
    ``r.bought_together_days`` ending on ``as_of``; a basket larger than
    ``r.max_basket_items`` keeps its most purchased items, so one bulk buyer cannot make
    every pair. Pairs need ``r.bought_together_min_support`` baskets.
    """
    start = as_of - dt.timedelta(days=r.bought_together_days - 1)
    touched = user_item_daily.where(F.col("event_date").between(F.lit(start), F.lit(as_of))).where(
        (F.col("carts") > 0) | (F.col("purchases") > 0)
    )
    baskets = first_rows(
        touched,
        ["user_id", "event_date"],
        [F.col("purchases").desc(), F.col("carts").desc(), F.col("item_id")],
        r.max_basket_items,
    ).select("user_id", "event_date", "item_id")
    holding = baskets.groupBy("item_id").agg(F.count(F.lit(1)).alias("baskets"))
    a, b = baskets.alias("a"), baskets.alias("b")
    support = (
        a.join(b, ["user_id", "event_date"])
        .where(F.col("a.item_id") != F.col("b.item_id"))
        .groupBy(F.col("a.item_id").alias("item_id"), F.col("b.item_id").alias("neighbour_id"))
        .agg(F.count(F.lit(1)).alias("support"))
        .where(F.col("support") >= r.bought_together_min_support)
    )
    in_stock = items.where("in_stock").select(F.col("item_id").alias("neighbour_id"))
    scored = (
        support.join(in_stock, "neighbour_id")
        .join(items.select("item_id"), "item_id")
        .join(holding, "item_id")
        .withColumn("score", F.col("support") / F.col("baskets"))
    )
    ranked = first_rows(
        scored,
        ["item_id"],
        [F.col("score").desc(), F.col("support").desc(), F.col("neighbour_id")],
        r.bought_together,
        rank="rank",
    )
    source = F.lit("bought_together").alias("source")
    return ranked.select("item_id", "rank", "neighbour_id", "score", "support", source)
