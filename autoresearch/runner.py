"""The runner: on the node, runs one experiment's train.py under a hard deadline.

It is the only place untrusted code runs. It checks the harness is the campaign's own, strips
secrets from the environment the agent's code sees, keeps run.log, and always leaves outcome.json
(ok, crash, timeout, harness_mismatch, interrupted or lost) for the controller to read, whatever
happened; where the disk refuses that very file, it ends with DISK_REFUSED_EXIT instead.
Run as `python -m autoresearch.runner EXPERIMENT_DIR`, or call `run_experiment` (submitit does).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from autoresearch.files import (
    DISK_REFUSALS,
    disk_room,
    finite_number,
    free_bytes,
    free_inodes,
    in_kib,
    read_json,
    write_failure,
    write_json_atomic,
)
from autoresearch.fleet.gpus import CUDA_DEVICE_ORDER
from autoresearch.proposals import plain_line
from autoresearch.workspace import HARNESS_FILE, sha256_file

SPEC_FILE = "spec.json"
OUTCOME_FILE = "outcome.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "run.log"
PID_FILE = "runner.pid"  # the local runner's pid, slot and host, written by the fleet that starts it
# runner.pid renamed so by a runner whose own files the disk refused (DISK_REFUSED_EXIT): a rename
# takes no new block, and tells a resume what the exit status told no controller.
REFUSED_FILE = "runner.refused"
# Locked (flock) by the local runner for its whole life, from before its runner.pid is written: on
# one kernel a controller of another pid namespace (another container, or this one restarted) that
# can take it knows the runner ended, which its /proc cannot show (`fleet.runner_pid.left_its_lock`).
# Removed by the runner with its runner.pid, once its outcome.json is written (`_finish`).
LOCK_FILE = "runner.lock"
ABANDONED_FILE = "abandoned.json"  # the controller gave up on this workspace: never run it again
STARTED_FILE = "started.json"  # written when the runner begins: deadlines count from here, not the queue
# Room kept in the experiment folder while train.py runs, freed for outcome.json: a train.py that
# filled the folder's disk left none, and the runner died without an outcome (lost, and re-run).
# Random bytes: on a compressing file system (ZFS, btrfs, lz4 behind NFS) zeros take no blocks.
RESERVE_FILE = "outcome.reserve"
RESERVE_BYTES = 64 << 10
# Inodes a disk may have left and still be full: the reserve holds one for outcome.json, and a
# train.py's process may have freed a temporary file or two as it died.
RESERVE_INODES = 8
RESULT_VARIABLE = "AUTORESEARCH_RESULT"  # where the harness writes the result
SECRET_MARKERS = ("API_KEY", "TOKEN", "SECRET", "PASSWORD")
INFRA_STATUSES = ("interrupted", "lost")  # not the experiment's fault: it is re-queued
# Set by the job script when one of the partition's `setup` lines failed (fleet.slurm.checked_setup).
SETUP_FAILED_VARIABLE = "AUTORESEARCH_SETUP_FAILED"


def scrubbed_environment(base: dict[str, str]) -> dict[str, str]:
    """The environment minus anything that looks like a credential: train.py is untrusted."""
    return {k: v for k, v in base.items() if not any(m in k.upper() for m in SECRET_MARKERS)}


# Credentials taken out of os.environ for a moment (`fleet.slurm.environment_for_jobs`, while sbatch
# exports the environment), by variable: the proposer's thread goes on meanwhile, and what it
# redacts (`agent.client.redact`) must still know them. The lock is held while os.environ changes
# and while it is read here (reading it as another thread takes variables out can raise).
hidden_credentials: dict[str, str] = {}
environment_lock = threading.Lock()


def credential_values() -> list[str]:
    """The values of the credential-looking variables of this process's environment, those hidden
    for a moment (`hidden_credentials`) included."""
    with environment_lock:
        environment = {**hidden_credentials, **os.environ}
    return [v for k, v in environment.items() if k not in scrubbed_environment({k: ""})]


# run.log's size at most, give or take a second's output: a train.py printing without end filled
# the disk, and the runner and controller that read the log, their memory. A run prints some kB.
LOG_CAP_BYTES = 64 << 20
TAIL_BYTES = 64 << 10  # how much of the log's end is read for its last line


EMPTY_LOG = "run.log is empty (train.py printed nothing, or closed its output)"


def _log_tail(log: Path) -> str:
    """The log's last line, cut to 300 characters, its control characters made spaces: it goes
    into the controller's log on a terminal (an escape sequence there clears it), results.tsv and
    the study. One with nothing says so: a reason that ends at a colon reads as cut short."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "run.log is gone (deleted by train.py?)"
    return plain_line(lines[-1][:300]) if lines else EMPTY_LOG


