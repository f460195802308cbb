#!/usr/bin/env bash
# Brings up a real single-node Slurm cluster on this machine for tests and
# demos: munged, MariaDB + slurmdbd (accounting, so sacct works), slurmctld
# and slurmd, with partitions h100 and h200 and typed placeholder GPUs.
# Idempotent: starts only what is down, then waits until the cluster is healthy.
# Everything lives under $AUTORESEARCH_SLURM_DIR (default /tmp/autoresearch-slurm).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$HERE/common.sh"
export PATH=$PATH:/usr/sbin:/sbin
T0=$(date +%s.%N)

# ---------------------------------------------------------------- checks
if [[ $(id -u) -ne 0 ]]; then
    die "must run as root (the daemons run as root/munge/mysql); try: sudo bash $0" 2
fi

declare -A NEED=(
    [munged]=munge [mungekey]=munge [munge]=munge [unmunge]=munge
    [slurmctld]=slurmctld [slurmd]=slurmd [slurmdbd]=slurmdbd
    [sinfo]=slurm-client [sbatch]=slurm-client [sacct]=slurm-client
    [sacctmgr]=slurm-client [scontrol]=slurm-client [squeue]=slurm-client
    [mariadbd]=mariadb-server [mariadb-install-db]=mariadb-server
    [mariadb]=mariadb-server [mariadb-admin]=mariadb-server [pgrep]=procps
)
missing=()
for bin in "${!NEED[@]}"; do
    if ! command -v "$bin" >/dev/null 2>&1; then missing+=("${NEED[$bin]}"); fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
    pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
    die "missing packages: ${pkgs% }; install them with: bash .ci/install-debian.sh" 2
fi

for name in slurmctld slurmd slurmdbd; do
    other=$(foreign_pids "$name" | tr '\n' ' ')
    if [[ -n $other ]]; then
        die "a $name not started by slurm/local/up.sh for $SLURM_DIR is running (pid ${other% }); stop it first (systemctl stop $name, or down.sh with the other AUTORESEARCH_SLURM_DIR)"
    fi
done

# The lua job-submit plugin needs liblua; without it slurmctld would not start.
JOB_SUBMIT="JobSubmitPlugins=lua"
lua_plugin=$(find /usr/lib -name job_submit_lua.so -path '*slurm*' 2>/dev/null || true)
lua_plugin=${lua_plugin%%$'\n'*}
if [[ -z $lua_plugin ]] || [[ $(ldd "$lua_plugin" 2>&1 || true) == *"not found"* ]]; then
    JOB_SUBMIT="# JobSubmitPlugins=lua (disabled by up.sh: the plugin or liblua is missing)"
    log "warning: job_submit/lua unavailable: GPU requests are not pinned to the partition's type"
fi

take_lock 120

HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)

# ---------------------------------------------------------------- layout
mkdir -p "$SLURM_DIR"
chmod 755 "$SLURM_DIR"
touch "$SLURM_DIR/.autoresearch-slurm"
mkdir -p "$ETC" "$LOG" "$RUN" "$SLURM_DIR/state/ctld" "$SLURM_DIR/state/slurmd" "$SLURM_DIR/dev"
chmod 755 "$ETC" "$LOG" "$RUN"
# Placeholder GPUs: character devices with /dev/null's numbers, so that slurmd
# accepts them and sets CUDA_VISIBLE_DEVICES in jobs; plain files where mknod
# is not allowed (GRES still works, the GPU variables are then missing).
dev_changed=
plain_marker=$SLURM_DIR/dev/.plain-files
for i in $(seq 0 15); do
    gpu=$SLURM_DIR/dev/gpu$i
    if [[ -c $gpu ]] || [[ -e $plain_marker && -f $gpu ]]; then continue; fi
    rm -f "$gpu"
    if [[ -e $plain_marker ]] || ! mknod -m 666 "$gpu" c 1 3 2>/dev/null; then
        : >"$plain_marker"
        : >"$gpu"
    fi
    dev_changed=changed
done
install -d -o munge -g munge -m 700 "$MUNGE_DIR"
install -d -o mysql -g mysql -m 750 "$MYSQL_DIR"

if [[ ! -s $ETC/db.pass ]]; then
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$ETC/db.pass")
fi
DB_PASS=$(cat "$ETC/db.pass")

