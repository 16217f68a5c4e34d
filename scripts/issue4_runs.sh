#!/usr/bin/env bash
# Issue 4 experiments on SmolLM2-135M, sequential, in priority order (records in
# results/experiments/issue4; an ok record is skipped on re-run).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
export PRUNEBENCH_DATA_DIR=${PRUNEBENCH_DATA_DIR:-$PWD/../shared/data}
R=results/experiments/issue4
run() { python -m harness.run paths.results_dir=$R calib=c4_quick eval=quick runtime.threads=1 "$@" 2>&1 | grep '^prunebench'; }
# Already recorded before the merge of main changed conf/config.yaml (hence other run_ids):
#   method=dense target=none; method=shortgpt target=depth_25 (= 8 of 30 blocks, the same cut as
#   depth_blocks_8); method=llm_pruner target=width_20; method=depth target=depth_25 metric=angular
run method=depth target=sublayers_attn_8 method.params.metric=block_influence
run method=depth target=sublayers_mlp_8 method.params.metric=block_influence
run method=minitron target=width_20
run method=minitron target=width_30
# The block metrics all leave the same 22-block architecture, so prefill latency (measured in the
# shortgpt and angular runs) is skipped for them.
for m in reverse random magnitude streamline_cosine rel_l1 rel_l2; do
  run method=depth target=depth_25 method.params.metric=$m +method.params.latency_repeats=0
done
run method=llm_pruner target=width_30
run method=depth target=depth_25 method.params.metric=ppl_drop +method.params.score_samples=4 +method.params.latency_repeats=0
run method=depth target=depth_25 method.params.metric=shapley +method.params.score_samples=4 +method.params.shapley_rounds=1 +method.params.latency_repeats=0
run method=depth target=depth_25 method.params.metric=taylor +method.params.latency_repeats=0
# variants, if time allows
run method=llm_pruner target=width_20 method.params.order=second
run method=llm_pruner target=width_20 method.params.mode=channel
run method=minitron target=width_20 method.params.axes=heads,mlp,hidden
