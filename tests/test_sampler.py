"""The inner sampler on a real Optuna study: it learns only from runs it can compare with the one
it samples for (declared knobs moved on the same frontier, on the same tier), the latest of them,
as the ledger indexes them (on opening a study, and as trials launch and fail)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.samplers import RandomSampler
from optuna.trial import FrozenTrial, TrialState, create_trial

from autoresearch import sampler as sampler_module
from autoresearch.campaign import Campaign, CampaignError
from autoresearch.ledger import Ledger
from autoresearch.proposals import Candidate, Edit
from autoresearch.proposers.base import KnobSpec
from autoresearch.sampler import AgentSampler
from autoresearch.study import open_study

KNOBS = [KnobSpec("LR", "float", 0.001, 0.5, True), KnobSpec("WIDTH", "int", 16, 1024, True)]
EXPLORE = Candidate("explore", knobs={"LR": None, "WIDTH": None})


class NotingSampler(RandomSampler):
    """A real sampler that notes, for each value it samples, the trials it was shown."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.shown: list[list[int]] = []

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        self.shown.append([t.number for t in study._get_trials(deepcopy=False, states=None)])
        return super().sample_independent(study, trial, param_name, param_distribution)


def new_study(tmp_path: Path, sampler: AgentSampler) -> optuna.Study:
    return open_study(tmp_path, "sampler", None, sampler)


def add_run(
    study: optuna.Study,
    sampler: AgentSampler,
    lr: float = 0.01,
    value: float | None = 1.0,
    state: TrialState = TrialState.COMPLETE,
    **attrs: Any,
) -> int:
    """A run of the frontier "A" on the screen tier that moved LR only, unless `attrs` say otherwise."""
    study.add_trial(
        create_trial(
            state=state,
            value=value if state == TrialState.COMPLETE else None,
            params={"LR": lr},
            distributions={"LR": sampler.distributions["LR"]},
            user_attrs={"knobs_only": True, "parent": "A", "tier": "screen", **attrs},
        )
    )
    return len(study.trials) - 1


def sample(study: optuna.Study, sampler: AgentSampler) -> dict[str, Any]:
    """An exploration's knobs, sampled as the launcher does, with the study's runs as a controller
    that opens it finds them."""
    ledger = Ledger(study, lambda: 0.0, lambda: None)
    trial = optuna.Trial(study, study._storage.create_new_trial(study._study_id))
    return sampler.resolve_knobs(trial, EXPLORE, partial(ledger.knob_runs, "screen"))


def test_the_inner_sampler_is_shown_only_knob_runs_on_the_tier_of_every_frontier(tmp_path: Path) -> None:
    noting = NotingSampler()
    sampler = AgentSampler(KNOBS, inner=noting)
    study = new_study(tmp_path, sampler)
    older = add_run(study, sampler, parent="B")  # an older frontier: where the knobs lie carries over
    comparable = [older, add_run(study, sampler), add_run(study, sampler, state=TrialState.RUNNING)]
    add_run(study, sampler, tier="validate")  # other hardware
    add_run(study, sampler, knobs_only=False)  # an edit as well
    add_run(study, sampler, knobs_only=None, kind="baseline")  # a measurement of the frontier
    add_run(study, sampler, state=TrialState.FAIL)  # says nothing of its knobs
    add_run(study, sampler, state=TrialState.WAITING)  # not run yet

    settings = sample(study, sampler)

    assert set(settings) == {"LR", "WIDTH"}
    assert noting.shown == [comparable, comparable]  # one list per knob sampled


def test_a_run_is_learned_from_once_it_launches_and_no_more_if_it_fails(tmp_path: Path) -> None:
    study = new_study(tmp_path, AgentSampler(KNOBS))
    ledger = Ledger(study, lambda: 0.0, lambda: None)
    for _ in range(2):
        study.enqueue_trial({"LR": 0.02}, user_attrs={"tier": "screen"})
    for t in ledger.waiting():
        assert ledger.claim(t)
        ledger.launch(t.number, {"run_key": str(t.number), "knobs_only": True, "parent": "A"})
    assert [t.number for t in ledger.knob_runs("screen", 10)] == [0, 1]
    assert ledger.knob_runs("validate", 10) == []

    ledger.complete(0, 1.0, {})
    ledger.fail(1, {"status": "crash"})

    assert [t.number for t in ledger.knob_runs("screen", 10)] == [0]


def test_the_inner_sampler_is_shown_the_latest_runs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sampler_module, "INNER_SAMPLER_HISTORY", 3)
    noting = NotingSampler()
    sampler = AgentSampler(KNOBS, inner=noting)
    study = new_study(tmp_path, sampler)
    runs = [add_run(study, sampler, lr=0.01 * (i + 1)) for i in range(5)]

    sample(study, sampler)

    assert noting.shown[0] == runs[-3:]


