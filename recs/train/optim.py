"""The two optimisers: Adam for the MLPs, row-wise Adagrad for the embedding rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from recs.model.dlrm import DLRM, dense_parameters, embedding_parameters

if TYPE_CHECKING:
    from recs.train.loop import TrainSettings


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per embedding row (the mean squared gradient of the row).

    Takes the uncoalesced sparse gradients the model emits and deduplicates rows itself
    (``torch.unique`` + ``index_add_`` instead of ``coalesce()``), which is faster than
    ``torch.optim.Adagrad``'s and ``SparseAdam``'s sparse paths (``docs/model-design.md``), and
    keeps one float of state per row instead of one (Adagrad) or two (Adam) per weight.
    Dense gradients are accepted too.
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
