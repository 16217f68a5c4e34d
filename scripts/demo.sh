#!/usr/bin/env bash
# The README's main job: the `demo` suite on the embedded SmolLM2-135M, pruned and evaluated for real
# into its own results directory (demo-results/, never the committed record sets), then its leaderboard.
# Cells with an ok record are skipped, so a second `make demo` reuses the first one's records and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
OUT=${PRUNEBENCH_DEMO_DIR:-demo-results}
count() { { find "$OUT/records" -maxdepth 1 -name '*.json' 2>/dev/null || true; } | wc -l; }
before=$(count)
if [ "$before" -gt 0 ]; then
  echo "demo: reusing $before records of a previous make demo in $OUT/records (delete $OUT to rerun)"
fi
status=0
$PY -m harness.sweep suite=demo paths.results_dir="$OUT" "$@" || status=$?   # exit 1 lists failed cells
$PY -m leaderboard --results "$OUT"
after=$(count)
echo "demo: $((after - before)) new records, $before reused; page: $OUT/leaderboard/index.html"
exit $status
