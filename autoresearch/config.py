"""Structured configs: the schema behind conf/, so a typo in an override fails before anything runs.

Each config group (campaign, cluster, agent, tracking) has a dataclass here and YAML files in conf/
that fill it. Hydra validates every override against these types.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

SAVED_CONFIG = "config.yaml"  # the resolved config, saved in the campaign folder once it is set up
_ABSENT = object()


@dataclass
class KnobConfig:
    """A declared knob: an UPPER_CASE constant of train.py the search may set."""

    kind: str = "float"  # float | int | categorical
    low: Any = None  # a number; Any, not float, so an int stays one (--help shows 32, not 32.0)
    high: Any = None
    log: bool = False
    choices: list[Any] = field(default_factory=list)


@dataclass
class BudgetConfig:
    """Limits: when one is reached no new experiment starts (0 = no limit); only the runs owed
    still run: re-runs of changes already promoted, so each is decided, and experiments the
    cluster lost, whose first launch the budget counted."""

    max_experiments: int = 0
    max_wall_hours: float = 0.0
    max_gpu_hours: float = 0.0
    max_dollars: float = 0.0


@dataclass
class CampaignConfig:
    name: str = MISSING
    scale: str = "gpt2"  # harness scale: gpt2 | cpu
    data: str = "climbmix"  # harness data source: climbmix | offline
    time_budget: float | None = None  # seconds of training per experiment; None = the scale's default
    require_gpu: bool = False  # a job that sees no CUDA GPU stops at once (lost) instead of training on CPU
    train_py: str = "trainer/train.py"  # starting point of the frontier
    prepare_py: str = "trainer/prepare.py"  # the read-only harness
    program_md: str = "trainer/program.md"  # the agent's standing instructions
    prepare_data: bool = True  # run the harness's data + tokenizer step once before the first launch
    baseline_seeds: int = 2  # baseline repeats at the start: the first measure of noise
    validate_seeds: int = 2  # re-runs that confirm a promoted change, seed for seed (0 = keep on one run)
    wave_size: int = 8  # experiments asked of the proposer per wave
    max_wave: int = 16  # cap on a wave after grid expansion (at least wave_size)
    queue_low_water: int = 0  # ask for the next wave when fewer are queued (0 = number of slots)
    synchronous: bool = False  # wait for a whole wave to finish before the next (for comparison)
    fill_idle_slots: bool = True  # free slots take inner-sampler candidates while the proposer thinks
    min_delta: float = 0.0005  # a keep must beat the frontier by at least this much val_bpb
    promote_z: float = 1.0  # and one run must beat it by this many noise std to be re-run (promoted)
    keep_z: float = 2.0  # and the re-runs' mean must beat it by this many standard errors to be kept
    max_retries: int = (
        2  # re-runs of an experiment lost to infrastructure (not its crash; preemptions, requeues free)
    )
    seed: int = 0  # seeds the offline proposer and the inner sampler
    knobs: dict[str, KnobConfig] = field(default_factory=dict)
    budget: BudgetConfig = field(default_factory=BudgetConfig)


@dataclass
class PartitionConfig:
    """One pool of slots: a local device set or a Slurm partition."""

    slots: int = 1
    gpu_type: str = "cpu"
    price_per_gpu_hour: float = 0.0
    # Slurm only:
    partition: str = ""
    gres: str = ""  # e.g. gpu:h100:1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float = 0.0
    time_limit_min: int = 60
    account: str = ""
    qos: str = ""
    constraint: str = ""
    exclude: str = ""
    setup: list[str] = field(default_factory=list)
    extra_sbatch: dict[str, Any] = field(default_factory=dict)
    mode: str = "array"  # array (one task per experiment) | workers (long-lived, pull from the queue)


@dataclass
class ClusterConfig:
    kind: str = "local"  # local | slurm
    partitions: dict[str, PartitionConfig] = field(default_factory=dict)
    tiers: dict[str, str] = field(default_factory=lambda: {"screen": "local", "validate": "local"})
    devices: str = "auto"  # local: "auto" (a slot per visible GPU or MIG instance, else CPU slots) or "cpu"
    cpu_slots: int = 2  # local slots when there is no GPU
    threads_per_slot: int = 0  # local CPU slots: torch threads each (0 = cores / slots)
    grace_seconds: float = 120.0  # deadline = 2 x time budget + grace
    poll_seconds: float = 1.0
    submitit_dir: str = "submitit"  # under the campaign folder
    max_queued: int = 256  # Slurm: caps each partition's slots (its jobs queued or running at once)
    # Slurm worker mode: worker starts of a partition that fail in a row (jobs that failed before
    # their worker began), none alive, before its queued experiments are lost, a retry each. The
    # back-off between them doubles from 15 s, so 5 span about 4 minutes: a shared file system's
    # hiccup of a minute or two, which must not spend the whole queue's retries, passes first.
    worker_start_tries: int = 5


@dataclass
class AgentConfig:
    kind: str = "offline"  # offline | claude
    model: str = "claude-sonnet-5-5"
    max_tokens: int = 16000
    thinking_budget: int = 0  # 0 = the model's default thinking; >0 = manual extended thinking
    base_url: str | None = None  # None = the SDK's default (ANTHROPIC_BASE_URL is honoured)
    max_inspect_turns: int = 4  # read-only tool calls allowed before the proposal, per wave
    max_context_tokens: int = 60000  # bound on one wave's conversation (the prompt gets 70% of it)
    max_fix_attempts: int = 2  # times a crashed experiment's fix may be proposed
    max_retries: int = 4  # SDK retries on 429, 529, timeouts, connection errors
    failures_before_fallback: int = 3  # failed waves in a row before Claude is tried every 3rd wave only
    timeout_seconds: float = 600.0  # the SDK's own: it expects a whole 16,000-token reply to take up to 450 s
    # Dollars per million tokens.
    price_input: float = 2.0
    price_output: float = 10.0
    price_cache_read: float = 0.2
    price_cache_write: float = 2.5


@dataclass
class TrackingConfig:
    kind: str = "none"  # none | wandb
    plot_every: int = 5  # re-draw results.tsv and progress.png every N results
    # W&B only:
    project: str = "autoresearch"
    entity: str | None = None  # None = the default entity of the W&B login
    mode: str | None = None  # online | offline | None (WANDB_MODE, else online)


@dataclass
class AutoresearchConfig:
    campaign: CampaignConfig = MISSING
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    runs_dir: str = "runs"  # campaigns live in <runs_dir>/<campaign.name>/
    storage: str | None = None  # None = <campaign dir>/study.journal; or an RDB URL (postgresql://...)
    storage_retry_seconds: float = 300.0  # a failing database is tried again until this long has passed


def time_budget_seconds(cfg: AutoresearchConfig) -> float:
    """Training seconds per experiment: the campaign's, else the harness scale's default."""
    if cfg.campaign.time_budget:
        return float(cfg.campaign.time_budget)
    return 300.0 if cfg.campaign.scale == "gpt2" else 20.0


def deadline_seconds(cfg: AutoresearchConfig) -> float:
    """The hard limit on one experiment: twice its budget plus start-up and evaluation grace."""
    return 2 * time_budget_seconds(cfg) + cfg.cluster.grace_seconds


def campaign_dir_of(cfg: AutoresearchConfig) -> Path:
    """The campaign's folder: where its study, frontier and experiments live."""
    return Path(cfg.runs_dir) / cfg.campaign.name


