#!/usr/bin/env bash
# Issue 4 depth experiments on SmolLM2-135M (sequential; records in results/experiments/issue4).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
export PRUNEBENCH_DATA_DIR=${PRUNEBENCH_DATA_DIR:-$PWD/../shared/data}
R=results/experiments/issue4
run() { python -m harness.run paths.results_dir=$R calib=c4_quick eval=quick runtime.threads=1 "$@" 2>&1 | grep '^prunebench'; }
run method=dense target=none
run method=shortgpt target=depth_25
for m in angular streamline_cosine reverse random magnitude taylor rel_l1 rel_l2; do
  run method=depth target=depth_25 method.params.metric=$m
done
run method=depth target=depth_25 method.params.metric=ppl_drop +method.params.score_samples=8
run method=depth target=depth_25 method.params.metric=shapley +method.params.score_samples=4
for t in sublayers_attn_8 sublayers_mlp_8 depth_blocks_8; do
  run method=depth target=$t method.params.metric=block_influence
done
