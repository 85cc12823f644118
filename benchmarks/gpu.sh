#!/usr/bin/env bash
# GPU figures in one run (about 5 minutes on one H100):
#   1. DLRM training and inference throughput on the Criteo-Kaggle shape (bench_train.py), beside
#      the plain-PyTorch variants on the same card, at batch 2048 and 16384;
#   2. reproducibility on the GPU: two trainings of the same batches (bench_train_repeat.py) and
#      a row's score in other orders (bench_score_order.py) must agree bit for bit;
#   3. a demo-sized pipeline (bench_pipeline.py): Spark on the CPUs, training and scoring on the
#      GPU through the same code path as on CPU (train.device and score.device = auto);
#   4. the scoring job beside the raw forward pass on the same rows (bench_score.py).
# Parts 1 and 2 need torch alone; 3 and 4 need Java and Spark.
#
# Installs nothing: run it in the environment of the README's set-up (pip install -e ".[dev]").
# A machine without Maven access needs Delta's JARs in its Ivy cache: RECS_IVY_CACHE=DIR copies a
# cache from a machine that has run recs once (its ~/.ivy2.5.2) into place first.
#
# usage: benchmarks/gpu.sh [--reference DLRM_CHECKOUT]   (PYTHON=... picks the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
REF_ARGS=()
if [ "${1:-}" = "--reference" ] && [ -n "${2:-}" ]; then
    REF_ARGS=(--reference "$2")
fi

"$PY" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("benchmarks/gpu.sh: torch sees no CUDA device (torch.cuda.is_available() is False)")
p = torch.cuda.get_device_properties(0)
print(f"# {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF

if [ -n "${RECS_IVY_CACHE:-}" ] && [ ! -d "$HOME/.ivy2.5.2" ]; then
    cp -r "$RECS_IVY_CACHE" "$HOME/.ivy2.5.2"
fi

export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$SECONDS

echo "## 1. training and inference throughput"
for batch in 2048 16384; do
    timeout 150 "$PY" benchmarks/bench_train.py --device cuda --batch-size "$batch" --steps 50 --repeats 5 \
        ${REF_ARGS[@]+"${REF_ARGS[@]}"}
done

echo "## 2. reproducibility: the same batches, the same weights; any order, the same scores"
for precision in fp32 auto; do
    timeout 60 "$PY" benchmarks/bench_train_repeat.py --device cuda --precision "$precision"
done
timeout 60 "$PY" benchmarks/bench_score_order.py --device cuda --rows 100000

echo "## 3. demo-sized pipeline: train and score on the GPU"
timeout 240 "$PY" benchmarks/bench_pipeline.py --users 800 --items 300 --days 4 --workdir "$work/pipeline"

echo "## 4. the scoring job vs the raw forward pass"
timeout 120 "$PY" benchmarks/bench_score.py --lakehouse "$work/pipeline/lakehouse" --date 2026-01-04 --repeats 2

echo "# gpu.sh done in $((SECONDS - started)) s"
