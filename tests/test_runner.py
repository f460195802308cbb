"""The runner: the deadline, the harness check, secret scrubbing and signals, on real processes."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tmpfs_at
from engine_helpers import ENV_DUMP, REPO, make_experiment, wait_for

from autoresearch import runner
from autoresearch.files import write_atomic, write_failure
from autoresearch.fleet.base import Finished, JobSpec, Pool
from autoresearch.fleet.lineage import LINEAGE_FILE
from autoresearch.fleet.local import LocalFleet
from autoresearch.runner import run_experiment

LIBC = ctypes.CDLL(None, use_errno=True)


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


# train.py that writes its pid to child.pid whole (a file that exists is read complete) and hangs.
HANG = (
    "import os, time\nopen('p.tmp', 'w').write(str(os.getpid()))\nos.replace('p.tmp', 'child.pid')\n"
    "while True:\n    time.sleep(1)\n"
)


def test_a_silent_hang_is_ended_at_the_deadline(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, HANG, deadline=1.5)
    outcome = run_experiment(exp)  # (a runner that never ends it hangs here: pytest-timeout fails it)
    assert outcome["status"] == "timeout" and "deadline" in outcome["reason"]
    assert outcome["ended_at"] - outcome["started_at"] >= 1.5  # not ended before its time
    assert not pid_alive(int((exp / "child.pid").read_text()))
    assert json.loads((exp / "outcome.json").read_text())["status"] == "timeout"


# train.py that starts a child ignoring TERM, in its process group, then ends as `END` says.
LEAVES_A_CHILD = (
    "import os, subprocess, sys, time\n"
    'code = \'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); open("ready", "w"); time.sleep(600)\'\n'
    "child = subprocess.Popen([sys.executable, '-c', code])\n"
    "open('child.pid', 'w').write(str(child.pid))\n"
    "while not os.path.exists('ready'):\n    time.sleep(0.02)\n"
    "END\n"
)


@pytest.mark.parametrize(
    ("end", "status"),
    [("print('done')", "crash"), ("raise SystemExit('boom')", "crash"), ("time.sleep(600)", "timeout")],
)
def test_a_child_train_py_leaves_running_is_ended_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, end: str, status: str
) -> None:
    """A child train.py started (a worker, a server) and left running when it exited, or that
    ignored the TERM of the deadline that ended train.py, went on on the slot the controller
    had given to the next run."""
    monkeypatch.setattr(runner, "TERM_GRACE_S", 0.5)
    exp = make_experiment(tmp_path, LEAVES_A_CHILD.replace("END", end), deadline=3)
    outcome = run_experiment(exp)
    child = int((exp / "child.pid").read_text())
    alive = pid_alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert outcome["status"] == status, outcome
    assert not alive


@pytest.mark.parametrize("how", ["start_new_session=True", "start_new_session=True, env={}"])
def test_a_child_that_left_train_pys_process_group_is_ended_with_it(tmp_path: Path, how: str) -> None:
    """A child in a session of its own (setsid, a daemon) is out of reach of a kill of the group;
    one with an environment of its own too was not found (by a token of the run's in train.py's
    environment), and went on on the slot."""
    code = LEAVES_A_CHILD.replace("code])", f"code], {how})").replace("END", "")
    exp = make_experiment(tmp_path, code)
    outcome = run_experiment(exp)
    child = int((exp / "child.pid").read_text())
    alive = pid_alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert outcome["status"] == "crash", outcome
    assert not alive


def test_a_changed_harness_is_refused_before_anything_runs(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, "open('ran', 'w')\n")
    (exp / "prepare.py").write_text("def write_result(s): pass\n")
    outcome = run_experiment(exp)
    assert outcome["status"] == "harness_mismatch"
    assert not (exp / "ran").exists()


@pytest.mark.parametrize("stamp", [{}, {"prepare_sha256": "0" * 64}])
def test_a_result_not_written_by_the_harness_is_refused(tmp_path: Path, stamp: dict[str, str]) -> None:
    """The result must carry the hash of the harness that wrote it: one train.py wrote itself,
    without it (or with another), never reached the harness's metric."""
    result = json.dumps({"val_bpb": 0.01, **stamp})
    write = f"import os\nopen(os.environ['AUTORESEARCH_RESULT'], 'w').write({result!r})\n"
    outcome = run_experiment(make_experiment(tmp_path, write))
    assert outcome["status"] == "harness_mismatch", outcome
    assert "prepare.write_result" in outcome["reason"]


def test_train_py_never_sees_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-canary-runner")
    monkeypatch.setenv("WANDB_API_KEY", "canary-wandb")
    monkeypatch.setenv("HARMLESS", "yes")
    exp = make_experiment(tmp_path, ENV_DUMP)
    outcome = run_experiment(exp)
    assert outcome["status"] == "ok" and outcome["metrics"]["val_bpb"] == 1.0
    env = json.loads((exp / "env.json").read_text())
    assert env["HARMLESS"] == "yes"
    assert "ANTHROPIC_API_KEY" not in env and "WANDB_API_KEY" not in env


