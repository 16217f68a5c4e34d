#!/usr/bin/env bash
# Stops the daemons slurm/start.sh started (by their pid files). --wipe also deletes the state
# (job ids then restart at 1: never reuse a submitit folder across a wipe).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env.sh"
R=$PRUNEBENCH_SLURM_ROOT
for d in slurmd slurmctld slurmdbd mysqld munged; do
  pidf="$R/run/$d.pid"
  if [ -s "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    pid=$(cat "$pidf")
    kill "$pid"
    for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidf"
done
if [ "${1:-}" = "--wipe" ]; then
  rm -rf "$R"
fi
echo "slurm/stop.sh: stopped"
