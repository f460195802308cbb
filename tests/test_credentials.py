"""Credentials, and the allocation of a controller that is a Slurm job itself, stay out of what
experiments and Slurm jobs inherit."""

from __future__ import annotations

import os
from pathlib import Path

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

    The fleet and submitit are real; `sbatch` is a stand-in first on PATH that records the
    environment it was started with.
    """
    seen = tmp_path / "seen"
    seen.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_sbatch = (
        f"#!/bin/sh\nn=$(ls {seen} | wc -l)\nenv > {seen}/env.$n\necho Submitted batch job $((1000 + n))\n"
    )
    for name, body in {"sbatch": fake_sbatch, "squeue": "#!/bin/sh\n", "sacct": "#!/bin/sh\n"}.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-canary-sbatch")
    monkeypatch.setenv("HARMLESS", "yes")
    # The controller as a Slurm job itself (slurm/controller.sbatch): its allocation must not
    # reach the experiments' jobs, the cluster it submits to must.
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "8192")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    cluster = ClusterConfig(
        kind="slurm",
        partitions={"arr": PartitionConfig(slots=2), "wrk": PartitionConfig(slots=1, mode="workers")},
    )
    fleet = SlurmFleet(cluster, deadline_s=60.0, campaign_dir=str(tmp_path / "campaign"))
    (tmp_path / "e0").mkdir()
    (tmp_path / "e1").mkdir()
    handles = fleet.submit([JobSpec(0, tmp_path / "e0", "arr"), JobSpec(1, tmp_path / "e1", "wrk")])
    assert handles[0].startswith("slurm:arr:100")  # sent through the stand-in sbatch
    envs = [
        dict(line.split("=", 1) for line in f.read_text().splitlines() if "=" in line) for f in seen.iterdir()
    ]
    assert len(envs) == 2  # one array of experiments, one of workers
    assert all("ANTHROPIC_API_KEY" not in env and env["HARMLESS"] == "yes" for env in envs)
    assert all(
        not any(k in env for k in ("SLURM_JOB_ID", "SLURM_MEM_PER_NODE", "SLURM_CPUS_PER_TASK"))
        for env in envs
    )
    assert all(env["SLURM_CONF"] == "/etc/slurm/slurm.conf" for env in envs)
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-canary-sbatch"  # all back once submitted
    assert os.environ["SLURM_MEM_PER_NODE"] == "8192"
