"""Typed configuration: packaged defaults < TOML file < environment < CLI options.

Every key is declared here with its type, so a typo or a wrong type in a config file
fails at start-up with the key's name instead of deep inside a Spark job.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from recs.errors import ConfigError

ENV_PREFIX = "RECS_"


@dataclass(frozen=True)
class SparkConfig:
    master: str
    app_name: str
    shuffle_partitions: int
    driver_memory: str
    ui_enabled: bool


@dataclass(frozen=True)
class IngestConfig:
    allowed_lateness_hours: int
    max_line_bytes: int
    max_bad_fraction: float
    min_volume_ratio: float


@dataclass(frozen=True)
class FeaturesConfig:
    recent_items: int
    top_categories: int
    ctr_prior_impressions: float
    negatives_per_positive: int
    pool_negatives_per_positive: int
    negative_sampling_power: float
    seed: int


@dataclass(frozen=True)
class TrainConfig:
    window_days: int
    schedule: str
    epochs: int
    batch_size: int
    learning_rate: float
    embedding_learning_rate: float
    bottom_mlp: list[int]
    top_mlp: list[int]
    shuffle_buffer: int
    patience: int
    device: str
    seed: int
    auc_floor: float
    auc_tolerance: float
    processes: int


@dataclass(frozen=True)
class ScoreConfig:
    k: int
    ads_per_user: int
    max_per_category: int
    bought_window_days: int
    recent_days: int
    recent_cap: int
    covisit_days: int
    covisit_neighbours: int
    covisit_max_items_per_session: int
    category_popular_cap: int
    global_popular_cap: int
    frequency_cap: int
    batch_size: int
    threads_per_task: int
    user_retention_days: int


@dataclass(frozen=True)
class PacingConfig:
    enabled: bool
    impressions_per_slot: float
    rounds: int


@dataclass(frozen=True)
class AudiencesConfig:
    size: int
    candidates_per_audience: int
    items: list[str]


@dataclass(frozen=True)
class RelatedConfig:
    similar_items: int
    similar_pool_per_category: int
    embedding_weight: float
    bought_together: int
    bought_together_days: int
    bought_together_min_support: int
    max_basket_items: int


@dataclass(frozen=True)
class ExperimentConfig:
    salt: str
    holdout_share: float


@dataclass(frozen=True)
class EvaluateConfig:
    ks: list[int]


@dataclass(frozen=True)
class HealthConfig:
    max_short_user_share: float
    max_users_without_rows: int
    max_top1pct_slot_share: float
    min_catalog_coverage: float
    min_overlap_with_previous: float
    max_bad_scores: int
    max_campaign_slot_share: float
    max_bad_ad_scores: int


@dataclass(frozen=True)
class Config:
    lakehouse: str
    raw: str
    spark: SparkConfig
    ingest: IngestConfig
    features: FeaturesConfig
    train: TrainConfig
    score: ScoreConfig
    pacing: PacingConfig
    related: RelatedConfig
    audiences: AudiencesConfig
    experiment: ExperimentConfig
    evaluate: EvaluateConfig
    health: HealthConfig
    source: str = field(default="defaults", compare=False)

    def with_overrides(self, **values: Any) -> Config:
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None})


_CHOICES = {
    "train.schedule": {"daily", "weekly", "never"},
    "train.device": {"auto", "cpu", "cuda"},
}


# Valid ranges (inclusive; None = unbounded) for numeric keys; list keys apply to each element.
# A value outside them would not fail, it would quietly write wrong or empty tables.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "spark.shuffle_partitions": (1, None),
    "ingest.allowed_lateness_hours": (0, 7 * 24),
    "ingest.max_line_bytes": (1024, None),
    "ingest.max_bad_fraction": (0, 1),
    "ingest.min_volume_ratio": (0, 1),
    "features.recent_items": (1, None),
    "features.top_categories": (1, None),
    "features.ctr_prior_impressions": (0, None),
    "features.negatives_per_positive": (1, None),
    "features.pool_negatives_per_positive": (0, None),
    "features.negative_sampling_power": (0, 2),
    "train.window_days": (2, None),
    "train.epochs": (1, None),
    "train.batch_size": (1, None),
    "train.learning_rate": (1e-12, None),
    "train.embedding_learning_rate": (1e-12, None),
    "train.bottom_mlp": (1, None),
    "train.top_mlp": (1, None),
    "train.shuffle_buffer": (0, None),
    "train.patience": (0, None),
    "train.auc_floor": (0, None),  # above 1 promotes nothing: the serving model stays frozen
    "train.auc_tolerance": (0, 1),
    "train.processes": (1, None),
    "score.k": (1, None),
    "score.ads_per_user": (0, None),
    "score.max_per_category": (0, None),
    "score.bought_window_days": (1, None),
    "score.recent_days": (1, None),
    "score.recent_cap": (0, None),
    "score.covisit_days": (1, None),
    "score.covisit_neighbours": (0, None),
    "score.covisit_max_items_per_session": (2, None),
    "score.category_popular_cap": (0, None),
    "score.global_popular_cap": (0, None),
    "score.frequency_cap": (1, None),
    "score.batch_size": (1, None),
    "score.threads_per_task": (1, None),
    "score.user_retention_days": (1, None),
    "related.similar_items": (0, None),
    "related.similar_pool_per_category": (1, None),
    "related.embedding_weight": (0, None),
    "related.bought_together": (0, None),
    "related.bought_together_days": (1, None),
    "related.bought_together_min_support": (1, None),
    "related.max_basket_items": (2, None),
    "pacing.impressions_per_slot": (0, None),
    "pacing.rounds": (0, 20),
    "audiences.size": (0, None),
    "audiences.candidates_per_audience": (1, None),
    "experiment.holdout_share": (0, 1),
    "evaluate.ks": (1, None),
    "health.max_short_user_share": (0, 1),
    "health.max_users_without_rows": (0, None),
    "health.max_top1pct_slot_share": (0, 1),
    "health.min_catalog_coverage": (0, 1),
    "health.min_overlap_with_previous": (0, 1),
    "health.max_bad_scores": (0, None),
    "health.max_campaign_slot_share": (0, 1),
    "health.max_bad_ad_scores": (0, None),
}
_NON_EMPTY = {"train.bottom_mlp", "train.top_mlp", "evaluate.ks"}


def _check_range(key: str, value: Any) -> None:
    """Refuse a value outside its key's range, naming the key and the range."""
    lo, hi = _RANGES.get(key, (None, None))
    if key in _NON_EMPTY and not value:
        raise ConfigError(f"config key {key!r} must not be empty")
    for v in value if isinstance(value, list) else [value]:
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            want = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ConfigError(f"config key {key!r}: {v!r} is out of range (must be {want})")


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check (and where unambiguous, convert) one value against its declared type."""
    origin = get_origin(typ)
    if origin is list:
        (inner,) = get_args(typ)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
            return value.lower() in {"true", "1"}
        raise ConfigError(f"config key {key!r}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}") from None
    if typ is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}") from None
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"config key {key!r}: unsupported type {typ}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.name != "source"}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' in {where}")
    kwargs = {}
    for name in sorted(names):
        key = f"{prefix}{name}"
        if name not in data:
            raise ConfigError(f"config key {key!r} is missing")
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            if not isinstance(data[name], dict):
                raise ConfigError(f"config key {key!r} must be a table/section")
            kwargs[name] = _build(typ, data[name], f"{key}.")
        else:
            kwargs[name] = _coerce(key, data[name], typ)
            _check_range(key, kwargs[name])
            choices = _CHOICES.get(key)
            if choices and kwargs[name] not in choices:
                raise ConfigError(f"config key {key!r}: {kwargs[name]!r} is not one of {sorted(choices)}")
    return cls(**kwargs)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """RECS_LAKEHOUSE=... or RECS_TRAIN__EPOCHS=3 (double underscore separates section and key)."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in {"RECS_CONFIG"}:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def defaults() -> dict[str, Any]:
    return tomllib.loads(resources.files("recs").joinpath("defaults.toml").read_text("utf-8"))


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    lakehouse: str | None = None,
    raw: str | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the effective config; raises ConfigError naming the offending key."""
    environ = dict(os.environ if environ is None else environ)
    data = defaults()
    source = "defaults"
    path = path or environ.get("RECS_CONFIG")
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = _merge(data, tomllib.loads(p.read_text("utf-8")))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
        source = str(p)
    data = _merge(data, _env_overrides(environ))
    if lakehouse:
        data["lakehouse"] = lakehouse
    if raw:
        data["raw"] = raw
    cfg = _build(Config, data, "")
    return dataclasses.replace(cfg, source=source)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild (and re-validate) a Config from ``dataclasses.asdict`` output, e.g. in a worker."""
    return _build(Config, {k: v for k, v in data.items() if k != "source"}, "")


def replace_section(cfg: Config, section: str, **values: Any) -> Config:
    """Return ``cfg`` with some keys of one section changed (used by tests and the CLI)."""
    current = getattr(cfg, section)
    return dataclasses.replace(cfg, **{section: dataclasses.replace(current, **values)})
