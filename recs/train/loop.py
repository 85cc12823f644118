"""The training loop: epochs, weighted log-loss, per-epoch validation, early stopping.

One code path for CPU and CUDA; :mod:`recs.model.device` picks the device and whether the
forward runs under bf16 autocast. Batch sources are iterables of
:class:`~recs.model.batches.Batch` (or dicts with the same keys), or ``callable(epoch)``
returning one, so a benchmark's random tensors and the Delta stream feed the same loop.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from recs.model.batches import Batch
from recs.model.device import autocast, resolve_device, resolve_precision
from recs.model.dlrm import DLRM
from recs.model.metrics import evaluate, validation_metrics
from recs.train.collective import average_gradients, broadcast_model, distributed
from recs.train.optim import make_optimizers
from recs.values import metrics_text

log = logging.getLogger(__name__)

BatchSource = Iterable[Batch | Mapping[str, Any]] | Callable[[int], Iterable[Batch | Mapping[str, Any]]]


@dataclass(frozen=True)
class TrainSettings:
    """Knobs of :func:`train`; :meth:`from_config` maps the ``[train]`` config section."""

    epochs: int = 4
    learning_rate: float = 2e-3  # Adam, MLPs
    embedding_learning_rate: float = 0.5  # row-wise Adagrad, embeddings (0.05 often failed to learn)
    patience: int = 1  # epochs without validation improvement before stopping (at least 1)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | fp32 | bf16
    seed: int = 7
    progress: bool = True
    log_every: int = 50  # steps between loss read-backs (a device sync on CUDA)
    max_steps_per_epoch: int | None = None
    normalizer_rows: int = 262_144  # dense rows used to fit the standardisation

    @classmethod
    def from_config(cls, train_cfg: Any, **overrides: Any) -> TrainSettings:
        """From ``recs.config.TrainConfig`` (fields that exist on both), then ``overrides``."""
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in vars(train_cfg).items() if k in names}
        values.update(overrides)
        return cls(**values)


@dataclass
class TrainResult:
    """What :func:`train` returns; the model passed in now holds the best epoch's weights."""

    history: list[dict[str, float]]
    best_epoch: int
    best_metrics: dict[str, float]
    samples_per_s: float
    device: str
    precision: str
    stopped_early: bool
    settings: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- training


def weighted_bce(logits: Tensor, label: Tensor, weight: Tensor) -> Tensor:
    """Weighted mean log-loss; normalising by the weight sum keeps the scale under negative sampling."""
    losses = F.binary_cross_entropy_with_logits(logits.float(), label, reduction="none")
    return (losses * weight).sum() / weight.sum().clamp_min(1e-12)


def _epoch_batches(source: BatchSource, epoch: int) -> Iterable[Batch | Mapping[str, Any]]:
    return source(epoch) if callable(source) else source


def _check_reiterable(source: BatchSource, name: str, passes: int) -> None:
    if passes > 1 and isinstance(source, Iterator):
        raise TypeError(
            f"{name} is a one-shot iterator but is read {passes} times; pass a list, an ExampleStream "
            "or a callable(epoch) returning the batches"
        )


def fit_start_from(model: DLRM, batches: Iterable[Batch | Mapping[str, Any]], max_rows: int) -> int:
    """Fit the dense standardisation, then the linear term, on the first ``max_rows`` training
    rows; returns the rows used."""
    parts, rows = [], 0
    for item in batches:
        batch = Batch.of(item)
        parts.append([t.cpu() for t in (batch.dense.float(), batch.label, batch.weight, batch.is_ad)])
        rows += len(batch)
        if rows >= max_rows:
            break
    if not parts:
        raise ValueError("no training rows to fit the dense normaliser on")
    dense, label, weight, is_ad = (torch.cat(column)[:max_rows] for column in zip(*parts, strict=True))
    model.fit_normalizer(dense)
    model.fit_linear(dense, label, weight, is_ad)
    return min(rows, max_rows)


@dataclass
class EpochStats:
    """Training-side totals of one epoch (``loss_sum`` stays on the device until read)."""

    rows: int = 0
    steps: int = 0
    seconds: float = 0.0
    loss_sum: Tensor | None = None


