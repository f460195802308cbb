"""What a resume changes: the settings this command gives otherwise than the campaign's last start.

The campaign folder's config.yaml records the last start; it is not read as settings: each start
replaces it with the command's (conf/ and the overrides). So a resume says, in one log line, each
setting it changes (a budget raised, a keep rule tightened: the log then shows under which rule
each decision was made), and a value edited into config.yaml by hand, which the command does not
give, is named as it is replaced instead of vanishing unsaid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from autoresearch.config import AutoresearchConfig, SavedConfigError, read_saved_config

_UNSET = object()


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
    if not saved_config.is_file():
        return []
    try:
        before = _flat(OmegaConf.to_container(read_saved_config(saved_config)))
    except SavedConfigError:
        return []
    now = _flat(OmegaConf.to_container(OmegaConf.create(cfg), resolve=True))
    return [
        f"{key}: {_shown(before.get(key, _UNSET))} -> {_shown(now.get(key, _UNSET))}"
        for key in sorted(before.keys() | now.keys())
        if before.get(key, _UNSET) != now.get(key, _UNSET)
    ]


def _shown(value: Any) -> str:
    return "(unset)" if value is _UNSET else repr(value)
