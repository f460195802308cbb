# shellcheck shell=bash
# Optional: `source slurm/local/env.sh` points Slurm clients at the scratch
# copy of slurm.conf. Not needed normally: up.sh installs the same file as
# /etc/slurm/slurm.conf, which clients read by default.
export SLURM_CONF=${AUTORESEARCH_SLURM_DIR:-/tmp/autoresearch-slurm}/etc/slurm.conf
