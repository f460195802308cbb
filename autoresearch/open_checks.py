"""The refusals a start makes as it opens the campaign's folder and study, made without writing.

The controller makes them once it holds the folder and has its study open (`Campaign.open`); the
dry run (`autoresearch check`) on the folder and study as they stand, so a check that passes means
the start would open them too, and one that fails gives the start's own line.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoresearch.config import AutoresearchConfig, measurement, measurement_changes
from autoresearch.files import finite_number, read_json, write_failure
from autoresearch.fleet.base import Pool
from autoresearch.fleet.other_fleet import other_fleets_runs, other_hosts_runs
from autoresearch.hardware import hardware_changes
from autoresearch.results import frontier_value, rows
from autoresearch.runner import OUTCOME_FILE
from autoresearch.sampler import knob_changes, knob_specs, searched_distributions
from autoresearch.starting_files import HARNESS_COPY, first_run_harness
from autoresearch.storage_url import masked
from autoresearch.workspace import experiment_dir, sha256_file

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


def folder_lookup_refusal(campaign_dir: Path) -> str | None:
    """`unwritable_folder_message` where the campaign folder's path cannot even be looked up (a
    runs_dir with a part longer than a file name may be, a folder the user may not search), which
    the checks that read the folder would meet as a traceback; None where it can (or is not
    there: `folder_refusal` judges a file in its place)."""
    try:
        os.stat(campaign_dir)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        return unwritable_folder_message(campaign_dir, err)
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


def database_refusal(cfg: AutoresearchConfig, campaign_dir: Path) -> str | None:
    """Why the start could not open or take the study in the database `cfg.storage` names (a
    server down, a SQLite file it could not create, a study another folder holds: `claim_refusal`),
    found by reading it, creating nothing; None where it could, or the storage is the folder's
    journal. A SQLite file that fails (another controller or shell holds it locked) is waited for
    `storage_retry_seconds`, as the controller waits for it (`first_read_wait`). Asked before the folder is
    made: a first start refused here leaves nothing behind."""
    from autoresearch.study import (
        NoStudyYet,
        StudyUnavailable,
        claim_refusal,
        creation_refusal,
        first_read_wait,
        load_study,
    )

    if not cfg.storage:
        return None
    try:
        wait = first_read_wait(cfg.storage, cfg.storage_retry_seconds)
        study = load_study(campaign_dir, cfg.campaign.name, cfg.storage, wait)
    except NoStudyYet:
        study, refused = None, creation_refusal(cfg.storage)
        if refused:
            return str(refused)
    except StudyUnavailable as err:
        return str(err)
    taken = claim_refusal(study, campaign_dir, cfg.storage, cfg.campaign.name)
    return str(taken) if taken else None


def study_refusal(
    study: optuna.Study | None, cfg: AutoresearchConfig, pools: Mapping[str, Pool], campaign_dir: Path
) -> str | None:
    """Why the study, as it stands, cannot be resumed with this config, in one line; None where it
    can (`study` None: there is none yet). The study's own records hold where config.yaml cannot:
    how each knob was searched (a knob left out of a run and brought back changed would fail every
    trial that sets it), how its first start measured, and the hardware each tier measured on.
    Nor may runs the last start left in flight on the other fleet (cluster.kind), or in local
    runners of another host, still run (`other_fleets_runs`, `other_hosts_runs`): this one cannot
    watch them, and would run them again.
    And the folder must still be the study's: its experiments, its frontier and its harness
    (`lost_trials`, `lost_commits`, `altered_harness`). Nor may it ask a keep for a gain the
    frontier cannot give (`unreachable_min_delta`)."""
    recorded = [] if study is None else study.get_trials(deepcopy=False)
    searched = searched_distributions(recorded)
    started = {} if study is None else study.user_attrs.get(MEASUREMENT_ATTR, {})
    where = str(campaign_dir)
    for changed in (
        knob_changes(searched, knob_specs(cfg), f"the study of {where}"),
        measurement_changes(started, measurement(cfg), where),
        hardware_changes(
            recorded, cfg.cluster.tiers, pools, where, results_to_collect(recorded, campaign_dir)
        ),
        other_fleets_runs(recorded, cfg.cluster.kind, campaign_dir),
        other_hosts_runs(recorded, campaign_dir),
        lost_trials(recorded, campaign_dir, cfg.storage),
        lost_commits(recorded, campaign_dir),
        altered_harness(campaign_dir),
        [] if study is None else unreachable_min_delta(study, cfg.campaign.min_delta),
    ):
        if changed:
            return "; ".join(changed)
    return None


def unreachable_min_delta(study: optuna.Study, min_delta: float) -> list[str]:
    """Why no change could ever be kept, or []: every keep must first beat the frontier's screen
    val_bpb by min_delta, and val_bpb is never below 0, so a min_delta at or above the frontier's
    would spend the whole budget on runs that cannot win. Refused, not warned: a warning leaves the
    campaign running, and nothing it runs can count (unknowable at a first start, with no
    baseline yet)."""
    _, frontier = frontier_value(rows(study))
    if frontier is None or min_delta < frontier:
        return []
    return [
        f"campaign.min_delta={min_delta:g} is at or above the frontier's val_bpb {frontier:.6f}: a keep must "
        f"beat the frontier by min_delta, and val_bpb is never below 0, so no change could be kept; "
        f"give a min_delta below {frontier:.6f} (it counts val_bpb, not a share of it)"
    ]


def results_to_collect(recorded: list[FrozenTrial], campaign_dir: Path) -> set[int]:
    """The trials still running in the study whose runner left a result (outcome.json, with a
    val_bpb): the start collects them as it opens (`Campaign._reconcile`), so they hold their tier
    to the hardware they ran on as a told result does; else a resume onto other hardware once a
    stopped campaign's first runs ended would compare its runs with theirs."""
    return {
        t.number
        for t in recorded
        if t.state == TrialState.RUNNING
        and _holds_a_result(read_json(experiment_dir(campaign_dir, t.number) / OUTCOME_FILE))
    }


