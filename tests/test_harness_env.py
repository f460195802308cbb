"""The environment a campaign gives the harness: its data step's and every experiment's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import compose_toy
from trainer_helpers import TRAINER_DIR

from autoresearch.launcher import harness_env


@pytest.mark.parametrize("given", ["cache", "./runs/../cache", "~/cache"])
def test_an_experiment_finds_the_cache_the_controller_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """A relative AUTORESEARCH_CACHE (or a ~ the shell left) named another folder in each
    experiment's folder, where train.py runs, than the controller's data step had prepared:
    climbmix runs crashed on "no train data", offline ones each built a cache of their own."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # the controller's working directory
    monkeypatch.setenv("AUTORESEARCH_CACHE", given)
    env = harness_env(compose_toy(tmp_path / "runs"), seed=7)
    experiment = tmp_path / "runs" / "toy" / "experiments" / "0"
    experiment.mkdir(parents=True)
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(TRAINER_DIR)!r}); import prepare; print(prepare.cache_dir().resolve())",
        ],
        cwd=experiment,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip() == str((tmp_path / "cache").resolve())
