"""Experiment arms: a stable bucket per user, and a holdout that is served without the model.

``bucket`` is a hash of the experiment salt and the user id into [0, 100): the same user
lands in the same bucket every night and in every table, so online metrics can be split by
it. Users in the first ``experiment.holdout_share`` x 100 buckets get the candidate pool's own
order (and ads ranked by the items' click-through rate), which measures what the model adds.
A new salt reshuffles everyone.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

BUCKETS = 100


def bucket(salt: str, user: str = "user_id") -> Column:
    return F.pmod(F.xxhash64(F.lit(salt), F.col(user)), F.lit(BUCKETS)).cast("int")


def holdout_buckets(share: float) -> int:
    """How many buckets (from 0) the holdout takes: ``share`` of 100, rounded."""
    return round(share * BUCKETS)


def arm(holdout: int, column: str = "bucket") -> Column:
    return F.when(F.col(column) < holdout, F.lit("holdout")).otherwise(F.lit("model"))
