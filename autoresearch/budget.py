"""Budgets: what a campaign has spent and what it may still spend, derived from the study."""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoresearch.agent.usage import dollars_spent
from autoresearch.config import BudgetConfig, SavedConfigError, read_saved_config, reading_saved_config
from autoresearch.files import finite_number, read_json
from autoresearch.heartbeat import CONTROLLER_FILE, older_version_stop, ran_seconds
from autoresearch.stop_signals import READY_PID_ENV
from autoresearch.study import finished, trials


@dataclass(frozen=True)
class Spend:
    experiments: int
    wall_hours: float
    gpu_hours: float
    gpu_dollars: float
    llm_dollars: float

    @property
    def dollars(self) -> float:
        return self.gpu_dollars + self.llm_dollars


def experiment_ran(trial: FrozenTrial) -> bool:
    """Whether an ended trial's experiment ran: launched on a pool (a workspace made for it) and
    its runner started and ended. Invalid and skipped candidates never did (older studies gave
    invalid ones times), nor did runs cancelled or lost before they started on a node."""
    attrs = trial.user_attrs
    return (
        "exp_dir" in attrs
        and bool(attrs.get("pool"))
        and attrs.get("started_at") is not None
        and attrs.get("ended_at") is not None
    )


# A run's GPU type where none was recorded (an older version's run), as cost rows and lines name it.
UNRECORDED_GPU_TYPE = "an unrecorded GPU type"
PRICE_ATTR = "price_per_gpu_hour"  # a trial's: its pool's price when it was launched
# The study's: each pool's price in the campaign's config.yaml as the first controller to record
# launch prices found it, for the trials an older version launched without one (`keep_earlier_prices`).
EARLIER_PRICES_ATTR = "prices_before_launch_prices"
# A pool, and the dollars per slot-hour its trial was launched at (None: launched before prices
# were recorded, with no earlier price kept: priced at config.yaml's price for the pool now).
Rate = tuple[str, float | None]


def slot_hours(trial: FrozenTrial, earlier: Mapping[str, float]) -> tuple[Rate, float] | None:
    """The pool an ended experiment ran on, at the price it was launched at (`earlier`'s for its
    pool where it has none), and the hours its slot spent on it, start-up and evaluation included:
    what the cluster bills, whatever became of the result (None: never ran)."""
    if not experiment_ran(trial):
        return None
    attrs = trial.user_attrs
    price = attrs.get(PRICE_ATTR, earlier.get(attrs["pool"]))
    rate = (attrs["pool"], None if price is None else float(price))
    return rate, max(0.0, attrs["ended_at"] - attrs["started_at"]) / 3600


def add_hours(hours: dict[Rate, float], trial: FrozenTrial, earlier: Mapping[str, float]) -> None:
    """Count an ended trial's slot-hours, if it ran, in `hours`."""
    if spent := slot_hours(trial, earlier):
        hours[spent[0]] = hours.get(spent[0], 0.0) + spent[1]


def earlier_prices(study: optuna.Study) -> dict[str, float]:
    return dict(study.user_attrs.get(EARLIER_PRICES_ATTR, {}))


def rated_hours(study: optuna.Study) -> dict[Rate, float]:
    """Slot-hours by pool and launch price (`Rate`), over the study's ended trials."""
    hours: dict[Rate, float] = {}
    earlier = earlier_prices(study)
    for t in finished(study):
        add_hours(hours, t, earlier)
    return hours


def ran_undecided(study: optuna.Study) -> list[FrozenTrial]:
    """The experiments that ran and await their decision: a promoted change, until its re-runs
    are in, or a result waiting for the runs it is compared with, stays a running trial, yet its
    run, and the hours its slot spent on it, are done."""
    return [t for t in trials(study, TrialState.RUNNING) if t.user_attrs.get("ended_at") is not None]


def spent_hours(study: optuna.Study) -> dict[Rate, float]:
    """Slot-hours by pool and launch price over every experiment that ran: the ended trials', and
    those awaiting their decision (`ran_undecided`), billed as any. What the GPU-hours budget,
    status and the report count, so that the three agree while a promoted change waits."""
    hours = rated_hours(study)
    earlier = earlier_prices(study)
    for t in ran_undecided(study):
        add_hours(hours, t, earlier)
    return hours


