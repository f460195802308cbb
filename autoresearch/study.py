"""The Optuna study: the campaign's single source of truth.

One trial per experiment. Knob values are params; everything else (description, tier, result
figures, the keep/discard decision) is user attrs. A journal file with an open-lock is the default
storage because it works on the shared file systems clusters have; an RDB URL works too.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import StorageInternalError
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from autoresearch.config import SAVED_CONFIG
from autoresearch.files import write_atomic
from autoresearch.journal import (
    JOURNAL_FILE,
    BatchedJournalStorage,
    JournalDamaged,
    journal_storage,
    recover_journal,
)
from autoresearch.outage import Patience, database_failed, first_line, missing_tables, never_stopping
from autoresearch.patient_reader import PatientReader
from autoresearch.rdb_cache import WriteThroughCache
from autoresearch.storage_url import masked

FOLDER_ID_FILE = "study.id"  # with a database storage: the id its study holds too (`_claim`)
FOLDER_ID_ATTR = "campaign_folder_id"


class StudyUnavailable(RuntimeError):
    """The storage cannot be opened: its driver is missing, or the database cannot be reached."""


class NoStudyYet(StudyUnavailable):
    """The storage opens but holds no study of this name: a campaign's first start makes it."""


class StudyTaken(StudyUnavailable):
    """The database's study of this name belongs to another campaign folder."""


def controller_storage(
    campaign_dir: Path, url: str | None, retry_seconds: float, stopping: Callable[[], bool]
) -> optuna.storages.BaseStorage:
    """The campaign's journal, or the database at `url`, as the controller (their sole writer)
    holds them: read from memory, every write sent on at once, tried again for `retry_seconds`
    while the database fails, unless `stopping()` (`outage.StoppedInOutage`)."""
    if not url:
        return journal_storage(campaign_dir, sole_writer=True)
    database = optuna.storages.RDBStorage(url, engine_kwargs=lock_wait(url))
    return WriteThroughCache(database, Patience(url, retry_seconds, stopping))


# How long one of the controller's statements waits for a SQLite file another process holds (a
# user's `sqlite3 study.db` shell in a write transaction). The driver's own 5 s wait runs in C, where
# a Ctrl-C is not heard: the stop came 5 s late, and said nothing meanwhile. A shorter wait hands a
# longer lock to `Patience`, which says what it waits for and hears a stop between its tries.
SQLITE_LOCK_WAIT_S = 1.0


def lock_wait(url: str) -> dict[str, Any]:
    """The engine settings that bound a SQLite statement's wait for a lock (`SQLITE_LOCK_WAIT_S`)."""
    if make_url(url).get_backend_name() != "sqlite":
        return {}
    return {"connect_args": {"timeout": SQLITE_LOCK_WAIT_S}}


@contextlib.contextmanager
def reading_storage(url: str | None, campaign_dir: Path) -> Iterator[None]:
    """A storage that cannot be opened or read (also one gone while it is read: Optuna wraps a
    database's failure in a commit as StorageInternalError) becomes one StudyUnavailable line, not
    a driver traceback; so does a journal with a damaged line (a torn last line is `recover_journal`'s),
    and one removed while it is read (`status --watch` on a folder deleted to start over)."""
    journal = campaign_dir / JOURNAL_FILE
    try:
        yield
    except FileNotFoundError as err:
        if url or err.filename is None or Path(err.filename) != journal:
            raise
        raise StudyUnavailable(
            f"the study journal {journal} is gone: its campaign folder was removed or moved while it was read"
        ) from None
    except JournalDamaged as err:
        raise StudyUnavailable(
            f"cannot read the study journal {journal}: {err}; put back a copy "
            "from before the damage, or start over with a new campaign.name"
        ) from None
    except (ImportError, SQLAlchemyError, StorageInternalError) as err:
        raise unopenable(url, f"{first_line(err)}{_unopenable_hint(err)}") from None


def _unopenable_hint(err: BaseException) -> str:
    """What to do about a storage that could not be read, where its error alone does not say."""
    if isinstance(err, ImportError):
        return " (install the database driver the URL names)"
    if first_line(err) == "database is locked":  # (waited for storage_retry_seconds by then)
        return (
            ": another process holds the SQLite file locked (a controller's write, a sqlite3 shell's "
            "open transaction); run this again once it lets go, or raise storage_retry_seconds"
        )
    return ""


def unopenable(url: str | None, why: str) -> StudyUnavailable:
    return StudyUnavailable(f"cannot open the study at storage={masked(url) if url else url}: {why}")


