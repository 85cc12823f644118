"""Does a row's score depend on the order and company it arrives in?  CPU or GPU.

A rerun of a date hands the scoring UDF the same pairs in other partitions and orders, and the
recommendations it writes must be bit-identical to the first run's. This scores random rows
through ``DLRM.predict_numpy`` (what the UDF calls) in sorted order and in ``--orders`` random
permutations, at two shapes:

* project -- ``schemas/feature_spec.json`` with the default MLP widths, ads head, a non-zero
             linear term: the nightly model;
* criteo  -- ``bench_train.py``'s shape with 26 tables of 100,000 rows: wide layers, where a
             GPU library is likeliest to pick split or tiled kernels.

It prints, per shape, how many rows got other bits in any permutation (the property), the
largest difference from the same model's scores on the CPU (how far the device's arithmetic is
from the CPU's, which nothing requires to be 0), and the scoring rate.

Usage: ``python benchmarks/bench_score_order.py [--device auto] [--rows 50000] [--batch-size 4096]``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--batch-size", type=int, default=4096, help="score.batch_size: the padded chunk")
    p.add_argument("--orders", type=int, default=3, help="random permutations besides the sorted one")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    here = Path(__file__).resolve()
    sys.path.insert(0, str(here.parents[1]))
    sys.path.insert(0, str(here.parent))
    import numpy as np
    import torch
    from bench_train import BOTTOM, TOP, criteo_spec

    from recs.config import load_config
    from recs.features.spec import load_spec
    from recs.model.device import resolve_device
    from recs.model.dlrm import build_model

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    on = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"device={device} ({on}), torch {torch.__version__}, rows={args.rows:,}, batch={args.batch_size}")
    cfg = load_config(None)
    shapes = {
        "project": (load_spec(), cfg.train.bottom_mlp, cfg.train.top_mlp),
        "criteo": (criteo_spec(1e5, 1e5), BOTTOM, TOP),
    }
    print(f"{'shape':8s} {'rows with other bits':>22s} {'max |device - cpu|':>19s} {'rows/s':>12s}")
    for name, (spec, bottom, top) in shapes.items():
        model = build_model(spec, bottom, top, ads_head=True, seed=3).eval()
        dense, sparse, is_ad = random_rows(np, spec, args.rows)
        model.fit_normalizer(torch.from_numpy(dense))
        with torch.no_grad():
            model.linear.weight.normal_(generator=torch.Generator().manual_seed(4))
        on_cpu = model.predict_numpy(dense, sparse, is_ad, batch_size=args.batch_size)
        model.to(device)
        score = functools.partial(model.predict_numpy, batch_size=args.batch_size)
        score(dense, sparse, is_ad)  # warm-up: kernels, allocator
        start = time.perf_counter()
        first = score(dense, sparse, is_ad)
        rate = args.rows / (time.perf_counter() - start)
        differ = np.zeros(args.rows, dtype=bool)
        for seed in range(args.orders):
            order = np.random.default_rng(seed).permutation(args.rows)
            again = np.empty_like(first)
            again[order] = score(dense[order], sparse[order], is_ad[order])
            differ |= again != first
        gap = float(np.abs(first.astype(np.float64) - on_cpu).max())
        print(f"{name:8s} {int(differ.sum()):>22,d} {gap:>19.2e} {rate:>12,.0f}")


def random_rows(np: Any, spec: Any, rows: int) -> tuple[Any, Any, Any]:
    """Gaussian dense features, uniform bucket ids (0, the padding bucket, included), 1 in 3 ads."""
    rng = np.random.default_rng(0)
    limits = np.array([f.buckets for f in spec.sparse for _ in range(f.max_len)])
    sparse = (rng.random((rows, spec.sparse_width)) * limits).astype(np.int64)
    dense = (rng.standard_normal((rows, spec.num_dense)) * 3 + 1).astype(np.float32)
    return dense, sparse, np.arange(rows) % 3 == 0


if __name__ == "__main__":
    main()
