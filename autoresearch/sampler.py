"""AgentSampler: the proposer's candidates as an Optuna sampler.

Candidates enter the study as WAITING trials (`enqueue`), with their fixed knob values as the
trial's fixed params, so the queue survives a killed controller. When a trial asks for a knob the
candidate left free, or when no candidate is waiting and a slot would otherwise idle, the inner
sampler (TPE by default) chooses. Nothing is kept between trials: everything is in storage.

The inner sampler learns from runs that changed nothing but declared knobs of their frontier,
on the tier the new run is for, the latest `INNER_SAMPLER_HISTORY` of them. A run on other
hardware, or with an edit, measured another function of the knobs. Runs on older frontiers are
kept: a frontier differs from the one before by one kept change, small beside where the knobs
lie, and a history per frontier started TPE afresh at every keep (in the simulator, learning
across keeps gained 8% more true val_bpb; docs/BENCHMARKS.md). A history cut to a fixed length
keeps each sample's cost from growing with the study.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from autoresearch.knob_types import fits, given_once, unstorable_choice
from autoresearch.proposals import Candidate, quoted
from autoresearch.proposers.base import KnobSpec

INNER_SAMPLER_HISTORY = 500  # the latest knob runs on a tier the inner sampler learns from


def knob_specs(cfg: Any) -> list[KnobSpec]:
    """The campaign's knobs, from its config or its saved config.yaml."""
    return [
        KnobSpec(name, k.kind, k.low, k.high, k.log, tuple(k.choices))
        for name, k in cfg.campaign.knobs.items()
    ]


def distribution_of(knob: KnobSpec) -> BaseDistribution:
    if knob.kind == "float":
        return FloatDistribution(float(knob.low), float(knob.high), log=knob.log)  # type: ignore[arg-type]
    if knob.kind == "int":
        return IntDistribution(int(knob.low), int(knob.high), log=knob.log)  # type: ignore[arg-type]
    if knob.kind == "categorical":
        return CategoricalDistribution(list(knob.choices))
    raise ValueError(f"knob {knob.name}: unknown kind {knob.kind!r} (float, int or categorical)")


def _searched_as(dist: BaseDistribution) -> str:
    if isinstance(dist, FloatDistribution | IntDistribution):
        kind = "float" if isinstance(dist, FloatDistribution) else "int"
        return f"{kind} on a log scale" if dist.log else kind
    return f"categorical {list(dist.choices)}"  # type: ignore[attr-defined]


def knob_changes(searched: dict[str, BaseDistribution], specs: list[KnobSpec], where: str) -> list[str]:
    """The study holds a knob's kind, log scale and choices from its first trial, and Optuna refuses
    a trial that asks for it otherwise (its bounds may change): each trial that set the knob would
    fail. `searched`: how the knobs were searched so far (the saved config's, or the study's own,
    which also remembers a knob dropped for a while). Knobs added or dropped are fine."""
    problems = []
    for spec in specs:
        old, new = searched.get(spec.name), _distribution(spec)
        if old is None or new is None:
            continue
        try:
            check_distribution_compatibility(old, stored_as(old, new))
        except ValueError:
            problems.append(
                f"campaign.knobs.{spec.name}: {where} searched it as {_searched_as(old)}, this "
                f"command says {_searched_as(new)}, and its study cannot take a knob's kind, log scale "
                "or choices changed (bounds may change): keep them, leave the knob out of "
                "campaign.knobs, or choose a new campaign.name"
            )
    return problems


def searched_distributions(recorded: list[FrozenTrial]) -> dict[str, BaseDistribution]:
    """How the study searched each knob its trials set (one way each: Optuna holds a study to the
    kind, log scale and choices of a knob's first record)."""
    return {name: dist for t in recorded for name, dist in t.distributions.items()}


def drawn_from(dist: BaseDistribution) -> BaseDistribution:
    """What a knob is drawn from: `dist`, its choices each given once (`stored_as`)."""
    if not isinstance(dist, CategoricalDistribution) or (once := given_once(dist.choices)) == dist.choices:
        return dist
    return CategoricalDistribution(list(once))


def stored_as(searched: BaseDistribution | None, declared: BaseDistribution) -> BaseDistribution:
    """How a trial records a knob `declared` so, in a study that `searched` it: as declared, but as
    the study searched it where that was the same choices with one given twice (before the config
    check refused a repeat): Optuna holds the study to that list, and a value stored by it keeps
    its meaning (a repeated choice is stored at its first place), while the draws are from the
    choices given once (`drawn_from`), each as often as the others."""
    if searched is not None and searched != declared and drawn_from(searched) == declared:
        return searched
    return declared


