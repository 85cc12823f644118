"""Data-parallel training over several processes, launched by Spark's ``TorchDistributor``.

Use it when one process is not enough: several GPUs on the driver (``local_mode``), or GPU
executors across nodes. Every rank reads the same shuffled stream of the training window
from the Delta snapshot and trains on every ``world``-th batch; gradients are averaged after
each backward (``recs.train.collective.average_gradients``), so the replicas stay identical. The
ranks then compare digests of their weights and every rank returns the same bytes (rank 0's
weights and metrics), so the driver gets the same result whichever rank's return value
``TorchDistributor`` hands back, and gates and registers the model exactly as a
single-process run would. CPU ranks use ``gloo``, GPU ranks ``nccl``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from pyspark.sql import SparkSession

from recs.config import Config, config_from_dict
from recs.errors import ReplicaMismatchError

if TYPE_CHECKING:
    import torch

    from recs.train import TrainWindow


class RankShard:
    """Every ``world``-th batch of a stream for one rank; all ranks stop at the same step.

    Batches are taken in groups of ``world``; an incomplete last group is dropped by every
    rank, so collectives never wait on a rank that has run out of data.
    """

    def __init__(self, stream: Iterable[Any], rank: int, world: int) -> None:
        self.stream, self.rank, self.world = stream, rank, world

    def __iter__(self) -> Iterator[Any]:
        group: list[Any] = []
        for batch in self.stream:
            group.append(batch)
            if len(group) == self.world:
                yield group[self.rank]
                group = []


def use_cuda(device: str) -> bool:
    """Whether the ranks train on CUDA: the driver and every rank must agree (nccl vs gloo)."""
    import torch

    return device != "cpu" and torch.cuda.is_available()


def replica_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, bit for bit: equal only for identical replicas.

    A digest rather than sums of the weights: sums can agree for different weights and can
    differ in the last bit with the reduction order, so they prove neither way.
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().flatten()
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_replicas(digests: list[str], world: int) -> None:
    """Raise :class:`ReplicaMismatchError` unless there is one digest per rank and all are equal."""
    if len(digests) != world:
        raise ReplicaMismatchError(f"expected a weight digest from each of {world} ranks, got {digests}")
    if len(set(digests)) != 1:
        per_rank = ", ".join(f"rank {r}: {d[:16]}" for r, d in enumerate(digests))
        raise ReplicaMismatchError(f"replicas differ after training ({per_rank})")


def gather_digests(model: torch.nn.Module, device: str) -> list[str]:
    """Every rank's :func:`replica_digest`, in rank order (a collective: all ranks must call it)."""
    import torch
    import torch.distributed as dist

    own = torch.tensor(list(bytes.fromhex(replica_digest(model))), dtype=torch.int64, device=device)
    gathered = [torch.zeros_like(own) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, own)
    return [bytes(t.cpu().tolist()).hex() for t in gathered]


def encode_payload(payload: dict[str, Any]) -> bytes:
    """``torch.save`` bytes: tensors, dicts, lists, numbers and strings only (``weights_only`` loads)."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def decode_payload(blob: Any) -> dict[str, Any]:
    """The payload the ranks returned; a clear error when the distributor handed back something else."""
    import torch

    if not isinstance(blob, bytes):
        raise RuntimeError(f"TorchDistributor returned {type(blob).__name__}, not the ranks' payload bytes")
    return torch.load(io.BytesIO(blob), weights_only=True)


def finish_rank(model: torch.nn.Module, payload: dict[str, Any] | None, device: str) -> bytes:
    """Check the replicas are identical, then give every rank rank 0's payload as the same bytes.

    In local mode ``TorchDistributor`` has every process pickle its return value to one file
    and hands back whatever ended up there, i.e. the output of the rank that finished last.
    Returning identical bytes from every rank makes that order irrelevant (identical writes
    leave the same file, however they interleave). Every rank raises the same error when the
    replicas differ, so no rank is left waiting in a collective. ``payload`` is read on rank 0
    only; ``replica_checksums`` (the per-rank digests) is added to it.
    """
    import torch.distributed as dist

    digests = gather_digests(model, device)
    check_replicas(digests, dist.get_world_size())
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        if payload is None:
            raise ValueError("rank 0 needs the payload to broadcast")
        box = [encode_payload({**payload, "replica_checksums": digests})]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def worker(cfg_doc: dict[str, Any], window: TrainWindow, precision: str) -> bytes:
    """Runs in every process; every rank returns rank 0's weights, metrics and the replica digests."""
    import torch
    import torch.distributed as dist

    from recs.features.spec import load_spec
    from recs.model.dlrm import build_model
    from recs.train import example_streams
    from recs.train.loop import TrainSettings, train

    cfg = config_from_dict(cfg_doc)
    cuda = use_cuda(cfg.train.device)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        device = "cpu"
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        spec = load_spec()
        train_stream, val_stream = example_streams(cfg, window, spec, device)
        model = build_model(spec, cfg.train.bottom_mlp, cfg.train.top_mlp, seed=cfg.train.seed)
        settings = TrainSettings.from_config(
            cfg.train, device=device, precision=precision, progress=rank == 0
        )
        result = train(model, RankShard(train_stream, rank, world), val_stream, settings)
        payload = None
        if rank == 0:
            payload = {
                "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "best_metrics": result.best_metrics,
                "history": result.history,
                "samples_per_s": result.samples_per_s * world,
                "device": result.device,
                "precision": result.precision,
                "world": world,
            }
        return finish_rank(model, payload, device)
    finally:
        dist.destroy_process_group()


def train_distributed(
    spark: SparkSession,
    cfg: Config,
    date: dt.date,
    processes: int,
    *,
    local_mode: bool = True,
    precision: str = "auto",
) -> tuple[Any, dict[str, Any]]:
    """Train the window ending ``date`` on ``processes`` ranks, then gate and register on the driver.

    The ranks get the driver's window itself (pinned Delta version included), so every rank
    streams the same snapshot the driver validates on; ``precision`` is ``auto|fp32|bf16``
    as in :class:`~recs.train.loop.TrainSettings`.
    """
    from pyspark.ml.torch.distributor import TorchDistributor

    from recs.features.spec import load_spec
    from recs.model.dlrm import DLRM
    from recs.model.metrics import validation_metrics
    from recs.train import TrainOutcome, example_streams, judge_and_register, training_window

    spec = load_spec()
    window = training_window(spark, cfg, date, spec.spec_hash)
    distributor = TorchDistributor(
        num_processes=processes, local_mode=local_mode, use_gpu=use_cuda(cfg.train.device)
    )
    out = decode_payload(distributor.run(worker, dataclasses.asdict(cfg), window, precision))
    check_replicas(out["replica_checksums"], processes)
    model = DLRM(spec, cfg.train.bottom_mlp, cfg.train.top_mlp)
    model.load_state_dict(out["state"])
    if replica_digest(model) != out["replica_checksums"][0]:
        raise ReplicaMismatchError("the weights the ranks returned are not the replicas they compared")
    metrics = validation_metrics(out["best_metrics"])
    _, val_stream = example_streams(cfg, window, spec, "cpu")
    outcome: TrainOutcome = judge_and_register(
        spark,
        cfg,
        model,
        metrics,
        window,
        val_stream,
        date,
        extra={"history": out["history"], "samples_per_s": out["samples_per_s"], "processes": out["world"]},
    )
    return outcome, out
