"""AgentSampler: the proposer's candidates as an Optuna sampler.

Candidates enter the study as WAITING trials (`enqueue`), with their fixed knob values as the
trial's fixed params, so the queue survives a killed controller. When a trial asks for a knob the
candidate left free, or when no candidate is waiting and a slot would otherwise idle, the inner
sampler (TPE by default) chooses. The sampler keeps no state of its own: everything is in storage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from autoresearch.proposals import Candidate
from autoresearch.proposers.base import KnobSpec


def distribution_of(knob: KnobSpec) -> BaseDistribution:
    if knob.kind == "float":
        return FloatDistribution(float(knob.low), float(knob.high), log=knob.log)  # type: ignore[arg-type]
    if knob.kind == "int":
        return IntDistribution(int(knob.low), int(knob.high), log=knob.log)  # type: ignore[arg-type]
    if knob.kind == "categorical":
        return CategoricalDistribution(list(knob.choices))
    raise ValueError(f"knob {knob.name}: unknown kind {knob.kind!r} (float, int or categorical)")


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """Ask the trial for a knob through the public API: fixed params come back as fixed."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_categorical(name, dist.choices)  # type: ignore[attr-defined]


def candidate_key(candidate: Candidate, frontier: str) -> str:
    """Identity of an experiment: the same change on the same frontier version."""
    return hashlib.sha1(f"{frontier}\n{candidate.key()}".encode()).hexdigest()[:16]


class AgentSampler(BaseSampler):
    def __init__(self, knobs: Sequence[KnobSpec], inner: BaseSampler | None = None, seed: int | None = None):
        self.knobs = {k.name: k for k in knobs}
        self.distributions = {k.name: distribution_of(k) for k in knobs}
        self.inner = inner or TPESampler(seed=seed, n_startup_trials=5)

    # -- Optuna's sampler hooks --------------------------------------------------------------
    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    # -- the candidate queue ------------------------------------------------------------------
    def enqueue(
        self, study: optuna.Study, candidate: Candidate, frontier: str, attrs: dict[str, Any]
    ) -> None:
        """Queue a candidate as a WAITING trial; its fixed declared knobs become fixed params.

        The candidate itself (edits can be large) lives in a file; `attrs["edit"]` points to it.
        """
        fixed = {k: v for k, v in candidate.knobs.items() if v is not None and k in self.distributions}
        user_attrs = {
            "key": candidate_key(candidate, frontier),
            "description": candidate.description,
            "hypothesis": candidate.hypothesis,
            "tier": candidate.tier,
            **attrs,
        }
        study.enqueue_trial(fixed, user_attrs=user_attrs)

    def resolve_knobs(self, trial: optuna.Trial, candidate: Candidate) -> dict[str, Any]:
        """The candidate's knob settings with free (None) declared knobs sampled now, as trial params."""
        settings: dict[str, Any] = {}
        for name, value in candidate.knobs.items():
            if name in self.distributions:
                settings[name] = suggest(trial, name, self.distributions[name])
            elif value is not None:
                settings[name] = value
        return settings

    def exploration_candidate(self) -> Candidate:
        """What a slot runs when no proposal is waiting: the inner sampler over every declared knob."""
        return Candidate(
            description="inner sampler: " + ", ".join(self.knobs) if self.knobs else "inner sampler",
            hypothesis="model-based search over the declared knobs while the proposer works",
            knobs=dict.fromkeys(self.knobs),
        )
