"""Replicas across ranks: two real gloo processes finish with the same payload, or refuse to."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recs.errors import ReplicaMismatchError
from recs.model.dlrm import build_model
from recs.train.distributed import decode_payload, finish_rank
from tests.unit.test_train_loop import planted_spec


def _finish_two_ranks(rank: int, store: str, out_dir: str) -> None:
    """One rank of a 2-process gloo group: finish with identical replicas, then with different ones."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model = build_model(planted_spec(), [8], [8], seed=0)
        payload = {"state": model.state_dict(), "rank": rank} if rank == 0 else None
        Path(out_dir, f"same-{rank}.bin").write_bytes(finish_rank(model, payload, "cpu"))
        if rank == 1:
            with torch.no_grad():
                next(model.parameters()).add_(1e-6)
        try:
            finish_rank(model, payload, "cpu")
            outcome = "returned"
        except ReplicaMismatchError as exc:
            outcome = str(exc)
        Path(out_dir, f"differ-{rank}.txt").write_text(outcome)
    finally:
        dist.destroy_process_group()


def test_every_rank_returns_rank_zeros_payload_and_all_refuse_differing_replicas(tmp_path: Path) -> None:
    """Whichever rank's return value the distributor hands back, the driver gets the same result."""
    import torch.multiprocessing as mp

    mp.spawn(_finish_two_ranks, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    same = [(tmp_path / f"same-{r}.bin").read_bytes() for r in (0, 1)]
    assert same[0] == same[1]
    out = decode_payload(same[1])
    assert out["rank"] == 0 and out["replica_checksums"][0] == out["replica_checksums"][1]
    for rank in (0, 1):
        assert "replicas differ" in (tmp_path / f"differ-{rank}.txt").read_text()
    with pytest.raises(RuntimeError, match="NoneType"):
        decode_payload(None)
