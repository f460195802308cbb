"""Credentials, and the allocation of a controller that is a Slurm job itself, stay out of what
experiments and Slurm jobs inherit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engine_helpers import compose_toy, fake_commands, make_experiment, wait_for

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


def submitted_environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The environments two jobs (an array of experiments, an array of workers) were submitted
    with. The fleet and submitit are real; `sbatch` is a stand-in first on PATH that records the
    environment it was started with."""
    seen = tmp_path / "seen"
    seen.mkdir()
    sbatch = f"n=$(ls {seen} | wc -l)\nenv > {seen}/env.$n\necho Submitted batch job $((1000 + n))"
    bin_dir = fake_commands(tmp_path / "bin", sbatch=sbatch, squeue="", sacct="")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    cluster = ClusterConfig(
        kind="slurm",
        partitions={"arr": PartitionConfig(slots=2), "wrk": PartitionConfig(slots=1, mode="workers")},
    )
    fleet = SlurmFleet(cluster, deadline_s=60.0, campaign_dir=str(tmp_path / "campaign"))
    (tmp_path / "e0").mkdir()
    (tmp_path / "e1").mkdir()
    handles = fleet.submit([JobSpec(0, tmp_path / "e0", "arr"), JobSpec(1, tmp_path / "e1", "wrk")])
    assert handles[0].startswith("slurm:arr:100")  # sent through the stand-in sbatch
    return [
        dict(line.split("=", 1) for line in f.read_text().splitlines() if "=" in line) for f in seen.iterdir()
    ]


def test_sbatch_submissions_see_no_credentials_and_they_come_back_after(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """sbatch exports the submitting environment: what it sees at submission is what a job gets."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-canary-sbatch")
    monkeypatch.setenv("HARMLESS", "yes")
    monkeypatch.setenv("SLURM_MPI_TYPE", "pmix")  # a user's Slurm setting, outside any job: it passes
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    envs = submitted_environments(tmp_path, monkeypatch)
    assert len(envs) == 2
    assert all("ANTHROPIC_API_KEY" not in env and env["HARMLESS"] == "yes" for env in envs)
    assert all(env["SLURM_MPI_TYPE"] == "pmix" for env in envs)
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-canary-sbatch"  # back once submitted


def test_a_controller_in_a_slurm_job_submits_without_that_jobs_allocation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """slurm/controller.sbatch: the controller's job variables must not reach the experiments'
    jobs (an inherited SLURM_MEM_PER_NODE next to the job's own SLURM_MEM_PER_CPU makes srun
    refuse to start); the cluster it submits to must."""
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "8192")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    envs = submitted_environments(tmp_path, monkeypatch)
    assert len(envs) == 2
    withheld = ("SLURM_JOB_ID", "SLURM_MEM_PER_NODE", "SLURM_CPUS_PER_TASK")
    assert all(not any(k in env for k in withheld) for env in envs)
    assert all(env["SLURM_CONF"] == "/etc/slurm/slurm.conf" for env in envs)
    assert os.environ["SLURM_MEM_PER_NODE"] == "8192"  # back once submitted


def test_a_credential_hidden_while_jobs_are_submitted_is_still_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The proposer's thread goes on while the scheduling loop submits to Slurm, and
    `environment_for_jobs` takes the credentials out of the process's environment meanwhile: an
    API error that echoed the key (a proxy's) was logged and written whole if it came then."""
    from autoresearch.agent.client import redact
    from autoresearch.fleet.slurm import environment_for_jobs

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-canary-hidden-1234567890")
    monkeypatch.setenv("WANDB_API_KEY", "wandb-canary-hidden-0987654321")
    said = "401 for x-api-key sk-ant-canary-hidden-1234567890 and wandb-canary-hidden-0987654321"
    with environment_for_jobs():
        assert "ANTHROPIC_API_KEY" not in os.environ  # (what sbatch exports now)
        assert redact(said) == "401 for x-api-key [redacted] and [redacted]"
    assert redact(said) == "401 for x-api-key [redacted] and [redacted]"
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-ant-canary-hidden-1234567890"


# train.py of the job below: the names in the environment of its parent, the process submitit
# starts in the job (what sbatch exported, and Slurm's own), then in its own.
ENVIRONMENTS_SEEN = """import os
job = open(f"/proc/{os.getppid()}/environ", "rb").read().split(bytes(1))
names = sorted({v.split(b"=", 1)[0].decode() for v in job if v})
with open("seen.txt", "w") as f:
    f.write(" ".join(names) + "\\n" + " ".join(sorted(os.environ)) + "\\n")
"""


@pytest.mark.slurm
def test_an_experiment_job_of_the_real_cluster_holds_no_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slurm_cluster: None
) -> None:
    """What the real sbatch exports, as its job's processes hold it: the credentials of the
    controller's environment are in neither the job's process nor train.py's; a harmless variable
    of it is in the job's (so the check reads what it should)."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-canary-in-job-1234567890")
    monkeypatch.setenv("WANDB_API_KEY", "wandb-canary-in-job-1234567890")
    monkeypatch.setenv("AUTORESEARCH_TEST_HARMLESS", "passes")
    cluster = compose_toy(tmp_path, "cluster=slurm_local").cluster
    fleet = SlurmFleet(cluster, deadline_s=60, campaign_dir=str(tmp_path / "campaign"))
    exp = make_experiment(tmp_path, ENVIRONMENTS_SEEN, trial=0)
    try:
        fleet.submit([JobSpec(0, exp, "h100")])
        finished = []
        wait_for(lambda: finished.extend(fleet.poll()) or finished, 90, "the job to end", every=0.5)
    finally:
        fleet.shutdown(cancel=True)
    job, own = (line.split() for line in (exp / "seen.txt").read_text().splitlines())
    assert "AUTORESEARCH_TEST_HARMLESS" in job and "SLURM_JOB_ID" in job
    for name in ("ANTHROPIC_API_KEY", "WANDB_API_KEY"):
        assert name not in job and name not in own
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-ant-canary-in-job-1234567890"  # back once submitted
