"""Shared helpers for the engine tests: run the real CLI on the toy campaign."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
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


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def experiment_runs(run_log: Path) -> Counter[str]:
    """How often each workspace's train.py started (the toy trainer's TOY_RUN_LOG)."""
    return Counter(run_log.read_text().split()) if run_log.exists() else Counter()


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> None:
    """Poll `condition` until it holds: for waiting on other processes, never as a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
