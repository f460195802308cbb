"""A local campaign resumed on another host (its folder on a shared file system) while the runs its
last controller launched still run on the first: the new host cannot see those runners, so the
start is refused while they run, and collects them, from any host, once they have ended; none is
run twice, none lost. A real runner; the resuming controller is told another host name."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from engine_helpers import (
    ANOTHER_KERNEL,
    ENV_DUMP,
    REPO,
    campaign_command,
    collected_once,
    controller_killed_mid_run,
    load,
    make_experiment,
    wait_for,
)
from optuna.trial import FrozenTrial, TrialState, create_trial

from autoresearch.files import read_json
from autoresearch.fleet.base import JobSpec, Pool
from autoresearch.fleet.local import LocalFleet
from autoresearch.fleet.other_fleet import other_hosts_runs
from autoresearch.fleet.runner_pid import (
    RunnerRecord,
    find_runner,
    is_our_runner,
    kernel_view,
    runner_alive,
    runner_record,
)
from autoresearch.folder_lock import FolderLocked, lock_refusal, take_lock
from autoresearch.heartbeat import controller_state
from autoresearch.runner import LOCK_FILE, PID_FILE, REFUSED_FILE, STARTED_FILE
from autoresearch.status import RUNNER_GONE, RUNNER_UNSEEN, local_runner_state
from autoresearch.workspace import experiment_dir

BUDGET = "campaign.budget.max_experiments=4"
OTHER_HOST = "login-2"
# `python -m autoresearch` in a process whose host is OTHER_HOST, as it would be on that host.
ON_OTHER_HOST = (
    f"import runpy, socket; socket.gethostname = lambda: {OTHER_HOST!r}; "
    "runpy.run_module('autoresearch', run_name='__main__', alter_sys=True)"
)


def resumed_on_other_host(runs: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = campaign_command(runs, BUDGET, "cluster.partitions.local.slots=1")
    assert command[1:3] == ["-m", "autoresearch"]
    return subprocess.run(
        [sys.executable, "-c", ON_OTHER_HOST, *command[3:]],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def as_on_another_host(exp: Path) -> int:
    """`exp`'s runner.pid made to name, as another host's would, a pid that is no runner of `exp`
    here (this test's own) under another machine's kernel view: the pid it names. The runner, on
    this machine, could be seen here."""
    pid, slot, host, *_ = (exp / PID_FILE).read_text().split()
    (exp / PID_FILE).write_text(f"{os.getpid()} {slot} {host} {ANOTHER_KERNEL}")
    return os.getpid()


def another_container(boot: str) -> str:
    """The kernel view of a container's pid namespace (no machine's own) under the boot `boot`."""
    return f"{boot}/4:4026532999"


def this_boot() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


@pytest.mark.parametrize("where", ["this-kernel", "another-machine"])
def test_a_runner_of_another_container_of_this_name_is_not_judged_here(tmp_path: Path, where: str) -> None:
    """Two containers of one name (each 'localhost', or run with their host's network and so its
    name), on this kernel or another machine's: the runner.pid of the one was read by /proc in the
    other, as the same host's; its runner, there alive, was taken for gone, and its run lost and
    run again while it ran on, or a local process that has its pid taken for it. Another kernel
    view than this one is another host's, whatever its name: the start is refused."""
    if kernel_view() is None:
        pytest.skip("no kernel view here (/proc)")
    started, hold = controller_killed_mid_run(tmp_path)
    exp, runs = started.parent, tmp_path / "runs"
    trial, runner = int(exp.name), int((exp / PID_FILE).read_text().split()[0])
    os.killpg(runner, signal.SIGKILL)  # not this machine's runner: /proc here shows nothing of it
    hold.unlink()
    wait_for(lambda: not is_our_runner(runner, exp), 60, "the runner's end")
    view = another_container(this_boot() if where == "this-kernel" else ANOTHER_KERNEL.split("/")[0])
    name = socket.gethostname()
    (exp / PID_FILE).write_text(f"{os.getpid()} 0 {name} {view}")  # a pid live here, not its runner
    assert runner_alive(exp) is None
    assert local_runner_state(exp, name, name) == RUNNER_UNSEEN

    refused = subprocess.run(
        campaign_command(runs, BUDGET, "cluster.partitions.local.slots=1"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2, said
    assert f"trial {trial} (pid {os.getpid()} on {name}, another machine or container of that name)" in said
    study = load(runs / "toy")
    assert study.trials[trial].state == TrialState.RUNNING
    assert not [t for t in study.trials if t.user_attrs.get("retry_of") == trial]


def local_run_in_flight(number: int) -> FrozenTrial:
    """Trial `number`, running in a local runner (its handle), as the last start left it."""
    running = create_trial(
        state=TrialState.RUNNING, user_attrs={"exp_dir": f"experiments/{number:05d}", "job": "local:57"}
    )
    running.number = number
    return running


def test_a_run_another_hosts_disk_refused_before_its_runner_pid_does_not_hold_the_start(
    tmp_path: Path,
) -> None:
    """A runner whose started.json the full disk refused before its fleet wrote its runner.pid
    leaves runner.refused, and that runner.pid after it: a start on another host took the run
    for one still in flight there, and was refused, though it had ended, lost to the disk."""
    campaign = tmp_path / "toy"
    exp = experiment_dir(campaign, 3)
    exp.mkdir(parents=True)
    (exp / REFUSED_FILE).touch()
    (exp / PID_FILE).write_text(f"57 0 {OTHER_HOST} {ANOTHER_KERNEL}")  # (its fleet's, late)
    assert other_hosts_runs([local_run_in_flight(3)], campaign) == []


# A container's init, `unshare` its runtime: the campaign's controller, killed (kill -9) once told
# ("ended" then said), its runner going on; the container ends, and all in it, once its input does.
CONTAINER_INIT = '"$@" >/dev/null 2>&1 & read _; kill -9 $!; wait $!; echo ended; read _'


def containers_here() -> bool:
    """Whether this test may make a pid namespace of its own (root, and `unshare`)."""
    try:
        made = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    except OSError:
        return False
    return made.returncode == 0


@contextmanager
def held_run_in_another_container(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """A toy campaign started in another container on this kernel (a pid namespace of its own),
    its controller killed while its first run ran, held (tmp_path/hold): that run's folder, and
    the container, which ends, and its runner with it, as its stdin is closed."""
    if kernel_view() is None or not containers_here():
        pytest.skip("no pid namespace of its own can be made here (root, unshare)")
    hold, runs = tmp_path / "hold", tmp_path / "runs"
    hold.touch()
    init = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", CONTAINER_INIT, "sh"]
    container = subprocess.Popen(
        [*init, *campaign_command(runs, BUDGET, "cluster.partitions.local.slots=1")],
        cwd=REPO,
        env={**os.environ, "TOY_HOLD": str(hold)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: list(runs.glob("toy/experiments/*/started.json")), 120, "a run started")
        container.stdin.write("kill the controller\n")
        container.stdin.flush()
        assert container.stdout.readline() == "ended\n"
        (started,) = runs.glob("toy/experiments/*/started.json")
        yield started.parent, container
    finally:
        container.kill()  # (its init killed with it: the container ends)
        container.wait(timeout=60)
        hold.unlink(missing_ok=True)


def container_ended(container: subprocess.Popen, exp: Path) -> None:
    """End `container`, as a `docker restart` or `docker rm -f` does: its runner of `exp` dies
    with it, without a word."""
    runner = find_runner(exp)  # (its pid here: this namespace sees the container's)
    assert runner is not None
    container.stdin.close()
    container.wait(timeout=60)
    wait_for(lambda: not is_our_runner(runner, exp), 60, "the runner's end")
    (exp.parents[3] / "hold").unlink()  # (tmp_path/hold: the re-queued run is not held)


def resumed_here(runs: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        campaign_command(runs, BUDGET, "cluster.partitions.local.slots=1"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_runner_of_another_container_on_this_kernel_is_judged_by_its_lock(
    tmp_path: Path, monkeypatch
) -> None:
    """A container restarted (docker restart: its name, this boot, a new pid namespace) while its
    runners ran: they ended with the old namespace, but its resume was refused, as for a sibling
    container of that name whose runner runs, until the user removed each runner.pid. The runner
    holds its lock for its life: while it runs the start is refused; once it ended, with its
    container, the run is lost and re-queued, and status says 'runner gone', under any name."""
    runs = tmp_path / "runs"
    with held_run_in_another_container(tmp_path) as (exp, container):
        trial, name = int(exp.name), socket.gethostname()
        pid, *_, mark = (exp / PID_FILE).read_text().split()
        assert mark == "flock"
        assert runner_alive(exp) is None
        refused = resumed_here(runs)
        said = refused.stdout + refused.stderr
        assert refused.returncode == 2, said
        assert f"trial {trial} (pid {pid} on {name}, another machine or container of that name)" in said
        assert load(runs / "toy").trials[trial].state == TrialState.RUNNING

        container_ended(container, exp)
        assert runner_alive(exp) is False
        with monkeypatch.context() as renamed:  # (made again under another name)
            renamed.setattr(socket, "gethostname", lambda: OTHER_HOST)
            assert local_runner_state(exp, name, name) == RUNNER_GONE
        resumed = resumed_here(runs)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = load(runs / "toy")
    assert study.trials[trial].user_attrs["status"] == "lost"
    assert [t for t in study.trials if t.user_attrs.get("retry_of") == trial]


def test_two_looks_at_a_left_lock_at_once_both_see_the_runner_gone(tmp_path: Path) -> None:
    """A restarted container's ended runner (another pid namespace, this boot, 'flock'), looked at
    by two processes at once (a resume, and a `status` beside it): each took the lock exclusive for
    its look, so the one that came second found it held and was refused, naming another container
    whose runner runs. A look takes it shared now: only the runner's own lock holds it."""
    if kernel_view() is None:
        pytest.skip("no kernel view here (/proc)")
    campaign, running = tmp_path / "toy", local_run_in_flight(3)
    exp = experiment_dir(campaign, 3)
    exp.mkdir(parents=True)
    (exp / STARTED_FILE).write_text("{}")
    (exp / PID_FILE).write_text(f"57 0 {socket.gethostname()} {another_container(this_boot())} flock")
    lock = os.open(exp / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_SH)  # (the other look, in flight)
        assert other_hosts_runs([running], campaign) == []
        assert local_runner_state(exp, socket.gethostname(), socket.gethostname()) == RUNNER_GONE
        fcntl.flock(lock, fcntl.LOCK_EX)  # (a runner that runs there)
        (said,) = other_hosts_runs([running], campaign)
        assert "trial 3 (pid 57 on" in said
    finally:
        os.close(lock)


def test_an_older_runner_of_another_container_on_this_kernel_is_still_refused(tmp_path: Path) -> None:
    """A runner.pid written by an older version, whose runner held no lock (no 'flock'): its lock
    file free says nothing of it, and the start is refused as before, naming its runner.pid."""
    with held_run_in_another_container(tmp_path) as (exp, container):
        container_ended(container, exp)
        record = (exp / PID_FILE).read_text().split()
        (exp / PID_FILE).write_text(" ".join(record[:4]))
        refused = resumed_here(tmp_path / "runs")
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2 and f"rm {exp / PID_FILE}" in said, said
    assert f"trial {int(exp.name)}: started by an older version of autoresearch" in said, said


@pytest.mark.parametrize(
    ("written", "older"),
    [
        ("{host} {this_boot}", True),  # an older version's, in a container on this boot
        ("{host}", True),  # older still: no kernel view
        ("{host} {another_boot}", False),  # another boot: no lock could tell
        ("{host} {this_boot} flock", False),  # its runner holds its lock
    ],
    ids=["this-boot", "no-kernel-view", "another-boot", "locked"],
)
def test_a_refusal_over_an_older_versions_runner_says_so(tmp_path: Path, written: str, older: bool) -> None:
    """A container restarted, or made again, whose runs an older version started (runner.pid with
    no 'flock': its runners held no lock): the refusal spoke only of a host down for good, and its
    user could not tell that the runs had ended with the old container; it says an older version
    started them, and how to give them up. Where no lock could tell (another boot), it does not."""
    if kernel_view() is None:
        pytest.skip("no kernel view here (/proc)")
    campaign = tmp_path / "toy"
    exp = experiment_dir(campaign, 3)
    exp.mkdir(parents=True)
    (exp / STARTED_FILE).write_text("{}")
    views = {"host": OTHER_HOST, "this_boot": another_container(this_boot()), "another_boot": ANOTHER_KERNEL}
    (exp / PID_FILE).write_text(f"57 0 {written.format(**views)}")
    lock = os.open(exp / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # (a runner that runs there, where it holds its lock)
        (said,) = other_hosts_runs([local_run_in_flight(3)], campaign)
    finally:
        os.close(lock)
    older_said = "; trial 3: started by an older version of autoresearch (no 'flock' in runner.pid)"
    assert (older_said in said) == older, said
    assert said.count(f"rm {exp / PID_FILE}") == (2 if older else 1), said


def test_a_refusal_over_a_runner_whose_lock_its_disk_refused_does_not_blame_an_older_version(
    tmp_path: Path,
) -> None:
    """A runner this version started where its runner.lock could not be made (a full disk) holds no
    lock, and its runner.pid said so no more than an older version's: the refusal told its user the
    run was started by an older version of autoresearch. The fleet marks it 'nolock', and the
    refusal names the disk's refusal. The runner.pid is the fleet's, moved to another container."""
    if kernel_view() is None:
        pytest.skip("no kernel view here (/proc)")
    exp = make_experiment(tmp_path, ENV_DUMP, trial=3)
    (exp / LOCK_FILE).symlink_to(tmp_path / "gone" / "runner.lock")  # (open fails: as a full disk's)
    fleet = LocalFleet(Pool("local", 1, "cpu", 0.0, "local"), [], 1, 30.0)
    fleet.submit([JobSpec(3, exp, "local")])
    pid, slot, _, _, *mark = (exp / PID_FILE).read_text().split()
    wait_for(lambda: fleet.poll(), 60, "the run's end")
    campaign = tmp_path / "toy"
    moved = experiment_dir(campaign, 3)
    moved.mkdir(parents=True)
    (moved / STARTED_FILE).write_text("{}")
    (moved / PID_FILE).write_text(" ".join([pid, slot, OTHER_HOST, another_container(this_boot()), *mark]))
    (said,) = other_hosts_runs([local_run_in_flight(3)], campaign)
    assert "older version" not in said, said
    assert (
        "; trial 3: its runner.lock refused by its disk when it started ('nolock' in runner.pid)" in said
    ), said


def test_this_machines_runner_from_before_a_reboot_is_seen_gone(tmp_path: Path) -> None:
    """A machine rebooted (a power cut) under its name: its runners ended with the boot runner.pid
    names, in the machine's own pid namespace, as this one is: /proc here judges them, gone."""
    here = kernel_view()
    if here is None or not here.endswith(":4026531836"):
        pytest.skip("not in the machine's own pid namespace (a container)")
    no_process = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # (no pid is ever this)
    (tmp_path / PID_FILE).write_text(f"{no_process} 0 {socket.gethostname()} {ANOTHER_KERNEL}")
    assert runner_alive(tmp_path) is False


def test_runner_pid_names_the_kernel_view_and_old_ones_still_read(tmp_path: Path) -> None:
    """runner.pid names its host's kernel view; one written before (no view, no host, no slot)
    reads as before."""
    started, hold = controller_killed_mid_run(tmp_path)
    exp = started.parent
    hold.unlink()
    pid, slot, host, kernel, mark = (exp / PID_FILE).read_text().split()
    assert host == socket.gethostname() and kernel == kernel_view() is not None and mark == "flock"
    wait_for(lambda: not is_our_runner(int(pid), exp), 60, "the runner's end")
    node = read_json(exp / STARTED_FILE)["node"]
    for written, read in (
        (f"{pid} {slot} login-2 {kernel} flock", RunnerRecord(int(pid), "login-2", kernel, True)),
        (f"{pid} {slot}  {kernel} flock", RunnerRecord(int(pid), node, kernel, True)),
        (f"{pid} {slot} login-2 {kernel} nolock", RunnerRecord(int(pid), "login-2", kernel, False, True)),
        (f"{pid} {slot} login-2 {kernel}", RunnerRecord(int(pid), "login-2", kernel)),
        (f"{pid} {slot} login-2", RunnerRecord(int(pid), "login-2", None)),
        (f"{pid} {slot}", RunnerRecord(int(pid), read_json(exp / STARTED_FILE)["node"], None)),
        (pid, RunnerRecord(int(pid), read_json(exp / STARTED_FILE)["node"], None)),
    ):
        (exp / PID_FILE).write_text(written)
        assert runner_record(exp) == read


def test_a_machine_renamed_while_its_runners_died_sees_them_gone(tmp_path: Path, monkeypatch) -> None:
    """A laptop renamed by its network, or a container made again with another name, whose runners
    died with its controller: the resume was refused as if another host's runners could still run
    them, until the user removed their runner.pid by hand, though /proc here showed them gone.
    Under the kernel view runner.pid names, the run is lost and re-queued, as under the same name."""
    started, hold = controller_killed_mid_run(tmp_path)
    exp, runs = started.parent, tmp_path / "runs"
    trial, runner = int(exp.name), int((exp / PID_FILE).read_text().split()[0])
    os.killpg(runner, signal.SIGKILL)  # the runner dies without a word, as at a power cut
    hold.unlink()
    wait_for(lambda: not is_our_runner(runner, exp), 60, "the runner's end")
    old_name = read_json(exp / STARTED_FILE)["node"]
    with monkeypatch.context() as renamed:
        renamed.setattr(socket, "gethostname", lambda: OTHER_HOST)
        assert local_runner_state(exp, old_name, old_name) == RUNNER_GONE

    resumed = resumed_on_other_host(runs, {})
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = load(runs / "toy")
    assert study.trials[trial].user_attrs["status"] == "lost"
    assert [t for t in study.trials if t.user_attrs.get("retry_of") == trial]


def test_a_runner_seen_here_is_this_hosts_though_its_host_name_changed(tmp_path: Path, monkeypatch) -> None:
    """A laptop's host name changes with its network (macOS, DHCP): its own live runner, which
    runner.pid names under the old name, was taken for another host's, and the resume refused
    until the user gave up or killed a run it could have adopted."""
    started, hold = controller_killed_mid_run(tmp_path)  # its runner goes on, held
    exp, campaign = started.parent, tmp_path / "runs" / "toy"
    runner = int((exp / PID_FILE).read_text().split()[0])
    try:
        monkeypatch.setattr(socket, "gethostname", lambda: OTHER_HOST)
        assert other_hosts_runs(load(campaign).trials, campaign) == []
        assert runner_alive(exp) is True
        # status says so too: the controller stopped on, and the run began on, the old name
        old_name = read_json(exp / STARTED_FILE)["node"]
        assert local_runner_state(exp, old_name, old_name) == "running"
    finally:
        hold.unlink()
    wait_for(lambda: not is_our_runner(runner, exp), 60, "the runner's end")


def test_a_local_campaign_resumed_on_another_host_while_its_runner_runs_is_refused(tmp_path: Path) -> None:
    """The other host found no live runner by its pid: the trial was failed as lost (a retry
    counted) and run again while its runner went on on the first host, its result thrown away."""
    started, hold = controller_killed_mid_run(tmp_path)  # its runner goes on, held
    exp, runs, run_log = started.parent, tmp_path / "runs", tmp_path / "ran.log"
    trial, runner = int(exp.name), (exp / PID_FILE).read_text().split()[0]
    env = {"TOY_RUN_LOG": str(run_log)}
    elsewhere = as_on_another_host(exp)
    try:
        refused = resumed_on_other_host(runs, env)
    finally:
        hold.unlink()
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2, said
    assert f"trial {trial} (pid {elsewhere} on {socket.gethostname()}) may still run" in said
    assert f"({OTHER_HOST})" in said and f"rm {exp / PID_FILE}" in said and "Traceback" not in said
    study = load(runs / "toy")
    assert study.trials[trial].state == TrialState.RUNNING
    assert not [t for t in study.trials if t.user_attrs.get("retry_of") == trial]
    wait_for(lambda: not is_our_runner(int(runner), exp), 60, "the runner's end")

    resumed = resumed_on_other_host(runs, env)  # its outcome.json: collected from any host
    collected_once(resumed, exp, run_log)


@pytest.mark.parametrize("kernel", [f" {ANOTHER_KERNEL}", ""], ids=["another-kernel", "none-recorded"])
def test_a_run_whose_host_died_is_given_up_by_removing_its_runner_pid(tmp_path: Path, kernel: str) -> None:
    """A runner whose host is down for good writes no outcome.json, and no other host can see it
    is gone: its run keeps the start refused until the user removes its runner.pid, which the
    line says; then it is failed as lost and queued again, not waited for for ever. So is one
    whose runner.pid names no kernel view, written before they were."""
    started, hold = controller_killed_mid_run(tmp_path)
    exp, runs = started.parent, tmp_path / "runs"
    trial, runner = int(exp.name), int((exp / PID_FILE).read_text().split()[0])
    os.killpg(runner, signal.SIGKILL)  # its host's end: the runner writes nothing more
    hold.unlink()
    wait_for(lambda: not is_our_runner(runner, exp), 60, "the runner's end")
    pid, slot, host, *_ = (exp / PID_FILE).read_text().split()
    (exp / PID_FILE).write_text(f"{pid} {slot} {host}{kernel}")  # another machine's, or an old one
    refused = resumed_on_other_host(runs, {})
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2 and f"rm {exp / PID_FILE}" in said, said

    (exp / PID_FILE).unlink()
    resumed = resumed_on_other_host(runs, {})
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = load(runs / "toy")
    assert study.trials[trial].user_attrs["status"] == "lost"
    assert [t for t in study.trials if t.user_attrs.get("retry_of") == trial]


# A controller's hold on its campaign, as a start takes it: the lock, then its beats; held until its
# input ends.
HOLD_CAMPAIGN = (
    "import sys; from pathlib import Path; from autoresearch.folder_lock import take_lock; "
    "from autoresearch.heartbeat import Heartbeat; folder = Path(sys.argv[1]); take_lock(folder); "
    "Heartbeat(folder).start(); print('held', flush=True); sys.stdin.read()"
)


def test_a_controller_of_another_container_of_this_name_keeps_its_campaign_and_is_seen_running(
    tmp_path: Path,
) -> None:
    """A controller in another container of this host's name (a pid namespace of its own, on this
    kernel): status here read its pid by this /proc, found it free, and said it gone, 'run the
    campaign command again to resume', while it ran. Its kernel view says it is not this /proc's:
    status says it runs; and a start here is refused by its lock, as it was, naming it."""
    if kernel_view() is None or not containers_here():
        pytest.skip("no pid namespace of its own can be made here (root, unshare)")
    init = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    container = subprocess.Popen(
        [*init, sys.executable, "-c", HOLD_CAMPAIGN, str(tmp_path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert container.stdout.readline() == "held\n"
        state = controller_state(tmp_path) or ""
        assert state.startswith("running: pid ") and f" on {socket.gethostname()}, seen " in state, state
        with pytest.raises(FolderLocked, match="another controller"):
            os.close(take_lock(tmp_path))
        assert (lock_refusal(tmp_path) or "").startswith("another controller")
    finally:
        container.stdin.close()
        container.wait(timeout=60)
