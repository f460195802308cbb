"""The proposer interface and the campaign context every proposer is given.

The engine builds a `CampaignContext` from the study (the single source of truth) each time it
wants candidates; a proposer returns a `Wave`. Proposers hold no campaign state of their own, so a
restarted controller gets the same behaviour from the study alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from autoresearch.config import CampaignConfig
from autoresearch.proposals import Wave

if TYPE_CHECKING:
    from autoresearch.budget import WaveDollars


@dataclass(frozen=True)
class KnobSpec:
    """A declared search dimension: an UPPER_CASE constant of train.py and its range."""

    name: str
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ExperimentRecord:
    """One experiment, finished or in flight, as proposers see it (read-only: the campaign keeps
    the records of finished trials and hands the same ones to every wave)."""

    number: int
    description: str
    # the study's (keep, discard, baseline, rerun, crash, skip, ...) or queued | running | confirming
    status: str
    val_bpb: float | None
    tier: str
    knobs: dict[str, Any]
    reason: str = ""
    source: str = ""
    delta: float | None = None  # val_bpb minus the frontier it was judged against
    parent: str = ""  # frontier commit the experiment was built on
    # when its run ended (or it was dropped), epoch seconds: on a fleet trials end out of order,
    # so this, not the number, says which results came in last
    ended_at: float | None = None


@dataclass(frozen=True)
class KeepRule:
    """The margins the engine keeps a change by (`policy.NoiseAwarePolicy`, from the campaign
    config): a proposer told them aims at gains that can be kept. Defaults: the config's."""

    min_delta: float = CampaignConfig.min_delta
    promote_z: float = CampaignConfig.promote_z
    keep_z: float = CampaignConfig.keep_z
    validate_seeds: int = CampaignConfig.validate_seeds  # re-runs of a promoted change; 0: none
    confirm_tier: str | None = "validate"  # where they run; None: a screen winner is kept at once


@dataclass
class CampaignContext:
    """What a proposer may know when it proposes: bounded in size, whatever the campaign's length.

    `history` holds every finished experiment (oldest first), then those queued or running, so
    offline searchers can fit models;
    prompt-building proposers must summarise it, not paste it.
    """

    frontier_source: str
    frontier_val_bpb: dict[str, float]  # tier -> value of the current frontier on that tier
    lineage: list[ExperimentRecord]  # kept changes, oldest first
    history: list[ExperimentRecord]
    knobs: list[KnobSpec]
    knob_values: dict[str, Any]  # the frontier's current values of every UPPER_CASE constant
    noise_std: float | None  # measured seed-to-seed standard deviation of val_bpb, if known
    budget_left: dict[str, float]  # experiments, wall_hours, gpu_hours, dollars: what remains
    tiers: dict[str, str]  # tier -> hardware description ("h100 x13", "cpu x2")
    wave_size: int  # how many experiments the engine would like in this wave
    max_wave: int  # the most it takes from one wave, grid cells included (campaign.max_wave)
    rejected: list[str] = field(default_factory=list)  # engine's reasons for dropping earlier proposals
    campaign_dir: str = ""
    frontier_commit: str = ""
    harness: dict[str, str] = field(default_factory=dict)  # scale, data, time budget per experiment
    keep_rule: KeepRule = field(default_factory=KeepRule)
    # crashed trial -> repairs of it proposed so far (`fixes.fix_attempts`, the count the engine
    # refuses one more by): a proposer can keep within agent.max_fix_attempts in the wave itself
    fix_attempts: dict[int, int] = field(default_factory=dict)
    # Why the campaign no longer wants this wave ("" while it does: a budget reached, the controller
    # leaving), asked before each paid call: set by the pump that asked for the wave, so a stop is
    # that campaign's alone (`pump.BackgroundPump.stop`).
    stopping: Callable[[], str] = field(default=lambda: "", repr=False, compare=False)
    # The dollar budget as the wave's calls reach it, by the campaign's own rule (None: no budget):
    # the pump stops the wave on it (`budget.WaveDollars`).
    dollar_budget: WaveDollars | None = field(default=None, repr=False, compare=False)


class Proposer(Protocol):
    """Anything that turns a campaign context into a wave of candidates."""

    name: str

    def propose(self, context: CampaignContext) -> Wave: ...
