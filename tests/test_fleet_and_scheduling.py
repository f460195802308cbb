"""Local slots per GPU, asynchronous refills versus synchronous waves, budgets, RDB storage."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import optuna
import pytest
from engine_helpers import (
    ENV_DUMP,
    FREEZER,
    compose_toy,
    freezer_cgroup,
    frozen,
    launched_within_budget,
    make_experiment,
    make_fleet,
    queue_run,
    run_campaign,
    state_of,
    wait_for,
)

from autoresearch.budget import MAKE_ARGS_ENV, MAKE_TARGET_ENV, Spend, exhausted, going_on_past, hours_unit
from autoresearch.campaign import Campaign
from autoresearch.config import (
    AutoresearchConfig,
    BudgetConfig,
    ClusterConfig,
    PartitionConfig,
    campaign_dir_of,
    deadline_seconds,
)
from autoresearch.fleet import leftovers, lineage, local, procs
from autoresearch.fleet.base import Finished, Fleet, JobSpec
from autoresearch.fleet.runner_pid import runner_alive
from autoresearch.proposers.base import CampaignContext
from autoresearch.proposers.offline import OfflineProposer
from autoresearch.runner import RESULT_VARIABLE, result_file
from autoresearch.stop_signals import READY_PID_ENV


def test_an_eight_gpu_box_gets_one_slot_per_gpu_each_with_its_own_device(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    fleet = make_fleet(
        ClusterConfig(partitions={"local": PartitionConfig(slots=0)}), deadline_s=60, campaign_dir=""
    )
    (pool,) = fleet.pools.values()
    assert pool.slots == 8
    jobs = []
    for i in range(8):
        exp = make_experiment(tmp_path, ENV_DUMP, deadline=60, name=f"e{i}", trial=i)
        jobs.append(JobSpec(i, exp, pool.name))
    fleet.submit(jobs)
    assert fleet.free_slots(pool.name) == 0
    finished = []
    wait_for(lambda: finished.extend(fleet.poll()) or len(finished) >= 8, 120, "eight local jobs", every=0.05)
    assert {f.outcome["status"] for f in finished} == {"ok"}
    environments = [json.loads((j.exp_dir / "env.json").read_text()) for j in jobs]
    assert sorted(env["CUDA_VISIBLE_DEVICES"] for env in environments) == [str(i) for i in range(8)]
    # nvidia-smi's numbers, which name the slots, are CUDA's only in PCI bus order
    assert {env.get("CUDA_DEVICE_ORDER") for env in environments} == {"PCI_BUS_ID"}


def toy_config(tmp_path: Path, *overrides: str) -> AutoresearchConfig:
    return compose_toy(tmp_path, "cluster.poll_seconds=0.02", *overrides)


class RecordingProposer(OfflineProposer):
    """Notes how many experiments were in flight each time a wave was asked for."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.in_flight_at_request: list[int] = []

    def propose(self, context: CampaignContext):
        self.in_flight_at_request.append(sum(1 for r in context.history if r.status in ("running", "queued")))
        return super().propose(context)


