"""Runs the last start left in flight where a resume cannot watch them: on the other fleet, or
in local runners of another host.

A stop (Ctrl-C, the time limit, kill -9) leaves the runs in flight going on: local runners in
sessions of their own, Slurm jobs in the queue. A resume re-attaches them through its fleet, but a
local fleet cannot watch a Slurm job, nor Slurm a local runner, nor any start a local runner of
another host (the campaign folder on a shared file system): each such run was failed as lost,
counted as a retry and launched again, while it ran on unseen beside its copy, its result thrown
away. So such a start is refused while any of them runs; once they have ended, any start collects
their results (`Campaign._reconcile` reads outcome.json first).

Another host's runner cannot be asked whether it lives, so its run counts as in flight until its
outcome.json is written (the runner removes its runner.pid then). One whose host is down for good
never writes it: the user gives it up by removing its runner.pid, and the start fails it as lost.
A runner of another container on this kernel (or of this one before a restart) is no other host's
once it has left its lock (`fleet.runner_pid.left_its_lock`); one an older version started held none,
nor one whose disk refused the lock, and the refusal says which (`fleet.runner_pid.why_no_lock`).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from autoresearch.files import read_json
from autoresearch.fleet.runner_pid import (
    on_this_host,
    runner_alive,
    runner_elsewhere,
    runner_record,
    why_no_lock,
)
from autoresearch.fleet.slurm import SENT_LATE_FILE
from autoresearch.fleet.slurm_states import is_active, latest, queue_states
from autoresearch.runner import PID_FILE, STARTED_FILE, ended_outcome
from autoresearch.workspace import experiment_dir

log = logging.getLogger("autoresearch")
SLURM_HANDLES = ("slurm:", "queue:")  # (fleet.slurm's; a local runner's is `local:PID`)


def other_fleets_runs(trials: Iterable[FrozenTrial], kind: str, campaign_dir: Path) -> list[str]:
    """Why this start (cluster.kind `kind`) must wait: the runs of the other fleet still in flight,
    in one line with the commands that wait for or end them; [] where there are none."""
    running = [t for t in trials if t.state == TrialState.RUNNING and "exp_dir" in t.user_attrs]
    if kind == "slurm":
        return _local_runners_alive(running, campaign_dir)
    if kind == "local":
        return _slurm_jobs_active(running, campaign_dir)
    return []


def _local_runs(trials: Iterable[FrozenTrial], campaign_dir: Path) -> Iterator[tuple[int, Path]]:
    """The trials running in the study whose run went to a local runner (no Slurm handle), with
    their experiment folders."""
    for t in trials:
        if (
            t.state == TrialState.RUNNING
            and "exp_dir" in t.user_attrs
            and not str(t.user_attrs.get("job", "")).startswith(SLURM_HANDLES)
        ):
            yield t.number, experiment_dir(campaign_dir, t.number)


def _local_runners_alive(running: list[FrozenTrial], campaign_dir: Path) -> list[str]:
    """The local runners of `running` still at work on this machine, by their runner.pid (which
    the local fleet writes before it records the handle)."""
    alive = {}
    for number, exp_dir in _local_runs(running, campaign_dir):
        pid = runner_record(exp_dir).pid  # (read once: the runner removes it as it ends)
        if pid is not None and runner_alive(exp_dir):
            alive[number] = str(pid)
    if not alive:
        return []
    said = ", ".join(f"trial {n} (pid {pid})" for n, pid in alive.items())
    return [
        f"{said} still run in local runners the last start (cluster=local) launched, which a "
        f"cluster=slurm start cannot watch, and would run again: go on with cluster=local, which "
        f"collects them, or wait for them to end; or end them (kill {' '.join(alive.values())}), "
        "and they are queued again"
    ]


def other_hosts_runs(trials: Iterable[FrozenTrial], campaign_dir: Path) -> list[str]:
    """Why this start must wait: the runs of the last start whose local runner is on another host
    and has not ended yet (no outcome.json, nor runner.refused: `ended_outcome`), in one line with
    what to do; [] where there are none."""
    away = {}  # trial -> (its runner's pid, its host, its runner.pid)
    unlocked: dict[str, dict[int, Path]] = {}  # why no lock -> trial -> its runner.pid, of `away`
    for number, exp_dir in _local_runs(trials, campaign_dir):
        if ended_outcome(exp_dir, number) is not None:  # (a runner.pid written after its end too)
            continue
        record = runner_record(exp_dir)
        if (elsewhere := runner_elsewhere(exp_dir, record)) is not None:
            away[number] = (str(record.pid), _host_said(elsewhere), exp_dir / PID_FILE)
            if why := why_no_lock(record):
                unlocked.setdefault(why, {})[number] = exp_dir / PID_FILE
    if not away:
        return []
    said = ", ".join(f"trial {n} (pid {pid} on {host})" for n, (pid, host, _) in away.items())
    pids = " ".join(pid for pid, _, _ in away.values())
    files = " ".join(str(path) for _, _, path in away.values())
    return [
        f"{said} may still run in local runners of another host than this one ({socket.gethostname()}), "
        "which this start cannot watch, and would run again: resume on the host they run on, which "
        "collects them, or wait for them to end (their outcome.json lets any host collect them), or "
        f"end them there (kill {pids}), and they are queued again; a host down for good: give its "
        f"runs up (rm {files}), and they are queued again{''.join(map(_no_lock_said, unlocked.items()))}"
    ]


def _no_lock_said(why_and_runs: tuple[str, dict[int, Path]]) -> str:
    """What the refusal adds of the runs whose runners held no lock, for one reason (`why_no_lock`):
    a restarted container's user read only of a host down for good, and could not tell why."""
    why, runs = why_and_runs
    trials = ", ".join(map(str, runs))
    files = " ".join(map(str, runs.values()))
    return (
        f"; trial {trials}: {why}, so no lock tells this start whether they ended: if they ran in "
        "this container before it restarted, or in a container since removed, they ended with it: "
        f"give them up (rm {files}), and they are queued again"
    )


