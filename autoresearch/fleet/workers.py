"""Long-lived worker jobs and the folder queue they pull experiments from.

On a busy shared cluster every new job waits in the queue; a worker pays that wait once and then
runs experiment after experiment. The queue is a folder on the shared file system: the
controller drops one file per ready experiment, a worker claims one by an atomic rename, so two
workers never run the same experiment and nothing but the file system is needed between them.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from autoresearch.runner import run_experiment

IDLE_EXIT_SECONDS = 600.0  # a worker with nothing to do for this long ends (the campaign is gone)
POLL_SECONDS = 1.0


class WorkerQueue:
    def __init__(self, path: Path) -> None:
        self.path = path
        for sub in ("ready", "claimed", "workers"):
            (path / sub).mkdir(parents=True, exist_ok=True)

    def put(self, trial: int, exp_dir: Path) -> None:
        tmp = self.path / f".{trial:05d}.tmp"
        tmp.write_text(str(exp_dir.resolve()))
        os.replace(tmp, self.path / "ready" / f"{trial:05d}")
        (self.path / "STOP").unlink(missing_ok=True)

    def claim(self, worker: str) -> tuple[int, Path] | None:
        """Take the oldest ready experiment; None if there is none."""
        for entry in sorted((self.path / "ready").iterdir()):
            target = self.path / "claimed" / f"{entry.name}.{worker}"
            try:
                os.rename(entry, target)
            except FileNotFoundError:
                continue  # another worker was faster
            return int(entry.name), Path(target.read_text())
        return None

    def is_queued(self, trial: int) -> bool:
        return (self.path / "ready" / f"{trial:05d}").exists()

    def claimed_by(self, trial: int) -> str:
        """The worker (Slurm job id) that holds `trial`, or '' if none does."""
        for entry in (self.path / "claimed").glob(f"{trial:05d}.*"):
            return entry.name.split(".", 1)[1]
        return ""

    def done(self, trial: int, worker: str) -> None:
        (self.path / "claimed" / f"{trial:05d}.{worker}").unlink(missing_ok=True)

    def release(self, trial: int) -> None:
        """Forget a trial whose worker died: the controller fails it and queues a new one."""
        for entry in (self.path / "claimed").glob(f"{trial:05d}.*"):
            entry.unlink(missing_ok=True)
        (self.path / "ready" / f"{trial:05d}").unlink(missing_ok=True)

    def register(self, worker: str) -> None:
        (self.path / "workers" / worker).write_text(str(time.time()))

    def known_workers(self) -> list[str]:
        return sorted(p.name for p in (self.path / "workers").iterdir())

    def stop(self) -> None:
        (self.path / "STOP").write_text("")

    def stopped(self) -> bool:
        return (self.path / "STOP").exists()


def _worker_id() -> str:
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID", f"pid{os.getpid()}")


def run_worker(queue_path: str, deadline_s: float, time_limit_s: float) -> int:
    """The body of a worker job: run queued experiments until told to stop or near the time limit.

    Before the job's time limit could cut an experiment short, the worker stops claiming and asks
    Slurm to requeue it, so the slot comes back without a new submission. Returns the number of
    experiments it ran.
    """
    queue = WorkerQueue(Path(queue_path))
    worker = _worker_id()
    queue.register(worker)
    started = time.time()
    idle_since = time.time()
    ran = 0
    while not queue.stopped():
        if time.time() - started + deadline_s > time_limit_s:
            subprocess.run(["scontrol", "requeue", worker], check=False)
            break
        item = queue.claim(worker)
        if item is None:
            if time.time() - idle_since > IDLE_EXIT_SECONDS:
                break
            time.sleep(POLL_SECONDS)
            continue
        trial, exp_dir = item
        run_experiment(exp_dir)
        queue.done(trial, worker)
        ran += 1
        idle_since = time.time()
    return ran
