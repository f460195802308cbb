"""slurm/controller.sbatch, run by bash as Slurm would run it, with stand-ins for the controller
(a script that, like the real one, stops with code 130 on its second stop signal) and for
`scontrol` (records what it is asked); and submitted to the local Slurm cluster with the real
controller, as docs/SLURM.md tells a person to run and cancel it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import REPO, TOY, campaign_command, experiment_runs, fake_commands, wait_for

from autoresearch.heartbeat import controller_state

SCRIPT = REPO / "slurm" / "controller.sbatch"


def _controller_job(
    tmp_path: Path, stops_at_term: int, held: bool = False
) -> tuple[subprocess.Popen[str], Path]:
    """The script run by bash with a stand-in controller that stops (code 3, or 130 at a second
    stop signal, as the real one) at the `stops_at_term`-th stop (INT, USR1) the script passes on;
    and the file each is noted in (with whether the stand-in was started with TERM ignored, as the
    script must). Like the real one, it tells the script once it hears them; `held`: not before a
    file `go` exists."""
    seen = tmp_path / "terms.log"
    code = "3" if stops_at_term == 1 else "130"
    go = tmp_path / "go" if held else tmp_path  # (a folder that exists: no wait)
    stand_in = f"""import pathlib, signal, sys, time
from autoresearch.stop_signals import tell_parent_ready
term_ignored = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
pathlib.Path({str(tmp_path / "started")!r}).write_text("started")
while not pathlib.Path({str(go)!r}).exists():
    time.sleep(0.05)
stops = []
def stop(signum, frame):
    stops.append(signum)
    with open({str(seen)!r}, "a") as f:
        f.write(f"{{signal.Signals(signum).name}}-with-term-ignored={{term_ignored}}\\n")
    if len(stops) >= {stops_at_term}:
        sys.exit({code})
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGUSR1, stop)
tell_parent_ready()
pathlib.Path({str(tmp_path / "ready")!r}).write_text("ready")
while True:
    time.sleep(0.05)"""
    bin_dir = fake_commands(tmp_path / "bin", sys.executable, python=stand_in)
    fake_commands(bin_dir, scontrol=f'echo "$@" >> {tmp_path / "scontrol.log"}')
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "AUTORESEARCH_PYTHON": str(bin_dir / "python"),
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "SLURM_JOB_ID": "41",
    }
    job = subprocess.Popen(
        ["bash", str(SCRIPT), "+campaign=gpt2"], env=env, stdout=subprocess.PIPE, text=True
    )
    wait_for(lambda: (tmp_path / ("started" if held else "ready")).exists(), 30, "the controller to start")
    return job, seen


def _signal_in_turn(job: subprocess.Popen[str], seen: Path, *signals: signal.Signals) -> None:
    """Each signal sent once the controller has been passed the one before."""
    for n, sig in enumerate(signals, start=1):
        job.send_signal(sig)
        wait_for(
            lambda n=n: seen.exists() and len(seen.read_text().split()) == n, 30, f"signal {n} passed on"
        )


def test_a_submit_folder_without_the_interpreter_is_refused_in_one_line_that_says_what_to_do(
    tmp_path: Path,
) -> None:
    """Submitted from a folder with no .venv (autoresearch installed elsewhere) and without
    AUTORESEARCH_PYTHON, the job ended in bash's 'No such file or directory', exit 127; it now
    says what to do in one line, exit 2, a configuration error."""
    env = {k: v for k, v in os.environ.items() if k != "AUTORESEARCH_PYTHON"}
    job = subprocess.run(
        ["bash", str(SCRIPT), "+campaign=demo"],
        env={**env, "SLURM_SUBMIT_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (job.returncode, job.stdout) == (2, "")
    assert job.stderr == (
        f"no interpreter .venv/bin/python in {tmp_path}: run 'make install' there, or set AUTORESEARCH_PYTHON "
        "to the python that has autoresearch installed, then submit again\n"
    )


def test_a_controller_stopped_by_its_time_limit_then_a_term_is_requeued(tmp_path: Path) -> None:
    """Slurm's USR1 before the time limit, then a TERM (an scancel --signal, a node drain): the
    script passes each on (the USR1 as USR1, so that the controller can say why it stops; the
    TERM as INT), waits for the controller's own exit and requeues the job."""
    job, seen = _controller_job(tmp_path, stops_at_term=2)
    _signal_in_turn(job, seen, signal.SIGUSR1, signal.SIGTERM)
    out, _ = job.communicate(timeout=60)
    assert job.returncode == 130, out
    assert [line.split("-")[0] for line in seen.read_text().split()] == ["SIGUSR1", "SIGINT"]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "41"]
    assert "requeueing job 41" in out