def _holds_a_result(outcome: dict | None) -> bool:
    metrics = (outcome or {}).get("metrics")
    return (
        (outcome or {}).get("status") == "ok"
        and isinstance(metrics, dict)
        and finite_number(metrics.get("val_bpb"))
    )


def lost_trials(recorded: list[FrozenTrial], campaign_dir: Path, storage: str | None) -> list[str]:
    """Why the study is behind its folder, or []: trial N runs in experiments/N, and a trial is in
    the study before its folder is made, so a folder numbered past the study's last trial means the
    study lost what it held (a journal deleted, emptied, or put back from an older copy; another
    database). Resumed, it would number new trials anew, into the folders of runs that ended."""
    try:
        numbers = [int(name) for name in os.listdir(campaign_dir / "experiments") if name.isdigit()]
    except OSError:  # (none yet)
        return []
    beyond = [n for n in numbers if n >= len(recorded)]
    if not beyond:
        return []
    held = f"holds {len(recorded)} trials" if recorded else "holds no trial"
    study = f"the study in {masked(storage)}" if storage else f"its study ({campaign_dir / 'study.journal'})"
    return [
        f"{campaign_dir / 'experiments'} holds experiment {max(beyond):05d}, but {study} {held}: the "
        "study lost what it recorded (deleted, emptied, or put back from an older copy?); put it "
        "back as it was, or start afresh with a new campaign.name"
    ]


def lost_commits(recorded: list[FrozenTrial], campaign_dir: Path) -> list[str]:
    """Why the frontier is not the study's, or []: each trial names the frontier commit it was
    built on (`parent`), and each kept one the commit that kept it; a frontier that lacks any was
    deleted, reset or replaced, and resumed it would go on from another train.py than the one
    the study kept, its kept changes lost without a word. (Read only; a repository git cannot
    read is left to the start, which says so in git's words.)"""
    named: dict[str, int] = {}  # commit -> a trial that names it
    for t in recorded:
        for key in ("parent", "commit"):
            if commit := t.user_attrs.get(key):
                named.setdefault(str(commit), t.number)
    if not named:
        return []
    repo = campaign_dir / "frontier"
    then = "put it back as it was, or start afresh with a new campaign.name"
    if not (repo / ".git").exists():
        return [
            f"the frontier {repo} is gone, but the study's trials name {len(named)} of its commits: {then}"
        ]
    listed = subprocess.run(["git", "rev-list", "--all"], cwd=repo, capture_output=True, text=True)
    if listed.returncode != 0:
        return []
    held = listed.stdout.split()
    missing = [c for c in named if not any(h.startswith(c) for h in held)]
    if not missing:
        return []
    first = missing[0]
    return [
        f"the frontier {repo} lacks {len(missing)} commit(s) the study's trials name ({first}, named "
        f"by trial {named[first]}): it was reset, replaced or made anew; {then} "
        f"(git -C {repo} reflog may still hold them)"
    ]


def altered_harness(campaign_dir: Path) -> list[str]:
    """Why the campaign's copy of the harness is not the one its experiments measured with, or []:
    an edit to harness/prepare.py would score every later run by another metric than the earlier
    ones, and the keep rule would compare the two."""
    own, first = campaign_dir / HARNESS_COPY, first_run_harness(campaign_dir)
    if first is None or not own.is_file() or sha256_file(own) == sha256_file(first):
        return []
    return [
        f"{own} is not the harness this campaign's experiments measured with ({first}): put that copy "
        f"back (cp {first} {own}); a changed harness starts a new campaign, with a new campaign.name"
    ]
