"""Batch scoring inside Spark: an Arrow iterator UDF that loads the model once per worker.

Executors read the artefact straight from the lakehouse (verified by its manifest), keep it
in a per-process cache (Python workers are reused across tasks), and score each Arrow batch
under ``torch.inference_mode`` on CUDA when the executor has a GPU, else on CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import types as T

_MODELS: dict[tuple[str, str], Any] = {}


def worker_model(artifact: str, device: str, threads: int = 1) -> Any:
    """Load (once per Python worker) the model at ``artifact``; threads sized for one task."""
    import torch

    from recs.model.artifacts import load_model
    from recs.model.device import resolve_device

    key = (artifact, device)
    if key not in _MODELS:
        torch.set_num_threads(max(1, threads))
        model, _, _ = load_model(artifact, device=resolve_device(device))
        _MODELS[key] = model
    return _MODELS[key]


def score_batch(model: Any, batch: pa.RecordBatch, spec_width: tuple[int, int], batch_size: int) -> pa.Array:
    """Probabilities for one Arrow batch holding ``dense``, ``sparse`` and ``is_ad`` columns."""
    import numpy as np
    import torch

    from recs.model.batches import list_matrix

    num_dense, sparse_width = spec_width
    dense = list_matrix(batch.column("dense"), num_dense, np.dtype(np.float32), "dense")
    sparse = list_matrix(batch.column("sparse"), sparse_width, np.dtype(np.int64), "sparse")
    # Arrow buffers are read-only; torch wants writable memory, so take one copy per batch.
    dense, sparse = np.array(dense), np.array(sparse)
    is_ad = batch.column("is_ad").to_numpy(zero_copy_only=False).astype(bool)
    with torch.inference_mode():
        probs = model.predict_numpy(dense, sparse, is_ad, batch_size=batch_size)
    return pa.array(probs.astype("float64"))


def score_with_model(
    rows: DataFrame,
    artifact: str,
    spec_width: tuple[int, int],
    *,
    device: str = "auto",
    batch_size: int = 4096,
    threads: int = 1,
) -> DataFrame:
    """``rows`` (with dense, sparse, is_ad) -> the same rows without the arrays, plus ``score``."""
    keep = [f for f in rows.schema.fields if f.name not in ("dense", "sparse")]
    out_schema = T.StructType([*keep, T.StructField("score", T.DoubleType(), False)])
    names = [f.name for f in keep]

    def predict(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model = worker_model(artifact, device, threads)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            scores = score_batch(model, batch, spec_width, batch_size)
            columns = [batch.column(n) for n in names] + [scores]
            yield pa.RecordBatch.from_arrays(columns, names=[*names, "score"])

    return rows.mapInArrow(predict, out_schema)
