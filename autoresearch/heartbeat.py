"""Whether a campaign's controller is alive, for `status` run from anywhere (a login node too).

The controller holds `controller.lock` (`folder_lock`), but the lock cannot say why a controller
stopped, or when one on another host was last seen. So the controller's process rewrites `controller.json`
every `BEAT_SECONDS` (its pid, host, kernel view and the time), from a thread of its own so that a
long step of the loop (a data download, a slow sbatch) does not look like death, and says why it
stopped when it does. A reader whose /proc shows the controller's process asks the kernel whether
the pid lives; elsewhere it goes by the age of the last beat. Which /proc shows it is judged by the
kernel view, as a runner's (`fleet.runner_pid.seen_from_here`): a host's name is shared by containers
('localhost', or the host's own with its network) and by machines, whose pids /proc here cannot see.

The record also carries the seconds earlier controllers ran (`ran_before`) and when this one began
to count (`counting_since`): the wall budget counts only time a controller ran, and a controller
killed outright has its time counted to its last beat, which no stop of its own wrote.

A beat the disk refuses (full, read-only, controller.json made a folder) is said once in the log,
and once again when a beat is written anew; the campaign goes on. Stopping it would trade a blind
`status` for a stopped campaign: the lock, not this file, keeps a second controller out (a user
told by `status` elsewhere that it is gone, who runs the command again, is refused, and told
another controller holds the campaign), and a full disk stops the campaign at its next write of
its own anyway. Time the disk kept out of the record is said at the stop: the wall budget counts
this controller only to its last beat written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from autoresearch.files import (
    alive_here,
    finite_number,
    process_start,
    read_json,
    write_atomic,
    write_failure,
    write_json_atomic,
)
from autoresearch.fleet.runner_pid import RunnerRecord, kernel_view, seen_from_here

log = logging.getLogger("autoresearch")

CONTROLLER_FILE = "controller.json"
BEAT_SECONDS = 15.0
# A beat older than this means the controller is gone: several beats missed, with room for a shared
# file system's attribute cache on the reading host.
STALE_SECONDS = 120.0


class Heartbeat:
    """Rewrites controller.json while the controller runs (`start`), then says how it ended (`stop`)."""

    def __init__(self, campaign_dir: Path, every: float = BEAT_SECONDS) -> None:
        self.path = campaign_dir / CONTROLLER_FILE
        self.every = every
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.record: dict[str, object] = {"pid": os.getpid(), "host": socket.gethostname()}
        if (began := process_start(os.getpid())) is not None:
            self.record[PID_STARTED] = began
        if (view := kernel_view()) is not None:
            self.record[KERNEL_VIEW] = view
        self._before: bytes | None = None  # the record of the controller before (`withdraw`)
        self._refused = False  # the last beat was refused (said once, and again once written)
        self._counted_to: float | None = None  # the last beat written since `count_from`

    def start(self) -> None:
        try:
            self._before = self.path.read_bytes()
        except OSError:
            self._before = None
        self.record["started_at"] = time.time()
        before = self.before()
        if (earlier := ran_seconds(before)) is not None:  # (until `count_from`: a crash keeps it)
            self.record[RAN_BEFORE] = earlier
        else:  # (likewise; none known: the study's stamps say, not this controller's beats)
            self.record[OLDER_VERSION_STOP] = older_version_stop(before)
        self._write("running")
        self._thread = threading.Thread(target=self._beat, name="controller-heartbeat", daemon=True)
        self._thread.start()

    def before(self) -> dict[str, Any] | None:
        """The record of the controller before (None: none, or one that cannot be read)."""
        if self._before is None:
            return None
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            record = json.loads(self._before)
            return record if isinstance(record, dict) else None
        return None

    def count_from(self, ran_before: float) -> None:
        """Count this controller's running time from now on the wall budget, after `ran_before`
        seconds that earlier controllers ran; each beat then carries the sum up to it, so a
        controller killed outright has its time counted to its last beat."""
        self.record.pop(OLDER_VERSION_STOP, None)
        self.record[RAN_BEFORE] = ran_before
        self.record[COUNTING_SINCE] = time.time()
        self.beat()

    def stop(self, why: str) -> None:
        """The last word: `why` the controller stopped (a budget, the user, an error)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._write("stopped", why=why)
            if self._refused and COUNTING_SINCE in self.record:
                self._say_time_unrecorded()

    def _say_time_unrecorded(self) -> None:
        """Say the running time the wall budget will not count, whose record the disk refused (the
        stop's, and the beats before it): the next resume counts this controller only to its last
        beat written, none of it where none was, and a campaign that then runs on longer than
        max_wall_hours seems to allow is not left unexplained."""
        recorded = self._counted_to
        unrecorded_since = float(self.record[COUNTING_SINCE]) if recorded is None else recorded
        log.warning(
            "wall budget: %s of this controller's running time is not in %s, which the disk refused; "
            "max_wall_hours counts %s",
            _span(float(self.record["seen_at"]) - unrecorded_since),
            self.path,
            "none of it" if recorded is None else f"its time up to {_clock(recorded)}",
        )

    def withdraw(self) -> None:
        """Stop, and put back the record of the controller before (none where there was none): a
        start refused as it opened the campaign ran nothing, so `status` goes on saying how the
        campaign last stopped, not that a refused command did."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            with contextlib.suppress(OSError):
                if self._before is None:
                    self.path.unlink()
                else:
                    write_atomic(self.path, self._before)

    def _beat(self) -> None:
        while not self._stopped.wait(self.every):
            self.beat()

    def beat(self) -> None:
        """Say the controller runs, now."""
        self._write("running")

    def _write(self, state: str, **extra: str) -> None:
        self.record["seen_at"] = time.time()
        try:
            write_json_atomic(self.path, {**self.record, "state": state, **extra})
        except OSError as err:
            if not self._refused:
                log.warning(
                    "cannot write %s: %s; the campaign goes on, but `autoresearch status` from another "
                    "host will say this controller is not seen after %.0f s",
                    self.path,
                    write_failure(err, self.path),
                    STALE_SECONDS,
                )
            self._refused = True
            return
        if COUNTING_SINCE in self.record:
            self._counted_to = float(self.record["seen_at"])
        if self._refused:
            log.info("%s written again: `autoresearch status` sees this controller again", self.path)
        self._refused = False


def stopped_line(at: float, why: str) -> str:
    """How a stopped controller is said, by `status` and the report alike."""
    return f"stopped {_clock(at)}: {why or 'no reason given'}"


def _clock(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


RAN_BEFORE = "ran_before"  # seconds earlier controllers ran, as the wall budget counts them
COUNTING_SINCE = "counting_since"  # when this controller's time began to count (its data prepared)
# The last stop of a controller of an older version, whose record keeps no sum (`ran_before`),
# carried by each start that fails before it counts: else the next start took that failed one's
# stop for the older version's, and counted the time stopped between them.
OLDER_VERSION_STOP = "older_version_stop"
PID_STARTED = "pid_started"  # when the controller's process began (`process_start`): its pid reused is not it
KERNEL_VIEW = "kernel"  # the kernel view the controller runs under (`kernel_view`): whose /proc shows its pid


def older_version_stop(record: dict[str, Any] | None) -> float | None:
    """When the last controller of an older version was last seen, by `record` (the
    controller.json a start found; None where it does not say, or keeps a sum). A start of this
    version that has not counted yet carries the stop it found, None included: its own beats are
    no older version's stop (its data step would count, and the time stopped before it)."""
    if record is None or RAN_BEFORE in record:
        return None
    stop = record.get(OLDER_VERSION_STOP, record.get("seen_at"))
    return float(stop) if finite_number(stop) else None


