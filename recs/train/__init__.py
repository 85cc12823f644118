"""Training stage: fit a DLRM on a window of ``training_examples``, gate it, register it.

The window is the ``window_days`` label days ending on D; D itself is the validation day.
Examples are streamed from the current Delta snapshot (through delta-rs, so the exact
files of that version) as Arrow batches; nothing larger than the shuffle buffer is held.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recs.config import Config
from recs.errors import ArtifactError, MissingTableError, StepSkipped, TrainingDataError
from recs.model.batches import examples_path
from recs.schemas import table_schema

log = logging.getLogger("recs")


@dataclass(frozen=True)
class TrainWindow:
    train_dates: tuple[dt.date, ...]
    validation_date: dt.date
    rows: dict[dt.date, int]
    # What the model is a function of: the Delta version read and each day's content digest.
    delta_version: int | None = None
    digests: dict[dt.date, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class TrainOutcome:
    model_version: str
    status: str
    reason: str
    metrics: dict[str, float]
    artifact_path: str


def content_digest() -> F.Column:
    """An order-independent digest of a group's rows: the sum of each row's 64-bit hash.

    Two days with the same row counts but different rows (a corrected feed, a fixed bug)
    get different digests, so they train models with different versions.
    """
    columns = [c for c in table_schema("training_examples").fieldNames() if c != "label_date"]
    return F.sum(F.xxhash64(*columns).cast("decimal(38,0)")).cast("string")


def training_window(spark: SparkSession, cfg: Config, date: dt.date, spec_hash: str) -> TrainWindow:
    """Label days with examples in the window; refuses examples built with another feature spec.

    The table is read at one pinned Delta version, which the trainer streams too: the digest
    and the model describe exactly the same rows even if features are rewritten meanwhile.
    """
    from delta.tables import DeltaTable

    start = date - dt.timedelta(days=cfg.train.window_days - 1)
    path = examples_path(cfg)
    if not DeltaTable.isDeltaTable(spark, path):
        raise MissingTableError(f"Delta table 'training_examples' does not exist at {path}; run features")
    version = DeltaTable.forPath(spark, path).history(1).first().version
    examples = (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(path)
        .where(F.col("label_date").between(F.lit(start), F.lit(date)))
    )
    per_day = (
        examples.groupBy("label_date")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.collect_set("spec_hash").alias("specs"),
            content_digest().alias("digest"),
        )
        .collect()
    )  # one row per day: small
    foreign = sorted({h for r in per_day for h in r.specs} - {spec_hash})
    if foreign:
        raise TrainingDataError(
            f"training_examples in {start}..{date} were built with feature spec {foreign}, "
            f"the current spec is {spec_hash}; re-run `recs features` for those dates"
        )
    rows = {r.label_date: r.n for r in per_day if r.n > 0}
    if date not in rows:
        raise StepSkipped(f"no training examples labelled {date} to validate on")
    train_dates = tuple(sorted(d for d in rows if d < date))
    if not train_dates:
        raise StepSkipped(
            f"no label days before {date} in the {cfg.train.window_days}-day window to train on"
        )
    digests = {r.label_date: r.digest for r in per_day if r.n > 0}
    return TrainWindow(train_dates, date, rows, version, digests)


def example_streams(cfg: Config, window: TrainWindow, spec, device: str):
    """(train, validation) re-iterable batch streams over the current Delta snapshot."""
    from recs.model.batches import ExampleStream, label_date_filter, open_examples

    dataset = open_examples(examples_path(cfg), table_format="delta", delta_version=window.delta_version)
    t = cfg.train
    train = ExampleStream(
        dataset,
        spec,
        batch_size=t.batch_size,
        filter=label_date_filter(window.train_dates),
        shuffle_buffer=t.shuffle_buffer,
        seed=t.seed,
        device=device,
    )
    val = ExampleStream(
        dataset,
        spec,
        batch_size=max(t.batch_size, 8192),
        filter=label_date_filter(window.validation_date),
        device=device,
    )
    return train, val


# Keys that decide when to train or whether to promote, not what is learned.
NOT_IN_VERSION = frozenset({"schedule", "auc_floor", "auc_tolerance"})


def model_version(window: TrainWindow, spec_hash: str, cfg: Config) -> str:
    """Window + a hash of what determines the model (the data itself, spec, training config).

    Same version means same inputs; the artefact folder of a version is written only once.
    """
    used = (*window.train_dates, window.validation_date)
    content = json.dumps(
        {
            "rows": {d.isoformat(): window.rows[d] for d in sorted(used)},
            "digests": {d.isoformat(): window.digests.get(d) for d in sorted(used)},
            "spec": spec_hash,
            "train": {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in NOT_IN_VERSION},
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(content.encode()).hexdigest()[:10]
    return f"dlrm-{window.train_dates[0]:%Y%m%d}-{window.validation_date:%Y%m%d}-{digest}"


def incumbent_auc(
    spark: SparkSession, cfg: Config, val_stream, spec_hash: str, as_of: dt.date
) -> tuple[float | None, str | None]:
    """AUC of the model promoted as of ``as_of`` on the same validation day (None if none/other spec)."""
    from recs.model.artifacts import load_model
    from recs.model.metrics import evaluate
    from recs.model.registry import artifact_location, promoted_model

    row = promoted_model(spark, cfg, as_of)
    if row is None:
        return None, None
    if row.spec_hash != spec_hash:
        log.warning(
            "promoted model %s uses feature spec %s; not comparable", row.model_version, row.spec_hash
        )
        return None, row.model_version
    try:
        model, _, _ = load_model(artifact_location(cfg, row.artifact_path))
    except ArtifactError as exc:
        log.warning(
            "promoted model %s cannot be loaded (%s); gating on the floor only", row.model_version, exc
        )
        return None, row.model_version
    return evaluate(model, val_stream, cfg.train.device)["auc"], row.model_version


def judge_and_register(
    spark: SparkSession,
    cfg: Config,
    model,
    metrics: dict[str, float],
    window: TrainWindow,
    val_stream,
    run_date: dt.date,
    extra: dict | None = None,
) -> TrainOutcome:
    """Gate the model against the floor and the incumbent, save the artefact, add a registry row.

    An artefact folder is written once. When the version's folder already exists (a forced
    retrain on the same inputs), its bytes stay, and the gate judges the stored model, so a
    registry row always describes the files it points to.
    """
    from recs.model.artifacts import artifact_exists, load_model, save_model
    from recs.model.metrics import evaluate
    from recs.model.registry import artifact_location, gate, model_dir, record_model

    spec = model.spec
    version = model_version(window, spec.spec_hash, cfg)
    relative = model_dir(version)
    artifact = artifact_location(cfg, relative)
    if artifact_exists(artifact):
        stored, _, _ = load_model(artifact, expected_spec_hash=spec.spec_hash)
        metrics = evaluate(stored, val_stream, "cpu")
        log.info(
            "train %s: artefact %s exists; judging the stored model, not overwriting it", run_date, version
        )
    else:
        save_model(
            model,
            artifact,
            training_config={
                **dataclasses.asdict(cfg.train),
                "train_dates": [str(d) for d in window.train_dates],
                "validation_date": str(window.validation_date),
                "training_examples_version": window.delta_version,
            },
            metrics={**metrics, **(extra or {})},
        )
    baseline, incumbent = incumbent_auc(spark, cfg, val_stream, spec.spec_hash, window.validation_date)
    decision = gate(metrics["auc"], cfg.train.auc_floor, baseline, cfg.train.auc_tolerance)
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and v == v}
    record_model(
        spark,
        cfg,
        model_version=version,
        train_start=window.train_dates[0],
        train_end=window.train_dates[-1],
        validation_date=window.validation_date,
        metrics=numeric,
        baseline_auc=baseline,
        spec_hash=spec.spec_hash,
        artifact_path=relative,
        decision=decision,
        run_date=run_date,
    )
    log.info(
        "train %s: model %s %s (%s; incumbent %s)",
        run_date,
        version,
        decision.status,
        decision.reason,
        incumbent or "none",
    )
    return TrainOutcome(version, decision.status, decision.reason, numeric, artifact)


def outcome_details(outcome: TrainOutcome) -> dict[str, object]:
    """What the ledger keeps of a training run, whichever way it was trained."""
    return {
        "model_version": outcome.model_version,
        "status": outcome.status,
        "reason": outcome.reason,
        "auc": outcome.metrics.get("auc"),
    }


def run(spark: SparkSession, cfg: Config, date: dt.date) -> TrainOutcome:
    from recs.features.spec import load_spec
    from recs.ledger import record_step
    from recs.model.device import resolve_device
    from recs.model.dlrm import build_model
    from recs.model.metrics import validation_metrics
    from recs.train.loop import TrainSettings, train

    spec = load_spec()
    with record_step(spark, cfg, "train", date) as step:
        if cfg.train.processes > 1:
            from recs.train.distributed import train_distributed

            outcome, out = train_distributed(spark, cfg, date, cfg.train.processes)
            step.details.update(outcome_details(outcome))
            step.details.update({"processes": out["world"], "samples_per_s": out["samples_per_s"]})
            return outcome
        window = training_window(spark, cfg, date, spec.spec_hash)
        device = str(resolve_device(cfg.train.device))
        train_stream, val_stream = example_streams(cfg, window, spec, device)
        # Seeded here, not from the global RNG: a rerun in the same process must start the same.
        model = build_model(spec, cfg.train.bottom_mlp, cfg.train.top_mlp, seed=cfg.train.seed)
        result = train(model, train_stream, val_stream, TrainSettings.from_config(cfg.train))
        val_metrics = validation_metrics(result.best_metrics)
        outcome = judge_and_register(
            spark,
            cfg,
            model,
            val_metrics,
            window,
            val_stream,
            date,
            extra={"history": result.history, "samples_per_s": result.samples_per_s, "device": result.device},
        )
        step.counts.update(
            {
                "train_rows": sum(window.rows[d] for d in window.train_dates),
                "validation_rows": window.rows[window.validation_date],
            }
        )
        step.details.update(outcome_details(outcome))
        step.details.update({"samples_per_s": result.samples_per_s, "device": result.device})
        return outcome
