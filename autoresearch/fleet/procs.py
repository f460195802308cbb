"""This user's processes as /proc shows them, for the local fleet's sweep of what its runs left
running (`leftovers`) and its record of what runs below each runner (`lineage`): read from
/proc/PID/stat, which takes no lock of the process (a hung mount's cannot hold it up), down the
kernel's lists of each process's children where it keeps them, and held before they are read so
that a KILL sent later reaches the process read, never one given its pid since (`Held`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("autoresearch")

StartTimes = dict[int, str]  # processes by pid, with their start times (/proc/PID/stat's field 22)
_Process = tuple[int, str, str, int | None, int]  # pid, state, start time, session, parent


def own_live_processes() -> list[_Process]:
    """This user's processes other than this one that are not zombies, with their state, start
    time, session and parent, from /proc/PID/stat (which takes no lock of the process)."""
    found = []
    uid, this = os.getuid(), os.getpid()
    for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()):
        try:
            owner, fields = _owned_stat_fields(pid)
        except OSError:  # ended meanwhile
            continue
        if owner == uid and len(fields) > 19 and fields[0] not in ("Z", "X") and pid != this:
            found.append((pid, fields[0], fields[19], session(fields), int(fields[1])))
    return found


def _owned_stat_fields(pid: int) -> tuple[int, list[str]]:
    """`pid`'s owner and `_stat_fields`, from one open of /proc/PID/stat (read each poll: cheap)."""
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    try:
        owner, text = os.fstat(fd).st_uid, os.read(fd, 4096).decode(errors="replace")
    finally:
        os.close(fd)
    return owner, text.rsplit(")", 1)[1].split()


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and
    parentheses), the state first; it takes no lock of the process. OSError where it ended."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def session(fields: list[str]) -> int | None:
    """The session of a process from the fields of its /proc/PID/stat after the command name."""
    return int(fields[3]) if len(fields) > 3 and fields[3].isdigit() else None


def start_time(pid: int) -> str:
    """When `pid` started, in clock ticks since boot: /proc/PID/stat's field 22 (the 20th after
    the command name, which may hold spaces and parentheses)."""
    return _stat_fields(pid)[19]


def state_if_same(pid: int, started: str) -> str | None:
    """`pid`'s state where it is still the process that started at `started`, else None."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return None
    same = (fields[19] if len(fields) > 19 else "") == started
    return fields[0] if same and fields and fields[0] not in ("Z", "X") else None


def boot_id() -> str:
    """This boot of the kernel's id; "" where /proc does not say."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass
class Held:
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
            elif start_time(self.pid) == self.started:
                os.kill(self.pid, signal.SIGKILL)

    def release(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)


def hold(pid: int) -> Held | None:
    """`pid` held by a pidfd, else by its start time; None where it has ended, or where neither
    can hold it (said once: it is then not signalled)."""
    try:
        return Held(pid, os.pidfd_open(pid), None)
    except ProcessLookupError:
        return None
    # No pidfd_open: ENOSYS (Linux < 5.3), EPERM (a seccomp filter), a Python without it.
    except (OSError, AttributeError):
        pass
    try:
        return Held(pid, None, start_time(pid))
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as e:
        _say_unheld(e.strerror or type(e).__name__)
    except IndexError:
        _say_unheld("it has no field 22")
    return None


def held_if(pid: int, holds: Callable[[list[str]], bool]) -> Held | None:
    """`pid` held (`Held`) if what `holds` asks of its /proc/PID/stat fields holds, else None:
    held first, so that where it is still the process held after, the fields read were its own."""
    held = hold(pid)
    if held is None:
        return None
    with contextlib.suppress(OSError, IndexError):
        if holds(_stat_fields(pid)):
            return held
    held.release()
    return None


@functools.cache  # once, not once a process or a sweep
def _say_unheld(why: str) -> None:
    """Say that what runs leave running cannot be ended here: neither a pidfd nor a start time."""
    log.warning(
        "processes a run left running cannot be ended here: neither a pidfd (Linux 5.3+) nor /proc/PID/stat's "
        "start time (%s) can tell them from a later process given their pid; any may share its slot with the next run",
        why,
    )


@functools.cache  # (the kernel's build: once)
def children_listed() -> bool:
    """Whether this kernel lists each thread's children (/proc/PID/task/TID/children: built with
    CONFIG_PROC_CHILDREN, as for CRIU)."""
    return os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def below_by_children(runner: int, started: str) -> StartTimes:
    """The live processes of this user below `runner` (as `own_live_processes`: kill() reaches
    no other's), if it is still the process that started at `started`, with their start times,
    read down its children's lists (a child is on its parent's thread that forked it, so each
    thread's is read). One that ends as it is read is passed by."""
    found: StartTimes = {}
    uid = os.getuid()
    todo = [runner] if state_if_same(runner, started) is not None else []
    while todo:
        for child in _children(todo.pop()):
            with contextlib.suppress(OSError, IndexError):
                owner, fields = _owned_stat_fields(child)
                if owner == uid and child != runner and child not in found and fields[0] not in ("Z", "X"):
                    found[child] = fields[19]
                    todo.append(child)
    return found


def _children(pid: int) -> list[int]:
    """The children of each thread of `pid`; [] where it has ended."""
    children = []
    with contextlib.suppress(OSError):
        for thread in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                children += [int(c) for c in Path(f"/proc/{pid}/task/{thread}/children").read_text().split()]
    return children


def below(roots: StartTimes, processes: list[_Process]) -> StartTimes:
    """The processes below those of `roots` that are still the ones held there, with their start
    times, from one read of /proc (`processes`)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for pid, _state, started, _session, parent in processes:
        children.setdefault(parent, []).append((pid, started))
    alive = {pid: started for pid, _state, started, _session, _parent in processes}
    found: StartTimes = {}
    todo = [pid for pid, started in roots.items() if alive.get(pid) == started]
    while todo:
        for child, started in children.get(todo.pop(), []):
            if child not in found and child not in roots:
                found[child] = started
                todo.append(child)
    return found
