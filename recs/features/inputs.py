"""Model inputs: join features onto (user, item[, ad]) rows and assemble ``dense``/``sparse`` arrays.

Training examples and batch scoring both go through ``feature_frame`` + ``assemble``, with
the spec passed in (the model's own spec at scoring time), so the two can never drift.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recs.features.spec import DenseFeature, FeatureSpec, SparseFeature
from recs.hashing import hash_bucket_col

SEP = "__"


def source_col(source: str) -> Column:
    return F.col(source.replace(".", SEP))


def prefixed(df: DataFrame, entity: str, keys: list[str]) -> DataFrame:
    return df.select(*keys, *[F.col(c).alias(f"{entity}{SEP}{c}") for c in df.columns if c not in keys])


def feature_frame(
    rows: DataFrame,
    user_features: DataFrame,
    item_features: DataFrame,
    user_item: DataFrame,
    ads: DataFrame | None = None,
) -> DataFrame:
    """``rows`` has user_id, item_id (and ad_id, context__* columns); features are left-joined.

    Missing features (a cold user, a brand-new item) stay null and become the spec's
    defaults / the null bucket in ``assemble``; ids are always taken from ``rows``.
    """
    out = (
        rows.join(prefixed(user_features.drop("as_of_date"), "user", ["user_id"]), "user_id", "left")
        .join(prefixed(item_features.drop("as_of_date"), "item", ["item_id"]), "item_id", "left")
        .join(prefixed(user_item, "user_item", ["user_id", "item_id"]), ["user_id", "item_id"], "left")
        .withColumn(f"user{SEP}user_id", F.col("user_id"))
        .withColumn(f"item{SEP}item_id", F.col("item_id"))
    )
    if ads is not None:
        ad_cols = ads.select("ad_id", "campaign_id", "bid")
        out = out.join(prefixed(ad_cols, "ad", ["ad_id"]), "ad_id", "left")
    else:
        out = out.withColumn(f"ad{SEP}campaign_id", F.lit(None).cast("string")).withColumn(
            f"ad{SEP}bid", F.lit(None).cast("double")
        )
    return out.withColumn(f"ad{SEP}ad_id", F.col("ad_id"))


def dense_value(f: DenseFeature) -> Column:
    x = F.coalesce(source_col(f.source).cast("double"), F.lit(f.default))
    if f.transform == "log1p":
        x = F.log1p(F.greatest(x, F.lit(0.0)))
    elif f.transform == "clip":
        lo, hi = f.clip
        x = F.least(F.greatest(x, F.lit(lo)), F.lit(hi))
    return x.cast("float")


def sparse_values(f: SparseFeature) -> Column:
    """An array of exactly ``max_len`` buckets (multi-valued features padded with 0)."""
    if not f.multi:
        return F.array(hash_bucket_col(f.name, source_col(f.source), f.buckets))
    values = F.slice(F.coalesce(source_col(f.source), F.array().cast("array<string>")), 1, f.max_len)
    hashed = F.transform(values, lambda v: hash_bucket_col(f.name, v, f.buckets))
    pad = F.array_repeat(F.lit(0), F.lit(f.max_len) - F.size(hashed))
    return F.concat(hashed, pad)


def assemble(frame: DataFrame, spec: FeatureSpec, keep: list[str]) -> DataFrame:
    """Keep ``keep`` columns and add the model-ready ``dense`` and ``sparse`` arrays."""
    dense = F.array(*[dense_value(f) for f in spec.dense])
    sparse = F.concat(*[sparse_values(f) for f in spec.sparse])
    return frame.select(*keep, dense.alias("dense"), sparse.alias("sparse"))


def collision_rates(frame: DataFrame, spec: FeatureSpec) -> dict[str, float]:
    """Share of distinct values that share a bucket with another value, per single-valued feature."""
    aggs = []
    for f in spec.sparse:
        if f.multi:
            continue
        value = source_col(f.source).cast("string")
        aggs += [
            F.count_distinct(value).alias(f"{f.name}__values"),
            F.count_distinct(F.when(value.isNotNull(), hash_bucket_col(f.name, value, f.buckets))).alias(
                f"{f.name}__buckets"
            ),
        ]
    row = frame.agg(*aggs).first().asDict()
    out = {}
    for f in spec.sparse:
        if f.multi:
            continue
        values = row[f"{f.name}__values"]
        out[f.name] = 0.0 if values == 0 else 1.0 - row[f"{f.name}__buckets"] / values
    return out
