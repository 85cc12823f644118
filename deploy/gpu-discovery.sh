#!/usr/bin/env bash
# Spark GPU discovery script (spark.executor.resource.gpu.discoveryScript): prints the GPUs
# this executor may use as {"name": "gpu", "addresses": ["0", ...]}.
# Under YARN/k8s GPU isolation nvidia-smi only lists the devices given to this container.
set -euo pipefail
ids=$(nvidia-smi --query-gpu=index --format=csv,noheader | tr -d ' ' | paste -sd, -)
printf '{"name": "gpu", "addresses": [%s]}\n' "$(echo "$ids" | sed -E 's/([^,]+)/"\1"/g')"
