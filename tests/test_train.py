"""The training step on the shared pipeline lakehouse: the promotion gate against a real model."""

from __future__ import annotations

import dataclasses
import datetime as dt

import torch

from recs.config import replace_section
from recs.features.spec import load_spec
from recs.model.dlrm import build_model
from recs.model.metrics import validation_metrics
from recs.model.registry import promoted_model
from recs.train import example_streams, judge_and_register, training_window
from recs.train.loop import TrainSettings, train
from tests.conftest import NIGHTS, START, copy_lakehouse

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
    """The TorchDistributor path in local mode: two CPU ranks, gradients averaged with gloo.

    Nothing here depends on the machine: device cpu makes it gloo even where CUDA exists,
    fp32 is forced (``auto`` would pick bf16 on CPUs with native bf16), and every rank
    returns the same payload, so the order the ranks finish in cannot matter.
    """
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
        device="cpu",
        seed=cfg.train.seed + 2,
        auc_floor=1.01,
        batch_size=cfg.train.batch_size // 2,
        epochs=4,
    )
    outcome, out = train_distributed(spark, cfg, LAST, 2, precision="fp32")

    assert out["world"] == 2 and out["device"] == "cpu" and out["precision"] == "fp32"
    first, second = out["replica_checksums"]
    assert first == second  # both ranks hold bit-identical weights after training
    assert outcome.status == "rejected" and outcome.metrics["auc"] > 0.55
    assert promoted_model(spark, cfg).model_version == before.model_version


def test_retraining_never_rewrites_the_promoted_artefact(spark, pipeline, tmp_path):
    """Another seed, then corrected data with the same row counts: new versions, the old bytes stay."""
    import hashlib
    from pathlib import Path

    from pyspark.sql import functions as F

    from recs import train as train_step
    from recs.model.registry import artifact_location
    from recs.score import load_promoted
    from recs.tables import read_date, replace_partition

    cfg, _ = pipeline
    copy = copy_lakehouse(cfg, tmp_path / "lakehouse")
    promoted = promoted_model(spark, copy, LAST)
    folder = Path(artifact_location(copy, promoted.artifact_path))
    assert folder.is_relative_to(copy.lakehouse)

    def digests() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    before = digests()
    # An unreachable floor: whatever these retrains learn, they are rejected and cannot take over.
    strict = replace_section(copy, "train", auc_floor=1.01)
    reseeded = train_step.run(spark, replace_section(strict, "train", seed=cfg.train.seed + 5), LAST)
    day = LAST - dt.timedelta(days=1)
    corrected = read_date(spark, copy, "training_examples", day).withColumn("label", 1.0 - F.col("label"))
    replace_partition(corrected.localCheckpoint(), copy, "training_examples", day)
    relabelled = train_step.run(spark, strict, LAST)

    versions = {promoted.model_version, reseeded.model_version, relabelled.model_version}
    assert len(versions) == 3, versions
    assert reseeded.status == relabelled.status == "rejected"
    assert digests() == before
    serving = load_promoted(spark, copy, LAST)
    assert serving.version == promoted.model_version and Path(serving.artifact) == folder


def test_scoring_and_the_gate_take_the_model_promoted_as_of_their_date(spark, cfg):
    """Hand-made registry rows: the latest promoted validation_date <= D wins, a retrain of the
    same validation day wins by trained_at, rejected rows and later days never count."""
    from recs.model.registry import GateDecision, record_model
    from recs.train import incumbent_auc

    d = dt.date(2026, 5, 10)
    rows = [  # (version, validation day, status), recorded in this order
        ("early", d - dt.timedelta(days=2), "promoted"),
        ("rejected", d - dt.timedelta(days=1), "rejected"),
        ("on-d", d, "promoted"),
        ("on-d-retrained", d, "promoted"),
        ("later", d + dt.timedelta(days=3), "promoted"),
    ]
    for version, validated, status in rows:
        record_model(
            spark,
            cfg,
            model_version=version,
            train_start=validated - dt.timedelta(days=3),
            train_end=validated - dt.timedelta(days=1),
            validation_date=validated,
            metrics={"auc": 0.7},
            baseline_auc=None,
            spec_hash="spec-a",
            artifact_path=f"models/{version}",
            decision=GateDecision(status, "hand-made"),
            run_date=validated,
        )

    def chosen(day: dt.date) -> str | None:
        row = promoted_model(spark, cfg, day)
        return row.model_version if row else None

    assert chosen(d - dt.timedelta(days=3)) is None
    assert chosen(d - dt.timedelta(days=1)) == "early"
    assert chosen(d) == chosen(d + dt.timedelta(days=2)) == "on-d-retrained"
    assert chosen(d + dt.timedelta(days=3)) == "later"
    # The gate's incumbent follows the same rule (another spec: reported, not loaded).
    assert incumbent_auc(spark, cfg, None, "spec-b", d - dt.timedelta(days=1)) == (None, "early")
    assert incumbent_auc(spark, cfg, None, "spec-b", d + dt.timedelta(days=1)) == (None, "on-d-retrained")
