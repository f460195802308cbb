"""Credentials stay out of what experiments and Slurm jobs inherit."""

from __future__ import annotations

import os

import pytest

from autoresearch.fleet.slurm import credentials_hidden
from autoresearch.runner import scrubbed_environment


def test_scrubbed_environment_drops_anything_that_looks_like_a_credential() -> None:
    env = {
        "ANTHROPIC_API_KEY": "k",
        "WANDB_API_KEY": "w",
        "HF_TOKEN": "t",
        "DB_PASSWORD": "p",
        "PATH": "/bin",
    }
    assert scrubbed_environment(env) == {"PATH": "/bin"}


def test_sbatch_submissions_see_no_credentials_and_they_come_back_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-canary-sbatch")
    monkeypatch.setenv("HARMLESS", "yes")
    with credentials_hidden():
        assert "ANTHROPIC_API_KEY" not in os.environ
        assert os.environ["HARMLESS"] == "yes"
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-canary-sbatch"