def ran_seconds(record: dict[str, Any] | None, now: float | None = None) -> float | None:
    """Seconds the campaign's controllers ran, as the wall budget counts them, by `record` (a
    controller.json): the earlier ones' and this one's to its last beat, or to `now` while it
    runs. None where the record does not say (none, or an older version's)."""
    with contextlib.suppress(TypeError, ValueError):
        if record is None or not finite_number(record.get(RAN_BEFORE)):
            return None
        since = record.get(COUNTING_SINCE)
        if not finite_number(since):
            return float(record[RAN_BEFORE])
        end = float(record.get("seen_at", since))
        if now is not None and record.get("state") == "running" and now - end <= STALE_SECONDS:
            end = end if gone_here(record) else now  # (dead: to its last beat, not to now)
        return float(record[RAN_BEFORE]) + max(0.0, end - float(since))
    return None


def gone_here(record: dict[str, Any]) -> bool:
    """Whether `record`'s controller, a process /proc here shows (`seen_here`), is known ended: the
    kernel says its pid is free, or another process took the pid (not begun when the controller
    did). Its last beat is then its end, where a beat not yet stale (`STALE_SECONDS`) alone read as
    alive."""
    pid = int(record.get("pid") or 0)
    if pid <= 0 or not seen_here(record):
        return False
    if not alive_here(pid):
        return True
    began = record.get(PID_STARTED)
    return began is not None and process_start(pid) not in (None, str(began))


