"""The training step on the shared pipeline lakehouse: the promotion gate against a real model."""

from __future__ import annotations

import dataclasses
import datetime as dt

import torch

from recs.config import replace_section
from recs.features.spec import load_spec
from recs.train import example_streams, judge_and_register, training_window
from recs.train.loop import TrainSettings, train, validation_metrics
from recs.train.model import build_model
from recs.train.registry import promoted_model
from tests.conftest import NIGHTS, START

LAST = START + dt.timedelta(days=NIGHTS - 1)


class ShuffledLabels:
    """Re-iterable view of a batch stream with each batch's labels permuted: no signal left."""

    def __init__(self, stream, seed: int = 0) -> None:
        self.stream, self.seed = stream, seed

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        for batch in self.stream:
            perm = torch.randperm(len(batch), generator=g)
            yield dataclasses.replace(batch, label=batch.label[perm])


def test_a_model_trained_on_shuffled_labels_is_rejected_and_the_promoted_one_kept(spark, pipeline):
    cfg, _ = pipeline
    before = promoted_model(spark, cfg)
    assert before is not None
    # No floor, so only the comparison with the promoted model can reject it; another seed
    # gives it its own version instead of overwriting the promoted artefact.
    cfg = replace_section(cfg, "train", auc_floor=0.0, seed=cfg.train.seed + 1)
    spec = load_spec()
    window = training_window(spark, cfg, LAST, spec.spec_hash)
    train_stream, val_stream = example_streams(cfg, window, spec, "cpu")
    model = build_model(spec, cfg.train.bottom_mlp, cfg.train.top_mlp, seed=cfg.train.seed)
    result = train(model, ShuffledLabels(train_stream), val_stream, TrainSettings.from_config(cfg.train))
    metrics = validation_metrics(result.best_metrics)

    outcome = judge_and_register(spark, cfg, model, metrics, window, val_stream, LAST)

    assert outcome.status == "rejected", outcome.reason
    assert "worse than the promoted model" in outcome.reason
    assert outcome.model_version != before.model_version
    assert metrics["auc"] < before.metrics["auc"] - cfg.train.auc_tolerance
    after = promoted_model(spark, cfg)
    assert after.model_version == before.model_version


def test_two_gloo_processes_keep_identical_replicas_and_learn(spark, pipeline):
    """The TorchDistributor path in local mode: two CPU ranks, gradients averaged with gloo."""
    from recs.train.distributed import train_distributed

    cfg, _ = pipeline
    before = promoted_model(spark, cfg)
    # An unreachable floor: the run is registered as rejected and cannot change what is promoted.
    # batch_size is per rank: half of it keeps the effective batch of the single-process run,
    # and four epochs give the ranks as many optimizer steps as the tiny window allows.
    cfg = replace_section(
        cfg,
        "train",
        processes=2,
        seed=cfg.train.seed + 2,
        auc_floor=1.01,
        batch_size=cfg.train.batch_size // 2,
        epochs=4,
    )
    outcome, out = train_distributed(spark, cfg, LAST, 2)

    assert out["world"] == 2
    first, second = out["replica_checksums"]
    assert first == second  # both ranks hold exactly the same weights after training
    assert outcome.status == "rejected" and outcome.metrics["auc"] > 0.55
    assert promoted_model(spark, cfg).model_version == before.model_version