def test_a_cancelled_controller_stops_and_is_not_requeued(tmp_path: Path) -> None:
    """scancel sends TERM: the controller stops as at Ctrl-C (its experiments keep running), and the
    job ends; requeueing it would bring back a controller a person cancelled."""
    job, seen = _controller_job(tmp_path, stops_at_term=1)
    job.send_signal(signal.SIGTERM)
    out, _ = job.communicate(timeout=60)
    assert job.returncode == 3, out
    assert seen.read_text().split() == ["SIGINT-with-term-ignored=True"]
    assert not (tmp_path / "scontrol.log").exists()
    assert "not requeued; submit this script again with the same arguments to resume" in " ".join(out.split())


def test_a_controller_cancelled_before_its_time_limit_stays_cancelled_when_the_limit_nears(
    tmp_path: Path,
) -> None:
    """A TERM (a person's, `scancel -b`) and, while the controller stops, the time limit's USR1:
    the first signal says why it stops, and the job ends; the USR1 requeued it, bringing back a
    controller a person had stopped."""
    job, seen = _controller_job(tmp_path, stops_at_term=2)
    _signal_in_turn(job, seen, signal.SIGTERM, signal.SIGUSR1)
    out, _ = job.communicate(timeout=60)
    assert job.returncode == 130, out
    assert [line.split("-")[0] for line in seen.read_text().split()] == ["SIGINT", "SIGUSR1"]
    assert not (tmp_path / "scontrol.log").exists()
    assert "not requeued; submit this script again with the same arguments to resume" in " ".join(out.split())


def test_a_stop_before_the_controller_can_hear_it_is_passed_on_once_it_can(tmp_path: Path) -> None:
    """A TERM while the controller starts (imports, Hydra: seconds): passed on at once, the INT
    raised KeyboardInterrupt wherever the start-up was, a traceback and code 130 instead of a
    clean stop. The script now holds it until the controller says it hears INT."""
    job, seen = _controller_job(tmp_path, stops_at_term=1, held=True)
    job.send_signal(signal.SIGTERM)
    assert job.stdout is not None
    assert job.stdout.readline() == "TERM: stopping the controller\n"  # the script has it
    (tmp_path / "go").touch()
    out, _ = job.communicate(timeout=60)
    assert job.returncode == 3, out
    assert seen.read_text().split() == ["SIGINT-with-term-ignored=True"]
    assert not (tmp_path / "scontrol.log").exists()


def _sacct_state(job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id], capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


def _submit(tmp_path: Path, python: str) -> tuple[str, Path]:
    """The script submitted from `tmp_path` with the real controller on the toy campaign (its
    experiments wait while the file `hold` exists), run by `python`: the job's id and its log."""
    arguments = campaign_command(
        tmp_path,
        "cluster=slurm_local",
        f"campaign.train_py={TOY / 'train.py'}",  # the job runs in the submit folder, not the repo
        f"campaign.prepare_py={TOY / 'prepare.py'}",
    )[3:]  # (after `python -m autoresearch`)
    (tmp_path / "runs").mkdir()
    env = {
        **os.environ,
        "AUTORESEARCH_PYTHON": python,
        "TOY_RUN_LOG": str(tmp_path / "runs.log"),
        "TOY_HOLD": str(tmp_path / "hold"),
    }
    submitted = subprocess.run(
        ["sbatch", "--parsable", str(SCRIPT), *arguments],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    return job_id, tmp_path / "runs" / f"controller-{job_id}.log"


def _held_python(tmp_path: Path) -> str:
    """The Python the job runs the real controller with, held at its start until a file `go`
    exists; a run after a requeue ends at once (it would resume the campaign)."""
    bin_dir = fake_commands(
        tmp_path / "bin",
        sys.executable,
        python=f"""import os, pathlib, sys, time
if int(os.environ.get("SLURM_RESTART_COUNT", "0")):
    sys.exit(print("requeued run: not started by the test"))
pathlib.Path({str(tmp_path / "started")!r}).touch()
while not pathlib.Path({str(tmp_path / "go")!r}).exists():
    time.sleep(0.05)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])""",
    )
    return str(bin_dir / "python")


def _cancel_for_good(job_id: str) -> None:
    """Cancel the controller job until Slurm holds it no more. A TERM after the time limit's USR1
    makes the script requeue its job (as a node drain would), so one scancel could leave it pending
    for the tests after: a pending job takes a place under their submit caps."""

    def gone() -> bool:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
        return not _job_state(job_id)

    wait_for(gone, 120, f"controller job {job_id} to leave the queue", every=1.0)


def _job_state(job_id: str) -> str:
    """The job's state in squeue ("" once it left). A scancel that comes while Slurm 22.05 requeues
    the job makes it lose count of the job: its place under the user's QOS submit cap is never
    given back, and the submit-cap tests later in the run found one place fewer (4 of 8 runs)."""
    listed = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30
    )
    return listed.stdout.strip()