@pytest.mark.parametrize("synchronous", [False, True])
def test_waves_are_requested_before_the_queue_runs_dry_unless_synchronous(
    tmp_path: Path, synchronous: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOY_SECONDS", "0.3")
    cfg = toy_config(
        tmp_path, f"campaign.synchronous={str(synchronous).lower()}", "campaign.budget.max_experiments=16"
    )
    campaign_dir = campaign_dir_of(cfg)
    proposer = RecordingProposer()
    fleet = make_fleet(cfg.cluster, deadline_seconds(cfg), str(campaign_dir))
    campaign = Campaign(cfg, campaign_dir, fleet, proposer, background_proposals=False)
    summary = campaign.run()
    assert summary.experiments == len(launched_within_budget(campaign.study, 16))
    assert len(proposer.in_flight_at_request) >= 2
    if synchronous:
        assert set(proposer.in_flight_at_request) == {0}
    else:
        assert max(proposer.in_flight_at_request) > 0


def test_budgets_stop_at_the_first_limit_reached() -> None:
    spend = Spend(experiments=10, wall_hours=1.5, gpu_hours=3.0, gpu_dollars=9.0, llm_dollars=1.5)
    assert exhausted(spend, BudgetConfig()) is None
    assert "experiments" in exhausted(spend, BudgetConfig(max_experiments=10))
    assert "wall hours" in exhausted(spend, BudgetConfig(max_wall_hours=1.0))
    assert "GPU-hours" in exhausted(spend, BudgetConfig(max_gpu_hours=2.5))
    assert "dollars" in exhausted(spend, BudgetConfig(max_dollars=10.0))
    assert exhausted(spend, BudgetConfig(max_dollars=11.0, max_gpu_hours=4.0)) is None


def test_experiments_launched_past_their_budget_are_said_to_be_the_runs_decisions_waited_for() -> None:
    """After the budget binds, only re-runs and baselines a decision waits for still launch: a
    demo ended with "experiments budget reached (20 of 16)", as if the budget had not held."""
    spend = Spend(experiments=20, wall_hours=1.5, gpu_hours=3.0, gpu_dollars=9.0, llm_dollars=1.5)
    assert exhausted(spend, BudgetConfig(max_experiments=16)) == (
        "experiments budget reached (20 of 16: past 16, only the 4 runs a decision waited for)"
    )
    assert exhausted(spend, BudgetConfig(max_experiments=19)) == (
        "experiments budget reached (20 of 19: past 19, only the 1 run a decision waited for)"
    )
    assert exhausted(spend, BudgetConfig(max_experiments=20)) == "experiments budget reached (20 of 20)"
    assert exhausted(spend, BudgetConfig(max_gpu_hours=2.5)) == "GPU-hours budget reached (3 of 2.5)"


@pytest.mark.parametrize("setting", ["max_experiments", "max_wall_hours", "max_gpu_hours", "max_dollars"])
def test_a_stop_at_a_budget_names_the_setting_that_goes_on(setting: str) -> None:
    spend = Spend(experiments=10, wall_hours=1.5, gpu_hours=3.0, gpu_dollars=9.0, llm_dollars=1.5)
    reason = exhausted(spend, BudgetConfig(**{setting: 1.0}))
    hint = going_on_past(reason)
    assert hint == f"to go on, run the same command with a larger campaign.budget.{setting}"
    assert going_on_past("stopped by the user") is None and going_on_past("") is None


@pytest.mark.parametrize(
    ("setting", "limit", "larger"),
    [
        ("max_experiments", 30, "60"),
        ("max_wall_hours", 0.25, "0.5"),
        ("max_experiments", 600000, "1200000"),  # (not 1.2e+06: a float to Hydra, rounded past 6 digits)
    ],
)
def test_a_stop_at_a_budget_under_make_demo_names_the_make_command_that_goes_on(
    setting: str, limit: float, larger: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` runs the python command for the user, who could not add a setting to "the same
    command" without knowing it: run by make (MAKE_TARGET_ENV), the hint is make's own command."""
    monkeypatch.setenv(MAKE_TARGET_ENV, "demo")
    budget = BudgetConfig(**{setting: limit})
    reason = exhausted(
        Spend(experiments=600000, wall_hours=0.3, gpu_hours=0.0, gpu_dollars=0.0, llm_dollars=0.0), budget
    )
    assert going_on_past(reason, budget) == (
        f'to go on, run it with a larger budget: make demo ARGS="campaign.budget.{setting}={larger}"'
    )
    monkeypatch.delenv(MAKE_TARGET_ENV)
    assert (
        going_on_past(reason, budget)
        == f"to go on, run the same command with a larger campaign.budget.{setting}"
    )


def test_the_make_command_that_goes_on_keeps_the_overrides_make_demo_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run as `make demo ARGS="cluster.devices=cpu"`, the hint named ARGS with the budget alone: a
    user who followed it resumed without cluster.devices=cpu, other hardware to the study. The
    other overrides are kept; the budget's own given before is replaced."""
    monkeypatch.setenv(MAKE_TARGET_ENV, "demo")
    monkeypatch.setenv(MAKE_ARGS_ENV, "cluster.devices=cpu campaign.budget.max_experiments=60")
    budget = BudgetConfig(max_experiments=60)
    reason = exhausted(Spend(60, 0.3, 0.0, 0.0, 0.0), budget) or ""
    assert going_on_past(reason, budget) == (
        'to go on, run it with a larger budget: make demo ARGS="cluster.devices=cpu '
        'campaign.budget.max_experiments=120"'
    )
    # an override of two words, in double quotes (which ended the hint's own ARGS="..."), stays one
    monkeypatch.setenv(MAKE_ARGS_ENV, 'campaign.name="my demo" campaign.budget.max_experiments=60')
    assert going_on_past(reason, budget) == (
        "to go on, run it with a larger budget: make demo ARGS=\"'campaign.name=my demo' "
        'campaign.budget.max_experiments=120"'
    )


def test_a_batch_controller_stopped_at_its_budget_names_the_sbatch_command_that_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A controller run as a Slurm job (slurm/controller.sbatch) said "run the same command with a
    larger ...": its job has ended, and its same command is the script submitted again. It names
    that sbatch command, with the controller's other overrides (quoted as a shell reads them) and
    the budget doubled."""
    monkeypatch.delenv(MAKE_TARGET_ENV, raising=False)
    monkeypatch.setenv(READY_PID_ENV, "4242")
    overrides = [
        "+campaign=gpt2",
        "cluster=slurm",
        "campaign.name=my run",
        "campaign.budget.max_experiments=30",
    ]
    budget = BudgetConfig(max_experiments=30)
    reason = exhausted(Spend(30, 0.3, 0.0, 0.0, 0.0), budget) or ""
    assert going_on_past(reason, budget, overrides) == (
        "to go on, submit it again with a larger budget: sbatch slurm/controller.sbatch +campaign=gpt2 "
        "cluster=slurm 'campaign.name=my run' campaign.budget.max_experiments=60"
    )


def test_slot_hours_are_gpu_hours_unless_every_slot_was_a_cpu() -> None:
    assert hours_unit(["cpu"]) == "CPU-hours"
    assert hours_unit(["cpu", "NVIDIA H100 80GB HBM3"]) == hours_unit([]) == "GPU-hours"


def test_an_rdb_storage_url_holds_the_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    proc = run_campaign(tmp_path, f"storage={url}", "campaign.budget.max_experiments=4")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "toy" / "study.journal").exists()
    study = optuna.load_study(study_name="toy", storage=url)
    launched_within_budget(study, 4)


class RepeatingProposer(OfflineProposer):
    """Proposes the same single change forever: a proposer that has run out of ideas."""

    def propose(self, context: CampaignContext):
        from autoresearch.proposals import Candidate, Wave

        return Wave(candidates=[Candidate("LR 0.01 -> 0.02", knobs={"LR": 0.02})], source="repeat")


def test_a_proposer_with_nothing_new_ends_the_campaign_instead_of_spinning(tmp_path: Path) -> None:
    cfg = toy_config(tmp_path, "campaign.fill_idle_slots=false", "campaign.budget.max_experiments=50")
    campaign_dir = campaign_dir_of(cfg)
    fleet = make_fleet(cfg.cluster, deadline_seconds(cfg), str(campaign_dir))
    summary = Campaign(cfg, campaign_dir, fleet, RepeatingProposer(), background_proposals=False).run()
    assert "nothing new" in summary.stop_reason
    # three baselines, the one change, the two re-runs confirming it and its run as the new frontier
    assert summary.experiments == 7


class CountingRepeater(RepeatingProposer):
    """RepeatingProposer, counting the waves asked of it and the results in when each was."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.campaign: Campaign | None = None
        self.asked_at: list[int] = []

    def propose(self, context: CampaignContext):
        self.asked_at.append(self.campaign._ended if self.campaign else 0)
        return super().propose(context)


def test_a_proposer_with_nothing_new_is_asked_again_only_once_a_result_is_in(tmp_path: Path) -> None:
    """Its last waves had nothing new while the inner sampler kept the slots busy: the proposer was
    asked again on every turn of the loop, for the same answer (with Claude, an API call each, as
    fast as it answers: hundreds an hour). Past MAX_EMPTY_WAVES it is asked once per result."""
    from autoresearch.campaign import MAX_EMPTY_WAVES

    cfg = toy_config(tmp_path, "campaign.budget.max_experiments=10", "cluster.poll_seconds=0.005")
    campaign_dir = campaign_dir_of(cfg)
    fleet = make_fleet(cfg.cluster, deadline_seconds(cfg), str(campaign_dir))
    proposer = CountingRepeater()
    campaign = Campaign(cfg, campaign_dir, fleet, proposer, background_proposals=False)
    proposer.campaign = campaign
    summary = campaign.run()
    assert summary.stop_reason.startswith("experiments budget reached"), summary.stop_reason
    later = proposer.asked_at[MAX_EMPTY_WAVES + 1 :]  # (the first wave queued its one change)
    assert len(later) == len(set(later)), proposer.asked_at  # never twice on the same results


def test_a_trial_told_without_running_is_no_news_for_a_proposer_with_nothing_new(
    tmp_path: Path, open_campaign: Callable[..., Campaign], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued twin dropped as skipped (or an inner-sampler draw that cannot run) is told, but
    nothing ran: counted as news, a proposer of twins was asked again at every turn of the loop
    while a slot was free to drop them, a paid call each with Claude. An experiment's end is news."""
    from autoresearch.campaign import MAX_EMPTY_WAVES

    campaign = open_campaign(tmp_path, [], "campaign.queue_low_water=100")
    asked: list[int] = []
    monkeypatch.setattr(campaign.pump, "request", lambda context: asked.append(1))
    monkeypatch.setattr(campaign.fleet, "running", lambda: 1)
    campaign.intake.empty_waves = MAX_EMPTY_WAVES
    campaign._maybe_request_wave()
    campaign._maybe_request_wave()
    assert len(asked) == 1  # nothing ended since it was asked
    twin = queue_run(campaign, kind="experiment", description="LR 0.02 again")
    campaign.ledger.drop(campaign.ledger.trial(twin), "same train.py as trial 3")
    campaign._maybe_request_wave()
    assert len(asked) == 1
    ran = queue_run(campaign, kind="experiment", description="LR 0.03")
    assert campaign.ledger.claim(campaign.ledger.trial(ran))
    campaign._finish(
        Finished(ran, {"status": "crash", "reason": "exit 1", "started_at": 1.0, "ended_at": 2.0})
    )
    campaign._maybe_request_wave()
    assert len(asked) == 2


def held_train_py(tmp_path: Path, first: str = "") -> tuple[Path, str]:
    """A train.py that runs `first`, then runs on while its hold file (returned with it) exists:
    a runner the test ends when it is done with it."""
    hold = tmp_path / "hold"
    hold.touch()
    return hold, f"import os, time\n{first}while os.path.exists({str(hold)!r}):\n    time.sleep(0.05)\n"


@pytest.mark.parametrize("recorded", [True, False], ids=["pid-recorded", "died-before-recording-the-pid"])
def test_a_re_attached_local_runner_keeps_its_gpu_and_a_new_one_gets_a_free_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: bool
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    cluster = ClusterConfig(partitions={"local": PartitionConfig(slots=0)})
    first = make_fleet(cluster, deadline_s=60, campaign_dir="")
    (pool,) = first.pools.values()
    hold, held = held_train_py(tmp_path, ENV_DUMP)
    quick = JobSpec(0, make_experiment(tmp_path, ENV_DUMP, deadline=60, name="quick", trial=0), pool.name)
    busy = JobSpec(1, make_experiment(tmp_path, held, deadline=60, name="busy", trial=1), pool.name)
    handles = first.submit([quick, busy])  # slots 0 and 1
    wait_for(lambda: (quick.exp_dir / "outcome.json").exists(), 60, "the quick experiment to end")
    # The controller dies; the next adopts the runner still going, on GPU 1, and starts another.
    # Killed between starting the runner and recording it, it leaves neither a handle nor runner.pid.
    if not recorded:
        (busy.exp_dir / "runner.pid").unlink()
    again = make_fleet(cluster, deadline_s=60, campaign_dir="")
    assert again.reattach(busy, handles[1] if recorded else "")
    new = JobSpec(2, make_experiment(tmp_path, ENV_DUMP, deadline=60, name="new", trial=2), pool.name)
    again.submit([new])
    hold.unlink()
    finished: list = []
    wait_for(lambda: finished.extend(again.poll()) or len(finished) >= 2, 60, "both experiments", every=0.05)
    devices = {
        j.trial: json.loads((j.exp_dir / "env.json").read_text())["CUDA_VISIBLE_DEVICES"] for j in (busy, new)
    }
    assert devices == {1: "1", 2: "0"}


def test_a_re_attached_local_runner_keeps_the_deadline_it_started_with(tmp_path: Path) -> None:
    """A runner adopted by a controller started again got a fresh backstop deadline, 2 x budget +
    grace from the adoption: one that hung was let run past its own, once more per restart. It
    keeps the one counted from its start (started.json): here an hour ago, so it is ended at once."""
    cluster = ClusterConfig(partitions={"local": PartitionConfig(slots=1)})
    first = make_fleet(cluster, deadline_s=60, campaign_dir="")
    (pool,) = first.pools.values()
    hold, hung = held_train_py(tmp_path)
    job = JobSpec(0, make_experiment(tmp_path, hung, deadline=3600, trial=0), pool.name)
    handles = first.submit([job])
    started = job.exp_dir / "started.json"
    wait_for(started.exists, 60, "the runner to start")
    record = json.loads(started.read_text())
    started.write_text(json.dumps({**record, "started_at": record["started_at"] - 3600}))
    # The controller dies; the next adopts the runner.
    again = make_fleet(cluster, deadline_s=60, campaign_dir="")
    assert again.reattach(job, handles[0])
    finished: list[Finished] = []
    try:
        wait_for(lambda: finished.extend(again.poll()) or finished, 60, "the runner to be ended", every=0.05)
    finally:
        hold.unlink()
    assert [(f.trial, f.outcome["status"], f.outcome["reason"]) for f in finished] == [
        (0, "interrupted", "runner received SIGTERM")
    ]


# A process train.py starts that leaves its session (setsid) and sleeps; `sys.argv[1]` names the
# file it writes its pid to.
LEAVES_ITS_SESSION = (
    "import os, sys, time; os.setsid(); open('p.tmp', 'w').write(str(os.getpid())); "
    "os.replace('p.tmp', sys.argv[1]); time.sleep(371)"
)
STARTS_A_LEAVER = (
    "import os, subprocess, sys, time\n"
    f"subprocess.Popen([sys.executable, '-c', {LEAVES_ITS_SESSION!r}, 'left.pid'])\n"
    "while True:\n    time.sleep(0.05)\n"
)


def running(pid: int) -> bool:
    """Whether `pid` runs, a zombie not counted (a parent that does not reap it may keep it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal, /proc")
@pytest.mark.parametrize("found_by", ["poll", "re-attach"])
def test_what_a_run_left_running_ends_before_its_slot_is_given_again(tmp_path: Path, found_by: str) -> None:
    """A runner killed outright (kill -9, the OOM killer, the fleet's KILL) took train.py with it,
    but not what train.py had started in a session of its own: reparented to init, it went on
    running, on a GPU beside the next run of the slot. The fleet now kills it as it finds the
    runner gone (its poll, or a controller started again), and spares a process with the same
    command line that is no run's."""
    assert_what_a_run_left_running_ends(tmp_path, found_by)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal, /proc")
def test_what_a_run_left_running_ends_on_a_kernel_without_pidfd_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel before Linux 5.3 (RHEL 7's 3.10, RHEL 8's 4.18) answers pidfd_open ENOSYS, which
    the fleet took for the process's end: what a run left running went on, and nothing said so.
    Without a pidfd the fleet holds a process by its start time, and kills the leftover still."""

    def no_pidfd_open(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(os, "pidfd_open", no_pidfd_open)
    assert_what_a_run_left_running_ends(tmp_path, "poll")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_where_neither_a_pidfd_nor_a_start_time_holds_a_leftover_the_fleet_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With no pidfd_open and a /proc/PID/stat that will not give a start time, a leftover cannot be
    told from a later process given its pid: it is not signalled, and controller.log says once (not
    once per process or per run) that what runs leave running cannot be ended here."""
    monkeypatch.setattr(os, "pidfd_open", lambda pid, flags=0: _raise(OSError(errno.ENOSYS, "no pidfd_open")))
    monkeypatch.setattr(
        procs, "start_time", lambda pid: _raise(PermissionError(errno.EACCES, "Permission denied"))
    )
    procs._say_unheld.cache_clear()
    (exp := tmp_path / "exp").mkdir()
    marked = {**os.environ, RESULT_VARIABLE: result_file(exp)}
    left = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(371)"], env=marked) for _ in range(2)
    ]
    try:
        with caplog.at_level(logging.WARNING, logger="autoresearch"):
            sweeps = leftovers.Leftovers()
            sweeps.end(exp)
            sweeps.end(exp)
        assert [r.getMessage() for r in caplog.records] == [
            "processes a run left running cannot be ended here: neither a pidfd (Linux 5.3+) nor /proc/PID/stat's "
            "start time (Permission denied) can tell them from a later process given their pid; any may share its "
            "slot with the next run"
        ]
        assert all(proc.poll() is None for proc in left)
    finally:
        procs._say_unheld.cache_clear()
        for proc in left:
            proc.kill()
            proc.wait()


def _raise(err: BaseException) -> NoReturn:
    raise err


def started_alone(tmp_path: Path, train_py: str) -> tuple[Fleet, JobSpec, int]:
    """A local fleet of one slot, the job of `train_py` it started, and that job's runner's pid."""
    cluster = ClusterConfig(partitions={"local": PartitionConfig(slots=1)})
    fleet = make_fleet(cluster, deadline_s=60, campaign_dir="")
    (pool,) = fleet.pools.values()
    job = JobSpec(0, make_experiment(tmp_path, train_py, deadline=60, trial=0), pool.name)
    return fleet, job, int(fleet.submit([job])[0].split(":")[1])


def killed_and_found_gone(fleet: Fleet, runner: int) -> list[Finished]:
    """KILL `runner` and, once it has ended, poll `fleet` until it finds it gone: what that poll
    finished. No poll sees it alive (and what runs below it) after the test's own."""
    os.kill(runner, signal.SIGKILL)
    os.waitid(os.P_PID, runner, os.WEXITED | os.WNOWAIT)  # (its end, not reaped: the fleet's to reap)
    finished: list[Finished] = []
    wait_for(lambda: finished.extend(fleet.poll()) or finished, 60, "the runner to be found gone")
    return finished


# A train.py that starts a process with an environment of its own (env={}), which writes its pid
# to left.pid and sleeps.
STARTS_ONE_WITH_ITS_OWN_ENVIRONMENT = (
    "import os, subprocess, sys, time\n"
    "code = \"import os, time; open('p.tmp', 'w').write(str(os.getpid())); os.replace('p.tmp', 'left.pid'); "
    'time.sleep(371)"\n'
    "subprocess.Popen([sys.executable, '-c', code], env={})\n"
    "while True:\n    time.sleep(0.05)\n"
)


@contextlib.contextmanager
def killed_at_the_end(left: Path) -> Iterator[None]:
    """KILL the process whose pid `left` holds once the test ends, whatever it asserted: one a
    defect leaves running must not outlive the test."""
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            os.kill(int(left.read_text()), signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal, /proc")
def test_what_a_run_left_running_with_an_environment_of_its_own_ends_with_its_runner(tmp_path: Path) -> None:
    """A process train.py started with an environment of its own (env={}) has no
    AUTORESEARCH_RESULT to be found by: its runner killed outright, it ran on beside the slot's
    next run. It stays in its runner's session, which the fleet ends too."""
    fleet, job, runner = started_alone(tmp_path, STARTS_ONE_WITH_ITS_OWN_ENVIRONMENT)
    left = job.exp_dir / "left.pid"
    with killed_at_the_end(left):
        wait_for(left.exists, 60, "the process with an environment of its own to start", every=0.02)
        assert [f.outcome["status"] for f in killed_and_found_gone(fleet, runner)] == ["lost"]
        assert not running(int(left.read_text()))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal, /proc")
@pytest.mark.parametrize("cancel", [False, True])
def test_what_a_run_left_running_ends_when_its_runner_died_just_before_the_controller_stopped(
    tmp_path: Path, cancel: bool
) -> None:
    """A runner killed outright after the fleet's last poll and before its controller stopped
    left its session unswept: the stop (or a cancel, which reaped it at once) forgot it, and the
    next controller, finding it gone, sweeps by environment only, so a process train.py started
    with an environment of its own ran on beside the slot's next run. The stop sweeps it first."""
    fleet, job, runner = started_alone(tmp_path, STARTS_ONE_WITH_ITS_OWN_ENVIRONMENT)
    left = job.exp_dir / "left.pid"
    with killed_at_the_end(left):
        wait_for(left.exists, 60, "the process with an environment of its own to start", every=0.02)
        os.kill(runner, signal.SIGKILL)
        os.waitid(os.P_PID, runner, os.WEXITED | os.WNOWAIT)  # (its end, not reaped: the fleet's to reap)
        fleet.shutdown(cancel=cancel)
        assert not running(int(left.read_text()))
        assert not Path(f"/proc/{runner}").exists()  # reaped


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal, /proc")
def test_a_cancelled_runner_killed_past_its_grace_is_swept_and_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled runner that has not ended within its grace is KILLed, its session swept, then
    reaped, as a poll would end it (here with no grace: it still runs train.py as it is KILLed)."""
    monkeypatch.setattr(local, "CANCEL_GRACE_S", 0.0)
    fleet, job, runner = started_alone(tmp_path, STARTS_ONE_WITH_ITS_OWN_ENVIRONMENT)
    left = job.exp_dir / "left.pid"
    with killed_at_the_end(left):
        wait_for(left.exists, 60, "the process with an environment of its own to start", every=0.02)
        fleet.shutdown(cancel=True)
        assert not running(int(left.read_text()))
        assert not Path(f"/proc/{runner}").exists()


# A train.py that starts a process that leaves its session (setsid) with an environment of its
# own (env={}), which writes its pid to left.pid and sleeps.
STARTS_A_LEAVER_WITH_ITS_OWN_ENVIRONMENT = (
    "import subprocess, sys, time\n"
    f"subprocess.Popen([sys.executable, '-c', {LEAVES_ITS_SESSION!r}, 'left.pid'], env={{}})\n"
    "while True:\n    time.sleep(0.05)\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal, /proc")
@pytest.mark.parametrize("watched_by", ["its controller", "a controller that re-attached it"])
def test_what_a_run_left_running_out_of_its_session_and_environment_ends_with_its_runner(
    tmp_path: Path, watched_by: str
) -> None:
    """A process train.py started that both left its session (setsid) and dropped its environment
    (env={}), or only dropped it under a re-attached runner, was found neither by session nor by
    AUTORESEARCH_RESULT: its runner killed outright, it ran on beside the slot's next run. A poll
    records what runs below each runner (its run's orphans' subreaper), and it is killed by that."""
    fleet, job, runner = started_alone(tmp_path, STARTS_A_LEAVER_WITH_ITS_OWN_ENVIRONMENT)
    left = job.exp_dir / "left.pid"
    with killed_at_the_end(left):
        wait_for(left.exists, 60, "the process out of its session and environment to start", every=0.02)
        if watched_by != "its controller":  # the controller died; the next adopts the runner
            cluster = ClusterConfig(partitions={"local": PartitionConfig(slots=1)})
            fleet = make_fleet(cluster, deadline_s=60, campaign_dir="")
            assert fleet.reattach(job, f"local:{runner}")
        assert fleet.poll() == []
        assert [f.outcome["status"] for f in killed_and_found_gone(fleet, runner)] == ["lost"]
        assert not running(int(left.read_text()))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal, /proc")
@pytest.mark.parametrize("controller", ["killed", "stopped", "stopped after a refused write"])
def test_what_a_run_left_running_out_of_its_session_and_environment_ends_when_its_runner_died_unwatched(
    tmp_path: Path, controller: str
) -> None:
    """What a poll recorded below a runner lived only in its controller's memory: a runner killed
    outright while no controller watched (its controller killed or stopped) left a process that had
    left its session and dropped its environment unfound by the next controller, which ran the
    slot's next run beside it. The fleet keeps each runner's lineage in its run's folder. It was
    written only when it changed: one write the disk refused left the file without it for as long
    as the run's processes stayed the same; each poll now writes it until it is written."""
    fleet, job, runner = started_alone(tmp_path, STARTS_A_LEAVER_WITH_ITS_OWN_ENVIRONMENT)
    left, kept = job.exp_dir / "left.pid", job.exp_dir / lineage.LINEAGE_FILE
    with killed_at_the_end(left):
        wait_for(left.exists, 60, "the process out of its session and environment to start", every=0.02)
        if controller == "stopped after a refused write":
            kept.mkdir()  # (a folder in its place: its write refused)
            assert fleet.poll() == []
            kept.rmdir()  # (the lineage the same at the next poll)
        assert fleet.poll() == []
        if controller != "killed":
            fleet.shutdown(cancel=False)
        os.kill(runner, signal.SIGKILL)
        os.waitpid(runner, 0)  # (the controller that started it gone, nothing watches it)
        cluster = ClusterConfig(partitions={"local": PartitionConfig(slots=1)})
        assert not make_fleet(cluster, deadline_s=60, campaign_dir="").reattach(job, f"local:{runner}")
        assert not running(int(left.read_text()))


# A train.py whose child starts a process that leaves its session with an environment of its own
# (env={}) and ends at once: the process, an orphan, is its runner's child (its subreaper).
STARTS_AN_ORPHANED_LEAVER = (
    "import subprocess, sys, time\n"
    f"leaver = [sys.executable, '-c', {LEAVES_ITS_SESSION!r}, 'left.pid']\n"
    "starts_it = f'import subprocess; subprocess.Popen({leaver!r}, env={{}})'\n"
    "subprocess.run([sys.executable, '-c', starts_it])\n"
    "while True:\n    time.sleep(0.05)\n"
)


def passing_over(pid: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next reads of what runs below the runners pass `pid` over, as the kernel's lists
    of children may (`procs.below_by_children`), or a read of every process that saw its parent
    ended but not yet it reparented (`procs.below`)."""
    if procs.children_listed():
        children = procs._children
        monkeypatch.setattr(procs, "_children", lambda parent: [c for c in children(parent) if c != pid])
    else:
        processes = procs.own_live_processes
        monkeypatch.setattr(procs, "own_live_processes", lambda: [p for p in processes() if p[0] != pid])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal, /proc")
def test_what_one_poll_passed_over_still_ends_with_its_runner(tmp_path: Path, monkeypatch) -> None:
    """Each poll replaced a live runner's lineage with what it read, and the kernel's lists of
    children are not reliable unless the children are stopped: a process passed over in one read
    was forgotten, and once its runner was killed outright before the next poll, it ran on beside
    the slot's next run. A poll keeps what the last one saw that is still the same process. (The
    kernel's race cannot be forced: the one read that passes it over is made so by hand.)"""
    fleet, job, runner = started_alone(tmp_path, STARTS_AN_ORPHANED_LEAVER)
    left = job.exp_dir / "left.pid"
    with killed_at_the_end(left):
        wait_for(left.exists, 60, "the orphan out of its session and environment to start", every=0.02)
        assert fleet.poll() == []
        with monkeypatch.context() as patch:
            passing_over(int(left.read_text()), patch)
            assert fleet.poll() == []
        assert [f.outcome["status"] for f in killed_and_found_gone(fleet, runner)] == ["lost"]
        assert not running(int(left.read_text()))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal, /proc")
def test_what_a_re_attached_runner_left_running_ends_when_it_dies_before_the_first_poll(
    tmp_path: Path,
) -> None:
    """A runner a controller re-attached that is killed outright before that controller's first
    poll had no lineage recorded by it: the last controller's is kept, and ends what it saw."""
    first, job, runner = started_alone(tmp_path, STARTS_A_LEAVER_WITH_ITS_OWN_ENVIRONMENT)
    left = job.exp_dir / "left.pid"
    with killed_at_the_end(left):
        wait_for(left.exists, 60, "the process out of its session and environment to start", every=0.02)
        assert first.poll() == []
        cluster = ClusterConfig(partitions={"local": PartitionConfig(slots=1)})
        fleet = make_fleet(cluster, deadline_s=60, campaign_dir="")
        assert fleet.reattach(job, f"local:{runner}")
        os.kill(runner, signal.SIGKILL)
        os.waitpid(runner, 0)  # (its first controller, whose child it is, stands in for init)
        assert [f.outcome["status"] for f in fleet.poll()] == ["lost"]
        assert not running(int(left.read_text()))


# How a kept lineage's record is made another's, where not as written here (`lineage.written_here`).
OTHER_VIEWS = {
    "another boot": {"kernel": "another boot/4:4026531836", "boot": "another boot"},
    "another pid namespace of this boot": {"kernel": "{boot}/4:1"},
    "this boot, by an older version": {"kernel": None},
}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, the kernel's boot id")
@pytest.mark.parametrize("seen_from", ["here", *OTHER_VIEWS, "where the boot could not be read"])
def test_a_kept_lineage_is_ended_only_from_the_kernel_view_it_was_seen_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seen_from: str
) -> None:
    """A runner's kept lineage names processes by pid, of its pid namespace, and start time, which
    counts from the boot: after a reboot, or read from another container on this boot (only the
    boot was recorded), it names no process of its run, and a process here with that pid and start
    time is spared; and where the boot id could not be read, "" matched "" across boots. Where seen
    from here, or by an older version on this boot (its boot alone recorded), it is ended."""
    exp_dir = make_experiment(tmp_path, "pass\n", deadline=60, trial=0)
    gone = subprocess.Popen(["true"])
    gone.wait()  # (the runner, ended unwatched: its pid no process's)
    other = subprocess.Popen(["sleep", "371"])
    try:
        if seen_from == "where the boot could not be read":
            monkeypatch.setattr(procs, "boot_id", lambda: "")
        lineage.keep_lineage(exp_dir, gone.pid, "1", {other.pid: lineage.runner_start(other.pid)})
        if seen_from in OTHER_VIEWS:
            record = json.loads((exp_dir / lineage.LINEAGE_FILE).read_text())
            changes = {k: v and v.format(boot=procs.boot_id()) for k, v in OTHER_VIEWS[seen_from].items()}
            record = {k: v for k, v in {**record, **changes}.items() if v is not None}
            (exp_dir / lineage.LINEAGE_FILE).write_text(json.dumps(record))
        cluster = ClusterConfig(partitions={"local": PartitionConfig(slots=1)})
        fleet = make_fleet(cluster, deadline_s=60, campaign_dir="")
        (pool,) = fleet.pools.values()
        assert not fleet.reattach(JobSpec(0, exp_dir, pool.name), f"local:{gone.pid}")
        ended = seen_from in ("here", "this boot, by an older version")
        assert other.wait(60) == -signal.SIGKILL if ended else other.poll() is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, the kernel's boot id")
@pytest.mark.parametrize("seen_from", ["here", *OTHER_VIEWS, "where the boot could not be read"])
def test_the_processes_left_unseen_are_read_only_from_the_kernel_view_they_were_kept_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seen_from: str
) -> None:
    """leftovers_unseen.json, the processes a restarted controller still looks for, names them by
    pid and start time, and was judged by the boot alone: another container's on this boot, its
    pids of another namespace, was read as this one's, and where the boot id could not be read ""
    matched "" across boots. It is judged as a kept lineage is (`lineage.written_here`)."""
    kept = tmp_path / leftovers.UNSEEN_FILE
    if seen_from == "where the boot could not be read":
        monkeypatch.setattr(procs, "boot_id", lambda: "")
    record = {**lineage.written_from_here(), "unseen": [[4321, "1234", ["run 7"]]]}
    if seen_from in OTHER_VIEWS:
        changes = {k: v and v.format(boot=procs.boot_id()) for k, v in OTHER_VIEWS[seen_from].items()}
        record = {k: v for k, v in {**record, **changes}.items() if v is not None}
    kept.write_text(json.dumps(record))
    read = leftovers._read_unseen(kept)
    assert read == (
        {(4321, "1234"): {b"run 7"}} if seen_from in ("here", "this boot, by an older version") else {}
    )


# A process of this user's that starts a child and prints its pid: no run's, in no run's session.
PARENT_OF_A_SLEEPER = (
    "import subprocess; c = subprocess.Popen(['sleep', '371']); print(c.pid, flush=True); c.wait()"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_re_attached_runner_whose_pid_another_process_took_has_not_its_children_killed(
    tmp_path: Path,
) -> None:
    """A re-attached runner is no child of its controller: once it ends, its pid may be given to
    another process of this user before the next poll. That poll recorded what ran below that
    process as the run's, and its sweep KILLed it (a user's shell's jobs, say). A runner's lineage
    is now that of the process that started when the runner did. (The pid is handed over by hand:
    a real reuse would need the kernel's pids to wrap round between two polls.)"""
    first, job, runner = started_alone(tmp_path, "import time\nwhile True:\n    time.sleep(0.05)\n")
    cluster = ClusterConfig(partitions={"local": PartitionConfig(slots=1)})
    fleet = make_fleet(cluster, deadline_s=60, campaign_dir="")
    assert fleet.reattach(job, f"local:{runner}")
    # A process is told by its start time, in the kernel's clock ticks: one started in the runner's
    # own tick would be taken for it, which a real reuse of its pid, the pids wrapped round, is not.
    born, tick = int(lineage.runner_start(runner)), os.sysconf("SC_CLK_TCK")
    wait_for(lambda: float(Path("/proc/uptime").read_text().split()[0]) * tick > born + 1, 10, "a later tick")
    other = subprocess.Popen([sys.executable, "-c", PARENT_OF_A_SLEEPER], stdout=subprocess.PIPE)
    try:
        assert other.stdout is not None
        child = int(other.stdout.readline())
        assert lineage.runner_start(other.pid) != lineage.runner_start(runner)
        killed_and_found_gone(first, runner)
        fleet._running[0].pid = other.pid  # the runner's pid, given since to another process
        assert [f.outcome["status"] for f in fleet.poll()] == ["lost"]
        assert running(child)
    finally:
        other.kill()
        other.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
@pytest.mark.parametrize("kernel", ["lists children", "lists no children"])
def test_a_poll_reads_what_runs_below_its_runners_not_every_process(
    monkeypatch: pytest.MonkeyPatch, kernel: str
) -> None:
    """Each poll read /proc/PID/stat of every process of the machine to find what runs below its
    runners, 50 ms a poll with a thousand processes; it reads down the kernel's lists of each
    runner's children, and finds what a read of every process finds (which a kernel with no such
    lists still reads)."""
    if kernel == "lists children" and not procs.children_listed():
        pytest.skip("this kernel lists no children (CONFIG_PROC_CHILDREN)")
    starts_one = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {PARENT_OF_A_SLEEPER!r}])"
    tree = subprocess.Popen(
        [sys.executable, "-c", starts_one], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert tree.stdout is not None
        sleeper = int(tree.stdout.readline())
        root = {tree.pid: lineage.runner_start(tree.pid)}
        below = procs.below(root, procs.own_live_processes())
        if kernel == "lists children":
            monkeypatch.setattr(procs, "own_live_processes", lambda: _raise(AssertionError("all /proc read")))
        else:
            monkeypatch.setattr(procs, "children_listed", lambda: False)
        assert lineage.lineages(root) == {tree.pid: below}
        assert len(below) == 2 and sleeper in below
    finally:
        os.killpg(tree.pid, signal.SIGKILL)
        tree.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, the kernel's boot id")
def test_a_dead_runner_of_a_host_with_no_name_is_seen_gone_here(tmp_path: Path, monkeypatch) -> None:
    """A host whose name is empty (sethostname('') in a namespace of its own) wrote runner.pid
    'PID SLOT  KERNEL_VIEW', whose kernel view was read as its host name: its own dead runner was
    taken for another host's, the resume refused and status 'runner unknown from this host'."""
    monkeypatch.setattr(socket, "gethostname", lambda: "")
    fleet, job, runner = started_alone(tmp_path, "import time\ntime.sleep(371)\n")
    killed_and_found_gone(fleet, runner)
    assert runner_alive(job.exp_dir) is False


# A process that leaves its session and stays in uninterruptible sleep (a vfork parent waiting on
# its child) until a byte comes on its stdin, its AUTORESEARCH_RESULT hidden meanwhile (renamed in
# the memory the two share): a process stuck in the kernel, found by its environment alone, which
# the fleet does not read in that sleep.
UNINTERRUPTIBLE_UNTIL_STDIN = r"""
#include <string.h>
#include <unistd.h>
extern char **environ;
int main(void) {
    char *mark = NULL, byte;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "AUTORESEARCH_RESULT=", 20) == 0) mark = *e;
    setsid();
    if (vfork() == 0) {
        if (mark) mark[0] = 'X';
        read(0, &byte, 1);
        if (mark) mark[0] = 'A';
        _exit(0);
    }
    pause();
    return 0;
}
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal, /proc")
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for a process in uninterruptible sleep")
def test_a_leftover_in_uninterruptible_sleep_as_its_runner_ends_is_killed_at_a_later_poll(
    tmp_path: Path,
) -> None:
    """A process a run left running that was in uninterruptible sleep (D) as the fleet found its
    runner gone was skipped, its environment not read, and never looked at again: out of that
    sleep it ran on beside the slot's next run. The fleet looks again at each poll."""
    helper = tmp_path / "uninterruptible"
    (source := tmp_path / "uninterruptible.c").write_text(UNINTERRUPTIBLE_UNTIL_STDIN)
    subprocess.run(["cc", "-o", str(helper), str(source)], check=True)
    os.mkfifo(release := tmp_path / "release")
    writer = os.open(release, os.O_RDWR)  # (opened both ways: neither end waits for the other)
    train_py = (
        "import os, subprocess, time\n"
        f"helper = subprocess.Popen([{str(helper)!r}], stdin=open({str(release)!r}, 'rb'))\n"
        "open('p.tmp', 'w').write(str(helper.pid)); os.replace('p.tmp', 'helper.pid')\n"
        "while True:\n    time.sleep(0.05)\n"
    )
    fleet, job, runner = started_alone(tmp_path, train_py)
    pid_file = job.exp_dir / "helper.pid"
    wait_for(pid_file.exists, 60, "the helper to start", every=0.02)
    left = int(pid_file.read_text())
    try:
        wait_for(lambda: state_of(left) == "D", 60, "the helper's uninterruptible sleep", every=0.02)
        killed_and_found_gone(fleet, runner)
        assert running(left)
        os.write(writer, b"x")
        wait_for(lambda: state_of(left) != "D", 60, "the helper out of its sleep", every=0.02)
        assert fleet.poll() == []
        assert not running(left)
    finally:
        os.close(writer)
        with contextlib.suppress(ProcessLookupError):
            os.kill(left, signal.SIGKILL)


@pytest.mark.skipif(not os.access(FREEZER, os.W_OK), reason="no cgroup v1 freezer this user may write")
def test_a_leftover_that_kill_cannot_end_in_uninterruptible_sleep_does_not_hold_up_the_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process of a runner's session in uninterruptible sleep that KILL cannot end (a hung mount;
    here one frozen) was found again and KILLed again until the sweep's 5 s had passed, each poll
    that found its runner gone held up so long. Its KILL pending, it is passed by; it ends once
    out of that sleep (here with a sweep given an hour: the poll would not return)."""
    monkeypatch.setattr(leftovers, "TERM_GRACE_S", 3600.0)
    fleet, job, runner = started_alone(tmp_path, STARTS_ONE_WITH_ITS_OWN_ENVIRONMENT)
    with freezer_cgroup() as group:
        left = frozen(group, job.exp_dir / "left.pid")
        polled = threading.Thread(target=killed_and_found_gone, args=(fleet, runner), daemon=True)
        polled.start()
        wait_for(lambda: not polled.is_alive(), 60, "the poll that finds the runner gone to return")
        (group / "freezer.state").write_text("THAWED")
        wait_for(lambda: not running(left), 60, "the KILLed process to end once thawed")


@pytest.mark.skipif(not os.access(FREEZER, os.W_OK), reason="no cgroup v1 freezer this user may write")
@pytest.mark.parametrize("written", ["at once", "after a refused write"])
def test_a_leftover_not_seen_yet_is_looked_at_again_by_the_next_controller(
    tmp_path: Path, written: str
) -> None:
    """A process a sweep could not see (in uninterruptible sleep, here frozen; or its environment's
    read hanging) was looked at again at each poll of its controller only: one restarted forgot
    it, and out of that sleep it ran on beside the slot's next run. The campaign folder keeps
    them; the next controller's poll kills it once readable. A write the disk refused was tried
    again only once they changed: a process in that sleep for good never changes them."""
    cluster = ClusterConfig(partitions={"local": PartitionConfig(slots=1)})
    (campaign := tmp_path / "campaign").mkdir()
    fleet = make_fleet(cluster, deadline_s=60, campaign_dir=str(campaign))
    (pool,) = fleet.pools.values()
    job = JobSpec(0, make_experiment(tmp_path, STARTS_A_LEAVER, deadline=60, trial=0), pool.name)
    runner = int(fleet.submit([job])[0].split(":")[1])
    with freezer_cgroup() as group:
        left = frozen(group, job.exp_dir / "left.pid")
        if written == "after a refused write":
            (campaign / leftovers.UNSEEN_FILE).mkdir()  # (a folder in its place: its write refused)
        killed_and_found_gone(fleet, runner)
        assert running(left)
        if written == "after a refused write":
            (campaign / leftovers.UNSEEN_FILE).rmdir()
            assert fleet.poll() == []  # (the same process unseen: nothing changed)
        again = make_fleet(cluster, deadline_s=60, campaign_dir=str(campaign))  # the controller restarted
        (group / "freezer.state").write_text("THAWED")
        wait_for(lambda: state_of(left) != "D", 60, "the process to be thawed", every=0.02)
        assert again.poll() == []
        assert not running(left)


@pytest.mark.skipif(not os.access(FREEZER, os.W_OK), reason="no cgroup v1 freezer this user may write")
def test_a_process_of_no_run_in_uninterruptible_sleep_is_not_kept_for_each_run_that_ends(
    tmp_path: Path,
) -> None:
    """A process of this user's that is no run's, in uninterruptible sleep for good (a hung mount;
    here one frozen), was kept unseen for every run that ended after it, leftovers_unseen.json
    growing with the runs and written again at each run's end. A process older than a run's
    runner is not its run's: runs that all began after it keep nothing of it."""
    (elsewhere := tmp_path / "elsewhere").mkdir()
    no_runs = subprocess.Popen([sys.executable, "-c", LEAVES_ITS_SESSION, "left.pid"], cwd=elsewhere)
    cluster = ClusterConfig(partitions={"local": PartitionConfig(slots=1)})
    (campaign := tmp_path / "campaign").mkdir()
    fleet = make_fleet(cluster, deadline_s=60, campaign_dir=str(campaign))
    (pool,) = fleet.pools.values()
    try:
        with freezer_cgroup() as group:
            frozen(group, elsewhere / "left.pid")
            finished: list[Finished] = []
            for trial in range(3):
                exp = make_experiment(tmp_path, "pass\n", deadline=60, name=f"exp{trial}", trial=trial)
                fleet.submit([JobSpec(trial, exp, pool.name)])
                ends = trial + 1
                wait_for(
                    lambda ends=ends: finished.extend(fleet.poll()) or len(finished) == ends, 60, "its end"
                )
            assert not (campaign / leftovers.UNSEEN_FILE).exists()
    finally:
        no_runs.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_process_whose_environment_read_hangs_is_waited_for_once_and_looked_at_again_once_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A read of a process's environment that hung (a process stuck on a hung mount) cost each
    ended run a wait of 15 s and a thread left to it, and its process was never read again. It
    is waited for once, said once; later runs' sweeps pass it by, and once the read returns the
    next poll reads it, here a leftover of the first run, and kills it."""
    (exp_a := tmp_path / "a").mkdir()
    (exp_b := tmp_path / "b").mkdir()
    marked = {**os.environ, RESULT_VARIABLE: result_file(exp_a)}
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(371)"], env=marked)
    mount_back = threading.Event()
    reads_of_left: list[int] = []
    read = leftovers._read_environ

    def hung_for_left(pid: int) -> bytes:
        if pid == left.pid:
            reads_of_left.append(pid)
            mount_back.wait()
        return read(pid)

    monkeypatch.setattr(leftovers, "_read_environ", hung_for_left)
    sweeps = leftovers.Leftovers()
    try:
        with caplog.at_level(logging.WARNING, logger="autoresearch"):
            sweeps.end(exp_a)
            sweeps.end(exp_b)
        assert len(reads_of_left) == 1
        assert [r.getMessage() for r in caplog.records] == [
            f"reading the environment of process {left.pid} hangs (stuck on a hung mount?): it is looked at "
            "again once that read returns; until then, if a run left it running, it may share its slot with "
            "the next run"
        ]
        assert left.poll() is None
        mount_back.set()
        wait_for(
            lambda: sweeps.retry() or left.poll() is not None, 60, "the leftover to be killed", every=0.02
        )
    finally:
        mount_back.set()
        left.kill()
        left.wait()


def assert_what_a_run_left_running_ends(tmp_path: Path, found_by: str) -> None:
    """A run's setsid'd leftover, its runner killed, is killed as the fleet finds the runner gone
    (`found_by` its poll or a re-attach); a process of the same command line outside runs lives."""
    cluster = ClusterConfig(partitions={"local": PartitionConfig(slots=1)})
    fleet = make_fleet(cluster, deadline_s=60, campaign_dir="")
    (pool,) = fleet.pools.values()
    job = JobSpec(0, make_experiment(tmp_path, STARTS_A_LEAVER, deadline=60, trial=0), pool.name)
    (elsewhere := tmp_path / "elsewhere").mkdir()
    no_runs = subprocess.Popen([sys.executable, "-c", LEAVES_ITS_SESSION, "left.pid"], cwd=elsewhere)
    handle = fleet.submit([job])[0]
    left = job.exp_dir / "left.pid"
    try:
        wait_for(lambda: left.exists() and (elsewhere / "left.pid").exists(), 60, "both to start", every=0.02)
        runner = int(handle.split(":")[1])
        os.kill(runner, signal.SIGKILL)
        wait_for(lambda: not running(runner), 60, "the runner to die", every=0.02)
        if found_by == "poll":
            finished: list[Finished] = []
            wait_for(lambda: finished.extend(fleet.poll()) or finished, 60, "the runner to be found gone")
            assert [f.outcome["status"] for f in finished] == ["lost"]
        else:
            assert not make_fleet(cluster, deadline_s=60, campaign_dir="").reattach(job, handle)
        assert not running(int(left.read_text()))
        assert running(no_runs.pid)
    finally:
        no_runs.kill()
        no_runs.wait()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            os.kill(int(left.read_text()), signal.SIGKILL)


def test_a_controller_leaves_at_once_while_a_proposer_call_is_in_flight(tmp_path: Path) -> None:
    """A stopped controller must not wait for a proposer call (a Claude call retried can take
    minutes; under Slurm the job would be killed before it re-queues itself): here one that never
    returns. The process must end on its own; the timeout only guards the test."""
    code = (
        "import sys, threading\n"
        "from autoresearch.pump import BackgroundPump\n"
        "class Stuck:\n"
        "    name = 'stuck'\n"
        "    def propose(self, context):\n"
        "        threading.Event().wait()\n"
        "pump = BackgroundPump(Stuck())\n"
        "from autoresearch.agent.fakeapi import sample_context\n"
        "pump.request(sample_context())\n"
        "assert pump.busy\n"
        "pump.close()\n"
        "print('closed', flush=True)\n"
        "sys.exit(130)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130, proc.stderr
    assert proc.stdout == "closed\n"


def test_a_runner_that_cannot_be_started_is_lost_and_the_batchs_others_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The controller's Python gone from under it (a .venv made again while a campaign runs) made
    the spawn's OSError end the controller in a traceback, the handles of the batch's runs already
    started lost with it. The runs it cannot start are lost, as runs sbatch refuses (re-queued),
    said in one line; those started before keep their handles and run."""
    cluster = ClusterConfig(partitions={"local": PartitionConfig(slots=2)})
    fleet = make_fleet(cluster, deadline_s=60, campaign_dir="")
    (pool,) = fleet.pools.values()
    started = JobSpec(0, make_experiment(tmp_path, ENV_DUMP, deadline=60, name="started", trial=0), pool.name)
    refused = JobSpec(1, make_experiment(tmp_path, ENV_DUMP, deadline=60, name="refused", trial=1), pool.name)
    handles = fleet.submit([started])
    gone = str(tmp_path / "removed-venv" / "python")
    monkeypatch.setattr(sys, "executable", gone)
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        handles |= fleet.submit([refused])
    assert list(handles) == [0]
    assert [r.getMessage() for r in caplog.records] == [
        f"the runner could not be started: {gone}: No such file or directory"
    ]
    finished: list[Finished] = []
    wait_for(lambda: finished.extend(fleet.poll()) or len(finished) >= 2, 120, "both jobs", every=0.05)
    outcomes = {f.trial: (f.outcome["status"], f.outcome.get("reason")) for f in finished}
    assert outcomes == {
        0: ("ok", ""),
        1: ("lost", f"the runner could not be started: {gone}: No such file or directory"),
    }


def test_a_step_of_the_wall_clock_does_not_end_a_local_run_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backstop deadline counted by the wall clock: an hour's step forward (NTP after a VM
    or a laptop resumed) ended every local run at once as over its deadline, each a retry. It
    counts by the monotonic clock: the run goes on and ends as it would."""
    cluster = ClusterConfig(partitions={"local": PartitionConfig(slots=1)})
    fleet = make_fleet(cluster, deadline_s=60, campaign_dir="")
    (pool,) = fleet.pools.values()
    hold, held = held_train_py(tmp_path, first="open('began', 'w').close()\n")
    job = JobSpec(0, make_experiment(tmp_path, held, deadline=3600, trial=0), pool.name)
    fleet.submit([job])
    wait_for((job.exp_dir / "began").exists, 60, "train.py to begin")
    wall = time.time
    monkeypatch.setattr(time, "time", lambda: wall() + 3600)
    assert fleet.poll() == [] and fleet.running() == 1
    monkeypatch.undo()
    hold.unlink()
    finished: list[Finished] = []
    wait_for(lambda: finished.extend(fleet.poll()) or finished, 60, "the run to end", every=0.05)
    # (a crash: the held train.py writes no result; the clock's step made it "interrupted")
    assert [(f.trial, f.outcome["status"]) for f in finished] == [(0, "crash")]
