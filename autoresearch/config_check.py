"""What a config must satisfy beyond its types, checked before a campaign touches anything.

Hydra and the schema in config.py catch typos and wrong types; this catches values that type-check
but cannot work (no baseline seeds, a negative budget, a knob train.py does not have, a tier on a
partition the cluster lacks), so a bad command fails in one line instead of deep in a run, and
never overwrites the config or state of an existing campaign.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from autoresearch.config import (
    AutoresearchConfig,
    SavedConfigError,
    campaign_dir_of,
    deadline_seconds,
    measurement,
    measurement_changes,
    read_saved_config,
    reading_saved_config,
)
from autoresearch.files import finite_number
from autoresearch.frontier import FILE as FRONTIER_FILE
from autoresearch.knob_types import constant_types, given_once, repeats, type_problem, unstorable_choice
from autoresearch.knobs import SETTABLE, read_knobs, unsettable
from autoresearch.open_checks import folder_lookup_refusal
from autoresearch.proposals import TIERS
from autoresearch.proposers.base import KnobSpec
from autoresearch.sampler import distribution_of, distributions, knob_changes, knob_specs
from autoresearch.storage_url import holds_password, masked, without_password

SCALES = ("gpt2", "cpu")  # the harness's (trainer/prepare.py, docs/TRAINER.md)
DATA_SOURCES = ("climbmix", "offline")
PARTITION_MODES = ("array", "workers")
KNOB_KINDS = ("float", "int", "categorical")
CLUSTER_KINDS = ("local", "slurm")
LOCAL_DEVICES = ("auto", "cpu")
AGENT_KINDS = ("offline", "claude")
TRACKING_KINDS = ("none", "wandb")
WANDB_MODES = ("online", "offline")
MAX_SEED = 2**32 - 1  # numpy's, which seeds Optuna's samplers
NAME_MAX = 255  # the longest file name ext4, XFS, Btrfs and APFS take

# Lower bounds of numeric settings (a budget of 0 means "no limit").
AT_LEAST: dict[str, float] = {
    "campaign.baseline_seeds": 1,
    "campaign.validate_seeds": 0,  # 0: a screen winner is kept on its one run, unconfirmed
    "campaign.wave_size": 1,
    "campaign.max_wave": 1,
    "campaign.queue_low_water": 0,
    "campaign.min_delta": 0,
    "campaign.promote_z": 0,
    "campaign.keep_z": 0,
    "campaign.max_retries": 0,
    "campaign.budget.max_experiments": 0,
    "campaign.budget.max_wall_hours": 0,
    "campaign.budget.max_gpu_hours": 0,
    "campaign.budget.max_dollars": 0,
    "cluster.cpu_slots": 1,
    "cluster.threads_per_slot": 0,
    "cluster.grace_seconds": 0,
    "cluster.max_queued": 1,
    "cluster.worker_start_tries": 1,
    "agent.thinking_budget": 0,
    "agent.max_inspect_turns": 0,
    "agent.max_context_tokens": 1,
    "agent.max_fix_attempts": 0,
    "agent.max_retries": 0,
    "agent.failures_before_fallback": 1,
    "agent.price_input": 0,
    "agent.price_output": 0,
    "agent.price_cache_read": 0,
    "agent.price_cache_write": 0,
    "tracking.plot_every": 1,
    "storage_retry_seconds": 0,
}
POSITIVE = ("cluster.poll_seconds", "agent.timeout_seconds")
# The most standard deviations of seed noise a change may be asked to beat the frontier by: one
# asked for more is never promoted, or never kept (a z of 95 is a percentage written for one).
Z_SETTINGS = ("campaign.promote_z", "campaign.keep_z")
MAX_Z = 10.0
PARTITION_AT_LEAST: dict[str, float] = {
    "slots": 0,
    "price_per_gpu_hour": 0,
    "gpus_per_node": 0,
    "cpus_per_task": 1,
    "mem_gb": 0,
    "time_limit_min": 1,
}


class ConfigError(ValueError):
    """A config that composes but cannot run."""


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _number(key: str, value: float, low: float = -math.inf, positive: bool = False) -> list[str]:
    """`value` must be finite and at least `low` (above 0 with `positive`): NaN fails no
    comparison, so `value < low` alone would let it through to the loop. A knob's bounds are
    untyped in the schema (an int stays one), so a string or a bool can come this far too."""
    if not finite_number(value):
        return [f"{key} must be a finite number, not {value!r}"]
    if positive and value <= 0:
        return [f"{key} must be positive, not {value}"]
    if value < low:
        return [f"{key} must be at least {low:g}, not {value}"]
    return []


def _choice(key: str, value: str, choices: tuple[str, ...]) -> list[str]:
    return [] if value in choices else [f"{key} must be one of {', '.join(choices)}, not {value!r}"]


def _campaign_problems(cfg: AutoresearchConfig) -> list[str]:
    c = cfg.campaign
    problems = []
    if name_problem := _name_problem(c.name):
        problems.append(name_problem)
    if not 0 <= c.seed <= MAX_SEED:
        problems.append(f"campaign.seed must be from 0 to {MAX_SEED} (what the samplers take), not {c.seed}")
    problems += _wave_problems(c.wave_size, c.max_wave)
    problems += _choice("campaign.scale", c.scale, SCALES)
    problems += _choice("campaign.data", c.data, DATA_SOURCES)
    if c.time_budget is not None:
        problems += [
            f"{p} (seconds, or null for the scale's)"
            for p in _number("campaign.time_budget", c.time_budget, positive=True)
        ]
    for key in ("train_py", "prepare_py"):
        if not Path(getattr(c, key)).is_file():
            problems.append(
                f"campaign.{key}: no file {getattr(c, key)} (relative paths start from {Path.cwd()})"
            )
    if cfg.agent.kind == "claude" and c.program_md and not Path(c.program_md).is_file():
        problems.append(
            f"campaign.program_md: no file {c.program_md} (relative paths start from {Path.cwd()}); "
            "campaign.program_md='' gives the agent the repository's trainer/program.md"
        )
    return problems


def _name_problem(name: str) -> str:
    """Why `name` cannot name the campaign's folder, or '': the checks that read the folder (a
    resume's config.yaml, its frontier) would meet the file system's refusal, a traceback."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        return f"campaign.name must be a folder name (letters, digits, '.', '_', '-'), not {name!r}"
    if len(name) > NAME_MAX:
        return (
            f"campaign.name is {len(name)} characters long, more than a folder name may be "
            f"({NAME_MAX} on Linux and macOS file systems): give a shorter one"
        )
    return ""


