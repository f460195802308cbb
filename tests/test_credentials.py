"""Credentials stay out of what experiments and Slurm jobs inherit."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from autoresearch.config import ClusterConfig, PartitionConfig
from autoresearch.fleet.base import JobSpec
from autoresearch.fleet.slurm import SlurmFleet
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
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """sbatch exports the submitting environment: what it sees at submission is what a job gets.

    The fleet is real; only submitit's submission is replaced by a recorder of the environment.
    """
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-canary-sbatch")
    monkeypatch.setenv("HARMLESS", "yes")
    cluster = ClusterConfig(
        kind="slurm",
        partitions={"arr": PartitionConfig(slots=2), "wrk": PartitionConfig(slots=1, mode="workers")},
    )
    fleet = SlurmFleet(cluster, deadline_s=60.0, campaign_dir=str(tmp_path))
    seen: list[dict[str, str]] = []

    def record_environment(fn, *args):
        seen.append(dict(os.environ))
        return [SimpleNamespace(job_id=f"{len(seen)}_{i}") for i in range(len(args[0]))]

    for executor in fleet.executors.values():
        monkeypatch.setattr(executor, "map_array", record_environment)
    (tmp_path / "e0").mkdir()
    (tmp_path / "e1").mkdir()
    fleet.submit([JobSpec(0, tmp_path / "e0", "arr"), JobSpec(1, tmp_path / "e1", "wrk")])
    assert len(seen) == 2  # one array of experiments, one of workers
    assert all("ANTHROPIC_API_KEY" not in env and env["HARMLESS"] == "yes" for env in seen)
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-canary-sbatch"
