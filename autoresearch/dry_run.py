"""`autoresearch check +campaign=NAME [...]`: what a start with these settings would do and cost,
before a GPU-hour is spent on it.

The start's own checks (`start_checks`), then a read of the campaign's folder and study as `status`
reads them, with the refusals the start makes as it opens them (`open_checks`), then its data
step asked what it would do (`prepare.py --check`). Nothing is written or launched: no folder, log,
lock, journal, database file, study or data.
The plan it prints is the config's, with an estimate of the rate the slots work at (`estimate`).
"""

from __future__ import annotations

import ast
import math
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from autoresearch.budget import Spend, exhausted, going_on_past, hours_unit, measure, pool_prices, remaining
from autoresearch.config import SAVED_CONFIG, AutoresearchConfig, deadline_seconds, time_budget_seconds
from autoresearch.estimate import (
    ASSUMED,
    CpuLoad,
    Pace,
    Rate,
    campaign_rate,
    cpu_load,
    hours_until_bound,
    in_about,
    pool_rate,
    tier_paces,
    tiers_in_use,
)
from autoresearch.fleet.base import Pool
from autoresearch.folder_lock import lock_refusal
from autoresearch.frontier import start_source_of
from autoresearch.heartbeat import controller_state
from autoresearch.journal import JOURNAL_FILE, repairs_said
from autoresearch.launcher import data_step
from autoresearch.ledger import owed_runs
from autoresearch.open_checks import folder_refusal, study_refusal
from autoresearch.results import compare, rows
from autoresearch.resume_changes import setting_changes, tracking_move
from autoresearch.start_checks import Ready, StartRefused
from autoresearch.starting_files import harness_change, starting_harness, train_py_change
from autoresearch.status import experiment_counts
from autoresearch.storage_url import masked
from autoresearch.study import (
    NoStudyYet,
    StudyUnavailable,
    finished,
    first_read_wait,
    load_study,
    trials,
)
from autoresearch.tracking import wandb_mode
from autoresearch.unwaited import run_bounded

NOTHING_SPENT = Spend(0, 0.0, 0.0, 0.0, 0.0)
# How long the data step's check may take (an import of torch, a footer read per shard) before
# it is said to be unanswered: a cache on a hung mount would hold the dry run for ever (and one
# that holds it where KILL cannot end it, in uninterruptible sleep, is not waited for).
DATA_CHECK_TIMEOUT_S = 300.0


def existing_study(cfg: AutoresearchConfig, campaign_dir: Path) -> optuna.Study | None:
    """The campaign's study, read without creating anything (`load_study`); None where there is
    none yet. A storage that fails is waited for as the start waits for it (`first_read_wait`),
    then refused as the start would be."""
    try:
        wait = first_read_wait(cfg.storage, cfg.storage_retry_seconds)
        return load_study(campaign_dir, cfg.campaign.name, cfg.storage, wait)
    except NoStudyYet:
        return None
    except StudyUnavailable as err:
        raise StartRefused(str(err)) from None


def study_as_opened(cfg: AutoresearchConfig, ready: Ready) -> optuna.Study | None:
    """The study (None: none yet), once the refusals the start makes as it opens the folder and
    study pass, as they stand now: a folder that cannot be made or written, another controller
    holding it, a study that measured otherwise (`open_checks`). In the start's order."""
    folder = ready.campaign_dir
    if refused := folder_refusal(folder) or lock_refusal(folder):
        raise StartRefused(refused)
    study = existing_study(cfg, folder)
    if refused := study_refusal(study, cfg, ready.fleet.pools, folder):
        raise StartRefused(refused)
    return study