BACKSTOP_FLOOR_S = 30.0  # the runner's start and its own kill (up to 3 x 5 s), room to spare


def backstop_grace(cluster: ClusterConfig) -> float:
    """How long after an experiment's deadline the fleet kills what its runner has not: a grace,
    but never less than `BACKSTOP_FLOOR_S`, else (cluster.grace_seconds=0) the fleet's kill, its
    clock started before the runner's, would beat the runner's and make a timeout a loss."""
    return max(cluster.grace_seconds, BACKSTOP_FLOOR_S)


def measurement(cfg: Any) -> dict[str, Any]:
    """What decides how a campaign measures val_bpb, from its config or its saved config.yaml: a
    resume must keep it (`measurement_changes`). The study keeps it too (`Campaign.open`), by these
    keys: renamed, a study's record would no longer be checked."""
    return {
        "campaign.scale": cfg.campaign.scale,
        "campaign.data": cfg.campaign.data,
        "seconds of training per experiment": time_budget_seconds(cfg),
    }


def measurement_changes(started: dict[str, Any], now: dict[str, Any], where: str) -> list[str]:
    """Why a resume of the campaign in `where` would measure otherwise than it started, a line each."""
    return [
        f"{key}: {where} started with {started[key]!r}, this command says {now[key]!r} "
        "(results measured otherwise cannot be compared: keep it, or choose a new campaign.name)"
        for key in started
        if key in now and started[key] != now[key]
    ]