class _LogFull(Exception):
    """train.py's run.log passed LOG_CAP_BYTES."""


def _cut_log(log: Path) -> None:
    """Cut a run.log over LOG_CAP_BYTES back to its start and its last TAIL_BYTES (where a crash's
    traceback is), with a line between them saying so."""
    try:
        f = log.open("r+b")
    except FileNotFoundError:  # train.py deleted it
        return
    with f:
        size = f.seek(0, os.SEEK_END)
        if size <= LOG_CAP_BYTES:
            return
        f.seek(size - TAIL_BYTES)
        tail = f.read()
        f.seek(LOG_CAP_BYTES - TAIL_BYTES)
        f.write(f"\n[... {size - LOG_CAP_BYTES + TAIL_BYTES} bytes cut by the runner ...]\n".encode() + tail)
        f.truncate()


def _out_of_bytes(folder: Path) -> bool:
    """Whether the disk of `folder` has fewer bytes left than the runner's reserve."""
    free = free_bytes(folder)
    return free is not None and free < RESERVE_BYTES


def _out_of_inodes(folder: Path) -> bool:
    """Whether the disk of `folder` has (next to) no inodes left: full to a new file, with bytes
    to spare (a disk of many small files)."""
    free = free_inodes(folder)
    return free is not None and free < RESERVE_INODES


def _disk_full(folder: Path) -> bool:
    """Whether the disk of `folder` refuses new writes: out of bytes, or of inodes."""
    return _out_of_bytes(folder) or _out_of_inodes(folder)


# What a write refused by a quota prints (Python's OSError, a C library's perror): statvfs does not
# show a quota, so the log is all there is to go by. "No space left on device" alone is not taken:
# a change that fills /dev/shm or the node's /tmp (more loader workers) prints it too.
QUOTA_REFUSAL = os.strerror(errno.EDQUOT)


def _held(folder: Path) -> tuple[int, int]:
    """The disk space the files below `folder` take, and how many there are (folders too: each
    takes an inode), the runner's reserve left out."""
    held = files = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):  # (gone meanwhile)
            if path.name == RESERVE_FILE:
                continue
            files += 1
            if path.is_file() and not path.is_symlink():
                held += path.lstat().st_blocks * 512
    return held, files


@dataclass(frozen=True)
class Room:
    """The disk of an experiment folder as the runner began: the room left on it, in bytes and in
    inodes, and what the folder held then (its spec, train.py and harness), in bytes and files."""

    free: int | None
    held: int
    free_inodes: int | None
    files: int

    @classmethod
    def of(cls, exp: Path) -> Room:
        held, files = _held(exp)
        return cls(free_bytes(exp), held, free_inodes(exp), files)

    def half_taken(self, exp: Path) -> tuple[bool, int, int]:
        """Whether the folder took half or more of either room since (bytes or inodes: train.py
        filled the disk itself), and the bytes and files it gained."""
        held, files = _held(exp)
        grew, gained = held - self.held, files - self.files
        took = any(
            free is not None and used >= free // 2
            for used, free in ((grew, self.free), (gained, self.free_inodes))
        )
        return took, grew, gained


