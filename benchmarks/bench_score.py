"""Scoring throughput: the Spark job end to end vs the raw model forward pass (the floor).

Needs a lakehouse with features and a promoted model for ``--date`` (``bench_pipeline.py``
leaves one). Timed, as medians after a warm-up, in one process:

* job      -- ``recs.score.run`` for the date: candidates, filters, features, ranking in
              ``mapInArrow``, top-k, ads, Delta writes; candidate pairs/s and users/s;
* ranking  -- only the ranking UDF over the already assembled rows of those pairs (written to
              the ``noop`` sink): what the Arrow/Spark path adds over the model;
* floor    -- ``DLRM.predict_numpy`` on the same number of rows in plain PyTorch, same batch size,
              with as many threads as Spark has cores.

``--scale N`` repeats the assembled pool rows N times for the ranking and floor timings, to
see the per-row cost once the fixed cost of a Spark job (scheduling, Python workers, model
load) is spread over more rows.

Usage: ``python benchmarks/bench_score.py --lakehouse bench-pipeline/lakehouse --date 2026-01-06``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, median_time, open_lakehouse, quiet_logs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lakehouse", type=Path, default=Path("bench-pipeline/lakehouse"))
    p.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2026, 1, 6))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shuffle-partitions", type=int, default=8)
    p.add_argument("--scale", type=int, default=1, help="repeat the ranked rows this many times")
    args = p.parse_args(argv)
    quiet_logs()

    import numpy as np
    import torch
    from pyspark.sql import functions as F

    from recs import score
    from recs.model.artifacts import load_model
    from recs.model.device import resolve_device
    from recs.score.rank import score_with_model

    cfg, spark = open_lakehouse(args)
    date = args.date
    inputs = score.read_inputs(spark, cfg, date)
    model = inputs.model
    if model is None:
        raise SystemExit(f"no model promoted as of {date} under {cfg.lakehouse}; run bench_pipeline.py first")

    job_s, job_runs = median_time(lambda: score.run(spark, cfg, date), args.repeats)
    counts = score.run(spark, cfg, date)
    pairs, users = counts["candidate_pairs"], counts["users_scored"]

    # The ranking UDF alone, over the same candidate rows with features already assembled.
    rows = inputs.pool.withColumn("is_ad", F.lit(False)).withColumn("ad_id", F.lit(None).cast("string"))
    keep = ["user_id", "item_id", "is_ad"]
    features = score.ranking_inputs(
        rows, inputs.users, inputs.item_features, inputs.signals, model.spec, None, keep
    )
    if args.scale > 1:
        features = features.crossJoin(spark.range(args.scale).withColumnRenamed("id", "copy")).drop("copy")
    features = features.localCheckpoint()
    ranked_rows = features.count()
    width = (model.spec.num_dense, model.spec.sparse_width)

    def ranking() -> None:
        scored = score_with_model(
            features,
            model.artifact,
            width,
            device=cfg.train.device,
            batch_size=cfg.score.batch_size,
            threads=cfg.score.threads_per_task,
        )
        scored.write.format("noop").mode("overwrite").save()

    rank_s, rank_runs = median_time(ranking, args.repeats)

    threads = os.cpu_count() or 1  # local[*] runs one task per core
    torch.set_num_threads(threads)
    device = resolve_device(cfg.train.device)  # where the UDF scores: the GPU when there is one
    net, spec, _ = load_model(model.artifact, device=device)
    rng = np.random.default_rng(0)
    limits = np.array([f.buckets for f in spec.sparse for _ in range(f.max_len)])
    dense = rng.normal(size=(ranked_rows, spec.num_dense)).astype(np.float32)
    sparse = (rng.random((ranked_rows, spec.sparse_width)) * limits).astype(np.int64)
    is_ad = np.zeros(ranked_rows, bool)
    floor_s, floor_runs = median_time(
        lambda: net.predict_numpy(dense, sparse, is_ad, batch_size=cfg.score.batch_size), args.repeats
    )

    print(f"machine: {machine()}, Spark local[*]; floor on {device}, torch threads {threads}")
    print(f"{date}: {users:,} users, {pairs:,} candidate pairs, {ranked_rows:,} pool rows; {model.version}")
    for name, secs, runs, n in (
        ("job (score.run)", job_s, job_runs, pairs),
        ("ranking UDF only", rank_s, rank_runs, ranked_rows),
        ("floor (raw forward)", floor_s, floor_runs, ranked_rows),
    ):
        print(f"{name:<20} {secs:7.2f}s {n / secs:>12,.0f} rows/s  runs {[round(t, 2) for t in runs]}")
    print(f"job users/s: {users / job_s:,.0f}")
    print(f"ratio ranking UDF / floor: {rank_s / floor_s:.2f}x; whole job / floor: {job_s / floor_s:.2f}x")


if __name__ == "__main__":
    main()