def plan_lines(cfg: AutoresearchConfig, ready: Ready) -> list[str]:
    """The plan, a `label  value` line each (as `status` lays out its head)."""
    folder = ready.campaign_dir
    study = study_as_opened(cfg, ready)
    spend = NOTHING_SPENT if study is None else measure(study, pool_prices(cfg), folder, time.time())
    paces = tier_paces(cfg, ready.fleet.pools, [] if study is None else finished(study))
    rate = campaign_rate(cfg, ready.fleet.pools, paces)
    lines = [
        ("check", _headline(cfg, study, spend)),
        *(("warning", said) for said in [*ready.warnings, *_resume_warnings(cfg, folder, study)]),
        ("campaign", _folder_said(folder, study)),
        *(("repair", said) for said in ([] if cfg.storage else repairs_said(folder))),
        *_resume_lines(folder, cfg),
        ("proposer", _proposer_said(cfg, ready)),
        ("tracking", _tracking_said(cfg)),
        ("storage", _storage_said(cfg, folder, study)),
        *([("data", _data_said(cfg, folder))] if cfg.campaign.prepare_data else []),
        *_tier_lines(cfg, ready, paces),
        ("estimate", _rate_said(rate, paces, ready)),
        ("assumes", ASSUMED),
        ("budgets", _budgets_said(cfg, spend, rate)),
        *_load_lines(cfg, ready.fleet.pools, spend, cpu_load()),
    ]
    width = max(len(label) for label, _ in lines) + 2
    return [f"{label:<{width}}{value}" for label, value in lines]


def _headline(cfg: AutoresearchConfig, study: optuna.Study | None, spend: Spend) -> str:
    """Whether the start would go ahead; where a budget is already spent, that it would stop at
    once (after the runs a decision waits for: `Ledger.owed`) and the setting to raise."""
    start = f"campaign {cfg.campaign.name} would start"
    if study is None or not (reached := exhausted(spend, cfg.campaign.budget)):
        return f"{start}; nothing was written or launched"
    owed = owed_runs(study)
    runs = f"{owed} queued run{'s' if owed > 1 else ''}"
    then = f"run only the {runs} a decision waits for, then stop" if owed else "stop at once"
    return f"{start} and {then}: {reached}; {going_on_past(reached)}; nothing was written or launched"


def _folder_said(folder: Path, study: optuna.Study | None) -> str:
    if not folder.exists():
        return f"new: {folder} does not exist yet (the start makes it)"
    if study is None:
        return f"{folder} holds no study yet: the start begins one there"
    table = rows(study)
    running, queued = (len(trials(study, state)) for state in (TrialState.RUNNING, TrialState.WAITING))
    compared = compare(table)  # (as the closing line: the plain means are over different seeds)
    frontier = f"; {compared.said()}" if compared is not None else ""
    counts = experiment_counts(Counter(r["status"] for r in table))
    return f"resumes {folder}: {counts}, {running} running, {queued} queued{frontier}"


def _resume_warnings(cfg: AutoresearchConfig, folder: Path, study: optuna.Study | None) -> list[str]:
    """What the start warns of where campaign.train_py or campaign.prepare_py changed since the
    campaign began from them: a resume goes on with its own (`starting_files`). A frontier whose
    study holds no trial is begun again from train.py (`Campaign._open_frontier`): nothing to say.
    And where W&B's project or entity changed, splitting the campaign's runs (`tracking_move`)."""
    bound = study is not None and study.get_trials(deepcopy=False)
    started_from = start_source_of(folder / "frontier") if bound else None
    train = None if started_from is None else train_py_change(Path(cfg.campaign.train_py), started_from)
    harness = harness_change(folder, Path(cfg.campaign.prepare_py).resolve())
    return [line for line in (train, harness, tracking_move(folder, cfg)) if line]


def _resume_lines(folder: Path, cfg: AutoresearchConfig) -> list[tuple[str, str]]:
    lines = []
    if (controller := controller_state(folder)) is not None:
        lines.append(("controller", controller))
    if (folder / SAVED_CONFIG).is_file():
        changes = setting_changes(folder / SAVED_CONFIG, cfg)
        lines.append(("changes", "; ".join(changes) if changes else "none since its last start"))
    return lines


def _proposer_said(cfg: AutoresearchConfig, ready: Ready) -> str:
    if cfg.agent.kind == "claude":
        checked = (
            "the model offered to it"
            if getattr(ready.proposer, "model_checked", False)
            else "the model not checked: the API's list of models could not be read"
        )
        return f"claude, model {cfg.agent.model} (its key found, {checked}); offline as fallback"
    return f"{ready.proposer.name} (seed {cfg.campaign.seed})"


