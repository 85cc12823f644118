"""``recs report``: evaluation metrics over time as a PNG chart a person can read."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from recs.config import Config

PANELS = (("recall", 10), ("ndcg", 10), ("hit_rate", 10), ("mrr", None), ("coverage", 10), ("auc", None))


def render(spark: SparkSession, cfg: Config, out: Path) -> Path:
    """One panel per metric: the model's line against the popularity baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recs.tables import read_table

    # eval_metrics holds a few dozen rows per day: small enough to bring to the driver.
    pdf = read_table(spark, cfg, "eval_metrics").toPandas().sort_values("eval_date")
    if pdf.empty:
        raise ValueError("eval_metrics is empty; run `recs evaluate` first")
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for ax, (metric, k) in zip(axes.flat, PANELS, strict=True):
        rows = pdf[(pdf.metric == metric) & ((pdf.k == k) if k is not None else pdf.k.isna())]
        title = f"{metric}@{k}" if k else metric
        ax.set_title(title)
        if rows.empty:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.plot(rows.eval_date, rows.value, marker="o", label="model")
        if rows.baseline_value.notna().any():
            ax.plot(rows.eval_date, rows.baseline_value, marker="s", linestyle="--", label="popularity")
        ax.tick_params(axis="x", rotation=30)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"recs offline evaluation — {cfg.lakehouse}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
