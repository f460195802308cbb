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


def _controller_job(tmp_path: Path, stops_at_term: int) -> tuple[subprocess.Popen[str], Path]:
    """The script run by bash with a stand-in controller that stops (code 3, or 130 at a second
    TERM, as the real one) at its `stops_at_term`-th TERM; and the file each TERM is noted in."""
    seen = tmp_path / "terms.log"
    code = "3" if stops_at_term == 1 else "130"
    bin_dir = fake_commands(
        tmp_path / "bin",
        "/usr/bin/env bash",
        python=f"n=0\ntrap 'n=$((n + 1)); echo term >> {seen}; [ $n -ge {stops_at_term} ] && exit {code}' TERM\n"
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
    return job, seen


def _signal_in_turn(job: subprocess.Popen[str], seen: Path, *signals: signal.Signals) -> None:
    """Each signal sent once the controller has been passed the one before."""
    for n, sig in enumerate(signals, start=1):
        job.send_signal(sig)
        wait_for(
            lambda n=n: seen.exists() and len(seen.read_text().split()) == n, 30, f"signal {n} passed on"
        )


def test_a_controller_stopped_by_its_time_limit_then_a_term_is_requeued(tmp_path: Path) -> None:
    """Slurm's USR1 before the time limit, then a TERM (an scancel --signal, a node drain): the
    script passes each on as TERM, waits for the controller's own exit and requeues the job."""
    job, seen = _controller_job(tmp_path, stops_at_term=2)
    _signal_in_turn(job, seen, signal.SIGUSR1, signal.SIGTERM)
    out, _ = job.communicate(timeout=60)
    assert job.returncode == 130, out
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "41"]
    assert "requeueing job 41" in out


def test_a_cancelled_controller_stops_and_is_not_requeued(tmp_path: Path) -> None:
    """scancel sends TERM: the controller stops as at Ctrl-C (its experiments keep running), and the
    job ends; requeueing it would bring back a controller a person cancelled."""
    job, seen = _controller_job(tmp_path, stops_at_term=1)
    job.send_signal(signal.SIGTERM)
    out, _ = job.communicate(timeout=60)
    assert job.returncode == 3, out
    assert seen.read_text().split() == ["term"]
    assert not (tmp_path / "scontrol.log").exists()
    assert "not requeued; submit this script again with the same arguments to resume" in " ".join(out.split())


def test_a_controller_cancelled_before_its_time_limit_stays_cancelled_when_the_limit_nears(
    tmp_path: Path,
) -> None:
    """A TERM (a person's, `scancel -b`) and, while the controller stops, the time limit's USR1:
    the first signal says why it stops, and the job ends; the USR1 requeued it, bringing back a
    controller a person had stopped."""
    job, seen = _controller_job(tmp_path, stops_at_term=2)
    _signal_in_turn(job, seen, signal.SIGTERM, signal.SIGUSR1)
    out, _ = job.communicate(timeout=60)
    assert job.returncode == 130, out
    assert not (tmp_path / "scontrol.log").exists()
    assert "not requeued; submit this script again with the same arguments to resume" in " ".join(out.split())