def _cancel_experiments(campaign: Path) -> None:
    if (campaign / "submitit").is_dir():
        experiments = [p.name for p in (campaign / "submitit").iterdir() if p.name.isdigit()]
        subprocess.run(["scancel", *experiments], timeout=30)


@pytest.mark.slurm
def test_scancel_of_the_controller_job_stops_the_controller_once(tmp_path: Path, slurm_cluster: None) -> None:
    """`scancel JOB` (docs/SLURM.md's way to stop the controller job) has Slurm send TERM to every
    process of the job: the controller had it twice, once from Slurm and once passed on by the
    script, took the second for a person's insistence and left at once (code 130, "interrupted:
    a second Ctrl-C or SIGTERM"), without its clean stop."""
    run_log, hold = tmp_path / "runs.log", tmp_path / "hold"
    hold.touch()  # the toy experiments wait while it exists: the controller is mid-campaign
    job_id, job_log = _submit(tmp_path, sys.executable)
    campaign = tmp_path / "toy"
    try:
        wait_for(lambda: sum(experiment_runs(run_log).values()) >= 1, 120, "an experiment running")
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        wait_for(lambda: _sacct_state(job_id).startswith("CANCELLED"), 60, "the controller job to end")
        wait_for(lambda: "not requeued" in job_log.read_text(), 30, "the script's last line")
    finally:
        hold.unlink()
        _cancel_experiments(campaign)
    log = (campaign / "controller.log").read_text()
    assert "stopping: no new experiments" in log and "interrupted" not in log, log
    assert controller_state(campaign).endswith(": stopped by the user"), controller_state(campaign)


@pytest.mark.slurm
def test_a_controller_job_cancelled_while_the_controller_starts_stops_it_cleanly(
    tmp_path: Path, slurm_cluster: None
) -> None:
    """`scancel --batch --signal=TERM JOB` before the controller has set its handlers (held at
    the start of its interpreter here; the real start-up takes seconds): the INT passed on at
    once raised KeyboardInterrupt in the middle of the start-up, a traceback in the job's log."""
    (tmp_path / "hold").touch()  # (were it not to stop, its experiments would wait)
    job_id, job_log = _submit(tmp_path, _held_python(tmp_path))
    campaign = tmp_path / "toy"
    try:
        wait_for(lambda: (tmp_path / "started").exists(), 120, "the controller's process to start")
        subprocess.run(["scancel", "--batch", "--signal=TERM", job_id], check=True, timeout=30)
        wait_for(
            lambda: "TERM: stopping the controller" in job_log.read_text(), 60, "the script to have the TERM"
        )
        (tmp_path / "go").touch()
        wait_for(lambda: "not requeued" in job_log.read_text(), 120, "the script's last line")
    finally:
        _cancel_for_good(job_id)
        (tmp_path / "hold").unlink()
        _cancel_experiments(campaign)
    said = job_log.read_text()
    assert "KeyboardInterrupt" not in said, said
    log = campaign / "controller.log"
    assert log.exists() and "stopping: no new experiments" in log.read_text(), said
    assert controller_state(campaign).endswith(": stopped by the user"), controller_state(campaign)
    assert not experiment_runs(tmp_path / "runs.log"), "it started experiments"


@pytest.mark.slurm
def test_a_controller_job_stopped_by_its_time_limit_says_so(tmp_path: Path, slurm_cluster: None) -> None:
    """The time limit's USR1 (`scancel --batch --signal=USR1`, as Slurm's `--signal=B:USR1@300`
    sends it): the controller stopped and the job requeued itself, but the campaign's end said
    "stopped by the user", as if a person had stopped it."""
    run_log, hold = tmp_path / "runs.log", tmp_path / "hold"
    hold.touch()  # the toy experiments wait while it exists: the controller is mid-campaign
    (tmp_path / "go").touch()
    job_id, job_log = _submit(tmp_path, _held_python(tmp_path))
    campaign = tmp_path / "toy"
    try:
        wait_for(lambda: sum(experiment_runs(run_log).values()) >= 1, 120, "an experiment running")
        subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], check=True, timeout=30)
        wait_for(lambda: "requeueing job" in job_log.read_text(), 120, "the script to requeue the job")
        wait_for(lambda: _job_state(job_id) == "PENDING", 60, "Slurm to hold the requeued job")
    finally:
        _cancel_for_good(job_id)
        hold.unlink()
        _cancel_experiments(campaign)
    state = controller_state(campaign)
    assert state.endswith(": stopped by its Slurm job's time limit"), state
    assert "done (stopped by its Slurm job's time limit)" in (campaign / "controller.log").read_text()


