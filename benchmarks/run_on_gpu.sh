#!/usr/bin/env bash
# What prunebench checks on a CUDA node, in one go (CI has no GPU, so nothing here runs there):
#   tests    every GPU-marked test (the CUDA pipeline in bf16, CPU vs CUDA masks, LoRA under autocast,
#            semi-structured 2:4 latency, the flash_llm kernel against float64)
#   scale    benchmarks/scale.py on a LLaMA-2-7B-shaped bf16 model built on the GPU: Wanda and SparseGPT
#            with one block on the GPU at a time (offload=cpu) next to the whole model on the GPU
#            (offload=none, the reference repositories' approach): peak CUDA memory, s/block, total
#   kernels  benchmarks/sparse_kernels.py --device cuda: dense vs the sparse kernels on decode shapes
# Usage: bash benchmarks/run_on_gpu.sh [step ...]     (default: tests scale kernels)
# Logs and JSON go to $OUT (default ./gpu-checks); the 13.5 GB model to $MODEL_DIR (outside the repo).
set -uo pipefail
OUT=${OUT:-$PWD/gpu-checks}
MODEL_DIR=${MODEL_DIR:-/tmp/prunebench-llama2-7b-shaped}
CALIB=${CALIB:-32 512}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export WANDB_MODE=${WANDB_MODE:-disabled} PRUNEBENCH_QUIET=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
steps=${*:-tests scale kernels}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt"
status=0
for step in $steps; do
  start=$(date +%s)
  case $step in
    tests)
      # the notebook test imports nbformat/nbclient at collection, which a GPU node's environment
      # may lack, and has no GPU test
      python -m pytest -m gpu -q -p no:cacheprovider --ignore=tests/leaderboard/test_notebook.py tests 2>&1 |
        tee "$OUT/tests.log" || status=1 ;;
    scale)
      { python benchmarks/scale.py build --shape llama2-7b --tokenizer bytes --device cuda --dir "$MODEL_DIR" &&
        python benchmarks/scale.py run --dir "$MODEL_DIR" --device cuda --methods wanda sparsegpt \
          --offload cpu none --calib $CALIB --eval-seq-len 512 --threads "$(nproc)" \
          --results-dir /tmp/prunebench-scale-gpu; } 2>&1 | tee "$OUT/scale.log" || status=1 ;;
    kernels)
      python benchmarks/sparse_kernels.py --device cuda --json "$OUT/sparse_kernels.json" 2>&1 |
        tee "$OUT/sparse_kernels.log" || status=1 ;;
    *) echo "unknown step $step (tests, scale, kernels)"; status=2 ;;
  esac
  echo "== $step: $(( $(date +%s) - start )) s"
done
exit $status
