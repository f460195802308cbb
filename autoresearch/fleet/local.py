"""Local slots: one runner process per slot, on this machine's GPUs or CPU cores.

Each runner starts in its own session, so a controller killed with SIGKILL leaves it running; the
next controller re-attaches to it by pid instead of starting the experiment again. A slot is given
again only once what its run left running is ended (`leftovers.Leftovers`): a runner killed
outright ends train.py with it, but not what train.py started.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from autoresearch.files import DISK_REFUSALS, write_json_atomic
from autoresearch.fleet.base import Finished, JobSpec, Pool
from autoresearch.fleet.leftovers import UNSEEN_FILE, Leftovers
from autoresearch.fleet.lineage import (
    Lineage,
    forget_lineage,
    keep_lineage,
    kept_lineage,
    lineages,
    runner_start,
    with_unread,
)
from autoresearch.fleet.runner_pid import (
    LOCK_REFUSED,
    LOCKED,
    find_runner,
    is_our_runner,
    kernel_view,
    read_pid_file,
)
from autoresearch.runner import (
    ABANDONED_FILE,
    DISK_REFUSED_EXIT,
    GROUP_POLL_S,
    LOCK_FILE,
    PID_FILE,
    ended_outcome,
    leave_refusal,
    refused_by_disk,
    runner_files_refused,
    scrubbed_environment,
    started_at,
)

log = logging.getLogger("autoresearch")

KILL_GRACE_S = 30.0
CANCEL_GRACE_S = 15.0  # how long a cancelled runner has to end train.py and write its outcome


@dataclass
class _Running:
    job: JobSpec
    pid: int
    started: str  # its start time (`lineage.runner_start`): a re-attached one's pid may be another's later
    slot: int
    deadline: float  # by time.monotonic(): a step of the wall clock (NTP, a VM resumed) moves it not
    proc: subprocess.Popen[bytes] | None = None  # None when re-attached (not our child)
    killed: bool = field(default=False)
    lineage: Lineage = field(default_factory=dict)  # its descendants at the last poll (`lineage.lineages`)
    # what its run's `lineage.LINEAGE_FILE` holds (None: not known, to be written)
    kept: Lineage | None = field(default_factory=dict)


class LocalFleet:
    """N slots on this machine; each slot gets a GPU or MIG instance (CUDA_VISIBLE_DEVICES, `gpus`)
    or a share of the cores."""

    def __init__(
        self, pool: Pool, devices: list[str], threads_per_slot: int, deadline_s: float, campaign_dir: str = ""
    ) -> None:
        self.pools = {pool.name: pool}
        self._pool = pool
        self._devices = devices
        self._threads = max(1, threads_per_slot)
        self._deadline_s = deadline_s
        self._running: dict[int, _Running] = {}
        self._refused: list[Finished] = []  # runners that could not be started, reported at the next poll
        # What ended runs left running, and what it could not see yet, kept for the next controller.
        self._leftovers = Leftovers(Path(campaign_dir) / UNSEEN_FILE if campaign_dir else None)

    def free_slots(self, pool: str) -> int:
        return self._pool.slots - len(self._running) if pool == self._pool.name else 0

    def running(self) -> int:
        return len(self._running)

    def _free_slot_index(self, wanted: int | None = None) -> int:
        """`wanted` if it is a free slot, else the first free one (past the last if none is)."""
        taken = {r.slot for r in self._running.values()}
        if wanted is not None and 0 <= wanted < self._pool.slots and wanted not in taken:
            return wanted
        return next((i for i in range(self._pool.slots) if i not in taken), len(self._running))

    def submit(self, jobs: list[JobSpec]) -> dict[int, str]:
        handles = {}
        for job in jobs:
            slot = self._free_slot_index()
            proc, locked = self._start(job, slot)
            if proc is None or not self._record(job, proc, slot, locked):
                continue
            self._running[job.trial] = _Running(
                job, proc.pid, runner_start(proc.pid), slot, time.monotonic() + self._deadline_s, proc
            )
            handles[job.trial] = f"local:{proc.pid}"
        return handles

    def _start(self, job: JobSpec, slot: int) -> tuple[subprocess.Popen[bytes] | None, bool]:
        """The runner of `job` started in `slot`, and whether it was handed its lock; no
        runner where it could not be (`_refuse`d, or lost to the disk that refused its runner.log)."""
        env = scrubbed_environment(dict(os.environ))
        env["OMP_NUM_THREADS"] = str(self._threads)
        if self._devices:
            env["CUDA_VISIBLE_DEVICES"] = self._devices[slot % len(self._devices)]
        try:
            with open(job.exp_dir / "runner.log", "wb") as runner_log:
                return self._popen(job, env, runner_log)
        except OSError as err:  # runner.log refused (Popen's are `_refuse`d): nothing has started
            if err.errno not in DISK_REFUSALS:
                raise
            self._lost_to_the_disk(job, "runner.log", err)
            return None, False

    def _popen(
        self, job: JobSpec, env: dict[str, str], runner_log: BinaryIO
    ) -> tuple[subprocess.Popen[bytes] | None, bool]:
        """`_start`'s runner, its output to `runner_log`, handed its lock where one was taken."""
        command = [sys.executable, "-m", "autoresearch.runner", str(job.exp_dir.resolve())]
        lock = _take_runner_lock(job.exp_dir)
        try:
            proc = subprocess.Popen(
                command + ([str(lock)] if lock is not None else []),
                env=env,
                stdout=runner_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(lock,) if lock is not None else (),
            )
        except OSError as err:  # Python gone (a .venv made again), no fork left: as sbatch refusing
            self._refuse(job, f"the runner could not be started: {sys.executable}: {err.strerror or err}")
            return None, False
        finally:  # (the runner holds it now, alone)
            if lock is not None:
                os.close(lock)
        return proc, lock is not None

    def _record(self, job: JobSpec, proc: subprocess.Popen[bytes], slot: int, locked: bool) -> bool:
        """Write the runner.pid of the runner `proc` just started. Written here, not by the runner,
        so a controller killed right after it still leaves enough for the next one to find and
        adopt the runner, on its GPU; and a resume on another host (the folder on a shared file
        system) to know it cannot. Its kernel view too: this machine can tell its runners are gone
        whatever its name. Where its disk refuses it, the runner is ended and the run lost to the
        disk (False), as a runner refused its own files ends itself: kept running unrecorded, the
        campaign's stop for that refusal would leave it to no later controller."""
        view = kernel_view()
        mark = f" {LOCKED if locked else LOCK_REFUSED}" if view else ""
        record = f"{proc.pid} {slot} {socket.gethostname()} {view or ''}".rstrip() + mark
        try:
            (job.exp_dir / PID_FILE).write_text(record)
        except OSError as err:
            self._end_at_once(_Running(job, proc.pid, runner_start(proc.pid), slot, 0.0, proc))
            if err.errno not in DISK_REFUSALS:
                with contextlib.suppress(OSError):
                    (job.exp_dir / PID_FILE).unlink()
                raise
            leave_refusal(job.exp_dir)  # (its partial runner.pid renamed: a resume reads the refusal)
            self._lost_to_the_disk(job, PID_FILE, err)
            return False
        return True

    def _refuse(self, job: JobSpec, reason: str) -> None:
        """`job` is lost before it started (re-queued, as a Slurm job sbatch refused), said once a
        batch; the runs started before it in that batch keep their handles."""
        if not self._refused:
            log.warning("%s", reason)
        self._refused.append(Finished(job.trial, {"trial": job.trial, "status": "lost", "reason": reason}))

    def _lost_to_the_disk(self, job: JobSpec, file: str, err: OSError) -> None:
        """`job` lost to the disk of its folder refusing the fleet's `file`, reported at the next
        poll as a runner's own files refused (`runner.refused_by_disk`): re-queued at no cost, the
        campaign stopped until there is room, which says it in one line."""
        said = f"the disk of its folder {job.exp_dir} refused the fleet's {file}: {err.strerror or err}"
        self._refused.append(Finished(job.trial, refused_by_disk(job.trial, job.exp_dir, said)))

    def reattach(self, job: JobSpec, handle: str) -> bool:
        """Adopt a runner a previous controller started, in the slot (GPU) it runs on. One that
        cannot be adopted is given up (abandoned.json): a runner yet to start then does not run it."""
        pid, slot, *_ = read_pid_file(job.exp_dir / PID_FILE)
        if handle.startswith("local:"):
            pid = int(handle.split(":", 1)[1])
        if pid is None:  # the controller died between starting the runner and writing runner.pid
            pid = find_runner(job.exp_dir)
            slot = None if pid is None else self._slot_of(pid)
        started = runner_start(pid) if pid is not None else ""  # (read first, then checked the runner's)
        # What the last controller's last poll saw below it (a runner ended unwatched has them init's).
        kept_started, lineage = kept_lineage(job.exp_dir, pid) if pid is not None else ("", {})
        if pid is None or not is_our_runner(pid, job.exp_dir):
            self._leftovers.end(job.exp_dir, lineage=lineage, since=kept_started)
            forget_lineage(job.exp_dir)
            gone = {"trial": job.trial, "status": "lost", "reason": "runner gone when its controller stopped"}
            write_json_atomic(job.exp_dir / ABANDONED_FILE, gone)
            return False
        # Its deadline counts from its start, as when it was submitted, not from this re-attach.
        start = started_at(job.exp_dir) or time.time()  # (none: it has only just begun)
        deadline = time.monotonic() + start + self._deadline_s - time.time()
        same = kept_started == started  # (else its pid another's since: none of its run's)
        self._running[job.trial] = _Running(
            job,
            pid,
            started,
            self._free_slot_index(slot),
            deadline,
            lineage=lineage if same else {},
            kept=lineage if same else None,
        )
        return True

    def _slot_of(self, pid: int) -> int | None:
        """The free slot whose GPU is the one the runner `pid` was given, or None (CPU slots)."""
        device = _environ(pid).get("CUDA_VISIBLE_DEVICES")
        if not self._devices or device is None:
            return None
        taken = {r.slot for r in self._running.values()}
        gpu_slots = (i for i in range(self._pool.slots) if self._devices[i % len(self._devices)] == device)
        return next((i for i in gpu_slots if i not in taken), None)

    def note_node(self, pool: str, outcome: dict[str, Any]) -> None:
        pass  # one machine: no node to keep out

    def poll(self) -> list[Finished]:
        done, self._refused = self._refused, []
        self._leftovers.retry()
        seen = lineages({run.pid: run.started for run in self._running.values()}) if self._running else {}
        for trial, run in list(self._running.items()):
            alive = _alive_unreaped(run.proc) if run.proc else is_our_runner(run.pid, run.job.exp_dir)
            # (one ended since /proc was read was seen with all below it, or already without them)
            now = with_unread(run.lineage, seen[run.pid]) if alive else {**run.lineage, **seen[run.pid]}
            if alive and now != run.kept:  # (for a controller that finds it ended unwatched)
                written = keep_lineage(run.job.exp_dir, run.pid, run.started, now)
                run.kept = now if written else None
            run.lineage = now
            if alive and time.monotonic() > run.deadline:
                # SIGTERM lets the runner end train.py's own process group and write its outcome;
                # SIGKILL follows if it does not manage within the grace period.
                _signal_group(run.pid, signal.SIGKILL if run.killed else signal.SIGTERM)
                run.killed = True
                run.deadline = time.monotonic() + KILL_GRACE_S
                continue
            if alive:
                continue
            self._end(run)
            del self._running[trial]
            done.append(Finished(trial, _read_outcome(run)))
        return done

    def _end(self, run: _Running) -> None:
        """Sweep what the ended `run` left running, then reap its runner (only then: its zombie
        keeps its session's number for `_end_leftovers`)."""
        self._end_leftovers(run)
        if run.proc is not None:
            run.proc.wait()

    def _end_at_once(self, run: _Running) -> None:
        """KILL the runner this controller just started for `run`, then end it as a poll would."""
        _signal_group(run.pid, signal.SIGKILL)
        if run.proc is not None:
            _still_running([run.proc], KILL_GRACE_S)  # (ended, not reaped: `_end` sweeps its session)
        self._end(run)

    def _end_leftovers(self, run: _Running) -> None:
        """KILL what `run` left running: each process whose environment names its run; each seen
        below its runner at the last poll (whatever its session and environment), with what it
        started since; and, of a runner this controller started, each process of its session
        (train.py's, which a process with an environment of its own stays in). Its number is not a
        later session's: the runner, not reaped yet, holds it (a re-attached runner, reaped by
        another, is not swept so)."""
        session = run.pid if run.proc is not None else None
        self._leftovers.end(run.job.exp_dir, session=session, lineage=run.lineage, since=run.started)
        forget_lineage(run.job.exp_dir)

    def wait(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def shutdown(self, cancel: bool) -> None:
        """Stop watching the runs (ending them first where `cancel`). Live runners are left to the
        next controller, which re-attaches them; one this controller started that has ended is
        ended as a poll would (`_end`): after this controller, its session's number is no longer
        held, and what a process there with an environment of its own left running stays unfound."""
        if cancel:
            self._cancel()
        for run in self._running.values():
            if run.proc is not None and not _alive_unreaped(run.proc):
                self._end(run)
        self._running.clear()

    def _cancel(self) -> None:
        """TERM every runner, then KILL each this controller started that has not ended within
        CANCEL_GRACE_S, waiting KILL_GRACE_S at most for its end (a runner stuck in the kernel
        may not end), not reaping any: `shutdown` sweeps their sessions first."""
        for run in self._running.values():
            _signal_group(run.pid, signal.SIGTERM)
        started_here = [run.proc for run in self._running.values() if run.proc is not None]
        for proc in _still_running(started_here, CANCEL_GRACE_S):
            _signal_group(proc.pid, signal.SIGKILL)
        _still_running(started_here, KILL_GRACE_S)


def _take_runner_lock(exp_dir: Path) -> int | None:
    """LOCK_FILE of `exp_dir` opened and locked, for the runner to hold from its start (`runner.hold_lock`):
    taken here, before it starts, it is held before its runner.pid is written. None where it could
    not be (a full disk refused the file): the runner.pid then says the runner holds none."""
    try:
        fd = _above_the_standard_streams(
            os.open(exp_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        )
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _above_the_standard_streams(fd: int) -> int:
    """`fd`, or a copy of it numbered 3 or more: a controller started with its stdin and stdout
    closed (a daemon's `<&- >&-`) gets 0 to 2 from its own opens, and the runner's stdout, made
    runner.log there, would take the place of its lock, which it would then run without."""
    if fd > 2:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _still_running(procs: list[subprocess.Popen[bytes]], seconds: float) -> list[subprocess.Popen[bytes]]:
    """Those of the runners `procs` that have not ended within `seconds` (none reaped)."""
    until = time.monotonic() + seconds
    while (alive := [proc for proc in procs if _alive_unreaped(proc)]) and time.monotonic() < until:
        time.sleep(GROUP_POLL_S)
    return alive


def _alive_unreaped(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the runner `proc` runs, told without reaping it where it has ended: its zombie keeps
    its pid, so its session's number, from any process started meanwhile."""
    if proc.returncode is not None:
        return False
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:  # (reaped already)
        return False


def _read_outcome(run: _Running) -> dict:
    """The runner's outcome, or the fleet's account of why there is none: a runner whose files
    the disk refused says so by its runner.refused (`ended_outcome`), and its exit status (only
    one this controller started is seen to end; one that ended before its runner.pid was written
    has none to rename)."""
    if (outcome := ended_outcome(run.job.exp_dir, run.job.trial)) is not None:
        return outcome
    if run.proc is not None and run.proc.returncode == DISK_REFUSED_EXIT:
        return runner_files_refused(run.job.exp_dir, run.job.trial)
    why = "killed at the controller's deadline" if run.killed else "runner ended without an outcome"
    return {"trial": run.job.trial, "status": "lost", "reason": why}


def _environ(pid: int) -> dict[str, str]:
    """The environment process `pid` started with; {} where it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