class SavedConfigError(ValueError):
    """A campaign's saved config that cannot be read back; the message says which and what to do."""


def _unreadable(path: Path, err: object) -> SavedConfigError:
    why = (str(err).splitlines() or [type(err).__name__])[0]
    return SavedConfigError(
        f"{path} cannot be read as a campaign's config ({why}): if a kill or an edit broke it, "
        "remove it and run the campaign's command again, which writes it anew (the study keeps the "
        "scale, data and training seconds a resume is checked against, unless it began before it "
        "kept them: then give the ones it started with)"
    )


def read_saved_config(path: Path) -> DictConfig:
    """A campaign's config.yaml, for reading back (`reading_saved_config`); SavedConfigError where it
    does not parse, or lacks campaign.name or storage (written last: a file cut short lacks it)."""
    try:
        saved = OmegaConf.load(path)
        found = {key: OmegaConf.select(saved, key, default=_ABSENT) for key in ("campaign.name", "storage")}
    except (UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as err:
        raise _unreadable(path, err) from None
    if not isinstance(saved, DictConfig):
        raise _unreadable(path, "not a mapping of settings")
    if missing := [key for key, value in found.items() if value is _ABSENT]:
        raise _unreadable(path, f"no {' or '.join(missing)}")
    if wrong := _wrong_type(saved):
        raise _unreadable(path, wrong)
    return saved


def with_defaults(saved: DictConfig) -> DictConfig:
    """A saved config on the schema, typed: settings an older version's config.yaml lacks take
    their defaults, and those the schema does not know (an older version's) are left out. Raises
    OmegaConfBaseException on a value not of its type, or on an unknown key it cannot name (one
    with a dot)."""
    schema, known = OmegaConf.structured(AutoresearchConfig), copy.deepcopy(saved)
    while True:
        try:
            return OmegaConf.merge(schema, known)
        except ConfigKeyError as err:  # unknown here: left out, and tried again
            parent, _, key = str(err.full_key).rpartition(".")
            holder = OmegaConf.select(known, parent) if parent else known
            if not isinstance(holder, DictConfig) or key not in holder:
                raise
            del holder[key]


def _wrong_type(saved: DictConfig) -> str | None:
    """The first setting the schema knows whose value is not of its type (`price_per_gpu_hour: cheap`,
    hand-edited), which the report would fail on; settings it does not know (an older version's)
    are passed over."""
    try:
        with_defaults(saved)
        return None
    except ConfigKeyError:
        return None  # (a key it cannot name, such as one with a dot: the check ends there)
    except OmegaConfBaseException as err:  # (a value of another type; a list for a mapping)
        where = f"{err.full_key}: " if getattr(err, "full_key", None) else ""
        return where + (str(err).splitlines() or [type(err).__name__])[0]


@contextlib.contextmanager
def reading_saved_config(path: Path) -> Iterator[None]:
    """What is read from a saved config: a setting an edit removed or made a list is a
    SavedConfigError line too, not OmegaConf's traceback."""
    try:
        yield
    except OmegaConfBaseException as err:
        raise _unreadable(path, err) from None


def register_configs() -> None:
    """Register the schema so Hydra checks every YAML file and override against it: each group's
    file merges into its typed field of AutoresearchConfig. (No per-group schema entries: Hydra
    would list them among the campaigns, clusters and agents to choose from.)"""
    ConfigStore.instance().store(name="autoresearch_schema", node=AutoresearchConfig)