def keep_earlier_prices(study: optuna.Study, saved_config: Path) -> None:
    """Keep, once, the prices the campaign's config.yaml gives the pools while the study holds
    experiments an older version launched without recording theirs: the controller's start writes
    its own config.yaml over it, and those hours would then cost a price set at the upgrade, or
    nothing on a pool it drops. A config.yaml that cannot be read keeps nothing (config.yaml's
    prices now stand in, as before)."""
    if EARLIER_PRICES_ATTR in study.user_attrs or not saved_config.is_file():
        return
    if not any(
        "exp_dir" in t.user_attrs and PRICE_ATTR not in t.user_attrs for t in study.get_trials(deepcopy=False)
    ):
        return
    try:
        saved = read_saved_config(saved_config)
        with reading_saved_config(saved_config):
            prices = pool_prices(saved)
    except SavedConfigError:
        return
    study.set_user_attr(EARLIER_PRICES_ATTR, prices)


def by_pool(hours: dict[Rate, float]) -> dict[str, float]:
    pools: dict[str, float] = {}
    for (pool, _), h in hours.items():
        pools[pool] = pools.get(pool, 0.0) + h
    return pools


def pool_prices(cfg: Any) -> dict[str, float]:
    """Dollars per slot-hour by pool, as the campaign's config (or its config.yaml) names them."""
    return {name: float(p.price_per_gpu_hour) for name, p in cfg.cluster.partitions.items()}


def dollars_of(hours: dict[Rate, float], prices: dict[str, float]) -> float:
    """What slot-hours cost, as the `max_dollars` budget counts them: each at the price its trial
    was launched at, so a pool removed from config.yaml (or re-priced) since still costs what it
    did. Hours launched before prices were recorded take `prices` (config.yaml's now); such hours
    on a pool without a price add nothing, and whoever shows the sum says they are unpriced
    (`unpriced`), not free."""
    return sum(
        h * (price if price is not None else prices.get(pool, 0.0)) for (pool, price), h in hours.items()
    )


def unpriced(hours: dict[Rate, float], prices: dict[str, float]) -> bool:
    return any(price is None and pool not in prices for pool, price in hours)


def pool_gpu_types(ran: list[FrozenTrial]) -> dict[str, tuple[str, ...]]:
    """Each pool's GPU types, in the order its runs first used them: a pool's runs need not share
    one (its gpu_type changed on a resume), and one type would misname the others' hours."""
    types: dict[str, dict[str, None]] = {}
    for t in ran:
        types.setdefault(t.user_attrs["pool"], {})[gpu_type_of(t)] = None
    return {pool: tuple(seen) for pool, seen in types.items()}


def gpu_type_of(trial: FrozenTrial) -> str:
    """The GPU type a run ran on, in words where none was recorded (an older version's run)."""
    return str(trial.user_attrs.get("gpu_type", "")) or UNRECORDED_GPU_TYPE


def hours_without_price(
    ran: list[FrozenTrial], earlier: dict[str, float], prices: dict[str, float]
) -> dict[str, dict[str, float]]:
    """By pool and GPU type, the hours that have no price to count (`unpriced`): launched before
    prices were recorded, on a pool config.yaml no longer names. A pool can hold them beside hours
    launched at a price, so they are said apart rather than leave its whole cost unknown."""
    left: dict[str, dict[str, float]] = {}
    for t in ran:
        if (spent := slot_hours(t, earlier)) and unpriced(dict([spent]), prices):
            by_type = left.setdefault(spent[0][0], {})
            gpu_type = gpu_type_of(t)
            by_type[gpu_type] = by_type.get(gpu_type, 0.0) + spent[1]
    return left


