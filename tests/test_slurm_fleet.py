"""The Slurm fleet end to end on the local cluster (slurm/local): the real CLI, real sbatch arrays
and worker jobs, real failures (slurmd killed, slurmdbd stopped, scancel, controller SIGKILL, a silent hang).

The toy trainer waits while the file named by TOY_HOLD exists, so a test can hold experiments
running while it breaks something, then let them go; every wait polls Slurm or the campaign's
files, never a fixed sleep. The integration tests skip when the cluster is down (fail under CI).
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import tmpfs_at
from engine_helpers import (
    ENV_DUMP,
    REPO,
    campaign_command,
    compose_toy,
    experiment_runs,
    fake_commands,
    launched_within_budget,
    load,
    make_experiment,
    make_fleet,
    read_tsv,
    run_campaign,
    wait_for,
)
from optuna.trial import TrialState

from autoresearch.budget import experiment_ran
from autoresearch.campaign import Campaign
from autoresearch.config import ClusterConfig, PartitionConfig
from autoresearch.fleet import slurm as slurm_fleet
from autoresearch.fleet import slurm_outage, slurm_qos, slurm_states, worker_starts
from autoresearch.fleet.base import Finished, JobSpec
from autoresearch.fleet.factory import plan_fleet
from autoresearch.fleet.nodes import NodeHealth, exclude_list
from autoresearch.fleet.slurm import SlurmFleet, run_array_task
from autoresearch.fleet.slurm_states import (
    STALE,
    attempt_state,
    outcome_for_state,
    parse_sacct,
    parse_squeue,
    queue_states,
)
from autoresearch.fleet.worker_starts import _job_order
from autoresearch.fleet.workers import WorkerCannotFit, WorkerQueue, run_worker
from autoresearch.runner import SETUP_FAILED_VARIABLE, refused_by_disk
from autoresearch.study import open_study

SLURM = "cluster=slurm_local"
RESTART_SLURMD = REPO / "slurm" / "local" / "restart-slurmd.sh"
SLURM_UP = REPO / "slurm" / "local" / "up.sh"


# -- helpers ---------------------------------------------------------------------------------------
def _start(tmp_path: Path, *overrides: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A controller in the background; its terminal output goes to controller.out."""
    with open(tmp_path / "controller.out", "ab") as out:
        return subprocess.Popen(
            campaign_command(tmp_path, SLURM, *overrides),
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


class HeldCampaign:
    """A background controller whose toy experiments wait while the `hold` file exists, so a test can
    act on them mid-run; leaving the block releases them and kills a controller still running."""

    def __init__(self, tmp_path: Path, *overrides: str) -> None:
        self.tmp_path, self.overrides = tmp_path, overrides
        self.campaign, self.run_log, self.hold = tmp_path / "toy", tmp_path / "runs.log", tmp_path / "hold"
        self.env = {"TOY_RUN_LOG": str(self.run_log), "TOY_HOLD": str(self.hold)}

    def __enter__(self) -> HeldCampaign:
        self.hold.touch()
        self.start()
        return self

    def start(self) -> None:
        self.controller = _start(self.tmp_path, *self.overrides, env=self.env)

    def finish(self, timeout: float) -> None:
        """Release the experiments and wait for the campaign to end well."""
        self.hold.unlink()
        assert self.controller.wait(timeout=timeout) == 0, _output(self.tmp_path)

    def __exit__(self, *exc: object) -> None:
        self.hold.unlink(missing_ok=True)
        if self.controller.poll() is None:
            self.controller.kill()


def _output(tmp_path: Path) -> str:
    path = tmp_path / "controller.out"
    return path.read_text(errors="replace") if path.exists() else ""


def _log_count(campaign: Path, text: str) -> int:
    path = campaign / "controller.log"
    return path.read_text(errors="replace").count(text) if path.exists() else 0


def _job_ids(campaign: Path) -> set[str]:
    """The Slurm jobs (sbatch submissions) of a campaign: submitit keeps a folder per job."""
    folder = campaign / "submitit"
    return {p.name for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()


def _sacct(job_ids: set[str], fields: str = "JobID,JobName,Partition,State") -> list[list[str]]:
    """Every attempt of every task of the given jobs, one row each."""
    if not job_ids:
        return []
    out = subprocess.run(
        ["sacct", "-X", "-D", "-n", "-P", "-o", fields, "-j", ",".join(sorted(job_ids))],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def _sacct_settled(campaign: Path, tasks: set[str]) -> list[list[str]]:
    """JobID, JobName, Partition, State of every attempt of the campaign's jobs, once accounting
    shows every one of `tasks` ended: sacct lags the jobs (a task may be missing, or `allocation`)."""
    rows: list[list[str]] = []

    def settled() -> bool:
        nonlocal rows
        rows = _sacct(_job_ids(campaign))
        return tasks <= {r[0] for r in rows} and all(
            r[1].startswith("autoresearch-") and r[3] not in ("PENDING", "RUNNING", "COMPLETING")
            for r in rows
        )

    wait_for(settled, 60, f"sacct to show {sorted(tasks)} ended: {rows}")
    return rows


def _in_squeue(job_ids: set[str]) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return [line for line in out.splitlines() if line.split("_")[0].split()[0] in job_ids]


def _processes_in(folder: Path) -> list[str]:
    """Processes whose working directory is under `folder` (train.py runs in its workspace)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(folder)):
            found.append(f"{proc.name} {cwd}")
    return found


def _assert_complete(campaign: Path, budget: int) -> optuna.Study:
    """The campaign ended cleanly: its experiments budget kept (only owed re-runs over it), nothing
    RUNNING, results.tsv = the study, no job or process left."""
    study = load(campaign)
    assert not [t.number for t in study.trials if t.state == TrialState.RUNNING]
    launched_within_budget(study, budget)
    rows = read_tsv(campaign / "results.tsv")
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
    assert sorted(int(r["trial"]) for r in rows) == sorted(t.number for t in done)
    for r in rows:
        t = study.trials[int(r["trial"])]
        assert r["status"] == t.user_attrs.get("status", r["status"])
        if t.state == TrialState.COMPLETE:
            assert float(r["val_bpb"]) == pytest.approx(t.value, abs=1e-6)
    jobs = _job_ids(campaign)
    wait_for(lambda: not _in_squeue(jobs), 60, f"the campaign's jobs to leave squeue: {_in_squeue(jobs)}")
    wait_for(lambda: not _processes_in(campaign), 30, f"no process left: {_processes_in(campaign)}")
    return study


def _assert_no_double_count(campaign: Path, study: optuna.Study, run_log: Path) -> None:
    """No workspace ran twice, and no experiment (same train.py, tier and seed) completed twice."""
    runs = experiment_runs(run_log)
    assert runs and max(runs.values()) == 1, runs
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    experiments = Counter(
        (
            t.user_attrs["tier"],
            t.user_attrs.get("seed"),
            hashlib.sha256((campaign / t.user_attrs["exp_dir"] / "train.py").read_bytes()).hexdigest(),
        )
        for t in complete
    )
    assert max(experiments.values()) == 1, experiments


def _pending_workers(tmp_path: Path, slots: int = 2) -> SlurmFleet:
    """A worker-mode fleet on h100 whose workers stay pending (sent to start in an hour)."""
    cluster = compose_toy(
        tmp_path,
        SLURM,
        "cluster.partitions.h100.mode=workers",
        f"cluster.partitions.h100.slots={slots}",
        "+cluster.partitions.h100.extra_sbatch.begin=now+1hour",
    ).cluster
    return SlurmFleet(cluster, deadline_s=60, campaign_dir=str(tmp_path / "campaign"))


@pytest.mark.slurm
def test_a_controller_refused_by_the_lock_leaves_the_workers_stop_alone(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """The fleet is made before the campaign's lock is taken: a second controller, about to be
    refused, removed the STOP a first one had just written as it shut down, and its workers ran
    on. The queue is opened (its STOP removed) by the fleet that sends to it."""
    first = _pending_workers(tmp_path)
    queue = first.queues["h100"]
    queue.stop()  # the first controller, shutting down
    second = _pending_workers(tmp_path)  # made by a second controller, then refused by the lock
    assert queue.stopped()
    try:  # one that goes on (a resume) sends workers that must not exit on the old STOP
        second.submit([JobSpec(1, make_experiment(tmp_path, "", name="e1", trial=1), "h100")])
        assert not queue.stopped() and second._workers["h100"]
    finally:
        second.shutdown(cancel=True)


def _slurm_id(campaign: Path, trial: int) -> str:
    """The array task an experiment runs in, from the runner's started.json."""
    started = campaign / "experiments" / f"{trial:05d}" / "started.json"
    return json.loads(started.read_text())["slurm_job_id"] if started.exists() else ""


# -- units: sacct parsing and reruns (no cluster needed) ---------------------------------------------
def test_sacct_parsing_expands_pending_ranges_and_orders_attempts() -> None:
    text = (
        "12_0|COMPLETED|2026-01-01T10:00:00|00:01:05|0:0\n"
        "12_1|PENDING|2026-01-01T10:00:09|00:00:00|0:0\n"
        "12_1|NODE_FAIL|2026-01-01T10:00:00|00:00:07|0:0\n"
        "12_[3-5,8%2]|PENDING|2026-01-01T10:00:00|00:00:00|0:0\n"
        "13|CANCELLED by 0|2026-01-01T10:00:01|1-00:00:02|0:15\n"
        "14|FAILED|2026-01-01T10:00:01|00:00:00|73:0\n"
    )
    states, suspended_s, exit_status = parse_sacct(text)
    assert exit_status["14"] == 73 and exit_status["13"] == 0  # (the status; a signal follows the ':')
    # (of the latest attempt: 12_1's first was suspended)
    assert {task: s for task, s in suspended_s.items() if s} == {"12_0": 65.0, "13": 86402.0}
    assert set(states) == {"12_0", "12_1", "12_3", "12_4", "12_5", "12_8", "13", "14"}
    assert states["12_1"] == ["NODE_FAIL", "PENDING"]
    assert attempt_state(states["12_1"], 0) == "NODE_FAIL"
    assert attempt_state(states["12_1"], 1) == "PENDING"
    assert attempt_state(["RUNNING", "PENDING"], 0) == STALE  # its end (REQUEUED? NODE_FAIL?) not written yet
    assert attempt_state(["REQUEUED", "PENDING"], 0) == "REQUEUED"  # (REQUEUED is also a queued job's state)
    assert outcome_for_state(STALE, 7) is None  # not over until then
    assert attempt_state(states["12_1"], 2) == ""
    assert outcome_for_state(states["13"][0], 7) == {
        "trial": 7,
        "status": "cancelled",
        "reason": "Slurm CANCELLED by 0",
    }
    assert outcome_for_state("NODE_FAIL", 7)["status"] == "lost"  # type: ignore[index]
    assert "taken_off" not in outcome_for_state("NODE_FAIL", 7)  # type: ignore[operator]  # (costs a retry)
    assert outcome_for_state("REQUEUED", 7)["taken_off"] == "requeued"  # type: ignore[index]  # (free)
    assert outcome_for_state("PENDING", 7) is None and outcome_for_state("", 7) is None


def test_squeue_lines_read_as_sacct_attempts_with_each_restart_a_requeued_one() -> None:
    states = parse_squeue("12_0|RUNNING|0\n12_1|PENDING|1\n13|CANCELLED|0\n\n14|COMPLETED|\n")
    assert states == {
        "12_0": ["RUNNING"],
        "12_1": ["RESTARTED", "PENDING"],
        "13": ["CANCELLED"],
        "14": ["COMPLETED"],
    }
    assert outcome_for_state(attempt_state(states["12_1"], 0), 7)["status"] == "lost"  # type: ignore[index]
    # a node failure as likely as a requeue: a retry, not free (an experiment killing its node)
    assert "taken_off" not in outcome_for_state(attempt_state(states["12_1"], 0), 7)  # type: ignore[operator]
    assert attempt_state(states["12_1"], 1) == "PENDING"
    assert outcome_for_state(attempt_state(states["13"], 0), 7)["status"] == "cancelled"  # type: ignore[index]


def test_a_task_gone_from_both_is_taken_for_cancelled_alone_only_where_its_array_is_listed() -> None:
    """Each of `unlisted` is in no squeue listing; sacct has no record of it, or still shows it
    pending (14_1, 15_1)."""
    queued = {"12_2": ["PENDING"]}
    recorded = {"13_0": ["COMPLETED"], "14_0": ["PENDING"], "14_1": ["PENDING"], "15_1": ["PENDING"]}
    unlisted = {"12_1", "13_1", "14_1", "15_1", "16_1", "17"}
    # 14_1 may be a job slurmctld lost, its pending record standing in sacct: lost, not cancelled
    assert slurm_states.dropped_tasks(unlisted, queued, recorded) == {"12_1", "13_1"}


def test_a_requeued_array_task_does_not_run_a_workspace_twice(tmp_path: Path) -> None:
    for marker in ("outcome.json", "abandoned.json"):
        exp = tmp_path / marker
        exp.mkdir()
        (exp / marker).write_text("{}")
        result = run_array_task(str(exp))  # no spec.json: the runner would fail if it started
        assert result["status"] == "skipped"
        assert not (exp / "started.json").exists()


# -- on the local cluster --------------------------------------------------------------------------
UNFIT = {
    "status": "lost",
    "node_unfit": True,
    "reason": "the node cannot run it: FAIL: this job needs a CUDA GPU",
}


def test_a_node_is_excluded_only_once_another_node_of_its_partition_has_run_an_experiment() -> None:
    health = NodeHealth()
    assert health.note("h100", {"node": "a", **UNFIT}) == set()  # perhaps every node: the setup's fault
    assert health.note("h100", {"node": "b", "status": "crash"}) == set()  # a crash proves nothing of b
    assert health.note("h200", {"node": "c", "status": "ok"}) == set()  # another partition's node
    assert health.note("h100", {"node": "b", "status": "ok"}) == {"a"}
    assert health.note("h100", {"node": "d", "status": "ok"}) == set()  # once
    assert health.excluded["h100"] == {"a"} and not health.excluded["h200"]
    assert exclude_list("x1,", {"a"}) == "a,x1"  # the partition's own list kept


def test_an_interrupted_run_whose_end_slurmdbd_has_not_written_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `scontrol requeue` ends the runner by SIGTERM, which it writes down as interrupted; sacct
    shows the attempt running while the rerun waits until slurmdbd writes its end. That record is
    waited for (REQUEUED is free, NODE_FAIL a retry), but the runner's word stood after
    3 * SETTLE_SECONDS: a lost run, at the cost of a retry, for a requeue that is free. It waits
    for the written end now, as a record without the runner's word does."""
    for knob in ("STATE_POLL_SECONDS", "SETTLE_SECONDS"):  # every poll asks and judges
        monkeypatch.setattr(slurm_fleet, knob, 0.0)
    shown = tmp_path / "first-attempt"  # how sacct shows the first attempt
    shown.write_text("RUNNING")
    sacct = f'printf "77_0|%s|2026-01-01T10:00:00|00:00:00\\n77_0|PENDING|2026-01-01T10:05:00|00:00:00\\n" "$(cat {shown})"'
    bin_dir = fake_commands(tmp_path / "bin", sacct=sacct, squeue="")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, deadline_s=600, campaign_dir=str(tmp_path))
    exp = make_experiment(tmp_path, "", name="e1", trial=1)
    (exp / "started.json").write_text(json.dumps({"slurm_job_id": "77_0", "started_at": time.time()}))
    interrupted = {"trial": 1, "status": "interrupted", "reason": "runner received SIGTERM"}
    (exp / "outcome.json").write_text(json.dumps(interrupted))
    assert fleet.reattach(JobSpec(1, exp, "h100"), "slurm:h100:77_0")
    for _ in range(3):
        assert fleet.poll() == []  # how the attempt ended is not written yet: not over
    shown.write_text("REQUEUED")
    (requeued,) = fleet.poll()
    assert requeued.outcome["status"] == "lost" and requeued.outcome.get("taken_off"), requeued.outcome
    # An end slurmdbd never writes is waited for UNKNOWN_SECONDS: a restart of no known cause.
    shown.write_text("RUNNING")
    monkeypatch.setattr(slurm_fleet, "UNKNOWN_SECONDS", 0.0)
    assert fleet.reattach(JobSpec(1, exp, "h100"), "slurm:h100:77_0")
    (restarted,) = fleet.poll()
    assert restarted.outcome["status"] == "lost" and "taken_off" not in restarted.outcome, restarted.outcome


def test_an_experiment_held_for_slurms_controller_is_found_again_or_never_run(tmp_path: Path) -> None:
    """Held while sbatch could not reach Slurm, an experiment's handle has no job id: a resumed
    controller adopts the job the runner says it ran in, or makes sure a late copy never runs."""
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, deadline_s=60, campaign_dir=str(tmp_path))
    started = make_experiment(tmp_path, "", name="started", trial=1)
    (started / "started.json").write_text(json.dumps({"slurm_job_id": "77_0", "started_at": 1.0}))
    assert fleet.reattach(JobSpec(1, started, "h100"), "slurm:h100:")
    assert fleet._tracked[1].slurm_id == "77_0" and fleet.running() == 1
    never = make_experiment(tmp_path, "", name="never", trial=2)
    assert not fleet.reattach(JobSpec(2, never, "h100"), "slurm:h100:")
    assert run_array_task(str(never))["status"] == "skipped"  # the copy Slurm may still start
    assert fleet.running() == 1


def test_an_experiment_whose_handle_was_never_recorded_is_adopted_or_never_run(tmp_path: Path) -> None:
    """A controller killed between sbatch and recording the job's handle: the next one adopts the
    experiment where it can find its job, else makes sure neither an array task nor a worker runs
    it, as the campaign queues it again."""
    arrays = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, deadline_s=60, campaign_dir=str(tmp_path / "a"))
    started = make_experiment(tmp_path, "", name="started", trial=1)
    (started / "started.json").write_text(json.dumps({"slurm_job_id": "77_0", "started_at": 1.0}))
    assert arrays.reattach(JobSpec(1, started, "h100"), "")
    assert arrays._tracked[1].slurm_id == "77_0"
    never = make_experiment(tmp_path, "", name="never", trial=2)
    assert not arrays.reattach(JobSpec(2, never, "h100"), "")
    assert run_array_task(str(never))["status"] == "skipped"  # the array task, should it start
    workers = compose_toy(tmp_path, SLURM, "cluster.partitions.h100.mode=workers").cluster
    pool = SlurmFleet(workers, deadline_s=60, campaign_dir=str(tmp_path / "w"))
    queue = pool.queues["h100"]
    for trial in (3, 4):
        queue.put(trial, make_experiment(tmp_path, "", name=f"q{trial}", trial=trial))
    assert pool.reattach(JobSpec(3, tmp_path / "q3", "h100"), "")  # a worker will run it
    assert not pool.reattach(JobSpec(4, tmp_path / "q4", "h100"), "slurm:a100:12")  # a pool now gone
    assert queue.is_queued(3) and not queue.is_queued(4)  # no worker takes it
    assert (tmp_path / "q4" / "abandoned.json").exists()


def test_a_stray_file_among_the_claims_is_not_taken_for_one(tmp_path: Path) -> None:
    """An NFS client leaves `.nfsXXXX` files where a file open elsewhere was deleted."""
    queue = WorkerQueue(tmp_path / "queue")
    (queue.path / "ready" / ".nfs000000000123abcd00000000").write_text("")
    queue.put(5, tmp_path)
    assert queue.claim("77_1", 0) == (5, tmp_path)
    assert queue.claim("77_1", 0) is None
    (queue.path / "claimed" / ".nfs000000000123abcd00000001").write_text("")
    (queue.path / "claimed" / "00005.77_1").write_text("")
    assert queue.claims() == {5: ("77_1", 0)}
    assert queue.claimed_by(5) == ("77_1", 0)


KILLED_PUT = """
import os, signal, sys
from pathlib import Path
from typing import Any
from autoresearch.fleet.workers import WorkerQueue
os.replace = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
WorkerQueue(Path(sys.argv[1])).put(6, Path(sys.argv[2]))
"""


def test_a_queue_entry_a_killed_controller_left_unrenamed_is_removed_when_workers_are_next_sent(
    tmp_path: Path,
) -> None:
    """A controller killed (kill -9) inside `put`, between writing a queue entry and renaming it
    into ready/, left `.NNNNN.tmp` in the queue folder for good. The next controller removes it as
    it opens the queue, before it sends workers; what it queued itself stays."""
    queue = WorkerQueue(tmp_path / "queue")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_PUT, str(queue.path), str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [p.name for p in queue.path.glob(".*")] == [".00006.tmp"]
    queue.put(7, tmp_path)
    queue.open()
    assert not list(queue.path.glob(".*")) and queue.is_queued(7) and not queue.is_queued(6)


# Workers starting (`register`) in a process whose every write the kernel refuses (a file size
# limit of 0: the same open, truncate and refused write as a full disk's, made certain).
REFUSED_REGISTER = """
import resource, signal, sys
from pathlib import Path
from autoresearch.fleet.workers import WorkerQueue
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
for worker in sys.argv[2:]:
    try:
        WorkerQueue(Path(sys.argv[1])).register(worker)
        print(worker, "started")
    except OSError as err:
        print(worker, "refused", err.errno)
"""


