"""The model registry (Delta table ``model_registry``) and the promotion gate.

A model is promoted only if its validation AUC clears the floor and is not worse than the
model promoted as of that day, measured *on the same validation day*, by more than the
tolerance.

Point in time: the model for date D is the promoted row with the latest
``validation_date <= D`` (ties: the latest ``trained_at``), for scoring and for the gate's
incumbent alike. A rerun or backfill of D therefore never sees a model trained on later
days. ``artifact_path`` is stored relative to the lakehouse root, so a copied or restored
lakehouse is self-contained.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F

from recs.config import Config
from recs.schemas import table_schema
from recs.tables import append_rows, lakehouse_root, read_table, table_exists, table_path


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


def promoted_model(spark: SparkSession, cfg: Config, as_of: dt.date | None = None) -> Row | None:
    """The model that serves ``as_of``: promoted, validated on or before it, latest such.

    ``as_of=None`` means "whatever is newest", which only status displays should ask for.
    """
    if not registry_exists(spark, cfg):
        return None
    rows = read_table(spark, cfg, "model_registry").where("status = 'promoted'")
    if as_of is not None:
        rows = rows.where(F.col("validation_date") <= F.lit(as_of))
    return rows.orderBy(
        F.col("validation_date").desc(), F.col("trained_at").desc(), F.col("model_version").desc()
    ).first()


def artifact_location(cfg: Config, stored: str) -> str:
    """Where a registry row's artefact lives: stored paths are relative to the lakehouse root.

    Rows written before paths were relative hold absolute paths or URIs; those are kept.
    """
    if "://" in stored or stored.startswith("/"):
        return stored
    return f"{lakehouse_root(cfg)}/{stored}"


def model_dir(version: str) -> str:
    """An artefact's path relative to the lakehouse root."""
    return f"models/{version}"


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
