"""Experiment buckets: stable, independent of everything but the salt and the user."""

from __future__ import annotations

from recs.hashing import spark_xxhash64
from recs.score.experiment import arm, bucket, holdout_buckets


def test_a_users_bucket_is_the_salted_hash_mod_100_and_the_holdout_takes_the_first_buckets(spark):
    users = [f"user-{i}" for i in range(400)]
    df = spark.createDataFrame([(u,) for u in users], "user_id string")

    got = {
        r.user_id: (r.b, r.arm)
        for r in df.select("user_id", bucket("exp-1").alias("b"))
        .withColumn("arm", arm(holdout_buckets(0.1), "b"))
        .collect()
    }

    want = {u: spark_xxhash64("exp-1", u) % 100 for u in users}
    assert {u: b for u, (b, _) in got.items()} == want
    assert {u for u, (_, a) in got.items() if a == "holdout"} == {u for u, b in want.items() if b < 10}
    assert 20 <= sum(b < 10 for b in want.values()) <= 60  # about a tenth of 400
    other_salt = {r.user_id: r.b for r in df.select("user_id", bucket("exp-2").alias("b")).collect()}
    assert sum(other_salt[u] == want[u] for u in users) < 20  # a new salt reshuffles
    assert (holdout_buckets(0.0), holdout_buckets(0.05), holdout_buckets(1.0)) == (0, 5, 100)