# render TEMPLATE DEST MODE: writes DEST when its content changes; prints
# "changed" in that case.
render() {
    local src=$HERE/templates/$1 dest=$2 mode=$3 tmp
    tmp=$(mktemp "$dest.XXXXXX")
    sed -e "s|@DIR@|$SLURM_DIR|g" -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" \
        -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@CLUSTER@|$CLUSTER|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" \
        -e "s|@DEF_MEM_PER_CPU@|${AUTORESEARCH_SLURM_DEF_MEM_PER_CPU:-256}|g" \
        -e "s|@SLURMD_TIMEOUT@|${AUTORESEARCH_SLURM_SLURMD_TIMEOUT:-30}|g" \
        -e "s|@MIN_JOB_AGE@|${AUTORESEARCH_SLURM_MIN_JOB_AGE:-60}|g" \
        -e "s|@MAX_ARRAY_SIZE@|${AUTORESEARCH_SLURM_MAX_ARRAY_SIZE:-100001}|g" \
        -e "s|@CRED_EXPIRE@|${AUTORESEARCH_SLURM_CRED_EXPIRE:-10}|g" \
        -e "s|^JobSubmitPlugins=lua\$|$JOB_SUBMIT|" \
        "$src" >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$dest"
        echo changed
    fi
}
slurm_changed=$(render slurm.conf.in "$CONF" 644)$(render gres.conf.in "$ETC/gres.conf" 644)
slurm_changed+=$(render job_submit.lua "$ETC/job_submit.lua" 644)
dbd_changed=$(render slurmdbd.conf.in "$ETC/slurmdbd.conf" 600)
my_changed=$(render my.cnf.in "$ETC/my.cnf" 644)

# Clients read /etc/slurm/slurm.conf: install our copy there, keeping a backup
# of a configuration that is not ours.
mkdir -p /etc/slurm
if [[ -f $SYSTEM_CONF ]] && ! grep -q "$MARKER" "$SYSTEM_CONF"; then
    backup=$SYSTEM_CONF.autoresearch-backup
    [[ -e $backup ]] && backup=$backup.$(date +%Y%m%d%H%M%S)
    mv "$SYSTEM_CONF" "$backup"
    log "moved the existing $SYSTEM_CONF to $backup"
fi
if ! cmp -s "$CONF" "$SYSTEM_CONF"; then
    cp "$CONF" "$SYSTEM_CONF.tmp.$$" && mv -f "$SYSTEM_CONF.tmp.$$" "$SYSTEM_CONF"
fi

# Configuration changed under running daemons: restart them (state is kept).
if [[ -n $slurm_changed$dev_changed ]]; then
    pids=$(our_pids slurmd; our_pids slurmctld)
    if [[ -n $pids ]]; then
        log "slurm.conf, gres.conf or the GPU files changed: restarting slurmctld and slurmd"
        # shellcheck disable=SC2086
        stop_pids 15 $pids
    fi