def _folder_path_usable(cfg: AutoresearchConfig) -> bool:
    """Whether the campaign folder's path can be looked up, for the checks that read the folder:
    else the file system refuses them (a traceback), and the start says why in its own line
    (`folder_lookup_refusal`), or the name's problem does."""
    return not _name_problem(cfg.campaign.name) and folder_lookup_refusal(campaign_dir_of(cfg)) is None


def _wave_problems(wave_size: int, max_wave: int) -> list[str]:
    """A wave is cut at max_wave (the offline proposer's rest dropped, Claude's wave refused by its
    tool): a wave_size above it is never asked for, only the cap, and the prompt would ask for both."""
    if wave_size <= max_wave:
        return []
    return [
        f"campaign.wave_size={wave_size} is above campaign.max_wave={max_wave}, the cap on a wave: no "
        f"wave would hold more than {max_wave} experiments; raise max_wave to {wave_size}, or lower wave_size"
    ]


def _knob_problems(cfg: AutoresearchConfig) -> list[str]:
    """Each knob must be a settable constant of the train.py the campaign runs: its frontier's, once
    it has one (a resume goes on from there, whatever campaign.train_py holds now)."""
    problems = []
    frontier = campaign_dir_of(cfg) / "frontier" / FRONTIER_FILE
    has_frontier = _folder_path_usable(cfg) and frontier.is_file()
    train_py = frontier if has_frontier else Path(cfg.campaign.train_py)
    source = train_py.read_text() if train_py.is_file() else None
    try:
        constants = read_knobs(source) if source is not None else None
        types = constant_types(source) if source is not None else {}
        unset = unsettable(source, [s.name for s in knob_specs(cfg)]) if source is not None else {}
    except SyntaxError as err:
        return [f"campaign.train_py: {train_py} does not parse: {err}"]
    for spec in knob_specs(cfg):
        key = f"campaign.knobs.{spec.name}"
        if constants is not None and spec.name not in constants:
            problems.append(_missing_constant(key, spec.name, train_py, list(constants)))
        elif spec.name in unset:
            problems.append(f"{key}: {unset[spec.name]} ({train_py}): {SETTABLE}")
        if spec.kind not in KNOB_KINDS:
            problems += _choice(f"{key}.kind", spec.kind, KNOB_KINDS)
            continue
        bounds = {} if spec.kind == "categorical" else {"low": spec.low, "high": spec.high}
        if unset := [f for f, v in bounds.items() if v is None]:  # (else int(None)'s TypeError, said as is)
            problems.append(
                f"{key}: {'an' if spec.kind == 'int' else 'a'} {spec.kind} knob needs low and high, and {' and '.join(unset)} "
                f"{'is' if len(unset) == 1 else 'are'} not set (a knob of choices is kind: categorical)"
            )
            continue
        unusable = [p for f, v in bounds.items() if v is not None for p in _number(f"{key}.{f}", v)]
        if unusable:  # (Optuna takes a NaN bound)
            problems += unusable
            continue
        if spec.kind == "int" and (cut := [f for f, v in bounds.items() if v is not None and v != int(v)]):
            problems.append(f"{key}.{cut[0]}={bounds[cut[0]]}: an int knob's bounds must be whole numbers")
            continue
        if problem := unstorable_choice(spec) or _range_problem(key, spec) or _unused_settings(key, spec):
            problems.append(problem)
            continue
        try:
            distribution_of(spec)
        except (ValueError, TypeError, OverflowError) as err:
            problems.append(f"{key}: {err}")
            continue
        declared, line = types.get(spec.name, (None, 0))
        if problem := type_problem(spec, declared, f"{train_py} line {line}"):
            problems.append(problem)
    return problems