def test_train_py_gets_gpus_in_nvidia_smis_order_under_either_fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Slurm job kept the user's CUDA_DEVICE_ORDER=FASTEST_FIRST (only the local fleet set it):
    where its cgroup does not constrain devices, Slurm's CUDA_VISIBLE_DEVICES=1, the node's GPU 1
    in PCI bus order, was CUDA's second fastest on a node of two models, another job's GPU. The
    runner gives train.py PCI_BUS_ID, whichever fleet started it."""
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    exp = make_experiment(tmp_path, ENV_DUMP)
    assert run_experiment(exp)["status"] == "ok"
    env = json.loads((exp / "env.json").read_text())
    assert (env["CUDA_VISIBLE_DEVICES"], env["CUDA_DEVICE_ORDER"]) == ("1", "PCI_BUS_ID")


def test_a_crash_reports_the_last_log_line(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, "print('step 1 loss nan')\nprint('FAIL')\nraise SystemExit(1)\n")
    outcome = run_experiment(exp)
    assert outcome["status"] == "crash"
    assert "exit 1" in outcome["reason"] and "FAIL" in outcome["reason"]


def test_a_crash_line_of_control_characters_reaches_the_reason_as_plain_text(tmp_path: Path) -> None:
    """train.py's last line went into the reason as it was: an escape sequence that cleared the
    controller's terminal and set its title, a tab that split results.tsv's row, a NUL."""
    code = "import sys\nprint('\\x1b[2J\\x1b]0;title\\x07 bad\\x00thing\\tX')\nsys.exit(2)\n"
    outcome = run_experiment(make_experiment(tmp_path, code))
    assert outcome["reason"] == "exit 2:  [2J ]0;title  bad thing X", outcome["reason"]


@pytest.mark.parametrize(
    ("sig", "said"),
    [
        (signal.SIGKILL, "killed by SIGKILL (out of memory?"),
        (signal.SIGSEGV, "killed by SIGSEGV: "),
        (signal.SIGTERM, "killed by SIGTERM: "),  # (none reached the runner within its grace)
    ],
)
def test_a_crash_by_a_signal_names_it(tmp_path: Path, sig: signal.Signals, said: str) -> None:
    """The log of a train.py killed mid-step ends on an ordinary step line: the reason was `exit -9`."""
    code = (
        f"import os, signal\nprint('step 00041 | loss 3.2', flush=True)\nos.kill(os.getpid(), {int(sig)})\n"
    )
    outcome = run_experiment(make_experiment(tmp_path, code))
    assert outcome["status"] == "crash"
    assert outcome["reason"].startswith(said) and "step 00041" in outcome["reason"], outcome["reason"]


PRINTS = "import sys\nprint('first line')\nfor _ in range(CHUNKS):\n    sys.stdout.write('x' * 65535 + '\\n')\nEND\n"


def test_a_train_py_printing_without_end_is_ended_at_the_log_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A train.py printing in a loop filled run.log till its deadline, gigabytes a minute, and
    the runner (its crash line) and controller (the training curve) read it whole into memory."""
    monkeypatch.setattr(runner, "LOG_CAP_BYTES", 1 << 20)
    code = "import time\n" + PRINTS.replace("range(CHUNKS)", "iter(int, 1)").replace("END", "")
    exp = make_experiment(tmp_path, code, deadline=20)
    outcome = run_experiment(exp)
    assert outcome["status"] == "crash", outcome
    assert outcome["reason"] == "ended: train.py printed over 1 MiB to run.log"
    assert (exp / "run.log").stat().st_size < (1 << 20) + 100
    assert (exp / "run.log").read_text().startswith("first line")


def test_a_log_printed_past_the_cap_at_once_keeps_its_start_and_its_last_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A train.py that printed past the cap and ended between two of the runner's looks at the
    log: the log is cut all the same, and the crash's last line still gives the reason."""
    monkeypatch.setattr(runner, "LOG_CAP_BYTES", 1 << 20)
    monkeypatch.setattr(runner, "WAIT_SLICE_S", 60.0)  # its first look comes after train.py ended
    code = PRINTS.replace("CHUNKS", "48").replace("END", "sys.exit('the last word')")
    exp = make_experiment(tmp_path, code)
    outcome = run_experiment(exp)
    assert outcome["status"] == "crash" and outcome["reason"] == "exit 1: the last word", outcome
    log = (exp / "run.log").read_text()
    assert len(log) < (1 << 20) + 100
    assert log.startswith("first line") and "bytes cut by the runner" in log


@pytest.mark.parametrize("end", ["", "import time\ntime.sleep(600)\n"])
def test_a_train_py_that_deletes_its_experiment_folder_is_a_crash_that_says_so(
    tmp_path: Path, end: str
) -> None:
    """The runner died writing the outcome into the folder train.py had deleted: the run was lost,
    'runner ended without an outcome', and run again, max_retries times, each run deleting it."""
    code = "import os, shutil\nshutil.rmtree(os.getcwd())\n" + end
    exp = make_experiment(tmp_path, code, deadline=2)
    outcome = run_experiment(exp)
    assert json.loads((exp / "outcome.json").read_text())["status"] == outcome["status"]
    if end:
        assert outcome["status"] == "timeout", outcome
    else:
        assert outcome["reason"] == "exit 0: its experiment folder was deleted as train.py ran", outcome


# train.py that removes the campaign its experiment is in, then, where `AGAIN`, begins it anew up to
# its own trial, as `rm -rf runs/demo` and a new start do while a runner of the old one is running.
REMOVES_ITS_CAMPAIGN = (
    "import pathlib, shutil\n"
    "exp = pathlib.Path.cwd()\n"
    "shutil.rmtree(exp.parent.parent)\n"
    "if AGAIN:\n"
    "    exp.mkdir(parents=True)\n"
    '    (exp / \'spec.json\').write_text(\'{"trial": 7, "launch": "another"}\')\n'
)


@pytest.mark.parametrize("again", [False, True])
def test_a_runner_whose_campaign_was_removed_writes_no_outcome(tmp_path: Path, again: bool) -> None:
    """The runner made the removed folder again for its outcome, or wrote it into the new campaign's
    folder of its trial, where it was read as that run's."""
    experiments = tmp_path / "campaign" / "experiments"
    experiments.mkdir(parents=True)
    exp = make_experiment(experiments, REMOVES_ITS_CAMPAIGN.replace("AGAIN", str(again)))
    assert run_experiment(exp)["status"] == "crash"
    assert not (exp / "outcome.json").exists()
    assert exp.is_dir() == again


@pytest.mark.parametrize(
    "code",
    [
        "os.remove('spec.json')",
        "open('spec.json', 'w').write('{}')",
        "os.remove('spec.json'); os.mkdir('spec.json')",
    ],
)
def test_a_train_py_that_spoils_its_spec_still_gets_its_outcome(tmp_path: Path, code: str) -> None:
    """The folder is the run's own whatever train.py does to its spec.json: the outcome was not
    written, and the edit was re-queued as lost, max_retries times, rather than blamed."""
    exp = make_experiment(tmp_path, f"import os\n{code}\n")
    outcome = run_experiment(exp)
    assert outcome["status"] == "crash" and "no result" in outcome["reason"], outcome
    assert json.loads((exp / "outcome.json").read_text())["status"] == "crash"


