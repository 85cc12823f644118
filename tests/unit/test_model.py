"""DLRM module and model artefacts: shapes, gradients, interaction, padding, save/load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recs.errors import ArtifactError
from recs.features.spec import FeatureSpec
from recs.model.artifacts import load_json, load_model, read_manifest, save_model
from recs.model.dlrm import DLRM, PairwiseInteraction, build_model, lower_triangle


def tiny_spec(pooling: str = "mean", dim: int = 4) -> FeatureSpec:
    return FeatureSpec.from_dict(
        {
            "version": 1,
            "embedding_dim": dim,
            "pooling": pooling,
            "sparse": [
                {"name": "user", "source": "u.id", "buckets": 11},
                {"name": "item", "source": "i.id", "buckets": 7},
                {"name": "recent", "source": "u.recent", "buckets": 7, "max_len": 3},
                {"name": "device", "source": "c.device", "buckets": 3},
                {"name": "tags", "source": "i.tags", "buckets": 5, "max_len": 2},
            ],
            "dense": [
                {"name": "a", "source": "u.a", "transform": "log1p"},
                {"name": "b", "source": "u.b"},
                {"name": "c", "source": "i.c", "transform": "clip", "clip": [0, 9]},
            ],
            "label": "label",
        }
    )


def random_inputs(spec: FeatureSpec, rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    limits = torch.tensor([f.buckets for f in spec.sparse for _ in range(f.max_len)])
    sparse = (torch.rand(rows, spec.sparse_width, generator=g) * limits).long()
    return torch.randn(rows, spec.num_dense, generator=g) * 3 + 1, sparse


def test_shapes_widths_and_gradient_flow() -> None:
    spec = tiny_spec()
    model = build_model(spec, [8], [16, 8], seed=1)
    assert model.bottom_widths == [3, 8, 4]  # the embedding dim is appended
    assert model.top_widths == [4 + 6 * 5 // 2, 16, 8]  # 5 features + bottom output -> 15 pairs
    assert model.top[0].in_features == 24 and model.bottom[0].in_features == 8  # padded to 8s
    dense, sparse = random_inputs(spec, 32)
    logits = model(dense, sparse, is_ad=torch.arange(32) % 4 == 0)
    assert logits.shape == (32,)
    logits.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    grad = model.embedding.weight.grad
    assert grad.is_sparse
    assert float(grad.coalesce().values().abs().sum()) > 0
    assert all(float(p.grad.abs().sum()) > 0 for p in model.bottom.parameters())
    assert float(model.top[0].weight.grad[:, 19:].abs().sum()) == 0.0  # padding columns never move
    assert float(model.bottom[0].weight.grad[:, 3:].abs().sum()) == 0.0
    assert build_model(spec, [8, 4], [16, 1]).bottom_widths == [3, 8, 4]  # not appended twice


def test_sparse_gradient_equals_dense_reference() -> None:
    spec = tiny_spec("sum")
    model = build_model(spec, [8], [8], seed=2)
    dense, sparse = random_inputs(spec, 16, seed=3)
    model(dense, sparse).sum().backward()
    sparse_grad = model.embedding.weight.grad.to_dense()
    weight = model.embedding.weight.detach().clone().requires_grad_()
    rows = model.embedding.rows(sparse)
    slots = F.embedding(rows, weight, padding_idx=0)
    pooled = torch.cat(
        [
            slots[:, 0:2],
            slots[:, 2:5].sum(1, keepdim=True),
            slots[:, 5:6],
            slots[:, 6:8].sum(1, keepdim=True),
        ],
        dim=1,
    )
    out = model.head(model.top(model.interaction(model.bottom_output(dense).detach(), pooled)))[:, 0]
    out.sum().backward()
    torch.testing.assert_close(sparse_grad, weight.grad)


def test_interaction_equals_explicit_double_loop() -> None:
    g = torch.Generator().manual_seed(0)
    x, emb = torch.randn(5, 3, generator=g), torch.randn(5, 4, 3, generator=g)
    out = PairwiseInteraction(5)(x, emb)
    vectors = [x] + [emb[:, k] for k in range(4)]
    expected = [x[:, d] for d in range(3)]
    for i in range(5):
        for j in range(i):
            expected.append((vectors[i] * vectors[j]).sum(1))
    torch.testing.assert_close(out, torch.stack(expected, dim=1))
    li, lj = lower_triangle(5)
    assert bool((li > lj).all()) and li.numel() == 10


def test_interaction_backward_matches_autograd() -> None:
    inter = PairwiseInteraction(4).double()
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    emb = torch.randn(3, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: inter(a, b), (x, emb))


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_pooling_equals_per_feature_embedding_bag(pooling: str) -> None:
    spec = tiny_spec(pooling)
    model = build_model(spec, [8], [8], seed=3)
    _, sparse = random_inputs(spec, 40, seed=4)
    sparse[:5] = 0  # all-padding rows
    pooled = model.embedding(sparse)
    for k, (feature, (start, stop)) in enumerate(zip(spec.sparse, spec.sparse_slices(), strict=True)):
        expected = F.embedding_bag(
            sparse[:, start:stop], model.table(feature.name), mode=pooling, padding_idx=0
        )
        torch.testing.assert_close(pooled[:, k], expected)


def test_padding_contributes_nothing() -> None:
    spec = tiny_spec("mean")
    model = build_model(spec, [8], [8], seed=4)
    dense, sparse = random_inputs(spec, 8, seed=5)
    sparse[:, 2:5] = torch.tensor([4, 0, 0])
    pooled = model.embedding(sparse)
    torch.testing.assert_close(pooled[:, 2], model.table("recent")[4].expand(8, -1))  # mean over 1, not 3
    sparse[:, 0] = 0
    assert float(model.embedding(sparse)[:, 0].detach().abs().sum()) == 0.0
    for name in ("user", "recent", "tags"):
        assert float(model.table(name)[0].abs().sum()) == 0.0
    model(dense, sparse).sum().backward()
    grad = model.embedding.weight.grad.coalesce()
    at_padding = grad.values()[grad.indices()[0] == 0]
    assert float(at_padding.abs().sum()) == 0.0


def test_out_of_range_bucket_is_refused() -> None:
    spec = tiny_spec()
    model = build_model(spec, [8], [8])
    dense, sparse = random_inputs(spec, 4)
    sparse[1, 5] = 3  # feature "device" has 3 buckets: 0..2
    with pytest.raises(ValueError, match="slot 5"):
        model(dense, sparse)


def test_normalizer_buffers() -> None:
    spec = tiny_spec()
    model = build_model(spec, [8], [8])
    assert not model.normalizer_fitted
    dense = torch.randn(1000, 3) * torch.tensor([2.0, 5.0, 0.0]) + torch.tensor([1.0, -3.0, 7.0])
    model.fit_normalizer(dense)
    assert model.normalizer_fitted
    torch.testing.assert_close(model.dense_mean, dense.mean(0), atol=1e-4, rtol=1e-4)
    assert float(model.dense_std[2]) == 1.0  # a constant column is centred, not divided by 0
    assert {"dense_mean", "dense_std", "normalizer_rows"} <= set(model.state_dict())


def test_same_seed_same_init() -> None:
    spec = tiny_spec()
    a, b = build_model(spec, [8], [8], seed=5), build_model(spec, [8], [8], seed=5)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    c = build_model(spec, [8], [8], seed=6)
    assert not torch.equal(a.embedding.weight, c.embedding.weight)


def test_ads_head_routes_ad_rows() -> None:
    spec = tiny_spec()
    model = build_model(spec, [8], [8], ads_head=True, seed=7)
    dense, sparse = random_inputs(spec, 6)
    is_ad = torch.tensor([True, False, True, False, False, True])
    both = model(dense, sparse, is_ad)
    organic = model(dense, sparse)
    assert torch.equal(both[~is_ad], organic[~is_ad])
    assert not torch.allclose(both[is_ad], organic[is_ad])


def test_the_linear_term_adds_a_linear_function_of_the_standardised_dense_features() -> None:
    spec = tiny_spec()
    model = build_model(spec, [8], [8], ads_head=True, seed=8)
    sample, _ = random_inputs(spec, 200, seed=9)
    model.fit_normalizer(sample)
    dense, sparse = random_inputs(spec, 12, seed=10)
    is_ad = torch.arange(12) % 2 == 0
    with torch.no_grad():
        deep_only = model(dense, sparse, is_ad)  # the term starts at zero: no change yet
        w = torch.tensor([[0.5, -2.0, 1.5], [3.0, 0.0, -1.0]])  # organic row, ads row
        model.linear.weight.copy_(w)
        with_term = model(dense, sparse, is_ad)
    x = dense.double().numpy()
    mean, std = sample.double().numpy().mean(0), sample.double().numpy().std(0)
    z = (x - mean) / std
    expected = [z[r] @ w[1 if is_ad[r] else 0].double().numpy() for r in range(12)]
    torch.testing.assert_close((with_term - deep_only).double(), torch.tensor(expected), atol=1e-5, rtol=1e-5)


def test_fit_linear_recovers_each_heads_logistic_regression() -> None:
    """Labels drawn from known logistic models (one for organic rows, another for ads): the
    maximum-likelihood fit lands on the generating coefficients and intercepts."""
    spec = tiny_spec()
    model = build_model(spec, [8], [8], ads_head=True, seed=9)
    model.dense_mean.zero_()
    model.dense_std.fill_(1.0)  # standardised == raw, so the coefficients are comparable
    model.normalizer_rows.fill_(1)
    g = torch.Generator().manual_seed(4)
    n = 100_000
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    is_ad = torch.rand(n, generator=g) < 0.3
    truth = {0: ([1.5, -1.0, 0.0], -0.5), 1: ([0.0, 0.0, -2.0], 1.0)}
    logits = torch.where(
        is_ad,
        x @ torch.tensor(truth[1][0], dtype=torch.float64) + truth[1][1],
        x @ torch.tensor(truth[0][0], dtype=torch.float64) + truth[0][1],
    )
    label = (torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(logits)).float()
    bias_before = model.head.bias.detach().clone()
    model.fit_linear(x.float(), label, torch.ones(n), is_ad, l2=0.0)
    for col, (coef, intercept) in truth.items():
        fitted_coef = model.linear.weight.detach()[col].double()
        torch.testing.assert_close(fitted_coef, torch.tensor(coef).double(), atol=0.06, rtol=0)
        fitted = float(model.head.bias.detach()[col] - bias_before[col])
        assert fitted == pytest.approx(intercept, abs=0.06), col


def test_a_rows_score_does_not_depend_on_the_rows_it_is_batched_with() -> None:
    # Spark hands the scorer whatever rows a partition's Arrow batch holds, which can differ
    # between a run and its rerun; the scores written must not (bit for bit).
    spec = tiny_spec(dim=16)
    model = build_model(spec, [64, 16], [256, 64], ads_head=True, seed=1).eval()
    model.fit_normalizer(random_inputs(spec, 64, seed=12)[0])
    dense, sparse = (t.numpy() for t in random_inputs(spec, 300, seed=3))
    is_ad = np.arange(300) % 5 == 0
    whole = model.predict_numpy(dense, sparse, is_ad, batch_size=128)
    order = np.random.default_rng(4).permutation(300)
    parts, start = [], 0
    for size in [1, 2, 3, 7, 15, 1, 130, 41]:  # some smaller, one larger than a chunk
        rows = order[start : start + size]
        parts.append((rows, model.predict_numpy(dense[rows], sparse[rows], is_ad[rows], batch_size=128)))
        start += size
    rows = order[start:]
    parts.append((rows, model.predict_numpy(dense[rows], sparse[rows], is_ad[rows], batch_size=128)))
    again = np.empty(300, dtype=np.float32)
    for rows, scores in parts:
        again[rows] = scores
    assert np.array_equal(again, whole)
    with torch.inference_mode():  # and the padding is invisible: same as one plain forward
        plain = model.predict(torch.from_numpy(dense), torch.from_numpy(sparse), torch.from_numpy(is_ad))
    np.testing.assert_allclose(whole, plain.numpy(), rtol=1e-5, atol=1e-7)


def test_a_rows_score_does_not_depend_on_its_place_in_the_batch() -> None:
    # Inner widths that are not multiples of 8 (13 dense features into the linear term, a top
    # layer of 30 into the heads) are where a BLAS kernel's result for a row has been seen to
    # change with the row's position; a rerun gets its rows from Spark in another order.
    spec = FeatureSpec.from_dict(
        {
            "version": 1,
            "embedding_dim": 4,
            "pooling": "mean",
            "sparse": [{"name": "item", "source": "i.id", "buckets": 7}],
            "dense": [{"name": f"d{k}", "source": f"u.d{k}"} for k in range(13)],
            "label": "label",
        }
    )
    model = build_model(spec, [20], [30], ads_head=True, seed=1).eval()
    dense, sparse = random_inputs(spec, 512, seed=5)
    model.fit_normalizer(dense)
    with torch.no_grad():
        model.linear.weight.normal_(generator=torch.Generator().manual_seed(2))
    dense, sparse = dense.numpy(), sparse.numpy()
    is_ad = np.arange(512) % 3 == 0
    whole = model.predict_numpy(dense, sparse, is_ad, batch_size=256)
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(512)
        again = np.empty(512, dtype=np.float32)
        again[order] = model.predict_numpy(dense[order], sparse[order], is_ad[order], batch_size=256)
        assert np.array_equal(again, whole), int((again != whole).sum())


# --------------------------------------------------------------------------- artefacts


def trained_like_model(spec: FeatureSpec, ads_head: bool = False) -> DLRM:
    model = build_model(spec, [8], [16, 8], ads_head=ads_head, seed=11)
    model.fit_normalizer(random_inputs(spec, 64, seed=12)[0])
    return model


@pytest.mark.parametrize("uri", [False, True])
def test_save_load_gives_identical_predictions(tmp_path: Path, uri: bool) -> None:
    spec = tiny_spec()
    model = trained_like_model(spec, ads_head=True)
    where = tmp_path / "models" / "v1"
    manifest = save_model(
        model, where, training_config={"epochs": 2}, metrics={"auc": 0.7, "ne": float("nan")}
    )
    loaded, loaded_spec, loaded_manifest = load_model(f"file://{where}" if uri else where)
    assert loaded_spec.to_json() == spec.to_json() and loaded_manifest == manifest
    assert (where / "spec.json").read_text() == spec.to_json()
    assert sorted(p.name for p in where.iterdir()) == sorted(
        ["model.safetensors", "spec.json", "config.json", "metrics.json", "manifest.json"]
    )
    dense, sparse = random_inputs(spec, 50, seed=13)
    is_ad = torch.arange(50) % 3 == 0
    assert torch.equal(loaded.predict(dense, sparse, is_ad), model.predict(dense, sparse, is_ad))
    assert load_json(where, "metrics.json") == {"auc": 0.7, "ne": None}
    assert load_json(where, "config.json")["training"] == {"epochs": 2}
    assert manifest["spec_hash"] == spec.spec_hash


def test_an_artefact_is_written_once_and_its_bytes_never_change(tmp_path: Path) -> None:
    spec = tiny_spec()
    model = trained_like_model(spec)
    save_model(model, tmp_path / "v1")
    before = {p.name: p.read_bytes() for p in (tmp_path / "v1").iterdir()}
    other = trained_like_model(spec)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    with pytest.raises(ArtifactError, match="already exists"):
        save_model(other, tmp_path / "v1")
    assert {p.name: p.read_bytes() for p in (tmp_path / "v1").iterdir()} == before
    dense, sparse = random_inputs(spec, 20, seed=3)
    is_ad = torch.zeros(20, dtype=torch.bool)
    loaded, _, _ = load_model(tmp_path / "v1")
    assert torch.equal(loaded.predict(dense, sparse, is_ad), model.predict(dense, sparse, is_ad))

    # An interrupted write (files, no manifest) is not an artefact and may be written over.
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "model.safetensors").write_bytes(b"half")
    save_model(model, tmp_path / "v2")
    load_model(tmp_path / "v2")


def test_tampered_or_unknown_artefacts_are_refused(tmp_path: Path) -> None:
    spec = tiny_spec()
    where = tmp_path / "v1"
    save_model(trained_like_model(spec), where)

    weights = (where / "model.safetensors").read_bytes()
    (where / "model.safetensors").write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))
    with pytest.raises(ArtifactError, match="model.safetensors does not match its manifest hash"):
        load_model(where)
    (where / "model.safetensors").write_bytes(weights)
    load_model(where)

    # A different spec with a forged manifest entry is still caught by the spec hash.
    other = tiny_spec(dim=4).to_json().replace('"buckets":11', '"buckets":12')
    original_manifest = (where / "manifest.json").read_text()
    manifest = json.loads(original_manifest)
    original_spec = (where / "spec.json").read_text()
    (where / "spec.json").write_text(other)
    manifest["files"]["spec.json"] = {
        "sha256": hashlib.sha256(other.encode()).hexdigest(),
        "bytes": len(other),
    }
    (where / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="spec.json hash"):
        load_model(where)
    (where / "spec.json").write_text(original_spec)
    (where / "manifest.json").write_text(original_manifest)

    with pytest.raises(ArtifactError, match="expected"):
        load_model(where, expected_spec_hash="0" * 16)

    manifest = json.loads((where / "manifest.json").read_text())
    manifest["format_version"] = 99
    (where / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format version 99"):
        read_manifest(where)

    (where / "manifest.json").write_text('{"format": "pickle"}')
    with pytest.raises(ArtifactError, match="unknown format"):
        load_model(where)

    (where / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="cannot read manifest.json"):
        load_model(where)
    with pytest.raises(ArtifactError):
        load_model(tmp_path / "nothing-here")


def test_an_artefact_saved_before_the_linear_term_loads_without_it(tmp_path: Path) -> None:
    """Artefacts written before the term existed have no ``linear`` key in config.json."""
    spec = tiny_spec()
    old = build_model(spec, [8], [16, 8], ads_head=True, linear=False, seed=11)
    old.fit_normalizer(random_inputs(spec, 64, seed=12)[0])
    where = tmp_path / "v0"
    save_model(old, where)
    config = json.loads((where / "config.json").read_text())
    del config["model"]["linear"]
    text = json.dumps(config).encode()
    (where / "config.json").write_bytes(text)
    manifest = json.loads((where / "manifest.json").read_text())
    manifest["files"]["config.json"] = {"sha256": hashlib.sha256(text).hexdigest(), "bytes": len(text)}
    (where / "manifest.json").write_text(json.dumps(manifest))
    loaded, _, _ = load_model(where)
    assert loaded.linear is None
    dense, sparse = random_inputs(spec, 30, seed=13)
    assert torch.equal(loaded.predict(dense, sparse), old.predict(dense, sparse))
