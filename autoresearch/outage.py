"""Riding out a database that fails for a moment under the controller.

A PostgreSQL restart or a network blip of seconds would otherwise stop a campaign of days: the
controller's storage (`rdb_cache.WriteThroughCache`) runs each database operation through
`Patience`, which tries it again with back-off until `storage_retry_seconds` have passed since the
failure, then lets the failure through (`study.held_storage` stops the controller in one line, as
before). The limit is a deadline on the clock, not a sum of the pauses: a try can itself take long
(SQLite's 5 s busy timeout on a locked file, a connect to a host that drops packets).

A write may have been applied before its connection dropped (a commit whose answer was lost), so
one is only tried again when that is harmless: writes that set a value set it again, and a write
that could not be repeated (a new trial, a state change) is first looked for in the database
(`applied`): the controller is its study's only writer, so what it finds there is its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy
from optuna.exceptions import StorageInternalError
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError

log = logging.getLogger("autoresearch")

T = TypeVar("T")

# SQLAlchemy's words for a database that failed, as against one that refused a statement
DATABASE_FAILURES = (OperationalError, InterfaceError, DisconnectionError, sqlalchemy.exc.TimeoutError)
FIRST_WAIT, LONGEST_WAIT = 1.0, 30.0  # seconds between tries: doubled each time, up to the longest
_pause = time.sleep  # (a test's hook brings the database back here)
_clock = time.monotonic  # (and a test's hook moves time on with its pauses and tries)


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


class Patience:
    """Runs database operations, trying a failed one again until `seconds` have passed since it
    failed (0: never); a try under way at that moment still finishes (a driver's own timeouts
    bound it)."""

    def __init__(self, url: str, seconds: float) -> None:
        self.url = url
        self.seconds = seconds

    def run(self, operation: Callable[[], T], applied: Callable[[], T | None] | None = None) -> T:
        """`operation`'s result; after a failure, `applied()`'s where it finds the operation done
        (None: not done, so it is run again). Without `applied`, `operation` must be safe to repeat."""
        try:
            return operation()
        except (StorageInternalError, SQLAlchemyError) as err:
            if self.seconds <= 0 or not database_failed(err):
                raise
            log.warning(
                "lost the study's database at storage=%s (%s): trying again for up to %g s",
                self.url,
                first_line(err),
                self.seconds,
            )
        lost_at = _clock()
        deadline, wait = lost_at + self.seconds, FIRST_WAIT
        while True:
            _pause(max(0.0, min(wait, deadline - _clock())))
            try:
                done = applied() if applied is not None else None
                result = done if done is not None else operation()
            except (StorageInternalError, SQLAlchemyError) as err:
                if _clock() >= deadline or not database_failed(err):
                    raise
                wait = min(2 * wait, LONGEST_WAIT)
                continue
            log.warning(
                "the study's database at storage=%s is back after %.0f s", self.url, _clock() - lost_at
            )
            return result
