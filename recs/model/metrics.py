"""How good a model's probabilities are: AUC, log-loss, calibration, overall and on ad rows."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recs.model.batches import Batch
from recs.model.device import autocast, resolve_device, resolve_precision
from recs.model.dlrm import DLRM


def roc_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Rank AUC with ties counted as half (the Mann-Whitney statistic); NaN with one class only."""
    y = np.asarray(labels) > 0.5
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    _, group = np.unique(np.asarray(scores), return_inverse=True)
    pos = np.bincount(group, weights=w * y)
    neg = np.bincount(group, weights=w * ~y)
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (total_pos * total_neg))


def binary_metrics(
    labels: np.ndarray, logits: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float]:
    """AUC, log-loss, normalised entropy (log-loss / entropy of the base rate), calibration."""
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if len(y) == 0 or total <= 0:
        return {"auc": math.nan, "logloss": math.nan, "ne": math.nan, "calibration": math.nan, "count": 0}
    losses = np.maximum(z, 0) - y * z + np.log1p(np.exp(-np.abs(z)))
    logloss = float((w * losses).sum() / total)
    base = float((w * y).sum() / total)
    entropy = -(base * math.log(base) + (1 - base) * math.log(1 - base)) if 0 < base < 1 else math.nan
    mean_pred = float((w / (1 + np.exp(-z))).sum() / total)
    return {
        "auc": roc_auc(y, z, w),
        "logloss": logloss,
        "ne": logloss / entropy if entropy == entropy else math.nan,
        "calibration": mean_pred / base if base > 0 else math.nan,
        "base_rate": base,
        "count": int(len(y)),
    }


@torch.inference_mode()
def predict_batches(
    model: DLRM, batches: Iterable[Batch | Mapping[str, Any]], device: torch.device, amp: torch.dtype | None
) -> dict[str, np.ndarray]:
    """Logits with labels, weights and is_ad for every row of ``batches`` (numpy, host memory)."""
    model.eval()
    out: dict[str, list[Tensor]] = {"logit": [], "label": [], "weight": [], "is_ad": []}
    for item in batches:
        batch = Batch.of(item).to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(batch.dense, batch.sparse, batch.is_ad)
        for key, value in (("logit", logits.float()), ("label", batch.label), ("weight", batch.weight)):
            out[key].append(value.to("cpu", non_blocking=True))
        out["is_ad"].append(batch.is_ad.to("cpu", non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {k: (torch.cat(v).numpy() if v else np.empty(0)) for k, v in out.items()}


def evaluate(
    model: DLRM,
    batches: Iterable[Batch | Mapping[str, Any]],
    device: str | torch.device = "auto",
    precision: str = "auto",
) -> dict[str, float]:
    """Validation metrics over all rows, plus ``ads_*`` over the ad rows (their pCTR sets eCPM)."""
    dev = resolve_device(device) if isinstance(device, str) else device
    model.to(dev)
    preds = predict_batches(model, batches, dev, resolve_precision(precision, dev))
    metrics = binary_metrics(preds["label"], preds["logit"], preds["weight"])
    ads = preds["is_ad"].astype(bool)
    if ads.any():
        ad_metrics = binary_metrics(preds["label"][ads], preds["logit"][ads], preds["weight"][ads])
        metrics.update({f"ads_{k}": v for k, v in ad_metrics.items() if k != "base_rate"})
    return metrics


def validation_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The ``val_*`` entries of an epoch's metrics, without the prefix (what the gate judges)."""
    return {k.removeprefix("val_"): v for k, v in metrics.items() if k.startswith("val_")}
