"""The MaxWall a partition's jobs would run under, and an account or QOS sbatch would refuse them
(`access_problems`), checked at the start.

A `time_limit_min` above it holds every job pending for ever (QOSMaxWallDurationPerJobLimit,
AssocMaxWallDurationPerJobLimit), which the fleet could only say once jobs pend; scontrol and
sacctmgr tell it before anything is sent. Slurm takes the first MaxWall set, in its order of
limits: the partition's own QOS (slurm.conf's `QOS=`), the job's QOS (the two swapped where the
job's QOS has the OverPartQOS flag), then the association (its own, or inherited from its
account). Where accounting does not answer, or does not enforce limits, nothing is checked:
sbatch and the pending reasons still say it.
"""

from __future__ import annotations

import getpass
import logging

from autoresearch.config import PartitionConfig
from autoresearch.fleet.slurm_states import query, slurm_minutes

log = logging.getLogger("autoresearch")

# One row per association of the user: its default account first, then the association's own.
ASSOC_FIELDS = "format=DefaultAccount,Account,Partition,DefaultQOS,QOS,MaxWall"


# AccountingStorageEnforce's words under which sbatch refuses a job whose account the user has no
# association with (Invalid account or account/partition combination specified): "limits", "qos"
# and "safe" each imply "associations".
ENFORCES_ASSOCIATIONS = ("associations", "limits", "qos", "safe")


def accounting_problems(partitions: dict[str, PartitionConfig], settings: dict[str, str]) -> list[str]:
    """The accounts and QOS sbatch would refuse every job of (`access_problems`), else the
    configured time limits above the MaxWall their jobs would run under, as config problems. []
    when sacctmgr cannot tell or Slurm does not enforce associations, or limits for the MaxWall
    (`settings`' AccountingStorageEnforce)."""
    enforced = settings.get("AccountingStorageEnforce", "")
    if not any(word in enforced for word in ENFORCES_ASSOCIATIONS):
        return []
    assocs = query(["sacctmgr", "-n", "-P", "show", "user", getpass.getuser(), "withassoc", ASSOC_FIELDS])
    qos_rows = query(["sacctmgr", "-n", "-P", "show", "qos", "format=Name,MaxWall,Flags"])
    if not assocs or qos_rows is None:
        return []
    qos_table = {f[0]: f[1:] for line in qos_rows.splitlines() if len(f := line.strip().split("|")) == 3}
    rows = [fields for line in assocs.splitlines() if len(fields := line.strip().split("|")) == 6]
    if refused := access_problems(partitions, rows, qos_table, "qos" in enforced.split(",")):
        return refused
    if "limits" not in enforced:
        return []
    own_qos = partition_qoses()
    problems = []
    for name, part in partitions.items():
        walls = {}
        for slurm_name in (part.partition or name).split(","):  # (sbatch -p takes a list)
            row = association(rows, part.account, slurm_name)
            job_qos = part.qos or default_qos(row)
            walls[slurm_name] = max_wall_in_force(qos_table, own_qos.get(slurm_name, ""), job_qos, row)
        problems += above_every_wall(name, part.time_limit_min, walls)
    return problems


def access_problems(
    partitions: dict[str, PartitionConfig],
    rows: list[list[str]],
    qos_table: dict[str, list[str]],
    qos_enforced: bool,
) -> list[str]:
    """A partition's `account` the user has no association with in any partition of its list, and
    (where Slurm enforces QOS access) a `qos` Slurm lacks or that association may not use: sbatch
    would refuse each of its jobs, and each would be lost."""
    problems = []
    for name, part in partitions.items():
        slurm_names = (part.partition or name).split(",")
        found = {p: row for p in slurm_names if (row := association(rows, part.account, p)) is not None}
        if part.account and not found:
            have = ", ".join(sorted({r[1] for r in rows})) or "none"
            where = f" in partition {part.partition or name}" if any(r[2] for r in rows) else ""
            problems.append(
                f"cluster.partitions.{name}.account={part.account}: you have no association with account "
                f"{part.account}{where} (sacctmgr lists your accounts: {have}); sbatch would refuse every job"
            )
            continue
        if not (part.qos and qos_enforced):
            continue
        if part.qos not in qos_table:
            problems.append(
                f"cluster.partitions.{name}.qos={part.qos}: Slurm has no such QOS (sacctmgr lists "
                f"{', '.join(sorted(qos_table))}); sbatch would refuse every job"
            )
        elif found and all(row[4] and part.qos not in row[4].split(",") for row in found.values()):
            row = next(iter(found.values()))
            problems.append(
                f"cluster.partitions.{name}.qos={part.qos}: the association of account {row[1]} may not "
                f"use it (it may use {row[4]}); sbatch would refuse every job"
            )
    return problems


