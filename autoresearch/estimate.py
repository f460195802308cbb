"""What a campaign's slots may do in an hour and when its budgets would bind: the dry run's
estimate, made from the config alone, before anything has run to measure.

It assumes every slot of every tier in use is busy, each experiment holding its slot for its
training time budget only. Start-up, evaluation, the data step and queue waits make experiments
slower, so the experiments per hour are an upper bound; the slot-hours and dollars per hour are what
busy slots cost, however long each experiment takes. LLM calls are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoresearch.config import AutoresearchConfig, time_budget_seconds
from autoresearch.fleet.base import Pool
from autoresearch.intake import confirm_tier

ASSUMPTIONS = (
    "every slot busy, each experiment holding its slot for its training time only (start-up, "
    "evaluation and queue waits make fewer experiments an hour); dollars are slots x "
    "price_per_gpu_hour, LLM calls not counted"
)


@dataclass(frozen=True)
class Rate:
    """What busy slots do in an hour."""

    experiments: float
    slot_hours: float
    dollars: float


def pool_rate(pool: Pool, seconds_per_experiment: float) -> Rate:
    return Rate(
        pool.slots * 3600 / seconds_per_experiment, float(pool.slots), pool.slots * pool.price_per_gpu_hour
    )


def tiers_in_use(cfg: AutoresearchConfig, pools: dict[str, Pool]) -> dict[str, Pool]:
    """Each tier that runs experiments, with its pool: screen always, validate where promoted
    changes are confirmed on its own partition (`confirm_tier`)."""
    used = ["screen"] + (["validate"] if confirm_tier(cfg, pools) == "validate" else [])
    return {tier: pools[cfg.cluster.tiers[tier]] for tier in used}


def campaign_rate(cfg: AutoresearchConfig, pools: dict[str, Pool]) -> Rate:
    """The tiers' rates summed, each partition once (tiers may share one)."""
    seconds = time_budget_seconds(cfg)
    busy = {pool.name: pool_rate(pool, seconds) for pool in tiers_in_use(cfg, pools).values()}
    return Rate(
        *(sum(getattr(r, f) for r in busy.values()) for f in ("experiments", "slot_hours", "dollars"))
    )


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
