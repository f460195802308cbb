"""Shared helpers for the engine tests: run the real CLI on the toy campaign."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]
FIXTURE_CONF = REPO / "tests" / "fixtures" / "conf"


def campaign_command(runs_dir: Path, *overrides: str) -> list[str]:
    campaign = [] if any(o.startswith("+campaign=") for o in overrides) else ["+campaign=toy"]
    return [
        sys.executable,
        "-m",
        "autoresearch",
        f"--config-dir={FIXTURE_CONF}",
        *campaign,
        f"runs_dir={runs_dir}",
        "cluster.poll_seconds=0.05",
        "cluster.grace_seconds=20",
        *overrides,
    ]


def run_campaign(
    runs_dir: Path, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        campaign_command(runs_dir, *overrides),
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def load(campaign_dir: Path) -> optuna.Study:
    return optuna.load_study(
        study_name=campaign_dir.name,
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(campaign_dir / "study.journal"))
        ),
    )