def _disk_refused(exp: Path, tail: str, began: Room) -> dict[str, Any]:
    """The outcome of a train.py that failed, or wrote no result, because the disk of its folder
    refused its writes, where train.py did not fill that disk itself; {} otherwise. Such a run is
    lost to the infrastructure, like a node that cannot run it (exit 75) or a preemption, not the
    change's crash: the agent would learn that its idea broke training, and the change be
    dropped. The controller re-queues it at no cost and stops the campaign (exit 2), as it does
    when a write of its own into the campaign folder is refused: every run after it would fail
    the same way until someone frees space; the first time for its experiment only, as a quota
    its own writes passed reads the same (`Campaign._fail_and_requeue`). A train.py whose folder
    took half or more of the room there was when the runner `began`, in bytes or in inodes (files
    made), filled the disk itself: that is its crash, as before. A disk refused train.py's writes
    where the folder's own is full, of bytes or of inodes (with bytes to spare: others' many small
    files), or its log says a quota refused them; a "No space left on device" with room in the folder is another disk's (a
    /dev/shm the change filled) and stays a crash. (Another process's writes below the same
    disk, outside the folder, are not told from train.py's writing there.)"""
    full, no_inodes = _disk_full(exp), _out_of_inodes(exp)
    if not (full or QUOTA_REFUSAL in tail):
        return {}
    took, grew, gained = began.half_taken(exp)
    if took:
        return {}
    what = f"the disk of its folder {exp}" if full else "a disk quota"
    made = f", {max(0, gained)} file{'s' if gained != 1 else ''} made" if no_inodes else ""
    return {
        "status": "lost",
        "disk_full": True,
        "free_bytes": free_bytes(exp),
        "reason": (
            f"{what} refused train.py's writes ({disk_room(exp, 'in its folder')}, "
            f"{in_kib(max(0, grew))} written by this run{made}): {tail}"
        ),
    }


def _ended_by(returncode: int) -> str:
    """How train.py ended: its exit status, or the signal that killed it, named (a log that stops
    mid-step says nothing of a kill; SIGKILL from nobody in particular is most often the kernel's
    out-of-memory killer)."""
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint = " (out of memory? the kernel's OOM killer sends it)" if -returncode == signal.SIGKILL else ""
    return f"killed by {name}{hint}"


def not_to_run(exp: Path) -> str:
    """Why a workspace must not run (again), or ''. A job can start after the controller counted
    its experiment (its outcome, or lost and queued again as a new trial)."""
    for name in (OUTCOME_FILE, ABANDONED_FILE):
        if (exp / name).exists():
            return f"{name} exists: not run a second time"
    return ""


class _Interrupted(Exception):
    pass


def started_at(exp_dir: Path) -> float | None:
    """When the runner of `exp_dir` began (its started.json), or None: not begun, or the file
    damaged (by hand: a start that is no number is none). Backstop deadlines count from it, so a
    runner re-attached by a later controller keeps the one it started with."""
    started = (read_json(exp_dir / STARTED_FILE) or {}).get("started_at")
    return float(started) if finite_number(started) else None