def _host_said(host: str) -> str:
    """`host` as the refusal names it: where it is this host's name, its runner.pid names another
    kernel view (`fleet.runner_pid.seen_from_here`), another machine's or container's by that name."""
    return f"{host}, another machine or container of that name" if on_this_host(host) else host


def _slurm_jobs_active(running: list[FrozenTrial], campaign_dir: Path) -> list[str]:
    """The Slurm jobs of `running` still queued or running, by squeue's word."""
    jobs = {}
    for t in running:
        if job := _slurm_job(str(t.user_attrs.get("job", "")), experiment_dir(campaign_dir, t.number)):
            jobs[t.number] = job
    in_flight = jobs_in_flight(set(jobs.values()))
    if in_flight is None:
        log.warning(
            "squeue cannot say whether the Slurm jobs of trials %s, launched by the last start "
            "(cluster=slurm), still run: any that does is run again here",
            ", ".join(map(str, jobs)),
        )
        return []
    active = {n: job for n, job in jobs.items() if job in in_flight}
    if not active:
        return []
    said = ", ".join(f"trial {n} (job {job})" for n, job in active.items())
    ids = " ".join(active.values())
    return [
        f"{said} still queued or running in Slurm, launched by the last start (cluster=slurm), which "
        f"a cluster=local start cannot watch, and would run again: go on with cluster=slurm, which "
        f"collects them, or wait for them to end (squeue -j {ids.replace(' ', ',')}); or end them "
        f"(scancel {ids}), and they are queued again"
    ]


def jobs_in_flight(jobs: set[str]) -> set[str] | None:
    """Those of `jobs` Slurm still holds, queued or running; None where squeue cannot say."""
    states = queue_states(jobs)
    if states is None:
        return None
    return {job for job in jobs if is_active(latest(states.get(job, ["COMPLETED"])))}


def _slurm_job(handle: str, exp_dir: Path) -> str:
    """The Slurm job a run was sent as: its handle's, else the one its sent.json or started.json
    names (sent after an outage, a worker's, or a handle never recorded); '' for a run of no
    Slurm job."""
    if handle.startswith("local:"):
        return ""
    if handle.startswith("slurm:") and (job := handle.rpartition(":")[2]):
        return job
    records = (read_json(exp_dir / name) or {} for name in (SENT_LATE_FILE, STARTED_FILE))
    return next((str(r["slurm_job_id"]) for r in records if r.get("slurm_job_id")), "")