fi
if [[ -n $dbd_changed$my_changed ]]; then
    pids=$(our_pids slurmdbd)
    [[ -z $my_changed ]] || pids="$pids $(our_pids mariadbd)"
    if [[ -n ${pids// /} ]]; then
        log "slurmdbd.conf/my.cnf changed: restarting slurmdbd (and MariaDB)"
        # shellcheck disable=SC2086
        stop_pids 20 $pids
    fi
fi

started=()

# ---------------------------------------------------------------- munge
munge_ok() { munge -n </dev/null | unmunge >/dev/null; }
if ! munge_ok 2>/dev/null; then
    if [[ ! -s $MUNGE_DIR/munge.key ]]; then
        mungekey -c -k "$MUNGE_DIR/munge.key" >/dev/null
    fi
    chown munge:munge "$MUNGE_DIR/munge.key"
    chmod 600 "$MUNGE_DIR/munge.key"
    install -d -o munge -g munge -m 755 /run/munge
    stale=$(daemon_pid munged || true)
    if [[ -n $stale ]]; then stop_pids 5 "$stale"; fi
    runuser -u munge -- munged --key-file="$MUNGE_DIR/munge.key" \
        --log-file="$MUNGE_DIR/munged.log" --pid-file="$MUNGE_DIR/munged.pid" \
        --seed-file="$MUNGE_DIR/munged.seed" </dev/null 9>&- >"$LOG/munged.stderr" 2>&1 ||
        { log_tail "$LOG/munged.stderr"; log_tail "$MUNGE_DIR/munged.log"; die "munged failed to start"; }
    wait_for 15 munge_ok ||
        { log_tail "$MUNGE_DIR/munged.log"; die "munge does not answer (munge -n | unmunge): $LAST_OUT"; }
    started+=(munged)
fi

# ---------------------------------------------------------------- MariaDB
mysql_ok() { mariadb-admin --defaults-file="$ETC/my.cnf" -u root --connect-timeout=2 ping; }
if [[ -z $(daemon_pid mariadbd) ]]; then
    if [[ ! -d $MYSQL_DIR/data/mysql ]]; then
        mariadb-install-db --defaults-file="$ETC/my.cnf" --user=mysql --skip-test-db \
            --auth-root-authentication-method=socket >"$LOG/mysql-install.log" 2>&1 ||
            { log_tail "$LOG/mysql-install.log"; die "mariadb-install-db failed"; }
    fi
    rm -f "$MYSQL_SOCK"
    setsid -f mariadbd --defaults-file="$ETC/my.cnf" </dev/null 9>&- >>"$LOG/mysqld.stderr" 2>&1
    wait_for "$WAIT_S" mysql_ok ||
        { log_tail "$MYSQL_DIR/mysqld.log"; log_tail "$LOG/mysqld.stderr"; die "MariaDB did not answer within ${WAIT_S}s: $LAST_OUT"; }
    started+=(mariadbd)
fi
mariadb --defaults-file="$ETC/my.cnf" -u root <<SQL || die "could not create the slurm database/user"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

# ---------------------------------------------------------------- slurmdbd
dbd_ok() { sacctmgr -n -P show cluster format=cluster; }
if [[ -z $(daemon_pid slurmdbd) ]]; then
    slurmdbd </dev/null 9>&- >>"$LOG/slurmdbd.stderr" 2>&1 ||
        { log_tail "$LOG/slurmdbd.stderr"; log_tail "$LOG/slurmdbd.log"; die "slurmdbd failed to start"; }
    started+=(slurmdbd)
fi
wait_for "$WAIT_S" dbd_ok ||
    { log_tail "$LOG/slurmdbd.log"; die "slurmdbd did not answer within ${WAIT_S}s (sacctmgr show cluster: $LAST_OUT)"; }
if ! dbd_ok 2>/dev/null | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
fi
# QOS for preemption: "high" requeues "normal" and "low" jobs.
qos=$(sacctmgr -n -P show qos format=name) || die "sacctmgr show qos failed"
for q in low high; do
    if ! grep -qx "$q" <<<"$qos"; then
        sacctmgr -i add qos "$q" >/dev/null || die "sacctmgr add qos $q failed"
    fi
done
if [[ $(sacctmgr -n -P show qos high format=preempt) != *normal* ]]; then
    sacctmgr -i modify qos high set preempt=normal,low priority=100 >/dev/null ||
        die "sacctmgr modify qos high failed"
fi

# ---------------------------------------------------------------- slurmctld
ctld_ok() { scontrol ping | grep -q UP; }
if [[ -z $(daemon_pid slurmctld) ]]; then
    slurmctld -f "$CONF" </dev/null 9>&- >>"$LOG/slurmctld.stderr" 2>&1 ||
        { log_tail "$LOG/slurmctld.stderr"; log_tail "$LOG/slurmctld.log"; die "slurmctld failed to start"; }
    started+=(slurmctld)
fi
wait_for "$WAIT_S" ctld_ok ||
    { log_tail "$LOG/slurmctld.log"; die "slurmctld did not answer within ${WAIT_S}s (scontrol ping: $LAST_OUT)"; }

# ---------------------------------------------------------------- slurmd
if [[ -z $(daemon_pid slurmd) ]]; then
    slurmd -f "$CONF" </dev/null 9>&- >>"$LOG/slurmd.stderr" 2>&1 ||
        { log_tail "$LOG/slurmd.stderr"; log_tail "$LOG/slurmd.log"; die "slurmd failed to start"; }
    started+=(slurmd)
fi

# ---------------------------------------------------------------- health
node_state() { (sinfo -h -n "$HOST" -N -o '%T' 2>/dev/null || true) | head -n 1; }
node_usable() {
    local s
    s=$(node_state)
    [[ $s =~ ^(idle|mixed|allocated|completing|planned)\+?$ ]] # + : a job completing
}
parts_ok() {
    local p
    p=$(sinfo -h -o '%R %T %G' 2>/dev/null)
    grep -Eq '^h100 (idle|mixed|allocated|completing|planned)\+? .*gpu:h100:8' <<<"$p" &&
        grep -Eq '^h200 (idle|mixed|allocated|completing|planned)\+? .*gpu:h200:8' <<<"$p"
}
deadline=$((SECONDS + WAIT_S))
resumed=0
until node_usable && parts_ok; do
    state=$(node_state)
    # A node that responds but stays down or drained (after a crash) is
    # returned to service once.
    if ((!resumed)) && [[ -n $(daemon_pid slurmd) && $state =~ ^(down|drained|draining)$ ]]; then
        reason=$( (sinfo -h -n "$HOST" -N -o '%E' 2>/dev/null || true) | head -n 1)
        sleep 1
        if [[ $(node_state) =~ ^(down|drained|draining)$ ]]; then
            log "node $HOST is $state (reason: $reason): resuming it"
            scontrol update nodename="$HOST" state=resume || true
            resumed=1
        fi
    fi
    if ((SECONDS >= deadline)); then
        log_tail "$LOG/slurmd.log"
        log_tail "$LOG/slurmctld.log"
        die "node $HOST not usable after ${WAIT_S}s (state: ${state:-unknown}); see $LOG"
    fi
    sleep 0.3
done
sacct -n -X -S now-1minutes >/dev/null || { log_tail "$LOG/slurmdbd.log"; die "sacct does not answer"; }

elapsed=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
what="already running"
[[ ${#started[@]} -eq 0 ]] || what="started ${started[*]}"
log "up in ${elapsed}s ($what): cluster $CLUSTER, node $HOST ${CPUS} CPUs ${MEM_MB} MB $(node_state), partitions h100 (gpu:h100:8, default) h200 (gpu:h200:8), accounting on; dir $SLURM_DIR"