def run_experiment(exp_dir: str | Path) -> dict[str, Any]:
    """Run the experiment in `exp_dir` and return (and write) its outcome; or, for a workspace
    that ran already or was given up on (`not_to_run`), return "skipped" and leave it as it is,
    whichever way it was started (local runner, array task, worker)."""
    exp = Path(exp_dir)
    if why := not_to_run(exp):
        return {"status": "skipped", "reason": why}
    spec_text = (exp / SPEC_FILE).read_bytes()
    spec = json.loads(spec_text)
    own = Own(spec_text, _launch_of(spec_text), _identity(exp), _identity(exp.parent))
    started = time.time()
    finish = functools.partial(_finish, exp, own=own, began=(started, time.monotonic()))
    outcome: dict[str, Any] = {
        "trial": spec["trial"],
        "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),  # Slurm's name, for --exclude
        "gpu_type": spec.get("gpu_type", ""),
        "gpus_seen": os.environ.get("CUDA_VISIBLE_DEVICES", os.environ.get("SLURM_JOB_GPUS", "")),
        "partition": spec.get("partition", ""),
        "started_at": started,
        "slurm_job_id": slurm_job_id(),
    }
    ending: list[str] = []  # set once the runner ends train.py: a later signal must not cut that short

    def on_signal(signum: int, _frame: object) -> None:
        if not ending:
            ending.append(signal.Signals(signum).name)
            raise _Interrupted(ending[0])

    # The stop signals are the runner's before started.json says it began, and one from then on is
    # an interruption wherever it comes, train.py's start included: one before the handler, or
    # while the runner started train.py, ended the runner with no outcome (lost, not interrupted).
    previous: dict[signal.Signals, Any] = {}
    stopped: dict[str, Any] = {}  # how the run ended other than by train.py's own end, where it did
    returncode = 0
    began = Room(None, 0, None, 0)
    try:
        for s in (signal.SIGTERM, signal.SIGUSR2):
            previous[s] = signal.signal(s, on_signal)
        write_json_atomic(exp / STARTED_FILE, {k: outcome[k] for k in ("node", "started_at", "slurm_job_id")})
        began = Room.of(exp)
        with contextlib.suppress(OSError):  # (a disk full already: train.py will say so)
            (exp / RESERVE_FILE).write_bytes(os.urandom(RESERVE_BYTES))
        if setup_failed := os.environ.get(SETUP_FAILED_VARIABLE):  # not the environment it was meant for
            stopped = {
                "status": "lost",
                "node_unfit": True,
                "reason": f"the node cannot run it: {setup_failed}",
            }
        elif sha256_file(exp / HARNESS_FILE) != spec["harness_sha256"]:
            stopped = {
                "status": "harness_mismatch",
                "reason": "prepare.py differs from the campaign's harness",
            }
        else:
            returncode, stopped = _run_train_py(exp, spec, ending)
    except _Interrupted as sig:
        stopped = {"status": "interrupted", "reason": f"runner received {sig}"}
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    _cut_log(exp / LOG_FILE)  # (printed past the cap between two looks at it)
    if stopped:
        outcome.update(stopped)
        return finish(outcome)

    if not exp.is_dir():  # (`_finish` makes it again for the outcome, where it may)
        outcome.update(
            status="crash",
            reason=f"{_ended_by(returncode)}: its experiment folder was deleted as train.py ran",
        )
        return finish(outcome)
    if returncode == os.EX_TEMPFAIL:  # the harness found the node unfit (no GPU): re-queued, not blamed
        outcome.update(
            status="lost", node_unfit=True, reason=f"the node cannot run it: {_log_tail(exp / LOG_FILE)}"
        )
        return finish(outcome)
    if returncode != 0:
        tail = _log_tail(exp / LOG_FILE)
        if refused := _disk_refused(exp, tail, began):
            outcome.update(refused)
            return finish(outcome)
        full = "; the disk of its folder is full (of what train.py wrote)" if _disk_full(exp) else ""
        outcome.update(status="crash", reason=f"{_ended_by(returncode)}: {tail}{full}")
        return finish(outcome)
    try:
        metrics = json.loads((exp / METRICS_FILE).read_text())
    except (FileNotFoundError, ValueError, RecursionError):  # not there, not JSON text, nested past reading
        no_result = "train.py exited 0 but the harness wrote no result"
        outcome.update(_disk_refused(exp, no_result, began) or {"status": "crash", "reason": no_result})
        return finish(outcome)
    if not isinstance(metrics, dict):  # the controller reads its figures by name
        what = type(metrics).__name__
        outcome.update(status="crash", reason=f"the result is a JSON {what}, not an object of figures")
        return finish(outcome)
    if metrics.get("prepare_sha256") != spec["harness_sha256"]:  # only the harness's write_result stamps it
        why = "by another harness" if "prepare_sha256" in metrics else "without the harness's hash"
        outcome.update(status="harness_mismatch", reason=f"result written {why}, not by prepare.write_result")
        return finish(outcome)
    outcome.update(status="ok", reason="", metrics=metrics)
    return finish(outcome)


def result_file(exp: Path) -> str:
    """Where the harness writes the result: train.py's RESULT_VARIABLE, which every process of the
    run inherits, so the local fleet finds by it those its runner killed outright left running
    (`fleet.leftovers`)."""
    return str((exp / METRICS_FILE).resolve())


