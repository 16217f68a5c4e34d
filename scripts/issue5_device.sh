#!/usr/bin/env bash
# As run on the lent H100 from /work/main/.device/issue5 (code copy + vendored gguf/hydra/omegaconf/antlr4,
# data files, GGUF in two parts). The "extra" section was edited between calls; the records say what ran.
# On a normal machine: drop model=smollm2-135m-gpu and the PYTHONPATH/DATA lines.
# Issue 5 recovery matrix on SmolLM2-135M (device run; records tarred into $OUT).
set -u
D=$PWD/.device/issue5
[ -f /tmp/smol.gguf ] || cat $D/a/gguf.part1 $D/b/gguf.part2 > /tmp/smol.gguf
export PYTHONPATH=$D/a/code:$D/a/site PRUNEBENCH_DATA_DIR=$D/a/data PRUNEBENCH_CACHE=/tmp/pbcache
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline PYTHONUNBUFFERED=1 TQDM_DISABLE=1
cd $D/a/code
R=/tmp/res
run() {
  echo "== $*"
  python -m harness.run paths.results_dir=$R model=smollm2-135m-gpu runtime.dtype=float32 runtime.threads=8 \
    calib=c4_quick eval=quick "$@" > /tmp/last.log 2>&1
  grep -E '^prunebench' /tmp/last.log || tail -5 /tmp/last.log
  cp /tmp/last.log $OUT/last.log; tar czf $OUT/records.tgz -C $R records
  if grep -q ' failed ' /tmp/last.log && [ -z "${KEEP_GOING:-}" ]; then tail -30 /tmp/last.log; exit 1; fi
}
case "${1:-main}" in
main)
  run method=wanda target=unstructured_50 recovery=none
  run method=wanda target=unstructured_50 recovery=lora
  for r in none lora partial kd replace; do run method=shortgpt target=depth_25 recovery=$r; done
  for r in none lora partial kd; do run method=llm_pruner target=width_20 recovery=$r; done
  for r in partial kd; do run method=wanda target=unstructured_50 recovery=$r; done
  run method=dense target=none recovery=none
  ;;
extra)
  run method=shortgpt target=depth_25 recovery=replace recovery.module=ffn
  run method=shortgpt target=depth_25 recovery=kd recovery.teacher_correction_steps=16 recovery.ce_weight=0.5
  run method=llm_pruner target=width_20 recovery=lora recovery.autocast=bfloat16 recovery.gradient_checkpointing=true
  run method=depth target=depth_25 method.params.metric=streamline_cosine recovery=replace
  ;;
esac
case "${1:-main}" in
replace)
  for m in shortgpt; do run method=$m target=depth_25 recovery=replace recovery.loss=token_normalized_mse; done
  run method=shortgpt target=depth_25 recovery=replace recovery.loss=token_normalized_mse recovery.module=ffn
  run method=depth target=depth_25 method.params.metric=streamline_cosine recovery=replace recovery.loss=token_normalized_mse
  run method=depth target=depth_25 method.params.metric=streamline_cosine recovery=replace recovery.lr=1e-4
  run method=depth target=depth_25 method.params.metric=streamline_cosine recovery=kd
  ;;
esac
