"""Long-lived worker jobs and the folder queue they pull experiments from.

On a busy shared cluster every new job waits in the queue; a worker pays that wait once and then
runs experiment after experiment. The queue is a folder on the shared file system: the
controller drops one file per ready experiment, a worker claims one by an atomic rename, so two
workers never run the same experiment and nothing but the file system is needed between them.
A claim names the worker's Slurm job and its attempt (Slurm's restart count), so the controller
can tell an experiment held by a worker that Slurm has since requeued from one still running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from autoresearch.files import DISK_REFUSALS
from autoresearch.runner import DISK_REFUSED_EXIT, INFRA_STATUSES, run_or_exit_if_disk_refuses, slurm_job_id

IDLE_EXIT_SECONDS = 600.0  # a worker with nothing to do for this long ends (the campaign is gone)
POLL_SECONDS = 1.0
UNPUT = ".tmp"  # a queue entry being written by `put`, renamed into ready/ when whole


class WorkerCannotFit(RuntimeError):
    """No experiment fits in the worker's time limit: requeueing would start it again, forever."""


class WorkerQueue:
    def __init__(self, path: Path) -> None:
        self.path = path
        for sub in ("ready", "claimed", "workers", "submitted", "lost"):
            (path / sub).mkdir(parents=True, exist_ok=True)

    def put(self, trial: int, exp_dir: Path) -> None:
        tmp = self.path / f".{trial:05d}{UNPUT}"
        tmp.write_text(str(exp_dir.resolve()))
        os.replace(tmp, self.path / "ready" / f"{trial:05d}")

    def claim(self, worker: str, attempt: int) -> tuple[int, Path] | None:
        """Take the oldest ready experiment; None if there is none."""
        for entry in sorted((self.path / "ready").iterdir()):
            if not entry.name.isdigit():
                continue  # not a queued experiment (an NFS placeholder)
            target = self.path / "claimed" / f"{entry.name}.{worker}.{attempt}"
            try:
                os.rename(entry, target)
            except FileNotFoundError:
                continue  # another worker was faster
            return int(entry.name), Path(target.read_text())
        return None

    def is_queued(self, trial: int) -> bool:
        return (self.path / "ready" / f"{trial:05d}").exists()

    def claimed_by(self, trial: int) -> tuple[str, int] | None:
        """The worker (Slurm job id) and its attempt that hold `trial`, or None if none does."""
        for entry in (self.path / "claimed").glob(f"{trial:05d}.*"):
            if claim := _parse_claim(entry.name):
                return claim[1:]
        return None

    def claims(self) -> dict[int, tuple[str, int]]:
        """Every claim at once, from one listing of the shared folder: trial -> (worker, attempt)."""
        held = {}
        for name in os.listdir(self.path / "claimed"):
            if claim := _parse_claim(name):
                held[claim[0]] = claim[1:]
        return held

    def ready_count(self) -> int:
        """Experiments queued and not yet claimed by a worker."""
        return sum(1 for name in os.listdir(self.path / "ready") if name.isdigit())

    def done(self, trial: int, worker: str, attempt: int) -> None:
        (self.path / "claimed" / f"{trial:05d}.{worker}.{attempt}").unlink(missing_ok=True)

    def release(self, trial: int) -> None:
        """Forget a trial the controller is done with (finished, or failed with its worker)."""
        for entry in (self.path / "claimed").glob(f"{trial:05d}.*"):
            entry.unlink(missing_ok=True)
        (self.path / "ready" / f"{trial:05d}").unlink(missing_ok=True)

    def register(self, worker: str) -> None:
        """Called by a worker when it starts. A write the disk refuses leaves no file: a full disk
        may create one and refuse what goes in it, and an empty one would read as a start. A job
        Slurm requeued starts its worker again: the mark of its earlier start is kept as it is,
        never rewritten, for a rewrite the disk refused would leave it truncated, and removed."""
        mark = self.path / "workers" / worker
        try:
            out = mark.open("x")  # (made here, or not at all: only then is it this start's to remove)
        except FileExistsError:
            return  # (the job's earlier attempt started)
        try:
            with out:
                out.write(str(time.time()))
        except OSError:
            with contextlib.suppress(OSError):
                mark.unlink(missing_ok=True)
            raise

    def registered(self, worker: str) -> bool:
        """Whether the worker began (`register`): a job that failed before did not."""
        return (self.path / "workers" / worker).exists()

    def record_submitted(self, workers: list[str]) -> None:
        """Called by the controller: a resumed controller knows the workers still in Slurm's queue."""
        for worker in workers:
            (self.path / "submitted" / worker).touch()

    def record_lost(self, sbatch: str) -> None:
        """Called by the controller as the queue is lost for this sbatch job's workers failing to
        start: a resumed controller must not lose it again for the same failures. An empty file,
        made whole or not at all, so a controller killed meanwhile leaves no half record."""
        (self.path / "lost" / sbatch).touch()

    def lost_for(self, sbatch: str) -> bool:
        return (self.path / "lost" / sbatch).exists()

    def submitted_workers(self) -> list[str]:
        return sorted({p.name for sub in ("submitted", "workers") for p in (self.path / sub).iterdir()})

    def stop(self) -> None:
        (self.path / "STOP").write_text("")

    def open(self) -> None:
        """Undo `stop` (the controller, before it first sends workers): a resumed campaign's workers
        must not exit on the previous controller's STOP. And remove the entries a controller
        killed inside `put` left unrenamed, for good: only controllers put, this one's puts are
        done, and those before it are gone."""
        (self.path / "STOP").unlink(missing_ok=True)
        for unput in self.path.glob(f".*{UNPUT}"):
            unput.unlink(missing_ok=True)

    def stopped(self) -> bool:
        return (self.path / "STOP").exists()


