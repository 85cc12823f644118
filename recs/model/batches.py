"""Training examples from Arrow/Parquet into tensors, streamed, shuffled with a bounded buffer.

The example table's ``dense`` / ``sparse`` columns are equal-length lists; each record batch
becomes numpy arrays through the lists' flat value buffers (no per-row Python), then
fixed-size tensors. Memory stays bounded by the shuffle buffer plus one record batch, so a
window larger than RAM streams through.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch
from torch import Tensor

from recs.errors import DataError, MissingTableError
from recs.features.spec import FeatureSpec

if TYPE_CHECKING:
    from recs.config import Config

DENSE, SPARSE, WEIGHT, IS_AD, LABEL_DATE = "dense", "sparse", "weight", "is_ad", "label_date"


@dataclass
class Batch:
    """One minibatch: dense ``[B, nd]`` f32, sparse ``[B, W]`` i64, label/weight ``[B]`` f32, is_ad bool."""

    dense: Tensor
    sparse: Tensor
    label: Tensor
    weight: Tensor
    is_ad: Tensor

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in self._fields()))

    def pin_memory(self) -> Batch:
        """Page-locked copies so host->GPU copies can overlap compute."""
        return Batch(*(t.pin_memory() for t in self._fields()))

    def _fields(self) -> tuple[Tensor, ...]:
        return (self.dense, self.sparse, self.label, self.weight, self.is_ad)

    @classmethod
    def of(cls, item: Batch | Mapping[str, Any]) -> Batch:
        """Accept a Batch or a dict with the same keys; missing weight = 1, missing is_ad = False."""
        if isinstance(item, Batch):
            return item
        label = torch.as_tensor(item["label"], dtype=torch.float32)
        weight = item.get("weight")
        is_ad = item.get("is_ad")
        return cls(
            torch.as_tensor(item["dense"], dtype=torch.float32),
            torch.as_tensor(item["sparse"], dtype=torch.int64),
            label,
            torch.ones_like(label) if weight is None else torch.as_tensor(weight, dtype=torch.float32),
            torch.zeros_like(label, dtype=torch.bool) if is_ad is None else torch.as_tensor(is_ad).bool(),
        )


def label_date_filter(dates: dt.date | Iterable[dt.date], column: str = LABEL_DATE) -> ds.Expression:
    """Dataset filter for examples labelled on ``dates`` (train days, or the validation day).

    Works as a partition filter too, so other days' files are never opened.
    """
    days = [dates] if isinstance(dates, dt.date) else list(dates)
    if not days:
        raise ValueError("label_date_filter needs at least one date")
    return ds.field(column).isin(pa.array(days, type=pa.date32()))


def open_examples(
    source: ds.Dataset | str | Path | Sequence[str | Path],
    filesystem: Any = None,
    partitioning: str | None = "hive",
    table_format: str = "auto",
    delta_version: int | None = None,
    storage_options: dict[str, str] | None = None,
) -> ds.Dataset:
    """A dataset over the examples: an existing Dataset, a Delta table, a Parquet directory/URI or files.

    ``table_format="auto"`` reads a local directory holding ``_delta_log`` as Delta (through delta-rs,
    so partition columns such as ``label_date`` are real columns and filters prune files);
    pass ``table_format="delta"`` for a remote Delta URI. ``delta_version`` pins a snapshot.
    """
    if isinstance(source, ds.Dataset):
        return source
    if isinstance(source, str | Path):
        local_delta = "://" not in str(source) and (Path(source) / "_delta_log").is_dir()
        if table_format == "delta" or (table_format == "auto" and local_delta):
            from deltalake import DeltaTable

            table = DeltaTable(str(source), version=delta_version, storage_options=storage_options)
            return table.to_pyarrow_dataset()
        return ds.dataset(str(source), format="parquet", filesystem=filesystem, partitioning=partitioning)
    files = [str(s) for s in source]
    return ds.dataset(files, format="parquet", filesystem=filesystem, partitioning=partitioning)


def list_matrix(column: pa.Array, width: int, dtype: np.dtype, name: str) -> np.ndarray:
    """An equal-length list column -> ``[rows, width]`` numpy, via the flat values buffer."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise DataError(f"{name}: {column.null_count} rows hold a null list")
    if pa.types.is_fixed_size_list(column.type):
        if column.type.list_size != width:
            raise DataError(f"{name}: fixed lists of {column.type.list_size}, the spec needs {width}")
    elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = np.diff(column.offsets.to_numpy())
        if len(lengths) and (lengths.min() != width or lengths.max() != width):
            raise DataError(f"{name}: list lengths {lengths.min()}..{lengths.max()}, the spec needs {width}")
    else:
        raise DataError(f"{name}: expected a list column, got {column.type}")
    flat = column.flatten()
    if flat.null_count:
        flat = flat.fill_null(0)  # a null element = bucket 0 (unknown) / dense 0
    return flat.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(len(column), width)


