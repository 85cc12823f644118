"""Keeping replicas in step in a multi-process run: one start, averaged gradients."""

from __future__ import annotations

import torch

from recs.model.dlrm import DLRM


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
