"""What each tier measures on, held as a resume changes the cluster.

Every experiment trains for the same number of seconds, so val_bpb rests on the hardware too:
twice the CPU threads, or an H200 for an H100, trains more steps and scores lower with no change
to train.py. A tier's results are compared with its frontier's runs there (`decisions`), so a
resume that moves a tier to other hardware (`cluster.tiers`, a partition's `gpu_type`, more
local CPU slots and so fewer threads each) would keep or discard changes for the hardware's sake.
Each launch records its hardware (`HARDWARE_ATTR`); a tier that has measured is held to it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping

from optuna.trial import FrozenTrial

from autoresearch.fleet.base import UNNAMED_GPU, Pool

HARDWARE_ATTR = "hardware"  # a trial's: what it ran on (`hardware_of`)
# A MIG slice's name, as `fleet.gpus` gives it: '<GPU> MIG <profile>', or '<GPU> MIG' where only
# `nvidia-smi --query-gpu` listed its GPU and its profile was not read.
_MIG_SLICE = re.compile(r"(.+) MIG(?: (\S+))?")


def hardware_of(pool: Pool) -> str:
    """A pool's hardware as a result depends on it: its GPU type, or on CPUs its threads per slot
    (unknown, 0, where the fleet does not set them)."""
    if pool.gpu_type != "cpu" or not pool.threads:
        return pool.gpu_type
    return f"cpu, {pool.threads} thread{'s' if pool.threads > 1 else ''} per slot"


def _known(hardware: str) -> bool:
    """Whether `hardware` names what a result rests on: not "cpu" without its threads (an older
    version's runs, the simulator's), nor a GPU nvidia-smi did not name that once (a timeout)."""
    return hardware not in ("", "cpu", UNNAMED_GPU)


def _measured_on(trials: Iterable[FrozenTrial], to_collect: Collection[int]) -> dict[str, set[str]]:
    """By tier, the hardware its results were measured on (runs of versions before it was recorded
    are known by their GPU type), those of `to_collect` too."""
    seen: dict[str, set[str]] = {}
    for t in trials:
        attrs = t.user_attrs
        hardware = str(attrs.get(HARDWARE_ATTR) or attrs.get("gpu_type") or "")
        if ("val_bpb" in attrs or t.number in to_collect) and _known(hardware):
            seen.setdefault(str(attrs.get("tier", "screen")), set()).add(hardware)
    return seen


def _measured_there(now: str, seen: set[str]) -> bool:
    """Whether `now` is hardware a tier measured on (`seen`). A slice whose profile was not read
    ('<GPU> MIG') is any slice of its GPU, and any slice is it, where no other profile of that GPU
    is known: the same slice is named both ways as `nvidia-smi -L` works or fails at each start."""
    if now in seen:
        return True
    gpu, profile = _mig_slice(now)
    profiles = {p for g, p in map(_mig_slice, seen) if g == gpu} if gpu is not None else set()
    if not profiles:
        return False
    return profile is None or profiles == {None}


def _mig_slice(hardware: str) -> tuple[str | None, str | None]:
    """The GPU and the profile a MIG slice's name gives (the profile None where not read); (None,
    None) for hardware that is no slice."""
    slice_ = _MIG_SLICE.fullmatch(hardware)
    return (slice_[1], slice_[2]) if slice_ else (None, None)


def hardware_changes(
    trials: Iterable[FrozenTrial],
    tiers: Mapping[str, str],
    pools: Mapping[str, Pool],
    where: str,
    to_collect: Collection[int] = (),
) -> list[str]:
    """Why this command's tiers would measure on other hardware than their results in `where`
    were, a line each (a tier with no result yet may move anywhere, and one whose hardware is not
    known now is not held). `to_collect`: trials still running in the study whose runs left a
    result, which the start collects as it opens: results of their tier as much as those told."""
    seen = _measured_on(trials, to_collect)
    problems = []
    for tier, pool_name in tiers.items():
        if tier not in seen or pool_name not in pools:
            continue
        now = hardware_of(pools[pool_name])
        if _known(now) and not _measured_there(now, seen[tier]):
            before = " and ".join(sorted(seen[tier]))
            problems.append(
                f"the {tier} tier of {where} measured on {before}, this command runs it on {now} "
                f"({pool_name}): its results there could not be compared with the frontier's, as "
                "each trains for the same seconds; keep cluster.tiers, the partition's gpu_type "
                "and (on CPUs) cluster.cpu_slots and threads_per_slot as they were, or choose a "
                "new campaign.name"
            )
    return problems
