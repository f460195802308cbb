"""Worker mode: a partition's worker jobs that fail before their worker starts.

A node that lacks the interpreter, a `setup` line that ends the job, a shared file system's
passing hiccup: such a worker never takes an experiment, and another sent in its place may fail
alike. The starts that failed are counted in a row, an sbatch each (an array's workers are one
try), and backed off until a worker sent since starts; with none alive, `cluster.worker_start_tries`
of them lose the queued experiments. The queue folder keeps every worker sent, every start and the
failure that lost the queue (`lost/<sbatch>`), so a resumed controller goes on from the row. A
worker its queue's disk refused (DISK_REFUSED_EXIT) loses the queue to the disk at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoresearch.fleet.slurm_outage import PoolBackoff
from autoresearch.fleet.slurm_states import latest
from autoresearch.fleet.workers import WorkerQueue
from autoresearch.runner import DISK_REFUSED_EXIT, refused_by_disk

log = logging.getLogger("autoresearch")

# How a fleet loses a partition's queued experiments: the reason, and a trial's outcome if not plainly lost.
LoseQueued = Callable[[str, Callable[[int], dict[str, Any]] | None], None]


def _job_order(job_id: str) -> tuple[int, ...]:
    """A Slurm job id's place in submission order ('1794', '1794_2'): as numbers, not as text."""
    return tuple(int(part) for part in job_id.split("_") if part.isdigit())


def _sbatch_of(job_id: str) -> str:
    """The sbatch job a worker came from ('1794' of '1794_2'): an array's workers are one try."""
    return job_id.split("_")[0]


class WorkerRefusal(PoolBackoff):
    """sbatch refuses a partition's missing workers, or their jobs fail before their worker starts,
    while others live: the queued experiments wait for those, and more are tried again, backing
    off. A refusal by sbatch ends when sbatch takes workers; a failure to start only when a worker
    sent since starts: sbatch takes the job of one that will fail as readily as any. With none
    alive, a failure to start backs off too, the experiments waiting, until `start_tries` in a row
    (cluster.worker_start_tries) lose them."""

    meanwhile = " (workers); the experiments wait for the workers alive"

    def __init__(self, pool: str, start_tries: int) -> None:
        super().__init__(pool)
        self.start_tries = start_tries
        self.start_failures = 0  # worker starts failed in a row
        self.on_trial: set[str] = set()  # workers sent since one failed to start, not yet started
        self.tries: set[str] = set()  # the sbatch jobs of those failed in a row

    def new_tries(self, sbatches: set[str]) -> int:
        """How many of the sbatch jobs whose workers failed to start are not yet counted: an
        array's workers are one try, however many of them fail, and at however many polls."""
        new = sbatches - self.tries
        self.tries |= new
        return len(new)

    def failed_to_start(self, reason: str, alive: bool, in_a_row: int = 1) -> bool:
        """A worker failed to start (`in_a_row`: the last of so many, found at a resume); whether
        the queued experiments are to be lost now: with no worker alive, at `start_tries`
        failures in a row (and each one after). It waits the step of its place in the row."""
        self.start_failures += in_a_row
        self.failures = max(self.failures, self.start_failures - 1)
        if not alive:
            self.meanwhile = (
                " (workers); the experiments wait for a worker sent again, and are lost (re-queued) "
                f"after {self.start_tries} such failures in a row"
            )
        self.failed(reason)
        return not alive and self.start_failures >= self.start_tries

    def sent(self, workers: list[str]) -> None:
        """sbatch took workers: over, unless one failed to start; then it waits for one of them to start."""
        if self.start_failures:
            self.on_trial.update(workers)
        else:
            self.over()

    def check_started(self, started: Callable[[str], bool], alive: list[str]) -> None:
        """Over once a worker sent since the failure started; those that ended unstarted are no
        longer waited on."""
        if any(started(worker) for worker in self.on_trial):
            self.over()
        else:
            self.on_trial.intersection_update(alive)

    def over(self) -> None:
        super().over()
        self.start_failures = 0
        self.on_trial.clear()
        self.tries.clear()
        self.meanwhile = type(self).meanwhile


