#!/usr/bin/env bash
# Restarts slurmd on the local cluster, then runs up.sh, which starts anything
# else that is down and waits until the node is back in service.
#   --kill   kill slurmd with SIGKILL first (simulates a crash), as
#            `pkill -9 -x slurmd` would; without it slurmd gets SIGTERM.
# With slurmd already dead, this just brings it (and the rest) back.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$HERE/common.sh"

signal=TERM
for arg in "$@"; do
    case $arg in
    --kill) signal=KILL ;;
    -h | --help)
        echo "usage: $0 [--kill]"
        exit 0
        ;;
    *) die "unknown argument: $arg (usage: $0 [--kill])" 2 ;;
    esac
done
if [[ $(id -u) -ne 0 ]]; then
    die "must run as root; try: sudo bash $0" 2
fi

take_lock 120  # not while an up.sh or down.sh runs (up.sh, below, takes it again)
pid=$(daemon_pid slurmd || true)
if [[ -n $pid ]]; then
    if [[ $signal == KILL ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
    stop_pids 10 "$pid"
    log "stopped slurmd (pid $pid, SIG$signal)"
fi
exec bash "$HERE/up.sh"