def _run_train_py(exp: Path, spec: dict[str, Any], ending: list[str]) -> tuple[int, dict[str, Any]]:
    """Run train.py to its end: its exit status, and how the runner ended it where it did (a
    timeout, a log past its cap; {} where it ended by itself). A stop signal (`_Interrupted`)
    passes through, once what train.py started is ended, even one that came as it was started."""
    env = scrubbed_environment(dict(os.environ))
    # An index in CUDA_VISIBLE_DEVICES, a local slot's or Slurm's (its GPUs in gres.conf's order, all
    # seen where its cgroup does not constrain devices), is nvidia-smi's, in PCI bus order; CUDA's
    # own order, or a user's FASTEST_FIRST, may open another GPU of a node of two models.
    env["CUDA_DEVICE_ORDER"] = CUDA_DEVICE_ORDER
    env.update({k: str(v) for k, v in spec.get("env", {}).items()})
    env[RESULT_VARIABLE] = result_file(exp)
    if "OMP_NUM_THREADS" not in env and env.get("SLURM_CPUS_PER_TASK"):
        env["OMP_NUM_THREADS"] = env["SLURM_CPUS_PER_TASK"]  # threads = the CPUs Slurm granted
    (exp / METRICS_FILE).unlink(missing_ok=True)
    with open(exp / LOG_FILE, "wb") as log, _adopting_orphans() as not_train_pys:
        proc = None
        try:
            proc = subprocess.Popen(
                [spec.get("python", sys.executable), "train.py"],
                cwd=exp,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,  # (a group not the terminal's foreground would stop reading it)
                process_group=0,
                preexec_fn=functools.partial(_before_train_py_starts, os.getpid()),
            )
            returncode = _wait_while_running(proc, float(spec["deadline_s"]), log, ending)
            if returncode == -signal.SIGTERM:
                _await_a_signal_of_its_own()
            ending.append("exited")
            return returncode, {}
        except subprocess.TimeoutExpired:
            ending.append("deadline")
            return -signal.SIGKILL, {
                "status": "timeout",
                "reason": f"killed at the {spec['deadline_s']:.0f} s deadline",
            }
        except _LogFull:
            ending.append("log full")
            mib = LOG_CAP_BYTES >> 20
            return -signal.SIGKILL, {
                "status": "crash",
                "reason": f"ended: train.py printed over {mib} MiB to run.log",
            }
        finally:  # however it ended, what train.py started and left running must not hold the slot
            if proc is None:  # (stopped as it was started: a train.py forked, its Popen not made)
                _kill_escapees(0, not_train_pys)
            else:
                _kill_group(proc, not_train_pys)


# Slurm's TERM (a preemption, an scancel) reaches every process of a job, train.py and the runner
# alike, and train.py can die of it before the runner's handler has run: its crash would then hide
# the preemption. A train.py killed by TERM gives the runner this long to be told the same.
SIGNAL_GRACE_S = 2.0


def _await_a_signal_of_its_own() -> None:
    """Wait up to SIGNAL_GRACE_S for the stop signal that killed train.py to reach the runner too
    (its handler raises `_Interrupted`, which ends the sleep); none came: train.py's death is its
    own crash."""
    time.sleep(SIGNAL_GRACE_S)


WAIT_SLICE_S = 1.0  # how much of a wait for train.py may be counted as running after a resume


def _wait_while_running(
    proc: subprocess.Popen[bytes], deadline_s: float, log: BinaryIO, stopped_by: list[str]
) -> int:
    """train.py's exit status; `_LogFull` once its `log` passes LOG_CAP_BYTES; or TimeoutExpired
    once it has run `deadline_s` seconds, time its job stood suspended not counted: `scontrol
    suspend` stops every process of the job (SIGSTOP) and resumes them with SIGCONT, and a wait
    that counted the stop would kill the run at its resumption as a timeout of its own making. A
    wait slice in which a SIGCONT came counts as one slice at most.
    `_Interrupted` where a stop signal came (`stopped_by` names it) whose handler's exception
    Python swallowed: one raised in an at-fork hook (logging's, as train.py was started), a
    `__del__` or a weakref callback is only printed, and the stop would be forgotten."""
    resumed: list[bool] = []
    previous = signal.signal(signal.SIGCONT, lambda _signum, _frame: resumed.append(True))
    left = deadline_s
    try:
        while True:
            if stopped_by:
                raise _Interrupted(stopped_by[0])
            began = time.monotonic()
            try:
                return proc.wait(timeout=max(0.0, min(left, WAIT_SLICE_S)))
            except subprocess.TimeoutExpired:
                spent = time.monotonic() - began
            if os.fstat(log.fileno()).st_size > LOG_CAP_BYTES:
                raise _LogFull
            if resumed:
                resumed.clear()
                spent = min(spent, WAIT_SLICE_S)
            left -= spent
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, deadline_s) from None
    finally:
        signal.signal(signal.SIGCONT, previous)


@dataclass(frozen=True)
class Own:
    """What makes an experiment folder this run's: its spec.json as the runner read it, and the
    launch's token in it (each launch writes one of its own), the folder's identity and that of
    the folder holding it."""

    spec_text: bytes
    launch: object
    folder: tuple[int, int] | None
    parent: tuple[int, int] | None