def _vector(table: pa.RecordBatch, name: str, dtype: np.dtype, default: float | None) -> np.ndarray:
    """A scalar column as numpy; ``default`` fills a missing column (weight, is_ad)."""
    if name not in table.schema.names:
        if default is None:
            raise DataError(f"example batch has no {name!r} column")
        return np.full(table.num_rows, default, dtype=dtype)
    column = table.column(name)
    if column.null_count:
        if default is None:
            raise DataError(f"{name}: {column.null_count} null values")
        column = column.fill_null(default)
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    return column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def record_batch_arrays(table: pa.RecordBatch, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Decode one Arrow batch of examples into aligned numpy arrays, checking them against the spec."""
    sparse = list_matrix(table.column(SPARSE), spec.sparse_width, np.dtype(np.int64), SPARSE)
    limits = np.repeat([f.buckets for f in spec.sparse], [f.max_len for f in spec.sparse])
    outside = (sparse < 0) | (sparse >= limits)
    if outside.any():
        slot = int(np.flatnonzero(outside.any(0))[0])
        owner = [f.name for f in spec.sparse for _ in range(f.max_len)][slot]
        raise DataError(f"sparse feature {owner!r} has a bucket outside [0, {limits[slot]})")
    return {
        "dense": list_matrix(table.column(DENSE), spec.num_dense, np.dtype(np.float32), DENSE),
        "sparse": sparse,
        "label": _vector(table, spec.label, np.dtype(np.float32), None),
        "weight": _vector(table, WEIGHT, np.dtype(np.float32), 1.0),
        "is_ad": _vector(table, IS_AD, np.dtype(np.bool_), False),
    }


def _concat(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(chunks) == 1:
        return chunks[0]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _take(arrays: dict[str, np.ndarray], index: np.ndarray | slice) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in arrays.items()}


def _tensor(array: np.ndarray) -> Tensor:
    # from_numpy shares memory; Arrow-backed arrays are read-only, so copy those once.
    return torch.from_numpy(array if array.flags.writeable and array.flags.c_contiguous else array.copy())


def arrays_to_batch(arrays: dict[str, np.ndarray]) -> Batch:
    return Batch(*(_tensor(arrays[k]) for k in ("dense", "sparse", "label", "weight", "is_ad")))


def rebatch(
    chunks: Iterable[dict[str, np.ndarray]],
    batch_size: int,
    shuffle_buffer: int = 0,
    rng: np.random.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Cut a stream of array chunks into ``batch_size`` rows, shuffling within a bounded buffer.

    With a buffer, rows accumulate to ``shuffle_buffer``; then the pool is permuted, all but
    half a buffer is emitted and the kept half mixes with the rows that arrive next. Memory
    never exceeds the buffer plus one chunk.
    """
    pool: list[dict[str, np.ndarray]] = []
    rows = 0
    threshold = max(shuffle_buffer, batch_size)
    for chunk in chunks:
        n = len(chunk["label"])
        if n == 0:
            continue
        pool.append(chunk)
        rows += n
        if rows < threshold:
            continue
        merged = _concat(pool)
        if shuffle_buffer and rng is not None:
            keep = shuffle_buffer // 2
            emit = (rows - keep) // batch_size * batch_size
            order = rng.permutation(rows)
            for start in range(0, emit, batch_size):
                yield _take(merged, order[start : start + batch_size])
            pool, rows = [_take(merged, order[emit:])], rows - emit
        else:
            emit = rows // batch_size * batch_size
            for start in range(0, emit, batch_size):
                yield _take(merged, slice(start, start + batch_size))
            pool, rows = [_take(merged, slice(emit, rows))], rows - emit
    if rows:
        merged = _concat(pool)
        order = rng.permutation(rows) if shuffle_buffer and rng is not None else np.arange(rows)
        stop = rows // batch_size * batch_size if drop_last else rows
        for start in range(0, stop, batch_size):
            yield _take(merged, order[start : start + batch_size])


class ExampleStream:
    """Re-iterable stream of :class:`Batch` es over a Parquet example dataset.

    Each ``iter()`` is one epoch. With ``shuffle_buffer > 0`` the file order and the rows
    are shuffled with ``seed`` and the epoch number, so runs are repeatable; with 0 the
    order is the dataset's (use that for validation). ``filter`` is a dataset expression,
    e.g. :func:`label_date_filter`. For a CUDA ``device`` batches come out in pinned memory.
    """

    def __init__(
        self,
        source: ds.Dataset | str | Path | Sequence[str | Path],
        spec: FeatureSpec,
        *,
        batch_size: int = 2048,
        filter: ds.Expression | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        read_rows: int = 32768,
    ) -> None:
        self.dataset = open_examples(source)
        self.spec = spec
        self.batch_size = batch_size
        self.filter = filter
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.pin = torch.device(device).type == "cuda" and torch.cuda.is_available()
        self.drop_last = drop_last
        self.read_rows = read_rows
        self.epoch = 0
        names = set(self.dataset.schema.names)
        wanted = [DENSE, SPARSE, spec.label, WEIGHT, IS_AD]
        missing = {DENSE, SPARSE, spec.label} - names
        if missing:
            raise DataError(f"example dataset lacks columns {sorted(missing)}")
        self.columns = [c for c in wanted if c in names]

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.iter_epoch(epoch)

    def _record_batches(self, rng: np.random.Generator | None) -> Iterator[pa.RecordBatch]:
        # Name order first (Spark numbers files by partition), so the seeded permutation and the
        # normaliser's sample do not depend on the order a table's log happens to list them.
        fragments = sorted(self.dataset.get_fragments(filter=self.filter), key=lambda f: f.path)
        if rng is not None:
            fragments = [fragments[i] for i in rng.permutation(len(fragments))]
        for fragment in fragments:
            scanner = ds.Scanner.from_fragment(
                fragment,
                schema=self.dataset.schema,
                columns=self.columns,
                filter=self.filter,
                batch_size=self.read_rows,
            )
            yield from scanner.to_batches()

    def iter_epoch(self, epoch: int) -> Iterator[Batch]:
        """Batches of one epoch; the same ``(seed, epoch)`` always yields the same batches."""
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle_buffer else None
        chunks = (record_batch_arrays(rb, self.spec) for rb in self._record_batches(rng))
        for arrays in rebatch(chunks, self.batch_size, self.shuffle_buffer, rng, self.drop_last):
            batch = arrays_to_batch(arrays)
            yield batch.pin_memory() if self.pin else batch


def examples_path(cfg: Config) -> str:
    from recs.tables import table_path

    return table_path(cfg, "training_examples")


def examples_for_dates(
    cfg: Config, dates: list[dt.date], spec: FeatureSpec, *, batch_size: int, shuffle: bool = False
) -> ExampleStream | None:
    """A batch stream over the examples of ``dates`` built with ``spec``; None when there are none.

    Read through delta-rs like the trainer's window, so evaluation needs no Spark to load them.
    """
    from deltalake.exceptions import TableNotFoundError

    path = examples_path(cfg)
    try:
        dataset = open_examples(path, table_format="delta")
    except TableNotFoundError as exc:
        raise MissingTableError(f"Delta table 'training_examples' does not exist at {path}") from exc
    only = label_date_filter(dates) & (ds.field("spec_hash") == spec.spec_hash)
    if dataset.count_rows(filter=only) == 0:
        return None
    return ExampleStream(
        dataset,
        spec,
        batch_size=batch_size,
        filter=only,
        shuffle_buffer=cfg.train.shuffle_buffer if shuffle else 0,
        seed=cfg.train.seed,
    )