def test_a_group_left_as_zombies_ends_without_waiting_out_the_grace(tmp_path: Path) -> None:
    """A child train.py left as a zombie stays a member of its group for killpg where its new parent
    reaps none (PID 1 of a container without an init; here, a subreaper that does not): each run
    waited TERM_GRACE_S after TERM and again after KILL."""
    exp = make_experiment(tmp_path, "import os\nif os.fork() == 0:\n    os._exit(0)\n")
    script = (
        "import ctypes, sys\n"
        "from autoresearch import runner\n"
        "ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans become ours, never reaped\n"
        "runner.TERM_GRACE_S = 60.0\n"
        "outcome = runner.run_experiment(sys.argv[1])\n"
        "print(outcome['ended_at'] - outcome['started_at'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(exp)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 60.0  # (it ends in about a second; without the fix, after 120 s)


def test_the_kill_of_escapees_spares_processes_of_other_runs(tmp_path: Path) -> None:
    """Only what train.py started is killed: not a process the runner's process had started before
    (a worker's child, though not what that child starts: the runner owns its process), nor one of another campaign's run at the same path (the campaign removed and
    begun again), which has its result path in its environment."""
    exp = make_experiment(tmp_path, "print('done')\n")
    result = str((exp / "metrics.json").resolve())
    others = [("AUTORESEARCH_RESULT", result), ("SAVED_AUTORESEARCH_RESULT", result)]
    bystanders = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env={**os.environ, k: v})
        for k, v in others
    ]
    try:
        assert run_experiment(exp)["status"] == "crash"
        assert [b.poll() for b in bystanders] == [None] * len(others)
    finally:
        for b in bystanders:
            b.kill()
            b.wait()


class RefusesTheSubreaper:
    """Linux's libc, as in a sandbox that refuses PR_SET_CHILD_SUBREAPER (EPERM)."""

    def prctl(self, option: int, *args: object) -> int:
        if option == runner.PR_SET_CHILD_SUBREAPER:
            ctypes.set_errno(errno.EPERM)
            return -1
        return LIBC.prctl(option, *args)


