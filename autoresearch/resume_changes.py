"""What a resume changes: the settings this command gives otherwise than the campaign's last start.

The campaign folder's config.yaml records the last start; it is not read as settings: each start
replaces it with the command's (conf/ and the overrides). So a resume says, in one log line, each
setting it changes (a budget raised, a keep rule tightened: the log then shows under which rule
each decision was made), and a value edited into config.yaml by hand, which the command does not
give, is named as it is replaced instead of vanishing unsaid. A setting the saved file lacks was
not in the version that wrote it, and its default is no change; a knob or partition it lacks
was added since, and is named once with its settings (one the command lacks, as removed).
A setting that names a place is compared as the place: `runs` and the same folder spelled in full
are no change. A value that may hold a secret is never shown: a storage URL's password is masked, and a value
with a credential's marks (a URL's user part, an API key's name) is said to have changed only.
A W&B project or entity changed is also a warning of its own (`tracking_move`): it splits the
campaign's runs across projects, and names each that holds some.
A resume also says that it is one (`resuming_said`): its first lines are otherwise a first start's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from autoresearch.config import SAVED_CONFIG, AutoresearchConfig, SavedConfigError, read_saved_config
from autoresearch.files import complete_lines
from autoresearch.runner import SECRET_MARKERS
from autoresearch.storage_url import masked
from autoresearch.tracking import SENT_FILE, Place, places_in_run_files, places_sent_to

_UNSET = object()
# Settings that name a place: relative to the folder the command runs in, or to the campaign folder.
PATHS_FROM_THE_COMMAND = frozenset(
    {"runs_dir", "campaign.train_py", "campaign.prepare_py", "campaign.program_md"}
)
PATHS_FROM_THE_CAMPAIGN = frozenset({"cluster.submitit_dir"})
NUMBERS = {2: "two", 3: "three"}  # (of projects a campaign's runs are split across)


def resuming_said(trials: list[FrozenTrial], campaign_dir: Path, storage: str | None) -> str | None:
    """The line that tells a resume from a first start (None for a study with no trial yet): a
    user who meant to start over learns here, not from the budget it then finds spent."""
    if not trials:
        return None
    ended = sum(
        1 for t in trials if t.state.is_finished() and "exp_dir" in t.user_attrs
    )  # (as budgets count)
    states = [t.state for t in trials]
    running, queued = states.count(TrialState.RUNNING), states.count(TrialState.WAITING)
    return (
        f"resuming the campaign in {campaign_dir}: {ended} experiments ended, {running} in flight, "
        f"{queued} queued ({how_to_start_over(storage)})"
    )


def how_to_start_over(storage: str | None) -> str:
    """A study in a database is its campaign.name's there, not the folder's: the folder moved
    aside, a start finds it and is refused as another folder's (`claim_refusal`)."""
    if storage:
        return f"to start over, choose a new campaign.name: {masked(storage)} keeps the study by its name"
    return "to start over, move that folder aside or choose a new campaign.name"


