#!/usr/bin/env bash
# Issue 3 done-when grid on SmolLM2-135M, run sequentially (CPU is shared): one run per line of
# the cell file given as $1 (Hydra overrides), all with calib=c4_quick eval=quick threads=1.
set -u
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
export PYTHONPATH=$PWD PRUNEBENCH_DATA_DIR=${PRUNEBENCH_DATA_DIR:-/work/shared/data}
while read -r cell; do
  [ -z "$cell" ] && continue
  echo "=== $(date -u +%T) $cell"
  python -m harness.run $cell calib=c4_quick eval=quick runtime.threads=1 \
    paths.results_dir=results/experiments/issue3 2>&1 | grep -E "prunebench:|Error|error" | tail -3
done < "$1"