def test_a_sandbox_that_refuses_the_subreaper_is_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where prctl refused to make the runner a child subreaper, what train.py left running
    outside its group (a daemon's double fork) was never found, and nothing said so."""
    monkeypatch.setattr(runner, "_LIBC", RefusesTheSubreaper())
    runner._say_escapees_cannot_be_found.cache_clear()
    for name in ("one", "two"):  # (a worker's process runs many)
        assert run_experiment(make_experiment(tmp_path, "print('done')\n", name=name))["status"] == "crash"
    said = [line for line in capsys.readouterr().err.splitlines() if "child subreaper" in line]
    assert len(said) == 1 and os.strerror(errno.EPERM) in said[0] and "cannot be found" in said[0]


def test_exit_zero_without_a_result_is_a_crash(tmp_path: Path) -> None:
    outcome = run_experiment(make_experiment(tmp_path, "print('done, I promise')\n"))
    assert outcome["status"] == "crash" and "no result" in outcome["reason"]


@pytest.mark.parametrize("result", ["b'[1]'", "b'null'", "b'\\xff\\xfe'", "b'[' * 100_000 + b']' * 100_000"])
def test_a_result_that_is_not_an_object_of_figures_is_a_crash(tmp_path: Path, result: str) -> None:
    """train.py wrote its result itself, and not as the harness does (not an object, not text,
    nested past what the JSON reader takes): its run is a crash with the reason, not a runner
    that dies without an outcome (counted lost, and run again)."""
    write = f"import os\nopen(os.environ['AUTORESEARCH_RESULT'], 'wb').write({result})\n"
    exp = make_experiment(tmp_path, write)
    outcome = run_experiment(exp)
    assert outcome["status"] == "crash", outcome
    assert json.loads((exp / "outcome.json").read_text())["status"] == "crash"


def test_sigterm_to_the_runner_ends_train_py_and_records_interrupted(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, HANG)
    runner = subprocess.Popen([sys.executable, "-m", "autoresearch.runner", str(exp)], cwd=REPO)
    wait_for(
        lambda: (exp / "child.pid").exists() or runner.poll() is not None, 30, "train.py to start", every=0.02
    )
    assert runner.poll() is None
    os.kill(runner.pid, signal.SIGTERM)
    runner.wait(timeout=30)
    outcome = json.loads((exp / "outcome.json").read_text())
    assert outcome["status"] == "interrupted"
    assert not pid_alive(int((exp / "child.pid").read_text()))


def test_a_runner_stopped_as_it_sets_train_py_up_records_interrupted(tmp_path: Path) -> None:
    """A TERM between the runner's started.json and train.py's start (a preemption or a Ctrl-C as
    the run begins, or a re-attached runner past its deadline) found the default handler, or came
    while train.py was being started: the runner ended with no outcome.json, or in a traceback,
    and the run read as lost. Here the harness is a pipe nobody writes, so hashing it holds the
    runner in that stretch for as long as the test needs."""
    exp = make_experiment(tmp_path, HANG)
    (exp / "prepare.py").unlink()
    os.mkfifo(exp / "prepare.py")
    runner = subprocess.Popen([sys.executable, "-m", "autoresearch.runner", str(exp)], cwd=REPO)
    wait_for(lambda: (exp / "started.json").exists() or runner.poll() is not None, 30, "the runner's start")
    os.kill(runner.pid, signal.SIGTERM)
    assert runner.wait(timeout=30) == 0
    outcome = json.loads((exp / "outcome.json").read_text())
    assert (outcome["status"], outcome["reason"]) == ("interrupted", "runner received SIGTERM")
    assert not (exp / "child.pid").exists()  # train.py never started


# The runner, a TERM reaching it in an at-fork hook as it starts train.py: logging's hook, where the
# handler's exception was swallowed (printed as ignored) in the load test of re-attached runners.
TERM_IN_A_FORK_HOOK = """
import os, signal, sys
from autoresearch.runner import run_experiment
sent = []
def term_once():
    if not sent:
        sent.append(os.kill(os.getpid(), signal.SIGTERM))
os.register_at_fork(after_in_parent=term_once)
print(run_experiment(sys.argv[1])["status"])
"""


def test_a_stop_whose_exception_python_swallowed_still_interrupts_the_run(tmp_path: Path) -> None:
    """The handler of a stop signal raises, and Python only prints an exception raised in an
    at-fork hook (logging's, as the runner started train.py), a `__del__` or a weakref callback:
    the stop was forgotten and the run went on to its deadline, its slot's TERM unanswered until
    the fleet's KILL left it without an outcome. The runner now acts on a stop it was told of."""
    exp = make_experiment(tmp_path, HANG, deadline=20)
    proc = subprocess.run(
        [sys.executable, "-c", TERM_IN_A_FORK_HOOK, str(exp)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout == "interrupted\n", proc.stdout + proc.stderr
    outcome = json.loads((exp / "outcome.json").read_text())
    assert outcome["reason"] == "runner received SIGTERM"
    assert outcome["ended_at"] - outcome["started_at"] < 20  # not left to its deadline
    assert not running_in(exp)  # train.py ended with the run


def running_in(folder: Path) -> list[int]:
    """The live processes whose working folder is `folder` (train.py runs in its experiment's)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if Path(os.readlink(proc / "cwd")) == folder.resolve() and pid_alive(int(proc.name)):
                found.append(int(proc.name))
    return found


def test_a_term_that_kills_train_py_first_then_reaches_the_runner_is_an_interruption(tmp_path: Path) -> None:
    """Slurm's TERM (a preemption, an scancel) reaches train.py and the runner alike; train.py died
    of it before the runner's handler ran, and the run was recorded as train.py's crash ("killed
    by SIGTERM"), hiding the preemption. Here the runner's TERM comes 0.3 s after train.py's."""
    code = (
        "import os, signal, subprocess\n"
        "subprocess.Popen(['sh', '-c', f'sleep 0.3; kill -TERM {os.getppid()}'])\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
    )
    exp = make_experiment(tmp_path, code)
    runner = subprocess.run([sys.executable, "-m", "autoresearch.runner", str(exp)], cwd=REPO, timeout=60)
    outcome = json.loads((exp / "outcome.json").read_text())
    assert outcome["status"] == "interrupted", (runner.returncode, outcome)
    assert outcome["reason"] == "runner received SIGTERM"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal")
def test_a_runner_killed_outright_takes_train_py_with_it(tmp_path: Path) -> None:
    """SIGKILL leaves the runner no chance to end train.py (its own session): left alive, it
    trained on beside the run the controller gave its slot to, and wrote a result nobody read."""
    exp = make_experiment(tmp_path, HANG)
    runner = subprocess.Popen([sys.executable, "-m", "autoresearch.runner", str(exp)], cwd=REPO)
    wait_for(
        lambda: (exp / "child.pid").exists() or runner.poll() is not None, 30, "train.py to start", every=0.02
    )
    assert runner.poll() is None
    runner.kill()
    runner.wait(timeout=30)
    child = int((exp / "child.pid").read_text())
    wait_for(lambda: not pid_alive(child), 30, "train.py to end with its runner")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's OOM killer")
def test_train_py_is_the_first_the_oom_killer_ends(tmp_path: Path) -> None:
    """A train.py that took all the memory left the kernel to pick whom to kill, by size alone:
    the controller (the campaign ended) or a runner (its outcome lost) could be the one."""
    code = "open('adj', 'w').write(open('/proc/self/oom_score_adj').read())\n"
    exp = make_experiment(tmp_path, code)
    run_experiment(exp)
    assert (exp / "adj").read_text().strip() == "1000"


def test_train_py_uses_as_many_threads_as_slurm_granted_cpus(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    exp = make_experiment(tmp_path, ENV_DUMP)
    assert run_experiment(exp)["status"] == "ok"
    assert json.loads((exp / "env.json").read_text())["OMP_NUM_THREADS"] == "3"


# train.py that outlives SIGTERM (as a process stuck in a CUDA call does), saying when it got one.
STUBBORN = (
    "import os, signal, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: open('got-term', 'w').close())\n"
    "open('child.pid', 'w').write(str(os.getpid()))\n"
    "while True:\n    time.sleep(0.05)\n"
)


def test_a_second_signal_during_cleanup_still_ends_train_py_and_records_interrupted(tmp_path: Path) -> None:
    """Slurm may signal twice (USR2 before the time limit, then TERM): the runner, ending train.py
    after the first, must finish that (SIGKILL after the grace) and write its outcome."""
    exp = make_experiment(tmp_path, STUBBORN)
    runner = subprocess.Popen([sys.executable, "-m", "autoresearch.runner", str(exp)], cwd=REPO)
    wait_for(lambda: (exp / "child.pid").exists() or runner.poll() is not None, 30, "train.py to start")
    os.kill(runner.pid, signal.SIGUSR2)
    wait_for(lambda: (exp / "got-term").exists(), 30, "the runner to signal train.py")
    os.kill(runner.pid, signal.SIGTERM)  # while the runner waits out train.py's grace
    runner.wait(timeout=60)
    outcome = json.loads((exp / "outcome.json").read_text())
    assert outcome["status"] == "interrupted" and "SIGUSR2" in outcome["reason"]
    assert not pid_alive(int((exp / "child.pid").read_text()))


def test_the_runner_does_not_start_a_workspace_given_up_on(tmp_path: Path) -> None:
    """A local runner started just before its controller died: the next controller, unable to
    adopt it, gave the workspace up and queued the experiment again."""
    exp = make_experiment(tmp_path, ENV_DUMP)
    (exp / "abandoned.json").write_text("{}")
    runner = [sys.executable, "-m", "autoresearch.runner", str(exp)]
    proc = subprocess.run(runner, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0 and "abandoned.json exists" in proc.stderr
    assert not (exp / "started.json").exists() and not (exp / "env.json").exists()


def test_ending_a_run_reads_no_processs_environment(tmp_path: Path) -> None:
    """The runner read /proc/PID/environ of every process of the machine as each run ended, to
    find what left train.py's group; such a read waits on the process's memory map lock, held
    for good by a process stuck in uninterruptible sleep (a hung NFS mount), and held the runner.
    (The kernel's wait cannot be made here: that no such file is opened is what is checked.)"""
    opened: list[str] = []
    recording = [True]  # (an audit hook cannot be removed: it stops recording once the run is over)

    def audit(event: str, args: tuple[object, ...]) -> None:
        if recording and event == "open" and str(args[0]).endswith("/environ"):
            opened.append(str(args[0]))

    setsid = LEAVES_A_CHILD.replace("code])", "code], start_new_session=True)").replace("END", "")
    exp = make_experiment(tmp_path, setsid)
    sys.addaudithook(audit)
    outcome = run_experiment(exp)
    recording.clear()
    assert outcome["status"] == "crash", outcome
    assert not pid_alive(int((exp / "child.pid").read_text()))  # (what left its group is still ended)
    assert opened == []


def test_a_crash_that_left_nothing_in_run_log_says_so(tmp_path: Path) -> None:
    """A train.py that closed its output before it failed left run.log empty, and its reason ended
    at "exit 3: ", a colon with nothing after it."""
    code = "import os\nos.close(1)\nos.close(2)\nraise SystemExit(3)\n"
    outcome = run_experiment(make_experiment(tmp_path, code))
    assert outcome["reason"] == "exit 3: run.log is empty (train.py printed nothing, or closed its output)"


def test_a_clock_step_as_train_py_runs_does_not_change_how_long_the_run_held_its_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine's clock stepped an hour forward (NTP after a VM's resume) while train.py ran,
    and the outcome's end came an hour after its start: the campaign billed an hour of GPU time
    for a run of a second (a step back billed none). The clock cannot be stepped here: time.time
    is, from the moment train.py says so."""
    real = time.time
    exp = make_experiment(tmp_path, "open('stepped', 'w')\n")
    monkeypatch.setattr(time, "time", lambda: real() + (3600 if (exp / "stepped").exists() else 0))
    outcome = run_experiment(exp)
    assert (exp / "stepped").exists()
    assert 0 <= outcome["ended_at"] - outcome["started_at"] < 60, outcome


# train.py that fills the disk of its folder, then fails (as the harness's write of its result would).
FILLS_ITS_DISK = (
    "try:\n"
    "    with open('fill', 'wb') as f:\n"
    "        while True:\n"
    "            f.write(b'x' * 65536)\n"
    "except OSError:\n"
    "    raise SystemExit(1)\n"
)

# Run in a mount namespace of its own: a small disk (tmpfs) made at argv[1], the experiment argv[2]
# copied onto it and run there; prints its outcome.json (the disk goes with the namespace). Where
# argv[3] gives a number of bytes, another writer's file beside the experiment fills the disk
# first to that much room (another run's checkpoint, another user's data).
ON_A_SMALL_DISK = """
import json, os, shutil, subprocess, sys
from pathlib import Path
from autoresearch.runner import run_experiment
disk, exp = Path(sys.argv[1]), Path(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
shutil.copytree(exp, disk / exp.name)
if len(sys.argv) > 3:
    room = os.statvfs(disk)
    (disk / "others").write_bytes(os.urandom(room.f_bavail * room.f_frsize - int(sys.argv[3])))
run_experiment(disk / exp.name)
print((disk / exp.name / "outcome.json").read_text())
"""


# As ON_A_SMALL_DISK, on a disk of 64 inodes, bytes to spare. Given argv[3] and argv[4], two FIFOs
# off the disk: once train.py says through the first that it runs, others' empty files (a data set
# of many small files) use every inode left, and the second tells train.py so.
ON_A_DISK_OF_FEW_INODES = """
import os, shutil, subprocess, sys, threading
from pathlib import Path
from autoresearch.runner import run_experiment
disk, exp = Path(sys.argv[1]), Path(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,nr_inodes=64", "tmpfs", str(disk)], check=True)
shutil.copytree(exp, disk / exp.name)
def others_use_every_inode(began, filled):
    Path(began).read_text()
    for made in range(os.statvfs(disk).f_favail):
        (disk / f"others{made}").touch()
    Path(filled).write_text("")
if len(sys.argv) > 3:
    threading.Thread(target=others_use_every_inode, args=sys.argv[3:5], daemon=True).start()
run_experiment(disk / exp.name)
print((disk / exp.name / "outcome.json").read_text())
"""


def run_on_a_small_disk(tmp_path: Path, train_py: str, *room: str, script: str = ON_A_SMALL_DISK) -> dict:
    """The outcome of `train_py` run on a 2 MiB disk of its own (`script`: `ON_A_SMALL_DISK`'s)."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespace for an unprivileged user here (unshare -rm)")
    exp = make_experiment(tmp_path, train_py)
    (tmp_path / "disk").mkdir()
    script = [sys.executable, "-c", script, str(tmp_path / "disk"), str(exp), *room]
    done = subprocess.run(["unshare", "-rm", *script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_train_py_that_fills_its_folders_disk_is_a_crash_that_says_so(tmp_path: Path) -> None:
    """A train.py that filled the disk of its experiment folder left its runner no room for
    outcome.json: the runner died in an OSError, the run was lost and re-queued, and filled the
    disk again at each of its retries. The runner keeps a reserve in the folder, freed for the
    outcome, and the crash says the disk is full."""
    outcome = run_on_a_small_disk(tmp_path, FILLS_ITS_DISK)
    assert outcome["status"] == "crash", outcome
    assert outcome["reason"].startswith("exit 1: ") and "the disk of its folder is full" in outcome["reason"]


def test_a_disk_filled_by_others_is_not_the_changes_crash(tmp_path: Path) -> None:
    """The disk holding the campaign filled (by others) as train.py ran, and the harness's write
    of its result failed, No space left on device: the run was the change's crash, which the
    agent learnt from as if its idea broke training, and the change was dropped. It is now lost
    to the disk (`disk_full`), for the controller to re-queue at no cost, and says how much room
    is left and how little the run wrote."""
    # Room for started.json, the reserve and run.log's first page (tmpfs counts 4 KiB pages), none
    # for the result.
    started_json_and_reserve = str(runner.RESERVE_BYTES + 8192)
    outcome = run_on_a_small_disk(tmp_path, WRITES_ITS_RESULT, started_json_and_reserve)
    assert outcome["status"] == "lost" and outcome["disk_full"], outcome
    assert "refused train.py's writes (0 KiB free in its folder, " in outcome["reason"], outcome
    assert outcome["reason"].endswith("No space left on device"), outcome


# A train.py that writes its result (the harness's write, which a full disk refuses).
WRITES_ITS_RESULT = "import prepare\nprint('step 1', flush=True)\nprepare.write_result({'val_bpb': 1.0})\n"
# train.py that makes empty files until the disk of its folder has no inode left, then fails.
USES_EVERY_INODE = (
    "try:\n"
    "    for made in range(10**6):\n"
    "        open(f'empty{made}', 'w').close()\n"
    "except OSError:\n"
    "    raise SystemExit(1)\n"
)


def test_a_disk_out_of_inodes_by_others_is_not_the_changes_crash(tmp_path: Path) -> None:
    """Others' small files used every inode of the disk holding the campaign as train.py ran, bytes
    to spare, and the harness's write of its result failed, No space left on device: the runner
    judged a disk full by its bytes alone, and the run was the change's crash, charged to its idea.
    A disk out of inodes is full too: lost to the disk, re-queued free, and the reason says what
    ran out."""
    began, filled = tmp_path / "began", tmp_path / "filled"
    for fifo in (began, filled):
        os.mkfifo(fifo)
    waits_for_others = f"open({str(began)!r}, 'w').close()\nopen({str(filled)!r}).read()\n"
    train_py = WRITES_ITS_RESULT.replace("prepare.write_result", waits_for_others + "prepare.write_result")
    outcome = run_on_a_small_disk(tmp_path, train_py, str(began), str(filled), script=ON_A_DISK_OF_FEW_INODES)
    assert outcome["status"] == "lost" and outcome["disk_full"] and outcome["free_bytes"] > 0, outcome[
        "reason"
    ]
    assert "refused train.py's writes (no inodes left in its folder, " in outcome["reason"], outcome["reason"]
    assert "No space left on device" in outcome["reason"].rsplit(": ", 2)[-2], outcome["reason"]


def test_a_train_py_that_uses_every_inode_itself_is_a_crash_that_says_so(tmp_path: Path) -> None:
    """A train.py that made files until its folder's disk had no inode left filled it itself: its
    crash, as one that filled its bytes, and the crash says the disk is full (it said nothing)."""
    outcome = run_on_a_small_disk(tmp_path, USES_EVERY_INODE, script=ON_A_DISK_OF_FEW_INODES)
    assert outcome["status"] == "crash", outcome
    assert outcome["reason"].startswith("exit 1: ") and "the disk of its folder is full" in outcome["reason"]


# train.py that writes how small zlib makes the runner's reserve, as it finds it while it runs.
MEASURES_THE_RESERVE = (
    "import json, zlib\n"
    "data = open('outcome.reserve', 'rb').read()\n"
    "json.dump({'size': len(data), 'compressed': len(zlib.compress(data))}, open('reserve.json', 'w'))\n"
)


def test_the_reserve_takes_room_on_a_compressing_file_system(tmp_path: Path) -> None:
    """A reserve of zeros takes no blocks on ZFS or btrfs with compression (lz4, also behind
    NFS): it freed nothing, and the runner of a train.py that filled the disk still died."""
    run_experiment(make_experiment(tmp_path, MEASURES_THE_RESERVE))
    reserve = json.loads((tmp_path / "exp" / "reserve.json").read_text())
    assert reserve["size"] == runner.RESERVE_BYTES
    assert reserve["compressed"] >= 0.99 * reserve["size"]  # what compression cannot shrink


# Run in a mount namespace of its own: a 1 MiB disk (tmpfs) made at argv[1], the experiment argv[2]
# copied onto it, the disk filled by another writer to argv[3] bytes of room, and the experiment
# run by the local fleet as the controller runs it; prints what the fleet gives the controller.
BY_THE_FLEET_ON_A_FULL_DISK = """
import json, os, shutil, subprocess, sys
from pathlib import Path
from autoresearch.fleet.base import JobSpec, Pool
from autoresearch.fleet.local import LocalFleet
disk, exp = Path(sys.argv[1]), Path(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
shutil.copytree(exp, disk / exp.name)
room = os.statvfs(disk)
(disk / "others").write_bytes(os.urandom(room.f_bavail * room.f_frsize - int(sys.argv[3])))
fleet = LocalFleet(Pool("local", 1, "cpu", 0.0, "local"), [], 1, 30.0)
fleet.submit([JobSpec(7, disk / exp.name, "local")])
while not (done := fleet.poll()):
    fleet.wait(0.1)
print(json.dumps(done[0].outcome))
"""


# As BY_THE_FLEET_ON_A_FULL_DISK, but the controller stops as the runner runs (the fleet forgets
# it) and the runner ends unwatched; prints what a resume reads of it, and the files it left.
UNWATCHED_ON_A_FULL_DISK = (
    BY_THE_FLEET_ON_A_FULL_DISK.split("while not")[0]
    + """
pid = int((disk / exp.name / "runner.pid").read_text().split()[0])
fleet.shutdown(cancel=False)
os.waitpid(pid, 0)
from autoresearch.runner import ended_outcome
left = sorted(p.name for p in (disk / exp.name).glob("runner.*"))
print(json.dumps({"outcome": ended_outcome(disk / exp.name, 7), "left": left}))
"""
)


# As BY_THE_FLEET_ON_A_FULL_DISK, but the runner refused started.json before its fleet wrote its
# runner.pid, which the fleet then writes (room made for it), its controller stopped meanwhile;
# prints the runner's exit status, what a resume reads of it, and the files it left.
REFUSED_BEFORE_ITS_RUNNER_PID = (
    BY_THE_FLEET_ON_A_FULL_DISK.split("fleet = ")[0]
    + """
ran = subprocess.run([sys.executable, "-m", "autoresearch.runner", str(disk / exp.name)], stdout=subprocess.DEVNULL)
os.truncate(disk / "others", (disk / "others").stat().st_size - 4096)
(disk / exp.name / "runner.pid").write_text("4242 0 host")  # (its fleet's, late)
from autoresearch.runner import ended_outcome
left = sorted(p.name for p in (disk / exp.name).glob("runner.*"))
print(json.dumps({"exit": ran.returncode, "outcome": ended_outcome(disk / exp.name, 7), "left": left}))
"""
)


def on_a_full_disk(tmp_path: Path, script: str, room: int | str) -> dict:
    """What `script` (BY_THE_FLEET_ON_A_FULL_DISK's arguments) prints, as JSON, run in a mount
    namespace of its own on an experiment of one step with `room` bytes left on its disk (or as
    `script` reads `room`)."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespace for an unprivileged user here (unshare -rm)")
    exp = make_experiment(tmp_path, "print('step 1')\n")
    (tmp_path / "disk").mkdir()
    command = [sys.executable, "-c", script, str(tmp_path / "disk"), str(exp), str(room)]
    done = subprocess.run(["unshare", "-rm", *command], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# Room for runner.pid (the fleet's, one 4 KiB page of tmpfs) and none for started.json; or room
# for started.json too, and none for the reserve nor outcome.json.
@pytest.mark.parametrize("room", [4096, 8192], ids=["started.json refused", "outcome.json refused"])
def test_a_runner_whose_own_files_a_full_disk_refuses_is_lost_to_the_disk(tmp_path: Path, room: int) -> None:
    """A disk full as the runner began left it no room for started.json, or for outcome.json
    (its reserve could not be written): it died without an outcome, and the controller counted a
    retry of the change, 'runner ended without an outcome', and dropped it once max_retries were
    used. The runner now ends with DISK_REFUSED_EXIT, which the local fleet makes a run lost to
    the disk (`disk_full`): re-queued free, the campaign stopped until there is room."""
    outcome = on_a_full_disk(tmp_path, BY_THE_FLEET_ON_A_FULL_DISK, room)
    assert outcome["status"] == "lost" and outcome["disk_full"] and outcome["free_bytes"] == 0, outcome
    assert outcome["runner_files"], outcome  # (never its change's doing: `campaign.free_disk_refusal`)
    assert outcome["reason"].startswith(f"the disk of its folder {tmp_path / 'disk' / 'exp'} refused"), (
        outcome
    )
    assert outcome["reason"].endswith("(0 KiB free in its folder)"), outcome


# The runner run on its experiment's disk remounted read-only (a file system an error remounted
# so); prints its exit status and the last line it said.
ON_A_READ_ONLY_DISK = """
import json, shutil, subprocess, sys
from pathlib import Path
disk, exp = Path(sys.argv[1]), Path(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
shutil.copytree(exp, disk / exp.name)
subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
ran = subprocess.run([sys.executable, "-m", "autoresearch.runner", str(disk / exp.name)], capture_output=True, text=True)
print(json.dumps({"exit": ran.returncode, "said": ran.stderr.strip().splitlines()[-1:]}))
"""


def test_a_runner_whose_disk_is_read_only_ends_as_a_disk_refusal(tmp_path: Path) -> None:
    """A runner whose folder's disk was mounted read-only died of the OSError, a run without an
    outcome whose retry its change was charged, where a worker refused so ends with
    DISK_REFUSED_EXIT: it ends so too, the run lost to the disk, the campaign stopped until the
    disk is writable again."""
    said = on_a_full_disk(tmp_path, ON_A_READ_ONLY_DISK, 0)
    assert said["exit"] == runner.DISK_REFUSED_EXIT, said
    assert said["said"] and "Read-only file system" in said["said"][0], said


def _use_every_inode(disk: Path) -> int:
    """Make empty files on `disk` until it has no inode left; the bytes free after (none taken)."""
    for made in range(os.statvfs(disk).f_favail):
        (disk / f"empty{made}").touch()
    room = os.statvfs(disk)
    return room.f_bavail * room.f_frsize


def test_a_disk_refusal_says_what_ran_out_where_bytes_are_free(tmp_path: Path) -> None:
    """A disk refusal's outcome (and the campaign's stop that quotes it) said the bytes free
    alone, '1024 KiB free in its folder', where the disk had run out of inodes, or was mounted
    read-only, or a quota refused the write: the user freed bytes and nothing changed. It now
    says what ran out (a tmpfs of few inodes here, then remounted read-only)."""
    with tmpfs_at(tmp_path / "disk", "size=1m,nr_inodes=8") as disk:
        free = _use_every_inode(disk) >> 10
        with pytest.raises(OSError) as refused:
            write_atomic(disk / "results.tsv", "trial\n")
        assert refused.value.errno == errno.ENOSPC
        said = f"no inodes left on its disk, {free} KiB free"
        assert (
            write_failure(refused.value, disk) == f"No space left on device ({disk / 'results.tsv'}, {said})"
        )
        quota = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))  # (statvfs cannot show one)
        assert write_failure(quota, disk) == f"{os.strerror(errno.EDQUOT)} (over quota ({said}))"
        outcome = runner.refused_by_disk(1, disk, "the disk refused")
        assert outcome["reason"] == f"the disk refused (no inodes left in its folder, {free} KiB free)"
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        outcome = runner.refused_by_disk(1, disk, "the disk refused")
        assert outcome["reason"] == "the disk refused (mounted read-only)", outcome


@pytest.mark.parametrize("room", [4096, 8192], ids=["started.json refused", "outcome.json refused"])
def test_a_runner_refused_by_a_full_disk_leaves_it_said_for_a_resume(tmp_path: Path, room: int) -> None:
    """A runner whose own files the full disk refused said so by its exit status alone, which no
    controller saw where its own had stopped: a resume found it gone without an outcome and spent
    a retry. It renames its runner.pid runner.refused, which a full disk allows (a 1 MiB tmpfs
    here), and a resume reads it as lost to the disk (`ended_outcome`)."""
    said = on_a_full_disk(tmp_path, UNWATCHED_ON_A_FULL_DISK, room)
    assert said["left"] == ["runner.lock", "runner.log", "runner.refused"], said  # (an empty lock: no block)
    outcome = said["outcome"]
    assert outcome["status"] == "lost" and outcome["disk_full"] and outcome["runner_files"], outcome


def test_a_runner_refused_before_its_runner_pid_was_written_leaves_it_said(tmp_path: Path) -> None:
    """A runner whose started.json the full disk refused before its fleet wrote its runner.pid had
    none to rename: its exit status alone said so, which no controller saw where its own had
    stopped, and a resume found it gone without an outcome, 'job lost', a retry charged. It now
    leaves an empty runner.refused, which takes no block, and which the runner.pid its fleet
    writes after it does not hide."""
    said = on_a_full_disk(tmp_path, REFUSED_BEFORE_ITS_RUNNER_PID, 0)
    assert said["exit"] == runner.DISK_REFUSED_EXIT, said
    assert said["left"] == ["runner.pid", "runner.refused"], said
    outcome = said["outcome"]
    assert outcome["status"] == "lost" and outcome["disk_full"] and outcome["runner_files"], outcome


# As BY_THE_FLEET_ON_A_FULL_DISK, the disk made to refuse the fleet's own files (argv[3]: "read-only",
# "no inodes": runner.log refused; "full": runner.log made, runner.pid's bytes refused); prints
# what submit and the next poll give the controller, the files left, and the runners still running.
THE_FLEETS_FILES_REFUSED = """
import json, os, shutil, subprocess, sys
from pathlib import Path
from autoresearch.fleet.base import JobSpec, Pool
from autoresearch.fleet.local import LocalFleet
disk, exp, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=16", "tmpfs", str(disk)], check=True)
shutil.copytree(exp, disk / exp.name)
if how == "read-only":
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
elif how == "no inodes":
    for made in range(os.statvfs(disk).f_favail):
        (disk / f"empty{made}").touch()
else:
    room = os.statvfs(disk)
    (disk / "others").write_bytes(os.urandom(room.f_bavail * room.f_frsize))
fleet = LocalFleet(Pool("local", 1, "cpu", 0.0, "local"), [], 1, 30.0)
try:
    handles = fleet.submit([JobSpec(7, disk / exp.name, "local")])
except OSError as err:
    handles = {"raised": str(err)}
done = fleet.poll()
def command_line(process):
    try:
        return process.joinpath("cmdline").read_bytes()
    except OSError:  # (ended as /proc was read)
        return b""
mine = str(disk / exp.name).encode()
runners = [p.name for p in Path("/proc").glob("[0-9]*") if mine in command_line(p)]
left = sorted(p.name for p in (disk / exp.name).glob("runner.*"))
print(json.dumps({"handles": handles, "outcomes": [f.outcome for f in done], "left": left, "running": runners}))
"""


@pytest.mark.parametrize("how", ["read-only", "no inodes", "full"])
def test_a_disk_that_refuses_the_fleets_own_files_loses_the_run_to_the_disk(tmp_path: Path, how: str) -> None:
    """The local fleet's runner.log (a disk read-only, or of no inode left) or runner.pid (a full
    disk, after the runner started) refused raised out of submit: the controller stopped with
    'cannot write the campaign folder', the run, its launch recorded, charged a retry at the
    resume, and a runner refused its runner.pid ran on unrecorded. Nothing has started, or the
    runner is ended (as a runner refused its own files ends itself), its partial runner.pid made
    runner.refused for a resume: the run is lost to the disk, as the runner's own files refused."""
    said = on_a_full_disk(tmp_path, THE_FLEETS_FILES_REFUSED, how)
    assert said["handles"] == {} and said["running"] == [], said
    (outcome,) = said["outcomes"]
    assert outcome["status"] == "lost" and outcome["disk_full"] and outcome["runner_files"], outcome
    file = "runner.pid" if how == "full" else "runner.log"
    refused = f"the disk of its folder {tmp_path / 'disk' / 'exp'} refused the fleet's {file}"
    assert outcome["reason"].startswith(refused), outcome
    assert "runner.pid" not in said["left"], said
    assert ("runner.refused" in said["left"]) == (how == "full"), said  # (read so by a resume)


def test_a_runner_handed_no_open_lock_says_so_in_one_line(tmp_path: Path) -> None:
    """The lock its fleet hands over (`runner.hold_lock`) named by a number no open file has: the
    runner would run holding none, its run judged ended by another container while it ran."""
    runner = subprocess.run(
        [sys.executable, "-m", "autoresearch.runner", str(tmp_path), "99"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert runner.returncode == 1
    assert runner.stderr.startswith("the runner's lock '99' is no open file descriptor:")
    assert runner.stderr.count("\n") == 1 and not list(tmp_path.iterdir())


# The local fleet, started as a daemon may be (its stdin and stdout closed), starts a runner whose
# train.py waits for `go`; prints, as JSON on stderr, what the runner's lock argument names and
# whether another pid namespace would find runner.lock free while that runner runs.
BY_A_FLEET_WITHOUT_STDIN_AND_STDOUT = """
import json, os, sys
from pathlib import Path
from autoresearch.fleet.base import JobSpec, Pool
from autoresearch.fleet.local import LocalFleet
from autoresearch.fleet.runner_pid import _lock_free
exp = Path(sys.argv[1])
fleet = LocalFleet(Pool("local", 1, "cpu", 0.0, "local"), [], 1, 30.0)
fleet.submit([JobSpec(7, exp, "local")])
pid = int((exp / "runner.pid").read_text().split()[0])
fd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\\0")[-2].decode()
said = {"held": os.readlink(f"/proc/{pid}/fd/{fd}"), "free": _lock_free(exp / "runner.lock")}
(exp / "go").touch()
while not fleet.poll():
    fleet.wait(0.05)
os.write(2, json.dumps(said).encode())
"""


def test_a_fleet_started_without_stdin_and_stdout_hands_its_runner_the_lock(tmp_path: Path) -> None:
    """A controller whose stdin and stdout were closed (`<&- >&-`) opened runner.log and
    runner.lock as file descriptors 0 and 1, and the runner's stdout, made runner.log, took the
    place of its lock: it ran holding none, and a restarted container took its run for ended and
    ran its change again. The lock is handed over above the standard streams now."""
    exp = make_experiment(
        tmp_path, "import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.05)\n"
    )
    script = [sys.executable, "-c", BY_A_FLEET_WITHOUT_STDIN_AND_STDOUT, str(exp)]
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" <&- >&-', "sh", *script],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    said = json.loads(done.stderr.strip().splitlines()[-1])
    assert said == {"held": str(exp / "runner.lock"), "free": False}, done.stderr


def test_a_local_run_that_wrote_its_outcome_leaves_no_runner_lock(tmp_path: Path) -> None:
    """runner.lock, which tells another pid namespace whether the runner ended, stayed in every
    finished experiment folder, an empty file of no further use: each judge of it reads outcome.json
    first. The runner removes it with its runner.pid once outcome.json is written. The run's
    runner_lineage.json stayed too, of no use once the fleet swept what the run left running."""
    exp = make_experiment(tmp_path, ENV_DUMP)
    fleet = LocalFleet(Pool("local", 1, "cpu", 0.0, "local"), [], 1, 30.0)
    fleet.submit([JobSpec(7, exp, "local")])
    assert (exp / runner.LOCK_FILE).exists()
    finished: list[Finished] = []
    wait_for(lambda: finished.extend(fleet.poll()) or finished, 60, "the run's end")
    assert finished[0].outcome["status"] == "ok", finished
    assert not (exp / runner.LOCK_FILE).exists() and not (exp / runner.PID_FILE).exists()
    assert not (exp / LINEAGE_FILE).exists()  # (written as train.py ran below the runner; swept since)


def test_a_runner_lock_that_cannot_be_removed_does_not_crash_the_runner_after_its_outcome(
    tmp_path: Path,
) -> None:
    """The runner removes runner.lock once outcome.json is written; one that cannot be removed (a
    folder in its place, an NFS removal refused) raised there, the runner ending with a traceback
    in runner.log and an exit code of a crash after a run that went well. Nothing reads the lock
    once outcome.json is written, so the runner ends as after any run."""
    exp = make_experiment(tmp_path, ENV_DUMP)
    (exp / runner.LOCK_FILE).mkdir()
    (exp / runner.LOCK_FILE / "kept").write_text("")  # (not empty: no unlink or rmdir takes it)
    fleet = LocalFleet(Pool("local", 1, "cpu", 0.0, "local"), [], 1, 30.0)
    fleet.submit([JobSpec(7, exp, "local")])
    finished: list[Finished] = []
    wait_for(lambda: finished.extend(fleet.poll()) or finished, 60, "the run's end")
    assert finished[0].outcome["status"] == "ok", finished
    assert "Traceback" not in (exp / "runner.log").read_text()
    assert not (exp / runner.PID_FILE).exists()
