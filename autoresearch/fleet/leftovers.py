"""What a local run left running once its runner is gone, found and killed before its slot is
given again.

The runner ends what train.py started when train.py ends (`runner._kill_group`: its process group,
then what left it, as the child subreaper of train.py's orphans). A runner killed outright (kill -9,
the kernel's OOM killer, the fleet's KILL at the deadline of a runner that ignored TERM) does none
of it: the kernel kills train.py with it (PDEATHSIG), but what train.py started (a data-loader
worker, a server, anything an agent's train.py spawns) lives on, reparented to init, and on a GPU
shares it with the next run of the slot. Only something that outlives the runner can end these,
so the local fleet does, as it finds a runner ended and when a controller started again finds one
gone: `end_leftovers`.

A run's process is known by its environment, not its process group or session, which it may
leave (setsid, a daemon): each inherits train.py's AUTORESEARCH_RESULT, the run's own result file,
which /proc/PID/environ shows as the process was started, and which a process that reuses the pid
of an ended one does not have. A process is held before its environment is read, and signalled
only if it is still the one held, never one given its pid since (`_Held`). (A per-run
cgroup needs a delegation most machines do not give; a watchdog process outliving the runner can
itself be killed outright.) Reading a process's environment waits on its memory map's lock, which
a process stuck on a hung mount can hold for good: only this user's processes not in
uninterruptible sleep are read, in a thread of their own that the controller waits for a bounded
time (the runner, ending each run, reads none: `runner._kill_escapees`).

Not found: a process started with an environment of its own (env={}), which only the runner,
its subreaper, finds. On Slurm, nothing here: a job's processes are Slurm's to end, all of them, with the
job (its cgroup), a runner killed outright ending its job.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from autoresearch.runner import GROUP_POLL_S, RESULT_VARIABLE, TERM_GRACE_S, result_file

log = logging.getLogger("autoresearch")

SWEEP_LIMIT_S = TERM_GRACE_S + 10.0  # how long the controller waits for a sweep (a hung read)


def end_leftovers(exp_dir: Path) -> None:
    """KILL every process left running by the run of `exp_dir` (`kill_marked`), waiting at most
    SWEEP_LIMIT_S: one read of a process's environment that hangs is said, and not waited for."""
    sweep = threading.Thread(target=kill_marked, args=(exp_dir,), name="end-leftovers", daemon=True)
    sweep.start()
    sweep.join(SWEEP_LIMIT_S)
    if sweep.is_alive():
        log.warning(
            "%s: the look for processes its run left running hangs (a process stuck on a hung mount?): "
            "any such process may share its slot with the next run",
            exp_dir,
        )


def kill_marked(exp_dir: Path) -> None:
    """KILL each process whose environment names `exp_dir`'s result file, again until none is
    left or TERM_GRACE_S has passed (one may fork as it is killed)."""
    marker = f"{RESULT_VARIABLE}={result_file(exp_dir)}".encode()
    until = time.monotonic() + TERM_GRACE_S
    while time.monotonic() < until:
        found = [held for pid in _own_live_processes() if (held := _held_if_marked(pid, marker)) is not None]
        if not found:
            break
        for held in found:
            held.kill()
            held.release()
        time.sleep(GROUP_POLL_S)


def _own_live_processes() -> list[int]:
    """This user's processes other than this one that are neither zombies nor in uninterruptible
    sleep (whose environment may not be read without waiting for good), from /proc/PID/stat."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            own = proc.stat().st_uid == os.getuid()
        except (OSError, IndexError):  # ended meanwhile
            continue
        if own and state not in ("Z", "D", "X") and int(proc.name) != os.getpid():
            found.append(int(proc.name))
    return found


def _held_if_marked(pid: int, marker: bytes) -> _Held | None:
    """`pid` held (`_Held`) if its environment holds `marker`, else None. It is held first: where
    it is still the process held after, the environment read was its own."""
    held = _hold(pid)
    if held is None:
        return None
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        environ = b""
    if marker in environ.split(b"\0"):
        return held
    held.release()
    return None


@dataclass
class _Held:
    """A process held so that a KILL sent later reaches it and never a process given its pid since.
    By a pidfd where the kernel has pidfd_open (Linux 5.3+). Else (RHEL 7's 3.10, RHEL 8's 4.18, a
    seccomp filter refusing it) by its start time, /proc/PID/stat's field 22, read before its
    environment and again just before kill(): a pid is given again only once the kernel's pids have
    wrapped round (pid_max), so a reused pid with the start time held would need a wrap within one
    clock tick, and one reused between that last read and kill() a wrap within microseconds; such
    a process would also have to be this user's, as kill() reaches no other's."""

    pid: int
    pidfd: int | None
    started: str | None

    def kill(self) -> None:
        """KILL it if it is still the process held (one ended, its pid perhaps another's now, is not)."""
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):  # (ended)
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            elif _start_time(self.pid) == self.started:
                os.kill(self.pid, signal.SIGKILL)

    def release(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)


def _hold(pid: int) -> _Held | None:
    """`pid` held by a pidfd, else by its start time; None where it has ended, or where neither
    can hold it (said once: it is then not signalled)."""
    try:
        return _Held(pid, os.pidfd_open(pid), None)
    except ProcessLookupError:
        return None
    # No pidfd_open: ENOSYS (Linux < 5.3), EPERM (a seccomp filter), a Python without it.
    except (OSError, AttributeError):
        pass
    try:
        return _Held(pid, None, _start_time(pid))
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as e:
        _say_unheld(e.strerror or type(e).__name__)
    except IndexError:
        _say_unheld("it has no field 22")
    return None


def _start_time(pid: int) -> str:
    """When `pid` started, in clock ticks since boot: /proc/PID/stat's field 22 (the 20th after
    the command name, which may hold spaces and parentheses)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


@functools.cache  # once, not once a process or a sweep
def _say_unheld(why: str) -> None:
    """Say that what runs leave running cannot be ended here: neither a pidfd nor a start time."""
    log.warning(
        "processes a run left running cannot be ended here: neither a pidfd (Linux 5.3+) nor /proc/PID/stat's "
        "start time (%s) can tell them from a later process given their pid; any may share its slot with the next run",
        why,
    )