def across_pools(by_pool: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Hours by pool and GPU type (`hours_without_price`'s) summed over the pools, by GPU type."""
    by_type: dict[str, float] = {}
    for hours in by_pool.values():
        for gpu_type, h in hours.items():
            by_type[gpu_type] = by_type.get(gpu_type, 0.0) + h
    return by_type


def unpriced_said(by_type: Mapping[str, float], unit: str) -> str:
    """Hours without a price (`hours_without_price`'s, by GPU type) in words: which hours, and on
    what, rather than a price of $0 that would read as free."""
    return f"? for {sum(by_type.values()):.2f} {unit} on {', '.join(by_type)}"


def hours_unit(gpu_types: Iterable[str]) -> str:
    """What a slot-hour is called: a GPU-hour, or a CPU-hour when every slot that ran something
    was a CPU process (the laptop demo), which no cluster bills as a GPU's (a run whose type was
    not recorded could have been either: it does not decide)."""
    types = set(gpu_types) - {UNRECORDED_GPU_TYPE}
    return "CPU-hours" if types and types <= {"cpu"} else "GPU-hours"


def experiments_launched(study: optuna.Study) -> int:
    """Experiments started (a workspace was made for them): what `max_experiments` counts."""
    return sum(1 for t in trials(study) if "exp_dir" in t.user_attrs)


def spend(
    experiments: int,
    hours: dict[Rate, float],
    prices: dict[str, float],
    campaign_dir: Path,
    wall_seconds: float,
) -> Spend:
    # LLM dollars from the agent's ledger (0 when the agent never called the API).
    return Spend(
        experiments,
        wall_seconds / 3600,
        sum(hours.values()),
        dollars_of(hours, prices),
        dollars_spent(campaign_dir),
    )


def measure(study: optuna.Study, prices: dict[str, float], campaign_dir: Path, now: float) -> Spend:
    """A campaign's spend, summed over its study (`status`); the controller keeps its own sums."""
    return spend(
        experiments_launched(study),
        spent_hours(study),
        prices,
        campaign_dir,
        wall_seconds(study, campaign_dir, now),
    )


def wall_seconds(study: optuna.Study, campaign_dir: Path, now: float) -> float:
    """Seconds the campaign's controllers ran, by its controller.json; where that keeps no sum (a
    campaign an older version ran last), as that version counted them (`older_version_seconds`)."""
    record = read_json(campaign_dir / CONTROLLER_FILE)
    ran = ran_seconds(record, now)
    return ran if ran is not None else older_version_seconds(study, record)


def older_version_seconds(study: optuna.Study, record: dict[str, Any] | None) -> float:
    """The wall time of a campaign an older version ran last, whose controller.json (`record`)
    keeps no sum: as that version counted it, from the first start to its controller's last stop
    (or the study's last stamp where no record says), time stopped included; the time stopped
    since does not count. A resume goes on from it, and `status` says the same."""
    last = older_version_stop(record)
    last = _last_seen_in(study) if last is None else last
    return max(0.0, last - study.user_attrs.get("started_at", last))


def _last_seen_in(study: optuna.Study) -> float:
    """The latest moment the study records a controller at work: its first start, or a run's
    launch, start or end (where no controller.json says when the last controller was last seen)."""
    stamps = [study.user_attrs.get("started_at", 0.0)]
    for t in study.get_trials(deepcopy=False):
        stamps += [t.user_attrs.get(key) for key in ("launched_at", "started_at", "ended_at")]
    return max(float(s) for s in stamps if finite_number(s))


BUDGET_SETTINGS = {  # each limit as `exhausted` words it, and the campaign.budget setting that sets it
    "experiments": "max_experiments",
    "wall hours": "max_wall_hours",
    "GPU-hours": "max_gpu_hours",
    "dollars": "max_dollars",
}


def reached(value: float, limit: float) -> bool:
    """Whether `value` has reached `limit`, a sum of floats equal to it on paper included: the
    ledger's calls of $0.0525 and $0.1306 add up to 0.18309999999999998, and a campaign whose
    max_dollars was 0.1831, spent to the cent as status showed it, went on spending."""
    return value >= limit or math.isclose(value, limit, rel_tol=1e-9)


def exhausted(spend: Spend, budget: BudgetConfig) -> str | None:
    """The first limit reached, in words, or None. Experiments past the limit are the runs a
    decision waits for (re-runs, baselines): said, since "20 of 16" alone reads as a budget
    that did not hold."""
    spent = used(spend)
    for what, setting in BUDGET_SETTINGS.items():
        limit, value = getattr(budget, setting), spent[setting.removeprefix("max_")]
        if limit and reached(value, limit):
            said = f"{value:.4g} of {limit:.4g}"
            if setting == "max_experiments" and value > limit:
                past = value - limit
                said += f": past {limit:.4g}, only the {past:.4g} run{'s' if past > 1 else ''} a decision waited for"
            return f"{what} budget reached ({said})"
    return None


@dataclass(frozen=True)
class WaveDollars:
    """The dollar budget as a wave checks it before each of its calls: the campaign's own check
    (`exhausted`) on the campaign's spend when the wave was asked for, its LLM dollars read again
    from the agent's ledger, where the wave's calls go. (A check of the wave's calls against the
    dollars left was a second rule, and disagreed with the campaign's at the limit: `reached`'s
    tolerance is relative to the figures it compares.) GPU dollars stay at the ask's: the
    campaign's loop sees them grow, and stops the wave itself."""

    spend: Spend  # the campaign's, when the wave was asked for
    limit: float  # campaign.budget.max_dollars
    campaign_dir: Path

    def reached(self) -> str:
        """Why the wave makes no more calls, or "" while the budget holds."""
        llm = dollars_spent(self.campaign_dir)
        if not exhausted(replace(self.spend, llm_dollars=llm), BudgetConfig(max_dollars=self.limit)):
            return ""
        left = max(0.0, self.limit - self.spend.dollars)
        return (
            f"dollars budget reached: this wave's calls cost ${llm - self.spend.llm_dollars:.4g}, and "
            f"${left:.4g} of campaign.budget.max_dollars was left when it was asked for"
        )


def wave_dollars(spend: Spend, budget: BudgetConfig, campaign_dir: Path) -> WaveDollars | None:
    """The check a wave asked for at `spend` makes before each call (None: no dollar budget)."""
    return WaveDollars(spend, budget.max_dollars, campaign_dir) if budget.max_dollars else None


# Set by the Makefile's demo target to its name and to its ARGS: a user who typed `make demo` cannot
# add a setting to "the same command" without knowing the python command it runs, so the hint names
# make's, with the overrides it was given (a resume without `cluster.devices=cpu` is other hardware).
MAKE_TARGET_ENV = "AUTORESEARCH_MAKE_TARGET"
MAKE_ARGS_ENV = "AUTORESEARCH_MAKE_ARGS"


def going_on_past(
    stop_reason: str, budget: BudgetConfig | None = None, overrides: Sequence[str] = ()
) -> str | None:
    """What to type to go on after a budget stopped the campaign (a resume with the same budget
    stops at once), or None for any other stop. Given the `budget`, with the setting doubled: run
    by `make demo`, the make command, its other overrides (ARGS) kept; run by
    slurm/controller.sbatch, whose job has ended, the sbatch command with the controller's other
    `overrides` (its own "same command" is the script submitted again)."""
    for what, setting in BUDGET_SETTINGS.items():
        if not stop_reason.startswith(f"{what} budget reached"):
            continue
        if budget is not None:
            larger = f"campaign.budget.{setting}={getattr(budget, setting) * 2}"
            if target := os.environ.get(MAKE_TARGET_ENV):
                args = shlex.join([*_others(_words(os.environ.get(MAKE_ARGS_ENV, "")), setting), larger])
                return f'to go on, run it with a larger budget: make {target} ARGS="{args}"'
            if os.environ.get(READY_PID_ENV):
                submitted = shlex.join(["sbatch", BATCH_SCRIPT, *_others(overrides, setting), larger])
                return f"to go on, submit it again with a larger budget: {submitted}"
        return f"to go on, run the same command with a larger campaign.budget.{setting}"
    return None


BATCH_SCRIPT = "slurm/controller.sbatch"  # the controller as a Slurm job (README, docs/SLURM.md)


def _words(args: str) -> list[str]:
    """make's ARGS as the recipe's shell splits them (`'campaign.name=my run'` one word); split at
    spaces where its quotes do not close."""
    try:
        return shlex.split(args)
    except ValueError:
        return args.split()


def _others(overrides: Sequence[str], setting: str) -> list[str]:
    """`overrides` but for the budget `setting`'s own."""
    return [arg for arg in overrides if not arg.lstrip("+").startswith(f"campaign.budget.{setting}=")]


def used(spend: Spend) -> dict[str, float]:
    """What each budget counts, keyed as `remaining`'s."""
    return {
        "experiments": spend.experiments,
        "wall_hours": spend.wall_hours,
        "gpu_hours": spend.gpu_hours,
        "dollars": spend.dollars,
    }


def limits(budget: BudgetConfig) -> dict[str, float]:
    """Each budget with a limit set (0 is none), keyed as `remaining`'s: its `max_` setting's name."""
    set_ = {setting.removeprefix("max_"): getattr(budget, setting) for setting in BUDGET_SETTINGS.values()}
    return {name: float(limit) for name, limit in set_.items() if limit}


def remaining(spend: Spend, budget: BudgetConfig) -> dict[str, float]:
    spent = used(spend)
    return {name: max(0.0, limit - spent[name]) for name, limit in limits(budget).items()}
