"""DLRM training / inference throughput on the Criteo-Kaggle shape, ours vs the plain way.

Shape: 13 dense, 26 single-valued sparse features (tables of 1e5..1e6 rows, log-spaced,
~10.3M rows in all), embedding dim 16, bottom MLP 13-512-256-64-16, top MLP 512-256-1,
batch 2048, random data, 2 CPU threads (or the GPU when present: same code path).

Printed, as medians over repeats after a warm-up:

* ours      -- ``recs.train``: fused-table gather, sparse row-wise Adagrad + Adam, the library's
               own ``train_epoch`` loop; inference through ``DLRM.predict``.
* baseline  -- the same architecture trained the plain way: one ``nn.EmbeddingBag`` per
               table with dense gradients, ``torch.optim`` dense steps (Adagrad for the tables,
               Adam for the MLPs), autograd interaction, fp32.
* sparse-SGD -- a stand-in for the public reference's loop written here: per-table sparse
               ``EmbeddingBag`` + plain SGD, autograd interaction, fp32.
* reference -- with ``--reference DIR``: ``DLRM_Net`` imported from a checkout of
               facebookresearch/dlrm kept outside this repository (never vendored; its
               imports need scikit-learn and tensorboard), its default SGD loop, fp32.
* MLPs only -- just the bottom and top MLPs on random inputs: the GEMMs all variants share,
               i.e. the ceiling for any fp32 implementation of this architecture here.

Every ratio printed is against a variant timed in the same run, round-robin.

Usage: ``python benchmarks/bench_train.py [--quick] [--threads 2] [--device auto] [--reference DIR]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

DIM = 16
BOTTOM = [512, 256, 64]  # + the embedding dim, appended by the model
TOP = [512, 256]  # + the logit layer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few steps and repeats (~1 minute)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--rows-min", type=float, default=1e5)
    p.add_argument("--rows-max", type=float, default=1e6)
    p.add_argument("--steps", type=int, help="timed steps per repeat (ours)")
    p.add_argument("--repeats", type=int, help="timed repeats; the median is reported")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--reference", metavar="DIR", help="a facebookresearch/dlrm checkout to time beside ours")
    p.add_argument("--no-checks", action="store_true", help="skip the 1-thread, bf16 and AUC checks")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Before torch starts its OpenMP pool: idle threads must sleep, not spin, on a shared 2-core box.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    torch.set_num_threads(args.threads)
    Bench(args, torch).run()


class Bench:
    """Holds the shared random data and runs each measurement."""

    def __init__(self, args: argparse.Namespace, torch: Any) -> None:
        from recs.model.device import resolve_device

        self.args, self.torch = args, torch
        self.device = resolve_device(args.device)
        self.steps = args.steps or (6 if args.quick else 30)
        self.repeats = args.repeats or (3 if args.quick else 5)
        self.spec = criteo_spec(args.rows_min, args.rows_max)
        self.batches = random_batches(torch, self.spec, args.batch_size, 8, self.device)

    def run(self) -> None:
        t, spec, a = self.torch, self.spec, self.args
        rows = sum(f.buckets for f in spec.sparse)
        where = f"{t.get_num_threads()} threads" if self.device.type == "cpu" else t.cuda.get_device_name()
        print(f"DLRM Criteo-Kaggle shape: 13 dense, 26 sparse x dim {DIM}, {rows / 1e6:.1f}M embedding rows")
        print(f"device={self.device} ({where}), batch={a.batch_size}, torch {t.__version__}")
        print(f"median of {self.repeats} interleaved repeats after a warm-up round\n")
        variants = {"ours": self.ours()}
        if not a.no_baseline:
            variants["baseline"] = self.plain("baseline")
            variants["sparse-SGD"] = self.plain("sparse-SGD")
        if a.reference:
            variants["reference"] = self.reference(a.reference)
        variants["MLPs only"] = self.mlps_alone()  # the GEMMs every variant must do: a ceiling
        self.report(self.measure(variants))
        if not a.no_checks:
            self.checks()

    # ---------------------------------------------------------------- measurements

    def measure(self, variants: dict[str, dict[str, Callable[[], float]]]) -> dict[str, dict[str, float]]:
        """Round-robin over the variants so background load hits them alike; medians per variant."""
        samples: dict[str, dict[str, list[float]]] = {n: {"train": [], "infer": []} for n in variants}
        for round_ in range(self.repeats + 1):
            for name, runs in variants.items():
                for what, once in runs.items():
                    rate = once()
                    if round_:  # round 0 warms up: allocator, OpenMP pool, first touch of the tables
                        samples[name][what].append(rate)
        return {n: {w: statistics.median(v) for w, v in r.items()} for n, r in samples.items()}

    def ours(self) -> dict[str, Callable[[], float]]:
        """recs.train as the nightly job runs it: ``train_epoch`` and ``DLRM.predict``."""
        from recs.model.device import resolve_precision
        from recs.model.dlrm import build_model
        from recs.train.loop import TrainSettings, train_epoch
        from recs.train.optim import make_optimizers

        model = build_model(self.spec, BOTTOM, TOP, ads_head=False, seed=0)
        model.fit_normalizer(self.batches[0].dense.cpu())
        model.to(self.device)
        settings = TrainSettings(device=str(self.device), progress=False, max_steps_per_epoch=self.steps)
        optimizers = make_optimizers(model, settings)
        amp = resolve_precision("auto", self.device)

        def train_once() -> float:
            done = train_epoch(model, self._cycle(self.steps), optimizers, self.device, amp, settings)
            return done.rows / done.seconds

        def infer_once() -> float:
            return self._time_loop(lambda b: model.predict(b.dense, b.sparse), self.steps)

        return {"train": train_once, "infer": infer_once}

    def plain(self, kind: str) -> dict[str, Callable[[], float]]:
        t = self.torch
        model = PlainDLRM(t, self.spec, sparse_grad=kind == "sparse-SGD").to(self.device)
        if kind == "sparse-SGD":
            opts = [t.optim.SGD(model.parameters(), lr=0.1)]
        else:
            opts = [
                t.optim.Adam(model.mlp_parameters(), lr=2e-3),
                t.optim.Adagrad(list(model.tables.parameters()), lr=0.05),
            ]
        bce = t.nn.functional.binary_cross_entropy_with_logits

        def step(b: Any) -> None:
            loss = bce(model(b.dense, b.sparse), b.label)
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o in opts:
                o.step()

        # The dense baseline moves every table row each step; fewer steps keep the run short.
        steps = self.steps if kind == "sparse-SGD" else max(2, self.steps // 6)

        def train_once() -> float:
            return self._time_loop(step, steps)

        def infer_once() -> float:
            with t.inference_mode():
                return self._time_loop(lambda b: t.sigmoid(model(b.dense, b.sparse)), self.steps)

        return {"train": train_once, "infer": infer_once}

    def reference(self, checkout: str) -> dict[str, Callable[[], float]]:
        """facebookresearch/dlrm's ``DLRM_Net`` on the same batches, with its default SGD loop."""
        import numpy as np

        t = self.torch
        sys.path.insert(0, str(Path(checkout).resolve()))
        try:
            import dlrm_s_pytorch as ref  # type: ignore[import-not-found]
        except ImportError as exc:
            raise SystemExit(f"--reference {checkout}: cannot import dlrm_s_pytorch ({exc})") from None
        n = len(self.spec.sparse)
        top_in = DIM + (n + 1) * n // 2
        model = ref.DLRM_Net(
            DIM,
            np.array([f.buckets for f in self.spec.sparse]),
            np.array([self.spec.num_dense, *BOTTOM, DIM]),
            np.array([top_in, *TOP, 1]),
            arch_interaction_op="dot",
            sigmoid_bot=-1,
            sigmoid_top=len(TOP),  # the last of its top layers, as in its own script
            ndevices=-1 if self.device.type == "cpu" else 1,
            loss_function="bce",
        ).to(self.device)
        opt = t.optim.SGD(model.parameters(), lr=0.1)
        bce = t.nn.BCELoss()
        offsets = t.arange(self.args.batch_size, device=self.device).repeat(n, 1)
        inputs = {
            id(b): (b.dense, offsets, [b.sparse[:, k].contiguous() for k in range(n)], b.label.view(-1, 1))
            for b in self.batches
        }

        def step(b: Any) -> None:
            x, o, ids, y = inputs[id(b)]
            loss = bce(model(x, o, ids), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        def infer(b: Any) -> None:
            x, o, ids, _ = inputs[id(b)]
            model(x, o, ids)

        def infer_once() -> float:
            model.eval()
            with t.no_grad():
                rate = self._time_loop(infer, self.steps)
            model.train()
            return rate

        return {"train": lambda: self._time_loop(step, self.steps), "infer": infer_once}

    def _cycle(self, steps: int) -> Iterator[Any]:
        for i in range(steps):
            yield self.batches[i % len(self.batches)]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def _time_loop(self, fn: Callable[[Any], Any], steps: int) -> float:
        self._sync()
        start = time.perf_counter()
        rows = 0
        for b in self._cycle(steps):
            fn(b)
            rows += len(b)
        self._sync()
        return rows / (time.perf_counter() - start)

    # ---------------------------------------------------------------- output

    def report(self, results: dict[str, dict[str, float]]) -> None:
        print(f"{'':12s}{'train samples/s':>18s}{'infer samples/s':>18s}")
        for name, r in results.items():
            print(f"{name:12s}{r['train']:>18,.0f}{r['infer']:>18,.0f}")
        print("(MLPs only = bottom+top MLP on random inputs, no embeddings/interaction/optimizer step)")
        ours = results["ours"]
        for name in ("baseline", "sparse-SGD", "reference", "MLPs only"):
            if name in results:
                other = results[name]
                train_x, infer_x = ours["train"] / other["train"], ours["infer"] / other["infer"]
                print(f"ours / {name:10s}: train x{train_x:.2f}, infer x{infer_x:.2f}")
        if "reference" not in results:
            print("(--reference DIR, a facebookresearch/dlrm checkout, times the public reference too)")

    def checks(self) -> None:
        """Side measurements behind the design choices (threads, CPU bf16, equal AUC)."""
        t = self.torch
        print()
        if self.device.type == "cpu":
            threads = t.get_num_threads()
            saved = self.steps, self.repeats
            self.steps, self.repeats = max(3, self.steps // 3), max(1, self.repeats // 2)
            t.set_num_threads(1)
            one = self.measure({"ours": self.ours()})["ours"]
            t.set_num_threads(threads)
            print(f"ours with 1 thread: train {one['train']:,.0f}/s, infer {one['infer']:,.0f}/s")
            print(f"bf16 autocast training on this CPU: {self.bf16_train():,.0f}/s (default here: fp32)")
            self.steps, self.repeats = saved
        auc_ours, auc_plain = self.auc_check()
        label = "planted-signal validation AUC (tables of 100 rows, 1 epoch)"
        print(f"{label}: ours {auc_ours:.4f}, baseline {auc_plain:.4f}")

    def mlps_alone(self) -> dict[str, Callable[[], float]]:
        """Bottom + top MLP forward(+backward) on random inputs: no embeddings, no interaction."""
        from recs.model.dlrm import build_model

        t = self.torch
        model = build_model(self.spec, BOTTOM, TOP, ads_head=False).to(self.device)
        b = self.args.batch_size
        x_bottom = t.randn(b, model.bottom[0].in_features, device=self.device)
        x_top = t.randn(b, model.top[0].in_features, device=self.device)

        def step(_: Any) -> None:
            loss = model.bottom(x_bottom).sum() + model.head(model.top(x_top)).sum()
            loss.backward()

        def forward(_: Any) -> None:
            with t.inference_mode():
                model.bottom(x_bottom), model.head(model.top(x_top))

        return {
            "train": lambda: self._time_loop(step, self.steps),
            "infer": lambda: self._time_loop(forward, self.steps),
        }

    def bf16_train(self) -> float:
        from recs.model.dlrm import build_model
        from recs.train.loop import TrainSettings, train_epoch
        from recs.train.optim import make_optimizers

        model = build_model(self.spec, BOTTOM, TOP, ads_head=False)
        model.fit_normalizer(self.batches[0].dense)
        settings = TrainSettings(progress=False, max_steps_per_epoch=2)
        optimizers = make_optimizers(model, settings)
        bf16 = self.torch.bfloat16
        train_epoch(model, self._cycle(1), optimizers, self.device, bf16, settings)
        done = train_epoch(model, self._cycle(2), optimizers, self.device, bf16, settings)
        return done.rows / done.seconds

    def auc_check(self) -> tuple[float, float]:
        """Both ways on the same planted-interaction data (small tables, so one epoch learns it)."""
        from recs.model.dlrm import build_model
        from recs.model.metrics import evaluate
        from recs.train.loop import TrainSettings, train

        t = self.torch
        spec = criteo_spec(100, 100)
        make = planted_batches(t, spec, self.args.batch_size, self.device)
        train_b, val_b = make(40, seed=1), make(10, seed=2)
        model = build_model(spec, BOTTOM, TOP, ads_head=False, seed=0)
        train(model, train_b, val_b, TrainSettings(epochs=1, progress=False, device=str(self.device)))
        ours = evaluate(model, val_b, self.device)["auc"]

        plain = PlainDLRM(t, spec, sparse_grad=False).to(self.device)
        opts = [
            t.optim.Adam(plain.mlp_parameters(), lr=2e-3),
            t.optim.Adagrad(plain.tables.parameters(), lr=0.5),
        ]
        plain.fit(t.cat([b.dense for b in train_b]))
        for b in train_b:
            loss = t.nn.functional.binary_cross_entropy_with_logits(plain(b.dense, b.sparse), b.label)
            for o in opts:
                o.zero_grad()
            loss.backward()
            for o in opts:
                o.step()
        with t.inference_mode():
            scores = t.cat([plain(b.dense, b.sparse) for b in val_b]).float().cpu().numpy()
        from recs.model.metrics import roc_auc

        return ours, roc_auc(t.cat([b.label for b in val_b]).cpu().numpy(), scores)


# -------------------------------------------------------------------- shape, data, baseline


def criteo_spec(rows_min: float, rows_max: float) -> Any:
    import numpy as np

    from recs.features.spec import FeatureSpec

    buckets = np.geomspace(rows_min, rows_max, 26).round().astype(int)
    sparse = [{"name": f"c{i}", "source": f"c{i}", "buckets": int(b)} for i, b in enumerate(buckets)]
    return FeatureSpec.from_dict(
        {
            "version": 1,
            "embedding_dim": DIM,
            "pooling": "sum",
            "sparse": sparse,
            "dense": [{"name": f"i{i}", "source": f"i{i}"} for i in range(13)],
            "label": "label",
        }
    )


def random_batches(torch: Any, spec: Any, batch_size: int, count: int, device: Any) -> list[Any]:
    """Uniform bucket ids in [1, buckets), Gaussian dense, 25% positives (what the reference feeds)."""
    from recs.model.batches import Batch

    g = torch.Generator().manual_seed(0)
    limits = torch.tensor([f.buckets for f in spec.sparse])
    out = []
    for _ in range(count):
        sparse = 1 + (torch.rand(batch_size, len(limits), generator=g) * (limits - 1)).long()
        dense = torch.randn(batch_size, spec.num_dense, generator=g)
        label = (torch.rand(batch_size, generator=g) < 0.25).float()
        b = Batch(dense, sparse, label, torch.ones(batch_size), torch.zeros(batch_size, dtype=torch.bool))
        out.append(b.to(device))
    return out


def planted_batches(torch: Any, spec: Any, batch_size: int, device: Any) -> Callable[..., list[Any]]:
    """Labels from an interaction of features 0 and 1 plus one dense feature."""
    from recs.model.batches import Batch

    limits = torch.tensor([f.buckets for f in spec.sparse])
    side = torch.Generator().manual_seed(99)
    kind0 = torch.randint(0, 2, (spec.sparse[0].buckets,), generator=side) * 2.0 - 1
    kind1 = torch.randint(0, 2, (spec.sparse[1].buckets,), generator=side) * 2.0 - 1

    def make(count: int, seed: int) -> list[Any]:
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(count):
            sparse = 1 + (torch.rand(batch_size, len(limits), generator=g) * (limits - 1)).long()
            dense = torch.randn(batch_size, spec.num_dense, generator=g)
            logit = 2.0 * kind0[sparse[:, 0]] * kind1[sparse[:, 1]] + 0.7 * dense[:, 0] - 1.0
            label = (torch.rand(batch_size, generator=g) < torch.sigmoid(logit)).float()
            ones, no_ads = torch.ones(batch_size), torch.zeros(batch_size, dtype=torch.bool)
            out.append(Batch(dense, sparse, label, ones, no_ads).to(device))
        return out

    return make


def PlainDLRM(torch: Any, spec: Any, sparse_grad: bool) -> Any:  # noqa: N802 - a class factory
    """The textbook DLRM: per-table EmbeddingBag, autograd interaction, default kernels."""
    nn = torch.nn

    def mlp(widths: list[int], last_relu: bool) -> Any:
        layers: list[Any] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*(layers if last_relu else layers[:-1]))

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            n = len(spec.sparse) + 1
            self.tables = nn.ModuleList(
                nn.EmbeddingBag(f.buckets, DIM, mode="sum", sparse=sparse_grad) for f in spec.sparse
            )
            for table in self.tables:
                nn.init.normal_(table.weight, 0.0, 0.01)
            self.bottom = mlp([spec.num_dense, *BOTTOM, DIM], True)
            self.top = mlp([DIM + n * (n - 1) // 2, *TOP, 1], False)
            li, lj = torch.tril_indices(n, n, offset=-1)
            self.register_buffer("li", li)
            self.register_buffer("lj", lj)
            self.register_buffer("mean", torch.zeros(spec.num_dense))
            self.register_buffer("std", torch.ones(spec.num_dense))

        def fit(self, dense: Any) -> None:
            self.mean.copy_(dense.mean(0))
            self.std.copy_(dense.std(0))

        def mlp_parameters(self) -> list[Any]:
            return [*self.bottom.parameters(), *self.top.parameters()]

        def forward(self, dense: Any, sparse: Any) -> Any:
            x = self.bottom((dense - self.mean) / self.std)
            offsets = torch.arange(len(sparse), device=sparse.device)
            embs = [t(sparse[:, k], offsets) for k, t in enumerate(self.tables)]
            v = torch.stack([x, *embs], dim=1)
            z = torch.bmm(v, v.transpose(1, 2))[:, self.li, self.lj]
            return self.top(torch.cat([x, z], dim=1)).squeeze(1)

    return Plain()


if __name__ == "__main__":
    main()
