#!/usr/bin/env bash
# Installs a single-node Slurm (22.05 on Debian bookworm) with munge and accounting (slurmdbd +
# MariaDB) for tests and development. Idempotent: does nothing when the binaries are present.
# Accounting is not optional: submitit reads job states with `sacct`; without it cancelled or
# hard-killed jobs stay UNKNOWN and `job.result()` can block forever.
set -euo pipefail
need=(slurmctld slurmd sbatch sacct slurmdbd munged mariadbd)
missing=0
for b in "${need[@]}"; do
  command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing=1
done
if [ "$missing" = 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Daemons must not be started by the package scripts (no systemd here; start.sh runs them itself).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
