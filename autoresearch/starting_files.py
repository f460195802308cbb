"""What a campaign measures with: its own copy of the harness, and the train.py it started from.

Both are taken when it starts and kept in the campaign folder (`harness/prepare.py`, the
frontier's first commit). Once an experiment has run, a resumed campaign goes on with them
whatever `campaign.prepare_py` and `campaign.train_py` hold by then: a `git pull` or an edit
between two runs would otherwise measure later results with another metric than earlier ones, or
be silently ignored. Until then (a first start whose data step failed or was stopped) nothing is
bound, and they are taken again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from autoresearch.files import write_atomic
from autoresearch.workspace import HARNESS_FILE, sha256_file

log = logging.getLogger("autoresearch")

HARNESS_COPY = Path("harness") / HARNESS_FILE


def first_run_harness(campaign_dir: Path) -> Path | None:
    """The harness copy of the first experiment given a workspace (the lowest-numbered folder that
    has one), or None while none has: an experiment that ran is what binds a campaign to its files."""
    folder = campaign_dir / "experiments"
    names = sorted(os.listdir(folder)) if folder.is_dir() else []
    return next((path for name in names if (path := folder / name / HARNESS_FILE).is_file()), None)


def own_harness(campaign_dir: Path, configured: Path) -> Path:
    """The campaign's harness: a copy of `configured`, taken again at each start until an
    experiment has run. A campaign that ran before copies were kept takes its first experiment's
    copy, the harness it measured with."""
    own = campaign_dir / HARNESS_COPY
    if (source := starting_harness(campaign_dir, configured)) != own:
        own.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(own, source.read_bytes())
    if changed := harness_change(campaign_dir, configured):
        log.warning(changed)
    return own


def starting_harness(campaign_dir: Path, configured: Path) -> Path:
    """The file whose copy a start measures with (`own_harness`), read only: the campaign's own
    copy once an experiment has run, else the first experiment's, else `configured`."""
    own, first = campaign_dir / HARNESS_COPY, first_run_harness(campaign_dir)
    return own if first is not None and own.is_file() else first or configured


def harness_change(campaign_dir: Path, configured: Path) -> str | None:
    """Why a start measures with another harness than `configured`, or None; read only, so that
    `autoresearch check` says what the start would (`own_harness` takes the copy first)."""
    own, first = campaign_dir / HARNESS_COPY, first_run_harness(campaign_dir)
    if first is None or sha256_file(own if own.is_file() else first) == sha256_file(configured):
        return None
    return (
        f"campaign.prepare_py ({configured}) is not the harness this campaign started with: it goes on "
        f"measuring with its own copy, {own}, so that its results stay comparable (a new "
        "campaign.name measures with the new one)"
    )


def train_py_change(configured: Path, started_from: str) -> str | None:
    """Why a start does not go on from `configured`, or None: a campaign goes on from its
    frontier, begun from `started_from`, so a starting train.py changed since is not used."""
    if configured.read_text() == started_from:
        return None
    return (
        f"campaign.train_py ({configured}) is not the train.py this campaign started from: it goes on "
        "from its frontier (frontier/train.py) and measures baselines with its first version; a new "
        "campaign.name starts from the new one"
    )
