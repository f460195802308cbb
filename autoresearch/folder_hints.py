"""Which campaign folder a mistyped one for `status` or `report` was probably meant to be: the
campaign's name alone (`demo` for `runs/demo`), a near miss (`runs/dmeo`), or the runs folder
itself (`runs`)."""

from __future__ import annotations

import difflib
from pathlib import Path

from autoresearch.config import AutoresearchConfig
from autoresearch.heartbeat import CONTROLLER_FILE

DEFAULT_RUNS_DIR = Path(AutoresearchConfig.runs_dir)


def campaigns_in(folder: Path) -> list[Path]:
    """The campaign folders directly in `folder` (a runs_dir), by name: those a controller has run
    in (its heartbeat file; a config.yaml alone may be Hydra's conf/). None where it cannot be read."""
    try:
        return sorted(p for p in folder.iterdir() if (p / CONTROLLER_FILE).is_file())
    except OSError:
        return []


def meant_folder(missing: Path) -> Path | None:
    """The campaign folder closest to one that does not exist, beside it or in the default runs_dir."""
    by_name = {p.name: p for p in (*campaigns_in(DEFAULT_RUNS_DIR), *campaigns_in(missing.parent))}
    close = difflib.get_close_matches(missing.name, list(by_name), n=1)
    return by_name[close[0]] if close else None


def missing_folder_hint(missing: Path) -> str:
    """' (did you mean runs/demo?)', or '' when no campaign folder is close."""
    meant = meant_folder(missing)
    return f" (did you mean {meant}?)" if meant is not None else ""


def campaigns_inside_hint(folder: Path) -> str:
    """' (the campaigns in it: runs/a, runs/b)' for a runs folder given instead of a campaign's."""
    found = campaigns_in(folder)
    return f" (the campaigns in it: {', '.join(str(p) for p in found)})" if found else ""
