#!/usr/bin/env bash
# The README's test command (what .ci/run calls after installing).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
exec ${PYTHON:-python3} -m pytest -q -p no:cacheprovider "$@" tests
