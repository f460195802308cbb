"""Every check a campaign's start makes before it writes anything, in the order it makes them.

One function for both callers: a run goes on to take the folder, `autoresearch check` (a dry run)
prints its plan and stops. So a dry run that passes means the start's checks pass, and one that
fails says what the start would have said, in the same line.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from autoresearch.config import SAVED_CONFIG, AutoresearchConfig, campaign_dir_of
from autoresearch.fleet.factory import FleetPlan, plan_fleet
from autoresearch.logs import held_warnings
from autoresearch.proposers.base import Proposer


class StartRefused(Exception):
    """The campaign cannot start: the one line that says why (`error: ` is the caller's)."""


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
    proposer (its key, its model), git (the frontier's) and the study's database; raise StartRefused with the first
    refusal. Writes nothing: the caller sets logging up first (`logs.setup_logging`), and the log,
    the checks' warnings with it, is held for controller.log until the start takes the folder
    (`logs.log_to_file`). The refusals the start makes as it opens the folder and study are
    `open_checks`'."""
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
    try:  # (no GPU for a GPU campaign, Slurm's commands missing, a partition Slurm lacks, no W&B key)
        fleet = plan_fleet(cfg.cluster, cfg.campaign.require_gpu)
        check_credentials(cfg.tracking)
    except (ValueError, CampaignError, TrackingSetupError) as err:
        raise StartRefused(str(err)) from None
    try:
        proposer = make_proposer(cfg, campaign_dir)
    except (ValueError, AgentSetupError) as err:  # (a refused key, an unknown model)
        raise StartRefused(str(err)) from None
    if shutil.which("git") is None:
        raise StartRefused("git is not on PATH: the frontier (kept changes) is a git lineage; install git")
    if refused := database_refusal(cfg, campaign_dir):  # (before the start makes the folder)
        raise StartRefused(refused)
    return Ready(campaign_dir, fleet, proposer, tuple(held_warnings()))