def _missing_constant(key: str, name: str, train_py: Path, constants: list[str]) -> str:
    """A knob train.py lacks, with the constant meant where one is close (a typo, a lower-case name)."""
    by_case = {c.lower(): c for c in constants}
    close = difflib.get_close_matches(name.lower(), list(by_case), n=1, cutoff=0.75)
    fix = (
        f"did you mean {by_case[close[0]]}?"
        if close
        else "name one it assigns, NAME = value, or add it there"
    )
    return f"{key}: {train_py} has no module-level constant {name}: {fix}"


def _unused_settings(key: str, spec: KnobSpec) -> str:
    """Settings of another kind of knob, which the search would drop without a word: choices on an
    int or float knob (it draws from low to high, never from them), bounds or a log scale on a
    categorical one; or a choice given twice."""
    if spec.kind != "categorical":
        return (
            f"{key}: {'an' if spec.kind == 'int' else 'a'} {spec.kind} knob draws from low to high and never from choices: drop choices, or "
            "make it kind: categorical (without low and high)"
            if spec.choices
            else ""
        )
    if unused := [f for f in ("low", "high") if getattr(spec, f) is not None] + (["log"] if spec.log else []):
        return f"{key}: a categorical knob draws from its choices only: drop {' and '.join(unused)}"
    return _repeated_choice(key, spec.choices)


def _repeated_choice(key: str, choices: tuple[Any, ...]) -> str:
    """A choice given twice: the samplers draw a choice by its place in the list, so it would be
    drawn twice as often, and the offline proposer's step to the next place could land on the same
    value, an experiment that changes nothing. A study that searched the list with the repeat (one
    begun before it was refused) resumes with it given once (`sampler.stored_as`)."""
    if not (again := repeats(choices)):
        return ""
    return (
        f"{key}: choice {again[0]!r} is given twice, and would be drawn twice as often: give it once, "
        f"choices: {list(given_once(choices))} (a campaign that searched it with the repeat "
        "resumes with it so, each result kept)"
    )


def _range_problem(key: str, spec: KnobSpec) -> str:
    """Bounds Optuna would refuse, said as what to change (its own words name neither the setting
    nor the fix: "`low > 0` must hold for `log=True`")."""
    if spec.kind == "categorical":
        return (
            ""
            if spec.choices
            else f"{key}: a categorical knob needs choices, and has none: give choices: [a, b, ...]"
        )
    if spec.low > spec.high:  # type: ignore[operator]
        return f"{key}: low={spec.low} is above high={spec.high}: swap them"
    if spec.log and spec.low <= 0:  # type: ignore[operator]  # (an int knob's bounds are whole by now)
        above = "at least 1" if spec.kind == "int" else "above 0"
        return f"{key}: low={spec.low}, but a log-scale {spec.kind} knob needs low {above}: raise low, or set log: false"
    return ""


