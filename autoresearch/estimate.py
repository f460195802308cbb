"""What a campaign's slots do in an hour and when its budgets would bind: the dry run's estimate.

Every slot of every tier in use is taken to be busy. On a resume, each experiment holds its slot
for the median time the tier's experiments that ran held theirs (`budget.slot_hours`: start-up and
evaluation included), so the rate is the study's own. A tier with nothing measured yet holds each
slot for its training time only, which start-up and evaluation exceed: its experiments per hour
are an upper bound (the demo's 15 s held a slot a median 19-30 s). CPU slots train for
CPU-seconds, which other processes stretch in wall time: on a loaded machine the dry run says the
rate again at the present load average (`CpuLoad`). The slot-hours and dollars per hour are what
busy slots cost, however long each experiment takes. Queue waits and LLM calls are not counted.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from autoresearch.budget import slot_hours
from autoresearch.config import AutoresearchConfig, time_budget_seconds
from autoresearch.fleet.base import Pool
from autoresearch.intake import confirm_tier

ASSUMED = "every slot busy; queue waits and LLM calls not counted; dollars are slots x price_per_gpu_hour"


@dataclass(frozen=True)
class Rate:
    """What busy slots do in an hour."""

    experiments: float
    slot_hours: float
    dollars: float


@dataclass(frozen=True)
class Pace:
    """How long a tier's experiment holds its slot: the median of `measured` experiments that ran,
    or (`measured` 0) its training time, a lower bound, times `load_factor` on CPU slots of a
    loaded machine (`CpuLoad`)."""

    seconds: float
    measured: int
    load_factor: float = 1.0


@dataclass(frozen=True)
class CpuLoad:
    """This machine's load as a dry run reads it: a CPU slot trains for CPU-seconds (prepare.py's
    clock), which other processes stretch in wall time; the demo's runs took 2 to 7 times their
    15 s beside helpers' tests. The load average is the last minute's, which may not last."""

    load: float  # the 1-minute load average: processes running or waiting for a core
    cores: int

    def factor(self, threads: int) -> float:
        """Wall seconds per CPU-second for slots running `threads` threads beside the load: the
        cores shared out among all that wants one, 1 where they are enough."""
        return max(1.0, (self.load + threads) / self.cores)


def cpu_load() -> CpuLoad | None:
    """The machine's load, or None where the system gives no load average (Windows)."""
    try:
        return CpuLoad(os.getloadavg()[0], os.cpu_count() or 1)
    except (AttributeError, OSError):
        return None


def pool_rate(pool: Pool, pace: Pace) -> Rate:
    return Rate(pool.slots * 3600 / pace.seconds, float(pool.slots), pool.slots * pool.price_per_gpu_hour)


def tiers_in_use(cfg: AutoresearchConfig, pools: dict[str, Pool]) -> dict[str, Pool]:
    """Each tier that runs experiments, with its pool: screen always, validate where promoted
    changes are confirmed on its own partition (`confirm_tier`)."""
    used = ["screen"] + (["validate"] if confirm_tier(cfg, pools) == "validate" else [])
    return {tier: pools[cfg.cluster.tiers[tier]] for tier in used}


def held_seconds(trials: Iterable[FrozenTrial]) -> dict[str, list[float]]:
    """By tier, the seconds each ended experiment that ran held its slot. A time of 0 measures
    nothing: it is a negative one clamped (a node's clock ahead of the controller's)."""
    held: dict[str, list[float]] = {}
    for t in trials:
        if (spent := slot_hours(t, {})) and spent[1] > 0:
            held.setdefault(str(t.user_attrs.get("tier", "screen")), []).append(spent[1] * 3600)
    return held


def tier_paces(
    cfg: AutoresearchConfig, pools: dict[str, Pool], ended: Iterable[FrozenTrial], load: CpuLoad | None = None
) -> dict[str, Pace]:
    """Each tier in use's pace: measured where its experiments ran (`ended`: the study's ended
    trials, none for a new campaign; their times hold the load they ran under), else its training
    time, stretched by `load` on CPU slots."""
    held = held_seconds(ended)
    used = tiers_in_use(cfg, pools)
    cpu_threads = sum(p.slots * max(1, p.threads) for p in used.values() if p.gpu_type == "cpu")
    return {
        tier: Pace(statistics.median(held[tier]), len(held[tier]))
        if held.get(tier)
        else _unmeasured_pace(time_budget_seconds(cfg), pool, load, cpu_threads)
        for tier, pool in used.items()
    }


def _unmeasured_pace(seconds: float, pool: Pool, load: CpuLoad | None, cpu_threads: int) -> Pace:
    factor = load.factor(cpu_threads) if load is not None and pool.gpu_type == "cpu" else 1.0
    return Pace(seconds * factor, 0, factor)


def campaign_rate(cfg: AutoresearchConfig, pools: dict[str, Pool], paces: dict[str, Pace]) -> Rate:
    """The tiers' rates summed (tiers in use never share a partition: `tiers_in_use`)."""
    busy = [pool_rate(pool, paces[tier]) for tier, pool in tiers_in_use(cfg, pools).items()]
    return Rate(*(sum(getattr(r, f) for r in busy) for f in ("experiments", "slot_hours", "dollars")))


def hours_until_bound(left: dict[str, float], rate: Rate) -> dict[str, float]:
    """Hours until each budget with a limit binds at `rate`, keyed as `left` (`budget.remaining`'s:
    experiments, wall_hours, gpu_hours, dollars). A limit on what the slots do not spend (dollars,
    where the slots are free) never binds: infinite."""
    per_hour = {
        "experiments": rate.experiments,
        "wall_hours": 1.0,
        "gpu_hours": rate.slot_hours,
        "dollars": rate.dollars,
    }
    return {
        what: amount / per_hour[what] if per_hour[what] > 0 else math.inf for what, amount in left.items()
    }


def in_about(hours: float) -> str:
    """A time ahead as an estimate says it: minutes under an hour, never "0 min"."""
    if hours < 1:
        return f"in about {hours * 60:.0f} min" if hours * 60 >= 1 else "in under a minute"
    return f"in about {hours:.1f} h"
