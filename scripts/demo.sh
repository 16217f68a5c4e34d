#!/usr/bin/env bash
# The README's main job: the `demo` suite on the embedded SmolLM2-135M, then the leaderboard.
# Cells with an ok record are skipped, so a re-run only fills gaps.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
status=0
$PY -m harness.sweep suite=demo paths.results_dir=results "$@" || status=$?   # exit 1 lists failed cells; still build the board
$PY -m harness.leaderboard --results results
exit $status
