#!/usr/bin/env bash
# Records for issue 6 (CPU, threads=1): bounded-cache KV runs, zero-shot for dense / wanda 50% /
# magnitude 50%, latency for dense and a 2:4 model. Sequential: the CPU is shared.
set -u
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
R="paths.results_dir=results/experiments/issue6 runtime.threads=1"
run() { echo "== $*"; PYTHONPATH=$PWD python -m harness.run "$@" $R 2>&1 | grep -E "^prunebench|Error|error" ; }
for kv in none h2o streaming_llm keyformer; do run method=dense eval=kv_quick kv=$kv; done
run method=wanda target=unstructured_50 eval=kv_quick kv=h2o
for spec in "method=dense" "method=wanda target=unstructured_50" "method=magnitude target=unstructured_50"; do
  run $spec eval=zeroshot_quick
done
for spec in "method=dense" "method=magnitude target=nm_2_4" "method=wanda target=unstructured_50"; do
  run $spec eval=latency_quick
done