def creation_refusal(url: str) -> StudyUnavailable | None:
    """The start's refusal where it could not create the database `url` names: a SQLite file in a
    folder that is not there (SQLite makes the file, never its folder), or a folder itself, in
    SQLite's words. Found
    without creating anything, for a dry run; None where it could."""
    parsed = make_url(url)
    database = Path(parsed.database or "")
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if database.is_dir():
        return unopenable(url, "unable to open database file: it is a folder; name a file in it")
    if database.exists():
        return None
    if database.parent.is_dir() and os.access(database.parent, os.W_OK | os.X_OK):
        return None
    return unopenable(url, "unable to open database file")


@contextlib.contextmanager
def held_storage(url: str | None) -> Iterator[None]:
    """A database that fails under the controller for longer than its storage tries again
    (`outage.Patience`: the server gone, the SQLite file locked) stops it in one StudyUnavailable
    line, not a driver traceback. Nothing is lost: each write reaches the database before the
    controller's copy, and the results that come in meanwhile wait in their experiments' folders
    for the next controller. A database without the study's tables gets a line of its own; a
    statement the database refuses is raised as it is: running again would not mend it."""
    try:
        yield
    except (StorageInternalError, SQLAlchemyError) as err:
        if url and missing_tables(err):
            raise StudyUnavailable(
                f"the database at storage={masked(url)} lacks the study's tables ({first_line(err)}): it is "
                "not an Optuna study, or was replaced while the controller ran; point storage at the "
                "campaign's study (running experiments go on and keep their results in their folders)"
            ) from None
        if not url or not database_failed(err):
            raise
        raise StudyUnavailable(
            f"lost the study at storage={masked(url)}: {first_line(err)}; running experiments go on and "
            "keep their results in their folders: run the same command again once the database is back"
        ) from None


