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
of an ended one does not have. A pid is signalled only through a pidfd opened before its
environment was read, so one that ended and was reused meanwhile is never signalled. (A per-run
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
import logging
import os
import signal
import threading
import time
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


def kill_marked(exp_dir: Path) -> int:
    """KILL each process whose environment names `exp_dir`'s result file, again until none is
    left or TERM_GRACE_S has passed (one may fork as it is killed); how many were killed."""
    marker = f"{RESULT_VARIABLE}={result_file(exp_dir)}".encode()
    killed = 0
    until = time.monotonic() + TERM_GRACE_S
    while time.monotonic() < until:
        found = [fd for pid in _own_live_processes() if (fd := _pidfd_if_marked(pid, marker)) is not None]
        if not found:
            break
        for fd in found:
            with contextlib.suppress(ProcessLookupError):  # (ended since)
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                killed += 1
            os.close(fd)
        time.sleep(GROUP_POLL_S)
    return killed


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


def _pidfd_if_marked(pid: int, marker: bytes) -> int | None:
    """A pidfd of `pid` if its environment holds `marker`, else None. The pidfd is opened first:
    where the process still lives after, the environment read was its own."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # ended
        return None
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        environ = b""
    if marker in environ.split(b"\0"):
        return fd
    os.close(fd)
    return None
