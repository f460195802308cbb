#!/usr/bin/env bash
# Installs the Debian packages the tests need: the local single-node Slurm cluster's
# (slurm/local/up.sh), and a PostgreSQL server (the database-storage tests start their own,
# in a temporary folder). Run as root on Debian 12; skips what is already there.
set -euo pipefail

# procps (pgrep) is on every full Debian install but not in minimal images; python3-venv (make
# install's venv), git (the frontier's lineage) and make are not in every image either.
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server procps postgresql python3-venv git make)

if [[ $(id -u) -ne 0 ]]; then
    echo "install-debian: must run as root (try: sudo bash $0)" >&2
    exit 2
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-debian: all packages already installed (${PACKAGES[*]})"
    exit 0
fi

echo "install-debian: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Keep the packages' own init scripts from starting daemons in a container or
# CI runner: up.sh and the tests start what they need, under scratch folders.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    created_policy=1
fi
cleanup() { if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT

apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}"
# policy-rc.d only holds the services back during the install: on a machine run by systemd, the
# units of the packages installed here would start at the next boot, and up.sh would then find
# daemons it did not start. Disable those (only those this script installed).
if [[ -d /run/systemd/system ]]; then
    declare -A unit=([slurmctld]=slurmctld [slurmd]=slurmd [slurmdbd]=slurmdbd [munge]=munge
        [mariadb-server]=mariadb [postgresql]=postgresql)
    for pkg in "${missing[@]}"; do
        if [[ -n ${unit[$pkg]:-} ]]; then
            systemctl disable --quiet "${unit[$pkg]}" 2>/dev/null || true
        fi
    done
fi
echo "install-debian: done"
