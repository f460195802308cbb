"""Build the fleet a cluster config describes."""

from __future__ import annotations

import os

from autoresearch.config import ClusterConfig, backstop_grace
from autoresearch.fleet.base import UNNAMED_GPU, Fleet, Pool
from autoresearch.fleet.local import LocalFleet, nvidia_smi, visible_gpus


def gpu_name() -> str:
    names = nvidia_smi("name")
    return names[0] if names else UNNAMED_GPU


def make_local_fleet(cluster: ClusterConfig, deadline_s: float, require_gpu: bool = False) -> LocalFleet:
    ((name, part),) = cluster.partitions.items()  # one, as config_check requires
    gpus = [] if cluster.devices == "cpu" else visible_gpus()
    if require_gpu and not gpus:
        shown = "is set to its CPU (cluster.devices=cpu)" if cluster.devices == "cpu" else "shows no GPU"
        raise ValueError(
            f"this campaign trains on GPUs (campaign.require_gpu), and this machine {shown}: "
            "run it on a GPU machine or with cluster=slurm; on a CPU, +campaign=demo "
            "(or campaign.require_gpu=false to train this one on the CPU anyway)"
        )
    if gpus:
        slots = part.slots or len(gpus)
        gpu_type = part.gpu_type if part.gpu_type not in ("", "auto") else gpu_name()
    else:
        slots = part.slots or cluster.cpu_slots
        gpu_type = "cpu"
    threads = cluster.threads_per_slot or max(1, (os.cpu_count() or 1) // slots)
    pool = Pool(name, slots, gpu_type, part.price_per_gpu_hour, part.partition or name, threads)
    # The runner ends train.py at deadline_s; the fleet's own kill is the backstop, a grace later.
    return LocalFleet(pool, gpus, threads, deadline_s + backstop_grace(cluster))


def make_fleet(
    cluster: ClusterConfig, deadline_s: float, campaign_dir: str, require_gpu: bool = False
) -> Fleet:
    if cluster.kind == "local":
        return make_local_fleet(cluster, deadline_s, require_gpu)
    if cluster.kind == "slurm":
        from autoresearch.fleet.slurm import SlurmFleet
        from autoresearch.fleet.slurm_qos import over_qos_wall
        from autoresearch.fleet.slurm_states import config_problems

        # (none found where sinfo, or sacctmgr, cannot tell)
        if problems := config_problems(cluster.partitions) or over_qos_wall(cluster.partitions):
            raise ValueError("; ".join(problems))
        return SlurmFleet(cluster, deadline_s, campaign_dir)
    raise ValueError(f"unknown cluster.kind {cluster.kind!r} (local or slurm)")