def _cluster_problems(cfg: AutoresearchConfig) -> list[str]:
    cluster = cfg.cluster
    problems = _choice("cluster.kind", cluster.kind, CLUSTER_KINDS)
    problems += _choice("cluster.devices", cluster.devices, LOCAL_DEVICES)
    if cluster.kind == "local" and len(cluster.partitions) != 1:
        problems.append(
            f"cluster.kind=local takes exactly one partition (its slots), not {len(cluster.partitions)}"
            + ("; a Slurm cluster's file sets kind: slurm" if len(cluster.partitions) > 1 else "")
        )
    for tier, partition in cluster.tiers.items():
        if tier not in TIERS:
            problems.append(f"cluster.tiers: unknown tier {tier!r} (the tiers are {', '.join(TIERS)})")
        elif partition not in cluster.partitions:
            have = ", ".join(cluster.partitions) or "none"
            problems.append(
                f"cluster.tiers.{tier} names partition {partition!r}; cluster.partitions has {have}"
            )
    if "screen" not in cluster.tiers:
        problems.append("cluster.tiers needs a screen tier: the partition new experiments run on")
    if cluster.kind == "slurm":
        problems += _idle_tier_problems(cfg) + _time_limit_problems(cfg) + _no_gpu_asked_problems(cfg)
    for name, part in cluster.partitions.items():
        problems += _choice(f"cluster.partitions.{name}.mode", part.mode, PARTITION_MODES)
        for field, low in PARTITION_AT_LEAST.items():
            problems += _number(f"cluster.partitions.{name}.{field}", getattr(part, field), low)
        problems += _gpus_per_job_problems(name, part.gres, part.gpus_per_node)
        problems += _double_gpu_request_problems(name, part.gres, part.gpus_per_node)
    return problems


# extra_sbatch options that ask Slurm for a GPU (submitit writes `_` as `-`)
GPU_SBATCH_OPTIONS = {"gres", "gpus", "gpus-per-node", "gpus-per-task", "gpus-per-socket"}


def _no_gpu_asked_problems(cfg: AutoresearchConfig) -> list[str]:
    """A GPU campaign's job that asks Slurm for no GPU is given none: each would stop at once, be
    re-queued, and stop again, until its retries are spent, all after the jobs were sent."""
    if not cfg.campaign.require_gpu:
        return []
    problems = []
    for name in dict.fromkeys(cfg.cluster.tiers.values()):
        part = cfg.cluster.partitions.get(name)
        asked = {str(key).replace("_", "-") for key in part.extra_sbatch} if part else set()
        if part and not (part.gres or part.gpus_per_node or asked & GPU_SBATCH_OPTIONS):
            problems.append(
                f"cluster.partitions.{name} asks Slurm for no GPU (gres and gpus_per_node unset), and this "
                "campaign trains on GPUs (campaign.require_gpu): set its gres, e.g. gpu:h100:1, or gpus_per_node=1"
            )
    return problems


def _double_gpu_request_problems(name: str, gres: str, gpus_per_node: int) -> list[str]:
    """A job asks for its GPU one way: with `gres` set, sbatch is never given `gpus_per_node`, so
    a value there would be dropped without a word."""
    if not (gres and gpus_per_node):
        return []
    return [
        f"cluster.partitions.{name}: gres={gres} and gpus_per_node={gpus_per_node} both ask for the GPU; "
        "set one of the two (with gres set, gpus_per_node is not passed to sbatch)"
    ]


def _gpus_per_job_problems(name: str, gres: str, gpus_per_node: int) -> list[str]:
    """An experiment trains on one GPU (train.py has no data parallelism), and a slot is billed as
    one GPU: a job asking for more would hold GPUs it leaves idle, uncounted in GPU-hours."""
    counts = {f"gres {item}": item.split(":")[-1] for item in gres.split(",") if item.split(":")[0] == "gpu"}
    counts["gpus_per_node"] = str(gpus_per_node)
    return [
        f"cluster.partitions.{name}: {what} asks for {count} GPUs per experiment; an experiment trains on one"
        for what, count in counts.items()
        if count.isdigit() and int(count) > 1
    ]


