"""Integration tests for the local single-node Slurm cluster (slurm/local/up.sh).

They use the running cluster (`make slurm-up`) and skip when it is absent,
except under CI (env CI=true), where an absent cluster is a failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from engine_helpers import REPO, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]  # conftest.py

UP = REPO / "slurm" / "local" / "up.sh"
PARTITIONS = ("h100", "h200")


def _run(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _wait_sacct(job_id: str, n_tasks: int, timeout: float = 40) -> dict[str, str]:
    """Poll sacct until every array task of job_id has ended; return task id -> state."""
    ended = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}
    tasks: dict[str, str] = {}

    def all_ended() -> bool:
        out = _run("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,State")
        tasks.clear()
        for line in out.stdout.splitlines():
            jid, _, state = line.partition("|")
            if "[" not in jid:
                tasks[jid] = state.split()[0] if state else ""
        return len(tasks) == n_tasks and all(v in ended for v in tasks.values())

    try:
        wait_for(all_ended, timeout, f"every task of job {job_id} to end", every=0.5)
    except AssertionError as err:
        raise AssertionError(f"{err}; sacct shows {tasks}") from None
    return tasks


def test_partitions_have_typed_gpu_gres() -> None:
    out = _run("sinfo", "-h", "-o", "%R|%G")
    assert out.returncode == 0, out.stderr
    gres = dict(line.split("|", 1) for line in out.stdout.splitlines())
    assert set(PARTITIONS) <= set(gres), gres
    for part in PARTITIONS:
        assert "gpu:h100:8" in gres[part] and "gpu:h200:8" in gres[part], gres
    node = _run("scontrol", "show", "node")
    assert "Gres=gpu:h100:8" in node.stdout and "gpu:h200:8" in node.stdout, node.stdout


def _sbatch(tmp_path: Path, *options: str, wrap: str) -> str:
    """Submit a short job writing into `tmp_path`; returns its job id."""
    tmp_path.chmod(0o777)  # the job may run as another user than the test
    out = _run("sbatch", "--parsable", "--time=2", *options, "--wrap", wrap)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


@pytest.mark.parametrize("partition", PARTITIONS)
def test_gpu_array_completes_and_sacct_lists_every_task(partition: str, tmp_path: Path) -> None:
    n = 4
    job_id = _sbatch(
        tmp_path,
        f"--array=0-{n - 1}",
        f"--partition={partition}",
        f"--gres=gpu:{partition}:1",
        f"--output={tmp_path}/%A_%a.out",
        wrap="echo task=$SLURM_ARRAY_TASK_ID partition=$SLURM_JOB_PARTITION gpus=$SLURM_JOB_GPUS",
    )
    tasks = _wait_sacct(job_id, n)
    assert tasks == {f"{job_id}_{i}": "COMPLETED" for i in range(n)}
    for i in range(n):
        text = (tmp_path / f"{job_id}_{i}.out").read_text()
        assert f"task={i} partition={partition} gpus=" in text, text
    # Typed GRES were allocated and recorded by accounting.
    tres = _run("sacct", "-X", "-n", "-P", "-j", f"{job_id}_0", "-o", "AllocTRES").stdout
    assert f"gres/gpu:{partition}=1" in tres, tres


def test_untyped_gpu_request_gets_the_partition_type(tmp_path: Path) -> None:
    job_id = _sbatch(
        tmp_path, "--partition=h200", "--gpus-per-node=1", f"--output={tmp_path}/%j.out", wrap="true"
    )
    _wait_sacct(job_id, 1)
    tres = _run("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "AllocTRES").stdout
    assert "gres/gpu:h200=1" in tres, tres
    # A type the partition does not have is refused at submission.
    bad = _run("sbatch", "--partition=h100", "--gres=gpu:h200:1", "--wrap", "true")
    assert bad.returncode != 0
    assert "partition h100 has only h100 GPUs" in bad.stderr, bad.stderr


def test_up_is_idempotent() -> None:
    if os.geteuid() != 0:
        pytest.skip("up.sh needs root")
    out = _run("bash", str(UP), timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "already running" in out.stdout, out.stdout
    for daemon in ("slurmctld", "slurmd", "slurmdbd"):
        pids = _run("pgrep", "-x", daemon).stdout.split()
        assert len(pids) == 1, f"{daemon}: {pids}"
