"""Scoring throughput: the Spark job end to end vs the raw model forward pass (the floor).

Needs a lakehouse with features and a promoted model for ``--date`` (``bench_pipeline.py``
leaves one). Timed, as medians after a warm-up, in one process:

* job      -- ``recs.score.run`` for the date: candidates, filters, features, ranking in
              ``mapInArrow``, top-k, ads, Delta writes; candidate pairs/s and users/s;
* ranking  -- only the ranking UDF over the already assembled rows of those pairs (written to
              the ``noop`` sink): what the Arrow/Spark path adds over the model;
* floor    -- ``DLRM.predict_numpy`` on the same number of rows in plain PyTorch, same batch size,
              with as many threads as Spark has cores.

Usage: ``python benchmarks/bench_score.py --lakehouse bench-pipeline/lakehouse --date 2026-01-06``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, median_time, quiet_logs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", type=Path, default=Path("bench-pipeline/lakehouse"))
    p.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2026, 1, 6))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shuffle-partitions", type=int, default=8)
    args = p.parse_args(argv)
    quiet_logs()

    import numpy as np
    import torch
    from pyspark.sql import functions as F

    from recs import score
    from recs.config import load_config, replace_section
    from recs.features import read_history
    from recs.model.artifacts import load_model
    from recs.score.rank import score_with_model
    from recs.session import get_spark
    from recs.tables import read_date

    cfg = load_config(lakehouse=str(args.lakehouse.resolve()), environ={})
    cfg = replace_section(cfg, "spark", shuffle_partitions=args.shuffle_partitions)
    spark = get_spark(cfg)
    model = score.load_promoted(spark, cfg)
    if model is None:
        raise SystemExit(f"no promoted model under {cfg.lakehouse}; run bench_pipeline.py first")
    date = args.date

    job_s, job_runs = median_time(lambda: score.run(spark, cfg, date), args.repeats)
    counts = score.run(spark, cfg, date)
    pairs, users = counts["candidate_pairs"], counts["users_scored"]

    # The ranking UDF alone, over the same candidate rows with features already assembled.
    users_f = read_date(spark, cfg, "user_features", date)
    items_f = read_date(spark, cfg, "item_features", date)
    candidates = score.read_pool(spark, cfg, date)
    rows = candidates.withColumn("is_ad", F.lit(False)).withColumn("ad_id", F.lit(None).cast("string"))
    keep = ["user_id", "item_id", "is_ad"]
    history = read_history(spark, cfg, date)
    inputs = score.ranking_inputs(rows, users_f, items_f, history, model.spec, None, keep)
    inputs = inputs.localCheckpoint()
    width = (model.spec.num_dense, model.spec.sparse_width)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.score.batch_size))

    def ranking() -> None:
        scored = score_with_model(inputs, model.artifact, width, batch_size=cfg.score.batch_size)
        scored.write.format("noop").mode("overwrite").save()

    rank_s, rank_runs = median_time(ranking, args.repeats)

    threads = os.cpu_count() or 1  # local[*] runs one task per core
    torch.set_num_threads(threads)
    net, spec, _ = load_model(model.artifact)
    rng = np.random.default_rng(0)
    limits = np.array([f.buckets for f in spec.sparse for _ in range(f.max_len)])
    dense = rng.normal(size=(pairs, spec.num_dense)).astype(np.float32)
    sparse = (rng.random((pairs, spec.sparse_width)) * limits).astype(np.int64)
    is_ad = np.zeros(pairs, bool)
    floor_s, floor_runs = median_time(
        lambda: net.predict_numpy(dense, sparse, is_ad, batch_size=cfg.score.batch_size), args.repeats
    )

    print(f"machine: {machine()}, Spark local[*], torch threads {threads} for the floor")
    print(f"{date}: {users:,} users, {pairs:,} candidate pairs, model {model.version}")
    for name, secs, runs in (
        ("job (score.run)", job_s, job_runs),
        ("ranking UDF only", rank_s, rank_runs),
        ("floor (raw forward)", floor_s, floor_runs),
    ):
        print(f"{name:<20} {secs:7.2f}s {pairs / secs:>12,.0f} pairs/s  runs {[round(t, 2) for t in runs]}")
    print(f"job users/s: {users / job_s:,.0f}")
    print(f"ratio ranking UDF / floor: {rank_s / floor_s:.2f}x; whole job / floor: {job_s / floor_s:.2f}x")


if __name__ == "__main__":
    main()
