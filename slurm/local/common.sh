# shellcheck shell=bash
# shellcheck disable=SC2034  # the settings are used by the scripts that source this file
# Shared settings and helpers for slurm/local/{up,down,restart-slurmd}.sh.
# Sourced, not run.

SLURM_DIR=${AUTORESEARCH_SLURM_DIR:-/tmp/autoresearch-slurm}
SLURM_DIR=${SLURM_DIR%/}
if [[ ! $SLURM_DIR =~ ^/[A-Za-z0-9._/-]+$ ]]; then  # slurm.conf has no quoting for paths
    echo "slurm-local: error: AUTORESEARCH_SLURM_DIR must be an absolute path of letters, digits, . _ - and /, not '$SLURM_DIR'" >&2
    exit 2
fi
CLUSTER=${AUTORESEARCH_SLURM_CLUSTER:-autoresearch}
DB_PORT=${AUTORESEARCH_SLURM_DB_PORT:-3307}
CTLD_PORT=${AUTORESEARCH_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${AUTORESEARCH_SLURM_SLURMD_PORT:-6818}
DBD_PORT=${AUTORESEARCH_SLURM_DBD_PORT:-6819}
WAIT_S=${AUTORESEARCH_SLURM_TIMEOUT:-60}

ETC=$SLURM_DIR/etc
CONF=$ETC/slurm.conf
LOG=$SLURM_DIR/log
RUN=$SLURM_DIR/run
MUNGE_DIR=$SLURM_DIR/munge
MYSQL_DIR=$SLURM_DIR/mysql
MYSQL_SOCK=$MYSQL_DIR/mysqld.sock
SYSTEM_CONF=/etc/slurm/slurm.conf
MARKER="autoresearch-local-slurm"

# The daemons read the scratch copy; clients read /etc/slurm/slurm.conf.
export SLURM_CONF=$CONF

log() { echo "slurm-local: $*"; }
die() {
    local code=${2:-1}
    echo "slurm-local: error: $1" >&2
    exit "$code"
}

# Last lines of a log file, indented, for error messages.
log_tail() {
    local file=$1 n=${2:-15}
    if [[ -s $file ]]; then
        echo "---- last $n lines of $file ----" >&2
        tail -n "$n" "$file" | sed 's/^/    /' >&2
    else
        echo "---- $file is empty or missing ----" >&2
    fi
}

# True when process $1 exists and is not a zombie (a killed daemon stays a
# zombie until init reaps it; in some containers that takes a while).
alive() {
    local stat
    stat=$(cat 2>/dev/null "/proc/$1/stat") || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# True when process $1 was started for this scratch folder (its command line
# or environment names it).
is_ours() {
    local pid=$1
    [[ -r /proc/$pid/cmdline ]] || return 1
    if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$SLURM_DIR/"; then
        return 0
    fi
    tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF -- "SLURM_CONF=$CONF"
}

# Pids of running processes named exactly $1 that belong to this scratch folder.
our_pids() {
    local name=$1 pid
    for pid in $(pgrep -x "$name" || true); do
        if alive "$pid" && is_ours "$pid"; then echo "$pid"; fi
    done
}

# Pids of running processes named exactly $1 that do not.
foreign_pids() {
    local name=$1 pid
    for pid in $(pgrep -x "$name" || true); do
        if alive "$pid" && ! is_ours "$pid"; then echo "$pid"; fi
    done
}

# The pid of our running daemon $1 (process name), or nothing.
daemon_pid() {
    our_pids "$1" | head -n 1
}

# Wait up to $1 seconds for the command "$2..." to succeed. On failure the
# last lines it printed are in LAST_OUT.
LAST_OUT=
wait_for() {
    local limit=$1
    shift
    local deadline=$((SECONDS + limit))
    while ((SECONDS < deadline)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.3
    done
    if LAST_OUT=$("$@" 2>&1); then return 0; fi
    LAST_OUT=$(tail -n 3 <<<"$LAST_OUT" | tr '\n' ' ')
    return 1
}

# Send SIGTERM to the pids given, then SIGKILL whatever is left after $1 s.
stop_pids() {
    local grace=$1
    shift
    [[ $# -gt 0 ]] || return 0
    kill -TERM "$@" 2>/dev/null || true
    local deadline=$((SECONDS + grace)) pid running
    while ((SECONDS < deadline)); do
        running=0
        for pid in "$@"; do
            if alive "$pid"; then running=1; fi
        done
        ((running)) || return 0
        sleep 0.2
    done
    kill -KILL "$@" 2>/dev/null || true
    sleep 0.2
}

# Pids of job processes launched by this cluster (their environment has our
# SLURM_CONF and a SLURM_JOB_ID), except this shell and its ancestors.
job_pids() {
    local keep=" " p=$$ pid env
    while [[ $p -gt 1 ]]; do
        keep+="$p "
        p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null || echo 1)
    done
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        [[ $keep == *" $pid "* ]] && continue
        alive "$pid" || continue
        env=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ") || continue
        if grep -qxF -- "SLURM_CONF=$CONF" <<<"$env" && grep -q '^SLURM_JOB_ID=' <<<"$env"; then
            echo "$pid"
        fi
    done
}

# Serialise up.sh and down.sh runs (fd 9 holds the lock; daemons are started
# with 9>&- so that they do not keep it).
take_lock() {
    mkdir -p "$(dirname "$SLURM_DIR")"
    exec 9>"$SLURM_DIR.lock"
    if ! flock -w "${1:-120}" 9; then
        die "another up.sh/down.sh holds $SLURM_DIR.lock"
    fi
}
