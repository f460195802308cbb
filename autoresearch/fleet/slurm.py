"""Slurm partitions as a fleet, through submitit.

Two ways to use a partition, chosen per partition:
- `array`: experiments that become ready together go out as one sbatch array per partition, one
  task per experiment (`slurm_array_parallelism` = the partition's slots).
- `workers`: up to `slots` long-lived worker jobs per partition, each pulling experiments from a
  queue folder one after another (fleet.workers), so a busy cluster's queue wait is paid once per
  worker; sent only for queued experiments that no worker alive will take (those whose jobs fail
  before their worker starts: fleet.worker_starts).
Results come back the same way in both: the runner's outcome.json in the experiment folder. Slurm
is asked about job states only for jobs that have no outcome yet, in one batched sacct call, and
squeue about those sacct lacks (all while accounting is down, so a job that ends without a result
is still seen to end).

One trial is one Slurm attempt. When Slurm requeues a task itself (node failure, preemption,
`scontrol requeue`), the attempt the trial ran in is over: the trial is reported lost with Slurm's
reason, the campaign re-queues it as a new trial, and Slurm's rerun is cancelled (and would refuse
to run the workspace again anyway), so no experiment is run or counted twice. A submission sbatch
refuses is lost too (re-queued); one it cannot send, Slurm's controller out of reach or its
partition closed (inactive, drain), waits for it;
and a node whose jobs see no GPU is kept out of new jobs (fleet.nodes). What Slurm's states mean
is read in fleet.slurm_states.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from autoresearch.config import ClusterConfig, PartitionConfig, backstop_grace
from autoresearch.files import read_json, write_json_atomic
from autoresearch.fleet.base import Finished, JobSpec, Pool
from autoresearch.fleet.nodes import NodeHealth, exclude_list
from autoresearch.fleet.setup_lines import setup_commands
from autoresearch.fleet.slurm_outage import (
    SUBMIT_ERRORS,
    PartitionClosed,
    PoolBackoff,
    SubmitLimitReached,
    SubmitOutage,
    partition_closed,
    refusal,
    submit_limit,
    unreachable,
)
from autoresearch.fleet.slurm_states import (
    CLOSED,
    COMPLETED,
    HELD,
    NEVER_STARTS,
    RESTARTED,
    STALE,
    attempt_state,
    cluster_settings,
    dropped_tasks,
    is_active,
    job_states,
    latest,
    max_array_size,
    outcome_for_state,
    pending_reasons,
    queue_exit_status,
    queue_states,
    queue_suspended_s,
)
from autoresearch.fleet.worker_starts import WorkerStarts
from autoresearch.fleet.workers import WorkerQueue, run_worker
from autoresearch.runner import (
    ABANDONED_FILE,
    DISK_REFUSED_EXIT,
    INFRA_STATUSES,
    OUTCOME_FILE,
    SETUP_FAILED_VARIABLE,
    STARTED_FILE,
    environment_lock,
    hidden_credentials,
    run_or_exit_if_disk_refuses,
    runner_files_refused,
    scrubbed_environment,
    started_at,
)

log = logging.getLogger("autoresearch")

STATE_POLL_SECONDS = 10.0  # at most one sacct call this often, for every job at once
PENDING_POLL_SECONDS = 60.0  # and one squeue call, while a job is pending (why: `_warn_never_starting`)
SETTLE_SECONDS = 10.0  # a job over without a result: wait this long for the result file (shared FS lag)
UNKNOWN_SECONDS = 120.0  # a job Slurm has no record of for this long is lost
# A job gone from squeue before its runner began, while sacct fails: how it ended (a scancel, a
# failure to start) is sacct's to say, and waited for this long of squeue's answers at most before
# the run is lost and queued again, so a long slurmdbd outage holds no slot for ever.
UNSTARTED_GONE_SECONDS = 600.0
SENT_LATE_FILE = "sent.json"  # the Slurm job of an experiment sent after an outage, which its handle lacks
SIGNAL_DELAY_S = 120  # Slurm signals a job (USR2) this long before its time limit; the runner stops then
LIMIT_MARGIN_S = 60  # the job's start before its runner's, and Slurm's delay in signalling, at most
SLURM_COMMANDS = ("sbatch", "srun", "sacct", "scancel")  # what submitit and this fleet call


@dataclass
class _Tracked:
    job: JobSpec
    slurm_id: str  # array task (A_i) or job id; '' in worker mode, where the claim names the worker
    deadline: float | None = None  # set when the runner starts: queue time does not count, nor
    # suspended time (`_past_deadline`): this controller's count of it, from the states Slurm showed
    over_since: float | None = None  # when it was first seen over (by Slurm, or the runner interrupted)
    stale_since: float | None = None  # when sacct first showed its attempt STALE (no end written yet)
    # How long Slurm (sacct, or squeue in its stead) has answered without a record of it, and
    # when that was last counted (None while nobody answers: the clock stops).
    unknown_for: float = 0.0
    unknown_at: float | None = None
    # The same, counted on squeue's answers while sacct fails, for a job whose runner never began.
    unstarted_for: float = 0.0
    unstarted_at: float | None = None
    unsent: bool = False  # sbatch could not reach Slurm: sent again from `poll`
    suspended_at: float | None = None  # when Slurm last showed it suspended: its deadline waits
    suspended_s: float = 0.0


# A tracked job not final yet: its runner's outcome (None, or an interrupted one), and its Slurm
# job and attempt (None while queued for a worker).
_Waiting = tuple[_Tracked, dict[str, Any] | None, tuple[str, int] | None]


def run_array_task(exp_dir: str) -> dict[str, Any]:
    """An array task's body: the runner, which skips a workspace that already ran or was given up
    on (Slurm reruns a requeued task from the start, after the controller counted the first
    attempt), and ends the job with DISK_REFUSED_EXIT where the disk refuses its own files.
    Submitted jobs name this function, so it stays their entry point."""
    return run_or_exit_if_disk_refuses(exp_dir)


def executor_for(folder: Path, name: str, part: PartitionConfig) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    params: dict[str, Any] = {
        "slurm_partition": part.partition or name,
        "slurm_array_parallelism": part.slots,
        "cpus_per_task": part.cpus_per_task,
        "timeout_min": part.time_limit_min,
        "name": f"autoresearch-{name}",
        "slurm_signal_delay_s": SIGNAL_DELAY_S,
    }
    if part.gres:
        params["slurm_gres"] = part.gres
    elif part.gpus_per_node:
        params["gpus_per_node"] = part.gpus_per_node
    if part.mem_gb:
        params["mem_gb"] = part.mem_gb
    for key in ("account", "qos", "constraint", "exclude"):  # exclude grows as nodes fail (fleet.nodes)
        if getattr(part, key):
            params[f"slurm_{key}"] = getattr(part, key)
    if part.setup:
        params["slurm_setup"] = checked_setup(part.setup)
    if part.extra_sbatch:
        params["slurm_additional_parameters"] = dict(part.extra_sbatch)
    executor.update_parameters(**params)
    return executor


def checked_setup(lines: list[str]) -> list[str]:
    """The partition's `setup` lines for the job script, each followed by a check of its exit
    status: the script runs on past a failed line (a module the node lacks), and the experiment
    would run in an environment it was not meant for. The first failure is handed to the runner
    in SETUP_FAILED_VARIABLE, which records it as the node's inability to run experiments. Lines
    the shell reads as one command (`setup_commands`: a heredoc, a trailing backslash or `&&`, an
    `if` block) are checked once, after the last: a check between them would be written into the
    heredoc's file, or read as the first line's arguments."""
    checked = [f"unset {SETUP_FAILED_VARIABLE}"]  # (an inherited value would be taken for a failure)
    for command in setup_commands(lines):
        said = shlex.quote(f"setup line `{' '.join(command)}` exited ")
        checked += [  # on a line of its own: a comment ending the command cannot swallow the check
            *command,
            f'_setup_exit=$?; if [ "$_setup_exit" -ne 0 ] && [ -z "${{{SETUP_FAILED_VARIABLE}:-}}" ]; '
            f'then export {SETUP_FAILED_VARIABLE}={said}"$_setup_exit"; fi',
        ]
    return checked


def missing_commands_problem() -> str | None:
    """Why this machine cannot drive Slurm (its commands are not on PATH), or None."""
    if missing := [tool for tool in SLURM_COMMANDS if shutil.which(tool) is None]:
        return (
            f"cluster=slurm, but {', '.join(missing)} not found on PATH: run the controller on a "
            "Slurm login node (or as a job: slurm/controller.sbatch), or use cluster=local"
        )
    return None


def slurm_pool(name: str, part: PartitionConfig, max_queued: int) -> Pool:
    """A partition's pool: its slots capped at `max_queued` jobs; its runner gives torch the CPUs
    Slurm grants (`runner`)."""
    slots = min(part.slots, max_queued)
    return Pool(
        name, slots, part.gpu_type, part.price_per_gpu_hour, part.partition or name, part.cpus_per_task
    )


class SlurmFleet:
    def __init__(
        self,
        cluster: ClusterConfig,
        deadline_s: float,
        campaign_dir: str,
        settings: dict[str, str] | None = None,
    ) -> None:
        """`settings`: the cluster's (`cluster_settings`), where the caller has read them already."""
        if problem := missing_commands_problem():
            raise ValueError(problem)
        self.cluster = cluster
        self.deadline_s = deadline_s
        self.dir = Path(campaign_dir)
        self.folder = self.dir / cluster.submitit_dir
        self.pools: dict[str, Pool] = {}
        self.executors: dict[str, submitit.AutoExecutor] = {}
        self.queues: dict[str, WorkerQueue] = {}
        for name, part in cluster.partitions.items():
            self.pools[name] = slurm_pool(name, part, cluster.max_queued)
            self.executors[name] = executor_for(self.folder, name, part)
            if part.mode == "workers":
                self.queues[name] = WorkerQueue(self.dir / "queue" / name)
        self._tracked: dict[int, _Tracked] = {}
        self._workers: dict[str, list[str]] = {name: q.submitted_workers() for name, q in self.queues.items()}
        self._states: dict[str, list[str]] = {}
        self._states_at = -STATE_POLL_SECONDS
        # Whose answer `_states` holds: sacct, squeue (sacct failing) or '' (neither answered).
        # Taken as sacct's before the first call: there is no outage to report yet.
        self._states_from = "sacct"
        self._gone: set[str] = set()  # jobs neither sacct nor squeue listed when last asked
        # Array tasks among them whose array squeue or sacct still lists: taken out of it on their own
        self._dropped: set[str] = set()
        self._suspended_s: dict[str, float] = {}  # each job's suspended time: sacct's count, else squeue's
        self._exit_status: dict[str, int | None] = {}  # each job's latest attempt's, by sacct's word
        self.nodes = NodeHealth()
        self._refused: list[Finished] = []  # jobs sbatch would not take, reported at the next poll
        self._warned: set[tuple[str, str]] = set()  # (pool or held job, pending reason) said once
        self._pending_at = -PENDING_POLL_SECONDS  # when squeue was last asked why jobs are pending
        self._outage = SubmitOutage()
        self._starts = {  # worker starts that fail, and sbatch refusing workers
            pool: WorkerStarts(
                pool,
                queue,
                cluster.worker_start_tries,
                self._failed_exit_status,
                functools.partial(self._lose_queued, pool),
                self.folder,
                cluster.submitit_dir,
            )
            for pool, queue in self.queues.items()
        }
        self._closed = {pool: PartitionClosed(pool) for pool in self.pools}  # set inactive or drained
        self._capped = {pool: SubmitLimitReached(pool) for pool in self.pools}  # at a cap on submitted jobs
        # tasks per sbatch array, at most
        self._max_array = max_array_size(cluster_settings() if settings is None else settings)
        # Queues opened (their last controller's STOP removed) when first sent to, not here: the
        # fleet is made before the campaign's lock is taken, and a second controller, refused,
        # must not undo the STOP of a first one shutting down, whose workers would then run on.
        self._opened: set[str] = set()

    # -- capacity ------------------------------------------------------------------------------
    def free_slots(self, pool: str) -> int:
        busy = sum(1 for t in self._tracked.values() if t.job.pool == pool)
        return max(0, self.pools[pool].slots - busy)

    def running(self) -> int:
        return len(self._tracked)

    # -- submission ----------------------------------------------------------------------------
    def submit(self, jobs: list[JobSpec]) -> dict[int, str]:
        handles: dict[int, str] = {}
        by_pool: dict[str, list[JobSpec]] = {}
        for job in jobs:
            by_pool.setdefault(job.pool, []).append(job)
        for pool, group in by_pool.items():
            if pool in self.queues:
                for job in group:
                    self.queues[pool].put(job.trial, job.exp_dir)
                    self._tracked[job.trial] = _Tracked(job, slurm_id="")
                    handles[job.trial] = f"queue:{pool}"
                self._ensure_workers(pool, self._job_states(self._workers[pool]))
                continue
            handles.update(self._submit_array(pool, group))
        return handles

    def _submit_array(self, pool: str, group: list[JobSpec]) -> dict[int, str]:
        """`group` as sbatch arrays of at most the cluster's MaxArraySize tasks (sbatch refuses a
        larger one, and a wave of a partition with more slots would be lost whole)."""
        handles: dict[int, str] = {}
        for start in range(0, len(group), self._max_array):
            handles.update(self._submit_one_array(pool, group[start : start + self._max_array]))
        return handles

    def _submit_one_array(self, pool: str, group: list[JobSpec]) -> dict[int, str]:
        """One sbatch array for `group`. Jobs sbatch refuses are lost (re-queued); jobs it cannot
        send, Slurm's controller being out of reach, the partition closed or a cap on submitted
        jobs reached, are held and sent again from `poll`."""
        if self._outage.waiting() or self._pool_waiting(pool):
            return self._hold_unsent(pool, group)
        try:
            submitted, capped = self._map_array_under_cap(
                pool, run_array_task, [str(j.exp_dir.resolve()) for j in group]
            )
        except SUBMIT_ERRORS as err:
            reason = refusal(err)
            if unreachable(err):
                self._outage.failed(reason)
                return self._hold_unsent(pool, group)
            if held := self._held_by(pool, err):
                held.failed(reason)
                return self._hold_unsent(pool, group)
            log.warning("partition %s: %s", pool, reason)
            for j in group:  # sbatch's unreadable answer may hide a job that runs: it must not
                lost = {"trial": j.trial, "status": "lost", "reason": reason}
                write_json_atomic(j.exp_dir / ABANDONED_FILE, lost)
                self._refused.append(Finished(j.trial, lost))
            return {}
        self._outage.over()
        sent, rest = group[: len(submitted)], group[len(submitted) :]
        handles = self._pool_room_left(pool, capped, rest)
        for job, sjob in zip(sent, submitted, strict=True):
            self._tracked[job.trial] = _Tracked(job, slurm_id=sjob.job_id)
            handles[job.trial] = f"slurm:{pool}:{sjob.job_id}"
        log.info(
            "submitted %d experiment(s) to partition %s as array %s",
            len(sent),
            pool,
            submitted[0].job_id.split("_")[0],
        )
        return handles

    def _map_array_under_cap(
        self, pool: str, fn: Callable[..., Any], *args: list[Any]
    ) -> tuple[list[submitit.Job[Any]], Exception | None]:
        """One sbatch array of `fn` over `args`, or of their first part when a cap on submitted jobs
        (each array task counts) leaves room for only part: refused, a smaller array is tried, down
        to one task (`SubmitLimitReached.sizes`), so a round larger than the room still sends what
        fits rather than waiting whole for ever. The jobs sent (for the first items), and the cap's
        refusal when not all went out; sbatch's error when none did."""
        wanted, cap = len(args[0]), self._capped[pool]
        refused: Exception | None = None
        for size in cap.sizes(wanted):
            try:
                with environment_for_jobs():
                    jobs = self.executors[pool].map_array(fn, *(a[:size] for a in args))
            except SUBMIT_ERRORS as err:
                if not submit_limit(err):
                    raise
                if size == 1:
                    cap.none_went(err)
                    raise
                refused = err
                continue
            return jobs, cap.went_through(size, wanted, refused)
        raise AssertionError("sizes end with one task")  # (unreachable: a refusal of one task raises)

    def _pool_room_left(self, pool: str, capped: Exception | None, rest: list[JobSpec]) -> dict[int, str]:
        """After sbatch took a pool's jobs: with all of them, a closure or cap it refused them for
        is over (said so); with part (`capped`), the `rest` wait for room under the cap, said once,
        and are tried again soon, room having been found."""
        if capped is None:
            self._pool_takes_jobs(pool)
            return {}
        self._closed[pool].over()
        self._capped[pool].sent_part(refusal(capped))
        return self._hold_unsent(pool, rest)

    def _held_by(self, pool: str, err: Exception) -> PoolBackoff | None:
        """The pool's back-off for a refusal that passes (partition closed, submit cap reached),
        None for one that is the jobs' to lose."""
        if partition_closed(err):
            return self._closed[pool]
        if submit_limit(err):
            return self._capped[pool]
        return None

    def _pool_waiting(self, pool: str) -> bool:
        """Whether the pool's jobs wait, sbatch having refused them for a reason that passes."""
        return self._closed[pool].waiting() or self._capped[pool].waiting()

    def _pool_takes_jobs(self, pool: str) -> None:
        """sbatch took the pool's jobs: a closure or cap it refused them for is over (said so)."""
        self._closed[pool].over()
        self._capped[pool].over()

    def _hold_unsent(self, pool: str, group: list[JobSpec]) -> dict[int, str]:
        """Jobs keep their slots and trials while sbatch cannot send them. Their handle has no job
        id: a controller that starts again finds it in sent.json once they are sent (`reattach`)."""
        for job in group:
            self._tracked[job.trial] = _Tracked(job, slurm_id="", unsent=True)
        return {job.trial: f"slurm:{pool}:" for job in group}

    def _send_unsent(self) -> None:
        """Send the jobs held for want of Slurm's controller, an open partition or room under a
        submit cap, once the back-off allows."""
        unsent = [t for t in self._tracked.values() if t.unsent and not self._pool_waiting(t.job.pool)]
        if not unsent or self._outage.waiting():
            return
        by_pool: dict[str, list[JobSpec]] = {}
        for t in unsent:
            del self._tracked[t.job.trial]
            by_pool.setdefault(t.job.pool, []).append(t.job)
        for pool, group in by_pool.items():
            handles = self._submit_array(pool, group)
            for job in group:  # those sent: where to, for a controller that resumes
                if slurm_id := handles.get(job.trial, "").rpartition(":")[2]:
                    write_json_atomic(job.exp_dir / SENT_LATE_FILE, {"slurm_job_id": slurm_id})

    def _ensure_workers(
        self, pool: str, states: dict[str, list[str]], claims: dict[int, tuple[str, int]] | None = None
    ) -> None:
        """Start workers for the queued experiments that no worker alive will take, up to `slots`;
        replace those that ended. A pool of idle workers is not refilled: they would only wait."""
        queue, starts = self.queues[pool], self._starts[pool]
        # (at this controller's first look, the earlier controllers' failed starts in a row count,
        # an sbatch each: a resume must not start the back-off, nor worker_start_tries, over;
        # those before a worker that started, none)
        row = None if pool in self._opened else starts.row_so_far(self._workers[pool], states)
        if pool not in self._opened:
            queue.open()
            self._opened.add(pool)
        sent = self._workers[pool]
        alive = [w for w in sent if self._may_run(w, states.get(w, []))]
        self._workers[pool] = alive
        starts.count(sent, alive, states, row)
        busy = {worker for worker, _ in (queue.claims() if claims is None else claims).values()}
        idle = sum(1 for w in alive if w not in busy)  # (pending ones too): each takes one when free
        missing = min(self.pools[pool].slots - len(alive), queue.ready_count() - idle, self._max_array)
        waiting = self._outage.waiting() or self._pool_waiting(pool)
        # (waiting: for Slurm's controller, the partition or room under a submit cap; after another
        # refusal, for the workers alive)
        if missing <= 0 or waiting or starts.waiting(bool(alive)):
            return
        limit_s = self.cluster.partitions[pool].time_limit_min * 60.0 - SIGNAL_DELAY_S
        try:
            submitted, capped = self._map_array_under_cap(
                pool,
                run_worker,
                [str(queue.path.resolve())] * missing,
                [self.deadline_s] * missing,
                [limit_s] * missing,
            )
        except SUBMIT_ERRORS as err:
            self._workers_refused(pool, err)
            return
        self._outage.over()
        self._pool_room_left(pool, capped, [])
        ids = [j.job_id for j in submitted]
        starts.refusal.sent(ids)
        queue.record_submitted(ids)
        self._workers[pool] = alive + ids
        log.info("started %d worker(s) on partition %s", len(ids), pool)

    def _workers_refused(self, pool: str, err: Exception) -> None:
        """sbatch would not start workers. While some are alive they take the queued experiments
        and sbatch is tried again, backing off; with none, what waits for one is lost (re-queued),
        unless the partition is closed or a submit cap reached for now: then it waits."""
        reason = refusal(err)
        held = self._held_by(pool, err)
        if unreachable(err):
            self._outage.failed(reason)
        elif held:
            held.failed(reason)
        elif self._workers[pool]:
            self._starts[pool].refusal.failed(reason)
        else:
            self._lose_queued(pool, reason)

    def _lose_queued(
        self, pool: str, reason: str, lost: Callable[[int], dict[str, Any]] | None = None
    ) -> None:
        """No worker lives to take the pool's queued experiments, and none can be sent: each is
        lost (re-queued), reported at the next poll. `lost`: a trial's outcome, if not plainly lost."""
        log.warning("partition %s: %s (workers)", pool, reason)
        queue = self.queues[pool]
        waiting = [t for t in self._tracked.values() if t.job.pool == pool and queue.is_queued(t.job.trial)]
        outcome = lost or (lambda trial: {"trial": trial, "status": "lost", "reason": reason})
        self._refused += [self._done(t, outcome(t.job.trial)) for t in waiting]

    def _may_run(self, job_id: str, attempts: list[str]) -> bool:
        """Whether a job is queued or running. One with no record may be (a job sent since the
        last answer is in none), unless neither sacct nor squeue listed it: then slurmctld let go
        of it (a resumed controller's old worker, a worker cancelled while pending). squeue's word
        is enough, also while sacct fails: slurmctld lists every job it still holds, so one it does
        not list claims nothing more and is replaced at once. How it ended only matters for the
        experiment it held, which stays claimed in its name and waits for sacct (`_absent`)."""
        return is_active(latest(attempts)) if attempts else job_id not in self._gone

    def reattach(self, job: JobSpec, handle: str) -> bool:
        """Adopt a previous controller's experiment; what became of it is for `poll` to find out.
        One it cannot adopt is given up for good (abandoned.json, its queue entry removed), as
        the campaign queues it again: an array task or a worker that still gets it must not run it."""
        if not handle:  # the controller stopped between sbatch and recording the handle
            handle = f"queue:{job.pool}" if job.pool in self.queues else f"slurm:{job.pool}:"
        slurm_id = self._adoptable(job, handle)
        if slurm_id is None:
            gone = {"trial": job.trial, "status": "lost", "reason": "not started when its controller stopped"}
            write_json_atomic(job.exp_dir / ABANDONED_FILE, gone)
            if job.pool in self.queues:
                self.queues[job.pool].release(job.trial)
            return False
        self._tracked[job.trial] = _Tracked(job, slurm_id=slurm_id)
        return True

    def _adoptable(self, job: JobSpec, handle: str) -> str | None:
        """The Slurm job of an experiment to adopt ('' for one in the worker queue), or None."""
        kind, _, rest = handle.partition(":")
        if kind == "queue" and job.pool in self.queues:
            queue = self.queues[job.pool]
            held = queue.is_queued(job.trial) or queue.claimed_by(job.trial)
            return "" if held or (job.exp_dir / OUTCOME_FILE).exists() else None
        pool, _, slurm_id = rest.partition(":")
        if kind != "slurm" or pool not in self.pools:
            return None
        if slurm_id:
            return slurm_id
        # Held while Slurm was out of reach, or its handle never recorded: sent.json names its
        # job; started.json does too once it started, also where the controller stopped between
        # the sbatch and sent.json. Without either, it was never sent, or by a controller that
        # stopped before saying so.
        records = (read_json(job.exp_dir / name) or {} for name in (SENT_LATE_FILE, STARTED_FILE))
        return next((r["slurm_job_id"] for r in records if r.get("slurm_job_id")), None)

    # -- watching ------------------------------------------------------------------------------
    def poll(self) -> list[Finished]:
        self._send_unsent()
        done, self._refused = self._refused, []
        now = time.time()
        waiting: list[_Waiting] = []
        claims = {pool: queue.claims() for pool, queue in self.queues.items()}  # one listing each
        for t in [t for t in self._tracked.values() if not t.unsent]:
            outcome = read_json(t.job.exp_dir / OUTCOME_FILE)
            # Final: a result, a crash, or the runner's word that the node cannot run experiments
            # or that the disk of its folder refused train.py's writes.
            if outcome is not None and (
                outcome.get("status") not in INFRA_STATUSES
                or outcome.get("node_unfit")
                or outcome.get("disk_full")
            ):
                done.append(self._done(t, outcome))
                continue
            # The Slurm job and attempt running it: its array task, or the worker holding it.
            job = (t.slurm_id, 0) if t.slurm_id else claims[t.job.pool].get(t.job.trial)
            waiting.append((t, outcome, job))
        ids = [job[0] for _, _, job in waiting if job] + [w for ws in self._workers.values() for w in ws]
        states = self._job_states(ids)
        gone = self._absent(waiting, states, now)
        self._count_suspended_time(waiting, states, now)
        if time.monotonic() - self._pending_at >= PENDING_POLL_SECONDS:
            self._pending_at = time.monotonic()
            pools = {job[0]: t.job.pool for t, _, job in waiting if job}
            pools.update({w: pool for pool, ws in self._workers.items() for w in ws})
            trials = {job[0]: t.job.trial for t, _, job in waiting if job}
            pending = {i: pools[i] for i in ids if latest(states[i]) == "PENDING"}
            self._warn_never_starting(pending, trials)
        for t, outcome, job in waiting:
            finished = self._past_deadline(t, outcome, job, now) or self._judge(
                t, outcome, job, states, gone, now
            )
            if finished is not None:
                done.append(finished)
        for pool in self.queues:
            if any(t.job.pool == pool for t in self._tracked.values()):
                self._ensure_workers(pool, states, claims[pool])  # (the claims listed once per poll)
        return done

    def _judge(
        self,
        t: _Tracked,
        outcome: dict[str, Any] | None,
        job: tuple[str, int] | None,
        states: dict[str, list[str]],
        gone: set[str],
        now: float,
    ) -> Finished | None:
        """Whether a job without a usable outcome is over, from Slurm's record of its attempt.

        `outcome` is the runner's when it was interrupted (the reason then is Slurm's: scancel,
        preemption, node failure); None when there is none yet.
        """
        if job is None:  # queued for a worker, or its worker already let go of it
            return self._done(t, outcome) if outcome is not None else None
        slurm_id, attempt = job
        attempts = states.get(slurm_id, [])
        if not attempts and outcome is None:
            if slurm_id in self._dropped and not (t.job.exp_dir / STARTED_FILE).exists():
                return self._cancelled_while_pending(t, slurm_id, now)
            t.over_since = None
            if slurm_id not in gone:
                return None
            reason = f"Slurm has no record of {slurm_id}"
            if t.unknown_for <= UNKNOWN_SECONDS:  # (overdue on squeue's answers alone: sacct failing)
                reason = (
                    f"{slurm_id} left Slurm's queue before its runner started, and sacct failed for "
                    f"{t.unstarted_for:.0f} s after: how it ended is unknown"
                )
            lost = {"trial": t.job.trial, "status": "lost", "reason": reason}
            return self._done(t, lost, abandon=True)
        state = self._written_state(t, attempts, attempt, now)
        over = outcome_for_state(state, t.job.trial)
        if outcome is not None:  # the runner was interrupted: Slurm knows by what
            t.over_since = t.over_since or now
            if over is None:  # not over in sacct yet; after a while the runner's word stands, but
                # not over an end yet to be written: a SIGTERM comes alike from a free requeue and
                # a node failure, a retry (`_written_state` waits for it)
                settled = t.stale_since is None and now - t.over_since >= 3 * SETTLE_SECONDS
                return self._done(t, outcome) if settled else None
            ordinary_end = over["status"] == "crash" or state.startswith(COMPLETED)  # as Slurm saw it
            if ordinary_end and "SIGUSR2" in outcome.get("reason", ""):
                return self._done(
                    t, {**outcome, "status": "timeout", "reason": self._time_limit_reason(t, outcome)}
                )
            if ordinary_end:
                return self._done(t, outcome)
            reason = f"{over['reason']}: {outcome.get('reason', '')}".rstrip(": ")
            return self._done(t, {**outcome, **over, "reason": reason})
        if over is None:
            t.over_since = None
            return None
        t.over_since = t.over_since or now
        if over["status"] != "lost" and now - t.over_since < SETTLE_SECONDS:
            return None  # the result may still be on its way through the shared file system
        if state.startswith("FAILED"):
            return self._judge_failed(t, slurm_id, attempt == len(attempts) - 1, over)
        return self._done(t, {**over, "slurm_job_id": slurm_id}, abandon=True)

    def _judge_failed(
        self, t: _Tracked, slurm_id: str, latest_attempt: bool, over: dict[str, Any]
    ) -> Finished | None:
        """A job FAILED without a result. Lost to the disk where its latest attempt ended with the
        runner's word that the disk of its folder refused its own files (DISK_REFUSED_EXIT), as on
        the local fleet, not a crash of its change nor a retry spent (not abandoned: that file too
        would be refused; a FAILED job is not run again). Lost where it failed before its runner
        began; else its change's crash. While sacct fails, the exit status is slurmctld's, and
        where it no longer holds the job (or is down) the judgement waits for sacct."""
        exit_status = self._exit_status_of(slurm_id)
        if exit_status is None and self._states_from != "sacct":
            return None
        if latest_attempt and exit_status == DISK_REFUSED_EXIT:
            return self._done(
                t, {**runner_files_refused(t.job.exp_dir, t.job.trial), "slurm_job_id": slurm_id}
            )
        if not (t.job.exp_dir / STARTED_FILE).exists():
            over = self._failed_before_the_runner(t, slurm_id)
        return self._done(t, {**over, "slurm_job_id": slurm_id}, abandon=True)

    def _written_state(self, t: _Tracked, attempts: list[str], attempt: int, now: float) -> str:
        """The attempt's state in sacct; for a record whose end slurmdbd has not written (STALE),
        '' (not over) while it may still come, so that a node failure is not taken for a free
        requeue, nor a requeue for a node failure: the one judgement is made on the written end.
        An end UNKNOWN_SECONDS overdue was lost (a runaway job): RESTARTED, a cause no record gives."""
        state = attempt_state(attempts, attempt)
        if state != STALE:
            t.stale_since = None
            return state
        t.stale_since = t.stale_since or now
        return RESTARTED if now - t.stale_since >= UNKNOWN_SECONDS else ""

    def _exit_status_of(self, slurm_id: str) -> int | None:
        """The exit status of a job's latest attempt, where the runner says its disk refused its own
        files (DISK_REFUSED_EXIT): sacct's ExitCode; while sacct fails, slurmctld's, which holds an
        ended job for MinJobAge (the states then are squeue's, and an earlier sacct answer's
        status, a running job's 0, is no longer the job's). None while squeue fails too: slurmctld
        cannot answer then, and asking it for each job at every poll took a timeout each."""
        if self._states_from == "sacct":
            return self._exit_status.get(slurm_id)
        return queue_exit_status(slurm_id) if self._states_from == "squeue" else None

    def _failed_exit_status(self, slurm_id: str) -> int | None:
        """A FAILED job's exit status. Where sacct's record lags behind squeue's FAILED (its state
        then squeue's, `_job_states`), sacct's is the pending job's 0, no status a FAILED job
        ends with: slurmctld's then, which holds an ended job for MinJobAge."""
        status = self._exit_status_of(slurm_id)
        return status if status or self._states_from != "sacct" else queue_exit_status(slurm_id)

    def _failed_before_the_runner(self, t: _Tracked, slurm_id: str) -> dict[str, Any]:
        """A job that failed before its runner began: the experiment never ran, so it is no crash
        of its own but a lost run, queued again. Its job could not start the runner: the submitit
        folder deleted under a pending job, an interpreter the node lacks."""
        reason = (
            f"Slurm FAILED before its runner started: the job could not start it "
            f"(its log: {self.cluster.submitit_dir}/{slurm_id}/)"
        )
        return {"trial": t.job.trial, "status": "lost", "reason": reason}

    def _time_limit_reason(self, t: _Tracked, outcome: dict[str, Any]) -> str:
        """Why an array task's run got Slurm's warning of its time limit: `time_limit_min`, to
        raise; or, where it came long before that limit's warning, a limit lowered by hand
        (`scontrol update TimeLimit`), which raising the setting would not cure. (A worker's warning
        comes after the runs before, so it says nothing of the one it cut.)"""
        warned = f"the job's time limit was near ({outcome['reason']})"
        ran = float(outcome.get("ended_at", 0.0)) - float(outcome.get("started_at", 0.0))
        limit_min = self.cluster.partitions[t.job.pool].time_limit_min
        if t.job.pool in self.queues or ran >= limit_min * 60 - SIGNAL_DELAY_S - LIMIT_MARGIN_S:
            return f"{warned}: raise time_limit_min"
        return (
            f"{warned} after {ran:.0f} s, long before time_limit_min={limit_min}'s: its job's time limit "
            "was lowered (scontrol update TimeLimit)"
        )

    def _cancelled_while_pending(self, t: _Tracked, slurm_id: str, now: float) -> Finished | None:
        """An array task taken out of Slurm's queue on its own before it started, once that has
        held for a while: `scancel` of a pending task, which Slurm 22.05 keeps no record of. A
        person's decision, recorded as a cancel, where it was lost and queued again as a new trial
        once Slurm had had no record of it for minutes."""
        t.over_since = t.over_since or now
        if now - t.over_since < SETTLE_SECONDS:
            return None
        reason = (
            f"cancelled: {slurm_id} left Slurm's queue before it started, and Slurm keeps no record of "
            "it, as of a pending array task scancelled on its own"
        )
        cancelled = {"trial": t.job.trial, "status": "cancelled", "reason": reason, "slurm_job_id": slurm_id}
        return self._done(t, cancelled, abandon=True)

    def _count_suspended_time(
        self, waiting: list[_Waiting], states: dict[str, list[str]], now: float
    ) -> None:
        """Count the time Slurm shows each job suspended (`scontrol suspend`): its processes stand
        still, the runner's clock with them (runner), and a deadline that ran on would cancel a
        sound run as hung the moment it came back."""
        for t, _, job in waiting:
            suspended = job is not None and latest(states.get(job[0], [])).startswith("SUSPENDED")
            if suspended and t.suspended_at is not None:
                t.suspended_s += now - t.suspended_at
            t.suspended_at = now if suspended else None

    def _past_deadline(
        self, t: _Tracked, outcome: dict[str, Any] | None, job: tuple[str, int] | None, now: float
    ) -> Finished | None:
        """The controller's backstop: a run its runner has not ended long past its deadline is
        cancelled as hung, its job's suspended time not counted. That time is the larger of this
        controller's count and Slurm's (sacct's Suspended), which survives a restart: a controller
        started again after a long suspension would otherwise cancel the run as it resumed. A job
        suspended now waits: its time is not all counted yet. Judged on Slurm's latest answer, so a
        controller just started first learns what Slurm counted."""
        if outcome is not None:
            return None
        if t.deadline is None:
            t.deadline = self._deadline_of(t)
        if t.deadline is None or t.suspended_at is not None:
            return None
        suspended_s = max(t.suspended_s, self._suspended_s.get(job[0], 0.0) if job else 0.0)
        if now <= t.deadline + suspended_s:
            return None
        if job:
            subprocess.run(["scancel", job[0]], capture_output=True, check=False)
        timeout = {"trial": t.job.trial, "status": "timeout", "reason": "controller deadline"}
        return self._done(t, timeout, abandon=True)

    def _absent(self, waiting: list[_Waiting], states: dict[str, list[str]], now: float) -> set[str]:
        """The jobs that neither sacct nor squeue has shown for UNKNOWN_SECONDS of sacct's answers:
        the clock stops while sacct fails (slurmdbd down), so an outage alone loses nothing. A job
        squeue no longer holds then may have finished; only sacct can say how, so it waits for
        sacct (its result file, read first, may tell sooner). One whose runner never began ran
        nothing of its experiment, so that wait is bounded: UNSTARTED_GONE_SECONDS of squeue's
        answers, said when it begins (a slurmdbd outage can last hours)."""
        overdue = set()
        answering = self._states_from == "sacct"
        for t, outcome, job in waiting:
            if job is None or outcome is not None or states.get(job[0]):
                t.unknown_for, t.unknown_at = 0.0, None
                t.unstarted_for, t.unstarted_at = 0.0, None
                continue
            if answering and t.unknown_at is not None:
                t.unknown_for += now - t.unknown_at
            t.unknown_at = now if answering else None
            self._count_unstarted_gone(t, job[0], now)
            if t.unknown_for > UNKNOWN_SECONDS or t.unstarted_for > UNSTARTED_GONE_SECONDS:
                overdue.add(job[0])
        return overdue & self._gone

    def _count_unstarted_gone(self, t: _Tracked, slurm_id: str, now: float) -> None:
        """Count the time squeue, alone answering, has not listed a job whose runner never began."""
        counting = (
            self._states_from == "squeue"
            and slurm_id in self._gone
            and not (t.job.exp_dir / STARTED_FILE).exists()
        )
        if counting and t.unstarted_at is None and t.unstarted_for == 0.0:
            log.warning(
                "trial %d: Slurm job %s left the queue before its runner started, and sacct fails: "
                "how it ended is sacct's to say; the trial waits for it %.0f min at most, then is "
                "lost and queued again",
                t.job.trial, slurm_id, UNSTARTED_GONE_SECONDS / 60,
            )  # fmt: skip
        if counting and t.unstarted_at is not None:
            t.unstarted_for += now - t.unstarted_at
        t.unstarted_at = now if counting else None

    def _done(self, t: _Tracked, outcome: dict[str, Any], abandon: bool = False) -> Finished:
        """Stop tracking a trial; make sure Slurm will not run its workspace again."""
        del self._tracked[t.job.trial]
        if t.job.pool in self.queues:
            self.queues[t.job.pool].release(t.job.trial)
        if abandon:
            write_json_atomic(t.job.exp_dir / ABANDONED_FILE, outcome)
        if t.slurm_id and outcome.get("status") == "lost":  # Slurm requeued it: cancel its rerun
            subprocess.run(["scancel", t.slurm_id], capture_output=True, check=False)
        self.note_node(t.job.pool, outcome)
        return Finished(t.job.trial, outcome)

    def note_node(self, pool: str, outcome: dict[str, Any]) -> None:
        if pool in self.executors and (newly := self.nodes.note(pool, outcome)):
            self._exclude(pool, newly)

    def _exclude(self, pool: str, nodes: set[str]) -> None:
        """Keep nodes that cannot run experiments out of the partition's new jobs."""
        for node in sorted(nodes):
            reason = self.nodes.unfit[pool][node]
            log.warning("node %s excluded from partition %s's new jobs: %s", node, pool, reason)
        excluded = exclude_list(self.cluster.partitions[pool].exclude, self.nodes.excluded[pool])
        self.executors[pool].update_parameters(slurm_exclude=excluded)

    def _deadline_of(self, t: _Tracked) -> float | None:
        """The runner's start plus its deadline and grace; None until it has started."""
        if not (t.job.exp_dir / STARTED_FILE).is_file():
            return None
        start = started_at(t.job.exp_dir) or time.time()  # (a start damaged by hand counts from now)
        return start + self.deadline_s + backstop_grace(self.cluster)

    def _warn_never_starting(self, pending: dict[str, str], trials: dict[str, int]) -> None:
        """Say once per partition and reason when Slurm holds a job pending for a reason that
        waiting does not cure: its experiments count as running, and would never start. Jobs held
        until someone releases them are said once per hold (`_say_held`); a partition or its nodes
        out of service (down, inactive, drained), once per partition and state while it lasts: a
        campaign standing still says why, and again when the partition closes again after its jobs
        stopped waiting for that. `pending` gives each job's pool, `trials` its experiment's trial."""
        jobs = {i.split("_")[0]: pool for i, pool in pending.items()}
        reasons = pending_reasons(set(jobs))
        if reasons is None:  # (squeue cannot tell: nothing said, nothing forgotten)
            return
        self._say_held(pending, trials, reasons)
        each = sorted({(task.split("_")[0], reason) for task, listed in reasons.items() for reason in listed})
        closed_now = {(jobs[job], reason) for job, reason in each if job in jobs}
        self._warned -= {key for key in self._warned if key[1] in CLOSED and key not in closed_now}
        for job, reason in each:
            pool = jobs.get(job)
            if pool and reason in CLOSED:
                self._say_once(
                    (pool, reason),
                    f"{pool}: Slurm holds job {job} pending for {reason}: {CLOSED[reason]}; its experiments "
                    f"wait (not lost) and start when that is over (sinfo -p {self.pools[pool].partition})",
                )
            elif pool and reason in NEVER_STARTS:
                self._say_once(
                    (pool, reason),
                    f"{pool}: Slurm holds job {job} pending for {reason}: {NEVER_STARTS[reason]}; its "
                    f"experiments may never start: fix cluster.partitions.{pool} and run the command "
                    f"again (scancel -n autoresearch-{pool})",
                )

    def _say_held(
        self, pending: dict[str, str], trials: dict[str, int], reasons: dict[str, set[str]]
    ) -> None:
        """Say once per hold which jobs it holds, an array's by task, and their experiments' trials:
        a person holds a task of an array, not the array, and the array's id would release or
        cancel the others with it (`scancel` of the array ends its running tasks)."""
        held: dict[tuple[str, str, str], list[str]] = {}  # (pool, job, reason) -> the tasks held
        for task, listed in reasons.items():
            for reason in sorted(listed & HELD.keys()):
                if task in pending:
                    held.setdefault((pending[task], task.split("_")[0], reason), []).append(task)
        for (pool, _, reason), tasks in sorted(held.items()):
            tasks.sort(key=lambda task: int(task.rpartition("_")[2]))
            numbers = [str(trials[task]) for task in tasks if task in trials]
            whose = f" (trial{'s' * (len(numbers) > 1)} {', '.join(numbers)})" if numbers else ""
            self._say_once(
                (",".join(tasks), reason),
                f"{pool}: Slurm holds job{'s' * (len(tasks) > 1)} {', '.join(tasks)}{whose} pending for "
                f"{reason}: {HELD[reason]}; {'its experiment waits' if len(numbers) == 1 else 'the experiments wait'} "
                f"until released (scontrol release {','.join(tasks)}) or cancelled (scancel {' '.join(tasks)})",
            )

    def _say_once(self, key: tuple[str, str], warning: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", warning)

    def _job_states(self, ids: list[str]) -> dict[str, list[str]]:
        """Each job's attempts (array tasks as A_i), from one sacct call every few seconds.

        slurmctld (squeue) is asked, in one call, about the jobs sacct does not show or shows
        pending: all of them while sacct fails, else those it lacks (accounting lags sbatch, a
        slurmdbd backlog holds new jobs back for minutes) and those it has pending. slurmctld holds
        every pending job, and sacct's pending record of an array's tasks stays as it was when one
        of them is cancelled alone (Slurm keeps no record of that task). A job is taken for gone
        (`_gone`) only when neither has it; one never started then has no record, whatever sacct
        said, and an array task gone while squeue or sacct still lists its array was taken out of
        it on its own (`_dropped`, `dropped_tasks`). sacct's attempts stand where it has more than
        a pending record (squeue names no attempt's end); where it has that alone, squeue's word,
        newer, stands while it has one: a task that started and ended through a slurmdbd backlog is
        judged by how it ended, not taken, once squeue let go of it, for one cancelled while pending.
        """
        now = time.monotonic()
        if ids and now - self._states_at >= STATE_POLL_SECONDS:
            found = self._sacct_states(ids)
            missing = {i for i in ids if latest((found or {}).get(i, [])) in ("", "PENDING")}
            listed = queue_states({i.split("_")[0] for i in missing}) if missing else {}
            if found is None:
                self._states_from = "squeue" if listed is not None else ""
            # Only these jobs' entries are renewed: a call about one pool's workers (`submit`)
            # must not clear what the last poll found gone among the other jobs.
            self._gone -= set(ids)
            self._dropped -= set(ids)
            if listed is not None:
                self._gone |= missing - set(listed)
                self._dropped |= dropped_tasks(missing - set(listed), listed, found or {})
            if self._states_from:  # a job the answers leave out has no record now, whatever it had
                # sacct's record of a job it lacks, or has only as pending, is older than squeue's:
                # accounting lags, and through a slurmdbd backlog it has not heard of a start yet.
                lacking = {
                    i: listed[i]
                    for i in missing
                    if listed and i in listed and (found or {}).get(i, []) in ([], ["PENDING"])
                }
                found = {**(found or {}), **lacking}
                stale = {i for i in self._gone & set(ids) if found.get(i) == ["PENDING"]}
                self._states.update({i: [] if i in stale else found.get(i, []) for i in ids})
            self._states_at = now
        return {i: self._states.get(i, []) for i in ids}

    def _sacct_states(self, ids: list[str]) -> dict[str, list[str]] | None:
        """sacct's states, None while it fails (said once per outage: with accounting down,
        slurmdbd, sacct fails at every poll). The suspended time it counts is kept for the
        deadlines (`_past_deadline`), the last count standing while it fails, raised to squeue's
        (a job's start to now less its run time): all a controller started again then has. Once
        sacct answers, its count replaces that of every job it lists, 0 included: squeue's is off
        by as much as this machine's clock runs ahead of slurmctld's."""
        sacct_was_down = self._states_from != "sacct"
        if_failed = "" if sacct_was_down else "asking squeue instead until it answers"
        answer = job_states({i.split("_")[0] for i in ids}, if_failed)
        if answer is None:
            counted = queue_suspended_s({i.split("_")[0] for i in ids}, time.time())
            for i in set(ids) & set(counted):
                self._suspended_s[i] = max(self._suspended_s.get(i, 0.0), counted[i])
            return None
        if sacct_was_down:
            log.info("sacct answers again")
        self._states_from = "sacct"
        asked = set(ids)  # (sacct answers for every task of an array: only the jobs tracked are kept)
        counted = {**self._suspended_s, **answer.suspended_s}
        self._suspended_s = {i: seconds for i, seconds in counted.items() if i in asked}
        self._exit_status.update({i: status for i, status in answer.exit_status.items() if i in asked})
        return answer.states

    def wait(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def shutdown(self, cancel: bool) -> None:
        """Workers exit once idle, and those waiting in the Slurm queue are cancelled: never
        started, or pending again after requeueing themselves near their time limit.

        With `cancel`, also end every experiment and worker of this campaign still queued or running.
        """
        workers = {w for ws in self._workers.values() for w in ws}
        for queue in self.queues.values():
            queue.stop()
        ids = workers
        if cancel:
            ids |= {t.slurm_id for t in self._tracked.values() if t.slurm_id}
        if ids:
            pending = [] if cancel else ["--state=PENDING"]
            subprocess.run(["scancel", *pending, *sorted(ids)], capture_output=True, check=False)
        self._tracked.clear()


SLURM_VARIABLES_PASSED = ("SLURM_CONF", "SLURM_CLUSTERS")  # which cluster sbatch submits to


def _withheld_from_jobs(name: str, in_a_job: bool) -> bool:
    """Whether a variable of the controller's environment must stay out of the jobs it submits:
    credentials (train.py is untrusted), and, where the controller itself runs in a Slurm job
    (slurm/controller.sbatch), that job's SLURM_* variables: an inherited SLURM_MEM_PER_NODE next
    to the experiment job's own SLURM_MEM_PER_CPU makes its srun refuse to start, and inherited
    CPU counts misplace its tasks. Outside a job, SLURM_* settings are the user's and pass."""
    if in_a_job and name.startswith("SLURM_") and name not in SLURM_VARIABLES_PASSED:
        return True
    return name not in scrubbed_environment({name: ""})


@contextlib.contextmanager
def environment_for_jobs() -> Iterator[None]:
    """sbatch exports the submitting environment into the job (and Slurm's spool): while it runs,
    the variables `_withheld_from_jobs` names are taken out of this process's environment. The
    credentials among them are kept in `runner.hidden_credentials` meanwhile, before they leave
    it and until they are back: the proposer's thread, which goes on, redacts them still."""
    with environment_lock:
        in_a_job = "SLURM_JOB_ID" in os.environ
        withheld = {k: v for k, v in os.environ.items() if _withheld_from_jobs(k, in_a_job)}
        credentials = {k: v for k, v in withheld.items() if k not in scrubbed_environment({k: ""})}
        hidden_credentials.update(credentials)
        for name in withheld:
            del os.environ[name]
    try:
        yield
    finally:
        with environment_lock:
            os.environ.update(withheld)
            for name in credentials:
                hidden_credentials.pop(name, None)
