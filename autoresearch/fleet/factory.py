"""Build the fleet a cluster config describes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from autoresearch.config import ClusterConfig, backstop_grace
from autoresearch.fleet.base import Fleet, Pool
from autoresearch.fleet.gpus import gpu_name, listed_gpus, visible_gpus, warn_of_device_order
from autoresearch.fleet.local import LocalFleet


@dataclass(frozen=True)
class FleetPlan:
    """What a start's fleet checks found: the pools it will have (and, on this machine, the GPUs
    its slots get). Made without writing anything, so a dry run (`autoresearch check`) stops here;
    building the fleet (`build_fleet`) may write (a workers queue's folders)."""

    cluster: ClusterConfig
    pools: dict[str, Pool]
    gpus: list[str] = field(default_factory=list)
    # A Slurm cluster's settings (`scontrol show config`), read once for the checks and the fleet.
    settings: dict[str, str] = field(default_factory=dict)


def plan_local_fleet(cluster: ClusterConfig, require_gpu: bool = False) -> FleetPlan:
    ((name, part),) = cluster.partitions.items()  # one, as config_check requires
    listed = [] if cluster.devices == "cpu" else listed_gpus()  # read once: its warnings said once
    gpus = [] if cluster.devices == "cpu" else visible_gpus(listed)
    if require_gpu and not gpus:
        shown = "is set to its CPU (cluster.devices=cpu)" if cluster.devices == "cpu" else "shows no GPU"
        raise ValueError(
            f"this campaign trains on GPUs (campaign.require_gpu), and this machine {shown}: "
            "run it on a GPU machine or with cluster=slurm; on a CPU, +campaign=demo "
            "(or campaign.require_gpu=false to train this one on the CPU anyway)"
        )
    if gpus:
        warn_of_device_order(gpus)
        slots = part.slots or len(gpus)
        gpu_type = part.gpu_type if part.gpu_type not in ("", "auto") else gpu_name(gpus, listed)
    else:
        slots = part.slots or cluster.cpu_slots
        gpu_type = "cpu"
    threads = cluster.threads_per_slot or max(1, (os.cpu_count() or 1) // slots)
    pool = Pool(name, slots, gpu_type, part.price_per_gpu_hour, part.partition or name, threads)
    return FleetPlan(cluster, {name: pool}, gpus)


def plan_fleet(cluster: ClusterConfig, require_gpu: bool = False) -> FleetPlan:
    """Every check of the fleet a start makes, raising ValueError in one line: a GPU for a GPU
    campaign here; Slurm's commands, partitions, GRES and QOS wall limits on a cluster."""
    if cluster.kind == "local":
        return plan_local_fleet(cluster, require_gpu)
    if cluster.kind == "slurm":
        from autoresearch.fleet.slurm import missing_commands_problem, slurm_pool
        from autoresearch.fleet.slurm_qos import accounting_problems
        from autoresearch.fleet.slurm_states import cluster_settings, config_problems

        if problem := missing_commands_problem():
            raise ValueError(problem)
        settings = cluster_settings()
        problems = config_problems(cluster.partitions)  # (none found where sinfo cannot tell)
        # A partition Slurm lacks is said once: its account is then not looked up there.
        known = {
            name: part
            for name, part in cluster.partitions.items()
            if not any(problem.startswith(f"cluster.partitions.{name}.partition=") for problem in problems)
        }
        if problems := problems + accounting_problems(known, settings):  # (none where sacctmgr cannot tell)
            raise ValueError("; ".join(problems))
        pools = {
            name: slurm_pool(name, part, cluster.max_queued) for name, part in cluster.partitions.items()
        }
        return FleetPlan(cluster, pools, settings=settings)
    raise ValueError(f"unknown cluster.kind {cluster.kind!r} (local or slurm)")


def build_fleet(plan: FleetPlan, deadline_s: float, campaign_dir: str) -> Fleet:
    """The fleet `plan_fleet` checked."""
    if plan.cluster.kind == "slurm":
        from autoresearch.fleet.slurm import SlurmFleet

        return SlurmFleet(plan.cluster, deadline_s, campaign_dir, plan.settings)
    (pool,) = plan.pools.values()
    # The runner ends train.py at deadline_s; the fleet's own kill is the backstop, a grace later.
    return LocalFleet(
        pool, plan.gpus, pool.threads, deadline_s + backstop_grace(plan.cluster), campaign_dir=campaign_dir
    )
