"""A database-held study as `status` and `report` read it: each read tried again through a blip.

The controller rides out a database that fails for a moment (`outage.Patience`, through
`rdb_cache.WriteThroughCache`); a reader run at that moment (a `status --watch` left open for
days, a report rebuilt during a PostgreSQL restart) should too, with the campaign's own
`storage_retry_seconds`. Every read is safe to repeat; a reader writes nothing, so a write here
is a bug and is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any, NoReturn, TypeVar

from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from autoresearch.outage import Patience

T = TypeVar("T")


class PatientReader(BaseStorage):
    """`storage`'s reads, each run through `patience`; its writes refused."""

    def __init__(self, storage: BaseStorage, patience: Patience) -> None:
        self._storage = storage
        self._patience = patience

    def _read(self, read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._patience.run(lambda: read(*args, **kwargs))

    # -- reads -------------------------------------------------------------------------------
    def get_study_id_from_name(self, study_name: str) -> int:
        return self._read(self._storage.get_study_id_from_name, study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._read(self._storage.get_study_name_from_id, study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._read(self._storage.get_study_directions, study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._read(self._storage.get_study_user_attrs, study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._read(self._storage.get_study_system_attrs, study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._read(self._storage.get_all_studies)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._read(self._storage.get_trial_id_from_study_id_trial_number, study_id, trial_number)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._read(self._storage.get_trial, trial_id)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._read(self._storage.get_best_trial, study_id)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._read(self._storage.get_all_trials, study_id, deepcopy=deepcopy, states=states)

    # -- writes: none from a reader ----------------------------------------------------------
    def _refuse(self, *_: Any, **__: Any) -> NoReturn:
        raise RuntimeError("a reader of the study (status, report) writes nothing to it")

    create_new_study = create_new_trial = delete_study = _refuse  # type: ignore[assignment]
    set_study_user_attr = set_study_system_attr = _refuse  # type: ignore[assignment]
    set_trial_param = set_trial_state_values = _refuse  # type: ignore[assignment]
    set_trial_intermediate_value = _refuse  # type: ignore[assignment]
    set_trial_system_attr = set_trial_user_attr = _refuse  # type: ignore[assignment]
