"""Training loop, metrics, sparse optimizer and the Arrow data path (small, CPU, fast)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from recs.errors import DataError
from recs.features.spec import FeatureSpec
from recs.model import device
from recs.model.batches import Batch, ExampleStream, label_date_filter, rebatch
from recs.model.device import resolve_precision
from recs.model.dlrm import build_model
from recs.model.metrics import binary_metrics, evaluate, roc_auc
from recs.train.loop import TrainSettings, train
from recs.train.optim import RowWiseAdagrad, sum_duplicate_rows

USERS, ITEMS = 200, 200


def planted_spec() -> FeatureSpec:
    return FeatureSpec.from_dict(
        {
            "version": 1,
            "embedding_dim": 4,
            "pooling": "mean",
            "sparse": [
                {"name": "user", "source": "u.id", "buckets": USERS},
                {"name": "item", "source": "i.id", "buckets": ITEMS},
                {"name": "device", "source": "c.device", "buckets": 5},
                {"name": "recent", "source": "u.recent", "buckets": 50, "max_len": 3},
            ],
            "dense": [{"name": "x0", "source": "u.x0"}, {"name": "x1", "source": "u.x1"}],
            "label": "label",
        }
    )


def planted_rows(rows: int, seed: int) -> dict[str, np.ndarray]:
    """Labels driven by a user x item interaction (invisible to a logistic regression) plus dense x0."""
    rng = np.random.default_rng(seed)
    side = np.random.default_rng(99)  # the planted user/item "types" are fixed across splits
    user_type, item_type = side.choice([-1.0, 1.0], USERS), side.choice([-1.0, 1.0], ITEMS)
    user, item = rng.integers(1, USERS, rows), rng.integers(1, ITEMS, rows)
    recent = rng.integers(0, 50, (rows, 3))
    sparse = np.column_stack([user, item, rng.integers(0, 5, rows), recent]).astype(np.int64)
    dense = rng.normal(size=(rows, 2)).astype(np.float32)
    logit = 2.5 * user_type[user] * item_type[item] + 0.7 * dense[:, 0] - 0.5
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return {
        "dense": dense,
        "sparse": sparse,
        "label": label,
        "weight": np.ones(rows, np.float32),
        "is_ad": rng.random(rows) < 0.2,
    }


def to_batches(arrays: dict[str, np.ndarray], batch_size: int) -> list[Batch]:
    n = len(arrays["label"])
    return [
        Batch(
            *(
                torch.from_numpy(arrays[k][i : i + batch_size])
                for k in ("dense", "sparse", "label", "weight", "is_ad")
            )
        )
        for i in range(0, n, batch_size)
    ]


# fp32 pinned: tests that are not about precision behave the same on every CPU; the ones that
# are force each precision, so bf16 runs even where it is emulated (AVX2-only CPUs: slower, but
# the planted model is small enough for seconds).
FAST = TrainSettings(
    epochs=3, patience=1, device="cpu", precision="fp32", progress=False, seed=3, learning_rate=5e-3
)
CPU = torch.device("cpu")


def reported_precision(requested: str) -> str:
    """What ``train`` reports for ``requested`` on this machine's CPU: ``resolve_precision``'s choice."""
    return "fp32" if resolve_precision(requested, CPU) is None else "bf16"


@pytest.fixture(scope="module")
def planted() -> tuple[list[Batch], list[Batch]]:
    return to_batches(planted_rows(40_000, 1), 512), to_batches(planted_rows(8_000, 2), 2048)


def logistic_regression_auc(spec: FeatureSpec, train_b: list[Batch], val_b: list[Batch]) -> float:
    """Baseline: one weight per (feature, bucket) plus linear dense terms, same data and epochs."""
    limits = torch.tensor([f.buckets for f in spec.sparse for _ in range(f.max_len)])
    offsets = torch.cumsum(limits, 0) - limits
    table = torch.zeros(int(limits.sum()), requires_grad=True)
    linear = torch.nn.Linear(spec.num_dense, 1)
    opt = torch.optim.Adam([table, *linear.parameters()], lr=0.02)

    def logit(b: Batch) -> torch.Tensor:
        return table[b.sparse + offsets].sum(1) + linear(b.dense).squeeze(1)

    for _ in range(FAST.epochs):
        for b in train_b:
            loss = F.binary_cross_entropy_with_logits(logit(b), b.label)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        scores = torch.cat([logit(b) for b in val_b]).numpy()
    return roc_auc(torch.cat([b.label for b in val_b]).numpy(), scores)


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_dlrm_learns_planted_interaction_and_beats_logistic_regression(planted, precision: str) -> None:
    """Forced fp32 and bf16 run on every CPU; ``auto`` reports whatever this CPU resolves to."""
    train_b, val_b = planted
    spec = planted_spec()
    model = build_model(spec, [16], [32, 16], seed=0)
    settings = dataclasses.replace(FAST, precision=precision)
    result = train(model, train_b, val_b, settings)
    best = result.best_metrics
    baseline = logistic_regression_auc(spec, train_b, val_b)
    assert best["val_auc"] > 0.75, result.history
    assert best["val_auc"] > baseline + 0.05, (best["val_auc"], baseline)
    assert 0.8 < best["val_calibration"] < 1.25 and best["val_ne"] < 0.9
    assert {"val_ads_auc", "val_ads_count", "train_samples_per_s"} <= set(best)
    expected = {"auto": reported_precision("auto"), "fp32": "fp32", "bf16": "bf16"}[precision]
    assert result.samples_per_s > 0 and result.precision == expected and result.device == "cpu"
    assert evaluate(model, val_b, "cpu", precision)["auc"] == pytest.approx(best["val_auc"], abs=1e-9)
    if result.precision == "bf16":  # the label is not enough: the forward really ran in bf16
        fp32_logloss = evaluate(model, val_b, "cpu", "fp32")["logloss"]
        assert fp32_logloss != best["val_logloss"] and abs(fp32_logloss - best["val_logloss"]) < 0.01


@pytest.mark.parametrize("native", [False, True], ids=["avx2-only", "native-bf16"])
def test_auto_precision_on_cpu_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch, native: bool) -> None:
    """Both answers of ``auto`` are checked on every machine by stubbing the CPU probe."""
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", CPU) == (torch.bfloat16 if native else None)
    assert resolve_precision("fp32", CPU) is None and resolve_precision("bf16", CPU) == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", CPU)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_is_deterministic_for_a_seed(tmp_path: Path, precision: str) -> None:
    spec = planted_spec()
    write_days(tmp_path, spec, days=2, rows=1500)
    settings = TrainSettings(epochs=2, device="cpu", precision=precision, progress=False, seed=5)
    runs = []
    for _ in range(2):
        train_s = ExampleStream(
            tmp_path, spec, batch_size=256, shuffle_buffer=1024, seed=5, filter=DAY_FILTER(0)
        )
        val_s = ExampleStream(tmp_path, spec, batch_size=512, filter=DAY_FILTER(1))
        model = build_model(spec, [8], [16], seed=5)
        result = train(model, train_s, val_s, settings)
        assert result.precision == precision
        runs.append((model.state_dict(), result.history))
    (state_a, hist_a), (state_b, hist_b) = runs
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    strip = [{k: v for k, v in h.items() if "per_s" not in k} for h in hist_a]
    assert strip == [{k: v for k, v in h.items() if "per_s" not in k} for h in hist_b]


def test_early_stopping_restores_the_best_epoch(planted) -> None:
    train_b, val_b = planted
    noise = [Batch(b.dense, b.sparse, b.label[torch.randperm(len(b))], b.weight, b.is_ad) for b in val_b]

    def val_for(epoch: int) -> list[Batch]:
        return val_b if epoch == 0 else noise  # later epochs look worse -> stop after patience

    model = build_model(planted_spec(), [16], [32, 16], seed=0)
    result = train(model, train_b, val_for, TrainSettings(**{**FAST.__dict__, "epochs": 5}))
    assert result.stopped_early and len(result.history) == 2 and result.best_epoch == 0
    restored = evaluate(model, val_b, "cpu", FAST.precision)["auc"]
    assert restored == pytest.approx(result.history[0]["val_auc"], abs=1e-9)


def test_dict_batches_and_one_shot_iterators() -> None:
    arrays = planted_rows(600, 3)
    dicts = [{k: v[i : i + 200] for k, v in arrays.items() if k != "weight"} for i in range(0, 600, 200)]
    model = build_model(planted_spec(), [8], [8])
    result = train(model, dicts, dicts, TrainSettings(epochs=1, progress=False, device="cpu"))
    assert result.history[0]["train_rows"] == 600
    with pytest.raises(TypeError, match="one-shot"):
        train(model, iter(dicts), dicts, TrainSettings(epochs=2, progress=False, device="cpu"))


# --------------------------------------------------------------------------- metrics and optimizer


def test_roc_auc_matches_pairwise_count_with_ties_and_weights() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = np.round(rng.normal(size=300) + y, 1)  # many ties
    w = rng.uniform(0.5, 2.0, 300)
    num = den = 0.0
    for i, j in itertools.product(np.flatnonzero(y), np.flatnonzero(~y)):
        num += w[i] * w[j] * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
        den += w[i] * w[j]
    assert roc_auc(y, s, w) == pytest.approx(num / den, rel=1e-12)
    assert roc_auc(np.ones(5), np.arange(5.0)) != roc_auc(np.ones(5), np.arange(5.0))  # NaN: one class


def test_base_rate_predictor_has_unit_ne_and_calibration() -> None:
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=np.float32)
    logits = np.full(10, np.log(0.2 / 0.8))
    m = binary_metrics(y, logits)
    assert m["ne"] == pytest.approx(1.0) and m["calibration"] == pytest.approx(1.0) and m["auc"] == 0.5
    assert binary_metrics(y, logits + 1.0)["calibration"] > 1.0


def test_row_wise_adagrad_sparse_equals_dense() -> None:
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(10, 3, generator=g)
    rows = torch.tensor([1, 4, 1, 7, 4, 1])  # duplicates must be summed before the update
    values = torch.randn(6, 3, generator=g)
    sparse_p, dense_p = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    opt_s, opt_d = RowWiseAdagrad([sparse_p], lr=0.1), RowWiseAdagrad([dense_p], lr=0.1)
    for _ in range(3):
        sparse_p.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values, (10, 3), check_invariants=True)
        dense_p.grad = torch.zeros(10, 3).index_add_(0, rows, values)
        opt_s.step()
        opt_d.step()
    torch.testing.assert_close(sparse_p.data, dense_p.data)
    untouched = torch.tensor([0, 2, 3, 5, 6, 8, 9])
    assert torch.equal(sparse_p.data[untouched], w0[untouched])


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_duplicate_rows_carry_their_rows_sum_and_leave_the_scratch_map_clean(dtype: torch.dtype) -> None:
    rows = torch.tensor([3, 0, 3, 5, 3, 0])
    values = torch.tensor([[1.0], [10.0], [100.0], [1000.0], [10000.0], [100000.0]])
    slot = torch.full((7,), -1, dtype=dtype)
    summed = sum_duplicate_rows(rows, values, slot)
    expected = [[10101.0], [100010.0], [10101.0], [1000.0], [10101.0], [100010.0]]
    assert summed.tolist() == expected
    assert values[:, 0].tolist() == [1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0]  # the gradient is untouched
    assert torch.equal(slot, torch.full((7,), -1, dtype=dtype))
    unique = torch.tensor([2, 4])
    assert torch.equal(sum_duplicate_rows(unique, values[:2], slot), values[:2])


def test_row_wise_adagrad_matches_the_textbook_update() -> None:
    """One row hit twice in a batch: acc = mean(g^2) of the summed gradient, w -= lr g / sqrt(acc)."""
    p = torch.nn.Parameter(torch.tensor([[0.0, 0.0], [1.0, 2.0], [5.0, 5.0]]))
    opt = RowWiseAdagrad([p], lr=0.5, eps=0.0)
    p.grad = torch.sparse_coo_tensor(
        torch.tensor([[1, 1]]), torch.tensor([[1.0, 2.0], [2.0, 2.0]]), (3, 2), check_invariants=True
    )
    opt.step()
    g = np.array([3.0, 4.0])  # the two rows' sum
    acc = (g**2).mean()  # 12.5
    np.testing.assert_allclose(p.data[1].numpy(), np.array([1.0, 2.0]) - 0.5 * g / np.sqrt(acc), rtol=1e-6)
    assert p.data[0].tolist() == [0.0, 0.0] and p.data[2].tolist() == [5.0, 5.0]
    assert opt.state[p]["sum"].tolist() == pytest.approx([0.0, acc, 0.0])


# --------------------------------------------------------------------------- data path

START = dt.date(2026, 1, 1)


def DAY_FILTER(k: int):  # noqa: N802 - reads like a constant at the call sites
    return label_date_filter(START + dt.timedelta(days=k))


def write_days(root: Path, spec: FeatureSpec, days: int, rows: int) -> None:
    """One Parquet file per label day, list columns as Spark writes them (variable-size lists)."""
    for d in range(days):
        arrays = planted_rows(rows, 10 + d)
        arrays["dense"][:, 1] = np.arange(rows) + d * rows  # a row id, to check shuffling
        table = pa.table(
            {
                "dense": pa.array(list(arrays["dense"]), pa.list_(pa.float32())),
                "sparse": pa.array(list(arrays["sparse"].astype(np.int32)), pa.list_(pa.int32())),
                "label": pa.array(arrays["label"].astype(np.float64)),
                "weight": pa.array(arrays["weight"]),
                "is_ad": pa.array(arrays["is_ad"]),
                "label_date": pa.array([START + dt.timedelta(days=d)] * rows, pa.date32()),
            }
        )
        pq.write_table(table, root / f"day-{d}.parquet", row_group_size=rows // 3)


def row_ids(batches) -> np.ndarray:
    return np.concatenate([b.dense[:, 1].numpy() for b in batches]).astype(np.int64)


def test_stream_filters_days_and_shuffles_reproducibly(tmp_path: Path) -> None:
    spec = planted_spec()
    write_days(tmp_path, spec, days=3, rows=1000)
    val = list(ExampleStream(tmp_path, spec, batch_size=300, filter=DAY_FILTER(2)))
    assert [len(b) for b in val] == [300, 300, 300, 100]
    assert np.array_equal(row_ids(val), np.arange(2000, 3000))  # validation keeps file order
    assert val[0].sparse.dtype == torch.int64 and val[0].is_ad.dtype == torch.bool

    train_filter = label_date_filter([START, START + dt.timedelta(days=1)])
    stream = ExampleStream(tmp_path, spec, batch_size=256, shuffle_buffer=500, seed=1, filter=train_filter)
    first, second = row_ids(stream), row_ids(stream)
    assert sorted(first) == list(range(2000)) and sorted(second) == list(range(2000))
    assert not np.array_equal(first, np.arange(2000)) and not np.array_equal(first, second)
    again = ExampleStream(tmp_path, spec, batch_size=256, shuffle_buffer=500, seed=1, filter=train_filter)
    assert np.array_equal(row_ids(again), first)
    batch = next(iter(again))
    torch.testing.assert_close(batch.label, batch.label.round())  # labels decoded as floats 0/1


def test_rebatch_emits_every_row_once_in_full_batches() -> None:
    chunks = [
        {"label": np.arange(i, i + n, dtype=np.float32)} for i, n in ((0, 70), (70, 5), (75, 300), (375, 25))
    ]
    out = list(rebatch(iter(chunks), 64, shuffle_buffer=128, rng=np.random.default_rng(0)))
    assert all(len(b["label"]) == 64 for b in out[:-1])
    assert sorted(np.concatenate([b["label"] for b in out]).tolist()) == list(range(400))
    kept = list(rebatch(iter(chunks), 64, shuffle_buffer=128, rng=np.random.default_rng(0), drop_last=True))
    assert sum(len(b["label"]) for b in kept) == 384


def test_stream_refuses_examples_that_do_not_fit_the_spec(tmp_path: Path) -> None:
    spec = planted_spec()

    def write(dense, sparse, name: str) -> ExampleStream:
        table = pa.table({"dense": dense, "sparse": sparse, "label": pa.array([0.0, 1.0])})
        pq.write_table(table, tmp_path / f"{name}.parquet")
        return ExampleStream(tmp_path / f"{name}.parquet", spec, batch_size=2)

    good_dense = pa.array([[0.0, 1.0], [2.0, 3.0]], pa.list_(pa.float32()))
    short = pa.array([[1, 2, 3, 0, 0], [1, 2, 3, 0]], pa.list_(pa.int32()))
    with pytest.raises(DataError, match="list lengths"):
        list(write(good_dense, short, "short"))
    outside = pa.array([[1, 2, 9, 0, 0, 0], [1, 2, 3, 0, 0, 0]], pa.list_(pa.int32()))
    with pytest.raises(DataError, match="'device'"):
        list(write(good_dense, outside, "outside"))
    null_list = pa.array([[0.0, 1.0], None], pa.list_(pa.float32()))
    ok_sparse = pa.array([[1, 2, 3, 0, 0, 0]] * 2, pa.list_(pa.int32()))
    with pytest.raises(DataError, match="null list"):
        list(write(null_list, ok_sparse, "nulls"))
    batch = next(iter(write(good_dense, ok_sparse, "fine")))
    assert batch.weight.tolist() == [1.0, 1.0] and batch.is_ad.tolist() == [False, False]


def test_stream_reads_a_partitioned_delta_table(tmp_path: Path) -> None:
    import deltalake  # a required dependency (the trainer reads Delta without Spark): never skipped

    spec = planted_spec()
    for d in range(3):
        arrays = planted_rows(300, d)
        table = pa.table(
            {
                "dense": pa.array(list(arrays["dense"]), pa.list_(pa.float32())),
                "sparse": pa.array(list(arrays["sparse"].astype(np.int32)), pa.list_(pa.int32())),
                "label": pa.array(arrays["label"]),
                "label_date": pa.array([START + dt.timedelta(days=d)] * 300, pa.date32()),
            }
        )
        deltalake.write_deltalake(tmp_path, table, partition_by=["label_date"], mode="append")
    # label_date lives only in the partition paths; the stream still filters on it.
    train_days = label_date_filter([START, START + dt.timedelta(days=1)])
    assert sum(len(b) for b in ExampleStream(tmp_path, spec, batch_size=128, filter=train_days)) == 600
    assert sum(len(b) for b in ExampleStream(tmp_path, spec, batch_size=128, filter=DAY_FILTER(2))) == 300


def test_settings_from_the_train_config_section() -> None:
    from recs.config import load_config

    cfg = load_config(environ={}).train
    settings = TrainSettings.from_config(cfg, progress=False)
    assert (settings.epochs, settings.patience, settings.device) == (cfg.epochs, cfg.patience, cfg.device)
    assert settings.embedding_learning_rate == cfg.embedding_learning_rate and not settings.progress