def open_study(
    campaign_dir: Path,
    name: str,
    url: str | None,
    sampler: optuna.samplers.BaseSampler | None = None,
    retry_seconds: float = 0.0,
    stopping: Callable[[], bool] = never_stopping,
) -> optuna.Study:
    """Create the campaign's study, or load it when the campaign is resumed. Only the
    controller opens it this way, under its lock (`recover_journal`). A database that fails
    under it is tried again for `retry_seconds` (`storage_retry_seconds`), until `stopping()`."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not url:
        recover_journal(campaign_dir)
    with reading_storage(url, campaign_dir):
        storage = controller_storage(campaign_dir, url, retry_seconds, stopping)
        try:  # loaded: create_study(load_if_exists) appends a create line to a journal at each start
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        except KeyError:  # (no study of this name yet)
            study = optuna.create_study(
                study_name=name, storage=storage, sampler=sampler, direction="minimize", load_if_exists=True
            )
        if url:
            _claim(study, campaign_dir, url)
        return study


def claim_refusal(
    study: optuna.Study | None, campaign_dir: Path, url: str, name: str
) -> StudyUnavailable | None:
    """Why `campaign_dir` may not take the database's study `name` (None: no study there yet, which
    a start makes), or None where it may. A database keys its studies by name alone: the study and
    the folder that runs it hold one id (`FOLDER_ID_FILE`, `FOLDER_ID_ATTR`), so another folder of
    the same campaign.name (another runs_dir) is refused instead of adopting trials whose files it
    lacks. Reads only: the start then takes a new id (`_claim`), the dry run stops here."""
    mine = _folder_ids(campaign_dir)
    theirs = study.user_attrs.get(FOLDER_ID_ATTR) if study is not None else None
    if theirs is None:  # a new study, or one begun before studies had ids (then config.yaml says who ran it)
        has_trials = study is not None and bool(study.get_trials(deepcopy=False))
        ran_here = (campaign_dir / SAVED_CONFIG).is_file()
        if mine and ran_here and not has_trials:  # the folder ran a study that had its id
            return StudyUnavailable(
                f"storage={masked(url)} holds no study {name!r} of the campaign {campaign_dir}, "
                "which ran one there: the database lost it, or the URL reaches another database now; "
                "point storage at the one it ran on, or start over with a new campaign.name"
            )
        if mine or ran_here or not has_trials:
            return None
    elif theirs in mine:
        return None
    return StudyTaken(
        f"storage={masked(url)} holds a study {name!r} started by another campaign folder "
        f"than {campaign_dir}: give this campaign its own campaign.name, or run it with the "
        "runs_dir that started it (a copy of the folder that ran since holds it now)"
    )


def _claim(study: optuna.Study, campaign_dir: Path, url: str) -> None:
    """The study and the folder take a new id at each start (`_new_id`), once `claim_refusal` has
    none: a copy of the folder that ran leaves the folder it was copied from behind, refused."""
    if refused := claim_refusal(study, campaign_dir, url, study.study_name):
        raise refused
    theirs = study.user_attrs.get(FOLDER_ID_ATTR)
    held = _folder_ids(campaign_dir) if theirs is None else [theirs]
    _new_id(study, campaign_dir / FOLDER_ID_FILE, held)


def _folder_ids(campaign_dir: Path) -> list[str]:
    """The ids the folder holds (its study's, and one it was about to take: `_new_id`)."""
    id_file = campaign_dir / FOLDER_ID_FILE
    return id_file.read_text().split() if id_file.is_file() else []


def _new_id(study: optuna.Study, id_file: Path, held: list[str]) -> None:
    """The folder's and the study's new id. The folder takes it first, beside those it held: a
    controller killed before the study has it leaves a study the folder still claims."""
    new = uuid.uuid4().hex
    write_atomic(id_file, "".join(f"{i}\n" for i in [new, *held]))
    study.set_user_attr(FOLDER_ID_ATTR, new)
    write_atomic(id_file, new + "\n")


def _reader_storage(
    campaign_dir: Path, url: str | None, retry_seconds: float
) -> optuna.storages.BaseStorage | None:
    """Where a reader finds the study, None where there can be none yet; creates nothing: a reader
    must leave no journal, database file or tables where no campaign put a study (SQLite makes its
    file on connecting, so a missing one is looked for first). A database's reads are tried again
    for `retry_seconds` while it fails (`PatientReader`)."""
    if not url:
        return journal_storage(campaign_dir) if (campaign_dir / JOURNAL_FILE).exists() else None
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return None
    patience = Patience(url, retry_seconds)
    if not patience.run(lambda: _has_studies(url)):
        return None
    database = patience.run(
        lambda: optuna.storages.RDBStorage(url, engine_kwargs=lock_wait(url), skip_table_creation=True)
    )
    return PatientReader(optuna.storages.get_storage(database), patience)


def _has_studies(url: str) -> bool:
    engine = sqlalchemy.create_engine(url, **lock_wait(url))
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()


def first_read_wait(url: str | None, retry_seconds: float) -> float:
    """How long the start and `check` wait for a database that fails as they first read it: a
    SQLite file another process holds locked lets go within moments, so it is waited for as the
    controller waits; a server that does not answer before a campaign ran is more often a wrong URL
    than an outage, and is said at once."""
    return retry_seconds if url and make_url(url).get_backend_name() == "sqlite" else 0.0


def load_study(campaign_dir: Path, name: str, url: str | None, retry_seconds: float = 0.0) -> optuna.Study:
    """An existing campaign's study, for reading it (status, reports); creates nothing. A database
    that fails is tried again for `retry_seconds` (the campaign's `storage_retry_seconds`), at
    each read."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with reading_storage(url, campaign_dir):
        storage = _reader_storage(campaign_dir, url, retry_seconds)
        with contextlib.suppress(KeyError):  # (a storage without this study)
            if storage is not None:
                return optuna.load_study(study_name=name, storage=storage)
        others = [s.study_name for s in storage.get_all_studies()] if storage is not None and not url else []
    where = masked(url) if url else campaign_dir / JOURNAL_FILE
    if others:  # the folder's own journal holds a study by another name: config.yaml's was edited
        held = ", ".join(repr(other) for other in others)
        raise NoStudyYet(
            f"no study {name!r} in {where}, which holds the study {held}: config.yaml's campaign.name "
            "was edited? It records the last start: put back the name it wrote"
        )
    if any((campaign_dir / "experiments").glob("[0-9]*")):  # it ran: the study was lost since
        raise NoStudyYet(
            f"no study {name!r} in {where}, though {campaign_dir / 'experiments'} holds the experiments "
            "it ran: the study was lost (deleted, emptied?); put it back as it was to read the campaign"
        )
    raise NoStudyYet(f"no study {name!r} yet in {where}")


def set_trial_attrs(study: optuna.Study, number: int, attrs: dict[str, Any]) -> None:
    """Set user attrs on a trial that is still WAITING or RUNNING, by its number: in one write
    on the controller's storages (its journal, or its copy of a database), one per attr on others."""
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    if isinstance(storage, BatchedJournalStorage | WriteThroughCache):
        storage.set_trial_user_attrs(trial_id, attrs)
        return
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)


# A re-run was "validated" until 2026-12-04, also one that refuted its change: studies begun
# before then hold that name, which every reader takes as "rerun".
_RENAMED_STATUSES = {"validated": "rerun"}


def status_of(trial: FrozenTrial) -> str | None:
    """The trial's decided status under its current name; None before it has one."""
    status = trial.user_attrs.get("status")
    return _RENAMED_STATUSES.get(status, status)


def trials(study: optuna.Study, *states: TrialState) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=states or None)


def finished(study: optuna.Study) -> list[FrozenTrial]:
    return trials(study, TrialState.COMPLETE, TrialState.FAIL)
