"""Hashed categorical IDs: Spark and pure Python agree bit for bit."""

from __future__ import annotations

import random

from pyspark.sql import functions as F

from recs.hashing import hash_bucket, hash_bucket_col, spark_xxhash64, xxh64


def test_xxh64_reference_vectors():
    # Published XXH64 test vectors (seed 0).
    assert xxh64(b"", 0) == 0xEF46DB3751D8E999
    assert xxh64(b"a", 0) == 0xD24EC4F1A98C6E5B
    assert xxh64(b"abc", 0) == 0x44BC2CF5AD770999


def sample_values(n: int) -> list[str | None]:
    rng = random.Random(3)
    alphabet = "abcxyz0123_-é漢字🙂ß "
    values: list[str | None] = [None, "", " ", "0", "u000001", "🙂" * 40, "x" * 33, "ü" * 7]
    while len(values) < n:
        length = rng.choice([1, 3, 4, 7, 8, 9, 15, 16, 31, 32, 33, 64, 100])
        values.append("".join(rng.choice(alphabet) for _ in range(length)))
    return values


def test_spark_and_python_agree_on_10k_values(spark):
    values = sample_values(10_000)
    buckets = 1009
    df = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "i int, v string")
    rows = df.select(
        "i",
        F.xxhash64(F.lit("item_id"), "v").alias("h"),
        hash_bucket_col("item_id", F.col("v"), buckets).alias("b"),
    ).collect()
    assert len(rows) == len(values)
    for r in rows:
        v = values[r.i]
        assert r.b == hash_bucket("item_id", v, buckets), v
        if v is not None:
            assert r.h == spark_xxhash64("item_id", v), v


def test_buckets_in_range_and_null_reserved(spark):
    df = spark.createDataFrame([(None,), ("a",), ("b",), (7,)], "v string")
    rows = df.select(hash_bucket_col("device", F.col("v"), 5).alias("b")).collect()
    assert rows[0].b == 0
    assert all(1 <= r.b < 5 for r in rows[1:])
    assert hash_bucket("device", None, 5) == 0
    assert all(1 <= hash_bucket("device", str(i), 5) < 5 for i in range(1000))


def test_non_string_values_hash_as_spark_casts_them(spark):
    df = spark.createDataFrame([(13, True)], "h int, flag boolean")
    row = df.select(
        hash_bucket_col("hour", F.col("h"), 25).alias("h"), hash_bucket_col("f", F.col("flag"), 25).alias("f")
    ).first()
    assert row.h == hash_bucket("hour", 13, 25)
    assert row.f == hash_bucket("f", True, 25)
