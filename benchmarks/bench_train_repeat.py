"""Does training the same batches twice give the same weights?  CPU or GPU.

A rerun or backfill of a date retrains its model, and the scores it writes must match the first
run's, so the model must come out bit for bit the same. This trains ``recs.train.train`` twice
from the same seed on the same batches (planted-signal data over small tables, so every batch
repeats rows: the case where parallel scatter-adds could sum in another order) and prints how
many parameter tensors differ and by how much, with the seconds per training.

Usage: ``python benchmarks/bench_train_repeat.py [--device auto] [--batch-size 2048] [--precision auto]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--batches", type=int, default=40, help="training batches per epoch")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rows", type=int, default=1000, help="rows per embedding table")
    p.add_argument("--precision", default="auto", help="auto | fp32 | bf16")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    here = Path(__file__).resolve()
    sys.path.insert(0, str(here.parents[1]))
    sys.path.insert(0, str(here.parent))
    import torch
    from bench_train import BOTTOM, TOP, criteo_spec, planted_batches

    from recs.model.device import resolve_device
    from recs.model.dlrm import build_model
    from recs.train.loop import TrainSettings, train

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    spec = criteo_spec(args.rows, args.rows)
    make = planted_batches(torch, spec, args.batch_size, device)
    train_b, val_b = make(args.batches, seed=1), make(8, seed=2)
    shape = f"batch={args.batch_size} x {args.batches} x {args.epochs} epochs"
    print(f"device={device}, precision={args.precision}, {shape}")
    settings = TrainSettings(
        epochs=args.epochs, patience=args.epochs, progress=False, device=str(device), precision=args.precision
    )
    states, seconds = [], []
    for _ in range(2):
        model = build_model(spec, BOTTOM, TOP, ads_head=True, seed=0)
        start = time.perf_counter()
        result = train(model, train_b, val_b, settings)
        seconds.append(time.perf_counter() - start)
        states.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    differ = [k for k in states[0] if not torch.equal(states[0][k], states[1][k])]
    gaps = (float((states[0][k].double() - states[1][k].double()).abs().max()) for k in differ)
    gap = max(gaps, default=0.0)
    print(f"tensors that differ between the two trainings: {len(differ)} of {len(states[0])} (max {gap:.2e})")
    if differ:
        print("  " + ", ".join(differ[:12]))
    auc = result.best_metrics["val_auc"]
    print(f"seconds per training: {seconds[0]:.2f}, {seconds[1]:.2f}; val AUC {auc:.4f}")


if __name__ == "__main__":
    main()
