"""A campaign resumed on the other fleet (cluster=local <-> cluster=slurm) while the runs its last
controller launched are still in flight (kill -9 of the controller; a Ctrl-C leaves them too):
the new fleet cannot watch them, so the start is refused while they run, and the old fleet's
collects them; none is run twice, none lost. Real local runners and the local cluster of
slurm/local."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_helpers import (
    campaign_command,
    collected_once,
    controller_killed_mid_run,
    experiment_runs,
    killed_once_a_run_started,
    load,
    run_campaign,
    wait_for,
)
from optuna.trial import TrialState

from autoresearch.fleet.other_fleet import jobs_in_flight
from autoresearch.fleet.runner_pid import is_our_runner
from autoresearch.runner import PID_FILE

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]  # conftest.py

BUDGET = "campaign.budget.max_experiments=4"


def test_a_local_campaign_resumed_on_slurm_while_its_runner_runs_is_refused(tmp_path: Path) -> None:
    """The Slurm fleet could not adopt the local runner: its trial was failed as lost (a retry
    counted) and run again on Slurm while the runner went on unseen, its result thrown away."""
    started, hold = controller_killed_mid_run(tmp_path)  # its runner goes on, held
    exp, runs, run_log = started.parent, tmp_path / "runs", tmp_path / "ran.log"
    trial, runner = int(exp.name), (exp / PID_FILE).read_text().split()[0]
    env = {"TOY_RUN_LOG": str(run_log)}
    try:
        refused = run_campaign(runs, "cluster=slurm_local", BUDGET, env=env)
    finally:
        hold.unlink()
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2, said
    assert f"trial {trial} (pid {runner}) still run in local runners" in said
    assert f"kill {runner}" in said and "Traceback" not in said
    assert not [t for t in load(runs / "toy").trials if str(t.user_attrs.get("job", "")).startswith("slurm:")]
    wait_for(lambda: not is_our_runner(int(runner), exp), 60, "the runner's end")

    resumed = run_campaign(runs, BUDGET, "cluster.partitions.local.slots=1", env=env)
    collected_once(resumed, exp, run_log)


def test_a_slurm_campaign_resumed_locally_while_its_jobs_run_is_refused(tmp_path: Path) -> None:
    """The local fleet could not adopt the Slurm jobs (their runners are no `autoresearch.runner`
    processes of this host): each was failed as lost, a retry counted, and run again locally
    while the jobs went on in Slurm, their results thrown away."""
    runs, run_log, hold = tmp_path / "runs", tmp_path / "ran.log", tmp_path / "hold"
    hold.touch()
    try:
        command = campaign_command(runs, "cluster=slurm_local", BUDGET)
        killed_once_a_run_started(command, runs, {"TOY_HOLD": str(hold), "TOY_RUN_LOG": str(run_log)})
        sent = {
            t.number: t.user_attrs["job"].rpartition(":")[2]
            for t in load(runs / "toy").trials
            if t.user_attrs.get("job")
        }
        refused = run_campaign(runs, BUDGET, env={"TOY_RUN_LOG": str(run_log)})
    finally:
        hold.unlink()
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2, said
    assert sent and all(f"trial {n} (job {job})" in said for n, job in sent.items()), said
    assert f"scancel {' '.join(sent.values())}" in said and "Traceback" not in said
    assert not [t for t in load(runs / "toy").trials if str(t.user_attrs.get("job", "")).startswith("local:")]
    wait_for(lambda: jobs_in_flight(set(sent.values())) == set(), 120, "the Slurm jobs' end")

    resumed = run_campaign(runs, "cluster=slurm_local", BUDGET, env={"TOY_RUN_LOG": str(run_log)})
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = load(runs / "toy")
    assert all(study.trials[n].state == TrialState.COMPLETE for n in sent)
    assert not [t for t in study.trials if t.user_attrs.get("retry_of") in sent]
    ran = experiment_runs(run_log)
    assert set(ran.values()) == {1}, ran  # each workspace once: the Slurm runs were not run again