def _tracking_said(cfg: AutoresearchConfig) -> str:
    t = cfg.tracking
    if t.kind != "wandb":
        return f"{t.kind} (results.tsv, progress.png and report.html in the campaign folder)"
    entity = f", entity {t.entity}" if t.entity else ""
    return f"W&B {wandb_mode(t)}, project {t.project}{entity}"


def _storage_said(cfg: AutoresearchConfig, folder: Path, study: optuna.Study | None) -> str:
    where = repr(masked(cfg.storage)) if cfg.storage else str(folder / JOURNAL_FILE)
    return f"{where} ({'holds the study' if study is not None else 'no study yet: the start makes it'})"


def _data_said(cfg: AutoresearchConfig, folder: Path) -> str:
    """What the start's data step would do, as the harness it runs answers `--check` in the
    step's own interpreter and environment (`data_step`); StartRefused, in the harness's line,
    where the step would fail (a cache that cannot be made or written, a data URL that is none)."""
    harness = starting_harness(folder, Path(cfg.campaign.prepare_py).resolve())
    if not _takes_check(harness.read_bytes()):  # (a copy kept from before it)
        return f"not checked: {harness} takes no --check"
    command, env = data_step(cfg, harness)
    try:
        answer = run_bounded([*command, "--check"], DATA_CHECK_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return f"not checked: {harness} --check gave no answer in {DATA_CHECK_TIMEOUT_S:.0f} s (a hung cache mount?)"
    if answer.returncode != 0:
        said = (answer.stderr.strip().splitlines() or [f"exit status {answer.returncode}"])[-1]
        raise StartRefused(f"its data step would fail: {said.removeprefix('error: ')}")
    return (answer.stdout.strip().splitlines() or [f"{harness} --check said nothing"])[-1]


def _takes_check(harness: bytes) -> bool:
    """Whether the harness's source declares the option --check (an `add_argument` call naming
    it), read from its syntax, not its text: a comment, its usage line or a --checkpoint option
    also held the text, and a harness that takes no --check is not asked, since one that ignores
    it would run the step itself. One that does not parse takes none."""
    try:
        tree = ast.parse(harness)
    except (SyntaxError, ValueError):
        return False
    return any(_names_option(node, "--check") for node in ast.walk(tree))


def _names_option(node: ast.AST, option: str) -> bool:
    """Whether `node` is a call `….add_argument(…, option, …)`."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "add_argument"
        and any(isinstance(arg, ast.Constant) and arg.value == option for arg in node.args)
    )


def _tier_lines(cfg: AutoresearchConfig, ready: Ready, paces: dict[str, Pace]) -> list[tuple[str, str]]:
    """Each tier's partition, slots, GPU and time limits, with what its slots do an hour."""
    seconds, deadline = time_budget_seconds(cfg), deadline_seconds(cfg)
    used = tiers_in_use(cfg, ready.fleet.pools)
    lines = []
    for tier, name in cfg.cluster.tiers.items():
        if tier not in used:
            said = (
                "unused: campaign.validate_seeds=0 keeps a screen winner on its one run"
                if cfg.campaign.validate_seeds <= 0
                else "re-runs promoted changes on the screen tier's slots"
            )
            lines.append((tier, said))
            continue
        pool, pace = used[tier], paces[tier]
        rate = pool_rate(pool, pace)
        job = (
            f", Slurm time limit {cfg.cluster.partitions[name].time_limit_min} min"
            if cfg.cluster.kind == "slurm"
            else ""
        )
        held = (
            f"a slot held a median {pace.seconds:.1f} s, from {pace.measured} experiments measured"
            if pace.measured
            else "each slot held for the training time only"
        )
        asked = cfg.cluster.partitions[name].slots
        capped = (
            f" (cluster.max_queued={cfg.cluster.max_queued} caps its {asked} slots)"
            if pool.slots < asked
            else ""
        )
        lines.append(
            (
                tier,
                f"partition {pool.partition}: {pool.slots} x {pool.gpu_type}{capped}, {seconds:g} s of training "
                f"per experiment, deadline {deadline:g} s (2 x {seconds:g} s + cluster.grace_seconds){job}; "
                f"{_experiments_said(rate, [pace])} ({held}), ${rate.dollars:.2f}/h",
            )
        )
    return lines


def _experiments_said(rate: Rate, paces: list[Pace]) -> str:
    """The experiments an hour: about the study's rate where every tier measured one, else up to
    (a tier's training time only is a lower bound of the time its slot is held)."""
    measured = all(pace.measured for pace in paces)
    return f"{'about' if measured else 'up to'} {rate.experiments:.1f} experiments/h"


def _rate_said(rate: Rate, paces: dict[str, Pace], ready: Ready) -> str:
    unit = hours_unit(p.gpu_type for p in ready.fleet.pools.values())
    measured = sum(pace.measured for pace in paces.values())
    unmeasured = " and ".join(tier for tier, pace in paces.items() if not pace.measured)
    if not measured:
        source = "from the config: the training time alone, which start-up and evaluation add to"
    elif unmeasured:
        source = f"from {measured} experiments measured, and the training time alone on the {unmeasured} tier"
    else:
        source = f"from {measured} experiments measured"
    return (
        f"{_experiments_said(rate, list(paces.values()))}, {rate.slot_hours:g} {unit}/h, "
        f"${rate.dollars:.2f}/h ({source})"
    )


# The least stretch of a CPU-second the load line says: by default the slots' threads fill the
# cores, so any load at all stretches it a little, and a quiet machine's 0.05 read as a loaded one.
# Below this the quiet estimate's own error is larger (the demo's 15 s held a slot 19-30 s).
LOAD_FACTOR_SAID = 1.25


def _load_lines(
    cfg: AutoresearchConfig, pools: dict[str, Pool], spend: Spend, load: CpuLoad | None
) -> list[tuple[str, str]]:
    """The estimate again at this machine's present load, where it slows CPU slots that have
    nothing measured: they train for CPU-seconds, which a loaded machine stretches in wall time (a
    busy 2-core machine ran the demo's 15 s runs in 100 s and more), so the budgets' times above
    were a quiet machine's. Its own line, not the estimate's: the load is a minute's, and may not
    last. None on a quiet machine (`LOAD_FACTOR_SAID`), where the rate is measured (its times
    hold their load), or on Slurm, whose CPU slots run on its nodes, not under this machine's load."""
    if cfg.cluster.kind != "local":
        return []
    paces = tier_paces(cfg, pools, [], load)
    factor = max(pace.load_factor for pace in paces.values())
    if load is None or factor < LOAD_FACTOR_SAID or spend.experiments:
        return []
    rate = campaign_rate(cfg, pools, paces)
    left = remaining(spend, cfg.campaign.budget)
    binds = hours_until_bound(left, rate)
    first = min(binds, key=lambda what: binds[what]) if binds else ""
    ending = (
        f"; max_{first} reached {in_about(binds[first])}" if first and not math.isinf(binds[first]) else ""
    )
    return [
        (
            "load",
            f"load average {load.load:.1f} on {load.cores} CPUs, and the slots' own threads: each CPU-second "
            f"of training takes about {factor:.1f} s, so up to {rate.experiments:.1f} experiments/h{ending} "
            "(while this load lasts)",
        )
    ]


def _budgets_said(cfg: AutoresearchConfig, spend: Spend, rate: Rate) -> str:
    """Each budget set, what is left of it, and when it would bind at the estimate's rate."""
    budget = cfg.campaign.budget
    if reached := exhausted(spend, budget):
        return f"{reached}: no new experiment would start (the first line says what to raise)"
    left = remaining(spend, budget)
    if not left:
        return "none set: the campaign runs until stopped (Ctrl-C)"
    binds = hours_until_bound(left, rate)
    said = [f"max_{what}: {left[what]:.4g} left, {_binds(h)}" for what, h in binds.items()]
    first = min(binds, key=lambda what: binds[what])
    ending = f"; max_{first} binds first" if not math.isinf(binds[first]) else ""
    return "; ".join(said) + ending


def _binds(hours: float) -> str:
    return "never reached (the slots cost nothing)" if math.isinf(hours) else f"reached {in_about(hours)}"