def distributions(specs: list[KnobSpec]) -> dict[str, BaseDistribution]:
    return {spec.name: dist for spec in specs if (dist := _distribution(spec)) is not None}


def _distribution(spec: KnobSpec) -> BaseDistribution | None:
    """The knob's distribution; None for one the config check refuses (an infinite int bound
    raises OverflowError; a list among the choices, Optuna's warning)."""
    if unstorable_choice(spec):
        return None
    try:
        return distribution_of(spec)
    except (ValueError, TypeError, OverflowError):
        return None


def knob_value_problem(knob: KnobSpec, value: Any) -> str:
    """Why `value` cannot be the knob's setting, or '': found when a proposal is queued, since Optuna
    fails a fixed param of the wrong type only at launch, and runs one out of range after a warning."""
    if knob.kind == "categorical":  # (`in` alone takes True or 1.0 for a choice 1, and 1 for True)
        if any(value == choice and fits(value, type(choice)) for choice in knob.choices):
            return ""
        return f"{quoted(value)} is not one of its choices {list(knob.choices)}"
    if isinstance(value, bool) or not isinstance(value, int if knob.kind == "int" else int | float):
        return f"{quoted(value)} is not {'an integer' if knob.kind == 'int' else 'a number'}"
    if not knob.low <= value <= knob.high:  # type: ignore[operator]
        return f"{quoted(value)} is outside its range [{knob.low:g}, {knob.high:g}]"
    return ""


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
        self.stored = dict(self.distributions)  # as trials record them (`follow`)
        # independent TPE: a candidate fixes some knobs and leaves others free
        self.inner = inner or TPESampler(seed=seed, n_startup_trials=5, multivariate=False)
        self._peers: StudyView | None = None  # while `resolve_knobs` runs: what the inner sampler sees

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
        return self.inner.sample_independent(
            self._peers or study, trial, param_name, drawn_from(param_distribution)
        )

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

    def follow(self, study: optuna.Study) -> None:
        """Record each knob in the study's trials as the study searched it (`stored_as`)."""
        searched = searched_distributions(study.get_trials(deepcopy=False))
        self.stored = {name: stored_as(searched.get(name), d) for name, d in self.distributions.items()}

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

    def resolve_knobs(
        self, trial: optuna.Trial, candidate: Candidate, comparable: Callable[[int], list[FrozenTrial]]
    ) -> dict[str, Any]:
        """The candidate's knob settings with free (None) declared knobs sampled now, as trial params.
        The inner sampler learns from `comparable(n)`: the latest n runs that moved declared knobs
        alone on the tier this trial runs on (`Ledger.knob_runs`)."""
        if any(value is None and name in self.distributions for name, value in candidate.knobs.items()):
            # (fixed values come from the trial's fixed params: the inner sampler is not asked)
            self._peers = StudyView(trial.study, comparable(INNER_SAMPLER_HISTORY))
        try:
            settings: dict[str, Any] = {}
            for name, value in candidate.knobs.items():
                if name in self.distributions:
                    settings[name] = suggest(trial, name, self.stored[name])
                elif value is not None:
                    settings[name] = value
            return settings
        finally:
            self._peers = None

    def knobs_only(self, candidate: Candidate) -> bool:
        """Whether the candidate changes train.py in declared knobs alone: a run the inner sampler
        can learn from."""
        return not candidate.edits and all(
            name in self.distributions for name, value in candidate.knobs.items() if value is not None
        )

    def exploration_candidate(self) -> Candidate:
        """What a slot runs when no proposal is waiting: the inner sampler over every declared knob."""
        return Candidate(
            description="inner sampler: " + ", ".join(self.knobs) if self.knobs else "inner sampler",
            hypothesis="model-based search over the declared knobs while the proposer works",
            knobs=dict.fromkeys(self.knobs),
        )


class StudyView:
    """A study that shows only some of its trials. Optuna's samplers read a study's trials through
    `_get_trials` (TPE, with the states it wants); all else is the study's own."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        self._study = study
        self._trials = trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Sequence[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        return [t for t in self._trials if states is None or t.state in states]

    def get_trials(
        self, deepcopy: bool = True, states: Sequence[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)
