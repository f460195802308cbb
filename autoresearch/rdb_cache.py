"""A database-held study as the controller reads it: from memory, written through.

Optuna's own cache in front of an RDB storage re-reads every unfinished trial from the database
at each read of the study, in case another process changed it. In a campaign a few thousand
trials are queued or running at once, and the controller reads the study many times per
experiment: over SQLite on local disk it spent about a second per experiment there, against a
few hundredths on the journal (docs/BENCHMARKS.md). The controller is its study's only writer
(one per campaign folder, under its lock; jobs report through files), so it loads the study once
and keeps its copy current with each of its own writes. Readers (`status`, `report`) read the
database itself, not this copy, so they see every write (`patient_reader`). Each database
operation goes through `outage.Patience`, which rides out a database that fails for a moment.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import threading
from collections.abc import Container, Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._rdb.models import StudyModel, TrialModel, TrialUserAttributeModel
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Executable

from autoresearch.outage import Patience


class WriteThroughCache(BaseStorage):
    """Writes go to `backend` first (its checks and errors stand); reads come from memory. A
    trial that changes is replaced, never edited in place, so a trial read earlier stays as it
    was read, as with Optuna's journal storage."""

    def __init__(self, backend: RDBStorage, patience: Patience) -> None:
        self._backend = backend
        self._patience = patience
        self._lock = threading.Lock()
        self._trials: dict[int, FrozenTrial] = {}  # by trial id, of the studies loaded
        self._ids: dict[int, list[int]] = {}  # study id -> its trial ids, by trial number
        self._study_attrs: dict[int, dict[str, Any]] = {}  # study id -> its user attrs

    # -- studies: passed through -------------------------------------------------------------
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._backend.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._backend.delete_study(study_id)
        with self._lock:
            for trial_id in self._ids.pop(study_id, []):
                del self._trials[trial_id]
            self._study_attrs.pop(study_id, None)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._patience.run(lambda: self._backend.set_study_user_attr(study_id, key, value))
        with self._lock:
            self._study_attrs.pop(study_id, None)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._patience.run(lambda: self._backend.set_study_system_attr(study_id, key, value))

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._patience.run(lambda: self._backend.get_study_id_from_name(study_name))

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._patience.run(lambda: self._backend.get_study_name_from_id(study_id))

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._patience.run(lambda: self._backend.get_study_directions(study_id))

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        with self._lock:
            if study_id not in self._study_attrs:
                self._study_attrs[study_id] = self._patience.run(
                    lambda: self._backend.get_study_user_attrs(study_id)
                )
            return dict(self._study_attrs[study_id])

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._patience.run(lambda: self._backend.get_study_system_attrs(study_id))

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._patience.run(self._backend.get_all_studies)

    # -- trials: written through, read from memory -------------------------------------------
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        with self._lock:
            ids = self._study_ids(study_id)
            trial = self._patience.run(
                lambda: self._create_trial(study_id, template_trial),
                applied=lambda: self._stored_trial(study_id, len(ids)),
            )
            trial_id = trial._trial_id
            self._trials[trial_id] = trial
            ids.append(trial_id)
            if trial.number != len(ids) - 1:
                raise RuntimeError(
                    f"another process added trials to study {study_id}: one controller per study"
                )
            return trial_id

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        with self._lock:
            self._patience.run(
                lambda: self._backend.set_trial_param(
                    trial_id, param_name, param_value_internal, distribution
                )
            )
            if trial := self._replaced(trial_id):
                trial.params = {
                    **trial.params,
                    param_name: distribution.to_external_repr(param_value_internal),
                }
                trial.distributions = {**trial.distributions, param_name: distribution}

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        with self._lock:
            changed = self._patience.run(
                lambda: self._backend.set_trial_state_values(trial_id, state, values),
                applied=lambda: self._backend.get_trial(trial_id).state == state or None,
            )
            self._reload(trial_id)  # the database sets the start and end times
            return changed

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        with self._lock:
            self._patience.run(
                lambda: self._backend.set_trial_intermediate_value(trial_id, step, intermediate_value)
            )
            self._reload(trial_id)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.set_trial_user_attrs(trial_id, {key: value})

    def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        """Like `set_trial_user_attr` for each item, in one transaction (all or none) and, on
        PostgreSQL and SQLite, one statement: a launch and a result each set about ten, and each
        statement is a round trip to the database."""
        if not attrs:
            return
        with self._lock:
            self._patience.run(lambda: self._write_user_attrs(trial_id, attrs))
            if trial := self._replaced(trial_id):
                trial.user_attrs = {**trial.user_attrs, **attrs}

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._lock:
            self._patience.run(lambda: self._backend.set_trial_system_attr(trial_id, key, value))
            if trial := self._replaced(trial_id):
                trial.system_attrs = {**trial.system_attrs, key: value}

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        with self._lock:
            ids = self._study_ids(study_id)
        if not 0 <= trial_number < len(ids):
            raise KeyError(f"no trial {trial_number} in study {study_id}")
        return ids[trial_number]

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            trial = self._trials.get(trial_id)
        return trial if trial is not None else self._patience.run(lambda: self._backend.get_trial(trial_id))

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        with self._lock:
            found = [self._trials[i] for i in self._study_ids(study_id)]
        if states is not None:
            found = [t for t in found if t.state in states]
        return copy.deepcopy(found) if deepcopy else found

    def remove_session(self) -> None:
        self._backend.remove_session()

    # -- the copy ----------------------------------------------------------------------------
    def _create_trial(self, study_id: int, template: FrozenTrial | None) -> FrozenTrial:
        """The new trial as stored, built here rather than read back. A queued candidate comes
        with about ten attrs, which Optuna writes with a read and a write each: here they go in
        one statement, in the transaction that creates the trial (all or none, as Optuna's)."""
        backend = self._backend
        if template is None or not template.user_attrs or _insert(backend.engine.name) is None:
            return backend._create_new_trial(study_id, template)  # (the trial, without a read back)
        bare = copy.copy(template)
        bare.user_attrs = {}
        with _create_scoped_session(backend.scoped_session) as session:
            StudyModel.find_or_raise_by_id(study_id, session, for_update=True)  # as Optuna: numbers in turn
            model = backend._get_prepared_new_trial(study_id, bare, session)
            session.flush()
            session.execute(_upsert(backend.engine.name, model.trial_id, template.user_attrs))
            number, started, trial_id = model.number, model.datetime_start, model.trial_id
        trial = copy.deepcopy(template)
        trial.number, trial.datetime_start, trial._trial_id = number, started, trial_id
        return trial

    def _write_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        """The attrs in one transaction, committed (or raised) on return."""
        backend = self._backend
        upsert = _upsert(backend.engine.name, trial_id, attrs)
        with _create_scoped_session(backend.scoped_session, True) as session:
            if upsert is None:  # Optuna's way, one attr at a time, each checking the trial's state
                for key, value in attrs.items():
                    backend._set_trial_attr_without_commit(
                        session, TrialUserAttributeModel, trial_id, key, value
                    )
                return
            backend.check_trial_is_updatable(
                trial_id, TrialModel.find_or_raise_by_id(trial_id, session).state
            )
            session.execute(upsert)

    def _study_ids(self, study_id: int) -> list[int]:
        """The study's trial ids, its trials loaded from the database the first time it is read."""
        if study_id not in self._ids:
            stored = self._patience.run(lambda: self._backend.get_all_trials(study_id, deepcopy=False))
            loaded = sorted(stored, key=lambda t: t.number)
            self._trials.update((t._trial_id, t) for t in loaded)
            self._ids[study_id] = [t._trial_id for t in loaded]
        return self._ids[study_id]

    def _stored_trial(self, study_id: int, number: int) -> FrozenTrial | None:
        """The study's trial of this number in the database, None where it has none: a new trial
        whose commit failed is there if the commit went through (this process being its only writer)."""
        try:
            trial_id = self._backend.get_trial_id_from_study_id_trial_number(study_id, number)
        except KeyError:
            return None
        return self._backend.get_trial(trial_id)

    def _reload(self, trial_id: int) -> None:
        if trial_id in self._trials:
            self._trials[trial_id] = self._patience.run(lambda: self._backend.get_trial(trial_id))

    def _replaced(self, trial_id: int) -> FrozenTrial | None:
        """A copy of a cached trial, put in its place, for a change that the database made as told."""
        if trial_id not in self._trials:
            return None
        trial = self._trials[trial_id] = copy.copy(self._trials[trial_id])
        return trial


def _insert(dialect: str) -> Any:
    """The dialect's INSERT that can take ON CONFLICT: PostgreSQL's, and SQLite's from 3.24; None
    elsewhere, where Optuna's way is kept."""
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0):
        return sqlite.insert
    return None


def _upsert(dialect: str, trial_id: int, attrs: dict[str, Any]) -> Executable | None:
    """One statement that inserts or replaces the attrs, as Optuna does one by one (None: the
    database has no such statement)."""
    insert = _insert(dialect)
    if insert is None:
        return None
    rows = [
        {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()
    ]
    statement = insert(TrialUserAttributeModel).values(rows)
    return statement.on_conflict_do_update(
        index_elements=[TrialUserAttributeModel.trial_id, TrialUserAttributeModel.key],
        set_={"value_json": statement.excluded.value_json},
    )
