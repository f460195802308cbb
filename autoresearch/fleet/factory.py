"""Build the fleet a cluster config describes."""

from __future__ import annotations

import logging
import os

from autoresearch.config import ClusterConfig, backstop_grace
from autoresearch.fleet.base import UNNAMED_GPU, Fleet, Pool
from autoresearch.fleet.local import LocalFleet, nvidia_smi, visible_gpus

log = logging.getLogger("autoresearch")


def gpu_name(visible: list[str]) -> str:
    """The model of the GPUs this process may use (`visible`: indices or UUIDs, as
    CUDA_VISIBLE_DEVICES gives them), not of nvidia-smi's first: the results are labelled with it
    and a resume holds each tier to it (hardware.py). Models that differ are named together."""
    listed = [[part.strip() for part in line.split(",", 2)] for line in nvidia_smi("index,uuid,name")]
    named = sorted(
        {row[2] for row in listed if len(row) == 3 and any(_names_gpu(gpu, *row[:2]) for gpu in visible)}
    )
    if len(named) > 1:
        log.warning(
            "the GPUs this campaign may use are of different models (%s): their results would be "
            "compared across models; pick one model with CUDA_VISIBLE_DEVICES or the partition's gpu_type",
            ", ".join(named),
        )
    return " + ".join(named) or UNNAMED_GPU


def _names_gpu(gpu: str, index: str, uuid: str) -> bool:
    """Whether a CUDA_VISIBLE_DEVICES entry names this GPU: its index, or its UUID or a start of
    it (CUDA takes `GPU-8f2c` where no other UUID starts so)."""
    gpu = gpu.strip()
    return gpu == index or (gpu.startswith("GPU-") and uuid.startswith(gpu))


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
        gpu_type = part.gpu_type if part.gpu_type not in ("", "auto") else gpu_name(gpus)
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
