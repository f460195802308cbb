"""The study as the campaign loop reads and writes it: trials by number, the queue, and tells.

Every state change the loop makes goes through here, so a controller killed between two writes
leaves a trial in one of a few shapes its successor knows: WAITING, RUNNING (with or without a
job handle), or told.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoresearch.budget import (
    Rate,
    add_hours,
    earlier_prices,
    experiments_launched,
    ran_undecided,
    spent_hours,
)
from autoresearch.results import rows
from autoresearch.study import set_trial_attrs, trials

MEASUREMENT_KINDS = ("baseline", "validation")  # runs of an existing train.py that decisions wait for


class Ledger:
    """The campaign's view of its study; `after_tell` keeps outputs and tracking up with every result."""

    def __init__(self, study: optuna.Study, now: Callable[[], float], after_tell: Callable[[], None]) -> None:
        self.study = study
        self._now = now
        self._after_tell = after_tell
        # What the budgets count, summed once here and kept up as trials launch and end: summed
        # over the study at every turn of the loop, they made the controller slower as it grew.
        self.launched = experiments_launched(study)
        self.rated_hours: dict[Rate, float] = spent_hours(study)
        # Trials whose hours were counted when their run ended, before they were told (a promoted
        # change awaiting its re-runs): told, they are not counted again.
        self._counted_running = {t.number for t in ran_undecided(study)}
        self._earlier_prices = earlier_prices(study)  # for runs an older version launched, ending now
        self._run_keys: dict[str, set[int]] = {}  # train.py version -> trials running it or that ran it
        self._rows: dict[int, dict[str, Any]] = {}  # results-table rows of finished trials
        # tier -> runs that moved declared knobs alone, running or ended with a value
        self._knob_runs: dict[str, list[int]] = {}
        self._size = 0  # trials known to exist (`size`)
        for t in trials(study, TrialState.COMPLETE, TrialState.RUNNING):
            if key := t.user_attrs.get("run_key"):
                self._run_keys.setdefault(key, set()).add(t.number)
            self._index_knob_run(t)

    def trial(self, number: int) -> FrozenTrial:
        storage = self.study._storage
        return storage.get_trial(
            storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        )

    def size(self) -> int:
        """How many trials the study holds, probed on from the last count (only this controller
        adds trials): counting them read the whole study, once per queued candidate."""
        while True:
            try:
                self.trial(self._size)
            except KeyError:
                return self._size
            self._size += 1

    def table(self) -> list[dict[str, Any]]:
        """The results table (`results.rows`), each finished trial's row made once."""
        return rows(self.study, self._rows)

    def all(self) -> list[FrozenTrial]:
        return trials(self.study)

    def waiting(self) -> list[FrozenTrial]:
        return trials(self.study, TrialState.WAITING)

    def queue(self, owed_only: bool = False) -> list[FrozenTrial]:
        """Waiting trials in the order free slots take them: the runs that measure a version
        (baselines, re-runs) first, then proposals in the order they came. Owed runs (`_owed`)
        still run after a budget stops new experiments, so no promoted change is left undecided."""
        waiting = self.waiting()
        first = [t for t in waiting if t.user_attrs.get("kind") in MEASUREMENT_KINDS]
        queue = first + [t for t in waiting if t.user_attrs.get("kind") not in MEASUREMENT_KINDS]
        return [t for t in queue if self._owed(t)] if owed_only else queue

    def _owed(self, t: FrozenTrial) -> bool:
        """A baseline (results wait for it), a re-run of a change still awaiting its verdict, or
        an experiment run again after the cluster lost it (the budget counted its first launch,
        which measured nothing). A new frontier's runs (at its screening seed; on the screen tier
        at the measurement seeds) re-run a trial already told: no verdict needs them (a result
        screened with its seed is decided without that run when the campaign ends), so a stopped
        budget leaves them queued, as it does new proposals."""
        if t.user_attrs.get("kind") not in MEASUREMENT_KINDS:
            return "retry_of" in t.user_attrs
        validates = t.user_attrs.get("validates")
        return validates is None or not self.trial(int(validates)).state.is_finished()

    def owed(self) -> list[FrozenTrial]:
        return self.queue(owed_only=True)

    def queued_for(self, attr: str, number: int) -> list[FrozenTrial]:
        """The trials queued on trial `number`'s account (`validates`, `stack_of`, `retry_of`):
        a controller killed between queueing them and telling the study queues them only once."""
        return [t for t in self.all() if t.user_attrs.get(attr) == number]

    def set(self, number: int, attrs: dict[str, Any]) -> None:
        set_trial_attrs(self.study, number, attrs)
        if "ended_at" in attrs and number not in self._counted_running:
            trial = self.trial(number)
            if trial.state == TrialState.RUNNING:  # its run is over, billed whatever its decision
                self._counted_running.add(number)
                add_hours(self.rated_hours, trial, self._earlier_prices)

    def launch(self, number: int, attrs: dict[str, Any]) -> None:
        """A claimed trial goes out as an experiment: `attrs` say where (its `exp_dir` among them)."""
        self.set(number, attrs)
        self.launched += 1
        self._run_keys.setdefault(attrs["run_key"], set()).add(number)
        self._index_knob_run(self.trial(number))

    def _index_knob_run(self, t: FrozenTrial) -> None:
        if t.user_attrs.get("knobs_only"):
            self._knob_runs.setdefault(t.user_attrs.get("tier", "screen"), []).append(t.number)

    def knob_runs(self, tier: str, latest: int) -> list[FrozenTrial]:
        """The `latest` runs on `tier` that moved only declared knobs of their frontier's train.py,
        this frontier's and those before, running or ended with a value, oldest first: what the
        inner sampler learns from."""
        return [self.trial(n) for n in self._knob_runs.get(tier, [])[-latest:]]

    def ran(self, run_key: str) -> set[int]:
        """The trials running this train.py version (`run_key`) or that ran it to a result."""
        return self._run_keys.get(run_key, set())

    def claim(self, trial: FrozenTrial) -> bool:
        """WAITING to RUNNING, as `Study.ask` claims a queued trial; False if it was no longer waiting."""
        return self.study._storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING)

    def complete(self, number: int, value: float, attrs: dict[str, Any]) -> None:
        self.set(number, attrs)
        self.study.tell(number, value)
        self._ended(number)

    def fail(self, number: int, attrs: dict[str, Any]) -> None:
        self.set(number, {"ended_at": self._now(), **attrs})
        self.study.tell(number, state=TrialState.FAIL)
        self._ended(number)

    def _ended(self, number: int) -> None:
        trial = self.trial(number)
        if number in self._counted_running:
            self._counted_running.discard(number)
        else:
            add_hours(self.rated_hours, trial, self._earlier_prices)
        if trial.state == TrialState.FAIL:  # a failed run says nothing of its train.py: it may run again
            self._run_keys.get(trial.user_attrs.get("run_key", ""), set()).discard(number)
            if number in (knob_runs := self._knob_runs.get(trial.user_attrs.get("tier", "screen"), [])):
                knob_runs.remove(number)
        self._after_tell()

    def drop(self, trial: FrozenTrial, reason: str) -> None:
        """A queued run no longer needed: claimed and failed as skipped, with the reason."""
        if self.claim(trial):
            self.fail(trial.number, {"status": "skip", "reason": reason})


def owed_runs(study: optuna.Study) -> int:
    """How many queued runs a decision waits for, read without a controller: they still start
    after a budget is reached (`Ledger.owed`)."""
    return len(Ledger(study, time.time, lambda: None).owed())
