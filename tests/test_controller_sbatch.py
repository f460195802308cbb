"""slurm/controller.sbatch, run by bash as Slurm would run it, with stand-ins for the controller
(a script that, like the real one, stops with code 130 on its second TERM) and
for `scontrol` (records what it is asked)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from engine_helpers import REPO, fake_commands, wait_for

SCRIPT = REPO / "slurm" / "controller.sbatch"


def test_a_controller_stopped_by_two_terms_is_requeued(tmp_path: Path) -> None:
    """Slurm's TERM before the time limit, then another (an scancel --signal, a node drain): the
    script passes each on, waits for the controller's own exit and requeues the job."""
    seen = tmp_path / "terms.log"
    bin_dir = fake_commands(
        tmp_path / "bin",
        "/usr/bin/env bash",
        python=f"n=0\ntrap 'n=$((n + 1)); echo term >> {seen}; [ $n -ge 2 ] && exit 130' TERM\n"
        f"echo ready > {tmp_path / 'ready'}\nwhile :; do sleep 0.05; done",
        scontrol=f'echo "$@" >> {tmp_path / "scontrol.log"}',
    )
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "AUTORESEARCH_PYTHON": str(bin_dir / "python"),
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "SLURM_JOB_ID": "41",
    }
    job = subprocess.Popen(
        ["bash", str(SCRIPT), "+campaign=gpt2"], env=env, stdout=subprocess.PIPE, text=True
    )
    wait_for(lambda: (tmp_path / "ready").exists(), 30, "the controller to start")
    for n in (1, 2):
        job.send_signal(signal.SIGTERM)
        wait_for(lambda n=n: seen.exists() and len(seen.read_text().split()) == n, 30, f"TERM {n} passed on")
    out, _ = job.communicate(timeout=60)
    assert job.returncode == 130, out
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "41"]
    assert "requeueing job 41" in out