def above_every_wall(name: str, limit_min: int, walls: dict[str, tuple[str, str]]) -> list[str]:
    """A time limit above the MaxWall (whose, wall) in force in every partition the jobs may go
    to, as a config problem naming each. Slurm starts a job of several partitions in one whose
    limits admit it, so a partition that does not only loses those jobs: said in a warning."""
    over = {}
    for partition, (whose, wall) in walls.items():
        allowed = slurm_minutes(wall)
        if allowed is not None and limit_min > allowed:
            where = f" in partition {partition}" if len(walls) > 1 else ""
            over[partition] = (f"{whose} {wall}{where}", allowed)
    if not over:
        return []
    said = " and of ".join(whose for whose, _ in over.values())
    setting = f"cluster.partitions.{name}.time_limit_min={limit_min}: above the MaxWall of {said} (sacctmgr)"
    if len(over) < len(walls):
        others = ",".join(p for p in walls if p not in over)
        log.warning("%s: its jobs run only in partition %s", setting, others)
        return []
    return [f"{setting}: set it to {int(max(allowed for _, allowed in over.values()))} at most"]


def max_wall_in_force(
    qos_table: dict[str, list[str]], partition_qos: str, job_qos: str, row: list[str] | None
) -> tuple[str, str]:
    """The first MaxWall set in Slurm's order of limits, and whose it is in words; ('', '') for none."""
    by_qos = [(f"the partition's own QOS {partition_qos}", partition_qos), (f"QOS {job_qos}", job_qos)]
    if "OverPartQOS" in qos_table.get(job_qos, ["", ""])[1]:
        by_qos.reverse()
    walls = [(whose, qos_table.get(qos, [""])[0]) for whose, qos in by_qos if qos]
    if row is not None:
        walls.append((f"the association of account {row[1]}", row[5]))
    return next(((whose, wall) for whose, wall in walls if wall), ("", ""))


def partition_qoses() -> dict[str, str]:
    """Each partition's own QOS (slurm.conf's `QOS=`), by name; {} when scontrol cannot tell."""
    found = {}
    for line in (query(["scontrol", "-o", "show", "partition"]) or "").splitlines():
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        if fields.get("QoS", "N/A") != "N/A":
            found[fields.get("PartitionName", "")] = fields["QoS"]
    return found


def association(rows: list[list[str]], account: str, partition: str) -> list[str] | None:
    """The association a job of `account` (or the user's default account) runs under: the one for
    the partition, else the account-wide one; None when there is none."""
    account = account or (rows[0][0] if rows else "")
    mine = [r for r in rows if r[1] == account and r[2] in (partition, "")]
    return min(mine, key=lambda r: r[2] != partition) if mine else None


# The QOS Slurm gives a job that asks for none when its association has no default and several
# QOS (slurmctld's job_mgr.c; seen on the local cluster: a job of an association allowed only
# low,high ran under normal). Where the site enforces QOS access and the association lacks it,
# sbatch refuses such jobs (Invalid qos specification), which the partition's `qos` avoids.
FALLBACK_QOS = "normal"


def default_qos(row: list[str] | None) -> str:
    """The QOS a job runs under without asking for one: its association's default QOS (its own or
    inherited), else the only QOS it may use, else Slurm's fallback; '' without an association."""
    if row is None:
        return ""
    default, allowed = row[3], row[4]
    return default or (allowed if allowed and "," not in allowed else FALLBACK_QOS)
