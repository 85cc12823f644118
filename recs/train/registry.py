"""The model registry (Delta table ``model_registry``) and the promotion gate.

A model is promoted only if its validation AUC clears the floor and is not worse than the
currently promoted model's AUC *on the same validation day* by more than the tolerance.
Scoring always uses the newest promoted row.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F

from recs.config import Config
from recs.schemas import table_schema
from recs.tables import append_rows, read_table, table_exists, table_path


@dataclass(frozen=True)
class GateDecision:
    status: str  # promoted | rejected
    reason: str


def gate(auc: float, floor: float, incumbent_auc: float | None, tolerance: float) -> GateDecision:
    """Promote only a model that clears the floor and does not regress on the incumbent."""
    if math.isnan(auc):  # NaN: e.g. a validation day with one class only
        return GateDecision("rejected", "validation AUC is undefined")
    if auc < floor:
        return GateDecision("rejected", f"AUC {auc:.4f} is below the floor {floor:.4f}")
    if incumbent_auc is not None and auc < incumbent_auc - tolerance:
        return GateDecision(
            "rejected",
            f"AUC {auc:.4f} is worse than the promoted model's {incumbent_auc:.4f} by more than {tolerance}",
        )
    if incumbent_auc is None:
        return GateDecision("promoted", f"AUC {auc:.4f} clears the floor {floor:.4f}; no model was promoted")
    return GateDecision("promoted", f"AUC {auc:.4f} vs the promoted model's {incumbent_auc:.4f}")


def registry_exists(spark: SparkSession, cfg: Config) -> bool:
    return table_exists(spark, table_path(cfg, "model_registry"))


def promoted_model(spark: SparkSession, cfg: Config) -> Row | None:
    """The most recently promoted model's registry row (status history is append-only)."""
    if not registry_exists(spark, cfg):
        return None
    rows = read_table(spark, cfg, "model_registry")
    return (
        rows.where("status = 'promoted'")
        .orderBy(F.col("trained_at").desc(), F.col("model_version").desc())
        .first()
    )


def record_model(
    spark: SparkSession,
    cfg: Config,
    *,
    model_version: str,
    train_start: dt.date,
    train_end: dt.date,
    validation_date: dt.date,
    metrics: dict[str, float],
    baseline_auc: float | None,
    spec_hash: str,
    artifact_path: str,
    decision: GateDecision,
    run_date: dt.date,
) -> None:
    row = {
        "model_version": model_version,
        "trained_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        "train_start": train_start,
        "train_end": train_end,
        "validation_date": validation_date,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "baseline_auc": baseline_auc,
        "spec_hash": spec_hash,
        "artifact_path": artifact_path,
        "status": decision.status,
        "reason": decision.reason,
        "run_date": run_date,
    }
    append_rows(spark.createDataFrame([row], table_schema("model_registry")), cfg, "model_registry")


def model_row(spark: SparkSession, cfg: Config, version: str) -> Row | None:
    """The latest registry row of ``version`` (None for the no-model marker or an unknown version)."""
    if not registry_exists(spark, cfg):
        return None
    rows = read_table(spark, cfg, "model_registry").where(F.col("model_version") == version)
    return rows.orderBy(F.col("trained_at").desc()).first()
