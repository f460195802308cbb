"""The GPUs, and MIG instances, this machine's local slots get, and the model their results name.

`nvidia-smi -L` lists each GPU, and under one in MIG mode each of its instances:

    GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5ba0d6-...)
      MIG 1g.5gb      Device  0: (UUID: MIG-c6d4f1ef-...)

A process uses a MIG instance only where CUDA_VISIBLE_DEVICES names it by its MIG UUID, and one
instance at most, so each instance is a slot of its own, named so; the GPU's index would give the
slots one instance, the others idle. `--query-gpu` lists the parent GPU alone, which is why it
is not read here.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from typing import NamedTuple

from autoresearch.fleet.base import UNNAMED_GPU

log = logging.getLogger("autoresearch")

_GPU_LINE = re.compile(r"GPU (\d+): (.+?) \(UUID: (GPU-[^)\s]+)\)")
# (drivers before R470 printed MIG-GPU-<uuid>/<gpu instance>/<compute instance>, which CUDA takes too)
_MIG_LINE = re.compile(r"\s+MIG (\S+)\s+Device\s+\d+: \(UUID: (MIG-[^)\s]+)\)")


class MigInstance(NamedTuple):
    profile: str  # "1g.5gb": its share of the GPU's compute and memory
    uuid: str  # "MIG-...", as CUDA_VISIBLE_DEVICES names it


class ListedGpu(NamedTuple):
    index: str
    name: str
    uuid: str
    instances: list[MigInstance]  # [] where the GPU is not in MIG mode


def listed_gpus() -> list[ListedGpu]:
    """`nvidia-smi -L`, each GPU with its MIG instances; [] where there is no NVIDIA driver."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus: list[ListedGpu] = []
    for line in out.splitlines():
        if gpu := _GPU_LINE.fullmatch(line.rstrip()):
            gpus.append(ListedGpu(gpu[1], gpu[2], gpu[3], []))
        elif (instance := _MIG_LINE.fullmatch(line.rstrip())) and gpus:
            gpus[-1].instances.append(MigInstance(instance[1], instance[2]))
    return gpus


def slot_devices(gpu: ListedGpu) -> list[str]:
    """What CUDA_VISIBLE_DEVICES gives each slot on `gpu`: each MIG instance's UUID, else its index."""
    return [instance.uuid for instance in gpu.instances] or [gpu.index]


def visible_gpus() -> list[str]:
    """A slot's device each, as CUDA_VISIBLE_DEVICES names it: those CUDA_VISIBLE_DEVICES names
    (an entry that names a GPU in MIG mode, by index or UUID, stands for its instances), else
    every GPU's, or MIG instance's, nvidia-smi lists."""
    listed = listed_gpus()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [device for gpu in listed for device in slot_devices(gpu)]
    entries = [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    return [device for entry in entries for device in _devices_of(entry, listed)]


def _devices_of(entry: str, listed: list[ListedGpu]) -> list[str]:
    """The slots' devices a CUDA_VISIBLE_DEVICES entry stands for: itself, or a MIG-mode GPU's instances."""
    gpu = next((g for g in listed if g.instances and _names_gpu(entry, g.index, g.uuid)), None)
    return slot_devices(gpu) if gpu else [entry]


def gpu_name(visible: list[str]) -> str:
    """The model of the GPUs this process may use (`visible`: indices or UUIDs, as
    CUDA_VISIBLE_DEVICES gives them), not of nvidia-smi's first: the results are labelled with it
    and a resume holds each tier to it (hardware.py). A MIG instance is named by its GPU and its
    profile, as torch names it, so a tier holds slices and whole GPUs apart. Models that differ
    are named together."""
    listed = listed_gpus()
    named = sorted({name for entry in visible for gpu in listed if (name := _device_name(entry, gpu))})
    if len(named) > 1:
        log.warning(
            "the GPUs this campaign may use are of different models (%s): their results would be "
            "compared across models; pick one model with CUDA_VISIBLE_DEVICES or the partition's gpu_type",
            ", ".join(named),
        )
    return " + ".join(named) or UNNAMED_GPU


def _device_name(entry: str, gpu: ListedGpu) -> str | None:
    """The model a CUDA_VISIBLE_DEVICES entry names on `gpu`: one of its MIG instances' ('NVIDIA
    A100-SXM4-40GB MIG 1g.5gb'), or the GPU's; None where it names neither."""
    entry = entry.strip()
    for instance in gpu.instances:
        if entry.startswith("MIG-") and instance.uuid.startswith(entry):
            return f"{gpu.name} MIG {instance.profile}"
    return gpu.name if _names_gpu(entry, gpu.index, gpu.uuid) else None


def _names_gpu(gpu: str, index: str, uuid: str) -> bool:
    """Whether a CUDA_VISIBLE_DEVICES entry names this GPU: its index, or its UUID or a start of
    it (CUDA takes `GPU-8f2c` where no other UUID starts so)."""
    gpu = gpu.strip()
    return gpu == index or (gpu.startswith("GPU-") and uuid.startswith(gpu))
