#!/usr/bin/env bash
# Issue 4 width experiments on SmolLM2-135M (sequential; records in results/experiments/issue4).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
export PRUNEBENCH_DATA_DIR=${PRUNEBENCH_DATA_DIR:-$PWD/../shared/data}
R=results/experiments/issue4
run() { python -m harness.run paths.results_dir=$R calib=c4_quick eval=quick runtime.threads=1 "$@" 2>&1 | grep '^prunebench'; }
for t in width_20 width_30; do
  run method=llm_pruner target=$t
  run method=minitron target=$t
done
# variants, if time allows
run method=llm_pruner target=width_20 method.params.order=second
run method=llm_pruner target=width_20 method.params.importance=vector
run method=llm_pruner target=width_20 method.params.mode=channel
run method=minitron target=width_20 method.params.axes=heads,mlp,hidden