class WorkerStarts:
    """One partition's failed worker starts in a row, its back-off and its queue's loss to them.
    From its fleet it takes a FAILED job's exit status, how to lose the queued experiments, and
    the folder of the jobs' logs (`logs`, said as `logs_said`)."""

    def __init__(
        self,
        pool: str,
        queue: WorkerQueue,
        start_tries: int,
        exit_status: Callable[[str], int | None],
        lose_queued: LoseQueued,
        logs: Path,
        logs_said: str,
    ) -> None:
        self.pool = pool
        self.queue = queue
        # sbatch refusing workers, or their jobs failing before their worker starts
        self.refusal = WorkerRefusal(pool, start_tries)
        self._exit_status = exit_status
        self._lose_queued = lose_queued
        self._logs = logs
        self._logs_said = logs_said

    def waiting(self, alive: bool) -> bool:
        """Whether no worker is to be sent yet: after a refusal, for the workers alive; after a
        failed start, for the back-off's step, workers alive or not."""
        return bool(alive or self.refusal.start_failures) and self.refusal.waiting()

    def count(
        self, workers: list[str], alive: list[str], states: dict[str, list[str]], row: set[str] | None
    ) -> None:
        """Count the `workers` sent, of which `alive` may still run, that failed to start since the
        last look; `row`: at this controller's first look, the earlier controllers' failed starts
        in a row (`row_so_far`), which count instead, an sbatch each."""
        queue = self.queue
        unstarted = [w for w in workers if w not in alive and self._failed_to_start(w, states)]
        self.refusal.check_started(queue.registered, alive)
        sbatches = {_sbatch_of(w) for w in unstarted} if row is None else row
        # (any worker its disk refused, not only an array's first: one refused before a resume, none)
        refused = [w for w in unstarted if self._exit_status(w) == DISK_REFUSED_EXIT] if row is None else []
        if refused:
            self.refusal.new_tries(sbatches)  # (an array counted once, here too)
            self._queue_refused_by_disk(max(refused, key=_job_order))
        elif in_a_row := self.refusal.new_tries(sbatches):
            self._workers_failed_to_start(max(unstarted, key=_job_order), in_a_row, bool(alive))
        if row:  # (the earlier controllers' workers not yet started: one that starts ends the row)
            self.refusal.sent([w for w in alive if not queue.registered(w)])

    def _failed_to_start(self, worker: str, states: dict[str, list[str]]) -> bool:
        """Whether a worker job ended FAILED before its worker began (it never registered): an
        interpreter the node lacks, a setup line that ends the job, a time limit no experiment fits."""
        return latest(states.get(worker, [])).startswith("FAILED") and not self.queue.registered(worker)

    def row_so_far(self, workers: list[str], states: dict[str, list[str]]) -> set[str]:
        """The sbatch jobs of the pool's latest workers that failed to start since the last one that started:
        the queue folder keeps every worker sent and every start, so a resumed controller goes on
        from the back-off its predecessor had reached. A start the disk refused ends the row too:
        the campaign stopped for it, and resumes once there is room (a worker refused again says so)."""
        queue, row = self.queue, set()
        for worker in sorted(workers, key=_job_order, reverse=True):
            failed = self._failed_to_start(worker, states)
            if queue.registered(worker) or (failed and self._exit_status(worker) == DISK_REFUSED_EXIT):
                break
            row |= {_sbatch_of(worker)} if failed else set()
        return row

    def _workers_failed_to_start(self, worker: str, in_a_row: int, alive: bool) -> None:
        """Worker jobs of `in_a_row` sbatches not counted yet failed before their worker began, the
        latest `worker` (none of them refused by its disk: `_queue_refused_by_disk`), and every worker sent in
        their place may too: sent again at each poll, one after another for ever, while the queued
        experiments waited. More are tried again, backing off until one sent since starts (a job sbatch takes
        may fail alike, so that ends nothing): with workers `alive`, the queue waits for them; with
        none, it waits too, but cluster.worker_start_tries failures in a row lose the queued experiments
        (re-queued, a retry each, as an array task that fails so), and each failure after: one
        failure, a shared file system's hiccup, must not spend every queued experiment's retry.
        The queue folder records the failure that lost it: a controller resumed after that loss
        keeps the row and its back-off, but sends a worker rather than losing the re-queued
        experiments again for a failure they were already lost for."""
        how = self._how_it_failed(worker, self._exit_status(worker))
        reason = (
            f"Slurm worker job {worker} FAILED before its worker started ({how}): "
            f"the job could not start it (its log: {self._logs_said}/{worker}/)"
        )
        refusal, queue = self.refusal, self.queue
        said = refusal.since is not None  # (the back-off says only the first failure of its row)
        lose = refusal.failed_to_start(reason, alive=alive, in_a_row=in_a_row)
        in_row = f"{reason}; {refusal.start_failures} worker starts failed in a row"
        if lose and not queue.lost_for(_sbatch_of(worker)):  # (lost for it already: a resume sends one more)
            queue.record_lost(_sbatch_of(worker))
            self._lose_queued(in_row, None)
        elif said:  # each failure's own status and stderr, for a user debugging a flaky node
            log.warning("partition %s: %s (workers)", self.pool, in_row)

    def _queue_refused_by_disk(self, worker: str) -> None:
        """The disk of the worker queue refused a worker its start (DISK_REFUSED_EXIT before it
        registered): every worker would be refused alike, so the queued experiments are lost to
        the disk, as a runner's refused files are: re-queued at no cost, the campaign stopped
        until there is room."""
        folder = self.queue.path / "workers"
        said = (
            f"the disk of the worker queue {folder} refused Slurm worker job {worker}'s own file, its start"
        )
        self._lose_queued(said, lambda trial: refused_by_disk(trial, folder, said))

    def _how_it_failed(self, worker: str, status: int | None) -> str:
        """A failed worker job's exit status and the last line of its stderr, where known; not
        srun's own last word ('srun: error: ... Exited with exit code 1'), which tells nothing."""
        said = [f"exit {status}" if status else "exit status unknown"]
        with contextlib.suppress(OSError, UnicodeDecodeError):
            err = (self._logs / worker / f"{worker}_0_log.err").read_text().splitlines()
            said += [line.strip()[:200] for line in err if line.strip() and not line.startswith("srun: ")][
                -1:
            ]
        return ": ".join(said)
