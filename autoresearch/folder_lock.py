"""The campaign folder's lock: one controller runs a campaign at a time.

The controller holds `controller.lock` exclusive (flock) for as long as it runs, its pid inside.
A dry run (`autoresearch check`) asks whether a controller holds it by taking it shared for an
instant. A start that finds the lock taken tells the two apart: a controller's exclusive lock
refuses it, a dry run's shared one is waited out, so a check never turns a start away.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

LOCK_FILE = "controller.lock"  # held by the controller that runs the campaign (its pid inside)
PROBE_WAIT_SECONDS = 0.01  # a dry run holds the lock shared only while it asks


class FolderLocked(RuntimeError):
    """Another controller holds the campaign folder: `locked_message`'s line."""


class LockUnusable(RuntimeError):
    """The lock file cannot be opened (a folder in its place): `unusable_message`'s line."""


def unusable_message(campaign_dir: Path, why: str) -> str:
    """Why the folder's lock cannot be taken, though no controller holds it, and what to do."""
    return (
        f"cannot open the campaign's lock file {campaign_dir / LOCK_FILE} ({why}): no controller can "
        "hold it, and a start makes it anew: remove it, then run the command again"
    )


def locked_message(campaign_dir: Path, holder: str) -> str:
    """Why a start is refused while another controller holds `campaign_dir` (`holder`: the pid its
    lock file names, '' where it has not written one yet), and what to do."""
    # (the pid is of the host that runs it: a shared file system's lock may be another's)
    stop = f"Ctrl-C, or kill {holder} on its host" if holder else "Ctrl-C where it runs"
    return (
        f"another controller (pid {holder or 'unknown'}) is running {campaign_dir}: follow it with "
        f"`python -m autoresearch.status {campaign_dir}`, or stop it ({stop}) and "
        "run this command again to take over"
    )


def _holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip()


def take_lock(campaign_dir: Path, wait: Callable[[float], None] = time.sleep) -> int:
    """The folder's lock, held exclusive with this process's pid in it (its file descriptor, to
    keep open while the campaign runs); FolderLocked where a controller holds it. A shared holder
    is a dry run asking for an instant: it is waited out (`wait`), never taken for a controller."""
    try:
        fd = os.open(campaign_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except IsADirectoryError as err:  # (made by hand, or by a bad copy)
        raise LockUnusable(unusable_message(campaign_dir, err.strerror)) from None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            pass
        try:  # refused shared too: it is held exclusive, by a controller
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderLocked(locked_message(campaign_dir, holder)) from None
        fcntl.flock(fd, fcntl.LOCK_UN)
        wait(PROBE_WAIT_SECONDS)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def lock_refusal(campaign_dir: Path) -> str | None:
    """`locked_message` where a controller holds the folder's lock now, else None; makes no lock
    file. The lock is asked for shared, for an instant, which a start waits out (`take_lock`)."""
    if (campaign_dir / LOCK_FILE).is_dir():  # as the start would say (`take_lock`)
        return unusable_message(campaign_dir, os.strerror(errno.EISDIR))
    try:
        fd = os.open(campaign_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file: no controller has run here (or the start cannot write here)
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return locked_message(campaign_dir, _holder(fd))
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
