"""Every check a campaign's start makes before it writes anything, in the order it makes them.

One function for both callers: a run goes on to take the folder, `autoresearch check` (a dry run)
prints its plan and stops. So a dry run that passes means the start's checks pass, and one that
fails says what the start would have said, in the same lines: every refusal, a line each.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from autoresearch.config import SAVED_CONFIG, AutoresearchConfig, campaign_dir_of
from autoresearch.fleet.factory import FleetPlan, plan_fleet
from autoresearch.logs import held_warnings
from autoresearch.proposers.base import Proposer

T = TypeVar("T")


class StartRefused(Exception):
    """The campaign cannot start: a line for each reason (`error: ` is the caller's, `said`)."""

    def __init__(self, *reasons: str) -> None:
        super().__init__("\n".join(reasons))
        self.reasons = reasons

    def said(self) -> str:
        """Each reason on a line of its own, as the start and the check print them."""
        return "\n".join(f"error: {reason}" for reason in self.reasons)


@dataclass(frozen=True)
class Ready:
    """What the checks found, for the start to build on (or the dry run to show)."""

    campaign_dir: Path
    fleet: FleetPlan
    proposer: Proposer
    warnings: tuple[str, ...] = ()  # what the checks warned of (a partition of a list never used)


def start_checks(cfg: AutoresearchConfig) -> Ready:
    """Check the config (against the folder's config.yaml on a resume), the fleet (a GPU for a
    GPU campaign, Slurm's commands, partitions, GRES, QOS wall), the tracking credentials, the
    proposer (its key, its model), git (the frontier's) and the study's database; raise StartRefused
    with every refusal, so a user fixes them all before the next try. A bad config, or a folder
    that cannot be looked up, is refused alone: the other checks read them. Writes nothing: the
    caller sets logging up first (`logs.setup_logging`), and the log, the checks' warnings with it,
    is held for controller.log until the start takes the folder (`logs.log_to_file`). The refusals
    the start makes as it opens the folder and study are `open_checks`'."""
    from autoresearch.agent.client import AgentSetupError
    from autoresearch.campaign import CampaignError
    from autoresearch.config_check import ConfigError, check_config
    from autoresearch.open_checks import database_refusal, folder_lookup_refusal
    from autoresearch.proposers.factory import make_proposer
    from autoresearch.tracking import TrackingSetupError, check_credentials

    campaign_dir = campaign_dir_of(cfg)
    try:
        check_config(cfg, campaign_dir / SAVED_CONFIG)
    except ConfigError as err:
        raise StartRefused(f"bad config: {err}") from None
    if refused := folder_lookup_refusal(campaign_dir):  # (its config's checks read past it)
        raise StartRefused(refused)
    refusals: list[str] = []
    # (no GPU for a GPU campaign, Slurm's commands missing, a partition Slurm lacks, no W&B key)
    fleet = _checked(
        refusals, lambda: plan_fleet(cfg.cluster, cfg.campaign.require_gpu), ValueError, CampaignError
    )
    _checked(refusals, lambda: check_credentials(cfg.tracking), TrackingSetupError)
    # (a refused key, an unknown model)
    proposer = _checked(refusals, lambda: make_proposer(cfg, campaign_dir), ValueError, AgentSetupError)
    if shutil.which("git") is None:
        refusals.append("git is not on PATH: the frontier (kept changes) is a git lineage; install git")
    if refused := database_refusal(cfg, campaign_dir):  # (before the start makes the folder)
        refusals.append(refused)
    if refusals:
        raise StartRefused(*refusals)
    assert fleet is not None and proposer is not None  # (each refused otherwise)
    return Ready(campaign_dir, fleet, proposer, tuple(held_warnings()))


def _checked(refusals: list[str], check: Callable[[], T], *refused_as: type[Exception]) -> T | None:
    """`check`'s answer; None where it refused, its line added to `refusals`."""
    try:
        return check()
    except refused_as as err:
        refusals.append(str(err))
        return None