def test_a_requeued_worker_refused_its_start_again_keeps_the_mark_of_its_first(tmp_path: Path) -> None:
    """A worker Slurm requeued starts again under its job's id, and `register` rewrote the mark its
    first start made: a write then refused (a disk full by then, a quota) left it truncated, and
    the clean-up meant for a file the refused write made removed it, that start unsaid, so a
    resumed controller could count the worker as one that never started. An earlier start's mark
    is now kept as it is; a worker's first start refused still leaves no file."""
    queue = WorkerQueue(tmp_path / "queue")
    queue.register("7")  # (its first start)
    first = (queue.path / "workers" / "7").read_text()
    refused = subprocess.run(
        [sys.executable, "-c", REFUSED_REGISTER, str(queue.path), "7", "8"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert refused.stdout.splitlines() == ["7 started", f"8 refused {errno.EFBIG}"], refused.stderr
    assert (queue.path / "workers" / "7").read_text() == first
    assert not queue.registered("8")


def test_a_worker_whose_time_limit_cannot_hold_an_experiment_fails_instead_of_requeueing(
    tmp_path: Path,
) -> None:
    """Else it would requeue itself at once, forever, and the campaign wait on it."""
    queue = WorkerQueue(tmp_path / "queue")
    queue.put(5, tmp_path)
    with pytest.raises(WorkerCannotFit, match="raise time_limit_min"):
        run_worker(str(queue.path), deadline_s=3600.0, time_limit_s=3480.0)
    assert queue.is_queued(5) and not queue.submitted_workers()  # nothing claimed, never registered


def test_sbatch_answering_nonsense_or_missing_is_a_refusal_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The experiment is lost (re-queued) and, in case a job was made after all, given up."""
    fakes = fake_commands(
        tmp_path / "bin",
        sbatch="echo 'Submitted batch jobb'",
        srun="exit 1",
        sacct="exit 1",
        scancel="exit 0",
    )
    monkeypatch.setenv("PATH", str(fakes))
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, deadline_s=60, campaign_dir=str(tmp_path))
    odd = JobSpec(1, make_experiment(tmp_path, "", name="odd", trial=1), "h100")
    assert fleet.submit([odd]) == {}
    (fakes / "sbatch").unlink()
    missing = JobSpec(2, make_experiment(tmp_path, "", name="missing", trial=2), "h100")
    assert fleet.submit([missing]) == {}
    lost = {f.trial: f.outcome for f in fleet.poll()}
    assert {t: o["status"] for t, o in lost.items()} == {1: "lost", 2: "lost"}
    assert "Could not make sense of sbatch output" in lost[1]["reason"]
    assert "sbatch" in lost[2]["reason"] and "No such file" in lost[2]["reason"]
    assert run_array_task(str(odd.exp_dir))["status"] == "skipped"
    assert fleet.running() == 0


@pytest.mark.slurm
def test_a_partition_slurm_lacks_is_refused_before_anything_runs(tmp_path: Path, slurm_cluster: None) -> None:
    """Else sbatch refuses every job, each refusal is re-queued as a lost run, and the campaign
    ends on baselines that never ran."""
    proc = run_campaign(tmp_path, SLURM, "cluster.partitions.h200.partition=a100")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        "error: cluster.partitions.h200.partition=a100: Slurm has no such partition (sinfo lists h100, h200)"
    ]
    assert not (tmp_path / "toy").exists()


@pytest.mark.slurm
def test_a_gres_no_node_of_the_partition_has_is_refused_before_anything_runs(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """Else sbatch refuses every job of that partition (or Slurm holds them pending for ever): a
    validate tier so configured would lose every re-run of the screening's winners."""
    proc = run_campaign(tmp_path, SLURM, "cluster.partitions.h200.gres=gpu:a100:1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        "error: cluster.partitions.h200.gres=gpu:a100:1: no node of partition h200 has gpu:a100:1 "
        "(sinfo lists gpu:h100:8, gpu:h200:8)"
    ]
    assert not (tmp_path / "toy").exists()


@pytest.mark.slurm
def test_the_start_asks_sinfo_once_for_all_its_checks(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The partition, gres and time-limit checks each asked sinfo, each call with a 60 s timeout:
    with slurmctld down, a start waited up to 3 minutes before it refused. One answer now serves
    the three (the real sinfo, each call counted)."""
    calls = tmp_path / "sinfo.calls"
    sinfo = f'echo "$*" >> "{calls}"; exec "{shutil.which("sinfo")}" "$@"'
    monkeypatch.setenv("PATH", f"{fake_commands(tmp_path / 'bin', sinfo=sinfo)}:{os.environ['PATH']}")
    cluster = compose_toy(tmp_path, SLURM, "cluster.partitions.h200.gres=gpu:h200:1").cluster
    assert isinstance(make_fleet(cluster, 60, str(tmp_path / "toy")), SlurmFleet)  # (every check passed)
    assert calls.read_text().splitlines() == ["-h -a -o %R|%G|%l|%c|%m|%f"]


@pytest.mark.slurm
def test_the_start_reads_slurms_config_once(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MaxWall check (is AccountingStorageEnforce on?) and the fleet (MaxArraySize) each ran
    `scontrol show config`, the whole config for one line each. One reading now serves both (the
    real scontrol, each call counted)."""
    calls = tmp_path / "scontrol.calls"
    scontrol = f'echo "$*" >> "{calls}"; exec "{shutil.which("scontrol")}" "$@"'
    monkeypatch.setenv("PATH", f"{fake_commands(tmp_path / 'bin', scontrol=scontrol)}:{os.environ['PATH']}")
    fleet = make_fleet(compose_toy(tmp_path, SLURM).cluster, 60, str(tmp_path / "toy"))
    assert isinstance(fleet, SlurmFleet) and fleet._max_array == 100001  # (up.sh's MaxArraySize)
    assert calls.read_text().splitlines() == ["show config", "-o show partition"]  # (2 readings before)


@pytest.mark.slurm
def test_a_time_limit_above_the_partitions_is_refused_before_anything_runs(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """Else Slurm holds every job of the partition pending for ever (PartitionTimeLimit) or, where
    the site enforces partition limits at submission, sbatch refuses each (a lost run, re-queued).
    Here h200 allows 20 minutes and the campaign asks for 30."""
    subprocess.run(["scontrol", "update", "partitionname=h200", "maxtime=20"], check=True)
    try:
        with pytest.raises(ValueError) as refused:  # (the fleet the command builds, first)
            make_fleet(compose_toy(tmp_path, SLURM).cluster, 60, str(tmp_path / "unused"))
        proc = run_campaign(tmp_path, SLURM)
    finally:
        subprocess.run(["scontrol", "update", "partitionname=h200", "maxtime=UNLIMITED"], check=True)
    said = "cluster.partitions.h200.time_limit_min=30: above the time limit of partition h200 20:00 (sinfo): "
    assert str(refused.value) == said + "set it to 20 at most"
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [f"error: {said}set it to 20 at most"]
    assert not (tmp_path / "toy").exists()
    # sinfo's ways of writing a limit: days, hours, minutes:seconds, none
    assert [slurm_states.slurm_minutes(t) for t in ("2-01:00:00", "1:30:00", "10:00", "45", "infinite")] == [
        2940,
        90,
        10,
        45,
        None,
    ]


def _qos_max_wall(qos: str, limit: str) -> None:
    """A site's QOS limit on a job's time (-1: none)."""
    subprocess.run(
        ["sacctmgr", "-i", "modify", "qos", qos, "set", f"MaxWall={limit}"], check=True, capture_output=True
    )


@pytest.mark.slurm
def test_a_time_limit_above_the_qos_max_wall_is_refused_before_anything_runs(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else Slurm holds every job pending for ever (QOSMaxWallDurationPerJobLimit), said only once
    jobs pend. Here the QOS the jobs run under by default (normal, the association's only one)
    allows 20 minutes and the campaign asks for 30; a partition asking for another QOS is judged
    by that one's; where sacctmgr does not answer, nothing is refused."""
    _qos_max_wall("normal", "20")
    try:
        proc = run_campaign(tmp_path, SLURM)
        with pytest.raises(ValueError) as refused:
            make_fleet(compose_toy(tmp_path, SLURM, "cluster.partitions.h200.qos=high").cluster, 60, "unused")
        failing = 'echo "sacctmgr: error: Problem talking to the database"; exit 1'
        with monkeypatch.context() as patch:  # (accounting not answering)
            patch.setenv("PATH", f"{fake_commands(tmp_path / 'bin', sacctmgr=failing)}:{os.environ['PATH']}")
            fleet = make_fleet(compose_toy(tmp_path, SLURM).cluster, 60, str(tmp_path / "toy"))
    finally:
        _qos_max_wall("normal", "-1")
    said = "cluster.partitions.{}.time_limit_min=30: above the MaxWall of QOS normal 00:20:00 (sacctmgr): "
    said += "set it to 20 at most"
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [f"error: {said.format('h100')}; {said.format('h200')}"]
    assert str(refused.value) == said.format("h100")
    assert isinstance(fleet, SlurmFleet)
    # the default QOS of the account's association for the partition, else its account-wide one
    rows = [
        ["acct", "acct", "", "", "normal", ""],
        ["acct", "acct", "h200", "long", "long,normal", ""],
        ["acct", "other", "", "", "a,b", ""],
    ]
    assert [slurm_qos.default_qos(slurm_qos.association(rows, "", p)) for p in ("h100", "h200")] == [
        "normal",
        "long",
    ]
    assert slurm_qos.default_qos(slurm_qos.association(rows, "other", "h100")) == "normal"  # (fallback)
    assert slurm_qos.association(rows, "none", "h100") is None


def _accounting(tmp_path: Path, enforce: str, sinfo: str = "") -> str:
    """A PATH whose Slurm is a stand-in: sinfo runs `sinfo` (by default lists nothing: no
    partition checked), scontrol says
    `enforce`, and sacctmgr lists the user's associations, account acct (QOS normal, long) on
    every partition and account gpu on h200 only (QOS normal), and the QOS normal, long, high."""
    user = getpass.getuser()
    sacctmgr = (
        'case "$*" in\n'
        '  *withassoc*) printf "acct|acct||normal|normal,long|\\nacct|gpu|h200||normal|\\n" ;;\n'
        '  *qos*) printf "normal||\\nlong||\\nhigh||\\n" ;;\n'
        "esac"
    )
    bin_dir = fake_commands(
        tmp_path / "bin",
        sbatch="",
        srun="",
        sacct="",
        scancel="",
        squeue="",
        sinfo=sinfo,
        scontrol=f'[ "$1 $2" = "show config" ] && echo "AccountingStorageEnforce = {enforce}"; exit 0',
        sacctmgr=f'[ "$5" = "{user}" ] || [ "$4" = "qos" ] || exit 1\n{sacctmgr}',
    )
    return f"{bin_dir}:{os.environ['PATH']}"


@pytest.mark.parametrize(
    ("enforce", "overrides", "said"),
    [
        (
            "associations",
            ["cluster.partitions.h100.account=proj123"],
            "cluster.partitions.h100.account=proj123: you have no association with account proj123 in "
            "partition h100 (sacctmgr lists your accounts: acct, gpu); sbatch would refuse every job",
        ),
        (  # an association on another partition only
            "associations,limits",
            ["cluster.partitions.h100.account=gpu"],
            "cluster.partitions.h100.account=gpu: you have no association with account gpu in partition h100",
        ),
        ("associations", ["cluster.partitions.h200.account=gpu"], ""),
        (
            "associations",
            ["cluster.partitions.h100.partition='h100,h200'", "cluster.partitions.h100.account=gpu"],
            "",
        ),
        ("", ["cluster.partitions.h100.account=proj123"], ""),  # accounting enforces nothing: sbatch takes it
        (
            "associations,limits,qos",
            ["cluster.partitions.h200.qos=hihg"],
            "cluster.partitions.h200.qos=hihg: Slurm has no such QOS (sacctmgr lists high, long, normal); "
            "sbatch would refuse every job",
        ),
        (
            "associations,limits,qos",
            ["cluster.partitions.h200.qos=high"],
            "cluster.partitions.h200.qos=high: the association of account acct may not use it (it may use "
            "normal,long); sbatch would refuse every job",
        ),
        ("associations,limits,qos", ["cluster.partitions.h200.qos=long"], ""),
        ("associations,limits", ["cluster.partitions.h200.qos=hihg"], ""),  # QOS access not enforced
    ],
)
def test_an_account_or_qos_sbatch_would_refuse_is_refused_at_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enforce: str, overrides: list[str], said: str
) -> None:
    """docs/SLURM.md, "What the start checks with Slurm": an account the user has no association
    with (a typo, another site's) is refused by sbatch for every job, each then lost and re-run
    until the campaign stops; the start says so first, in one line. (No Slurm here: stand-ins.)"""
    monkeypatch.setenv("PATH", _accounting(tmp_path, enforce))
    cluster = compose_toy(tmp_path, SLURM, *overrides).cluster
    try:
        plan_fleet(cluster)
        refused = ""
    except ValueError as err:
        refused = str(err)
    assert refused.startswith(said) and bool(refused) == bool(said), refused


def test_a_partition_slurm_lacks_is_said_once_not_again_as_an_account_without_association_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition's name mistyped, with an account set, was refused twice: as a partition Slurm
    lacks, and as an account the user has no association with in that partition, which follows
    from it. A partition Slurm lacks is said once; its account is not looked up there."""
    sinfo = (
        'printf "h100|gpu:h100:8|infinite|32|515000|(null)\\nh200|gpu:h200:8|infinite|32|515000|(null)\\n"'
    )
    monkeypatch.setenv("PATH", _accounting(tmp_path, "associations", sinfo))
    overrides = ["cluster.partitions.h200.partition=h20", "cluster.partitions.h200.account=gpu"]
    with pytest.raises(ValueError) as refused:
        plan_fleet(compose_toy(tmp_path, SLURM, *overrides).cluster)
    assert (
        str(refused.value)
        == "cluster.partitions.h200.partition=h20: Slurm has no such partition (sinfo lists h100, h200)"
    )


def _refused(tmp_path: Path, *overrides: str) -> str:
    """What make_fleet says of the toy campaign's 30-minute jobs on h100 and h200; '' when accepted."""
    try:
        make_fleet(compose_toy(tmp_path, SLURM, *overrides).cluster, 60, "unused")
    except ValueError as err:
        return str(err)
    return ""


def _sacctmgr(*words: str) -> None:
    subprocess.run(["sacctmgr", "-i", "modify", *words], check=True, capture_output=True)


@pytest.mark.slurm
def test_a_time_limit_above_the_max_wall_of_a_partitions_own_qos_is_refused(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """A partition's own QOS (slurm.conf's `QOS=`) limits every job of the partition before the
    job's QOS does: only the job's QOS was checked, and every job pended for ever. A job QOS with
    the OverPartQOS flag comes first instead."""
    subprocess.run(["scontrol", "update", "PartitionName=h200", "QOS=low"], check=True)
    try:
        _sacctmgr("qos", "low", "set", "MaxWall=20")
        refused = _refused(tmp_path)
        _sacctmgr("qos", "normal", "set", "MaxWall=40", "Flags+=OverPartQOS")
        over_part = _refused(tmp_path)
    finally:
        subprocess.run(["scontrol", "update", "PartitionName=h200", "QOS="], check=True)
        _sacctmgr("qos", "low", "set", "MaxWall=-1")
        _sacctmgr("qos", "normal", "set", "MaxWall=-1", "Flags-=OverPartQOS")
    assert refused == (
        "cluster.partitions.h200.time_limit_min=30: above the MaxWall of the partition's own QOS low 00:20:00 "
        "(sacctmgr): set it to 20 at most"
    )
    assert over_part == ""


@pytest.mark.slurm
def test_a_partition_list_is_checked_against_the_max_wall_of_each_partition(
    tmp_path: Path, slurm_cluster: None, caplog: pytest.LogCaptureFixture
) -> None:
    """`partition: h100,h200` (sbatch -p takes a list) had no partition's own QOS checked: the
    list was looked up as one partition's name. Slurm starts such a job in a partition whose
    limits admit it (here a 30-minute `sbatch -p h100,h200` ran in h100 while h200's QOS allowed
    20), so a time limit above the MaxWall of every listed partition is refused, naming each, and
    one above some of them is said in a warning."""
    listed = "cluster.partitions.h200.partition='h100,h200'"
    caplog.set_level(logging.WARNING, logger="autoresearch")
    subprocess.run(["scontrol", "update", "PartitionName=h200", "QOS=low"], check=True)
    try:
        _sacctmgr("qos", "low", "set", "MaxWall=20")
        in_one = _refused(tmp_path, listed)
        subprocess.run(["scontrol", "update", "PartitionName=h100", "QOS=high"], check=True)
        _sacctmgr("qos", "high", "set", "MaxWall=25")
        in_both = _refused(tmp_path, listed)
    finally:
        for partition in ("h100", "h200"):
            subprocess.run(["scontrol", "update", f"PartitionName={partition}", "QOS="], check=True)
        _sacctmgr("qos", "low", "set", "MaxWall=-1")
        _sacctmgr("qos", "high", "set", "MaxWall=-1")
    h200 = "cluster.partitions.h200.time_limit_min=30: above the MaxWall of the partition's own QOS "
    assert in_one == ""  # h100 takes its jobs
    assert [r.getMessage() for r in caplog.records] == [
        h200 + "low 00:20:00 in partition h200 (sacctmgr): its jobs run only in partition h100"
    ]
    assert in_both == (
        "cluster.partitions.h100.time_limit_min=30: above the MaxWall of the partition's own QOS high "
        "00:25:00 (sacctmgr): set it to 25 at most; "
        + h200
        + "high 00:25:00 in partition h100 and of the partition's own QOS low 00:20:00 in partition h200 "
        "(sacctmgr): set it to 25 at most"
    )


@pytest.mark.slurm
def test_an_association_with_several_qos_and_no_default_is_judged_by_the_qos_slurm_gives(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """An association allowed QOS low and normal with no DefaultQOS had no QOS checked (which one
    a job gets was taken for unknowable), and every job pended for ever under normal's MaxWall.
    Slurm gives such a job `normal` (its fallback: a real job asking for none shows it in squeue),
    so normal's MaxWall is the one checked."""
    user = getpass.getuser()
    try:
        _sacctmgr("user", user, "set", "qos=low,normal", "defaultqos=-1")
        _qos_max_wall("normal", "20")
        sbatch = ["sbatch", "--parsable", "--hold", "-p", "h100", "-o", "/dev/null", "--wrap", "true"]
        held = subprocess.run(sbatch, capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
        given = subprocess.run(["squeue", "-h", "-o", "%q", "-j", held], capture_output=True, text=True)
        subprocess.run(["scancel", held], check=True)
        refused = _refused(tmp_path)
    finally:
        _sacctmgr("user", user, "set", "qos=normal", "defaultqos=-1")
        _qos_max_wall("normal", "-1")
    assert given.stdout.strip() == "normal"
    said = "cluster.partitions.{}.time_limit_min=30: above the MaxWall of QOS normal 00:20:00 (sacctmgr): "
    said += "set it to 20 at most"
    assert refused == f"{said.format('h100')}; {said.format('h200')}"


@pytest.mark.slurm
def test_a_time_limit_above_the_max_wall_of_the_users_association_is_refused(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """An association's MaxWall (the user's own, or its account's, which the user's row shows):
    unchecked, every job pended for ever (AssocMaxWallDurationPerJobLimit). A QOS's MaxWall,
    where set, comes first."""
    user = getpass.getuser()
    shown = subprocess.run(
        ["sacctmgr", "-n", "-P", "show", "user", user, "format=DefaultAccount"], capture_output=True
    )
    account = shown.stdout.decode().strip()
    try:
        _sacctmgr("user", user, "set", "MaxWall=20")
        refused = _refused(tmp_path)
        _qos_max_wall("normal", "60")
        qos_first = _refused(tmp_path)
    finally:
        _sacctmgr("user", user, "set", "MaxWall=-1")
        _qos_max_wall("normal", "-1")
    said = "cluster.partitions.{}.time_limit_min=30: above the MaxWall of the association of account "
    said += account + " 00:20:00 (sacctmgr): set it to 20 at most"
    assert refused == f"{said.format('h100')}; {said.format('h200')}"
    assert qos_first == ""


def _after_setup(lines: list[str], cwd: Path | None = None) -> tuple[str, str]:
    """What the job script's setup part (`checked_setup`) leaves for the runner, run by bash as
    sbatch runs it (with a failure inherited from the submitting shell): the variable naming the
    first failed line, and what the lines printed."""
    script = "\n".join(
        [*slurm_fleet.checked_setup(lines), f'printf "%s" "${{{SETUP_FAILED_VARIABLE}:-}}" >&2']
    )
    env = {**os.environ, SETUP_FAILED_VARIABLE: "inherited"}
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, cwd=cwd, timeout=30
    )
    return done.stderr, done.stdout


def test_setup_lines_are_checked_as_written_quotes_comments_and_continuations_included() -> None:
    """Each setup line is followed by a check of its status, and the first that failed is named as
    written, whatever quotes, `$` or backslashes it holds; a comment cannot swallow the check, and a
    command continued over two lines (a trailing backslash) is checked once, after its end: a check
    between its lines was read as arguments of the first, and its second line failed on its own."""
    odd = """X='$HOME \\ "q"'; (exit 3)  # it's the site's"""
    assert _after_setup(["export A=1", odd, "false"]) == (f"setup line `{odd}` exited 3", "")
    assert _after_setup(["printf '%s ' one \\", "  two", 'test -n "$A" || true']) == ("", "one two ")
    assert _after_setup([]) == ("", "")  # (nor is a failure inherited)


def test_setup_lines_a_heredoc_or_an_if_block_spans_are_checked_once_after_their_end(tmp_path: Path) -> None:
    """A heredoc (a site's config file written in the job) is one command with its body: the check
    after each line went into the file it writes. So are lines joined by a trailing `||` (a check
    after the first took its fallback for a failure) and an `if` block; a failure after them is
    still named."""
    heredoc = ["cat > site.env <<'EOF'", "export A=1", "  B=$HOME", "EOF"]
    block = ["if [ -s site.env ]; then", "  printf ok", "fi", "[ -e missing ] ||", "  printf ' and'"]
    assert _after_setup([*heredoc, *block, "false"], cwd=tmp_path) == (
        "setup line `false` exited 1",
        "ok and",
    )
    assert (tmp_path / "site.env").read_text() == "export A=1\n  B=$HOME\n"
    tabbed = ["cat > t <<-EOF", "\tone", "\tEOF", "(exit 4)"]  # (<<-: a terminator indented by tabs)
    assert _after_setup(tabbed, cwd=tmp_path) == ("setup line `(exit 4)` exited 4", "")
    assert (tmp_path / "t").read_text() == "one\n"


def sinfo_printing(lines: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in sinfo on the PATH that prints `lines`, whatever it is asked."""
    bin_dir = fake_commands(tmp_path / "bin", sinfo="\n".join(f"echo '{line}'" for line in lines))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_cpus_or_memory_no_node_of_the_partition_has_are_refused_at_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gpt2's slurm.yaml asks for 16 CPUs and 120 GB per experiment: on a site whose GPU nodes are
    smaller, Slurm held every job pending for ever (PartitionConfig), said only once jobs pended.
    The start says it from the same sinfo call, for the largest node of the partition(s); nothing
    where sinfo does not give a figure exactly (a stand-in sinfo here)."""
    lines = [
        "h100|gpu:h100:8|infinite|32|515000",
        "h100|gpu:h100:4|infinite|8|64000",
        "h200|gpu:h200:8|infinite|8+|64000",
    ]
    sinfo_printing(lines, tmp_path, monkeypatch)

    def refused(**sizes: tuple[int, float]) -> list[str]:
        parts = {
            name: PartitionConfig(partition=name.replace("_", ","), cpus_per_task=c, mem_gb=m)
            for name, (c, m) in sizes.items()
        }
        return slurm_states.config_problems(parts)

    assert refused(h100=(32, 500), h200=(64, 900)) == []  # (h200's CPUs not exact: not judged)
    assert refused(h100=(48, 120)) == [
        "cluster.partitions.h100.cpus_per_task=48: no node of partition h100 has that many CPUs "
        "(sinfo: 32 at most): set it to 32 at most"
    ]
    assert refused(h100=(16, 600)) == [
        "cluster.partitions.h100.mem_gb=600: no node of partition h100 has that much memory "
        "(sinfo: 515000 MB at most): set it to 502 at most"
    ]
    assert refused(h100_h200=(32, 500)) == []  # (a list: h200 not judged, so neither is the list)


def test_a_gres_is_checked_against_what_sinfo_lists_for_its_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`unknown_gres` on sinfo's lines (no cluster needed): a typed request needs that type on
    a node of one of its partitions, an untyped one any GPU; nothing is refused where sinfo cannot
    tell, nor for a partition sinfo lacks (unknown_partitions names it)."""
    sinfo = (
        "h100|gpu:h100:8(S:0-1)|infinite\nh100|gpu:h100:4|infinite\nh200|gpu:h200:8|1:00:00\ncpu|(null)|10\n"
    )

    def refused(**gres: str) -> list[str]:
        parts = {name: PartitionConfig(gres=g, partition=name.replace("_", ",")) for name, g in gres.items()}
        return slurm_states.unknown_gres(parts, slurm_states.parse_sinfo(sinfo))

    assert refused(h100="gpu:h100:1", h200="gpu:2", h100_h200="gpu:h200:1", gone="gpu:1") == []
    assert refused(h200="gpu:a100:1") == [
        "cluster.partitions.h200.gres=gpu:a100:1: no node of partition h200 has gpu:a100:1 (sinfo lists gpu:h200:8)"
    ]
    assert refused(cpu="gpu:1") == [
        "cluster.partitions.cpu.gres=gpu:1: no node of partition cpu has gpu:1 (sinfo lists no gres)"
    ]
    monkeypatch.setattr(slurm_states, "query", lambda cmd, timeout=30: None)  # (sinfo cannot tell)
    assert slurm_states.config_problems({"h200": PartitionConfig(gres="gpu:a100:1")}) == []


def test_a_constraint_no_node_of_the_partition_meets_is_refused_at_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node feature misspelt in `constraint` (docs/SLURM.md: `h100&ib`) passed the start, and
    sbatch refused every job, 'Invalid feature specification', each a lost run. The start says it
    from the same sinfo call; an expression with an OR is refused only where none of its names is
    there, and one it does not read (a `!`) not at all."""
    lines = [
        "h100|gpu:h100:8|infinite|32|515000|h100,ib",
        "h100|gpu:h100:4|infinite|32|515000|h100,nvme",
        "h200|gpu:h200:8|infinite|32|515000|(null)",
    ]
    sinfo_printing(lines, tmp_path, monkeypatch)

    def refused(**constraints: str) -> list[str]:
        parts = {name: PartitionConfig(partition=name, constraint=c) for name, c in constraints.items()}
        return slurm_states.config_problems(parts)

    assert refused(h100="h100&ib") == refused(h100="[ib|nvme]") == refused(h100="ib|infiniband") == []
    assert refused(h100="(h100&nvme)*2", h200="!ib") == []
    assert refused(h100="h100&infiniband") == [
        "cluster.partitions.h100.constraint=h100&infiniband: in partition h100, no node has infiniband "
        "(sinfo lists the features h100, ib, nvme); sbatch would refuse every job"
    ]
    assert refused(h100="ib&nvme") == [
        "cluster.partitions.h100.constraint=ib&nvme: in partition h100, no node has them all "
        "(sinfo lists the features h100, ib, nvme); sbatch would refuse every job"
    ]
    assert refused(h200="ib|nvme") == [
        "cluster.partitions.h200.constraint=ib|nvme: in partition h200, no node has ib, nvme "
        "(sinfo lists no features); sbatch would refuse every job"
    ]


def test_an_exclude_or_reservation_slurm_lacks_is_refused_at_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A node misspelt in `exclude`, or a reservation that does not exist (either as the
    partition's field or in extra_sbatch), passed the start, and sbatch refused every job (Invalid
    node name specified; Requested reservation is invalid), each a lost run. The start names what
    Slurm has (stand-ins for sinfo and scontrol here); where scontrol fails it says the reservation
    could not be checked, and goes on."""
    sinfo = 'case "$*" in *%N*) printf "gpu01\\ngpu02\\ngpu02\\n" ;; *) echo "h100|gpu:h100:8|infinite|32|515000|(null)" ;; esac'
    scontrol = 'echo "ReservationName=maint StartTime=now"; echo "ReservationName=train StartTime=now"'
    bin_dir = fake_commands(tmp_path / "bin", sinfo=sinfo, scontrol=scontrol)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def refused(**settings: Any) -> list[str]:
        return slurm_states.config_problems({"h100": PartitionConfig(partition="h100", **settings)})

    assert refused(exclude="gpu[01-02]", extra_sbatch={"reservation": "maint"}) == []
    assert refused(exclude="gpu01,gpu3", extra_sbatch={"exclude": "gpu[02-04]", "reservation": "mant"}) == [
        "cluster.partitions.h100.exclude=gpu01,gpu3: Slurm has no node gpu3 (sinfo lists gpu01, gpu02); "
        "sbatch would refuse every job",
        "cluster.partitions.h100.extra_sbatch.exclude=gpu[02-04]: Slurm has no node gpu03, gpu04 "
        "(sinfo lists gpu01, gpu02); sbatch would refuse every job",
        "cluster.partitions.h100.extra_sbatch.reservation=mant: Slurm has no such reservation "
        "(scontrol lists maint, train); sbatch would refuse every job",
    ]
    fake_commands(
        bin_dir,
        scontrol="echo 'slurm_load_reservations error: Unable to contact slurm controller' >&2; exit 1",
    )
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        assert refused(extra_sbatch={"reservation": "mant"}) == []
    assert caplog.messages == [
        "cluster.partitions.h100.extra_sbatch.reservation: the reservation could not be checked (scontrol failed)"
    ]


def test_an_exclude_whose_range_is_malformed_is_refused_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exclude with a range no host list has (`gpu[-5]`, a typo) refused the start with Python's
    own "invalid literal for int() with base 10: ''", naming no setting, and hid every other
    problem of the fleet; it is named as written, a node Slurm does not have."""
    sinfo = 'case "$*" in *%N*) printf "gpu01\\ngpu02\\n" ;; *) echo "h100|gpu:h100:8|infinite|32|515000|(null)" ;; esac'
    monkeypatch.setenv("PATH", f"{fake_commands(tmp_path / 'bin', sinfo=sinfo)}:{os.environ['PATH']}")

    assert slurm_states.config_problems({"h100": PartitionConfig(partition="h100", exclude="gpu[-5]")}) == [
        "cluster.partitions.h100.exclude=gpu[-5]: Slurm has no node gpu[-5] (sinfo lists gpu01, gpu02); "
        "sbatch would refuse every job"
    ]


@pytest.mark.parametrize("hostlist", ["gpu[5-1]", "gpu[1-70000]"])
def test_a_host_list_reversed_or_past_any_clusters_size_is_taken_as_written(hostlist: str) -> None:
    """An exclude's host list was expanded whatever its range: a reversed one (`gpu[5-1]`) named no
    node, so none missing, and passed; a typo's `gpu[1-999999999]` built a billion names at the
    start. Each is taken as written, a node no cluster has."""
    assert slurm_states.hostnames(f"{hostlist},gpu[01-02]") == [hostlist, "gpu01", "gpu02"]


def test_a_gpu_type_that_names_another_gpu_than_slurm_gives_is_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A partition labelled h200 whose jobs get H100s ran, but its results, report and the hardware
    a resume holds its tier to said h200, unsaid. The start now warns (the label changes no job:
    MFU comes from the GPU a job sees, the price from the partition), from the sinfo call its
    checks make: the type a gres asks for, or for an untyped one each type the nodes have."""
    lines = [
        "h100|gpu:h100:8(S:0-1)|infinite|32|515000",
        "mixed|gpu:a100:4,gpu:h100:4|infinite|32|515000",
        "gh|gpu:gh200:4|infinite|32|515000",
        "cpu|(null)|infinite|32|515000",
    ]
    sinfo = slurm_states.parse_sinfo("\n".join(lines))

    def warned(**parts: PartitionConfig) -> list[str]:
        return slurm_states.gpu_type_mismatches(parts, sinfo)

    assert (
        warned(
            h100=PartitionConfig(gres="gpu:h100:1", gpu_type="NVIDIA H100 80GB HBM3"),
            mixed=PartitionConfig(gres="gpu:a100:1", gpu_type="a100_80g"),
            gh=PartitionConfig(gpus_per_node=1, gpu_type="GH200"),
            cpu=PartitionConfig(gpu_type="cpu"),  # (no GPU asked for)
            odd=PartitionConfig(partition="h100", gres="gpu:1", gpu_type="nvidia"),  # (names no model)
        )
        == []
    )
    assert warned(h100=PartitionConfig(gres="gpu:h100:1", gpu_type="h200")) == [
        "cluster.partitions.h100.gpu_type=h200, but Slurm gives its jobs h100 GPUs (gres=gpu:h100:1): "
        "results, the report and the hardware a resume holds its tier to would say h200; set gpu_type: h100"
    ]
    assert warned(gh=PartitionConfig(gres="gpu:1", gpu_type="h200")) == [
        "cluster.partitions.gh.gpu_type=h200, but Slurm gives its jobs gh200 GPUs (sinfo lists gh200 on "
        "partition gh): results, the report and the hardware a resume holds its tier to would say h200; "
        "set gpu_type: gh200"
    ]
    (forgotten,) = warned(mixed=PartitionConfig(gres="gpu:1"))  # (gpu_type left at its default)
    assert forgotten.startswith(
        "cluster.partitions.mixed.gpu_type=cpu, but Slurm gives its jobs a100, h100 GPUs"
    )
    assert forgotten.endswith("; ask for one type in gres and name it in gpu_type")
    caplog.set_level(logging.WARNING, logger="autoresearch")  # (said at the start, refusing nothing)
    sinfo_printing(lines, tmp_path, monkeypatch)
    assert slurm_states.config_problems({"h100": PartitionConfig(gres="gpu:h100:1", gpu_type="h200")}) == []
    assert [r.getMessage() for r in caplog.records] == [
        "cluster.partitions.h100.gpu_type=h200, but Slurm gives its jobs h100 GPUs (gres=gpu:h100:1): "
        "results, the report and the hardware a resume holds its tier to would say h200; set gpu_type: h100"
    ]


def test_gres_items_are_read_without_their_socket_bindings() -> None:
    assert slurm_states._gres_items("gpu:h100:8(S:0,1),nvme:1") == ["gpu:h100:8", "nvme:1"]
    assert slurm_states._gres_items("(null)") == []
    assert slurm_states._gres_kinds("gpu:h100:8") == ["gpu", "gpu:h100"]  # typed serves untyped too
    assert slurm_states._gres_kinds("gpu:2") == ["gpu"]


@pytest.mark.slurm
def test_a_validate_partition_that_refuses_every_job_stops_the_campaign(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """sbatch refuses every job of the validate partition (a license the cluster does not have,
    which the start does not look up): each baseline there is lost and re-queued until its
    retries are spent. No change could then be confirmed, and the campaign spent its budget on
    nothing but losses; it stops with the reason instead."""
    proc = run_campaign(
        tmp_path, SLURM, "+cluster.partitions.h200.extra_sbatch.licenses=nosuch", "campaign.max_retries=1"
    )
    said = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, said
    assert (
        "every baseline run of the starting train.py on the validate tier was cancelled or lost to "
        "the cluster (trial " in said
    )
    assert "lost: sbatch refused the job: sbatch: error: Batch job submission failed: " in said
    assert "no change can be confirmed without one: run the command again to queue them again" in said
    study = load(tmp_path / "toy")
    validate = [t for t in study.trials if t.user_attrs.get("tier") == "validate"]
    # Each one sent was lost; those queued when the campaign stopped (a retry, depending on how the
    # polls fell) stay queued for the next run.
    sent = [t for t in validate if t.state != TrialState.WAITING]
    statuses = [(t.number, t.state.name, t.user_attrs.get("status")) for t in validate]
    assert sent and all(t.user_attrs.get("status") == "lost" for t in sent), statuses
    assert not any(t.user_attrs.get("kind") == "rerun" for t in study.trials)  # no re-run was owed
    assert _in_squeue(_job_ids(tmp_path / "toy")) == []  # the screen baselines ran to their end


@pytest.mark.slurm
def test_jobs_slurm_will_never_start_are_named_with_the_reason(tmp_path: Path, slurm_cluster: None) -> None:
    """More CPUs than the partition's node has: sbatch takes the job, Slurm holds it pending
    (PartitionConfig) for ever, and the controller says so instead of waiting in silence. (The
    start refuses such a config where sinfo shows the nodes' sizes: here sinfo hides them.)"""
    real = shutil.which("sinfo")
    sinfo = f'case "$*" in *%c*) exec "{real}" -h -a -o "%R|%G|%l" ;; *) exec "{real}" "$@" ;; esac'
    path = f"{fake_commands(tmp_path / 'bin', sinfo=sinfo)}:{os.environ['PATH']}"
    controller = _start(tmp_path, "cluster.partitions.h100.cpus_per_task=64", env={"PATH": path})
    campaign = tmp_path / "toy"
    try:
        wait_for(lambda: _log_count(campaign, "pending for PartitionConfig") > 0, 90, "the warning")
    finally:
        controller.kill()
        controller.wait(timeout=30)
        if jobs := _job_ids(campaign):
            subprocess.run(["scancel", *sorted(jobs)], check=True)
    log = " ".join((campaign / "controller.log").read_text().split())
    assert "h100: Slurm holds job " in log
    assert (
        "the request exceeds what the partition allows (cpus_per_task, mem_gb, gres, time_limit_min)" in log
    )
    assert _log_count(campaign, "pending for PartitionConfig") == 1  # once, whatever the polls
    assert "h200: Slurm holds" not in log  # its jobs fit


def _held_warnings(fleet: SlurmFleet, job: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    """The controller's warnings of a hold on `job` over polls until the first and one more (which
    must not say it again); the job is cancelled after."""

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "pending for JobHeld" in r.getMessage()]

    try:
        wait_for(lambda: fleet.poll() or said(), 90, "the warning", every=0.5)
        fleet._pending_at = -slurm_fleet.PENDING_POLL_SECONDS  # ask squeue why once more
        assert fleet.poll() == []
    finally:
        subprocess.run(["scancel", job], check=True)
    return said()


@pytest.mark.slurm
def test_a_job_held_pending_is_named_once_with_how_to_release_it(
    tmp_path: Path, slurm_cluster: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A held job (scontrol hold; here sbatch --hold) waits until a person releases it, its
    experiment counted as running meanwhile: the controller says so once instead of waiting in
    silence."""
    caplog.set_level(logging.WARNING, logger="autoresearch")
    cfg = compose_toy(tmp_path, SLURM)
    cfg.cluster.partitions["h100"].extra_sbatch = {"hold": True}
    fleet = SlurmFleet(cfg.cluster, deadline_s=60, campaign_dir=str(tmp_path / "toy"))
    exp = make_experiment(tmp_path, "print('held')\n", trial=1)
    task = fleet.submit([JobSpec(1, exp, "h100")])[1].rpartition(":")[2]
    assert _held_warnings(fleet, task.split("_")[0], caplog) == [
        f"h100: Slurm holds job {task} (trial 1) pending for JobHeldUser: held by its user; its experiment "
        f"waits until released (scontrol release {task}) or cancelled (scancel {task})"
    ]


@pytest.mark.slurm
def test_a_task_held_within_a_pending_array_is_named_once(
    tmp_path: Path, slurm_cluster: None, caplog: pytest.LogCaptureFixture
) -> None:
    """An administrator's `scontrol hold` of one task of a pending array: squeue gives the hold as
    one of a list of reasons (`None,JobHeldAdmin`), which was not read, so the campaign waited for
    it in silence. The line then named the array, not the task held nor its experiment, and told
    to release or cancel the array: the held task and its trial are named."""
    caplog.set_level(logging.WARNING, logger="autoresearch")
    cfg = compose_toy(tmp_path, SLURM, "cluster.partitions.h100.slots=3")
    cfg.cluster.partitions["h100"].extra_sbatch = {"begin": "now+1hour"}
    fleet = SlurmFleet(cfg.cluster, deadline_s=60, campaign_dir=str(tmp_path / "toy"))
    exps = [
        JobSpec(i, make_experiment(tmp_path, "print(1)\n", name=f"e{i}", trial=i), "h100") for i in range(3)
    ]
    task = fleet.submit(exps)[1].rpartition(":")[2]  # (trial 1: the array's second task)
    job = task.split("_")[0]
    held = subprocess.run(["scontrol", "hold", task], capture_output=True, text=True)
    if held.returncode:  # not left pending in the queue for the hour it waits to begin
        subprocess.run(["scancel", job], check=True)
    assert held.returncode == 0, held.stderr
    assert _held_warnings(fleet, job, caplog) == [
        f"h100: Slurm holds job {task} (trial 1) pending for JobHeldAdmin: held by an administrator; its "
        f"experiment waits until released (scontrol release {task}) or cancelled (scancel {task})"
    ]


def _set_partition(name: str, state: str) -> None:
    """An administrator's change of a partition's state (UP, DOWN, DRAIN, INACTIVE)."""
    subprocess.run(["scontrol", "update", f"partitionname={name}", f"state={state}"], check=True)


def _messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def _refused_then_sent(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    refuse: Callable[[], None],
    admit: Callable[[], None],
) -> None:
    """Two experiments sent while sbatch refuses the partition's jobs (`refuse`): asserts they are
    tried again, not lost, and each runs once after `admit`."""
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (0.2,))  # (a site's maintenance, in seconds)
    calls = tmp_path / "sbatch.calls"  # the real sbatch, each call counted
    sbatch = f'echo >> "{calls}"; exec "{shutil.which("sbatch")}" "$@"'
    monkeypatch.setenv("PATH", f"{fake_commands(tmp_path / 'bin', sbatch=sbatch)}:{os.environ['PATH']}")
    cfg = compose_toy(tmp_path, SLURM, f"cluster.partitions.h100.mode={mode}")
    fleet = SlurmFleet(cfg.cluster, deadline_s=60, campaign_dir=str(tmp_path / "toy"))
    exps = [make_experiment(tmp_path, "print('ran')\n", name=f"e{t}", trial=t) for t in (1, 2)]
    finished: list[Finished] = []

    def refused_thrice() -> bool:
        finished.extend(fleet.poll())
        return bool(finished) or (calls.exists() and len(calls.read_text()) >= 3)

    refuse()
    try:
        fleet.submit([JobSpec(t, exp, "h100") for t, exp in enumerate(exps, start=1)])
        wait_for(refused_thrice, 60, "sbatch to be tried again")
        assert finished == []  # refused three times, and not lost
    finally:
        admit()
    try:
        wait_for(lambda: finished.extend(fleet.poll()) or len(finished) == 2, 120, "both to run", every=0.2)
    finally:
        fleet.shutdown(cancel=True)
    assert sorted((f.trial, f.outcome["status"] == "lost") for f in finished) == [(1, False), (2, False)]
    assert all((exp / "outcome.json").exists() for exp in exps)  # each ran, once


@pytest.mark.slurm
@pytest.mark.parametrize(("mode", "state"), [("array", "INACTIVE"), ("workers", "DRAIN")])
def test_experiments_wait_while_their_partition_is_closed_and_go_out_when_it_opens(
    tmp_path: Path,
    slurm_cluster: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    state: str,
) -> None:
    """A partition set INACTIVE or DRAIN (maintenance): sbatch refuses every job with "Required
    partition not available". Each refusal was a lost run, re-queued and refused again, so every
    experiment's retries were spent in seconds; now they wait, said once, and go out when it opens."""
    caplog.set_level(logging.INFO, logger="autoresearch")
    _refused_then_sent(
        tmp_path,
        monkeypatch,
        mode,
        lambda: _set_partition("h100", state),
        lambda: _set_partition("h100", "UP"),
    )
    (closed,) = _messages(caplog, "takes no new jobs")
    assert closed.startswith(
        "partition h100: sbatch refused the job: sbatch: error: Batch job submission failed: "
        "Required partition not available (inactive or drain); it takes no new jobs"
    )
    assert len(_messages(caplog, "partition h100 takes jobs again")) == 1


def _cap_submitted_jobs(limit: int) -> None:
    """A university cluster's QOS cap on the jobs a user may have submitted (-1: none). A cap that
    admits some leaves room for `limit` jobs: it starts on an empty queue (a job an earlier test
    cancelled, still leaving Slurm on a busy machine, would take a place under it), and above the
    jobs Slurm still counts with none left (a count it lost, see _counted_submitted_jobs)."""
    if limit > 0:
        wait_for(lambda: not _all_in_squeue(), 120, "an empty queue before the cap is set")
        limit += _counted_submitted_jobs()
    subprocess.run(
        ["sacctmgr", "-i", "modify", "qos", "normal", "set", f"MaxSubmitJobsPerUser={limit}"],
        check=True,
        capture_output=True,
    )


def _counted_submitted_jobs() -> int:
    """The jobs QOS normal counts as this user's, submitted and not ended. Slurm 22.05 can lose
    count of a job (cancelled while it was being requeued): its place under the cap is never given
    back until slurmctld restarts, and a CI run's cap tests found one place fewer than they set."""
    shown = subprocess.run(
        ["scontrol", "show", "assoc_mgr", "flags=qos", "qos=normal"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    counted = re.search(rf"^\s+{os.getuid()}\n\s+MaxJobsPU=.*MaxSubmitJobsPU=[^(\s]*\((\d+)\)", shown, re.M)
    return int(counted[1]) if counted else 0


def _assert_cap_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """The cap's refusal said once, and once how to stay under it."""
    (capped,) = _messages(caplog, "wait for room")
    assert capped.startswith(
        "partition h100: sbatch refused the job: sbatch: error: QOSMaxSubmitJobPerUserLimit; a cap on the "
        "jobs you may have submitted, so its experiments wait for room (not lost)"
    )
    assert len(_messages(caplog, "cluster.partitions.h100.slots (or cluster.max_queued) below that cap")) == 1


@pytest.mark.slurm
@pytest.mark.parametrize("mode", ["array", "workers"])
def test_experiments_wait_while_a_submit_cap_is_reached_and_go_out_under_it(
    tmp_path: Path,
    slurm_cluster: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    """A QOS allowing a user no submitted job (a cap already reached): sbatch refuses the array,
    and even one task of it. Each refusal was a lost run, re-queued and refused again while the cap
    held (workers: with none alive); now they wait, said once with how to stay under the cap, and
    go out when there is room."""
    caplog.set_level(logging.INFO, logger="autoresearch")
    _refused_then_sent(
        tmp_path, monkeypatch, mode, lambda: _cap_submitted_jobs(0), lambda: _cap_submitted_jobs(-1)
    )
    _assert_cap_said_once(caplog)
    assert len(_messages(caplog, "partition h100 takes jobs again under the submit cap")) == 1


@pytest.mark.slurm
@pytest.mark.parametrize("mode", ["array", "workers"])
def test_a_round_larger_than_a_submit_cap_sends_what_fits_and_the_rest_follows_under_it(
    tmp_path: Path,
    slurm_cluster: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    """A QOS capping each user at one submitted job, and 3 slots: sbatch refused the round's array
    of 3 (each task counts) every time, so its experiments waited for ever. Now the array is halved
    until it fits: each experiment runs under the cap (array mode: one array of one task at a
    time; workers: one worker takes all three), said once with how to stay under the cap."""
    caplog.set_level(logging.INFO, logger="autoresearch")
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (0.2,))  # (room is looked for again soon)
    _cap_submitted_jobs(1)
    try:
        finished = _three_at_once(tmp_path / mode, mode)
    finally:
        _cap_submitted_jobs(-1)
    assert [(t, status != "lost", ran) for t, status, ran in finished] == [
        (1, True, True),
        (2, True, True),
        (3, True, True),
    ]
    assert len(_job_ids(tmp_path / mode / "toy")) == (3 if mode == "array" else 1)  # each of one task
    _assert_cap_said_once(caplog)


class _SbatchRounds:
    """8 experiments sent to h100 (held pending by --begin) by a fleet whose sbatch calls a shim
    counts before the real sbatch, every round tried at once: each round's calls and jobs sent."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(
            slurm_outage, "SUBMIT_RETRY_SECONDS", (0.0,)
        )  # the rest is tried at the next poll
        self.calls = tmp_path / "sbatch.calls"
        sbatch = f'echo "$*" >> "{self.calls}"; exec "{shutil.which("sbatch")}" "$@"'
        monkeypatch.setenv("PATH", f"{fake_commands(tmp_path / 'bin', sbatch=sbatch)}:{os.environ['PATH']}")
        pending = "+cluster.partitions.h100.extra_sbatch.begin=now+1hour"  # sent, they stay pending
        slots = ("cluster.partitions.h100.slots=8", "cluster.max_queued=8")
        self.fleet = SlurmFleet(compose_toy(tmp_path, SLURM, pending, *slots).cluster, 60, str(tmp_path))
        self.jobs = [
            JobSpec(i, make_experiment(tmp_path, "", name=f"e{i}", trial=i), "h100") for i in range(1, 9)
        ]

    def next(self) -> tuple[int, list[str]]:
        """A round (the first sends the 8, later ones the rest): its sbatch calls and the jobs sent."""
        calls, sent = self._calls(), self._sent()
        if calls == 0:
            self.fleet.submit(self.jobs)
        else:
            self.fleet._send_unsent()
        return self._calls() - calls, sorted(set(self._sent()) - set(sent))

    def _calls(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0

    def _sent(self) -> list[str]:
        return [t.slurm_id for t in self.fleet._tracked.values() if t.slurm_id]


def _make_room(jobs: list[str]) -> None:
    subprocess.run(["scancel", *jobs], check=True)
    wait_for(lambda: not set(_all_in_squeue()) & {i.split("_")[0] for i in jobs}, 60, "room under the cap")


@pytest.mark.slurm
def test_a_round_after_a_submit_cap_split_starts_from_the_size_that_went_through(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A QOS capping each user at 2 submitted jobs, and 8 experiments at once: the first round
    halves 8, 4, then 2 go out (3 sbatch calls). Each later round halved its rest from the top
    again (6, 3, 1: 3 calls, and one job sent where two fit); it now starts from twice what went
    through, then that (4, 2: 2 calls, 2 sent). The real sbatch, each call counted."""
    _cap_submitted_jobs(2)
    rounds = _SbatchRounds(tmp_path, monkeypatch)
    try:
        first_round, first_sent = rounds.next()
        _make_room(first_sent)  # room for 2 again
        second_round, second_sent = rounds.next()
    finally:
        rounds.fleet.shutdown(cancel=True)
        _cap_submitted_jobs(-1)
    assert (first_round, len(first_sent)) == (3, 2)
    assert (second_round, len(second_sent)) == (2, 2)


@pytest.mark.slurm
def test_a_retry_while_a_submit_cap_leaves_no_room_costs_one_sbatch_call(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a cap of 2 submitted jobs, full: every retry tried twice the size that last went
    through, that size, then one task (3 sbatch calls, all refused). After a round that sent
    nothing it tries one task only, and what goes through doubles from there as room opens."""
    _cap_submitted_jobs(2)
    rounds = _SbatchRounds(tmp_path, monkeypatch)
    try:
        first = rounds.next()
        full = [rounds.next() for _ in range(3)]
        _make_room(first[1])  # room for 2 again
        opened = [rounds.next() for _ in range(2)]
    finally:
        rounds.fleet.shutdown(cancel=True)
        _cap_submitted_jobs(-1)
    calls_and_sent = [(calls, len(sent)) for calls, sent in (first, *full, *opened)]
    assert calls_and_sent == [(3, 2), (3, 0), (1, 0), (1, 0), (1, 1), (2, 1)]


@pytest.mark.slurm
@pytest.mark.parametrize("state", ["DOWN", "INACTIVE"])
def test_jobs_pending_in_a_partition_set_down_are_named_once_and_run_when_it_is_up(
    tmp_path: Path, slurm_cluster: None, caplog: pytest.LogCaptureFixture, state: str
) -> None:
    """A partition set DOWN or INACTIVE while its jobs are queued: they stay pending (PartitionDown,
    PartitionInactive), the campaign stood still without a word, and went on when it was up."""
    caplog.set_level(logging.WARNING, logger="autoresearch")
    cfg = compose_toy(tmp_path, SLURM)
    fleet = SlurmFleet(cfg.cluster, deadline_s=60, campaign_dir=str(tmp_path / "toy"))
    exp = make_experiment(tmp_path, "print('ran')\n", trial=1)
    reason = f"Partition{state.capitalize()}"
    finished: list[Finished] = []

    def poll_asking_why() -> list[str]:
        fleet._pending_at = -slurm_fleet.PENDING_POLL_SECONDS  # (squeue is asked once a minute)
        finished.extend(fleet.poll())
        return finished or _messages(caplog, f"pending for {reason}")

    _set_partition("h100", "DOWN")  # (an INACTIVE one refuses new jobs: they go in while it is down)
    try:
        job = fleet.submit([JobSpec(1, exp, "h100")])[1].rpartition(":")[2].split("_")[0]
        _set_partition("h100", state)
        wait_for(poll_asking_why, 60, "the warning", every=0.5)
        poll_asking_why()
        assert finished == []
    finally:
        _set_partition("h100", "UP")
    wait_for(lambda: finished.extend(fleet.poll()) or finished, 120, "the experiment to run", every=0.2)
    assert [(f.trial, f.outcome["status"] == "lost") for f in finished] == [(1, False)]
    assert (exp / "outcome.json").exists()
    assert _messages(caplog, f"pending for {reason}") == [
        f"h100: Slurm holds job {job} pending for {reason}: the partition is {state.lower()}; its "
        "experiments wait (not lost) and start when that is over (sinfo -p h100)"
    ]  # (and PartitionDown before it, once, where Slurm said so before it saw the partition inactive)
    assert len(_messages(caplog, "pending for")) == len(set(_messages(caplog, "pending for")))


@pytest.mark.slurm
def test_a_partition_that_closes_again_is_said_again(
    tmp_path: Path, slurm_cluster: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition closed twice in one campaign, each time first INACTIVE (sbatch refuses the job),
    then DOWN (sbatch takes it, and it pends, PartitionDown), then UP (it runs). The pending wait
    was said only the first time, and a second closure left the campaign standing still in silence;
    each closure is now said, every time."""
    caplog.set_level(logging.INFO, logger="autoresearch")
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (0.2,))
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, 60, str(tmp_path / "toy"))
    finished: list[Finished] = []

    def poll_asking_why() -> None:
        fleet._pending_at = -slurm_fleet.PENDING_POLL_SECONDS  # (squeue is asked once a minute)
        finished.extend(fleet.poll())

    def close_then_open(trial: int) -> None:
        exp = make_experiment(tmp_path, "print('ran')\n", name=f"e{trial}", trial=trial)
        _set_partition("h100", "INACTIVE")
        fleet.submit([JobSpec(trial, exp, "h100")])
        _set_partition("h100", "DOWN")
        said = "pending for PartitionDown: the partition is down"
        wait_for(lambda: poll_asking_why() or len(_messages(caplog, said)) >= trial, 60, "the wait said")
        _set_partition("h100", "UP")
        wait_for(lambda: poll_asking_why() or len(finished) >= trial, 120, "it to run", every=0.2)

    try:
        close_then_open(1)
        close_then_open(2)
    finally:
        _set_partition("h100", "UP")
        fleet.shutdown(cancel=True)
    assert [(f.trial, f.outcome["status"] == "lost") for f in finished] == [(1, False), (2, False)]
    assert len(_messages(caplog, "it takes no new jobs (inactive or drained)")) == 2
    assert len(_messages(caplog, "partition h100 takes jobs again")) == 2
    assert len(_messages(caplog, "pending for PartitionDown")) == 2


@pytest.mark.slurm
def test_a_node_drained_under_a_running_job_lets_it_finish_and_the_next_wait_is_named(
    tmp_path: Path, slurm_cluster: None, caplog: pytest.LogCaptureFixture
) -> None:
    """An administrator drains the partition's node (here its only one) while an experiment runs
    there: that one runs on to its result, and the next waits pending, which the campaign sat
    through without a word; it is named once, and runs when the node is back."""
    caplog.set_level(logging.WARNING, logger="autoresearch")
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, 60, str(tmp_path / "toy"))
    hold = tmp_path / "hold"
    hold.touch()
    held = make_experiment(
        tmp_path, f"import os, time\nwhile os.path.exists({str(hold)!r}): time.sleep(0.1)\n", trial=1
    )
    nxt = make_experiment(tmp_path, "print('ran')\n", name="next", trial=2)
    finished: list[Finished] = []

    def poll_asking_why() -> list[str]:
        fleet._pending_at = -slurm_fleet.PENDING_POLL_SECONDS  # (squeue is asked once a minute)
        finished.extend(fleet.poll())
        return finished or _messages(caplog, "out of service")

    node = socket.gethostname().split(".")[0]
    try:
        fleet.submit([JobSpec(1, held, "h100")])
        wait_for(lambda: (held / "started.json").exists(), 60, "the experiment to start")
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=drain", "reason=test"], check=True)
        job = fleet.submit([JobSpec(2, nxt, "h100")])[2].rpartition(":")[2]
        hold.unlink()
        wait_for(lambda: finished.extend(fleet.poll()) or finished, 60, "the running one to end", every=0.2)
        assert [(f.trial, f.outcome["status"] == "lost") for f in finished] == [(1, False)]
        finished.clear()
        wait_for(poll_asking_why, 60, "the warning", every=0.5)
        poll_asking_why()
        assert finished == []
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=True)
    wait_for(lambda: finished.extend(fleet.poll()) or finished, 120, "the next to run", every=0.2)
    assert [(f.trial, f.outcome["status"] == "lost") for f in finished] == [(2, False)]
    assert _messages(caplog, "pending for") == [
        f"h100: Slurm holds job {job} pending for Nodes required for job are DOWN, DRAINED or reserved for "
        "jobs in higher priority partitions: every node it may run on is out of service or reserved; its "
        "experiments wait (not lost) and start when that is over (sinfo -p h100)"
    ]


class SuspendedRun:
    """One held toy experiment on h100 under a short deadline (8 s, the controller's grace 5 s),
    suspended (`scontrol suspend`) once train.py runs, until past both deadlines: released, it
    writes its result at once."""

    DEADLINE_S, GRACE_S = 8.0, 5.0

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(
            slurm_fleet, "backstop_grace", lambda cluster: self.GRACE_S
        )  # (30 s at least in use)
        self.cluster = compose_toy(tmp_path, SLURM).cluster
        self.campaign = str(tmp_path / "toy")
        self.hold = tmp_path / "hold"
        self.hold.touch()
        waits = f"import os, time, prepare\nopen('running', 'w')\nwhile os.path.exists({str(self.hold)!r}): time.sleep(0.1)\n"
        train_py = waits + "prepare.write_result({'val_bpb': 1.0})\n"
        self.job = JobSpec(1, make_experiment(tmp_path, train_py, deadline=self.DEADLINE_S, trial=1), "h100")

    def fleet(self) -> SlurmFleet:
        """A controller's fleet, as a start (or a start again) makes it."""
        return SlurmFleet(self.cluster, self.DEADLINE_S, self.campaign)

    def suspend_past_the_deadlines(self, fleet: SlurmFleet, finished: list[Finished]) -> str:
        """Submit it, suspend it once it runs, and poll `fleet` until well past both deadlines: its handle."""
        handle = fleet.submit([self.job])[1]
        wait_for(lambda: (self.job.exp_dir / "running").exists(), 60, "train.py to start")
        subprocess.run(["scontrol", "suspend", handle.rpartition(":")[2]], check=True)
        started = json.loads((self.job.exp_dir / "started.json").read_text())["started_at"]
        past_both = started + self.DEADLINE_S + self.GRACE_S + 2 * self.DEADLINE_S
        wait_for(
            lambda: _poll_asking_slurm(fleet, finished) or time.time() > past_both,
            90,
            "both deadlines",
            every=0.5,
        )
        return handle

    def resume_to_its_end(self, fleet: SlurmFleet, handle: str, finished: list[Finished]) -> None:
        subprocess.run(["scontrol", "resume", handle.rpartition(":")[2]], check=True)
        self.hold.unlink()
        wait_for(lambda: _poll_asking_slurm(fleet, finished), 60, "the resumed run to end", every=0.2)


def _poll_asking_slurm(fleet: SlurmFleet, finished: list[Finished]) -> list[Finished]:
    """`fleet.poll()`, its Slurm states read afresh (sacct is asked every 10 s), adding to `finished`."""
    fleet._states_at = -slurm_fleet.STATE_POLL_SECONDS
    finished.extend(fleet.poll())
    return finished


@pytest.mark.slurm
def test_a_job_suspended_past_its_deadline_runs_on_to_its_result_when_resumed(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`scontrol suspend` stops a running experiment's processes, its runner's clock with them. Both
    deadlines ran on meanwhile: resumed past them, the run was ended as a timeout of its own
    (the runner's `killed at the deadline`, or the controller's cancel). Suspended time no longer
    counts on either clock."""
    run = SuspendedRun(tmp_path, monkeypatch)
    fleet = run.fleet()
    finished: list[Finished] = []
    try:
        handle = run.suspend_past_the_deadlines(fleet, finished)
        assert finished == []
        run.resume_to_its_end(fleet, handle, finished)
    finally:
        fleet.shutdown(cancel=True)
    assert [(f.trial, f.outcome["status"]) for f in finished] == [(1, "ok")], finished


@pytest.mark.slurm
def test_a_suspension_past_the_deadline_is_not_forgotten_by_a_controller_started_again(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller kept the time a job stood suspended in memory: one started again after a
    suspension past the deadline's grace counted the suspension as running time, and cancelled
    the run as it resumed (`timeout: controller deadline`). The time is now Slurm's own (sacct's
    Suspended), which a controller started again reads as the first did."""
    run = SuspendedRun(tmp_path, monkeypatch)
    first, again = run.fleet(), run.fleet()
    finished: list[Finished] = []
    try:
        handle = run.suspend_past_the_deadlines(first, finished)
        assert finished == []
        assert again.reattach(run.job, handle)  # the first controller is gone: killed, its memory lost
        assert _poll_asking_slurm(again, finished) == []  # still suspended
        run.resume_to_its_end(again, handle, finished)
    finally:
        for fleet in (first, again):
            fleet.shutdown(cancel=True)
    assert [(f.trial, f.outcome["status"]) for f in finished] == [(1, "ok")], finished


@pytest.mark.slurm
def test_a_suspension_past_the_deadline_counts_for_a_controller_started_again_while_sacct_fails(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, with slurmdbd down when the controller starts again: sacct's count of the
    suspension was all it had, so it cancelled the run as it resumed. squeue's word now counts it:
    the job's start to now less its run time."""
    run = SuspendedRun(tmp_path, monkeypatch)
    first, again = run.fleet(), run.fleet()
    down = tmp_path / "sacct-down"
    failing = "echo 'sacct: error: Problem talking to the database: Connection refused' >&2; exit 1"
    sacct = f'if [ -e "{down}" ]; then {failing}; fi; exec "{shutil.which("sacct")}" "$@"'
    monkeypatch.setenv("PATH", f"{fake_commands(tmp_path / 'bin', sacct=sacct)}:{os.environ['PATH']}")
    finished: list[Finished] = []
    try:
        handle = run.suspend_past_the_deadlines(first, finished)
        assert finished == []
        down.touch()
        assert again.reattach(run.job, handle)  # the first controller is gone: killed, its memory lost
        assert _poll_asking_slurm(again, finished) == []  # still suspended
        assert again._states_from == "squeue"
        run.resume_to_its_end(again, handle, finished)
    finally:
        for fleet in (first, again):
            fleet.shutdown(cancel=True)
    assert [(f.trial, f.outcome["status"]) for f in finished] == [(1, "ok")], finished


def test_a_reason_with_commas_of_its_own_is_one_reason_and_a_list_of_them_many() -> None:
    """A hold on some tasks of an array is listed with their reason (`None,JobHeldAdmin`); a
    closed partition's reason has commas in its own text, and split there it matched nothing, so
    a drained partition's jobs waited in silence."""
    closed = "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions"
    out = f"7|{closed}\n8|None,JobHeldAdmin\n8|BeginTime\n9|ReqNodeNotAvail, UnavailableNodes:n[01,03-05]\n"
    assert slurm_states.parse_pending_reasons(out) == {
        "7": {closed},
        "8": {"None", "JobHeldAdmin", "BeginTime"},
        "9": {"ReqNodeNotAvail, UnavailableNodes:n[01,03-05]"},
    }
    assert closed in slurm_states.CLOSED


def test_squeue_start_and_run_time_read_as_the_time_a_job_stood_suspended() -> None:
    start = "2026-12-06T13:05:06"
    now = datetime.fromisoformat(start).timestamp() + 17.0
    lines = f"12_3|{start}|0:05\n13|{start}|0:16\n14|N/A|0:00\n15|{start}|1-00:00:00\n\n"
    assert slurm_states.parse_squeue_suspended(lines, now) == {"12_3": pytest.approx(12.0)}


def test_sacct_answering_again_replaces_squeues_suspended_time_for_every_job_it_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While sacct fails, squeue's start and run time are read as suspended time on this machine's
    clock: one 9 s ahead of slurmctld's took that for a suspension of every running job. sacct's
    answer kept only the jobs it counted suspended, so the skew stood until the job ended, its
    controller deadline 9 s late; sacct's count (none) now stands."""
    down = tmp_path / "sacct-down"
    sacct = f'[ -e "{down}" ] && {{ echo "sacct: error: Connection refused" >&2; exit 1; }}\necho "41|RUNNING|2026-12-06T13:00:00|00:00:00"'
    squeue = 'echo "41|$(date -d @$(( $(date +%s) - 14 )) +%Y-%m-%dT%H:%M:%S)|0:05"'
    fakes = fake_commands(
        tmp_path / "bin", sacct=sacct, squeue=squeue, sbatch="exit 1", srun="exit 1", scancel="exit 0"
    )
    monkeypatch.setenv("PATH", f"{fakes}:{os.environ['PATH']}")
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, deadline_s=60, campaign_dir=str(tmp_path))
    down.touch()
    assert fleet._sacct_states(["41"]) is None
    assert fleet._suspended_s["41"] == pytest.approx(9.0, abs=1.5)  # the skew, taken for a suspension
    down.unlink()
    assert fleet._sacct_states(["41"]) == {"41": ["RUNNING"]}
    assert fleet._suspended_s.get("41", 0.0) == 0.0


@pytest.mark.slurm
def test_a_time_limit_lowered_by_hand_is_named_as_the_cause_of_the_timeout(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """`scontrol update TimeLimit=1` on a running experiment: Slurm warns it at once (USR2) and the
    run ends as a timeout. Its reason said to raise time_limit_min, 30 minutes here, which would
    not have helped; it now says the job's own limit was lowered."""
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, 60, str(tmp_path / "toy"))
    hold = tmp_path / "hold"
    hold.touch()
    waits = f"import os, time\nopen('running', 'w')\nwhile os.path.exists({str(hold)!r}): time.sleep(0.1)\n"
    exp = make_experiment(tmp_path, waits, trial=1)
    finished: list[Finished] = []
    try:
        job = fleet.submit([JobSpec(1, exp, "h100")])[1].rpartition(":")[2]
        wait_for(lambda: (exp / "running").exists(), 60, "train.py to start")
        subprocess.run(["scontrol", "update", f"jobid={job}", "TimeLimit=1"], check=True)
        wait_for(lambda: finished.extend(fleet.poll()) or finished, 90, "the run to end", every=0.2)
    finally:
        hold.unlink()
        fleet.shutdown(cancel=True)
    ((trial, outcome),) = [(f.trial, f.outcome) for f in finished]
    assert (trial, outcome["status"]) == (1, "timeout"), outcome
    assert outcome["reason"].startswith("the job's time limit was near (runner received SIGUSR2) after "), (
        outcome
    )
    assert outcome["reason"].endswith(
        "long before time_limit_min=30's: its job's time limit was lowered (scontrol update TimeLimit)"
    ), outcome


def _restart_slurm(**settings: str) -> None:
    """slurm/local restarted with other settings (none: its own), once no job is left in the queue:
    slurmd restarted under a job being killed fails to kill it and drains the node."""
    wait_for(lambda: not _all_in_squeue(), 120, "an empty queue")
    subprocess.run(["bash", str(SLURM_UP)], env={**os.environ, **settings}, check=True, capture_output=True)


def _all_in_squeue() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.split()


def _three_at_once(tmp_path: Path, mode: str) -> list[tuple[int, str, bool]]:
    """Three experiments sent at once to h100 (3 slots), run to their end: each one's trial,
    status and whether it ran (its outcome.json)."""
    tmp_path.mkdir()
    overrides = ("cluster.partitions.h100.slots=3", f"cluster.partitions.h100.mode={mode}")
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM, *overrides).cluster, 60, str(tmp_path / "toy"))
    exps = [make_experiment(tmp_path, "print('ran')\n", name=f"e{t}", trial=t) for t in (1, 2, 3)]
    fleet.submit([JobSpec(t, exp, "h100") for t, exp in enumerate(exps, start=1)])
    finished: list[Finished] = []
    try:
        wait_for(lambda: finished.extend(fleet.poll()) or len(finished) == 3, 120, "all three", every=0.2)
    finally:
        fleet.shutdown(cancel=True)
    ran = {t: (exp / "outcome.json").exists() for t, exp in enumerate(exps, start=1)}
    return sorted((f.trial, f.outcome["status"], ran[f.trial]) for f in finished)


@pytest.mark.slurm
def test_a_wave_larger_than_the_clusters_max_array_size_goes_out_in_several_arrays(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """A site's MaxArraySize below a partition's slots: sbatch refuses the whole wave's array
    ("Invalid job array specification"), and every experiment of it was lost, re-queued and lost
    again. Here arrays may have 2 tasks, and 3 experiments (or workers) are wanted at once."""
    _restart_slurm(AUTORESEARCH_SLURM_MAX_ARRAY_SIZE="2")
    try:
        for mode in ("array", "workers"):
            finished = _three_at_once(tmp_path / mode, mode)
            assert [(t, status != "lost", ran) for t, status, ran in finished] == [
                (1, True, True),
                (2, True, True),
                (3, True, True),
            ], (mode, finished)
            assert len(_job_ids(tmp_path / mode / "toy")) == 2, mode  # an array of 2, then one of 1
    finally:
        _restart_slurm()  # (MaxArraySize as it was)


@pytest.mark.slurm
def test_new_jobs_keep_off_a_node_whose_jobs_saw_no_gpu(tmp_path: Path, slurm_cluster: None) -> None:
    """The fleet excludes the local node once a result came from another node of the partition.
    Here that node is the only one, so sbatch refuses the next job: the fleet reports it lost
    with sbatch's reason (the campaign re-queues it) instead of failing."""
    cfg = compose_toy(tmp_path, SLURM)
    fleet = SlurmFleet(cfg.cluster, deadline_s=60, campaign_dir=str(tmp_path / "toy"))
    node = socket.gethostname().split(".")[0]

    def finished(trial: int, outcome: dict[str, object]) -> list[int]:
        exp = make_experiment(tmp_path, "", name=f"e{trial}", trial=trial)
        (exp / "outcome.json").write_text(json.dumps({"trial": trial, **outcome}))
        assert fleet.reattach(JobSpec(trial, exp, "h100"), f"slurm:h100:{90000 + trial}_0")
        return [f.trial for f in fleet.poll()]

    assert finished(1, {"node": node, **UNFIT}) == [1]  # the runner's word is final at once
    assert not fleet.nodes.excluded["h100"]
    assert finished(2, {"node": "gpu-a", "status": "ok"}) == [2]
    assert fleet.nodes.excluded["h100"] == {node}
    exp = make_experiment(tmp_path, "print('never runs')\n", name="e3", trial=3)
    assert fleet.submit([JobSpec(3, exp, "h100")]) == {}
    (refused,) = fleet.poll()
    assert (refused.trial, refused.outcome["status"]) == (3, "lost")
    assert refused.outcome["reason"].startswith(
        "sbatch refused the job: sbatch: error: Batch job submission failed"
    )
    assert fleet.free_slots("h100") == fleet.pools["h100"].slots  # nothing left tracked


@pytest.mark.slurm
def test_a_setup_line_that_fails_on_the_node_is_recorded_with_the_line(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """Slurm's job script runs on past a failed setup line (here a module system the node lacks):
    the runner records the experiment lost, naming the first line that failed, rather than running
    train.py in an environment it was not meant for."""
    cfg = compose_toy(tmp_path, SLURM)
    failing = "module load cuda/12.4  # the site's CUDA"
    cfg.cluster.partitions["h100"].setup = ["export TOY_SETUP=1", failing, "false"]
    fleet = SlurmFleet(cfg.cluster, deadline_s=60, campaign_dir=str(tmp_path / "toy"))
    exp = make_experiment(tmp_path, "raise SystemExit('train.py ran')\n", trial=1)
    assert fleet.submit([JobSpec(1, exp, "h100")])
    finished: list[Finished] = []
    wait_for(lambda: finished.extend(fleet.poll()) or finished, 120, "the experiment's end", every=0.5)
    (lost,) = finished
    assert lost.outcome["status"] == "lost" and lost.outcome["node_unfit"]
    assert lost.outcome["reason"] == f"the node cannot run it: setup line `{failing}` exited 127"
    assert not (exp / "run.log").exists()  # train.py never started


@pytest.mark.slurm
def test_a_resumed_campaign_keeps_out_the_nodes_found_unfit_before(
    tmp_path: Path, slurm_cluster: None, open_campaign: Callable[..., Campaign]
) -> None:
    """The study remembers where lost runs ran: a new controller's fleet excludes the unfit node
    before its first job, rather than spend trials' retries to find it again."""
    node = socket.gethostname().split(".")[0]
    (tmp_path / "toy").mkdir()
    study = open_study(tmp_path / "toy", "toy", None)
    lost = {"pool": "h100", "node": node, "node_unfit": True, "status": "lost", "reason": UNFIT["reason"]}
    ran = {"pool": "h100", "node": "gpu-a", "status": "discard", "val_bpb": 1.0}
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=lost))
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs=ran))
    campaign = open_campaign(tmp_path, [], SLURM)
    fleet = campaign.fleet
    assert isinstance(fleet, SlurmFleet) and fleet.nodes.excluded["h100"] == {node}
    exp = make_experiment(tmp_path, "print('never runs')\n", name="e9", trial=9)
    assert fleet.submit([JobSpec(9, exp, "h100")]) == {}  # the only node is out: sbatch refuses
    (refused,) = fleet.poll()
    assert refused.outcome["reason"].startswith("sbatch refused the job")


@pytest.mark.slurm
def test_campaign_runs_as_arrays_on_both_partitions(tmp_path: Path, slurm_cluster: None) -> None:
    proc = run_campaign(tmp_path, SLURM, "campaign.budget.max_experiments=8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    campaign = tmp_path / "toy"
    study = _assert_complete(campaign, budget=8)
    assert all(t.state == TrialState.COMPLETE for t in study.trials if "exp_dir" in t.user_attrs)
    # Screen on h100, validate on h200, as results.tsv says.
    ran = {str(t.number) for t in study.trials if "exp_dir" in t.user_attrs}
    rows = [r for r in read_tsv(campaign / "results.tsv") if r["trial"] in ran]
    assert {r["tier"] for r in rows} == {"screen", "validate"}
    for r in rows:
        expected = {"screen": "h100", "validate": "h200"}[r["tier"]]
        assert (r["partition"], r["gpu_type"]) == (expected, expected), r
        assert r["node"] == socket.gethostname(), r  # where it ran
    # The report bills each partition's hours and shows the start measured on both.
    page = (campaign / "report.html").read_text()
    assert "<td>h100 (h100)</td>" in page and "<td>h200 (h200)</td>" in page
    assert "<td>screen</td>" in page and "<td>validate</td>" in page
    # The GPU the job was given: each partition's typed GRES (h100 devices 0-7, h200 devices 8-15).
    for t in study.trials:
        if "exp_dir" in t.user_attrs:
            gpus = t.user_attrs["gpus_seen"]
            assert gpus and (int(gpus) < 8) == (t.user_attrs["partition"] == "h100"), t.user_attrs
    # sacct lists one COMPLETED array task per experiment, named for its partition.
    handles = {t.user_attrs["job"] for t in study.trials if "exp_dir" in t.user_attrs}
    tasks = {row[0]: row for row in _sacct_settled(campaign, {h.split(":")[2] for h in handles})}
    for t in study.trials:
        if "exp_dir" not in t.user_attrs:
            continue
        pool, handle = t.user_attrs["pool"], t.user_attrs["job"]
        assert handle.startswith(f"slurm:{pool}:"), handle
        job_id, name, partition, state = tasks[handle.split(":")[2]]
        assert (name, partition, state) == (f"autoresearch-{pool}", pool, "COMPLETED")
        assert t.user_attrs["slurm_job_id"] == job_id
    assert len(tasks) == len(handles)  # one array task each


@pytest.mark.slurm
def test_node_failure_loses_nothing_and_counts_nothing_twice(tmp_path: Path, slurm_cluster: None) -> None:
    # Lost trials count as launched: 12 = the 3 lost + their 3 retries + 6 others.
    with HeldCampaign(tmp_path, "campaign.budget.max_experiments=12", "cluster.grace_seconds=300") as held:
        campaign, run_log = held.campaign, held.run_log
        # Both h100 slots and the h200 slot hold an experiment when the node's slurmd dies.
        wait_for(lambda: sum(experiment_runs(run_log).values()) >= 3, 120, "three experiments running")
        running = {_slurm_id(campaign, n) for n in range(5)} - {""}  # the first 5 are baselines
        assert len(running) == 3, running
        subprocess.run(["pkill", "-9", "-x", "slurmd"], check=True)
        try:

            def node_failed() -> bool:
                failed = {
                    row[0] for row in _sacct(_job_ids(campaign), "JobID,State") if row[1] == "NODE_FAIL"
                }
                return running <= failed

            wait_for(node_failed, 180, f"NODE_FAIL of {sorted(running)} in sacct")
            wait_for(lambda: _log_count(campaign, "Slurm NODE_FAIL") >= 3, 60, "the controller to notice")
        finally:
            up = subprocess.run(["bash", str(RESTART_SLURMD)], capture_output=True, text=True, timeout=180)
            assert up.returncode == 0, up.stdout + up.stderr
        held.finish(timeout=300)
    study = _assert_complete(campaign, budget=12)
    lost = [t for t in study.trials if "NODE_FAIL" in t.user_attrs.get("reason", "")]
    assert len(lost) == 3, [(t.number, t.user_attrs.get("reason")) for t in study.trials]
    for t in lost:
        assert t.state == TrialState.FAIL and t.user_attrs["status"] == "lost"
        retry = next(u for u in study.trials if u.user_attrs.get("retry_of") == t.number)
        assert retry.state == TrialState.COMPLETE, retry.user_attrs
    # Slurm requeued each failed task itself; that rerun was cancelled, never run.
    attempts = Counter(row[0] for row in _sacct(_job_ids(campaign), "JobID"))
    assert all(attempts[job] == 2 for job in running), attempts
    _assert_no_double_count(campaign, study, run_log)
    baselines = Counter(
        t.user_attrs["tier"]
        for t in study.trials
        if t.state == TrialState.COMPLETE and t.user_attrs["kind"] == "baseline"
    )
    assert baselines == {"screen": 3, "validate": 2}  # the screen tier's at the screening seed too


def _running_on(partition: str, job_ids: set[str]) -> set[str]:
    """The array tasks of `job_ids` that Slurm runs on `partition` now."""
    out = subprocess.run(
        ["squeue", "-h", "-p", partition, "-t", "RUNNING", "-o", "%i"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return {task for task in out.split() if task.split("_")[0] in job_ids}


def _running_experiments(campaign: Path) -> set[str]:
    """The Slurm jobs (array tasks, or workers) whose runner started an experiment not ended yet."""
    return {
        json.loads((exp / "started.json").read_text())["slurm_job_id"]
        for exp in (campaign / "experiments").glob("*")
        if (exp / "started.json").exists() and not (exp / "outcome.json").exists()
    }


def _set_preempt_mode(qos: str, mode: str) -> None:
    """How a QOS's jobs are preempted (REQUEUE as slurm.conf says, or CANCEL), as a site sets it."""
    subprocess.run(
        ["sacctmgr", "-i", "modify", "qos", qos, "set", f"PreemptMode={mode}"],
        check=True,
        capture_output=True,
    )


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("preempt_mode", "fleet_mode"),
    [("requeue", "array"), ("cancel", "array"), ("requeue", "workers"), ("cancel", "workers")],
)
def test_preempted_experiments_run_again_and_their_hours_count(
    tmp_path: Path, slurm_cluster: None, preempt_mode: str, fleet_mode: str
) -> None:
    """A job of a higher QOS takes every h100 GPU while both h100 slots run experiments: Slurm
    preempts them for real (requeued, or cancelled where the QOS says so). Each preempted run is
    lost to the cluster, not a crash of its train.py: run again once, no fix asked for, its hours
    up to the preemption counted, `status` saying so; the campaign then ends as usual. With
    max_retries=0 (as for an experiment whose retries went on failing nodes): a preemption
    costs no retry, so it is run again all the same."""
    urgent_hold = tmp_path / "urgent"
    urgent_hold.touch()
    _set_preempt_mode("normal", preempt_mode)
    overrides = ("campaign.budget.max_experiments=10", "campaign.max_retries=0")
    try:
        with HeldCampaign(tmp_path, *overrides, f"cluster.partitions.h100.mode={fleet_mode}") as held:
            campaign, run_log = held.campaign, held.run_log
            wait_for(
                lambda: len(_running_on("h100", _job_ids(campaign))) == 2, 120, "both h100 slots running"
            )
            victims = _running_on("h100", _job_ids(campaign))
            wait_for(
                lambda: victims <= _running_experiments(campaign), 120, f"experiments in {sorted(victims)}"
            )
            urgent = subprocess.run(
                ["sbatch", "--parsable", "--qos=high", "-p", "h100", "--gres=gpu:h100:8", "-o", "/dev/null"]
                + ["-D", str(tmp_path), "--wrap", f"while [ -e {urgent_hold} ]; do sleep 0.2; done"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            try:

                def preempted() -> set[str]:
                    return {r[0] for r in _sacct(_job_ids(campaign), "JobID,State") if r[1] == "PREEMPTED"}

                wait_for(lambda: victims <= preempted(), 60, f"PREEMPTED of {sorted(victims)} in sacct")
                wait_for(lambda: _log_count(campaign, "Slurm PREEMPTED") >= 2, 60, "the controller to notice")
                shown = subprocess.run(
                    [sys.executable, "-m", "autoresearch.status", str(campaign)],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert shown.returncode == 0, shown.stderr
                assert "2 lost" in shown.stdout, shown.stdout
                assert "Slurm PREEMPTED" in shown.stdout, shown.stdout
            finally:
                urgent_hold.unlink()
            wait_for(lambda: not _in_squeue({urgent}), 60, "the urgent job to end")
            held.finish(timeout=300)
    finally:
        _set_preempt_mode("normal", "cluster")  # back to slurm.conf's REQUEUE
    study = _assert_complete(campaign, budget=10)
    lost = [t for t in study.trials if "Slurm PREEMPTED" in t.user_attrs.get("reason", "")]
    assert len(lost) == 2, [(t.number, t.user_attrs.get("reason")) for t in study.trials]
    assert {t.user_attrs["slurm_job_id"] for t in lost} == victims  # (a worker's, or its array task's)
    for t in lost:
        assert t.state == TrialState.FAIL, t.user_attrs
        assert t.user_attrs["status"] == "lost", t.user_attrs
        assert experiment_ran(t), t.user_attrs  # its hours count (budgets, status, report)
        assert t.user_attrs["ended_at"] > t.user_attrs["started_at"], t.user_attrs
        retry = [u for u in study.trials if u.user_attrs.get("retry_of") == t.number]
        assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE, [u.user_attrs for u in retry]
        assert retry[0].user_attrs.get("retries", 0) == 0  # none of its retries spent
        assert not [u for u in study.trials if u.user_attrs.get("fix_of") == t.number]  # no fix asked for
    assert not [t.number for t in study.trials if t.user_attrs.get("status") in ("crash", "timeout")]
    assert len([t for t in study.trials if t.user_attrs.get("status") == "lost"]) == 2
    # The requeued reruns were cancelled before they ran: each workspace ran once.
    _assert_no_double_count(campaign, study, run_log)


@pytest.mark.slurm
def test_an_experiment_requeued_by_hand_runs_again_at_no_cost_to_its_retries(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """An administrator's `scontrol requeue` of a running experiment ends its attempt as REQUEUED
    in sacct: taken off its node from outside, as by a preemption, no fault of the run. It cost
    one of campaign.max_retries, so with none left the experiment was dropped; it now runs again."""
    overrides = ("campaign.budget.max_experiments=10", "campaign.max_retries=0")
    with HeldCampaign(tmp_path, *overrides) as held:
        campaign = held.campaign
        wait_for(lambda: _running_experiments(campaign), 120, "an experiment running")
        victim = sorted(_running_experiments(campaign))[0]
        subprocess.run(["scontrol", "requeue", victim], check=True, capture_output=True)
        wait_for(lambda: _log_count(campaign, "Slurm REQUEUED") >= 1, 60, "the controller to notice")
        attempts = [state for job, state in _sacct({victim.split("_")[0]}, "JobID,State") if job == victim]
        assert attempts[0] == "REQUEUED", attempts
        held.finish(timeout=300)
    study = _assert_complete(campaign, budget=10)
    lost = [t for t in study.trials if "Slurm REQUEUED" in t.user_attrs.get("reason", "")]
    assert [(t.user_attrs["status"], t.user_attrs["slurm_job_id"]) for t in lost] == [("lost", victim)]
    retry = [u for u in study.trials if u.user_attrs.get("retry_of") == lost[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE, [u.user_attrs for u in retry]
    assert "costs none of campaign.max_retries=0" in (campaign / "controller.log").read_text()
    _assert_no_double_count(campaign, study, held.run_log)


def _attempts(job: str) -> list[str]:
    """sacct's states of each attempt of a job (the sacct first on PATH)."""
    return (slurm_states.job_states({job}) or slurm_states.SacctAnswer({}, {}, {})).states.get(job, [])


@pytest.mark.slurm
def test_a_node_failure_whose_end_slurmdbd_has_not_written_waits_for_it_and_costs_a_retry(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node failure requeues a --requeue job as a person's `scontrol requeue` does; before
    slurmdbd writes the failed attempt's end, sacct shows it running while the rerun waits. That
    record was taken for a requeue, free, though a node failure (a train.py that exhausts its
    node's memory) costs a retry. It is now judged once the end is written (NODE_FAIL: a retry),
    and an end never written (lost with slurmctld) is a restart of no known cause (a retry too)."""
    for knob in ("STATE_POLL_SECONDS", "SETTLE_SECONDS"):  # every poll asks and judges
        monkeypatch.setattr(slurm_fleet, knob, 0.0)
    real_sacct, unwritten = shutil.which("sacct"), tmp_path / "end-unwritten"
    # While `unwritten` exists, sacct shows the failed attempt as slurmdbd did before its end came.
    shown = f'"{real_sacct}" "$@" | sed "s/|NODE_FAIL|/|RUNNING|/"'
    sacct = f'if [ -e "{unwritten}" ]; then {shown}; exit; fi; exec "{real_sacct}" "$@"'
    monkeypatch.setenv("PATH", f"{fake_commands(tmp_path / 'bin', sacct=sacct)}:{os.environ['PATH']}")
    sbatch = ["sbatch", "--parsable", "--requeue", "-p", "h100", "-o", "/dev/null", "--wrap", "sleep 600"]
    job = subprocess.run(sbatch, capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, deadline_s=600, campaign_dir=str(tmp_path))
    assert fleet.reattach(
        JobSpec(1, make_experiment(tmp_path, "", name="e1", trial=1), "h100"), f"slurm:h100:{job}"
    )
    node = socket.gethostname().split(".")[0]
    try:
        wait_for(lambda: queue_states({job}) == {job: ["RUNNING"]}, 60, "the job to run")
        unwritten.touch()
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", "reason=test"], check=True)
        wait_for(lambda: len(_attempts(job)) == 2, 60, "the failed attempt's rerun in sacct")
        assert _attempts(job)[0] == "RUNNING"  # (as slurmdbd shows it until the end is written)
        for _ in range(3):
            assert fleet.poll() == []  # how the attempt ended is not written yet: not over
        unwritten.unlink()
        finished: list[Finished] = []
        wait_for(lambda: finished.extend(fleet.poll()) or finished, 60, "the written end to be judged")
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False)
        subprocess.run(["scancel", job], check=False)
    assert [(f.trial, f.outcome["status"], f.outcome["reason"]) for f in finished] == [
        (1, "lost", "Slurm NODE_FAIL")
    ]
    assert "taken_off" not in finished[0].outcome  # (a retry, not free)
    # An end slurmdbd never writes (lost with slurmctld: a runaway job) is waited for UNKNOWN_SECONDS.
    unwritten.touch()
    monkeypatch.setattr(slurm_fleet, "UNKNOWN_SECONDS", 0.0)
    again = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, deadline_s=600, campaign_dir=str(tmp_path))
    assert again.reattach(
        JobSpec(2, make_experiment(tmp_path, "", name="e2", trial=2), "h100"), f"slurm:h100:{job}"
    )
    [ended] = again.poll()
    assert (
        ended.outcome["reason"] == "Slurm restarted it (no record says why)"
        and "taken_off" not in ended.outcome
    )


@pytest.mark.slurm
@pytest.mark.parametrize("controller_down", [False, True], ids=["controller-up", "controller-down"])
def test_scancel_of_an_experiment_is_recorded_and_the_campaign_goes_on(
    tmp_path: Path, slurm_cluster: None, controller_down: bool
) -> None:
    """Also when the controller is dead at the scancel: the rerun one asks Slurm what ended the
    interrupted run instead of taking it for a lost job to run again."""
    with HeldCampaign(tmp_path, "campaign.budget.max_experiments=6") as held:
        campaign, run_log = held.campaign, held.run_log
        wait_for(lambda: _slurm_id(campaign, 0) and experiment_runs(run_log), 120, "trial 0 running")
        victim = _slurm_id(campaign, 0)
        if controller_down:
            held.controller.send_signal(signal.SIGKILL)
            held.controller.wait(timeout=30)
        subprocess.run(["scancel", victim], check=True)

        def cancelled() -> bool:
            return any(r[1].startswith("CANCELLED") for r in _sacct({victim.split("_")[0]}, "JobID,State"))

        wait_for(cancelled, 60, f"{victim} CANCELLED in sacct")
        if controller_down:
            outcome = campaign / "experiments" / "00000" / "outcome.json"
            wait_for(outcome.exists, 60, "the interrupted runner's outcome")
            held.start()
        held.finish(timeout=240)
    study = _assert_complete(campaign, budget=6)
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["status"] == "cancelled", trial.user_attrs
    assert "CANCELLED" in trial.user_attrs["reason"], trial.user_attrs["reason"]
    assert trial.user_attrs["slurm_job_id"] == victim
    assert not [t for t in study.trials if t.user_attrs.get("retry_of") == 0]  # a person's choice stands
    # but not a baseline's, which every change is judged by: it is queued again
    assert trial.user_attrs["kind"] == "baseline"
    again = [
        t
        for t in study.trials
        if t.number != 0
        and t.user_attrs.get("kind") == "baseline"
        and (t.user_attrs["tier"], t.user_attrs["seed"])
        == (trial.user_attrs["tier"], trial.user_attrs["seed"])
    ]
    assert len(again) == 1 and again[0].state == TrialState.COMPLETE, [t.number for t in again]
    others = [t for t in study.trials if "exp_dir" in t.user_attrs and t.number != 0]
    assert all(t.state == TrialState.COMPLETE for t in others)
    _assert_no_double_count(campaign, study, run_log)


@pytest.mark.slurm
def test_scancel_of_one_pending_array_task_is_recorded_as_cancelled(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """Slurm 22.05 keeps no record of an array task cancelled while pending: squeue drops it, and
    sacct's record of the array's pending tasks still names it. It waited as pending while its
    array did, then was lost after minutes without a record and run again as a new trial; a
    person's cancel now stands, said so, while the rest of the array waits on."""
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, 60, str(tmp_path / "toy"))
    exps = [make_experiment(tmp_path, ENV_DUMP, name=f"e{t}", trial=t) for t in (1, 2)]
    node = socket.gethostname().split(".")[0]
    finished: list[Finished] = []
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=drain", "reason=test"], check=True)
    try:  # the node drained, both tasks wait pending
        handles = fleet.submit([JobSpec(t, exp, "h100") for t, exp in enumerate(exps, start=1)])
        cancelled = handles[2].rpartition(":")[2]
        subprocess.run(["scancel", cancelled], check=True)
        wait_for(lambda: _poll_asking_slurm(fleet, finished), 60, "the cancel to be recorded", every=0.5)
        assert [(f.trial, f.outcome["status"]) for f in finished] == [(2, "cancelled")], finished
        assert f"{cancelled} left Slurm's queue before it started" in finished[0].outcome["reason"]
        finished.clear()
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=True)
    try:
        wait_for(lambda: _poll_asking_slurm(fleet, finished), 120, "the other task to run", every=0.2)
    finally:
        fleet.shutdown(cancel=True)
    assert [(f.trial, f.outcome["status"]) for f in finished] == [(1, "ok")], finished
    assert not (exps[1] / "started.json").exists() and (exps[1] / "abandoned.json").exists()


@pytest.mark.slurm
def test_a_pending_task_scancelled_alone_while_no_controller_watched_is_recorded_as_cancelled(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """Slurm 22.05 keeps no record of a pending array task scancelled on its own, and the controller
    told the cancel only while another task of its array was in squeue. One that was down then
    found the array gone from squeue when it started again, and the task was lost minutes later
    and run again as a new trial. sacct's records of the array's other tasks, and none of this
    one, tell the cancel too."""
    exps = [make_experiment(tmp_path, ENV_DUMP, name=f"e{t}", trial=t) for t in (1, 2)]
    jobs = [JobSpec(t, exp, "h100") for t, exp in enumerate(exps, start=1)]
    node = socket.gethostname().split(".")[0]
    first = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, 60, str(tmp_path / "toy"))
    again = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, 60, str(tmp_path / "toy"))
    finished: list[Finished] = []
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=drain", "reason=test"], check=True)
    try:  # the node drained, both tasks wait pending, and the first controller polls no more
        handles = first.submit(jobs)
        cancelled = handles[2].rpartition(":")[2]
        subprocess.run(["scancel", cancelled], check=True)
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=True)
    try:
        array = cancelled.split("_")[0]
        wait_for(lambda: queue_states({array}) == {}, 240, f"array {array} to run and leave squeue", every=1)
        assert all(again.reattach(job, handles[job.trial]) for job in jobs)
        wait_for(lambda: len(_poll_asking_slurm(again, finished)) == 2, 60, "both trials judged", every=0.5)
    finally:
        for fleet in (first, again):
            fleet.shutdown(cancel=True)
    assert sorted((f.trial, f.outcome["status"]) for f in finished) == [(1, "ok"), (2, "cancelled")], finished
    reason = next(f.outcome["reason"] for f in finished if f.trial == 2)
    assert f"{cancelled} left Slurm's queue before it started" in reason
    assert not (exps[1] / "started.json").exists() and (exps[1] / "abandoned.json").exists()


@pytest.mark.slurm
def test_a_job_that_fails_before_its_runner_starts_is_lost_not_a_crash(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """The campaign's submitit folder deleted while a job waits pending: the job fails as it
    starts, before its runner (it reads its call from there). That was recorded as the
    experiment's crash (`Slurm FAILED without a result`), never run again; it is now lost, and
    queued again."""
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, 60, str(tmp_path / "toy"))
    exp = make_experiment(tmp_path, ENV_DUMP, trial=1)
    node = socket.gethostname().split(".")[0]
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=drain", "reason=test"], check=True)
    try:
        job = fleet.submit([JobSpec(1, exp, "h100")])[1].rpartition(":")[2]
        shutil.rmtree(fleet.folder)
    finally:
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], check=True)
    finished: list[Finished] = []
    try:
        wait_for(lambda: finished.extend(fleet.poll()) or finished, 90, "the job to end", every=0.2)
    finally:
        fleet.shutdown(cancel=True)
    assert [(f.trial, f.outcome["status"], f.outcome["reason"]) for f in finished] == [
        (
            1,
            "lost",
            f"Slurm FAILED before its runner started: the job could not start it (its log: submitit/{job}/)",
        )
    ]
    assert not (exp / "started.json").exists() and (exp / "abandoned.json").exists()


def _pgrep(name: str) -> str:
    return subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.strip()


def _stop_accounting() -> None:
    """Stop the local cluster's slurmdbd, as an outage of a site's accounting database would:
    sacct then fails at once, while slurmctld still takes and runs jobs."""
    subprocess.run(["pkill", "-TERM", "-x", "slurmdbd"], check=False)
    wait_for(lambda: _pgrep("slurmdbd") == "", 30, "slurmdbd to stop")


@pytest.mark.slurm
def test_with_accounting_down_squeue_says_how_jobs_stand_and_the_outage_is_said_once(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """While sacct fails, slurmctld's squeue stands in: a job cancelled before its runner started
    (so no file will ever say it ended) is judged at once, and one slurmctld no longer holds waits
    for sacct, lost once sacct answers without it; the outage is said once, and its end."""
    for knob in ("STATE_POLL_SECONDS", "SETTLE_SECONDS", "UNKNOWN_SECONDS"):  # every poll asks and judges
        monkeypatch.setattr(slurm_fleet, knob, 0.0)
    caplog.set_level(logging.INFO, logger="autoresearch")
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, deadline_s=60, campaign_dir=str(tmp_path))
    sbatch = ["sbatch", "--parsable", "--hold", "-p", "h100", "-o", "/dev/null", "--wrap", "true"]
    held = subprocess.run(sbatch, capture_output=True, text=True, check=True).stdout.strip()  # never starts
    gone = "67000000"  # a job id slurmctld does not hold (its largest is 67,108,863)
    for trial, job in ((1, held), (2, gone)):
        exp = make_experiment(tmp_path, "", name=f"e{trial}", trial=trial)
        assert fleet.reattach(JobSpec(trial, exp, "h100"), f"slurm:h100:{job}")
    finished: dict[int, dict[str, object]] = {}

    def judged(trial: int) -> bool:
        finished.update({f.trial: f.outcome for f in fleet.poll()})
        return trial in finished

    def said(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records)

    try:
        _stop_accounting()
        assert fleet._job_states([held]) == {held: ["PENDING"]}  # squeue's word, sacct failing
        assert queue_states({gone}) == {}  # asked alone, squeue fails on it: no record, not no answer
        for _ in range(3):  # slurmctld does not hold it: only sacct can say how it ended
            assert not judged(2)
        assert 1 not in finished  # still pending: not over
        subprocess.run(["scancel", held], check=True)
        wait_for(lambda: judged(1), 30, "the cancelled job to be judged")
        assert 2 not in finished
        assert said("sacct failed") == 1 and said("asking squeue instead") == 1
        assert said("sacct answers again") == 0
        # A resumed controller's worker that ended long ago: squeue leaves it out, so it is replaced;
        # the new workers, sent since squeue's answer, are not taken for gone with it.
        monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 3600.0)  # the answer is kept an hour
        pool = SlurmFleet(
            compose_toy(tmp_path, SLURM, "cluster.partitions.h100.mode=workers").cluster,
            deadline_s=60,
            campaign_dir=str(tmp_path / "workers"),
        )
        pool._workers["h100"] = [gone]
        try:
            pool.submit(
                [JobSpec(i, make_experiment(tmp_path, "", name=f"e{i}", trial=i), "h100") for i in (3, 4)]
            )
            workers = pool._workers["h100"]
            assert gone not in workers and len(workers) == pool.pools["h100"].slots
            pool.submit([JobSpec(5, make_experiment(tmp_path, "", name="e5", trial=5), "h100")])
            assert pool._workers["h100"] == workers  # none sent again
        finally:
            pool.shutdown(cancel=True)
            monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)
    finally:
        subprocess.run(["scancel", held], capture_output=True, check=False)
        subprocess.run(["bash", str(SLURM_UP)], check=True, capture_output=True)
    wait_for(lambda: judged(2), 60, "sacct, answering again, to have no record of the job")
    assert finished[1]["status"] == "cancelled" and "CANCELLED" in str(finished[1]["reason"])
    assert finished[2]["status"] == "lost" and f"no record of {gone}" in str(finished[2]["reason"])
    assert all((tmp_path / f"e{trial}" / "abandoned.json").exists() for trial in (1, 2))
    wait_for(lambda: fleet._job_states([held]) and said("sacct answers again"), 60, "sacct to answer")
    assert said("sacct failed") == 2 and said("sacct answers again") == 1  # once per fleet; one asked again


def _ended_job_and_sacct_failing_while(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A file while which sacct fails (slurmdbd's error), and a real job that ends at once
    (`sbatch --wrap true`); every poll asks Slurm and judges."""
    for knob in ("STATE_POLL_SECONDS", "SETTLE_SECONDS", "UNKNOWN_SECONDS"):  # every poll asks and judges
        monkeypatch.setattr(slurm_fleet, knob, 0.0)
    down = tmp_path / "sacct-down"
    failing = "echo 'sacct: error: Problem talking to the database: Connection refused' >&2; exit 1"
    sacct = f'if [ -e "{down}" ]; then {failing}; fi; exec "{shutil.which("sacct")}" "$@"'
    monkeypatch.setenv("PATH", f"{fake_commands(tmp_path / 'bin', sacct=sacct)}:{os.environ['PATH']}")
    sbatch = ["sbatch", "--parsable", "-p", "h100", "-o", "/dev/null", "--wrap", "true"]
    ended = subprocess.run(sbatch, capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    return down, ended


@pytest.mark.slurm
def test_a_job_gone_from_squeue_while_sacct_fails_waits_for_sacct_to_say_how_it_ended(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that ended without a result and left squeue (MinJobAge) while sacct failed was lost
    and re-queued after UNKNOWN_SECONDS, though it had finished. It now waits for sacct, which
    says how it ended (here COMPLETED without a result, lost for that, not for Slurm having no record)."""
    down, ended = _ended_job_and_sacct_failing_while(tmp_path, monkeypatch)
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, deadline_s=60, campaign_dir=str(tmp_path))
    assert fleet.reattach(
        JobSpec(1, make_experiment(tmp_path, "", name="e1", trial=1), "h100"), f"slurm:h100:{ended}"
    )
    down.touch()
    wait_for(lambda: queue_states({ended}) == {}, 180, "slurmctld to let go of the ended job (MinJobAge)")
    for _ in range(3):
        assert fleet.poll() == []  # squeue has no record, sacct fails: how it ended is unknown yet
    down.unlink()
    finished: list[Finished] = []
    wait_for(lambda: finished.extend(fleet.poll()) or finished, 60, "sacct to say how the job ended")
    assert [(f.trial, f.outcome["status"], f.outcome["reason"]) for f in finished] == [
        (1, "lost", slurm_states.COMPLETED_WITHOUT_A_RESULT)
    ]


@pytest.mark.slurm
def test_a_job_gone_before_its_runner_began_while_sacct_fails_is_lost_at_a_bound_said_at_once(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A pending job cancelled while slurmdbd was down, let go of by slurmctld (MinJobAge) before a
    controller resumed, was waited on for as long as sacct failed, its slot held, without a word.
    Its runner never began, so nothing of it ran: the wait is now said at once with its bound, and
    at the bound the run is lost (queued again). A job whose runner began still waits for sacct."""
    for knob in ("STATE_POLL_SECONDS", "SETTLE_SECONDS"):  # every poll asks and judges
        monkeypatch.setattr(slurm_fleet, knob, 0.0)
    monkeypatch.setattr(slurm_fleet, "UNSTARTED_GONE_SECONDS", 2.0)
    caplog.set_level(logging.INFO, logger="autoresearch")
    sbatch = ["sbatch", "--parsable", "-p", "h100", "-o", "/dev/null", "--wrap", "true"]
    held = subprocess.run([*sbatch, "--hold"], capture_output=True, text=True, check=True).stdout.strip()
    ran = subprocess.run(sbatch, capture_output=True, text=True, check=True).stdout.strip()
    experiments = {i: make_experiment(tmp_path, "", name=f"e{i}", trial=i) for i in (1, 2)}
    (experiments[2] / "started.json").write_text(json.dumps({"started_at": time.time(), "slurm_job_id": ran}))
    finished: dict[int, dict[str, object]] = {}
    try:
        _stop_accounting()
        subprocess.run(["scancel", held], check=True)
        wait_for(lambda: queue_states({held, ran}) == {}, 180, "slurmctld to let go of both jobs (MinJobAge)")
        fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, deadline_s=60, campaign_dir=str(tmp_path))
        for trial, job in ((1, held), (2, ran)):
            assert fleet.reattach(JobSpec(trial, experiments[trial], "h100"), f"slurm:h100:{job}")

        def judged() -> bool:
            finished.update({f.trial: f.outcome for f in fleet.poll()})
            return 1 in finished

        assert not judged()
        said_at_once = [
            r.getMessage() for r in caplog.records if "before its runner started" in r.getMessage()
        ]
        wait_for(judged, 30, "the job that never began to be lost at the bound")
        for _ in range(3):
            judged()  # (trial 2's runner began: only sacct can say how it ended)
    finally:
        subprocess.run(["bash", str(SLURM_UP)], check=True, capture_output=True)
    assert said_at_once == [
        f"trial 1: Slurm job {held} left the queue before its runner started, and sacct fails: how it "
        "ended is sacct's to say; the trial waits for it 0 min at most, then is lost and queued again"
    ]
    assert finished[1]["status"] == "lost" and str(finished[1]["reason"]).startswith(
        f"{held} left Slurm's queue before its runner started, and sacct failed for "
    )
    assert (experiments[1] / "abandoned.json").exists() and 2 not in finished


@pytest.mark.slurm
def test_a_task_that_began_and_died_through_a_slurmdbd_backlog_is_judged_by_how_squeue_says_it_ended(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sacct answering from before a task started (a slurmdbd backlog: it has not heard of the
    start) lists it pending, and that record stood over squeue's that the task had ended: the task
    waited until slurmctld let go of it, then was lost, or, its runner not begun, taken for a task
    cancelled while pending. squeue's newer word now stands: its runner killed, it is a crash."""
    for knob in ("STATE_POLL_SECONDS", "SETTLE_SECONDS"):  # every poll asks and judges
        monkeypatch.setattr(slurm_fleet, knob, 0.0)
    backlog = tmp_path / "sacct-before-the-start"  # sacct's answer from before the task began
    sacct = f'if [ -s "{backlog}" ]; then cat "{backlog}"; exit 0; fi; exec "{shutil.which("sacct")}" "$@"'
    monkeypatch.setenv("PATH", f"{fake_commands(tmp_path / 'bin', sacct=sacct)}:{os.environ['PATH']}")
    pending = "+cluster.partitions.h100.extra_sbatch.begin=now+1hour"  # sent, it stays pending
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM, pending).cluster, 60, str(tmp_path))
    dies = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"  # its runner, and the job with it
    job = JobSpec(1, make_experiment(tmp_path, dies, name="e1", trial=1), "h100")
    task = fleet.submit([job])[1].rpartition(":")[2]
    array = task.split("_")[0]
    asked = ["sacct", "-n", "-P", "-X", "-D", "-o", "JobID,State,Submit,Suspended,ExitCode", "-j", array]
    finished: list[Finished] = []
    try:
        wait_for(lambda: "PENDING" in _run_out(asked), 30, "sacct to record the pending task")
        backlog.write_text(_run_out(asked))
        subprocess.run(["scontrol", "update", f"JobId={array}", "StartTime=now"], check=True)
        wait_for(lambda: finished.extend(fleet.poll()) or finished, 50, "the task's end (within MinJobAge)")
    finally:
        fleet.shutdown(cancel=True)
    assert (job.exp_dir / "started.json").exists()
    assert [(f.trial, f.outcome["status"], f.outcome["reason"]) for f in finished] == [
        (1, "crash", "Slurm FAILED without a result")
    ]


def _run_out(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


@pytest.mark.slurm
def test_a_job_sent_after_an_outage_is_adopted_by_a_resumed_controller(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An experiment held while slurmctld was out of reach has a handle with no job id. Once sent,
    its id is in sent.json, so a controller that resumes while the job is still pending adopts it
    instead of giving it up and queueing the experiment again."""
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (0.0,))  # sbatch again at the next poll
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every look
    pending = "+cluster.partitions.h100.extra_sbatch.begin=now+1hour"  # sent, it stays pending
    cluster = compose_toy(tmp_path, SLURM, pending).cluster
    job = JobSpec(1, make_experiment(tmp_path, "", name="e1", trial=1), "h100")
    fleet = SlurmFleet(cluster, deadline_s=60, campaign_dir=str(tmp_path))
    subprocess.run(["pkill", "-TERM", "-x", "slurmctld"], check=False)
    try:
        wait_for(lambda: _pgrep("slurmctld") == "", 60, "slurmctld to stop")
        handle = fleet.submit([job])[1]
    finally:
        subprocess.run(["bash", str(SLURM_UP)], check=True, capture_output=True)
    assert handle == "slurm:h100:"  # held: no job id for the study
    sent = job.exp_dir / "sent.json"
    try:
        wait_for(lambda: fleet.poll() == [] and sent.exists(), 60, "the held job to be sent")
        slurm_id = json.loads(sent.read_text())["slurm_job_id"]
        resumed = SlurmFleet(cluster, deadline_s=60, campaign_dir=str(tmp_path))
        assert resumed.reattach(job, handle)
        # sacct lags sbatch: until it has the job, the job has no record
        wait_for(lambda: resumed._job_states([slurm_id])[slurm_id] == ["PENDING"], 60, "the job in sacct")
        assert not (job.exp_dir / "abandoned.json").exists()
        assert resumed.poll() == []  # pending: nothing to report
    finally:
        fleet.shutdown(cancel=True)


@pytest.mark.slurm
def test_with_slurm_accounting_down_the_campaign_goes_on_by_its_result_files(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """sacct failing at every poll is said once; experiments are judged by their result files
    meanwhile; the controller says when sacct answers again."""
    with HeldCampaign(tmp_path, "campaign.budget.max_experiments=10") as held:
        campaign = held.campaign
        try:
            _stop_accounting()
            wait_for(
                lambda: _log_count(campaign, "sacct failed"), 120, "the controller's word that sacct fails"
            )
            held.hold.unlink()  # results land while accounting is down
            results = campaign / "results.tsv"
            wait_for(lambda: results.exists() and len(read_tsv(results)) >= 3, 120, "results in the outage")
            held.hold.touch()
            assert subprocess.run(["sacct", "-n", "-X"], capture_output=True).returncode != 0  # still down
        finally:
            subprocess.run(["bash", str(SLURM_UP)], check=True, capture_output=True)
        wait_for(
            lambda: _log_count(campaign, "sacct answers again"),
            120,
            "the controller's word that sacct is back",
        )
        held.finish(timeout=240)
    study = _assert_complete(campaign, budget=10)
    assert _log_count(campaign, "sacct failed") == 1
    assert "Problem talking to the database" in (campaign / "controller.log").read_text()  # sacct's own word
    # Every experiment finished, or, where bringing Slurm back up re-queued its running job (Slurm
    # REQUEUED), was lost to the cluster and retried, and its retry finished.
    retried = {t.user_attrs.get("retry_of"): t for t in study.trials if "retry_of" in t.user_attrs}
    for t in study.trials:
        if "exp_dir" in t.user_attrs and t.state != TrialState.COMPLETE:
            assert t.user_attrs.get("status") == "lost" and t.number in retried, t.user_attrs
            assert retried[t.number].state == TrialState.COMPLETE, retried[t.number].user_attrs
    _assert_no_double_count(campaign, study, held.run_log)


@pytest.mark.slurm
@pytest.mark.parametrize("mode", ["array", "workers"])
def test_experiments_wait_while_slurms_controller_is_out_of_reach(
    tmp_path: Path, slurm_cluster: None, mode: str
) -> None:
    """slurmctld stopped, as in a site's maintenance window: sbatch fails after its own retries,
    and the experiments it could not send keep their trials until slurmctld is back. (Stopped
    before the campaign starts: a job that ends while slurmctld is down drains the local node.)"""
    subprocess.run(["pkill", "-TERM", "-x", "slurmctld"], check=False)
    try:
        wait_for(lambda: _pgrep("slurmctld") == "", 60, "slurmctld to stop")
        overrides = ("campaign.budget.max_experiments=6", f"cluster.partitions.h100.mode={mode}")
        with HeldCampaign(tmp_path, *overrides) as held:
            wait_for(
                lambda: _log_count(held.campaign, "Unable to contact slurm controller"), 180, "sbatch to fail"
            )
            subprocess.run(["bash", str(SLURM_UP)], check=True, capture_output=True)
            wait_for(
                lambda: _log_count(held.campaign, "reaches Slurm's controller again"), 180, "sbatch again"
            )
            held.finish(timeout=240)
    finally:
        subprocess.run(["bash", str(SLURM_UP)], check=True, capture_output=True)  # (idempotent)
    campaign = held.campaign
    study = _assert_complete(campaign, budget=6)
    assert _log_count(campaign, "Unable to contact slurm controller") == 1  # said once
    # nothing lost, nor a launch of the budget spent, on the outage
    assert not [t.user_attrs for t in study.trials if t.user_attrs.get("status") == "lost"]
    assert all(t.state == TrialState.COMPLETE for t in study.trials if "exp_dir" in t.user_attrs)
    _assert_no_double_count(campaign, study, held.run_log)


@pytest.mark.slurm
def test_controller_killed_then_rerun_reattaches(tmp_path: Path, slurm_cluster: None) -> None:
    with HeldCampaign(tmp_path, "campaign.budget.max_experiments=8") as held:
        campaign, run_log = held.campaign, held.run_log
        wait_for(lambda: sum(experiment_runs(run_log).values()) >= 3, 120, "three experiments running")
        held.controller.send_signal(signal.SIGKILL)
        held.controller.wait(timeout=30)
        before = load(campaign)
        handles = {
            t.number: t.user_attrs["job"]
            for t in before.trials
            if t.state == TrialState.RUNNING and t.user_attrs.get("job")
        }
        assert len(handles) >= 3, handles
        held.start()
        wait_for(lambda: _log_count(campaign, "re-attached") >= len(handles), 60, "re-attaching")
        held.finish(timeout=240)
    study = _assert_complete(campaign, budget=8)
    for number, handle in handles.items():
        t = study.trials[number]
        assert t.state == TrialState.COMPLETE, (number, t.user_attrs)
        assert t.user_attrs["job"] == handle
        assert t.user_attrs["slurm_job_id"] == handle.split(":")[2]
    for t in study.trials:  # only a trial claimed but not yet submitted at the kill may be lost
        if t.user_attrs.get("status") == "lost":
            assert "before the experiment started" in t.user_attrs["reason"], t.user_attrs
    _assert_no_double_count(campaign, study, run_log)


@pytest.mark.slurm
def test_a_silent_hang_is_ended_at_its_deadline(tmp_path: Path, slurm_cluster: None) -> None:
    # time_budget 1 s and grace 8 s: the runner's deadline is 2 x 1 + 8 = 10 s, and the controller's
    # backstop a grace later, at least 30 s (40 s), so a loaded machine still sees the runner's kill first.
    proc = run_campaign(tmp_path, "+campaign=toy_hang", SLURM, "cluster.grace_seconds=8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    campaign = tmp_path / "toy_hang"
    study = _assert_complete(campaign, budget=4)
    hung = [t for t in study.trials if json.loads(t.user_attrs.get("knobs", "{}")).get("HANG") is True]
    assert len(hung) == 1, [t.user_attrs.get("description") for t in study.trials]
    for t in hung:
        assert t.state == TrialState.FAIL, t.user_attrs
        assert re.search(r"timeout: killed at the 10 s deadline", t.user_attrs["reason"]), t.user_attrs
        run_log = (campaign / t.user_attrs["exp_dir"] / "run.log").read_text()
        assert run_log == "", run_log  # it printed nothing
        started = json.loads((campaign / t.user_attrs["exp_dir"] / "started.json").read_text())
        outcome = json.loads((campaign / t.user_attrs["exp_dir"] / "outcome.json").read_text())
        assert outcome["ended_at"] - started["started_at"] >= 10  # not before its deadline
    assert not [t for t in study.trials if t.user_attrs.get("status") == "lost"]


@pytest.mark.slurm
def test_worker_mode_submits_workers_once_and_runs_every_experiment_once(
    tmp_path: Path, slurm_cluster: None
) -> None:
    run_log = tmp_path / "runs.log"
    proc = run_campaign(
        tmp_path,
        SLURM,
        "cluster.partitions.h100.mode=workers",
        "campaign.budget.max_experiments=10",
        env={"TOY_RUN_LOG": str(run_log)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    campaign = tmp_path / "toy"
    study = _assert_complete(campaign, budget=10)
    launched = [t for t in study.trials if "exp_dir" in t.user_attrs]
    assert all(t.state == TrialState.COMPLETE for t in launched)
    _assert_no_double_count(campaign, study, run_log)
    screen = [t for t in launched if t.user_attrs["pool"] == "h100"]
    assert all(t.user_attrs["job"] == "queue:h100" for t in screen)
    # Two worker jobs (the h100 slots) ran every screen experiment; h200 still went as arrays.
    submitted = {p.name for p in (campaign / "queue" / "h100" / "submitted").iterdir()}
    arrays = {t.user_attrs["job"].split(":")[2] for t in launched if t.user_attrs["pool"] == "h200"}
    rows = _sacct_settled(campaign, submitted | arrays)
    workers = {row[0] for row in rows if row[1] == "autoresearch-h100"}
    assert workers == submitted and len(workers) == 2, rows
    assert len(screen) > len(workers)
    assert {t.user_attrs["slurm_job_id"] for t in screen} <= workers
    assert {row[3] for row in rows} == {"COMPLETED"}, rows
    assert (campaign / "queue" / "h100" / "STOP").exists()


@pytest.mark.slurm
def test_workers_are_sent_for_queued_experiments_only_and_pending_ones_cancelled_at_the_end(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """One experiment queued: one worker, not `slots`. At the end, a worker pending again (it
    started once, then requeued itself near its time limit) is cancelled as one never started."""
    fleet = _pending_workers(tmp_path, slots=3)
    try:
        fleet.submit([JobSpec(1, make_experiment(tmp_path, "", name="e1", trial=1), "h100")])
        assert len(fleet._workers["h100"]) == 1
        fleet.submit([JobSpec(2, make_experiment(tmp_path, "", name="e2", trial=2), "h100")])
        workers = fleet._workers["h100"]
        assert len(workers) == 2  # the first, pending, takes one of the two
        fleet.queues["h100"].register(workers[0])  # as a worker that started, then requeued itself
        fleet.shutdown(cancel=False)
        wait_for(
            lambda: not _in_squeue(set(workers)),
            60,
            f"the pending workers cancelled: {_in_squeue(set(workers))}",
        )
    finally:
        fleet.shutdown(cancel=True)


@pytest.mark.slurm
def test_a_refused_worker_leaves_the_queue_to_the_workers_alive_and_is_tried_again_later(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sbatch refusing one more worker (a QOS's cap on a user's jobs) loses nothing while a worker
    lives to take the queue, and is not asked again at every poll; with none left, the queued
    experiments are lost (re-queued) as before."""
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every poll
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (3600.0,))  # no retry within the test
    fleet = _pending_workers(tmp_path, slots=2)
    jobs = [JobSpec(i, make_experiment(tmp_path, "", name=f"e{i}", trial=i), "h100") for i in (1, 2)]
    try:
        fleet.submit(jobs)
        first, second = fleet._workers["h100"]
        wait_for(lambda: all(fleet._job_states([first, second]).values()), 60, "Slurm to list the workers")
        executor = fleet.executors["h100"]
        executor.update_parameters(slurm_partition="nosuch")  # sbatch refuses from now on
        sent = executor.map_array
        tries: list[int] = []
        monkeypatch.setattr(executor, "map_array", lambda *a: tries.append(1) or sent(*a))
        subprocess.run(["scancel", first], check=True)
        finished: list = []

        def polled(until: object) -> bool:
            finished.extend(fleet.poll())
            return bool(until())

        wait_for(lambda: polled(lambda: tries), 60, "a worker to replace the cancelled one")
        for _ in range(3):
            polled(lambda: True)
        assert finished == [] and len(tries) == 1 and fleet._workers["h100"] == [second]
        subprocess.run(["scancel", second], check=True)
        wait_for(lambda: polled(lambda: len(finished) == 2), 60, "the queue to be lost with no worker left")
    finally:
        fleet.shutdown(cancel=True)
    assert all(f.outcome["status"] == "lost" and "sbatch refused" in f.outcome["reason"] for f in finished)
    assert not any(fleet.queues["h100"].is_queued(j.trial) for j in jobs)


@pytest.mark.slurm
def test_a_job_is_lost_only_once_slurm_answers_and_neither_sacct_nor_squeue_has_it(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sacct answering without new jobs (a slurmdbd backlog) loses none that squeue holds; while
    neither answers (slurmctld and slurmdbd down) the clock of a job with no record stops."""
    for knob in ("STATE_POLL_SECONDS", "UNKNOWN_SECONDS"):  # every poll asks and judges
        monkeypatch.setattr(slurm_fleet, knob, 0.0)
    down = tmp_path / "down"
    fakes = fake_commands(
        tmp_path / "bin",
        sacct=f"if [ -e {down} ]; then echo 'sacct: error: Problem talking to the database' >&2; exit 1; fi",
        squeue=f'if [ -e {down} ]; then exit 1; fi; exec {shutil.which("squeue")} "$@"',
    )
    sbatch = ["sbatch", "--parsable", "--hold", "-p", "h100", "-o", "/dev/null", "--wrap", "true"]
    held = subprocess.run(sbatch, capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    monkeypatch.setenv("PATH", f"{fakes}:{os.environ['PATH']}")
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, deadline_s=60, campaign_dir=str(tmp_path))
    gone = "67000000"  # a job id slurmctld does not hold
    for trial, job in ((1, held), (2, gone)):
        assert fleet.reattach(
            JobSpec(trial, make_experiment(tmp_path, "", name=f"e{trial}", trial=trial), "h100"),
            f"slurm:h100:{job}",
        )
    finished: dict[int, dict[str, object]] = {}

    def poll() -> dict[int, dict[str, object]]:
        finished.update({f.trial: f.outcome for f in fleet.poll()})
        return finished

    try:
        assert poll() == {}  # sacct has no record of either: the clock starts
        down.touch()
        for _ in range(3):
            assert poll() == {}  # nobody answers: the clock stands
        down.unlink()
        wait_for(lambda: 2 in poll(), 30, "the job no one holds to be lost")
        for _ in range(3):
            assert 1 not in poll()  # squeue holds it, pending
    finally:
        subprocess.run(["scancel", held], capture_output=True, check=False)
    assert finished[2]["status"] == "lost" and f"no record of {gone}" in str(finished[2]["reason"])


@pytest.mark.slurm
def test_a_warning_of_the_starts_checks_reaches_controller_log_and_the_checks_plan(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """A start-time warning (here: a partition of a list whose QOS MaxWall is below the time
    limit) was logged before logging was set up, so it reached stderr only: a controller run as an
    sbatch job, read through controller.log, never showed it, and `autoresearch check` printed it
    on stderr outside its plan."""
    listed = "cluster.partitions.h200.partition='h100,h200'"
    subprocess.run(["scontrol", "update", "PartitionName=h200", "QOS=low"], check=True)
    try:
        _sacctmgr("qos", "low", "set", "MaxWall=20")
        command = campaign_command(tmp_path, SLURM, listed, "campaign.budget.max_experiments=6")
        checked = subprocess.run(
            [*command[:3], "check", *command[3:]], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        proc = run_campaign(tmp_path, SLURM, listed, "campaign.budget.max_experiments=6")
    finally:
        subprocess.run(["scontrol", "update", "PartitionName=h200", "QOS="], check=True)
        _sacctmgr("qos", "low", "set", "MaxWall=-1")
    warning = (
        "cluster.partitions.h200.time_limit_min=30: above the MaxWall of the partition's own QOS low "
        "00:20:00 in partition h200 (sacctmgr): its jobs run only in partition h100"
    )
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    assert re.findall(r"^warning +(.+)$", checked.stdout, re.M) == [warning]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log_lines = (tmp_path / "toy" / "controller.log").read_text().splitlines()
    assert [line.split(" WARNING ", 1)[1] for line in log_lines if " WARNING " in line] == [warning]
    assert proc.stderr == "" and proc.stdout.count(warning) == 1  # said once, on the terminal too


@pytest.mark.slurm
def test_a_worker_gone_from_squeue_while_sacct_fails_is_replaced_and_its_experiment_waits_for_sacct(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unlike an array task, which waits for sacct to say how it ended, a worker that squeue no
    longer lists is replaced at once while sacct fails: slurmctld lists every job it still holds,
    so that worker will claim nothing more, and waiting would leave the queue without one. That
    runs nothing twice and loses nothing: the experiment it held stays claimed in its name (a
    worker claims only queued ones) and, like an array task's, waits for sacct to say how it ended."""
    down, ended = _ended_job_and_sacct_failing_while(tmp_path, monkeypatch)
    queue = WorkerQueue(tmp_path / "campaign" / "queue" / "h100")
    queue.record_submitted([ended])  # a worker that claimed experiment 1, then ended without a result
    experiments = {i: make_experiment(tmp_path, "", name=f"e{i}", trial=i) for i in (1, 2)}
    queue.put(1, experiments[1])
    assert queue.claim(ended, 0) == (1, experiments[1].resolve())
    queue.put(2, experiments[2])
    fleet = _pending_workers(tmp_path, slots=1)  # (its new workers stay pending)
    try:
        for trial, exp in experiments.items():
            assert fleet.reattach(JobSpec(trial, exp, "h100"), "queue:h100")
        down.touch()
        wait_for(
            lambda: queue_states({ended}) == {}, 180, "slurmctld to let go of the ended worker (MinJobAge)"
        )
        for _ in range(3):
            assert fleet.poll() == []  # how experiment 1 ended is unknown yet: it waits
        (replacement,) = fleet._workers["h100"]  # sent at the first poll, and only one
        assert replacement != ended and set(queue.submitted_workers()) == {ended, replacement}
        assert queue.claimed_by(1) == (ended, 0)  # still the ended worker's: no new worker takes it
        assert queue.claim(replacement, 0) == (2, experiments[2].resolve())
        assert queue.claim(replacement, 0) is None
        down.unlink()
        finished: list[Finished] = []
        wait_for(lambda: finished.extend(fleet.poll()) or finished, 60, "sacct to say how the worker ended")
    finally:
        fleet.shutdown(cancel=True)
    assert [(f.trial, f.outcome["status"], f.outcome["reason"]) for f in finished] == [
        (1, "lost", slurm_states.COMPLETED_WITHOUT_A_RESULT)
    ]


def _full_disk_experiment(folder: Path) -> Path:
    """An experiment in a 1 MiB tmpfs mounted at `folder`, then filled: a disk with no room even
    for the runner's started.json, which slurmd, on this host, sees too. `_unmount` it after."""
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    exp = make_experiment(folder, "print('val_bpb: 1.0')\n", trial=1)
    with contextlib.suppress(OSError), (folder / "filler").open("wb") as filler:
        while True:
            filler.write(b"\0" * 4096)
            filler.flush()
    return exp


def _unmount(folder: Path) -> None:
    if os.path.ismount(folder):
        subprocess.run(["umount", str(folder)], check=True)


def _disk_refusal(exp: Path, job: str) -> dict[str, object]:
    return {
        "trial": 1,
        "status": "lost",
        "disk_full": True,
        "runner_files": True,
        "free_bytes": 0,
        "reason": f"the disk of its folder {exp} refused the runner's own files, started.json or "
        "outcome.json (0 KiB free in its folder)",
        "slurm_job_id": job,
    }


def _on_a_full_disk(tmp_path: Path, fleet: SlurmFleet) -> tuple[Path, str, list[Finished]]:
    """An experiment sent on a full disk (`_full_disk_experiment`): its folder, its handle and
    what the fleet finished, the cluster left with no job of it and the disk unmounted."""
    finished: list[Finished] = []
    try:
        exp = _full_disk_experiment(tmp_path / "full")
        handle = fleet.submit([JobSpec(1, exp, "h100")])[1]
        wait_for(lambda: finished.extend(fleet.poll()) or finished, 90, "the job to end", every=0.2)
    finally:
        fleet.shutdown(cancel=True)
        _unmount(tmp_path / "full")
    return exp, handle, finished


@pytest.mark.slurm
def test_an_array_task_whose_disk_refuses_the_runners_own_files_is_lost_to_the_disk(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """A task whose experiment folder's disk refused the runner's started.json ended FAILED with
    the runner's traceback, lost at the cost of a retry ('Slurm FAILED before its runner
    started'), or, refused its outcome.json, a crash charged to the change; and the controller's
    abandoned.json, refused too, stopped the campaign. The task now ends with the runner's
    DISK_REFUSED_EXIT, which the fleet reads in sacct's ExitCode: lost to the disk, as on the
    local fleet (re-queued at no cost, the campaign stopped until there is room)."""
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, 60, str(tmp_path / "toy"))
    exp, handle, finished = _on_a_full_disk(tmp_path, fleet)
    job = handle.rpartition(":")[2]
    assert [(f.trial, f.outcome) for f in finished] == [(1, _disk_refusal(exp, job))]
    assert _sacct({job}, "JobID,State,ExitCode") == [[job, "FAILED", "73:0"]]


@pytest.mark.slurm
def test_a_worker_whose_disk_refuses_the_runners_own_files_ends_cleanly_and_its_run_is_lost_to_the_disk(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """A worker whose run's folder the full disk refused the runner's own files died of the
    runner's OSError, and the run it held was a crash charged to its change ('Slurm FAILED without
    a result'). The worker now ends with the runner's DISK_REFUSED_EXIT, keeping its claim, every
    further run refused alike, and the fleet reads it: the run is lost to the disk."""
    cluster = compose_toy(tmp_path, SLURM, "cluster.partitions.h100.mode=workers").cluster
    fleet = SlurmFleet(cluster, deadline_s=60, campaign_dir=str(tmp_path / "campaign"))
    exp, _, finished = _on_a_full_disk(tmp_path, fleet)
    (worker,) = fleet.queues["h100"].submitted_workers()  # (the one sent, gone from the alive ones)
    assert [(f.trial, f.outcome) for f in finished] == [(1, _disk_refusal(exp, worker))]
    assert _sacct({worker}, "JobID,State,ExitCode") == [[worker, "FAILED", "73:0"]]


@pytest.mark.slurm
def test_a_worker_whose_disk_refuses_its_start_loses_the_queue_to_the_disk_not_to_a_failed_start(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose queue's disk refused its start (`register`: a full disk, here one with no
    inode left) died of the OSError, read as a worker that could not start: sent again, each
    refused alike, and the queued experiments lost at a retry each. It now ends with
    DISK_REFUSED_EXIT, and the fleet reads it: the queued experiments are lost to the disk (no
    retry spent, the campaign stopped until there is room)."""
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every poll
    full = tmp_path / "campaign" / "queue" / "h100" / "workers"
    full.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=1", "tmpfs", str(full)], check=True)
    cluster = compose_toy(tmp_path, SLURM, "cluster.partitions.h100.mode=workers").cluster
    fleet = SlurmFleet(cluster, deadline_s=60, campaign_dir=str(tmp_path / "campaign"))
    finished: list[Finished] = []
    try:
        fleet.submit([JobSpec(1, make_experiment(tmp_path, "", name="e1", trial=1), "h100")])
        wait_for(lambda: finished.extend(fleet.poll()) or finished, 90, "the queue to be lost", every=0.2)
        (worker,) = fleet.queues["h100"].submitted_workers()  # (one sent, not one per failure)
        said = f"the disk of the worker queue {full} refused Slurm worker job {worker}'s own file, its start"
        assert [(f.trial, f.outcome) for f in finished] == [(1, refused_by_disk(1, full, said))]
    finally:
        fleet.shutdown(cancel=True)
        _unmount(full)
    assert _sacct({worker}, "JobID,State,ExitCode") == [[worker, "FAILED", "73:0"]]


@pytest.mark.slurm
def test_a_campaign_resumed_once_the_worker_queues_disk_has_room_sends_a_worker_again(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed controller read the worker the disk had refused its start, which had stopped the
    campaign, as a failure just now: the queued experiments lost to the disk again at once, and
    the campaign stopped again at every resume, however much room had been freed. A resume now
    sends a worker: if the disk still refuses it, that one says so."""
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every poll
    full = tmp_path / "campaign" / "queue" / "h100" / "workers"
    full.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=1", "tmpfs", str(full)], check=True)
    cluster = compose_toy(tmp_path, SLURM, "cluster.partitions.h100.mode=workers").cluster
    exps = [make_experiment(tmp_path, "", name=f"e{t}", trial=t) for t in (1, 2)]
    first = SlurmFleet(cluster, deadline_s=60, campaign_dir=str(tmp_path / "campaign"))
    try:
        first.submit([JobSpec(1, exps[0], "h100")])
        wait_for(lambda: first.poll(), 90, "the queue to be lost to the disk", every=0.2)
        first.shutdown(cancel=True)
    finally:
        _unmount(full)  # (room freed)
    again = SlurmFleet(cluster, deadline_s=60, campaign_dir=str(tmp_path / "campaign"))
    try:
        again.submit([JobSpec(2, exps[1], "h100")])
        assert again.poll() == []  # (before: e2 lost to the disk)
        assert len(again.queues["h100"].submitted_workers()) == 2
    finally:
        again.shutdown(cancel=True)


@pytest.mark.slurm
@pytest.mark.parametrize("mode", ["array", "workers"])
def test_a_disk_refusal_while_sacct_fails_is_read_in_slurmctlds_exit_code(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """With sacct failing (slurmdbd down), the exit status that tells a disk's refusal of the
    runner's own files (DISK_REFUSED_EXIT) was unknown: the FAILED job squeue showed was taken for
    one that failed before its runner began, and the controller's abandoned.json, refused by the
    same disk, stopped the campaign with an OSError. slurmctld holds an ended job for MinJobAge,
    and its ExitCode (scontrol show job) says it: lost to the disk, as when sacct answers."""
    for knob in ("STATE_POLL_SECONDS", "SETTLE_SECONDS"):  # every poll asks and judges
        monkeypatch.setattr(slurm_fleet, knob, 0.0)
    failing = "echo 'sacct: error: Problem talking to the database: Connection refused' >&2; exit 1"
    monkeypatch.setenv("PATH", f"{fake_commands(tmp_path / 'bin', sacct=failing)}:{os.environ['PATH']}")
    cluster = compose_toy(tmp_path, SLURM, f"cluster.partitions.h100.mode={mode}").cluster
    fleet = SlurmFleet(cluster, deadline_s=60, campaign_dir=str(tmp_path / "campaign"))
    exp, handle, finished = _on_a_full_disk(tmp_path, fleet)
    job = handle.rpartition(":")[2] if mode == "array" else fleet.queues["h100"].submitted_workers()[0]
    assert [(f.trial, f.outcome) for f in finished] == [(1, _disk_refusal(exp, job))]
    assert fleet._states_from == "squeue"  # (judged on slurmctld's word alone)


@pytest.mark.slurm
def test_a_failed_job_waits_without_asking_slurmctld_while_squeue_cannot_reach_it_either(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job squeue showed FAILED, sacct failing, was judged on `scontrol show job`'s ExitCode;
    where slurmctld went out of reach before the judgement (a restart), scontrol was asked again
    for each such job at every poll, each call a connection timeout (18 s here), for as long as
    the outage lasted. While squeue fails too, the judgement now waits without asking, and is
    made once slurmctld answers again."""
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every poll
    monkeypatch.setattr(slurm_fleet, "SETTLE_SECONDS", 3600.0)  # FAILED seen, not judged yet
    sbatch = ["sbatch", "--parsable", "-p", "h100", "-o", "/dev/null", "--wrap", "exit 1"]
    job = subprocess.run(sbatch, capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    squeue = ["squeue", "-h", "-t", "all", "-o", "%T", "-j", job]
    wait_for(
        lambda: subprocess.run(squeue, capture_output=True, text=True).stdout.strip() == "FAILED",
        30,
        "FAILED",
    )
    exp = make_experiment(tmp_path, "", name="e1", trial=1)
    (exp / "started.json").write_text(json.dumps({"slurm_job_id": job, "started_at": time.time()}))
    path = os.environ["PATH"]
    failing = "echo 'sacct: error: Problem talking to the database: Connection refused' >&2; exit 1"
    monkeypatch.setenv("PATH", f"{fake_commands(tmp_path / 'bin', sacct=failing)}:{path}")
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, deadline_s=600, campaign_dir=str(tmp_path))
    assert fleet.reattach(JobSpec(1, exp, "h100"), f"slurm:h100:{job}")
    assert fleet.poll() == []  # (FAILED, by squeue's word)
    calls = tmp_path / "calls"
    unreachable = (
        f"echo $(basename $0) >> {calls}; "
        "echo 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2; exit 1"
    )
    down = fake_commands(tmp_path / "down", sacct=failing, squeue=unreachable, scontrol=unreachable)
    monkeypatch.setenv("PATH", f"{down}:{path}")
    monkeypatch.setattr(slurm_fleet, "SETTLE_SECONDS", 0.0)
    for _ in range(3):
        assert fleet.poll() == []
    assert "scontrol" not in calls.read_text().split()
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{path}")  # slurmctld back, sacct still failing
    finished: list[Finished] = []
    wait_for(lambda: finished.extend(fleet.poll()) or finished, 30, "the job to be judged")
    assert [(f.trial, f.outcome["status"], f.outcome["reason"]) for f in finished] == [
        (1, "crash", "Slurm FAILED without a result")
    ]


@pytest.mark.slurm
def test_queued_experiments_whose_workers_fail_before_starting_are_lost_not_waited_on_for_ever(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker job that fails before its worker begins (here a setup line ends it, as a node
    that lacks the controller's interpreter would) claims nothing, and each one sent in its place
    failed alike: the fleet sent a new worker at every poll, for ever, and the queued experiments
    waited unclaimed. With none alive, cluster.worker_start_tries such failures in a row lose the queued
    experiments (re-queued), said once. Each failure is said with its own job's exit status and
    stderr (the second was said by none, so a user could not tell one flaky node from another)."""
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every poll
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (0.0,))  # each failure tried again at once
    cluster = compose_toy(
        tmp_path,
        SLURM,
        "cluster.partitions.h100.mode=workers",
        "cluster.partitions.h100.slots=1",
        "cluster.worker_start_tries=3",
        "+cluster.partitions.h100.setup=['echo python3: command not found >&2 && exit 127']",
    ).cluster
    fleet = SlurmFleet(cluster, deadline_s=60, campaign_dir=str(tmp_path / "campaign"))
    finished: list[Finished] = []
    try:
        fleet.submit(
            [JobSpec(i, make_experiment(tmp_path, "", name=f"e{i}", trial=i), "h100") for i in (1, 2)]
        )
        wait_for(lambda: finished.extend(fleet.poll()) or len(finished) == 2, 120, "the queue to be lost")
        for _ in range(3):
            assert fleet.poll() == []
    finally:
        fleet.shutdown(cancel=True)
    workers = sorted(fleet.queues["h100"].submitted_workers(), key=int)
    assert len(workers) == 3  # one sent per failure, not one per poll
    reason = (
        f"Slurm worker job {workers[-1]} FAILED before its worker started (exit 127: python3: command "
        f"not found): the job could not start it (its log: submitit/{workers[-1]}/); 3 worker starts "
        "failed in a row"
    )
    assert sorted((f.trial, f.outcome["status"], f.outcome["reason"]) for f in finished) == [
        (1, "lost", reason),
        (2, "lost", reason),
    ]
    assert fleet.queues["h100"].ready_count() == 0
    assert sum(f"partition h100: {reason} (workers)" in r.getMessage() for r in caplog.records) == 1
    said = [r.getMessage() for r in caplog.records if "FAILED before its worker started" in r.getMessage()]
    assert [worker for worker in workers for line in said if f"job {worker} FAILED" in line] == workers
    assert all("(exit 127: python3: command not found)" in line for line in said)


@pytest.mark.slurm
def test_one_worker_start_failure_with_none_alive_sends_another_and_loses_no_queued_experiment(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no worker alive, the first worker job failing before its worker began (a shared file
    system's passing hiccup; here a setup line ends the first job only) lost every queued
    experiment at once, a retry each. A worker is now sent again, backing off, and it runs them."""
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every poll
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (0.0,))  # tried again at once
    first = tmp_path / "first-worker"
    cluster = compose_toy(
        tmp_path,
        SLURM,
        "cluster.partitions.h100.mode=workers",
        "cluster.partitions.h100.slots=1",
        f"+cluster.partitions.h100.setup=['mkdir {first} && exit 127 || true']",
    ).cluster
    fleet = SlurmFleet(cluster, deadline_s=60, campaign_dir=str(tmp_path / "campaign"))
    result = "import prepare\nprepare.write_result({'val_bpb': 1.0})\n"
    exps = [make_experiment(tmp_path, result, name=f"e{i}", trial=i) for i in (1, 2)]
    finished: list[Finished] = []
    try:
        fleet.submit([JobSpec(i, exps[i - 1], "h100") for i in (1, 2)])
        wait_for(lambda: finished.extend(fleet.poll()) or len(finished) == 2, 120, "both to finish")
    finally:
        fleet.shutdown(cancel=True)
    assert sorted((f.trial, f.outcome["status"]) for f in finished) == [(1, "ok"), (2, "ok")]
    assert len(fleet.queues["h100"].submitted_workers()) == 2  # the one that failed, and the next


@pytest.mark.slurm
def test_a_job_completed_without_a_result_is_lost_not_its_changes_crash(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job COMPLETED whose runner began and wrote no outcome.json (the record of a runaway job,
    which `sacctmgr show runawayjobs` sets COMPLETED) was its change's crash, though the runner
    writes one at every end of train.py, crashes included, and ends FAILED where it cannot: no end
    of the change leaves a COMPLETED job without one. It is now lost (re-queued, a retry)."""
    for knob in ("STATE_POLL_SECONDS", "SETTLE_SECONDS"):  # every poll asks and judges
        monkeypatch.setattr(slurm_fleet, knob, 0.0)
    sbatch = ["sbatch", "--parsable", "-p", "h100", "-o", "/dev/null", "--wrap", "true"]
    job = subprocess.run(sbatch, capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    exp = make_experiment(tmp_path, "", name="e1", trial=1)
    (exp / "started.json").write_text(json.dumps({"slurm_job_id": job, "started_at": time.time()}))
    fleet = SlurmFleet(compose_toy(tmp_path, SLURM).cluster, deadline_s=600, campaign_dir=str(tmp_path))
    assert fleet.reattach(JobSpec(1, exp, "h100"), f"slurm:h100:{job}")
    finished: list[Finished] = []
    wait_for(lambda: finished.extend(fleet.poll()) or finished, 60, "the job to be judged")
    reason = (
        "Slurm COMPLETED without a result, which the runner writes at every end of train.py: its "
        "job's record was closed without the runner's end (a runaway job's, by sacctmgr)"
    )
    assert [(f.trial, f.outcome) for f in finished] == [
        (1, {"trial": 1, "status": "lost", "reason": reason, "slurm_job_id": job})
    ]
    assert (exp / "abandoned.json").exists()  # (Slurm runs it no more)


@pytest.mark.slurm
def test_workers_that_fail_before_starting_beside_a_live_one_are_sent_again_backing_off(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One worker alive, and every worker sent beside it fails before its worker begins (a node
    that lacks the interpreter; here the setup line ends every worker job after the first). Each
    start failure backed off, but sbatch taking the next worker ended the back-off: it never passed
    its first step, and a new worker failed every 15 s for ever. Now only a worker sent since that
    starts ends it, so the second failure in a row waits the second step (an hour here)."""
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every poll
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (0.0, 3600.0))
    first = tmp_path / "first-worker"
    cluster = compose_toy(
        tmp_path,
        SLURM,
        "cluster.partitions.h100.mode=workers",
        "cluster.partitions.h100.slots=2",
        f"+cluster.partitions.h100.setup=[mkdir {first} || exit 127]",
    ).cluster
    fleet = SlurmFleet(cluster, deadline_s=60, campaign_dir=str(tmp_path / "campaign"))
    queue = fleet.queues["h100"]
    hold = tmp_path / "hold"
    hold.touch()
    waits = f"import os, time\nwhile os.path.exists({str(hold)!r}): time.sleep(0.1)\n"
    exps = [make_experiment(tmp_path, waits, name=f"e{t}", trial=t) for t in (1, 2)]

    def unstarted() -> list[str]:
        return sorted((w for w in queue.submitted_workers() if not queue.registered(w)), key=int)

    try:
        fleet.submit([JobSpec(1, exps[0], "h100")])
        wait_for(lambda: fleet.poll() or queue.claims(), 60, "the first worker to take e1")
        fleet.submit([JobSpec(2, exps[1], "h100")])
        wait_for(
            lambda: fleet.poll() or (len(bad := unstarted()) >= 2 and bad[1] not in fleet._workers["h100"]),
            120,
            "a second worker in a row to fail before starting",
        )
        for _ in range(3):
            assert fleet.poll() == []
        assert len(unstarted()) == 2  # (before: a third sent at once, the back-off back at its start)
        assert queue.is_queued(2)  # e2 waits for the worker alive
    finally:
        hold.unlink()
        fleet.shutdown(cancel=True)
    said = [r.getMessage() for r in caplog.records if "FAILED before its worker started" in r.getMessage()]
    assert [
        worker for worker in unstarted() for line in said if f"job {worker} FAILED" in line
    ] == unstarted()


FAILING_SETUP = "+cluster.partitions.h100.setup=[exit 127]"  # a worker job that fails before its worker


def worker_cluster(tmp_path: Path, slots: int, *settings: str) -> ClusterConfig:
    """The toy cluster with partition h100 in worker mode, of `slots`, and `settings` besides; the
    queue lost at 3 failed worker starts in a row, so a test need not send the default's 5."""
    return compose_toy(
        tmp_path,
        SLURM,
        "cluster.partitions.h100.mode=workers",
        f"cluster.partitions.h100.slots={slots}",
        "cluster.worker_start_tries=3",
        *settings,
    ).cluster


@pytest.mark.slurm
def test_a_controller_resumed_after_the_worker_starts_lost_the_queue_sends_a_worker_not_losing_it_again(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A controller lost the queue at the 3rd failed worker start in a row, then stopped. The
    resumed one found 3 failures in a row and lost the re-queued experiments at once, a retry
    each, sending no worker: it could not tell the loss already made for them. The queue folder
    now records it: the resume sends a worker, and only a failure of that one loses them again
    (as each failure after does, in the controller that lost them)."""
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every poll
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (0.0,))
    cluster = worker_cluster(tmp_path, 1, FAILING_SETUP)
    campaign = str(tmp_path / "campaign")
    exps = [make_experiment(tmp_path, "", name=f"e{t}", trial=t) for t in (1, 2)]
    first = SlurmFleet(cluster, deadline_s=60, campaign_dir=campaign)
    first.submit([JobSpec(1, exps[0], "h100")])
    lost: list[Finished] = []
    wait_for(lambda: lost.extend(first.poll()) or lost, 90, "the queue lost")
    assert lost[0].outcome["reason"].endswith("; 3 worker starts failed in a row")
    first.shutdown(cancel=True)
    again = SlurmFleet(cluster, deadline_s=60, campaign_dir=campaign)
    try:
        again.submit([JobSpec(2, exps[1], "h100")])  # (e1 re-queued)
        assert again.poll() == []  # (before: e2 lost at once)
        assert len(again.queues["h100"].submitted_workers()) == 4
        lost.clear()
        wait_for(lambda: lost.extend(again.poll()) or lost, 60, "the new worker's failure")
        assert lost[0].outcome["reason"].endswith("; 4 worker starts failed in a row")
    finally:
        again.shutdown(cancel=True)


@pytest.mark.slurm
def test_a_resumed_controller_goes_on_from_the_failed_worker_starts_in_a_row_it_finds(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The back-off of worker starts that fail lived in the controller's memory: one started again
    (a resume) counted one failure, and sent a worker at the first step, however many had failed
    in a row. It now counts those the queue folder shows since the last worker that started."""
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every poll
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (0.0, 3600.0))
    cluster = worker_cluster(tmp_path, 1, FAILING_SETUP)
    campaign = str(tmp_path / "campaign")
    exp = make_experiment(tmp_path, "", name="e1", trial=1)
    first = SlurmFleet(cluster, deadline_s=60, campaign_dir=campaign)
    first.submit([JobSpec(1, exp, "h100")])
    wait_for(
        lambda: first.poll() or first._starts["h100"].refusal.start_failures == 2, 60, "two failed starts"
    )
    again = SlurmFleet(cluster, deadline_s=60, campaign_dir=campaign)  # (the first one killed)
    try:
        assert again.reattach(JobSpec(1, exp, "h100"), "queue:h100")
        for _ in range(3):
            assert again.poll() == []
        assert len(again.queues["h100"].submitted_workers()) == 2  # (before: a third sent at once)
        assert again._starts["h100"].refusal.start_failures == 2
    finally:
        again.shutdown(cancel=True)


@pytest.mark.slurm
def test_the_workers_of_one_sbatch_that_fail_to_start_are_one_failure_in_a_row_also_at_a_resume(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition of 3 slots sends its workers as one array. All failing to start, the controller
    counted one failure per poll that saw some fail (so 1 to 3, as the node ran them), and a
    resumed one a failure per worker: 3, cluster.worker_start_tries, the queue lost after one sbatch. Each
    sbatch is now one failure in a row, however many of its workers fail, at however many polls."""
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every poll
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (3600.0,))  # (no second array)
    cluster = worker_cluster(tmp_path, 3, FAILING_SETUP)
    campaign = str(tmp_path / "campaign")
    jobs = [JobSpec(t, make_experiment(tmp_path, "", name=f"e{t}", trial=t), "h100") for t in (1, 2, 3)]
    first = SlurmFleet(cluster, deadline_s=60, campaign_dir=campaign)
    first.submit(jobs)
    wait_for(lambda: first.poll() or not first._workers["h100"], 90, "the three workers to fail")
    assert len(first.queues["h100"].submitted_workers()) == 3
    assert first._starts["h100"].refusal.start_failures == 1
    again = SlurmFleet(cluster, deadline_s=60, campaign_dir=campaign)  # (the first one killed)
    try:
        assert all(again.reattach(job, "queue:h100") for job in jobs)
        assert again.poll() == []  # (before: e1 to e3 lost, 3 worker starts failed in a row)
        assert again._starts["h100"].refusal.start_failures == 1
    finally:
        again.shutdown(cancel=True)


@pytest.mark.slurm
def test_a_worker_sent_before_a_resume_that_starts_after_it_ends_the_failed_starts_in_a_row(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed controller went on from the failed starts in a row, but waited only on the
    workers it sent itself to end them: one its predecessor had sent, starting, ended nothing, and
    a single failure later could lose the queue. It now ends the row too."""
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every poll
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (0.0, 3600.0))
    go = tmp_path / "go"
    failing = worker_cluster(tmp_path, 1, FAILING_SETUP)
    gated = worker_cluster(
        tmp_path, 1, f"+cluster.partitions.h100.setup=['until test -e {go}; do sleep 0.1; done']"
    )
    campaign = str(tmp_path / "campaign")
    hold = tmp_path / "hold"
    hold.touch()
    waits = f"import os, time\nwhile os.path.exists({str(hold)!r}): time.sleep(0.1)\n"
    job = JobSpec(1, make_experiment(tmp_path, waits, name="e1", trial=1), "h100")
    first = SlurmFleet(failing, deadline_s=60, campaign_dir=campaign)
    first.submit([job])
    wait_for(
        lambda: first.poll() or first._starts["h100"].refusal.start_failures == 2, 60, "two failed starts"
    )
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (0.0,))
    second = SlurmFleet(gated, deadline_s=60, campaign_dir=campaign)  # (resumed, then killed)
    assert second.reattach(job, "queue:h100")
    wait_for(lambda: second.poll() or len(second.queues["h100"].submitted_workers()) == 3, 30, "a third")
    third = SlurmFleet(gated, deadline_s=60, campaign_dir=campaign)
    try:
        assert third.reattach(job, "queue:h100")
        assert third.poll() == []
        assert third._starts["h100"].refusal.start_failures == 2
        go.touch()
        queue = third.queues["h100"]
        wait_for(lambda: third.poll() or any(map(queue.registered, queue.submitted_workers())), 60, "a start")
        assert third.poll() == []
        assert third._starts["h100"].refusal.start_failures == 0  # (before: 2, waiting on its own workers)
    finally:
        hold.unlink()
        third.shutdown(cancel=True)


@pytest.mark.slurm
def test_a_resumed_controller_counts_no_failed_worker_start_before_a_worker_that_started(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A resumed controller took a worker that failed to start long ago, before one that started,
    for a failure just now: said again, the back-off begun, and one failure in a row counted
    towards losing the queue. It now counts only the failures since the last worker that started."""
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every poll
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (0.0, 3600.0))
    failing = worker_cluster(tmp_path, 1, FAILING_SETUP)
    cluster = worker_cluster(tmp_path, 1)
    campaign = str(tmp_path / "campaign")
    exps = [make_experiment(tmp_path, "", name=f"e{t}", trial=t) for t in (1, 2, 3)]
    first = SlurmFleet(failing, deadline_s=60, campaign_dir=campaign)
    first.submit([JobSpec(1, exps[0], "h100")])
    wait_for(lambda: first.poll() or first._starts["h100"].refusal.start_failures, 60, "a failed start")
    first.shutdown(cancel=True)
    second = SlurmFleet(cluster, deadline_s=60, campaign_dir=campaign)
    queue = second.queues["h100"]
    second.submit([JobSpec(2, exps[1], "h100")])
    wait_for(lambda: second.poll() or any(map(queue.registered, queue.submitted_workers())), 60, "a start")
    second.shutdown(cancel=True)
    caplog.clear()
    third = SlurmFleet(cluster, deadline_s=60, campaign_dir=campaign)
    try:
        third.submit([JobSpec(3, exps[2], "h100")])
        assert third.poll() == []
        assert third._starts["h100"].refusal.start_failures == 0  # (before: 1, the first one's)
        assert not [r for r in caplog.records if "FAILED before its worker started" in r.getMessage()]
    finally:
        third.shutdown(cancel=True)


@pytest.mark.slurm
def test_a_later_worker_of_one_sbatch_whose_disk_refuses_its_start_loses_the_queue_to_the_disk(
    tmp_path: Path, slurm_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers sent as one array: the first fails before it starts (exit 127), the second,
    later, is refused its start by the queue's disk (exit 73). The array was counted once, at its
    first failure, and its later workers no more: the disk's refusal went unseen, the queued
    experiments waiting on a back-off for a worker every one of which the disk would refuse. A
    worker exiting 73 is now the disk's refusal, whichever of its array's workers it is."""
    monkeypatch.setattr(slurm_fleet, "STATE_POLL_SECONDS", 0.0)  # Slurm asked at every poll
    monkeypatch.setattr(slurm_outage, "SUBMIT_RETRY_SECONDS", (3600.0,))  # (no second array)
    go = tmp_path / "go"
    full = tmp_path / "campaign" / "queue" / "h100" / "workers"
    full.parent.mkdir(parents=True)
    setup = f"'test $SLURM_ARRAY_TASK_ID = 0 && exit 127; until test -e {go}; do sleep 0.1; done'"
    cluster = worker_cluster(tmp_path, 2, f"+cluster.partitions.h100.setup=[{setup}]")
    jobs = [JobSpec(t, make_experiment(tmp_path, "", name=f"e{t}", trial=t), "h100") for t in (1, 2)]
    finished: list[Finished] = []
    with tmpfs_at(full, "size=1m,nr_inodes=1"):  # (no inode left for a worker's own file)
        fleet = SlurmFleet(cluster, deadline_s=60, campaign_dir=str(tmp_path / "campaign"))
        try:
            fleet.submit(jobs)
            wait_for(
                lambda: fleet.poll() or fleet._starts["h100"].refusal.start_failures, 60, "the first to fail"
            )
            go.touch()
            wait_for(lambda: finished.extend(fleet.poll()) or finished, 60, "the queue lost to the disk")
            worker = max(fleet.queues["h100"].submitted_workers(), key=_job_order)
            said = (
                f"the disk of the worker queue {full} refused Slurm worker job {worker}'s own file, its start"
            )
            assert sorted((f.trial, f.outcome) for f in finished) == [
                (t, refused_by_disk(t, full, said)) for t in (1, 2)
            ]
        finally:
            fleet.shutdown(cancel=True)


def test_with_no_worker_alive_the_queue_outlasts_a_shared_file_systems_hiccup_of_two_minutes() -> None:
    """With no worker alive, 3 failed worker starts in a row lost the queued experiments, a retry
    each, after backing off 15 + 30 s: a shared file system's hiccup of a minute or two failed
    every worker sent meanwhile and spent the whole queue's retries. The default tries now back
    off for longer than two minutes before the loss (cluster.worker_start_tries, to lower or raise)."""
    refusal = worker_starts.WorkerRefusal("h100", ClusterConfig().worker_start_tries)
    backed_off = 0.0
    while not refusal.failed_to_start("worker FAILED before its worker started", alive=False):
        backed_off += refusal.retry_at - time.monotonic()  # (the step waited before the next is sent)
    assert backed_off > 120


def test_a_workers_failure_to_start_ends_when_a_worker_sent_since_starts_not_when_sbatch_takes_it() -> None:
    """sbatch taking a worker after one failed to start ends nothing (it may fail alike); one of
    those starting ends it. A refusal by sbatch itself still ends when sbatch takes workers."""
    refusal = worker_starts.WorkerRefusal("h100", 3)
    assert not refusal.failed_to_start("worker 11 FAILED before its worker started", alive=True)
    refusal.sent(["12"])
    refusal.check_started(lambda worker: False, alive=["10", "12"])
    assert (refusal.failures, refusal.on_trial) == (1, {"12"})
    refusal.check_started(lambda worker: worker == "12", alive=["10"])  # (started, then ended)
    assert (refusal.since, refusal.failures, refusal.on_trial) == (None, 0, set())
    refusal.failed("sbatch refused the job: QOSMaxJobsPerUserLimit")
    refusal.sent(["13"])
    assert (refusal.since, refusal.failures) == (None, 0)
