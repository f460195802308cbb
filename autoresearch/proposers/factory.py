"""Which proposer a campaign gets: Claude (agent=claude, which then needs its key) or offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autoresearch.config import AutoresearchConfig
from autoresearch.proposers.base import Proposer
from autoresearch.proposers.offline import OfflineProposer


def make_proposer(cfg: AutoresearchConfig, campaign_dir: Path, client: Any | None = None) -> Proposer:
    """`client` replaces the anthropic client (tests pass one whose HTTP transport is scripted)."""
    offline = OfflineProposer(seed=cfg.campaign.seed)
    if cfg.agent.kind == "offline":
        return offline
    if cfg.agent.kind != "claude":
        raise ValueError(f"unknown agent.kind {cfg.agent.kind!r} (claude or offline)")
    from autoresearch.agent.claude import ClaudeProposer

    program = Path(cfg.campaign.program_md)
    return ClaudeProposer(
        cfg.agent,
        campaign_dir,
        fallback=offline,
        client=client,
        program_md=program.read_text() if program.is_file() else "",
    )