def _launch_of(spec_text: bytes | None) -> object:
    """The launch token a spec.json holds, or None (none there, or not a spec)."""
    try:
        spec = json.loads(spec_text or b"")
    except ValueError:
        return None
    return spec.get("launch") if isinstance(spec, dict) else None


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _finish(exp: Path, outcome: dict[str, Any], own: Own, began: tuple[float, float]) -> dict[str, Any]:
    """Write the outcome where the controller reads it, if the folder is still this run's (`_ours`):
    one given to another run, or a campaign removed to start over, must not get it. Its end is
    its start (`began`: the clock's time, and the monotonic clock's) and how long it ran: a step
    of the clock as it ran (NTP) would bill that much GPU time more, or none."""
    started, monotonic = began
    outcome["ended_at"] = started + (time.monotonic() - monotonic)
    if _ours(exp, own):
        (exp / RESERVE_FILE).unlink(missing_ok=True)  # (the room outcome.json is written in)
        write_json_atomic(exp / OUTCOME_FILE, outcome)
        # Of use to no one once outcome.json is written: each judge of the lock reads that first, and
        # a runner.pid beside it. Read gone, it tells what held does (`fleet.runner_pid._lock_free`).
        # One that cannot be removed (a folder in its place, an NFS removal refused) is left.
        for done_with in (PID_FILE, LOCK_FILE):
            with contextlib.suppress(OSError):
                (exp / done_with).unlink(missing_ok=True)
    else:
        print(
            f"{exp} is no longer this run's folder (its campaign removed?): outcome not written",
            file=sys.stderr,
        )
    return outcome


def _ours(exp: Path, own: Own) -> bool:
    """Whether `exp` is still this run's folder, made again where it was deleted (by train.py: the
    controller still needs the outcome, and without it ran the edit again, max_retries times, each
    run deleting it) in the same folder as before. A folder with another spec.json is another run's
    (the campaign removed and begun again, up to this trial): an outcome written there would be
    taken as that run's. One whose parent is gone or new is not made again. The same folder is
    this run's whatever train.py did to its spec.json, unless it names another launch."""
    folder = _identity(exp)
    if folder is not None:
        try:
            spec_text = (exp / SPEC_FILE).read_bytes()
        except OSError:  # (deleted, or made a folder, by train.py)
            spec_text = None
        if spec_text == own.spec_text:
            return True
        return folder == own.folder and _launch_of(spec_text) in (None, own.launch)
    if own.parent is None or _identity(exp.parent) != own.parent:
        return False
    try:
        exp.mkdir()
        (exp / SPEC_FILE).write_bytes(own.spec_text)
    except OSError:
        return False
    return True


# Linux's prctl, loaded once here: the child after fork should only make the call.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


OOM_SCORE_ADJ_MAX = b"1000"


def _before_train_py_starts(runner: int) -> None:
    """In train.py's process before it starts (Linux only; elsewhere neither holds):

    - train.py has a process group of its own (the runner ends the whole group), so a runner killed
      outright (SIGKILL, the OOM killer) would leave it training on a slot the controller has
      given to another run; the kernel now kills it too, and a runner gone before that was asked
      for (`runner` is no longer the parent) ends it here.
    - a train.py that takes the machine's memory is the one the kernel's OOM killer ends, first
      of all its processes: not the controller, a runner or the W&B process, which would end the
      campaign or lose a run's outcome. (A Slurm job's cgroup limits it before that.)"""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != runner:
            os._exit(1)
        try:  # (raising one's own score needs no privilege, but a sandbox may hide /proc)
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            os.write(fd, OOM_SCORE_ADJ_MAX)
            os.close(fd)
        except OSError:
            pass


TERM_GRACE_S = 5.0  # how long train.py's process group has to end on TERM before it gets KILL
GROUP_POLL_S = 0.05  # how often the runner looks whether that group has ended


