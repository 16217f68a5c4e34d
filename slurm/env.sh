# Sourced by start.sh / stop.sh (and usable by people): where the local cluster lives.
# Everything (config, state, spool, logs, MariaDB data, munge socket) is under one temp root.
PRUNEBENCH_SLURM_ROOT=${PRUNEBENCH_SLURM_ROOT:-/tmp/prunebench-slurm}
export SLURM_CONF="$PRUNEBENCH_SLURM_ROOT/etc/slurm.conf"
PATH="$PATH:/usr/sbin:/sbin"
