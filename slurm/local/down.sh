#!/usr/bin/env bash
# Stops the local Slurm cluster started by up.sh: cancels every job, then stops
# slurmd, slurmctld, slurmdbd, MariaDB and munged. Idempotent.
#   --purge   also delete the scratch folder and restore /etc/slurm/slurm.conf
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$HERE/common.sh"
export PATH=$PATH:/usr/sbin:/sbin

purge=0
for arg in "$@"; do
    case $arg in
    --purge) purge=1 ;;
    -h | --help)
        echo "usage: $0 [--purge]"
        exit 0
        ;;
    *) die "unknown argument: $arg (usage: $0 [--purge])" 2 ;;
    esac
done
if [[ $(id -u) -ne 0 ]]; then
    die "must run as root; try: sudo bash $0" 2
fi

take_lock 120
stopped=()

# Jobs first, while slurmctld and slurmd can still clean them up.
if [[ -n $(daemon_pid slurmctld) ]] && command -v squeue >/dev/null; then
    jobs=$(squeue -h -o '%A' 2>/dev/null || true)
    if [[ -n $jobs ]]; then
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        deadline=$((SECONDS + 15))
        while [[ -n $(squeue -h -o '%A' 2>/dev/null || true) ]] && ((SECONDS < deadline)); do
            sleep 0.3
        done
        log "cancelled $(wc -w <<<"$jobs") job(s)"
    fi
fi

# stop NAME GRACE: SIGTERM our NAME daemons, SIGKILL after GRACE seconds.
stop() {
    local name=$1 grace=$2 pids
    pids=$(our_pids "$name" | tr '\n' ' ')
    if [[ -n ${pids// /} ]]; then
        # shellcheck disable=SC2086
        stop_pids "$grace" $pids
        stopped+=("$name")
    fi
}
# Job steps whose slurmd is gone (it was killed) and job processes left behind
# (slurmctld or slurmd died with jobs running) would linger: end them too.
sweep_jobs() {
    local steps orphans
    steps=$(pgrep -x slurmstepd | tr '\n' ' ' || true)
    if [[ -n ${steps// /} && -z $(foreign_pids slurmd) ]]; then
        # shellcheck disable=SC2086
        stop_pids 5 $steps
        stopped+=(slurmstepd)
    fi
    orphans=$(job_pids | tr '\n' ' ')
    if [[ -n ${orphans// /} ]]; then
        # shellcheck disable=SC2086
        stop_pids 5 $orphans
        stopped+=("job-processes")
    fi
}
stop slurmd 10
sweep_jobs
stop slurmctld 10
stop slurmdbd 10
stop mariadbd 30
stop munged 5
sweep_jobs
rm -f "$RUN"/*.pid 2>/dev/null || true

if ((purge)); then
    if [[ -f $SYSTEM_CONF ]] && grep -q "$MARKER" "$SYSTEM_CONF"; then
        rm -f "$SYSTEM_CONF"
        if [[ -f $SYSTEM_CONF.autoresearch-backup ]]; then
            mv "$SYSTEM_CONF.autoresearch-backup" "$SYSTEM_CONF"
            log "restored the previous $SYSTEM_CONF"
        fi
    fi
    if [[ -e $SLURM_DIR/.autoresearch-slurm ]]; then
        rm -rf -- "$SLURM_DIR"  # (its lock file stays: one waiting for it would lock a deleted file)
        log "removed $SLURM_DIR"
    elif [[ -e $SLURM_DIR ]]; then
        die "$SLURM_DIR has no .autoresearch-slurm marker: not removing it"
    fi
fi

if [[ ${#stopped[@]} -eq 0 ]]; then
    log "down (nothing was running for $SLURM_DIR)"
else
    log "down: stopped ${stopped[*]}"
fi
