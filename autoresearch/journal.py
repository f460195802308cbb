"""The journal file that holds a campaign's study: written in batches, read only when it changed,
repaired after a kill.

Optuna's journal storage appends one line per change, each under a lock file and with an fsync.
A launch and a result each set about ten user attrs of a trial; on a cluster's shared file system
every append costs milliseconds (a lock file made and removed, a write, an fsync), so the
storage here writes one trial's attrs as one append. The lines are Optuna's own: plain Optuna,
optuna-dashboard and older controllers read the file unchanged.

Optuna also re-reads the file before every read of the study (an open and a stat: on NFS a round
trip to the server each), in case another process wrote to it: hundreds of times per experiment
in the controller's loop. The controller is the journal's only writer (under its lock), so its
storage reads the file only after it appended to it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.storages.journal._file import LOCK_FILE_SUFFIX
from optuna.storages.journal._storage import JournalOperation

from autoresearch.files import after_last_newline, name_the_file

JOURNAL_FILE = "study.journal"

log = logging.getLogger("autoresearch")


# What Optuna's replay raises on a line that is not one of its changes.
_DAMAGE = (ValueError, LookupError, TypeError, AttributeError, AssertionError)
_END = object()


class JournalDamaged(RuntimeError):
    """A line of the journal that does not read as one of Optuna's changes: which change it held
    is lost, so it is not repaired."""


class BatchedJournalStorage(JournalStorage):
    """A journal storage that also sets several user attrs of one trial in a single append; with
    `sole_writer`, it reads the file only when it wrote to it since it last read it."""

    def __init__(self, backend: JournalFileBackend, sole_writer: bool = False) -> None:
        self._sole_writer = sole_writer
        self._unread = True  # the file holds lines this storage has not applied (at first: all)
        super().__init__(backend)

    def _write_log(self, op_code: int, extra_fields: dict[str, Any]) -> None:
        self._unread = True
        try:
            super()._write_log(op_code, extra_fields)
        except OSError as err:  # (Optuna's append: a full disk's error names no file)
            name_the_file(err, self._backend._file_path)
            raise

    def _sync_with_backend(self) -> None:
        if self._unread or not self._sole_writer:
            self._replay_new_lines()
            self._unread = False

    def _replay_new_lines(self) -> None:
        """Optuna's replay, line by line, so that a damaged line is JournalDamaged naming it,
        wherever it lies (the last line too) and whenever it is read, at every read until it is
        mended (also by `status --watch`, which Optuna's replay would let go on without that change
        at its next read). Optuna's refusals of this storage's own changes (a finished trial, a
        knob's other distribution) are raised as they are."""
        replay = self._replay_result
        applied = replay.log_number_read
        lines = self._backend.read_logs(applied)
        while True:
            try:
                entry = next(lines, _END)
            except ValueError as err:  # (raised at the line after the one that does not parse)
                raise JournalDamaged(f"its line {applied + 1} does not parse ({err})") from None
            if entry is _END:
                break
            try:
                replay.apply_logs([entry])
            except _DAMAGE:
                if isinstance(entry, dict) and entry.get("worker_id") == replay.worker_id:
                    raise
                replay.log_number_read = applied  # (counted read: the next read would pass it over)
                raise JournalDamaged(f"its line {applied + 1} is not a change Optuna knows") from None
            applied += 1
        if damage := self._unparsed_last_line(applied):
            raise JournalDamaged(damage)

    def _unparsed_last_line(self, number: int) -> str:
        """Why the journal's line `number` (0-based), the first not read, is damaged: Optuna's
        reader passes over a last line that does not parse as if it were torn, but one that ends
        with its newline was written whole ('' for a torn line, which `recover_journal` drops, or
        one appended since the read, which the next read takes)."""
        offset = getattr(self._backend, "_log_number_offset", {}).get(number)
        if offset is None:
            return ""
        try:
            with open(self._backend._file_path, "rb") as f:
                f.seek(offset)
                line = f.readline()
        except OSError:
            return ""
        if not line.endswith(b"\n"):
            return ""
        try:
            json.loads(line)
        except ValueError as err:
            return f"its line {number + 1} does not parse ({err})"
        return ""

    def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        """Like `set_trial_user_attr` for each item, in one locked, fsync'd write. A finished
        trial is refused before anything is written (Optuna writes first and refuses on replay,
        which here would leave the rest of the batch to fail at every later read). The replay is
        current without a read first: the controller is the journal's only writer."""
        if not attrs:
            return
        with self._thread_lock:
            trial = self._replay_result.get_trial(trial_id)
            if trial.state.is_finished():
                raise UpdateFinishedTrialError(f"trial {trial.number} has finished: its attrs cannot change")
            worker_id = self._replay_result.worker_id
            self._unread = True
            self._backend.append_logs(
                [
                    {
                        "op_code": JournalOperation.SET_TRIAL_USER_ATTR,
                        "worker_id": worker_id,
                        "trial_id": trial_id,
                        "user_attr": {key: value},  # one per line, as Optuna replays them
                    }
                    for key, value in attrs.items()
                ]
            )
            self._sync_with_backend()


def journal_storage(campaign_dir: Path, sole_writer: bool = False) -> BatchedJournalStorage:
    """The campaign's journal; `sole_writer` only for the controller, under its lock (a reader
    such as `status --watch` must see what the controller writes)."""
    path = str(campaign_dir / JOURNAL_FILE)
    return BatchedJournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)), sole_writer)


LEFT_LOCK = "the study journal's lock, left by a controller killed while writing it"


def torn_tail(size: int) -> str:
    """A torn last line as the start that drops it and the check that foresees it say it."""
    return (
        f"the torn last {size} bytes of the study journal: a controller was killed, or its disk full, "
        "while writing them"
    )


def left_by_a_kill(campaign_dir: Path) -> tuple[Path | None, int]:
    """What a controller killed while appending to the journal leaves behind, read without
    writing: the lock file (None: none), and the size of a torn last line (0: none)."""
    path = campaign_dir / JOURNAL_FILE
    lock = Path(f"{path}{LOCK_FILE_SUFFIX}")
    size = path.stat().st_size if path.exists() else 0
    keep = after_last_newline(path, size) if size else 0
    return (lock if lock.exists() else None), size - keep


def recover_journal(campaign_dir: Path) -> None:
    """Undo what a controller killed while appending to the journal leaves behind: the lock file
    (Optuna would wait 30 s before taking it over) and a torn last line (Optuna would refuse the
    whole journal once anything is appended after it). Safe only under the controller lock: no
    other process writes the journal then."""
    lock, torn = left_by_a_kill(campaign_dir)
    if lock is not None:
        lock.unlink()
        log.info("removed %s", LEFT_LOCK)
    if torn:
        path = campaign_dir / JOURNAL_FILE
        os.truncate(path, path.stat().st_size - torn)
        log.warning("dropped %s", torn_tail(torn))


def repairs_said(campaign_dir: Path) -> list[str]:
    """What the start would repair in the journal (`recover_journal`), in its words, for the dry run."""
    lock, torn = left_by_a_kill(campaign_dir)
    said = []
    if lock is not None:
        said.append(f"the start removes {LEFT_LOCK}")
    if torn:
        said.append(f"the start drops {torn_tail(torn)}")
    return said
