"""When a running campaign is expected to end, and by which budget: `status`'s "ends" line.

It is the dry run's estimate (`estimate`) at the pace the study measured lately. Each tier's
experiment holds its slot for the median time its latest experiments held theirs: the last
RECENT_ROUNDS x its slots, in the order they ended. A change of pace, such as more slots after a
resume or slower nodes, shows within a few rounds, and one slow experiment does not swing it. A
tier that has measured fewer experiments than it has slots gives no estimate: the line says so.
The slots are those the running controller built its pools with, as its start recorded them in
the study (`SLOTS_ATTR`); for a study begun before they were recorded, config.yaml's (`saved_pools`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial

from autoresearch.budget import Spend, exhausted, experiment_ran, limits, remaining, used
from autoresearch.estimate import campaign_rate, hours_until_bound, in_about, tier_paces, tiers_in_use
from autoresearch.fleet.base import Pool
from autoresearch.ledger import owed_runs
from autoresearch.study import finished

RECENT_ROUNDS = 3  # a tier's pace: the median of its last 3 x slots experiments
ESTIMATE = "an estimate: every slot busy"
FREE_SLOTS = "the slots cost nothing, so max_dollars counts only LLM calls"
# The study's: each pool's slots as the latest start built them. config.yaml cannot say how many a
# local partition of 0 slots got: one per GPU the controller found.
SLOTS_ATTR = "pool_slots"


def record_slots(study: optuna.Study, pools: Mapping[str, Pool]) -> None:
    """Keep the slots this start's pools have, for `status` to estimate the end with."""
    study.set_user_attr(SLOTS_ATTR, {name: pool.slots for name, pool in pools.items()})


def most_at_once(ran: Iterable[FrozenTrial]) -> int:
    """The most of these experiments that held a slot at the same time."""
    events = sorted(
        (t.user_attrs[when], step) for t in ran for when, step in (("started_at", 1), ("ended_at", -1))
    )  # (an end sorts before a start at the same instant: that slot was handed on)
    busy = most = 0
    for _, step in events:
        busy += step
        most = max(most, busy)
    return most


def saved_pools(cfg: DictConfig, ran: list[FrozenTrial], recorded: Mapping[str, int]) -> dict[str, Pool]:
    """Each partition's pool as the controller built it from config.yaml (`fleet.factory`), with
    the slots its start `recorded`. A study begun before they were recorded: a local partition of
    0 slots has one per device the controller found, `cluster.cpu_slots` on a CPU, else as many
    as its experiments were seen running at once."""
    cluster = cfg.cluster
    pools = {}
    for name, part in cluster.partitions.items():
        slots = part.slots
        if name in recorded:
            slots = int(recorded[name])
        elif cluster.kind == "slurm":
            slots = min(slots, cluster.max_queued)
        elif not slots:
            here = [t for t in ran if t.user_attrs.get("pool") == name]
            on_cpu = cluster.devices == "cpu" or any(t.user_attrs.get("gpu_type") == "cpu" for t in here)
            slots = cluster.cpu_slots if on_cpu else most_at_once(here)
        pools[name] = Pool(name, slots, part.gpu_type, part.price_per_gpu_hour, part.partition or name)
    return pools


def latest(cfg: DictConfig, pools: dict[str, Pool], ran: list[FrozenTrial]) -> list[FrozenTrial]:
    """Each tier in use's last RECENT_ROUNDS x slots experiments that ran, in the order they ended."""
    in_order = sorted(ran, key=lambda t: t.user_attrs["ended_at"])
    picked: list[FrozenTrial] = []
    for tier, pool in tiers_in_use(cfg, pools).items():
        of_tier = [t for t in in_order if str(t.user_attrs.get("tier", "screen")) == tier]
        picked += of_tier[-RECENT_ROUNDS * pool.slots :]
    return picked


def ends_said(cfg: DictConfig, study: optuna.Study, spend: Spend) -> str:
    """When the first budget binds, from now at the recent pace (`cfg`: config.yaml, typed by
    `with_defaults`). The experiments then running still finish."""
    budget = cfg.campaign.budget
    if reached := exhausted(spend, budget):
        if owed := owed_runs(study):  # (re-runs of a promoted change, baselines: no change undecided)
            runs = f"the {owed} queued run{'s' if owed > 1 else ''} a decision waits for"
            return f"once the running experiments and {runs} end: {reached}, so no other one starts"
        return f"once the running experiments end: {reached}, so no new one starts"
    if not limits(budget):
        return "when stopped or when the proposer runs dry: no budget is set"
    ran = [t for t in finished(study) if experiment_ran(t)]
    pools = saved_pools(cfg, ran, study.user_attrs.get(SLOTS_ATTR, {}))
    paces = tier_paces(cfg, pools, latest(cfg, pools, ran))
    left = remaining(spend, budget)
    slots = {tier: pool.slots for tier, pool in tiers_in_use(cfg, pools).items()}
    short = {tier: pace.measured for tier, pace in paces.items() if pace.measured < max(1, slots[tier])}
    if short and set(left) != {"wall_hours"}:  # (wall hours pass at one pace)
        return _too_few_said(short, slots, left)
    binds = hours_until_bound(left, campaign_rate(cfg, pools, paces))
    first = min(binds, key=lambda what: binds[what])
    if math.isinf(binds[first]):
        return f"when stopped or when the proposer runs dry: {FREE_SLOTS}"
    spent = f"{used(spend)[first]:.4g} of {limits(budget)[first]:.4g} used"
    said = f"{in_about(binds[first])}, when max_{first} binds ({spent})"
    if first == "wall_hours":
        return said
    measured = sum(pace.measured for pace in paces.values())
    return f"{said}, at the pace of the last {measured} experiments ({ESTIMATE})"


def _too_few_said(short: dict[str, int], slots: dict[str, int], left: dict[str, float]) -> str:
    """No pace yet, by tier; and where a wall budget is set, the latest end it allows."""
    counts = ", ".join(f"{n} of {slots[tier]} on {tier}" for tier, n in short.items())
    said = f"not estimated yet: too few experiments measured, fewer than the slots ({counts})"
    if "wall_hours" in left:
        said += f"; max_wall_hours ends it {in_about(left['wall_hours'])} at the latest"
    return said
