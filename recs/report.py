"""``recs report``: evaluation metrics over time as a PNG chart a person can read."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from recs.config import Config

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
        values = ["-" if r[c] is None else f"{r[c]:.4f}" for c in SYSTEMS]
        table.add_row(r.metric, "" if r.k is None else str(r.k), *values)
    return table


def render(spark: SparkSession, cfg: Config, out: Path) -> Path:
    """One panel per metric: the model's line against each baseline's."""
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
        ax.tick_params(axis="x", rotation=30)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"recs offline evaluation — {cfg.lakehouse}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