def _passed_on(
    script: str, before: str, during: str, at: int, played: str = "USR2", after: str = ""
) -> tuple[list[str], int, bool]:
    """The signals the script's traps pass on to the controller for the stops `before` (traps run
    before the one `played`: by default USR2's, by which the controller says it is ready), `during`
    (run just before the `at`-th command the `played` trap runs, its functions' commands counted: 0
    for none) and `after`; how many commands the `played` trap ran; and whether the job would be
    requeued. bash runs a trap between any two commands of another, so the interleaving is played
    here command by command (a DEBUG trap), with `kill` noted rather than sent (a process may hear
    two INTs sent at once as one)."""
    block = script[script.index('controller=""') : script.index("(trap '' TERM")]
    harness = f"""
{block}
kill() {{ echo "$*"; }}
body() {{ local t; t=$(trap -p "$1"); t=${{t#"trap -- '"}}; echo "${{t%"' SIG$1"}}"; }}
stops() {{ for signal in "$@"; do eval "$(body "$signal")"; done; }}
controller=123
stops {before}
played=$(body {played})
n=0
set -T  # (the DEBUG trap runs in functions too)
trap '[ "$((++n))" -ne {at} ] || stops {during}' DEBUG
eval "$played"
trap - DEBUG
ran=$((n - 1))
stops {after}
if requeue_wanted; then echo "requeued"; fi
echo "ran $ran"
"""
    out = subprocess.run(["bash", "-c", harness], capture_output=True, text=True, check=True).stdout
    ran = int(out.splitlines()[-1].split()[1])  # (`eval` its first, less the DEBUG trap's count of `trap -`)
    return [line for line in out.splitlines() if line.startswith("-")], ran, "requeued" in out.splitlines()


@pytest.mark.parametrize(
    ("before", "during", "passed"),
    [
        ("", "TERM", ["-INT 123"]),
        ("TERM", "", ["-INT 123"]),
        ("TERM TERM", "", ["-INT 123"]),
        ("USR1 TERM", "", ["-USR1 123"]),
        ("TERM", "TERM", ["-INT 123"]),
        ("USR1", "TERM", ["-USR1 123"]),
        ("", "USR1", ["-USR1 123"]),
        ("TERM", "USR1", ["-INT 123"]),
    ],
)
def test_a_stop_as_the_controller_says_it_is_ready_is_passed_on_once(
    before: str, during: str, passed: list[str]
) -> None:
    """One scancel whose TERM came just as the controller said it was ready (between the USR2
    trap's `ready=1` and its look at what was held) was passed on twice: the controller took the
    second INT as a second signal and cut its stop short (exit 130). A TERM after the time limit's
    USR1, or after another TERM, landing later in that trap (inside its passing on of what was
    held) was passed on too, an INT beside the USR1. Stops held until the controller says it is
    ready, and any that land while it says so, are passed on as one, the first one's kind, wherever
    in the USR2 trap a stop lands."""
    _, ran, _ = _passed_on(SCRIPT.read_text(), before, during, at=0)
    assert ran >= 2
    landed = {at: _passed_on(SCRIPT.read_text(), before, during, at)[0] for at in range(1, ran + 1)}
    assert landed == dict.fromkeys(landed, passed)


@pytest.mark.parametrize("ready", [True, False], ids=["controller-ready", "controller-starting"])
@pytest.mark.parametrize(("first", "then", "requeued"), [("TERM", "USR1", False), ("USR1", "TERM", True)])
def test_a_stop_landing_inside_the_first_stops_trap_leaves_the_first_one_deciding_the_requeue(
    ready: bool, first: str, then: str, requeued: bool
) -> None:
    """The TERM trap looked at the time limit's flag, then set its own, `cancelled`, in two
    commands: the time limit's USR1 landing between the two set its flag too, and a controller a
    person had cancelled was requeued. The first stop now decides in one command, wherever in its
    trap the next lands: a TERM first ends the job, a USR1 first requeues it; each stop is passed
    on once to a controller that hears them, and those held for one starting, once, as the first."""
    before, after = ("USR2", "") if ready else ("", "USR2")
    script = SCRIPT.read_text()
    _, ran, _ = _passed_on(script, before, then, at=0, played=first, after=after)
    assert ran >= 2
    # (from 3: at 1, the `eval`, and 2, before the trap's first command, `then` comes first)
    landed = {at: _passed_on(script, before, then, at, first, after) for at in range(3, ran + 1)}
    kinds = {"TERM": "-INT 123", "USR1": "-USR1 123"}
    passed = sorted(kinds.values()) if ready else [kinds[first]]
    assert {at: (sorted(p), r) for at, (p, _, r) in landed.items()} == dict.fromkeys(
        landed, (passed, requeued)
    )
