"""The campaign folder's lock: a dry run's probe never turns a start away, a controller does."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from autoresearch.folder_lock import LOCK_FILE, FolderLocked, lock_refusal, take_lock


def held(folder: Path, how: int, pid: str = "") -> int:
    """The folder's lock file, locked `how` by another open file (as another process would)."""
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, how | fcntl.LOCK_NB)
    os.pwrite(fd, pid.encode(), 0)
    return fd


def test_a_start_during_a_dry_runs_probe_waits_it_out_and_takes_the_lock(tmp_path: Path) -> None:
    """`autoresearch check` holds the lock shared while it asks; a start at that instant was
    refused as if a controller ran the campaign (naming the pid of the last one)."""
    probe = held(tmp_path, fcntl.LOCK_SH, "4242")
    waits: list[float] = []

    def probe_ends(seconds: float) -> None:  # the dry run lets go while the start waits
        waits.append(seconds)
        os.close(probe)

    fd = take_lock(tmp_path, wait=probe_ends)
    try:
        assert len(waits) == 1
        assert (tmp_path / LOCK_FILE).read_text() == str(os.getpid())
        assert lock_refusal(tmp_path) is not None  # held exclusive now: the next start is refused
    finally:
        os.close(fd)


def test_a_start_while_a_controller_holds_the_lock_is_refused_at_once(tmp_path: Path) -> None:
    controller = held(tmp_path, fcntl.LOCK_EX, "4242")
    try:
        with pytest.raises(FolderLocked, match=rf"^another controller \(pid 4242\) is running {tmp_path}: "):
            take_lock(tmp_path, wait=lambda _: pytest.fail("waited on a controller's lock"))
        assert (lock_refusal(tmp_path) or "").startswith("another controller (pid 4242) is running")
    finally:
        os.close(controller)
    assert lock_refusal(tmp_path) is None
