"""``recs demo``: generated data through the whole pipeline, with a readable summary.

Days 1..N-2 are ingested and featurised (history for the windows); the last two days run
the full nightly, so day N's evaluation judges day N-1's recommendations.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path

from recs.config import Config

log = logging.getLogger("recs")
START = dt.date(2026, 1, 1)


def run_demo(cfg: Config, out: Path, *, users: int, items: int, days: int, seed: int) -> None:
    from rich.console import Console

    from recs.pipeline import backfill, nightly
    from recs.sample_data import generate
    from recs.session import get_spark

    if days < 3:
        raise ValueError("the demo needs at least 3 days (history, a scored day, an evaluated day)")
    console = Console()
    out = out.resolve()
    cfg = dataclasses.replace(cfg, lakehouse=str(out / "lakehouse"), raw=str(out / "raw"))
    summary = generate(out, users=users, items=items, days=days, start=START, seed=seed)
    console.print(f"[bold]sample data[/]: {summary.lines} event lines over {days} days under {cfg.raw}")
    spark = get_spark(cfg)
    last = START + dt.timedelta(days=days - 1)
    history = backfill(spark, cfg, START, last - dt.timedelta(days=2), steps=("ingest", "features"))
    reports = [*history, nightly(spark, cfg, last - dt.timedelta(days=1)), nightly(spark, cfg, last)]
    for r in reports:
        ran = ", ".join(f"{s} {r.seconds.get(s, 0):.0f}s" for s in r.ran)
        console.print(f"{r.date}: {ran}" + (f" [red]FAILED {r.failed}: {r.error}[/]" if r.failed else ""))
        if not r.ok:
            raise RuntimeError(f"demo stopped: {r.failed} failed for {r.date}: {r.error}")
    print_summary(spark, cfg, last, console)


def print_summary(spark, cfg: Config, date: dt.date, console) -> None:
    from pyspark.sql import functions as F
    from rich.table import Table

    from recs.model.registry import promoted_model
    from recs.report import eval_table
    from recs.tables import read_table
    from recs.values import metric_text

    counts = Table(title=f"lakehouse {cfg.lakehouse}")
    counts.add_column("table")
    counts.add_column("rows", justify="right")
    for name in (
        "events",
        "events_quarantine",
        "items",
        "ads",
        "user_features",
        "item_features",
        "training_examples",
        "model_registry",
        "recommendations",
        "ad_candidates",
        "audiences",
        "similar_items",
        "bought_together",
        "eval_metrics",
        "output_health",
        "pipeline_runs",
    ):
        counts.add_row(name, f"{read_table(spark, cfg, name).count():,}")
    console.print(counts)
    model = promoted_model(spark, cfg)
    if model is not None:
        m = model.metrics
        console.print(
            f"[bold]promoted model[/] {model.model_version}: AUC {metric_text(m.get('auc'))}, "
            f"log-loss {metric_text(m.get('logloss'))}, "
            f"calibration {metric_text(m.get('calibration'), 3)}"
        )
    ev = (
        read_table(spark, cfg, "eval_metrics").where(F.col("eval_date") == F.lit(date)).orderBy("metric", "k")
    )
    console.print(eval_table(ev.collect(), f"evaluation on {date} of the recommendations made for it"))
    health = Table(title=f"output health of {date}'s recommendations")
    for c in ("check", "value", "limit", "ok"):
        health.add_column(c)
    checks = read_table(spark, cfg, "output_health").where(F.col("rec_date") == F.lit(date))
    for r in checks.where(F.col("subject").isNull()).orderBy("check").collect():
        value = "-" if r.value is None else f"{r.value:.4g}"
        health.add_row(r.check, value, f"{r.kind} {r.limit:g}", "yes" if r.ok else "[red]NO[/]")
    console.print(health)
    spend = checks.where(F.col("check") == "planned_spend").agg(
        F.count(F.lit(1)).alias("campaigns"),
        F.max(F.col("value") / F.col("limit")).alias("top"),
        F.count_if(~F.col("ok")).alias("over"),
    )
    for r in spend.collect():
        console.print(
            f"planned spend on {date + dt.timedelta(days=1)}: {r.campaigns} budgeted campaigns, "
            f"at most {0.0 if r.top is None else r.top:.0%} of a budget, {r.over} over"
        )
    recs = read_table(spark, cfg, "recommendations").where(F.col("rec_date") == F.lit(date))
    ads = read_table(spark, cfg, "ad_candidates").where(F.col("rec_date") == F.lit(date))
    sample_users = [
        r.user_id for r in recs.select("user_id").distinct().orderBy("user_id").limit(3).collect()
    ]
    for user in sample_users:
        top = recs.where((F.col("user_id") == user) & (F.col("rank") <= 5)).orderBy("rank").collect()
        top_ads = ads.where((F.col("user_id") == user) & (F.col("rank") <= 3)).orderBy("rank").collect()
        items = ", ".join(f"{r.item_id} ({r.candidate_source}, {r.score:.3f})" for r in top)
        ad_text = ", ".join(f"{r.ad_id} (eCPM {r.ecpm:.3f})" for r in top_ads) or "none eligible"
        console.print(f"[bold]{user}[/] top items: {items}\n    ads: {ad_text}")
    audiences = read_table(spark, cfg, "audiences").where(F.col("rec_date") == F.lit(date))
    named = audiences.select("audience_type", "audience_id").distinct().orderBy("audience_id").limit(2)
    for a in named.collect():
        top = audiences.where((F.col("audience_id") == a.audience_id) & (F.col("rank") <= 5)).orderBy("rank")
        text = ", ".join(f"{r.user_id} ({r.score:.3f})" for r in top.collect())
        console.print(f"[bold]audience[/] of {a.audience_type} {a.audience_id}: {text}")
    for name in ("similar_items", "bought_together"):
        rows = read_table(spark, cfg, name).where(F.col("rec_date") == F.lit(date))
        anchors = [r.item_id for r in rows.select("item_id").distinct().orderBy("item_id").limit(2).collect()]
        for item in anchors:
            top = rows.where((F.col("item_id") == item) & (F.col("rank") <= 5)).orderBy("rank").collect()
            text = ", ".join(f"{r.neighbour_id} ({r.source}, {r.score:.3f})" for r in top)
            console.print(f"[bold]{name}[/] of {item}: {text}")
