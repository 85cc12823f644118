"""``recs report``: evaluation metrics over time as a PNG chart a person can read."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from recs.config import Config
from recs.values import metric_text

PANELS = (("recall", 10), ("ndcg", 10), ("hit_rate", 10), ("mrr", "max"), ("coverage", 10), ("auc", None))
# eval_metrics column -> legend label and line style, the model first.
SYSTEMS = {
    "value": ("model", "-"),
    "baseline_value": ("popularity", "--"),
    "candidate_order_value": ("candidate order", ":"),
    "recent_value": ("recent items", "-."),
}


def eval_table(rows: list, title: str):
    """A rich table of eval_metrics rows: each metric for the model and every baseline."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("metric", "k", *(label for label, _ in SYSTEMS.values())):
        table.add_column(col)
    for r in rows:
        values = [metric_text(r[c]) for c in SYSTEMS]
        arm = r.asDict().get("arm") or "all"
        metric = r.metric if arm == "all" else f"{r.metric} ({arm} arm)"
        table.add_row(metric, "" if r.k is None else str(r.k), *values)
    return table


def date_limits(dates) -> tuple:
    """An x range that fits the dates drawn, a day of margin each side (one date is a 3-day span)."""
    import pandas as pd

    days = pd.to_datetime(pd.Series(list(dates)))
    return days.min() - pd.Timedelta(days=1), days.max() + pd.Timedelta(days=1)


def render(spark: SparkSession, cfg: Config, out: Path) -> Path:
    """One panel per metric (the model's line against each baseline's) and the health checks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import pandas as pd

    from recs.tables import read_table, table_exists, table_path

    # eval_metrics and output_health hold a few dozen rows per day: small enough for the driver.
    pdf = read_table(spark, cfg, "eval_metrics").toPandas().sort_values("eval_date")
    if "arm" in pdf:  # the charts follow every judged user; `recs evaluate` prints each arm
        pdf = pdf[pdf["arm"].isna() | (pdf["arm"] == "all")]
    if pdf.empty:
        raise ValueError("eval_metrics is empty; run `recs evaluate` first")
    pdf["eval_date"] = pd.to_datetime(pdf["eval_date"])
    health = None
    if table_exists(spark, table_path(cfg, "output_health")):
        health = read_table(spark, cfg, "output_health").toPandas()
        health["rec_date"] = pd.to_datetime(health["rec_date"])
    dates = list(pdf["eval_date"]) + ([] if health is None else list(health["rec_date"]))
    limits = date_limits(dates)
    fig, axes = plt.subplots(3, 3, figsize=(13, 10), constrained_layout=True)
    span_days = (limits[1] - limits[0]).days
    for ax in axes.flat:
        ax.set_xlim(*limits)
        # A few nights: a tick per day (AutoDateLocator finds no interval for a 2-day span).
        locator = mdates.DayLocator() if span_days <= 14 else mdates.AutoDateLocator(maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    draw_health(axes.flat[6:], health)
    for ax, (metric, k) in zip(list(axes.flat)[:6], PANELS, strict=True):
        rows = pdf[pdf.metric == metric]
        if k == "max":  # MRR is cut at the largest k evaluated
            k = rows.k.max() if not rows.empty else None
        rows = rows[(rows.k == k) if k is not None else rows.k.isna()]
        title = f"{metric}@{k:.0f}" if k else metric
        ax.set_title(title)
        if rows.empty:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        for column, (label, style) in SYSTEMS.items():
            if column in rows and rows[column].notna().any():
                ax.plot(rows.eval_date, rows[column], marker="o", linestyle=style, label=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"recs offline evaluation — {cfg.lakehouse}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


HEALTH_PANELS = ("catalog_coverage", "top1pct_slot_share")


def draw_health(axes, health) -> None:
    """Failing checks per night, and two check values against their limits."""
    first, *rest = axes
    first.set_title("output health: failing checks")
    if health is None or health.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no output_health yet", ha="center", va="center", transform=ax.transAxes)
        return
    failing = health.groupby("rec_date")["ok"].apply(lambda ok: int((~ok.astype(bool)).sum()))
    first.bar(failing.index, failing.values, width=0.6)
    first.grid(alpha=0.3)
    for ax, check in zip(rest, HEALTH_PANELS, strict=False):
        rows = health[health["check"] == check].sort_values("rec_date")
        ax.set_title(f"health: {check}")
        ax.plot(rows["rec_date"], rows["value"], marker="o", label="value")
        ax.plot(rows["rec_date"], rows["limit"], linestyle="--", label="limit")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