def _kill_group(proc: subprocess.Popen[bytes], spared: set[int]) -> None:
    """End train.py and everything of its process group (dataloader workers, a child it left
    running when it exited): TERM, then KILL to what is left after TERM_GRACE_S. The group, not
    train.py alone, is waited for: a child that ignores TERM outlived a train.py that did not.
    Then KILL what left the group (`_kill_escapees`)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        if _group_ended(proc, TERM_GRACE_S):
            break
    _kill_escapees(proc.pid, spared)


PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


@contextlib.contextmanager
def _adopting_orphans() -> Iterator[set[int]]:
    """For the block, this process adopts the orphans of its descendants (Linux's child
    subreaper): what train.py started and left, in a group or session of its own and whatever its
    environment (a daemon's double fork), stays below the runner, where `_kill_escapees` finds
    it. Yields the children this process had already, which are not train.py's. What those
    children start is not told from train.py's, so run_experiment must own its process (the
    local runner and submitit's job processes start nothing else). Where a sandbox refuses the
    subreaper, the runner says once that such escapees cannot be found."""
    if _LIBC is None:
        yield set()
        return
    was = ctypes.c_int()
    _LIBC.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(was))
    adopting = _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1) == 0
    if not adopting:
        _say_escapees_cannot_be_found(ctypes.get_errno())
    try:
        yield set(_children_of(_process_table(), os.getpid()))
    finally:
        if adopting:
            _LIBC.prctl(PR_SET_CHILD_SUBREAPER, was.value)


@functools.cache
def _say_escapees_cannot_be_found(errno: int) -> None:
    """One line per process (a worker runs many experiments), not one per run."""
    print(
        f"this process cannot be a child subreaper here ({os.strerror(errno)}): what train.py starts "
        "outside its process group and leaves running (a daemon's double fork) cannot be found and ended",
        file=sys.stderr,
    )


def _kill_escapees(train_py: int, spared: set[int]) -> None:
    """KILL what train.py started that left its group and lives on, and what that started, until
    none is left or TERM_GRACE_S has passed (an escapee may fork as it is killed): every
    descendant of this process's children other than `spared` (`_adopting_orphans`), and reap
    those that became its children. Only /proc/PID/stat is read: reading a process's environ or
    cmdline waits on its memory map's lock, which a process stuck in uninterruptible sleep (a
    hung NFS mount) can hold for good. Without /proc (not Linux) none is found."""
    until = time.monotonic() + TERM_GRACE_S
    while True:
        table = _process_table()
        ours = [pid for pid in _children_of(table, os.getpid()) if pid not in spared]
        for pid in ours:
            if pid != train_py:  # (train.py, where not reaped yet, is its Popen's to reap)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
        found = [pid for pid in _descendants(table, ours) if table[pid][1] != "Z"]
        if not found or time.monotonic() >= until:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(GROUP_POLL_S)


def _process_table() -> dict[int, tuple[int, str, int]]:
    """Each process of this machine: its parent, state and process group, from /proc/PID/stat,
    which takes no lock of the process (empty without /proc)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            table[int(stat.parent.name)] = (int(parent), state, int(group))
        except (OSError, ValueError):  # ended meanwhile
            continue
    return table


def _children_of(table: dict[int, tuple[int, str, int]], parent: int) -> list[int]:
    return [pid for pid, (of, _state, _group) in table.items() if of == parent]


def _descendants(table: dict[int, tuple[int, str, int]], roots: list[int]) -> list[int]:
    """`roots`, and every process below them."""
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(_children_of(table, pid))
    return found


def _group_ended(proc: subprocess.Popen[bytes], within: float) -> bool:
    """Whether train.py's process group has ended within `within` seconds (train.py reaped)."""
    until = time.monotonic() + within
    while True:
        proc.poll()
        if not _group_lives(proc.pid):
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(GROUP_POLL_S)


def _group_lives(group: int) -> bool:
    """Whether a process of `group` still runs. Its zombies do not: a child whose parent ended is
    reaped by its new parent, but a PID 1 that reaps none (a container's without an init) leaves
    it a member for `killpg`, and each run waited TERM_GRACE_S twice for it."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    if not Path("/proc/self/stat").exists():  # (no /proc to tell zombies by)
        return True
    return any(member_of == group and state != "Z" for _parent, state, member_of in _process_table().values())


def slurm_job_id() -> str:
    """The Slurm job running this process (A_i for an array task), or "" outside Slurm."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID", "")


# The runner's exit status where the disk of its experiment folder (full, or a quota) refused its
# own files, started.json or outcome.json: no outcome can say so, and a runner that ended without
# one is lost, a retry of its change spent on a full disk; its fleet reads this status instead
# (`runner_files_refused`). (sysexits' "cannot create an output file")
DISK_REFUSED_EXIT = os.EX_CANTCREAT


