#!/usr/bin/env bash
# The README's main job: a short sweep on the embedded SmolLM2-135M.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
$PY -m harness.run method=dense target=none
$PY -m harness.run method=magnitude target=unstructured_50
$PY -m harness.run method=wanda target=unstructured_50
$PY -m harness.run method=wanda target=nm_2_4
$PY -m harness.leaderboard --results results
