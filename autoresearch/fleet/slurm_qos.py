"""The QOS a partition's jobs would run under, and its MaxWall, checked at the start.

A `time_limit_min` above the QOS's MaxWall holds every job pending for ever
(QOSMaxWallDurationPerJobLimit), which the fleet could only say once jobs pend; sacctmgr tells it
before anything is sent. Where accounting does not answer, or does not enforce limits, nothing is
checked: sbatch and the pending reasons still say it.
"""

from __future__ import annotations

import getpass

from autoresearch.config import PartitionConfig
from autoresearch.fleet.slurm_states import query, slurm_minutes, slurm_setting

# One row per association of the user: its default account first, then the association's own.
ASSOC_FIELDS = "format=DefaultAccount,Account,Partition,DefaultQOS,QOS"


def over_qos_wall(partitions: dict[str, PartitionConfig]) -> list[str]:
    """The configured time limits above the MaxWall of the QOS their jobs would run under (the
    partition's `qos`, else its account's default QOS), as config problems. [] when sacctmgr
    cannot tell or Slurm does not enforce limits (AccountingStorageEnforce)."""
    if "limits" not in slurm_setting("AccountingStorageEnforce"):
        return []
    assocs = query(["sacctmgr", "-n", "-P", "show", "user", getpass.getuser(), "withassoc", ASSOC_FIELDS])
    walls = query(["sacctmgr", "-n", "-P", "show", "qos", "format=Name,MaxWall"])
    if not assocs or walls is None:
        return []
    wall = dict(line.strip().split("|", 1) for line in walls.splitlines() if "|" in line)
    rows = [fields for line in assocs.splitlines() if len(fields := line.strip().split("|")) == 5]
    problems = []
    for name, part in partitions.items():
        qos = part.qos or default_qos(rows, part.account, part.partition or name)
        allowed = slurm_minutes(wall.get(qos, ""))
        if allowed is not None and part.time_limit_min > allowed:
            problems.append(
                f"cluster.partitions.{name}.time_limit_min={part.time_limit_min}: above the MaxWall of "
                f"QOS {qos} {wall[qos]} (sacctmgr): set it to {int(allowed)} at most"
            )
    return problems


def default_qos(rows: list[list[str]], account: str, partition: str) -> str:
    """The QOS a job of `account` (or the user's default account) runs under without asking for
    one: its association's default QOS (the one for the partition first), or the only QOS it may
    use; '' when that cannot be told."""
    account = account or (rows[0][0] if rows else "")
    mine = [r for r in rows if r[1] == account and r[2] in (partition, "")]
    for _, _, _, default, allowed in sorted(mine, key=lambda r: r[2] != partition):
        return default or (allowed if "," not in allowed else "")
    return ""
