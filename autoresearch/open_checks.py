"""The refusals a start makes as it opens the campaign's folder and study, made without writing.

The controller makes them once it holds the folder and has its study open (`Campaign.open`); the
dry run (`autoresearch check`) on the folder and study as they stand, so a check that passes means
the start would open them too, and one that fails gives the start's own line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Mapping
from pathlib import Path

import optuna

from autoresearch.config import AutoresearchConfig, measurement, measurement_changes
from autoresearch.fleet.base import Pool
from autoresearch.hardware import hardware_changes
from autoresearch.sampler import knob_changes, knob_specs

LOCK_FILE = "controller.lock"  # held by the controller that runs the campaign (its pid inside)
MEASUREMENT_ATTR = "measurement"  # the study's: how its first start measured (`config.measurement`)


def locked_message(campaign_dir: Path, holder: str) -> str:
    """Why a start is refused while another controller holds `campaign_dir` (`holder`: the pid its
    lock file names, '' where it has not written one yet), and what to do."""
    # (the pid is of the host that runs it: a shared file system's lock may be another's)
    stop = f"Ctrl-C, or kill {holder} on its host" if holder else "Ctrl-C where it runs"
    return (
        f"another controller (pid {holder or 'unknown'}) is running {campaign_dir}: follow it with "
        f"`python -m autoresearch.status {campaign_dir}`, or stop it ({stop}) and "
        "run this command again to take over"
    )


def lock_refusal(campaign_dir: Path) -> str | None:
    """`locked_message` where a controller holds the folder's lock now, else None; makes no lock
    file. The lock is asked for shared, for an instant: a controller taking it at that very
    instant would be refused (status reads the heartbeat instead, as it may ask every second)."""
    try:
        fd = os.open(campaign_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file: no controller has run here (or the start cannot write here)
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return locked_message(campaign_dir, os.pread(fd, 32, 0).decode(errors="replace").strip())
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def study_refusal(
    study: optuna.Study, cfg: AutoresearchConfig, pools: Mapping[str, Pool], campaign_dir: Path
) -> str | None:
    """Why the study, as it stands, cannot be resumed with this config, in one line; None where it
    can. The study's own records hold where config.yaml cannot: how each knob was searched (a knob
    left out of a run and brought back changed would fail every trial that sets it), how its first
    start measured, and the hardware each tier measured on."""
    recorded = study.get_trials(deepcopy=False)
    searched = {n: d for t in recorded for n, d in t.distributions.items()}
    started = study.user_attrs.get(MEASUREMENT_ATTR, {})
    where = str(campaign_dir)
    for changed in (
        knob_changes(searched, knob_specs(cfg), f"the study of {where}"),
        measurement_changes(started, measurement(cfg), where),
        hardware_changes(recorded, cfg.cluster.tiers, pools, where),
    ):
        if changed:
            return "; ".join(changed)
    return None