def _idle_tier_problems(cfg: AutoresearchConfig) -> list[str]:
    """A Slurm partition with no slots never runs its tier's experiments: the campaign would wait
    for them for ever. (With cluster=local, 0 slots means one per device; a validate tier is idle
    when nothing is confirmed, `validate_seeds=0`.)"""
    cluster, problems = cfg.cluster, []
    for tier, name in cluster.tiers.items():
        used = tier != "validate" or cfg.campaign.validate_seeds > 0
        if used and name in cluster.partitions and cluster.partitions[name].slots < 1:
            fix = (
                f"to confirm on the screen partition instead, set cluster.tiers.validate={cluster.tiers['screen']}"
                if tier == "validate" and cluster.tiers.get("screen", name) != name
                else "give it at least 1"
            )
            problems.append(
                f"cluster.partitions.{name}.slots={cluster.partitions[name].slots}, but the {tier} tier runs there "
                f"and would wait for ever: {fix}"
            )
    return problems


def _time_limit_problems(cfg: AutoresearchConfig) -> list[str]:
    """A job must hold one experiment to its deadline: with less, every long run ends at Slurm's
    time limit instead (a worker could never take one at all), and the config is what is wrong."""
    from autoresearch.fleet.slurm import SIGNAL_DELAY_S

    deadline = deadline_seconds(cfg)
    problems = []
    for name, part in cfg.cluster.partitions.items():
        usable = part.time_limit_min * 60 - SIGNAL_DELAY_S
        if part.time_limit_min >= 1 and usable < deadline:
            needed = math.ceil((deadline + SIGNAL_DELAY_S) / 60)
            problems.append(
                f"cluster.partitions.{name}.time_limit_min={part.time_limit_min} leaves {usable:.0f} s "
                f"for an experiment (Slurm signals {SIGNAL_DELAY_S} s before the limit), less than its "
                f"deadline of {deadline:.0f} s (2 x time budget + cluster.grace_seconds): give it at "
                f"least {needed}"
            )
    return problems


def _in_memory(url: URL) -> bool:
    """SQLite keeps a database in memory when it has no file name, or is named so in a URI."""
    name = url.database or ""
    return url.get_backend_name() == "sqlite" and (
        name in ("", ":memory:") or name.startswith("file::memory:") or url.query.get("mode") == "memory"
    )


def _relative_file(url: URL) -> bool:
    """A SQLite file named by a relative path, plain or in a URI (file:...)."""
    name = url.database or ""
    return url.get_backend_name() == "sqlite" and not Path(name.removeprefix("file:")).is_absolute()


def _storage_problems(url: str | None) -> list[str]:
    """An RDB URL must parse, must not carry a password (config.yaml and the log would keep it, in
    the URL proper or in its query) and must name a database that outlives the controller."""
    if not url:
        return []
    try:
        parsed = make_url(url)
    except ArgumentError:
        return [f"storage={masked(url)} is not a database URL (e.g. postgresql://user@host/db)"]
    except ValueError:  # SQLAlchemy's int() of the port
        return [f"storage={masked(url)}: the port must be a number (e.g. postgresql://user@host:5432/db)"]
    if holds_password(parsed):
        return [
            "storage: keep the password out of the URL, which the campaign saves in config.yaml; "
            "give it to the driver instead (PostgreSQL: PGPASSWORD or ~/.pgpass)"
        ]
    if _in_memory(parsed):
        return [
            f"storage={url} is an in-memory SQLite database, gone when the controller exits: "
            "name a file (sqlite:////path/to/study.db), or leave storage unset for the journal"
        ]
    if _relative_file(parsed):
        return [
            f"storage={url} is a SQLite file relative to the folder the command runs in, another "
            "file (a new, empty study) when it runs elsewhere, as a resume or a batch job may: "
            "give its absolute path (sqlite:////path/to/study.db)"
        ]
    return []


