"""Riding out a database that fails for a moment under the controller.

A PostgreSQL restart or a network blip of seconds would otherwise stop a campaign of days: the
controller's storage (`rdb_cache.WriteThroughCache`) runs each database operation through
`Patience`, which tries it again with back-off until `storage_retry_seconds` have passed since the
failed try began, and once at least, then lets the failure through (`study.held_storage` stops
the controller in one line, as before). The limit is a deadline on the clock, not a sum of the
pauses: a try can itself take long (a SQLite file's lock waited for, a second at most:
`study.SQLITE_LOCK_WAIT_S`; a connect to a host that drops packets).

A write may have been applied before its connection dropped (a commit whose answer was lost), so
one is only tried again when that is harmless: writes that set a value set it again, and a write
that could not be repeated (a new trial, a state change) is first looked for in the database
(`applied`): the controller is its study's only writer, so what it finds there is its own.

A stop asked for while the database fails (Ctrl-C, or the TERM of Slurm's preemption, which
SIGKILLs a controller that has not left within its KillWait) ends the wait within
`STOP_CHECK_SECONDS` (`StoppedInOutage`): what the database lacks then is what the next
controller collects again from the experiments' folders, as after any stop. A try under way still
finishes, so a stop never cuts a write short.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy
from optuna.exceptions import StorageInternalError
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError

from autoresearch.storage_url import masked

WAITS_LOGGER = (
    "autoresearch.database"  # its waits: a reader says them on stderr as they come (`logs.waits_said`)
)
log = logging.getLogger(WAITS_LOGGER)

T = TypeVar("T")

# SQLAlchemy's words for a database that failed, as against one that refused a statement
DATABASE_FAILURES = (OperationalError, InterfaceError, DisconnectionError, sqlalchemy.exc.TimeoutError)
FIRST_WAIT, LONGEST_WAIT = 1.0, 30.0  # seconds between tries: doubled each time, up to the longest
STOP_CHECK_SECONDS = 0.25  # how often a wait for the database looks for a stop request
_clock = time.monotonic  # (a test's hook moves time on with its pauses and tries)


def never_stopping() -> bool:
    return False


def _sleep_unless_stopped(seconds: float, stopping: Callable[[], bool]) -> None:
    """Sleep `seconds`, or less once `stopping()`: a signal handler that asks for a stop lets a
    sleep go on to its end (PEP 475), so the request is looked for every `STOP_CHECK_SECONDS`."""
    end = time.monotonic() + seconds
    while not stopping() and (left := end - time.monotonic()) > 0:
        time.sleep(min(left, STOP_CHECK_SECONDS))


_pause = _sleep_unless_stopped  # (a test's hook brings the database back here)


def missing_tables(err: BaseException | None) -> bool:
    """Whether `err` is the database without the study's tables: a SQLite file that is not an
    Optuna study, or was replaced by one that is not. Waiting does not mend it."""
    root = root_cause(err) if err is not None else None
    return str(root).startswith("no such table") or getattr(root, "sqlstate", None) == "42P01"


def database_failed(err: BaseException | None) -> bool:
    """Whether `err` is the database failing (a connection refused or dropped, the file locked),
    which running again once it is back mends; not a statement it refused (a constraint, a value
    too long: a bug of ours), which would fail the same way again and needs its traceback."""
    if missing_tables(err):
        return False
    while err is not None:
        if isinstance(err, DATABASE_FAILURES) or (isinstance(err, DBAPIError) and err.connection_invalidated):
            return True
        err = err.__cause__
    return False


def root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def first_line(err: BaseException) -> str:
    """The first line of the error at the root of `err`: the driver's own words (Optuna's and
    SQLAlchemy's wrappers say only that a commit or a connection failed)."""
    root = root_cause(err)
    return (str(root).splitlines() or [type(root).__name__])[0].strip()


class StoppedInOutage(Exception):
    """A stop asked for while the controller waited for its database: it stops as at any stop,
    only without the writes the database did not take, which a resume makes again."""

    def __init__(self, url: str, err: BaseException) -> None:
        self.url, self.reason = url, first_line(err)
        super().__init__(
            f"stopped while the study's database at storage={url} could not be reached ({self.reason}): "
            "nothing is lost, running experiments go on and keep their results in their folders: "
            "run the same command again once the database is back"
        )


def _lost(url: str, err: BaseException) -> str:
    """What befell the study's database, in words: a SQLite file another process holds locked (a
    `sqlite3` shell, a long read) is there and whole, which "lost" would not say."""
    if first_line(err) == "database is locked":
        return f"the study's database at storage={url} is locked by another process"
    return f"lost the study's database at storage={url}"


class Patience:
    """Runs database operations, trying a failed one again until `seconds` have passed since its
    first try began, and once at least (0: never), or `stopping()` says a stop was asked for; a
    try under way at that moment still finishes (a driver's own timeouts bound it)."""

    def __init__(self, url: str, seconds: float, stopping: Callable[[], bool] = never_stopping) -> None:
        self.url = masked(url)  # said in the log, which a password must not reach
        self.seconds = seconds
        self.stopping = stopping

    def _retrying(self, took: float) -> str:
        """What is left of `seconds` after a failed first try that `took` so long, in words: the
        deadline counts from its start, so a user told 'up to 60 s' after a first try of 57 s
        would wait for a minute that is not coming; where none is left, one more try is made. A
        first try of a tenth of the time or less (SQLite's one second waiting for a lock) is not
        worth the words: "up to" holds."""
        left = self.seconds - took
        if took < max(2.0, self.seconds / 10):
            return f"trying again for up to {self.seconds:g} s"
        spent = f"the first try took {took:.0f} s of the {self.seconds:g} s allowed"
        if left < 1:
            return f"trying once more ({spent})"
        return f"trying again for up to {left:.0f} s more ({spent})"

    def run(self, operation: Callable[[], T], applied: Callable[[], T | None] | None = None) -> T:
        """`operation`'s result; after a failure, `applied()`'s where it finds the operation done
        (None: not done, so it is run again). Without `applied`, `operation` must be safe to repeat.
        The deadline counts from the first try's start: the try that failed (SQLite's wait for a
        lock, a connect to a host that drops packets) ran on top of `seconds` where it counted
        from its end."""
        began = _clock()
        try:
            return operation()
        except (StorageInternalError, SQLAlchemyError) as err:
            if self.seconds <= 0 or not database_failed(err):
                raise
            failure: BaseException = err
            log.warning(
                "%s (%s): %s", _lost(self.url, err), first_line(err), self._retrying(_clock() - began)
            )
        lost_at = _clock()
        deadline, wait = began + self.seconds, FIRST_WAIT
        while True:
            _pause(max(0.0, min(wait, deadline - _clock())), self.stopping)
            if self.stopping():
                raise StoppedInOutage(self.url, failure)
            try:
                done = applied() if applied is not None else None
                result = done if done is not None else operation()
            except (StorageInternalError, SQLAlchemyError) as err:
                if _clock() >= deadline or not database_failed(err):
                    raise
                failure = err
                wait = min(2 * wait, LONGEST_WAIT)
                continue
            log.warning(
                "the study's database at storage=%s is back after %.0f s", self.url, _clock() - lost_at
            )
            return result
