"""Slurm partitions as a fleet, through submitit.

Two ways to use a partition, chosen per partition:
- `array`: experiments that become ready together go out as one sbatch array per partition, one
  task per experiment (`slurm_array_parallelism` = the partition's slots).
- `workers`: `slots` long-lived worker jobs per partition, each pulling experiments from a queue
  folder one after another (fleet.workers), so a busy cluster's queue wait is paid once per worker.
Results come back the same way in both: the runner's outcome.json in the experiment folder. Slurm
is asked about job states only for jobs that have no outcome yet, in one batched sacct call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from autoresearch.config import ClusterConfig, PartitionConfig
from autoresearch.fleet.base import Finished, JobSpec, Pool
from autoresearch.fleet.workers import WorkerQueue, run_worker
from autoresearch.runner import OUTCOME_FILE, STARTED_FILE, run_experiment, scrubbed_environment

log = logging.getLogger("autoresearch")

# Slurm's terminal states, and what each means for the experiment.
INFRA_STATES = {"NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "REQUEUED", "DEADLINE", "REVOKED"}
EXPERIMENT_STATES = {"OUT_OF_MEMORY": "crash", "TIMEOUT": "timeout", "FAILED": "crash", "COMPLETED": "crash"}
CANCELLED = "CANCELLED"
STATE_POLL_SECONDS = 10.0


@dataclass
class _Tracked:
    job: JobSpec
    slurm_id: str  # array job id with task, e.g. 1234_5; the worker's id in worker mode
    deadline: float | None = None  # set when the runner starts: queue time does not count


def outcome_for_state(state: str, trial: int) -> dict[str, Any] | None:
    """The outcome of a job that ended in `state` without writing one, or None if it is not over."""
    base = state.split()[0] if state else "UNKNOWN"
    if base in INFRA_STATES:
        return {"trial": trial, "status": "lost", "reason": f"Slurm {base}"}
    if base.startswith(CANCELLED):
        return {"trial": trial, "status": "cancelled", "reason": f"Slurm {state}"}
    if base in EXPERIMENT_STATES:
        return {"trial": trial, "status": EXPERIMENT_STATES[base], "reason": f"Slurm {base} without a result"}
    return None


def executor_for(
    folder: Path, name: str, part: PartitionConfig, time_limit_min: int
) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    params: dict[str, Any] = {
        "slurm_partition": part.partition or name,
        "slurm_array_parallelism": part.slots,
        "cpus_per_task": part.cpus_per_task,
        "timeout_min": time_limit_min,
        "name": f"autoresearch-{name}",
        "slurm_signal_delay_s": 120,
    }
    if part.gres:
        params["slurm_gres"] = part.gres
    elif part.gpus_per_node:
        params["gpus_per_node"] = part.gpus_per_node
    if part.mem_gb:
        params["mem_gb"] = part.mem_gb
    for key in ("account", "qos", "constraint", "exclude"):
        if getattr(part, key):
            params[f"slurm_{key}"] = getattr(part, key)
    if part.setup:
        params["slurm_setup"] = list(part.setup)
    if part.extra_sbatch:
        params["slurm_additional_parameters"] = dict(part.extra_sbatch)
    executor.update_parameters(**params)
    return executor


class SlurmFleet:
    def __init__(self, cluster: ClusterConfig, deadline_s: float, campaign_dir: str) -> None:
        if not cluster.partitions:
            raise ValueError("cluster=slurm needs at least one partition")
        self.cluster = cluster
        self.deadline_s = deadline_s
        self.dir = Path(campaign_dir)
        self.folder = self.dir / cluster.submitit_dir
        self.pools: dict[str, Pool] = {}
        self.executors: dict[str, submitit.AutoExecutor] = {}
        self.queues: dict[str, WorkerQueue] = {}
        for name, part in cluster.partitions.items():
            if part.mode not in ("array", "workers"):
                raise ValueError(f"partition {name}: mode must be array or workers, not {part.mode!r}")
            slots = min(part.slots, cluster.max_queued)
            self.pools[name] = Pool(
                name, slots, part.gpu_type, part.price_per_gpu_hour, part.partition or name
            )
            self.executors[name] = executor_for(self.folder, name, part, part.time_limit_min)
            if part.mode == "workers":
                self.queues[name] = WorkerQueue(self.dir / "queue" / name)
        self._tracked: dict[int, _Tracked] = {}
        self._workers: dict[str, list[str]] = {name: [] for name in self.queues}
        self.sbatch_calls = 0
        self._states: dict[str, str] = {}
        self._states_at = 0.0

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
                self._ensure_workers(pool)
                continue
            with credentials_hidden():
                submitted = self.executors[pool].map_array(
                    run_experiment, [str(j.exp_dir.resolve()) for j in group]
                )
            self.sbatch_calls += 1
            for job, sjob in zip(group, submitted, strict=True):
                self._tracked[job.trial] = _Tracked(job, slurm_id=sjob.job_id)
                handles[job.trial] = f"slurm:{pool}:{sjob.job_id}"
            log.info(
                "submitted %d experiment(s) to partition %s as array %s",
                len(group),
                pool,
                submitted[0].job_id.split("_")[0],
            )
        return handles

    def _ensure_workers(self, pool: str) -> None:
        """Keep `slots` worker jobs alive on a worker partition; replace those that ended."""
        states = self._job_states(self._workers[pool])
        alive = [w for w in self._workers[pool] if _is_active(states.get(w, "PENDING"))]
        missing = self.pools[pool].slots - len(alive)
        if missing > 0:
            queue = self.queues[pool]
            limit_s = self.cluster.partitions[pool].time_limit_min * 60.0
            with credentials_hidden():
                submitted = self.executors[pool].map_array(
                    run_worker,
                    [str(queue.path.resolve())] * missing,
                    [self.deadline_s] * missing,
                    [limit_s] * missing,
                )
            self.sbatch_calls += 1
            alive += [j.job_id for j in submitted]
            log.info("started %d worker(s) on partition %s", missing, pool)
        self._workers[pool] = alive

    def reattach(self, job: JobSpec, handle: str) -> bool:
        kind, _, rest = handle.partition(":")
        if kind == "queue" and job.pool in self.queues:
            queue = self.queues[job.pool]
            if not (
                queue.is_queued(job.trial)
                or queue.claimed_by(job.trial)
                or (job.exp_dir / OUTCOME_FILE).exists()
            ):
                return False
            self._tracked[job.trial] = _Tracked(job, slurm_id="")
            self._workers[job.pool] = queue.known_workers()
            return True
        if kind != "slurm":
            return False
        pool, _, slurm_id = rest.partition(":")
        state = self._job_states([slurm_id], force=True).get(slurm_id, "UNKNOWN")
        if not (job.exp_dir / OUTCOME_FILE).exists() and outcome_for_state(state, job.trial) is not None:
            return False
        self._tracked[job.trial] = _Tracked(job, slurm_id=slurm_id)
        return True

    # -- watching ------------------------------------------------------------------------------
    def poll(self) -> list[Finished]:
        done: list[Finished] = []
        now = time.time()
        unresolved: list[_Tracked] = []
        for trial, t in list(self._tracked.items()):
            outcome_path = t.job.exp_dir / OUTCOME_FILE
            if outcome_path.exists():
                try:
                    outcome = json.loads(outcome_path.read_text())
                except json.JSONDecodeError:
                    continue  # being written
                del self._tracked[trial]
                done.append(Finished(trial, outcome))
                continue
            if t.deadline is None and (t.job.exp_dir / STARTED_FILE).exists():
                t.deadline = now + self.deadline_s + self.cluster.grace_seconds
            if t.deadline is not None and now > t.deadline:
                self._cancel(t)
                del self._tracked[trial]
                done.append(
                    Finished(trial, {"trial": trial, "status": "timeout", "reason": "controller deadline"})
                )
                continue
            unresolved.append(t)
        done += self._ended_without_outcome(unresolved)
        for pool in self.queues:
            if any(t.job.pool == pool for t in self._tracked.values()):
                self._ensure_workers(pool)
        return done

    def _ended_without_outcome(self, tracked: list[_Tracked]) -> list[Finished]:
        """Jobs Slurm says are over but that left no outcome: ask sacct, batched and rate-limited."""
        ids = [t.slurm_id or self.queues[t.job.pool].claimed_by(t.job.trial) for t in tracked]
        states = self._job_states([i for i in ids if i])
        done = []
        for t, slurm_id in zip(tracked, ids, strict=True):
            if not slurm_id:
                continue
            outcome = outcome_for_state(states.get(slurm_id, ""), t.job.trial)
            if outcome is None:
                continue
            if (t.job.exp_dir / OUTCOME_FILE).exists():
                continue  # written between our two looks
            if not t.slurm_id:  # a worker died holding this experiment
                self.queues[t.job.pool].release(t.job.trial)
            outcome["slurm_job_id"] = slurm_id
            del self._tracked[t.job.trial]
            done.append(Finished(t.job.trial, outcome))
        return done

    def _job_states(self, ids: list[str], force: bool = False) -> dict[str, str]:
        """States of Slurm jobs by id (array tasks as A_i), from one sacct call every few seconds."""
        now = time.time()
        if ids and (force or now - self._states_at >= STATE_POLL_SECONDS):
            self._states.update(_sacct({i.split("_")[0] for i in ids}))
            self._states_at = now
        return {i: self._states.get(i, "") for i in ids}

    def _cancel(self, t: _Tracked) -> None:
        target = t.slurm_id or self.queues[t.job.pool].claimed_by(t.job.trial)
        if target:
            subprocess.run(["scancel", target], capture_output=True, check=False)

    def wait(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def shutdown(self, cancel: bool) -> None:
        """With `cancel`, end every experiment and worker of this campaign still queued or running."""
        if cancel:
            ids = {t.slurm_id for t in self._tracked.values() if t.slurm_id}
            ids |= {w for workers in self._workers.values() for w in workers}
            if ids:
                subprocess.run(["scancel", *sorted(ids)], capture_output=True, check=False)
        for queue in self.queues.values():
            queue.stop()
        self._tracked.clear()


@contextlib.contextmanager
def credentials_hidden() -> Iterator[None]:
    """sbatch exports the submitting environment into the job (and Slurm's spool): leave keys out."""
    hidden = {k: os.environ.pop(k) for k in list(os.environ) if k not in scrubbed_environment({k: ""})}
    try:
        yield
    finally:
        os.environ.update(hidden)


def _is_active(state: str) -> bool:
    return (state.split() or [""])[0] in {
        "",
        "PENDING",
        "RUNNING",
        "REQUEUED",
        "CONFIGURING",
        "COMPLETING",
        "RESIZING",
        "SUSPENDED",
    }


def _sacct(job_ids: set[str]) -> dict[str, str]:
    """`sacct` states of every task of the given jobs; {} when sacct is missing or fails."""
    if not job_ids:
        return {}
    cmd = ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(sorted(job_ids))]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("sacct failed (%s); relying on result files and deadlines", err)
        return {}
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        states[job_id.strip()] = state.strip()
    return states