def _base_url_problems(url: str | None) -> list[str]:
    """An endpoint the SDK can reach, and no credentials in it: config.yaml would keep them, like
    a storage password (a key is as often put as the user name, or in the query)."""
    if not url:
        return []
    parts = urlsplit(url)
    if parts.username or parts.password or parts.query:
        return [
            "agent.base_url: keep credentials (user, password, query) out of the URL, which the "
            "campaign saves in config.yaml; the key goes in ANTHROPIC_API_KEY"
        ]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [
            f"agent.base_url must be an http(s) URL with a host (https://gateway.example:8080), not {url!r}"
        ]
    return []


def _agent_problems(cfg: AutoresearchConfig) -> list[str]:
    """Settings the API would refuse on every call (the agent's own check, run here too, so the
    command is refused before anything is written)."""
    if cfg.agent.kind != "claude":
        return []
    from autoresearch.agent.client import AgentSetupError, check_settings

    try:
        check_settings(cfg.agent)
    except AgentSetupError as err:
        return [str(err)]
    return []


def config_problems(cfg: AutoresearchConfig) -> list[str]:
    """Every reason this config cannot run, one line each; empty when it can."""
    problems = _campaign_problems(cfg) + _knob_problems(cfg) + _cluster_problems(cfg)
    problems += _storage_problems(cfg.storage) + _base_url_problems(cfg.agent.base_url)
    problems += _choice("agent.kind", cfg.agent.kind, AGENT_KINDS) + _agent_problems(cfg)
    problems += _choice("tracking.kind", cfg.tracking.kind, TRACKING_KINDS)
    if cfg.tracking.mode is not None:
        problems += _choice("tracking.mode", cfg.tracking.mode, WANDB_MODES)
    for key, low in AT_LEAST.items():
        problems += _number(key, _get(cfg, key), low)
    for key in POSITIVE:
        problems += _number(key, _get(cfg, key), positive=True)
    return problems + _z_problems(cfg)


def _z_problems(cfg: AutoresearchConfig) -> list[str]:
    return [
        f"{key}={z:g} asks a change to beat the frontier by {z:g} times the seed noise, which none will: "
        f"it counts standard deviations, not a percentage (2 is about 98% sure); give at most {MAX_Z:g}"
        for key in Z_SETTINGS
        if finite_number(z := _get(cfg, key)) and z > MAX_Z
    ]


def _storage_change(started: str | None, now: str | None, where: str) -> list[str]:
    """Another storage holds another study: a resume there would start from nothing, beside a
    folder whose frontier and experiments are the first study's (a password left out since, as
    the check asks, names the same database)."""
    if without_password(started) == without_password(now):
        return []
    return [
        f"storage: {where} keeps its study in {_storage_named(started)}, this command says "
        f"{_storage_named(now)}, which does not hold it (the campaign would start over there, "
        "beside this folder's frontier): keep the storage, or choose a new campaign.name"
    ]


def _storage_named(url: str | None) -> str:
    return repr(masked(url)) if url else "its folder's study.journal (storage unset)"


def resume_problems(cfg: AutoresearchConfig, saved_config: Path) -> list[str]:
    """A resumed campaign must measure as it started: results taken at another scale, on other data,
    with another budget, or in another study cannot be compared with the ones it has; and its study
    keeps each knob's kind, log scale and choices (`knob_changes`). Budgets, knobs (added, dropped,
    new bounds), slots and the proposer may change."""
    if not saved_config.is_file():
        return []
    try:
        saved = read_saved_config(saved_config)
        with reading_saved_config(saved_config):
            started, searched = measurement(saved), distributions(knob_specs(saved))
            stored = saved.storage
    except SavedConfigError as err:
        return [str(err)]
    where = str(saved_config.parent)
    return (
        measurement_changes(started, measurement(cfg), where)
        + _storage_change(stored, cfg.storage, where)
        + knob_changes(searched, knob_specs(cfg), where)
    )


def check_config(cfg: AutoresearchConfig, saved_config: Path | None = None) -> None:
    """Raise ConfigError naming every problem; `saved_config` is the campaign's, when it resumes."""
    resumes = saved_config is not None and _folder_path_usable(cfg)  # (else it has no folder)
    problems = config_problems(cfg) + (resume_problems(cfg, saved_config) if resumes else [])
    if problems:
        raise ConfigError("; ".join(problems))
