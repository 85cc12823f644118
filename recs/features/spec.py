"""The feature spec: which sparse and dense features a model sees, loaded from ``schemas/``.

A trained model stores the spec it was trained with (``FeatureSpec.to_json``), and scoring
rebuilds inputs from that stored spec, never from whatever ``schemas/`` says today.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from recs.schemas import load_json

TRANSFORMS = {"none", "log1p", "clip"}


@dataclass(frozen=True)
class SparseFeature:
    name: str
    source: str
    buckets: int
    max_len: int = 1  # > 1: multi-valued, padded with bucket 0

    @property
    def multi(self) -> bool:
        return self.max_len > 1


@dataclass(frozen=True)
class DenseFeature:
    name: str
    source: str
    transform: str = "none"
    clip: tuple[float, float] | None = None
    default: float = 0.0


@dataclass(frozen=True)
class FeatureSpec:
    version: int
    embedding_dim: int
    pooling: str
    sparse: tuple[SparseFeature, ...]
    dense: tuple[DenseFeature, ...]
    label: str
    raw: str  # canonical JSON, the thing that is hashed and stored with a model

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FeatureSpec:
        sparse = tuple(
            SparseFeature(s["name"], s["source"], int(s["buckets"]), int(s.get("max_len", 1)))
            for s in doc["sparse"]
        )
        dense = tuple(
            DenseFeature(
                d["name"],
                d["source"],
                d.get("transform", "none"),
                tuple(d["clip"]) if d.get("clip") else None,
                float(d.get("default", 0.0)),
            )
            for d in doc["dense"]
        )
        names = [f.name for f in sparse] + [f.name for f in dense]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature spec: duplicate feature names {dupes}")
        for s in sparse:
            if s.buckets < 2 or s.max_len < 1:
                raise ValueError(f"feature spec: {s.name} needs buckets >= 2 and max_len >= 1")
        for d in dense:
            if d.transform not in TRANSFORMS:
                raise ValueError(f"feature spec: {d.name} has unknown transform {d.transform!r}")
            if d.transform == "clip" and d.clip is None:
                raise ValueError(f"feature spec: {d.name} uses clip without bounds")
        if doc.get("pooling", "mean") not in {"mean", "sum"}:
            raise ValueError("feature spec: pooling must be mean or sum")
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return cls(
            int(doc["version"]),
            int(doc["embedding_dim"]),
            doc.get("pooling", "mean"),
            sparse,
            dense,
            doc.get("label", "label"),
            raw,
        )

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        return cls.from_dict(json.loads(text))

    def to_json(self) -> str:
        return self.raw

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(self.raw.encode("utf-8")).hexdigest()[:16]

    @property
    def num_dense(self) -> int:
        return len(self.dense)

    @property
    def sparse_width(self) -> int:
        """Length of the flat ``sparse`` array: one slot per single-valued feature, max_len per multi."""
        return sum(s.max_len for s in self.sparse)

    def sparse_slices(self) -> list[tuple[int, int]]:
        """(start, stop) of each sparse feature inside the flat ``sparse`` array."""
        out, start = [], 0
        for s in self.sparse:
            out.append((start, start + s.max_len))
            start += s.max_len
        return out


def load_spec() -> FeatureSpec:
    """The spec in ``schemas/feature_spec.json`` (what a new model will be trained with)."""
    return FeatureSpec.from_dict(load_json("feature_spec.json"))
