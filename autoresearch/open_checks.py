"""The refusals a start makes as it opens the campaign's folder and study, made without writing.

The controller makes them once it holds the folder and has its study open (`Campaign.open`); the
dry run (`autoresearch check`) on the folder and study as they stand, so a check that passes means
the start would open them too, and one that fails gives the start's own line.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path

import optuna

from autoresearch.config import AutoresearchConfig, measurement, measurement_changes
from autoresearch.files import write_failure
from autoresearch.fleet.base import Pool
from autoresearch.hardware import hardware_changes
from autoresearch.sampler import knob_changes, knob_specs

MEASUREMENT_ATTR = "measurement"  # the study's: how its first start measured (`config.measurement`)
LOG_FILE = "controller.log"  # the first file a start writes in the folder


def unwritable_folder_message(campaign_dir: Path, err: OSError) -> str:
    """Why the campaign folder cannot be made or written, and the setting that moves it."""
    return (
        f"cannot write the campaign folder {campaign_dir}: {write_failure(err, campaign_dir)}; "
        "set runs_dir=... to a folder you can write"
    )


def folder_refusal(campaign_dir: Path) -> str | None:
    """`unwritable_folder_message` for the error the start would meet making `campaign_dir` and
    its controller.log (`mkdir -p`, then an append), found without making either; None where
    they can be made. (Permissions as the caller's: root passes them all.)"""
    if failed := _folder_write_error(campaign_dir):
        return unwritable_folder_message(campaign_dir, failed)
    return None


def _folder_write_error(campaign_dir: Path) -> OSError | None:
    def error(code: int, path: Path) -> OSError:
        return OSError(code, os.strerror(code), str(path))

    missing, existing = None, campaign_dir
    while not os.path.lexists(existing) and existing != existing.parent:
        missing, existing = existing, existing.parent
    if not existing.is_dir():  # (a file where a folder goes: mkdir names the folder it makes)
        return error(errno.ENOTDIR if missing else errno.EEXIST, campaign_dir)
    if missing is not None:
        return None if os.access(existing, os.W_OK | os.X_OK) else error(_denied(existing), missing)
    log_file = campaign_dir / LOG_FILE
    if os.path.lexists(log_file):
        writable = not log_file.is_dir() and os.access(log_file, os.W_OK)
        return None if writable else error(errno.EISDIR if log_file.is_dir() else _denied(log_file), log_file)
    return None if os.access(campaign_dir, os.W_OK | os.X_OK) else error(_denied(campaign_dir), log_file)


def _denied(path: Path) -> int:
    """The error a write `access` refuses at `path` meets: EROFS on a file system mounted read-only
    (a cluster's read-only project space, a container's image), as the start says; else EACCES."""
    try:
        read_only = os.statvfs(path).f_flag & os.ST_RDONLY
    except OSError:
        return errno.EACCES
    return errno.EROFS if read_only else errno.EACCES


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