def seen_here(record: dict[str, Any]) -> bool:
    """Whether /proc here shows `record`'s controller: by its kernel view, as a runner's
    (`seen_from_here`), whatever the names say: a controller of another container or machine of
    this host's name, its pid free here or another process's, was said gone while it ran. A record
    written before views were recorded goes by the host's name, as then."""
    host, view = record.get("host"), record.get(KERNEL_VIEW)
    if not isinstance(view, str):
        return host == socket.gethostname()
    return seen_from_here(RunnerRecord(None, host if isinstance(host, str) else None, view))


UNREADABLE = "unreadable"  # how the line on a controller.json that cannot be read begins


def controller_state(campaign_dir: Path, now: float | None = None) -> str | None:
    """One line on the campaign's controller: running, stopped and why, or gone without a word
    (killed, or its node lost); None where no controller has written one (a campaign begun before).
    A file that cannot be read (a folder, private, damaged by hand or by a disk) is said to be so:
    read as missing, the line vanished and a live controller's campaign looked like an old one."""
    path = campaign_dir / CONTROLLER_FILE
    if not path.exists():
        return None
    if path.is_dir():
        return f"{UNREADABLE}: {path} is a folder: remove it, and a running controller writes it anew"
    try:
        path.read_bytes()
    except OSError as err:
        return f"{UNREADABLE}: cannot read {path} ({err.strerror})"
    with contextlib.suppress(TypeError, ValueError, OverflowError, OSError):  # a pid or time that is none
        if record := read_json(path):  # (None: torn, not JSON, not an object)
            return _state_of(record, time.time() if now is None else now)
    return (
        f"{UNREADABLE}: {path} is damaged (not the record a controller writes); "
        f"a running controller writes it anew within {BEAT_SECONDS:.0f} s"
    )


def known_not_running(controller: str | None) -> bool:
    """Whether `controller` (`controller_state`) says no controller runs: stopped or gone; not
    where there is no line, or one that could not be read."""
    return controller is not None and not controller.startswith(("running", UNREADABLE))


def unlaunched_note(controller: str | None) -> str:
    """What to add to a count of queued runs while `controller` (`controller_state`) is known not
    to be running: a stopped campaign leaves the rest of its wave queued in the study, and the count
    alone reads as runs about to start."""
    return " (no controller launches them now)" if known_not_running(controller) else ""


def _state_of(record: dict[str, Any], now: float) -> str:
    where = f"pid {record.get('pid')} on {record.get('host')}"
    seen = float(record.get("seen_at", 0.0))
    if record.get("state") == "stopped":
        return stopped_line(seen, record.get("why", ""))
    if gone_here(record):
        return f"gone: {where} ended without a word (killed?); run the campaign command again to resume"
    if now - seen > STALE_SECONDS:
        return (
            f"not seen for {_span(now - seen)} ({where}): killed, or its node lost; "
            "run the campaign command again to resume"
        )
    return f"running: {where}, seen {_span(now - seen)} ago"
