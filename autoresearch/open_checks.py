"""The refusals a start makes as it opens the campaign's folder and study, made without writing.

The controller makes them once it holds the folder and has its study open (`Campaign.open`); the
dry run (`autoresearch check`) on the folder and study as they stand, so a check that passes means
the start would open them too, and one that fails gives the start's own line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import optuna

from autoresearch.config import AutoresearchConfig, measurement, measurement_changes
from autoresearch.fleet.base import Pool
from autoresearch.hardware import hardware_changes
from autoresearch.sampler import knob_changes, knob_specs

MEASUREMENT_ATTR = "measurement"  # the study's: how its first start measured (`config.measurement`)


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
