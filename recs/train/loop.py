"""Training loop: sparse row-wise Adagrad for embeddings, Adam for the MLPs, per-epoch validation.

One code path for CPU and CUDA. On CUDA the forward runs under bf16 autocast; on CPU
only where the CPU has native bf16 (AMX / AVX512-BF16): on AVX2-only CPUs bf16 matmuls are
emulated, and bf16 training ran ~17x slower than fp32 on the 2-core AVX2 EPYC here, so fp32
is used. Batch sources are iterables of :class:`~recs.train.data.Batch` (or dicts with the
same keys), or ``callable(epoch)`` returning one, so a benchmark's random tensors and the
Parquet stream feed the same loop.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from recs.train.data import Batch
from recs.train.model import DLRM, dense_parameters, embedding_parameters

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> None), for ``metrics.json`` and the registry."""
        return _json_clean(asdict(self))


def _json_clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_clean(v) for v in value]
    return value


# --------------------------------------------------------------------------- optimizers


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per embedding row (the mean squared gradient of the row).

    Takes the uncoalesced sparse gradients the model emits and deduplicates rows itself
    (``torch.unique`` + ``index_add_`` instead of ``coalesce()``): on the Criteo benchmark
    shape a step took 11.6 ms vs 35.8 ms for ``torch.optim.Adagrad``'s sparse path and
    62.9 ms for ``SparseAdam`` (2 CPU threads), and the state is one float per row instead
    of one (Adagrad) or two (Adam) per weight. Dense gradients are accepted too.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 0.05, eps: float = 1e-8) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
                if p.grad.is_sparse:
                    rows, values = _sparse_rows(p.grad)
                else:
                    rows, values = None, p.grad.reshape(p.shape[0], -1)
                _adagrad_rows(p, state["sum"], rows, values.float(), group["lr"], group["eps"])
        return loss


def _sparse_rows(grad: Tensor) -> tuple[Tensor, Tensor]:
    """Unique rows and their summed gradient from a (possibly uncoalesced) COO gradient."""
    if grad.is_coalesced():
        return grad.indices()[0], grad.values()
    rows, values = grad._indices()[0], grad._values()
    unique, inverse = torch.unique(rows, return_inverse=True)
    if unique.numel() == rows.numel():
        return rows, values
    return unique, values.new_zeros((unique.numel(), values.shape[1])).index_add_(0, inverse, values)


def _adagrad_rows(
    weight: Tensor, acc: Tensor, rows: Tensor | None, grad: Tensor, lr: float, eps: float
) -> None:
    """``acc[r] += mean(g_r^2); w[r] -= lr * g_r / (sqrt(acc[r]) + eps)`` for the given rows."""
    if rows is None:
        acc.add_(grad.pow(2).mean(1))
        weight.add_(grad * (-lr / (acc.sqrt() + eps)).unsqueeze(1))
        return
    new_acc = acc.index_select(0, rows) + grad.pow(2).mean(1)
    acc.index_put_((rows,), new_acc)  # rows are unique here; index_put_ is parallel, index_copy_ is not
    weight.index_add_(0, rows, (grad * (-lr / (new_acc.sqrt() + eps)).unsqueeze(1)).to(weight.dtype))


def _adam(params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel where this build has one for the device (CPU and CUDA do)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def make_optimizers(model: DLRM, settings: TrainSettings) -> tuple[torch.optim.Optimizer, RowWiseAdagrad]:
    """(dense Adam over the MLPs, row-wise Adagrad over the embedding rows)."""
    return (
        _adam(dense_parameters(model), settings.learning_rate),
        RowWiseAdagrad(embedding_parameters(model), lr=settings.embedding_learning_rate),
    )


# --------------------------------------------------------------------------- devices, precision


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: the CPUs where bf16 matmuls are faster than fp32."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, c, lambda: False)()) for c in checks)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None = fp32)."""
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if name != "auto":
        raise ValueError(f"precision must be auto, fp32 or bf16, got {name!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_native_bf16() else None


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# --------------------------------------------------------------------------- metrics


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
        with _autocast(device, amp):
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


def fit_normalizer_from(model: DLRM, batches: Iterable[Batch | Mapping[str, Any]], max_rows: int) -> int:
    """Fit the dense standardisation on up to ``max_rows`` training rows; returns the rows used."""
    parts, rows = [], 0
    for item in batches:
        dense = Batch.of(item).dense
        parts.append(dense.float().cpu())
        rows += len(dense)
        if rows >= max_rows:
            break
    if not parts:
        raise ValueError("no training rows to fit the dense normaliser on")
    model.fit_normalizer(torch.cat(parts)[:max_rows])
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
        with _autocast(device, amp):
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


def distributed() -> bool:
    """True inside a multi-process run (torchrun / TorchDistributor) with a process group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def broadcast_model(model: DLRM) -> None:
    for tensor in [*model.parameters(), *model.buffers()]:
        torch.distributed.broadcast(tensor.data, src=0)


def average_gradients(model: DLRM) -> None:
    """Average gradients over ranks so every replica takes the same optimizer step.

    Dense gradients are all-reduced. The embedding gradient is sparse (only the rows a batch
    touched), so ranks all-gather its (row, value) pairs instead of reducing the whole table;
    the row-wise optimizer then sums duplicates as it does on one process.
    """
    dist = torch.distributed
    world = dist.get_world_size()
    for p in model.parameters():
        g = p.grad
        if g is None:
            continue
        if not g.is_sparse:
            dist.all_reduce(g)
            g.div_(world)
            continue
        g = g.coalesce()
        rows, values = g.indices()[0], g.values()
        sizes = [torch.zeros((), dtype=torch.int64, device=rows.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor(rows.numel(), dtype=torch.int64, device=rows.device))
        longest = int(max(sizes))
        padded_rows = rows.new_zeros(longest)
        padded_rows[: rows.numel()] = rows
        padded_values = values.new_zeros((longest, values.shape[1]))
        padded_values[: rows.numel()] = values
        all_rows = [torch.empty_like(padded_rows) for _ in range(world)]
        all_values = [torch.empty_like(padded_values) for _ in range(world)]
        dist.all_gather(all_rows, padded_rows)
        dist.all_gather(all_values, padded_values)
        kept_rows = torch.cat([r[: int(n)] for r, n in zip(all_rows, sizes, strict=True)])
        kept_values = torch.cat([v[: int(n)] for v, n in zip(all_values, sizes, strict=True)])
        p.grad = torch.sparse_coo_tensor(
            kept_rows.unsqueeze(0), kept_values / world, g.shape, check_invariants=False
        )


def _limit(batches: Iterable[Any], steps: int | None) -> Iterator[Any]:
    for i, item in enumerate(batches):
        if steps is not None and i >= steps:
            return
        yield item


def validation_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The ``val_*`` entries of an epoch's metrics, without the prefix (what the gate judges)."""
    return {k.removeprefix("val_"): v for k, v in metrics.items() if k.startswith("val_")}


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
        used = fit_normalizer_from(model, _epoch_batches(train_batches, 0), settings.normalizer_rows)
        log.info("dense normaliser fitted on %d rows", used)
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
        log.info("epoch %d: %s", epoch, _fmt(metrics))
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


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