def _parse_claim(name: str) -> tuple[int, str, int] | None:
    """A claim's file name `TRIAL.WORKER.ATTEMPT`; None for anything else in the folder (an NFS
    client's `.nfsXXXX` placeholder of a file deleted while open)."""
    parts = name.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
        return None
    return int(parts[0]), parts[1], int(parts[2])


def _worker_id() -> str:
    """The claim's name: the runner's Slurm job id, so the controller can ask sacct about it."""
    return slurm_job_id() or f"pid{os.getpid()}"


def _attempt() -> int:
    """How often Slurm has requeued this job (0 on the first run)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def run_worker(queue_path: str, deadline_s: float, time_limit_s: float) -> int:
    """The body of a worker job: run queued experiments until told to stop or near the time limit.

    Before the job's time limit could cut an experiment short, the worker stops claiming and asks
    Slurm to requeue it, so the slot comes back without a new submission. Once Slurm signals the
    job (scancel, preemption) it claims nothing more. Returns the number of experiments it ran.
    A worker whose time limit cannot hold one experiment fails at once (WorkerCannotFit). One
    whose disk refuses its own start (`register`) or the runner's own files ends with DISK_REFUSED_EXIT, its claim kept, which
    the fleet reads as the run it held lost to the disk: every run after it would be refused alike.
    """
    if deadline_s > time_limit_s:
        raise WorkerCannotFit(
            f"an experiment's deadline ({deadline_s:.0f} s) exceeds this worker's time ({time_limit_s:.0f} s: "
            "time_limit_min less Slurm's warning): raise time_limit_min; the worker ends without a requeue"
        )
    queue = WorkerQueue(Path(queue_path))
    worker, attempt = _worker_id(), _attempt()
    _register_or_exit_if_disk_refuses(queue, worker)
    ending: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: ending.append(signum))
    started = time.time()
    idle_since = time.time()
    ran = 0
    while not queue.stopped() and not ending:
        if time.time() - started + deadline_s > time_limit_s:
            subprocess.run(["scontrol", "requeue", worker], check=False)
            break
        item = queue.claim(worker, attempt)
        if item is None:
            if time.time() - idle_since > IDLE_EXIT_SECONDS:
                break
            time.sleep(POLL_SECONDS)
            continue
        trial, exp_dir = item
        outcome = run_or_exit_if_disk_refuses(exp_dir)  # (its claim kept: the fleet reads the exit)
        ran += 1
        idle_since = time.time()
        if outcome.get("status") in INFRA_STATUSES:
            break  # the job is being ended: keep the claim, so the controller can ask Slurm why
        queue.done(trial, worker, attempt)
    return ran


def _register_or_exit_if_disk_refuses(queue: WorkerQueue, worker: str) -> None:
    """Register, or end with DISK_REFUSED_EXIT where the disk refuses it: the fleet reads the
    queued experiments as lost to the disk, where a plain failure would read as a worker that could
    not start, sent again and again, every one refused alike."""
    try:
        queue.register(worker)
    except OSError as err:
        if err.errno not in DISK_REFUSALS:
            raise
        print(f"the disk refused the worker's own file: {err}", file=sys.stderr, flush=True)
        sys.exit(DISK_REFUSED_EXIT)
