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

    Takes the uncoalesced sparse gradients the model emits and sums duplicate rows without
    sorting: a per-row scratch map (``scatter_reduce`` amax of positions) names one position per
    row, the few duplicates are added onto it, and every position of a row then carries the
    row's summed gradient. Writing a row twice with the same value is harmless, so the update
    runs over all positions at once. That is faster than ``coalesce()`` or ``torch.unique``
    (``docs/model-design.md``) and keeps one float of state per row instead of one (Adagrad)
    or two (Adam) per weight. Dense gradients are accepted too.
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 0.05, eps: float = 1e-8) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        super().__init__(params, {"lr": lr, "eps": eps})
        self._slots: dict[int, Tensor] = {}  # scratch, not state: all -1 between steps

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
                    rows, values = self._summed_rows(p)
                else:
                    rows, values = None, p.grad.reshape(p.shape[0], -1)
                _adagrad_rows(p, state["sum"], rows, values.float(), group["lr"], group["eps"])
        return loss

    def _summed_rows(self, p: Tensor) -> tuple[Tensor, Tensor]:
        """(row per position, that row's summed gradient) from a possibly uncoalesced COO gradient."""
        grad = p.grad
        assert grad is not None
        if grad.is_coalesced():
            return grad.indices()[0], grad.values()
        rows, values = grad._indices()[0], grad._values()
        slot = self._slots.get(id(p))
        if slot is None or slot.device != p.device:
            # int32: 4 bytes per row, as much as the accumulator; a batch has far fewer than 2**31 slots
            slot = self._slots[id(p)] = torch.full((p.shape[0],), -1, dtype=torch.int32, device=p.device)
        return rows, sum_duplicate_rows(rows, values, slot)


def sum_duplicate_rows(rows: Tensor, values: Tensor, slot: Tensor) -> Tensor:
    """``values`` with each position replaced by the sum over all positions of its row.

    ``slot`` is an all ``-1`` integer map over the table's rows, left as found. The duplicates
    are added onto the last position of each row in a fixed order, so a rerun of a date retrains
    the same model: on CUDA, ``index_add`` adds in the order threads finish (two trainings of
    the same batches on an H200 ended up to 3.0 apart in fp32), so there the sum goes through
    ``index_put(accumulate=True)``, which sorts first; on CPU ``index_add`` is already ordered.
    """
    positions = torch.arange(rows.numel(), dtype=slot.dtype, device=rows.device)
    slot.scatter_reduce_(0, rows, positions, "amax")
    owner = slot.index_select(0, rows)
    slot.index_fill_(0, rows, -1)
    extra = (owner != positions).nonzero().squeeze(1)
    if extra.numel() == 0:
        return values
    extra_owner = owner.index_select(0, extra)
    moved = values.index_select(0, extra)
    if values.is_cuda:
        summed = values.index_put((extra_owner,), moved, accumulate=True)
    else:
        summed = values.index_add(0, extra_owner, moved)
    return summed.index_copy_(0, extra, summed.index_select(0, extra_owner))


def _adagrad_rows(
    weight: Tensor, acc: Tensor, rows: Tensor | None, grad: Tensor, lr: float, eps: float
) -> None:
    """``acc[r] += mean(g_r^2); w[r] -= lr * g_r / (sqrt(acc[r]) + eps)`` for the given rows.

    ``rows`` may repeat a row when every repeat carries the same (summed) gradient: each
    writes the same new value. ``index_put_`` is parallel; ``index_add_`` and ``index_copy_``
    are not.
    """
    if rows is None:
        acc.add_(grad.pow(2).mean(1))
        weight.add_(grad * (-lr / (acc.sqrt() + eps)).unsqueeze(1))
        return
    new_acc = acc.index_select(0, rows) + torch.linalg.vector_norm(grad, dim=1).square_().div_(grad.shape[1])
    acc.index_put_((rows,), new_acc)
    step = new_acc.sqrt_().add_(eps).reciprocal_().mul_(-lr).unsqueeze(1)
    weight.index_put_(
        (rows,), weight.index_select(0, rows).addcmul_(grad.to(weight.dtype), step.to(weight.dtype))
    )


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