def test_a_knob_its_study_searched_with_a_choice_given_twice_is_drawn_from_each_choice_alike(
    tmp_path: Path,
) -> None:
    """A study that searched WIDTH from [16, 64, 64] (before the repeat was refused) holds trials to
    that list; resumed with [16, 64], each trial is recorded in the study's list, and 64 is drawn as
    often as 16, not twice as often."""
    searched = CategoricalDistribution([16, 64, 64])
    sampler = AgentSampler(
        [KNOBS[0], KnobSpec("WIDTH", "categorical", choices=(16, 64))], inner=RandomSampler(0)
    )
    study = new_study(tmp_path, sampler)
    study.add_trial(create_trial(value=1.0, params={"WIDTH": 64}, distributions={"WIDTH": searched}))
    sampler.follow(study)

    drawn = [sample(study, sampler)["WIDTH"] for _ in range(600)]

    assert {t.distributions["WIDTH"] for t in study.trials[1:]} == {searched}
    assert 0.45 < drawn.count(64) / len(drawn) < 0.55  # (two in three, from the list as searched)


def test_tpe_follows_the_runs_of_earlier_frontiers_on_its_tier(tmp_path: Path) -> None:
    """On the screen tier a high LR was best on frontiers A and B, the new frontier C has run no
    knob yet; on the validate tier a low one is best. Sampling for C on the screen tier follows
    A's and B's runs there: a history per frontier would start TPE afresh (at random) at each keep,
    and one over every tier would follow the validate tier's runs too."""
    sampler = AgentSampler(KNOBS, seed=0)
    study = new_study(tmp_path, sampler)
    levels = [0.001 * 1.35**i for i in range(20)]  # 0.001 to about 0.3, geometric
    for i, lr in enumerate(levels):
        add_run(study, sampler, lr=lr, value=1.0 - lr, parent="AB"[i % 2])  # the higher the better
        add_run(study, sampler, lr=lr, value=0.5 + lr, parent="C", tier="validate")  # the lower

    sampled = [sample(study, sampler)["LR"] for _ in range(5)]

    assert min(sampled) > 0.03, sampled


@pytest.mark.parametrize(
    ("candidate", "knobs_only"),
    [
        (Candidate("knob moves", knobs={"LR": 0.02, "WIDTH": None}), True),
        (Candidate("an undeclared constant", knobs={"LR": 0.02, "SECONDS": 0.3}), False),
        (Candidate("an edit", edits=[Edit("x = 1", "x = 2")], knobs={"LR": 0.02}), False),
    ],
)
def test_a_run_is_knobs_only_when_it_moves_declared_knobs_alone(
    candidate: Candidate, knobs_only: bool
) -> None:
    assert AgentSampler(KNOBS).knobs_only(candidate) is knobs_only


def seed_log_scale_lr(study: optuna.Study) -> None:
    """A run that searched LR on a log scale, as the study keeps it."""
    study.add_trial(
        create_trial(
            value=1.0, params={"LR": 0.01}, distributions={"LR": FloatDistribution(0.001, 0.5, log=True)}
        )
    )


def test_a_knob_changed_against_its_studys_record_is_refused_when_the_campaign_opens(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """The study remembers how a knob was searched, config.yaml only the last run's knobs (one
    that left LR out forgets it): a campaign declaring LR linear now is refused in one line."""
    (tmp_path / "toy").mkdir()
    seed_log_scale_lr(open_study(tmp_path / "toy", "toy", None))
    with pytest.raises(CampaignError) as refused:
        open_campaign(tmp_path, [], "campaign.knobs.LR.log=false")
    assert str(refused.value) == (
        f"campaign.knobs.LR: the study of {tmp_path / 'toy'} searched it as float on a log scale, this "
        "command says float, and its study cannot take a knob's kind, log scale or choices changed "
        "(bounds may change): keep them, leave the knob out of campaign.knobs, or choose a new campaign.name"
    )


def test_a_trial_optuna_refuses_fails_and_is_said_once(
    tmp_path: Path, open_campaign: Callable[..., Campaign], caplog: pytest.LogCaptureFixture
) -> None:
    """Should the study still refuse a knob (another writer recorded it otherwise after the
    campaign opened), each trial that asks for it fails, and the log says so once, with
    Optuna's reason, not once a trial."""
    campaign = open_campaign(tmp_path, [], "campaign.knobs.LR.log=false")
    seed_log_scale_lr(campaign.study)
    for baseline in campaign.ledger.waiting():  # out of the way: they set no knob
        assert campaign.ledger.claim(baseline)
    for n in range(3):
        campaign.intake.add(Candidate(f"LR free {n}", knobs={"LR": None}), {"kind": "experiment"})
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        campaign.launcher.launch()
    refused = "Cannot set different log configuration to the same parameter name."
    failed = [t for t in campaign.study.trials if t.user_attrs.get("status") == "invalid"]
    assert [t.user_attrs["reason"] for t in failed] == [refused] * 3
    assert [r.getMessage() for r in caplog.records if "invalid" in r.getMessage()] == [
        f"trial {failed[0].number}: invalid: {refused} (not logged again for later trials)"
    ]
