"""The GPUs, and MIG instances, this machine's local slots get, and the model their results name.

`nvidia-smi -L` lists each GPU, and under one in MIG mode each of its instances:

    GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5ba0d6-...)
      MIG 1g.5gb      Device  0: (UUID: MIG-c6d4f1ef-...)

A process uses one MIG instance at most: the one CUDA_VISIBLE_DEVICES names by its MIG UUID, or,
given the whole GPU, the first CUDA enumerates. So each instance is a slot of its own, named so;
the GPU's index would give the slots one instance, the others idle. `--query-gpu` lists the parent GPU alone, but says whether it
is in MIG mode, which `-L` does not say of a GPU with no instance yet.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from typing import NamedTuple

from autoresearch.fleet.base import UNNAMED_GPU
from autoresearch.unwaited import run_bounded

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
    instances: list[MigInstance]  # [] where the GPU is not in MIG mode, or has no instance yet
    mig_enabled: bool = False  # --query-gpu's mig.mode.current: in MIG mode, with instances or not
    instances_known: bool = True  # False where only --query-gpu listed it: its instances not read

    @property
    def in_mig_mode(self) -> bool:
        """Whether CUDA sees this GPU only through its MIG instances (if it has none, not at all)."""
        return self.mig_enabled or bool(self.instances)


# index, uuid, mig.mode.current ("Enabled", "Disabled", or "[N/A]" on a GPU without MIG), name
_QUERY = ("--query-gpu=index,uuid,mig.mode.current,name", "--format=csv,noheader")


# How long nvidia-smi may take to answer: it answers in well under a second, but a hung driver
# keeps it waiting for ever.
SMI_TIMEOUT_S = 10.0


class SmiOutput(NamedTuple):
    lines: list[str] | None  # the non-blank lines it printed; None where it failed
    failure: str = ""  # why it failed, in its words where it said
    hung: bool = False  # it did not answer in SMI_TIMEOUT_S


def _nvidia_smi(*args: str) -> SmiOutput:
    """What `nvidia-smi ARGS` prints; its failure where it does not run (no NVIDIA driver, a field
    an old driver does not know, an option the driver refuses here, a hung driver: one that holds
    it where KILL cannot end it, so it is not waited for)."""
    try:
        answer = run_bounded(["nvidia-smi", *args], SMI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return SmiOutput(None, f"no answer in {SMI_TIMEOUT_S:g} s", hung=True)
    except (OSError, subprocess.SubprocessError) as e:
        return SmiOutput(None, str(e))
    if answer.returncode != 0:
        said = [line.strip() for line in f"{answer.stderr}\n{answer.stdout}".splitlines() if line.strip()]
        return SmiOutput(None, said[0] if said else f"exit status {answer.returncode}")
    return SmiOutput([line.rstrip() for line in answer.stdout.splitlines() if line.strip()])


def listed_gpus() -> list[ListedGpu]:
    """Each GPU nvidia-smi lists, with its MIG instances; [] where there is no NVIDIA driver.
    `-L` gives the instances; `--query-gpu`, a stable CSV, says which GPUs are in MIG mode (one with
    no instance is listed by `-L` as a plain GPU), and stands in for a `-L` that fails or none of
    whose lines is understood (a driver's new format): else a GPU machine would read as none.
    Where `-L` hangs the query is not asked: the driver that hung one hangs the other, and the
    start would wait its timeout twice."""
    listing = _nvidia_smi("-L")
    if listing.hung:
        log.warning(
            "nvidia-smi -L did not answer in %g s (a hung NVIDIA driver?): this machine's GPUs are "
            "not read, nor asked again; %s",
            SMI_TIMEOUT_S,
            _without_gpus_read(),
        )
        return []
    queried = _queried_gpus()
    gpus = _parsed_listing(listing.lines or [])
    if not gpus:
        return _queried_in_place_of(listing, queried)
    mig_enabled = {uuid for _, uuid, mode, _ in queried if mode == "Enabled"}
    return [gpu._replace(mig_enabled=gpu.uuid in mig_enabled) for gpu in gpus]


def _without_gpus_read() -> str:
    """What the fleet does where nvidia-smi read no GPU: CUDA_VISIBLE_DEVICES's entries are its
    slots still, their model not known, else it sees no GPU."""
    if _visible_entries(os.environ.get("CUDA_VISIBLE_DEVICES") or ""):
        return (
            "the slots are CUDA_VISIBLE_DEVICES's entries, named 'gpu' (not known, which holds no "
            "tier to its hardware)"
        )
    return "the fleet sees no GPU here (a GPU campaign is refused, one on CPUs runs on CPU slots)"


# said only where a GPU --query-gpu lists is in MIG mode: on a machine without one it is noise
_QUERIED_MIG_SLOT = (
    ", a GPU in MIG mode one (on the one instance CUDA uses, named '<GPU> MIG', its profile not known)"
)


def _queried_in_place_of(listing: SmiOutput, queried: list[list[str]]) -> list[ListedGpu]:
    """The GPUs `--query-gpu` lists, by index, where `-L` gave none, said once; [] where it lists none."""
    if not queried:
        return []
    if listing.lines is None:
        said = f"nvidia-smi -L failed ({listing.failure})"
    elif not listing.lines:
        said = "nvidia-smi -L printed nothing"
    else:
        said = f"nvidia-smi -L printed lines none of which is understood (the first: {listing.lines[0]!r})"
    in_mig_mode = any(mode == "Enabled" for _, _, mode, _ in queried)
    log.warning(
        "%s; the slots are the GPUs nvidia-smi --query-gpu lists, by index%s",
        said,
        _QUERIED_MIG_SLOT if in_mig_mode else "",
    )
    return [ListedGpu(index, name, uuid, [], mode == "Enabled", False) for index, uuid, mode, name in queried]


def _queried_gpus() -> list[list[str]]:
    """`--query-gpu`'s rows: index, uuid, mig.mode.current, name (last, as it may hold a comma)."""
    rows = [[field.strip() for field in line.split(",", 3)] for line in _nvidia_smi(*_QUERY).lines or []]
    return [row for row in rows if len(row) == 4]


def _parsed_listing(listing: list[str]) -> list[ListedGpu]:
    """The GPUs, and each one's MIG instances, in `nvidia-smi -L`'s lines."""
    gpus: list[ListedGpu] = []
    for line in listing:
        if gpu := _GPU_LINE.fullmatch(line):
            gpus.append(ListedGpu(gpu[1], gpu[2], gpu[3], []))
        elif (instance := _MIG_LINE.fullmatch(line)) and gpus:
            gpus[-1].instances.append(MigInstance(instance[1], instance[2]))
    return gpus


def slot_devices(gpu: ListedGpu) -> list[str]:
    """What CUDA_VISIBLE_DEVICES gives each slot on `gpu`: each MIG instance's UUID, else its index
    (one slot, on one instance, for a GPU in MIG mode whose instances were not read); none, said
    once, for a GPU in MIG mode with no instance -L shows, where CUDA can run nothing. -L shows
    only the instances this user or container may open (a container is given its own), so the
    warning says what to do in each case: root can make instances; a container must be given them."""
    if not gpu.in_mig_mode or not gpu.instances_known:
        return [gpu.index]
    if not gpu.instances:
        log.warning(
            "GPU %s (%s, %s) is in MIG mode and nvidia-smi -L shows no MIG instance of it (none "
            "created, or none this user or container may open), where CUDA can run nothing: it gets "
            "no slot; as root, create instances (nvidia-smi mig -i %s -cgi PROFILES -C) or disable "
            "MIG mode (nvidia-smi -i %s -mig 0); in a container, start it given the instances "
            "(docker run --gpus '\"device=%s:0\"', or NVIDIA_VISIBLE_DEVICES=MIG-<uuid>)",
            gpu.index,
            gpu.name,
            gpu.uuid,
            gpu.index,
            gpu.index,
            gpu.index,
        )
    return [instance.uuid for instance in gpu.instances]


# The order CUDA numbers GPUs in for the runs: nvidia-smi's, whose indices name the slots and their
# model. CUDA's own (FASTEST_FIRST, its default) puts the fastest first: on a machine of two models
# a slot's index would name the other one.
CUDA_DEVICE_ORDER = "PCI_BUS_ID"


def warn_of_device_order(devices: list[str]) -> None:
    """Say, once, that the user's CUDA_DEVICE_ORDER is not the runs': `devices`' indices (the
    slots', or CUDA_VISIBLE_DEVICES's) are nvidia-smi's, so the runs are given its order, not the
    one the user set. Devices named by UUID alone are the same GPUs in either order: nothing to say."""
    order = os.environ.get("CUDA_DEVICE_ORDER", "")
    indices = [device for device in devices if device.isdigit()]
    if order in ("", CUDA_DEVICE_ORDER) or not indices:
        return
    log.warning(
        "CUDA_DEVICE_ORDER=%s is set, where the slots' GPU indices (%s) are nvidia-smi's, in PCI "
        "bus order, as is the model their results are named by: the runs get CUDA_DEVICE_ORDER=%s "
        "instead, and an index in CUDA_VISIBLE_DEVICES names nvidia-smi's GPU of that index (name "
        "GPUs by UUID, from nvidia-smi -L, to be sure which)",
        order,
        ",".join(indices),
        CUDA_DEVICE_ORDER,
    )


def visible_gpus(listed: list[ListedGpu]) -> list[str]:
    """A slot's device each, as CUDA_VISIBLE_DEVICES names it: those CUDA_VISIBLE_DEVICES names
    (an entry that names a GPU in MIG mode, by index or UUID, is one slot, on the one instance CUDA
    uses), else every GPU's, or MIG instance's, of `listed` (`listed_gpus`)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [device for gpu in listed for device in slot_devices(gpu)]
    return [device for entry in _visible_entries(env) for device in _devices_of(entry, listed)]


def _visible_entries(env: str) -> list[str]:
    """The devices a CUDA_VISIBLE_DEVICES value names ('-1', or none, hides every GPU)."""
    return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]


def _devices_of(entry: str, listed: list[ListedGpu]) -> list[str]:
    """The slots' devices a CUDA_VISIBLE_DEVICES entry stands for: itself, or none for a GPU in
    MIG mode with no instance. An entry naming a GPU in MIG mode is one slot, itself, not one per
    instance: a process given the whole GPU uses one instance, the first CUDA enumerates that it
    may open (in a Slurm job given one slice, that slice; a MIG UUID of -L's would be refused)."""
    gpu = next((g for g in listed if g.in_mig_mode and _names_gpu(entry, g.index, g.uuid)), None)
    if gpu is None:
        return [entry]
    if len(gpu.instances) > 1:
        log.info(
            "CUDA_VISIBLE_DEVICES names GPU %s (%s), in MIG mode: one slot, on the one instance CUDA "
            "uses; to use its %d instances, name them by MIG UUID (nvidia-smi -L)",
            gpu.index,
            gpu.name,
            len(gpu.instances),
        )
    return [entry] if slot_devices(gpu) else []


def gpu_name(visible: list[str], listed: list[ListedGpu]) -> str:
    """The model of the GPUs this process may use (`visible`: indices or UUIDs, as
    CUDA_VISIBLE_DEVICES gives them), not of nvidia-smi's first: the results are labelled with it
    and a resume holds each tier to it (hardware.py). A MIG instance is named by its GPU and its
    profile, as torch names it, so a tier holds slices and whole GPUs apart. Models that differ
    are named together."""
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
    A100-SXM4-40GB MIG 1g.5gb'), its first instance's where it names a GPU in MIG mode (the one
    CUDA uses; '<GPU> MIG' where its instances were not read, apart from the whole GPU's), or the
    GPU's; None where it names neither."""
    entry = entry.strip()
    for instance in gpu.instances:
        if entry.startswith("MIG-") and instance.uuid.startswith(entry):
            return _instance_name(gpu, instance)
    if not _names_gpu(entry, gpu.index, gpu.uuid):
        return None
    if gpu.instances:
        return _instance_name(gpu, gpu.instances[0])
    return f"{gpu.name} MIG" if gpu.mig_enabled else gpu.name


def _instance_name(gpu: ListedGpu, instance: MigInstance) -> str:
    """A MIG instance's model, as torch names it: its GPU's and its profile."""
    return f"{gpu.name} MIG {instance.profile}"


def _names_gpu(gpu: str, index: str, uuid: str) -> bool:
    """Whether a CUDA_VISIBLE_DEVICES entry names this GPU: its index, or its UUID or a start of
    it (CUDA takes `GPU-8f2c` where no other UUID starts so)."""
    gpu = gpu.strip()
    return gpu == index or (gpu.startswith("GPU-") and uuid.startswith(gpu))
