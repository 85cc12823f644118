"""Data-parallel training over several processes, launched by Spark's ``TorchDistributor``.

Use it when one process is not enough: several GPUs on the driver (``local_mode``), or GPU
executors across nodes. Every rank reads the same shuffled stream of the training window
from the Delta snapshot and trains on every ``world``-th batch; gradients are averaged after
each backward (``recs.train.loop.average_gradients``), so the replicas stay identical. Rank 0
returns the weights and the metrics, and the driver gates and registers the model exactly
as a single-process run would. CPU ranks use ``gloo``, GPU ranks ``nccl``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterable, Iterator
from typing import Any

from pyspark.sql import SparkSession

from recs.config import Config, config_from_dict


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


def worker(cfg_doc: dict[str, Any], train_dates: list[str], validation_date: str) -> dict[str, Any] | None:
    """Runs in every process; returns rank 0's weights, metrics and a replica checksum."""
    import torch
    import torch.distributed as dist

    from recs.features.spec import load_spec
    from recs.train import TrainWindow, example_streams
    from recs.train.loop import TrainSettings, train
    from recs.train.model import build_model

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        device = "cpu"
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        cfg = config_from_dict(cfg_doc)
        spec = load_spec()
        window = TrainWindow(
            tuple(dt.date.fromisoformat(d) for d in train_dates), dt.date.fromisoformat(validation_date), {}
        )
        train_stream, val_stream = example_streams(cfg, window, spec, device)
        model = build_model(spec, cfg.train.bottom_mlp, cfg.train.top_mlp, seed=cfg.train.seed)
        settings = TrainSettings.from_config(cfg.train, device=device, progress=rank == 0)
        result = train(model, RankShard(train_stream, rank, world), val_stream, settings)
        weights = torch.cat([p.detach().float().flatten() for p in model.parameters()])
        checksum = torch.stack([weights.sum(), weights.abs().sum()]).to(device)
        gathered = [torch.zeros_like(checksum) for _ in range(world)]
        dist.all_gather(gathered, checksum)
        if rank != 0:
            return None
        return {
            "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "best_metrics": result.best_metrics,
            "history": result.history,
            "samples_per_s": result.samples_per_s * world,
            "device": result.device,
            "world": world,
            "replica_checksums": [c.cpu().tolist() for c in gathered],
        }
    finally:
        dist.destroy_process_group()


def train_distributed(
    spark: SparkSession, cfg: Config, date: dt.date, processes: int, *, local_mode: bool = True
):
    """Train the window ending ``date`` on ``processes`` ranks, then gate and register on the driver."""
    import torch
    from pyspark.ml.torch.distributor import TorchDistributor

    from recs.features.spec import load_spec
    from recs.train import TrainOutcome, example_streams, judge_and_register, training_window
    from recs.train.loop import validation_metrics
    from recs.train.model import DLRM

    spec = load_spec()
    window = training_window(spark, cfg, date, spec.spec_hash)
    use_gpu = torch.cuda.is_available() and cfg.train.device != "cpu"
    out = TorchDistributor(num_processes=processes, local_mode=local_mode, use_gpu=use_gpu).run(
        worker,
        dataclasses.asdict(cfg),
        [d.isoformat() for d in window.train_dates],
        window.validation_date.isoformat(),
    )
    model = DLRM(spec, cfg.train.bottom_mlp, cfg.train.top_mlp)
    model.load_state_dict(out["state"])
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