def _flat(settings: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value, down to the values that are not mappings (a list is one value)."""
    if not isinstance(settings, dict):
        return {prefix: settings}
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def setting_changes(saved_config: Path, cfg: AutoresearchConfig) -> list[str]:
    """`key: before -> now` for each setting `cfg` gives otherwise than `saved_config`; none where
    there is no saved config to compare with (a first start, or one the checks refused already)."""
    if (saved := _saved(saved_config)) is None:
        return []
    typed = OmegaConf.create(cfg)
    plain = OmegaConf.to_container(typed, resolve=True)
    before, now = _flat(saved), _flat(plain)
    folder = saved_config.parent  # the campaign's
    changed = {
        key: f"{key}: {_shown(key, value)} -> {_shown(key, now.get(key, _UNSET))}"
        for key, value in before.items()
        if _place(key, value, folder) != _place(key, now.get(key, _UNSET), folder)
    }
    for key in _added_entries(typed, saved):
        changed[key] = f"{key}: (unset) -> {_shown(key, now[key])}"
    return [changed[key] for key in sorted(_whole_entries(changed, saved, plain))]


def _saved(saved_config: Path) -> dict | None:
    """The last start's settings; None where there are none to compare with (a first start, or
    one the checks refused already)."""
    if not saved_config.is_file():
        return None
    try:
        saved = OmegaConf.to_container(read_saved_config(saved_config))
    except SavedConfigError:
        return None
    return saved if isinstance(saved, dict) else None


def tracking_move(campaign_dir: Path, cfg: AutoresearchConfig) -> str | None:
    """The warning of a resume whose W&B project or entity is not the last start's, once runs were
    sent elsewhere: W&B moves no run, so those stay where they went (each project the campaign
    sent to, `places_sent_to`), and this start sends the rest and the campaign's report to the new
    place, splitting the campaign across projects."""
    before = ((_saved(campaign_dir / SAVED_CONFIG) or {}).get("tracking")) or {}
    now = cfg.tracking
    changed = [key for key in ("project", "entity") if before.get(key) != getattr(now, key)]
    sent = len(complete_lines(campaign_dir / "wandb" / SENT_FILE))
    if now.kind != "wandb" or before.get("kind") != "wandb" or not changed or not sent:
        return None
    moves = places_sent_to(campaign_dir / "wandb") or [Place(before.get("project"), before.get("entity"))]
    moves = [*places_in_run_files(campaign_dir / "wandb", moves), *moves]  # (those sent before the list)
    earlier, here = list(dict.fromkeys(moves)), Place(now.project, now.entity)
    projects = len({*earlier, here})
    if projects == 1:  # (all went here: the starts since sent none)
        return None
    stay = " and ".join(_project_said(*place) for place in earlier)
    stay = f"stay in {stay}" if len(earlier) == 1 else f"stay where they went, in {stay}"
    if here in earlier:
        hint = "the campaign's runs are split already"
    elif len(earlier) == 1:
        hint = f"{_overrides(earlier[0], here)} keeps them in one"
    else:
        hint = f"{_overrides(moves[-1], here)}, where the last start sent them, adds none more"
    return (
        f"W&B: {' and '.join(f'tracking.{key}' for key in changed)} changed since the last start: the "
        f"{sent} experiment run(s) and the reports sent before {stay}, and this start sends the rest, "
        f"and its report, to {_project_said(*here)}: the campaign's runs are split across "
        f"{NUMBERS.get(projects, str(projects))} projects ({hint})"
    )


def _overrides(place: Place, here: Place) -> str:
    """The settings that send to `place` rather than `here`."""
    return " ".join(
        f"tracking.{key}={_override(getattr(place, key))}"
        for key in Place._fields
        if getattr(place, key) != getattr(here, key)
    )


def _project_said(project: str | None, entity: str | None) -> str:
    owner = f"entity {entity!r}" if entity else "the login's default entity"
    return f"project {project!r} of {owner}"


def _override(value: str | None) -> str:
    return "null" if value is None else str(value)


# Maps whose entries are several settings each: one added or removed whole (a partition renamed,
# a knob dropped) is said once, not field by field.
ENTRY_MAPS = ("campaign.knobs", "cluster.partitions")


def _whole_entries(changed: dict[str, str], saved: dict, now: dict) -> dict[str, str]:
    """`changed` with each knob or partition that one side lacks said as one change: `removed`, or
    `added` with its settings."""
    for where in ENTRY_MAPS:
        had, has = (_entries(side, where) for side in (saved, now))
        for name in had.keys() ^ has.keys():
            key = f"{where}.{name}"
            for inner in [k for k in changed if k.startswith(f"{key}.")]:
                del changed[inner]
            changed[key] = f"{key}: removed" if name in had else f"{key}: added, {_shown(key, has[name])}"
    return changed


def _entries(settings: dict, where: str) -> dict:
    for part in where.split("."):
        settings = settings.get(part) if isinstance(settings, dict) else None
    return settings if isinstance(settings, dict) else {}


def _added_entries(typed: Any, saved: Any, prefix: str = "") -> list[str]:
    """The settings of entries a map (knobs, partitions, tiers) has now and lacked at the last start:
    added by the command. A field of the schema the saved file lacks is an older version's, no change."""
    if not isinstance(typed, DictConfig) or not isinstance(saved, dict):
        return []
    added = []
    for key in typed:
        path = f"{prefix}.{key}" if prefix else str(key)
        value = typed[key]
        if key in saved:
            added += _added_entries(value, saved[key], path)
        elif OmegaConf.get_type(typed) is dict:
            plain = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value
            added += list(_flat(plain, path))
    return added


def _place(key: str, value: Any, campaign_dir: Path) -> Any:
    """Where a path-valued setting points (the value itself for any other): two spellings of one
    place, `runs` and its full path, `./trainer/train.py`, are one setting."""
    if not isinstance(value, str):
        return value
    if key in PATHS_FROM_THE_COMMAND:
        return Path(value).resolve()
    if key in PATHS_FROM_THE_CAMPAIGN:
        return (campaign_dir / value).resolve()
    return value


def _shown(key: str, value: Any) -> str:
    if value is _UNSET:
        return "(unset)"
    if key == "storage" and isinstance(value, str):
        return repr(masked(value))
    text = repr(value)
    if ("://" in text and "@" in text) or any(marker in text.upper() for marker in SECRET_MARKERS):
        return "(not shown: it may hold a secret)"
    return text