def runner_files_refused(exp: Path, trial: int) -> dict[str, Any]:
    """The outcome of a runner that ended with DISK_REFUSED_EXIT, as its fleet gives it: lost to
    the disk (`disk_full`), re-queued at no cost, the campaign stopped until there is room."""
    return refused_by_disk(
        trial,
        exp,
        f"the disk of its folder {exp} refused the runner's own files, started.json or outcome.json",
    )


def refused_by_disk(trial: int, folder: Path, said: str) -> dict[str, Any]:
    """A run lost to the disk of `folder` refusing a file of the runner's or its worker's, never
    its change's doing (`runner_files`): re-queued at no cost, the campaign stopped until there is
    room. `said`: what was refused, where."""
    free = free_bytes(folder)
    return {
        "trial": trial,
        "status": "lost",
        "disk_full": True,
        "runner_files": True,  # (not train.py's writes: never its change's doing)
        "free_bytes": free,
        "reason": f"{said} ({disk_room(folder, 'in its folder')})",
    }


def ended_outcome(exp: Path, trial: int) -> dict[str, Any] | None:
    """The outcome the runner of `exp` left: its outcome.json, or its disk's refusal of it (a local
    runner's REFUSED_FILE: `runner_files_refused`); None where it left neither."""
    if (outcome := read_json(exp / OUTCOME_FILE)) is not None:
        return outcome
    return runner_files_refused(exp, trial) if (exp / REFUSED_FILE).exists() else None


def run_or_exit_if_disk_refuses(exp_dir: str | Path, local: bool = False) -> dict[str, Any]:
    """`run_experiment`, whichever way it was started (this module's `main`, a Slurm array task,
    a worker): where the disk of its folder (full, a quota, read-only) refuses the runner's own files, the
    process ends with DISK_REFUSED_EXIT, the one word of it that reaches its fleet (the local
    fleet's returncode, sacct's ExitCode), as no outcome can say so. A `local` runner also leaves
    REFUSED_FILE (`leave_refusal`): a controller that did not start it (a resume, its own
    stopped) never sees its exit status."""
    try:
        return run_experiment(exp_dir)
    except OSError as err:
        if err.errno not in DISK_REFUSALS:
            raise
        if local:
            leave_refusal(Path(exp_dir))
        with contextlib.suppress(OSError):  # (runner.log, its stderr, is on that disk too)
            said = write_failure(err, Path(exp_dir))
            print(f"the disk refused the runner's own files: {said}", file=sys.stderr, flush=True)
        sys.exit(DISK_REFUSED_EXIT)


def leave_refusal(exp: Path) -> None:
    """Say a local runner's own files were refused: its runner.pid renamed REFUSED_FILE, a rename
    that takes no new block; or, where its fleet has not written runner.pid yet (it does so once
    the runner started: started.json refused first), REFUSED_FILE made empty, which takes none
    either, and which a runner.pid written after it does not hide (`ended_outcome`)."""
    try:
        os.replace(exp / PID_FILE, exp / REFUSED_FILE)
    except FileNotFoundError:
        with contextlib.suppress(OSError):  # (no inode left: its exit status alone says it)
            (exp / REFUSED_FILE).touch()
    except OSError:
        pass


def hold_lock(fd: str) -> None:
    """Keep the runner lock its fleet took and handed over as the open file `fd` (`LOCK_FILE`) for
    this process's life, and from train.py: a process it started holding it would keep its run
    alive to another pid namespace after the runner ended."""
    try:
        os.set_inheritable(int(fd), False)
    except (ValueError, OSError) as err:
        sys.exit(f"the runner's lock {fd!r} is no open file descriptor: {err}")


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m autoresearch.runner EXPERIMENT_DIR [LOCK_FD]")
    if len(sys.argv) == 3:
        hold_lock(sys.argv[2])
    outcome = run_or_exit_if_disk_refuses(sys.argv[1], local=True)
    if outcome["status"] == "skipped":
        sys.exit(f"not run: {outcome['reason']}")
    print(f"trial {outcome['trial']}: {outcome['status']} {outcome.get('reason', '')}".rstrip())


if __name__ == "__main__":
    main()