def train_epoch(
    model: DLRM,
    batches: Iterable[Batch | Mapping[str, Any]],
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    device: torch.device,
    amp: torch.dtype | None,
    settings: TrainSettings,
    desc: str = "train",
) -> EpochStats:
    """One pass: forward, weighted BCE, backward, one dense and one sparse optimizer step per batch."""
    model.train()
    totals = EpochStats(loss_sum=torch.zeros((), dtype=torch.float64, device=device))
    bar = tqdm(desc=desc, unit="ex", unit_scale=True, disable=not settings.progress, mininterval=1.0)
    started = time.perf_counter()
    for item in _limit(batches, settings.max_steps_per_epoch):
        batch = Batch.of(item).to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(batch.dense, batch.sparse, batch.is_ad)
        loss = weighted_bce(logits, batch.label, batch.weight)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if distributed():
            average_gradients(model)
        for opt in optimizers:
            opt.step()
        totals.loss_sum += loss.detach()
        totals.steps += 1
        totals.rows += len(batch)
        bar.update(len(batch))
        if settings.progress and totals.steps % settings.log_every == 0:
            bar.set_postfix(loss=f"{float(totals.loss_sum) / totals.steps:.4f}", refresh=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    totals.seconds = time.perf_counter() - started
    bar.close()
    return totals


def _limit(batches: Iterable[Any], steps: int | None) -> Iterator[Any]:
    for i, item in enumerate(batches):
        if steps is not None and i >= steps:
            return
        yield item


def _score(metrics: dict[str, float]) -> float:
    """Early-stopping score: validation AUC, or -log-loss when AUC is undefined (one class)."""
    auc = metrics.get("auc", math.nan)
    return auc if auc == auc else -metrics.get("logloss", math.inf)


def train(
    model: DLRM,
    train_batches: BatchSource,
    val_batches: BatchSource,
    settings: TrainSettings | None = None,
) -> TrainResult:
    """Fit ``model`` in place; validate after every epoch; stop after ``patience`` epochs without
    a better validation AUC and restore the best epoch's weights.

    Fits the dense normaliser first (from the training batches) unless already fitted.
    """
    settings = settings or TrainSettings()
    device = resolve_device(settings.device)
    amp = resolve_precision(settings.precision, device)
    torch.manual_seed(settings.seed)
    _check_reiterable(train_batches, "train_batches", settings.epochs + (not model.normalizer_fitted))
    _check_reiterable(val_batches, "val_batches", settings.epochs)
    if not model.normalizer_fitted:
        used = fit_start_from(model, _epoch_batches(train_batches, 0), settings.normalizer_rows)
        log.info("dense normaliser and linear term fitted on %d rows", used)
    model.to(device)
    if distributed():
        broadcast_model(model)  # every rank starts from rank 0's weights and normaliser
    optimizers = make_optimizers(model, settings)
    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state, stale = -math.inf, -1, None, 0
    rows = seconds = 0.0
    for epoch in range(settings.epochs):
        steps = train_epoch(
            model, _epoch_batches(train_batches, epoch), optimizers, device, amp, settings, f"epoch {epoch}"
        )
        if steps.steps == 0:
            raise ValueError("no training batches")
        rows, seconds = rows + steps.rows, seconds + steps.seconds
        if not math.isfinite(float(steps.loss_sum)):
            raise FloatingPointError(f"training loss is {float(steps.loss_sum)} in epoch {epoch}")
        metrics = evaluate(model, _epoch_batches(val_batches, epoch), device, settings.precision)
        metrics = {
            "epoch": epoch,
            "train_loss": float(steps.loss_sum) / steps.steps,
            "train_rows": steps.rows,
            "train_samples_per_s": steps.rows / max(steps.seconds, 1e-9),
            **{f"val_{k}": v for k, v in metrics.items()},
        }
        history.append(metrics)
        log.info("epoch %d: %s", epoch, metrics_text(metrics))
        score = _score(validation_metrics(metrics))
        if score > best_score:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= max(settings.patience, 1):
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(
        history=history,
        best_epoch=best_epoch,
        best_metrics=history[best_epoch] if best_epoch >= 0 else {},
        samples_per_s=rows / max(seconds, 1e-9),
        device=str(device),
        precision="bf16" if amp is not None else "fp32",
        stopped_early=len(history) < settings.epochs,
        settings=asdict(settings),
    )
