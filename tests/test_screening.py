"""Screening seed for seed: each frontier runs once at a screening seed of its own, and a change
built on it is screened with that seed, against that run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from engine_helpers import TOY, collect, queue_run, release, run_scripted, scripted_campaign, trial_named
from optuna.trial import TrialState

from autoresearch.campaign import Campaign
from autoresearch.intake import Intake, screening_seed
from autoresearch.policy import NoiseAwarePolicy, Pairs
from autoresearch.proposals import Candidate
from autoresearch.results import measurements, tier_noise
from autoresearch.workspace import source_version

WIDER = Candidate("wider", knobs={"WIDTH": 128})  # 0.02 better than the toy's start at every seed


def test_each_frontier_has_a_screening_seed_of_its_own() -> None:
    seeds = [screening_seed(generation) for generation in range(4)]
    assert seeds == [42, 1042, 2042, 3042]  # the start's is the seed changes were always screened with


def test_a_screening_run_beside_the_frontiers_run_at_its_seed_is_judged_by_their_difference() -> None:
    policy = NoiseAwarePolicy(min_delta=0.0005, promote_z=1.0)
    # The frontier ran 1.30 at the screening seed (a bad seed for every version), 1.20 and 1.21 at
    # others; a change runs 1.29 there. Against the mean, with seed noise 0.05: -0.0233, not the
    # 1 x 0.05 x sqrt(1 + 1/3) = 0.0577 asked for.
    frontier = [1.30, 1.20, 1.21]
    assert not policy.screen(1.29, frontier, 0.05).better
    # Beside the frontier's run at its seed: -0.0100, where such differences spread by 0.004
    # (over 10 dof, 1 standard deviation becomes t = 1.05).
    paired = policy.screen(1.29, frontier, 0.05, Pairs(noise=0.004, dof=10, frontier=(1.30,)))
    assert paired.better
    assert paired.reason == (
        "-0.0100 vs frontier 1.3000 on the same seed; needed < -0.0042 (1 x paired noise 0.0040; t at 10 dof: 1.05)"
    )
    # Where versions share little of a seed's luck, differences seed for seed spread more (0.08)
    # than a run does around the frontier's mean: the independent comparison is the sharper one.
    unshared = policy.screen(1.29, frontier, 0.05, Pairs(noise=0.08, dof=10, frontier=(1.30,)))
    assert not unshared.better and "(3 runs); needed < -0.0577 (1 x noise 0.0500)" in unshared.reason


def test_a_result_waits_for_its_frontiers_run_at_its_seed_and_for_no_other(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    campaign = open_campaign(tmp_path, [])
    ledger, decisions = campaign.ledger, campaign.decisions

    def queued(attrs: dict) -> int:
        return queue_run(campaign, tier="screen", description="a run", **attrs)

    def ran(number: int, val_bpb: float, seed: int) -> None:
        collect(campaign, number, val_bpb=val_bpb, seed=seed)

    campaign.intake.baselines("screen")
    for number, value in zip([t.number for t in ledger.waiting()], (1.20, 1.21, 1.22), strict=True):
        ran(number, value, ledger.trial(number).user_attrs["seed"])
    decisions.decide_pending()
    # A frontier's run at a screening seed of its own, queued; a result screened with 42, and one
    # screened with that seed.
    reference = queued({"kind": "validation", "validates": 0, "reference": True, "seed": 1042})
    old, new = queued({"kind": "experiment"}), queued({"kind": "experiment"})
    ran(old, 1.5, 42)
    ran(new, 1.5, 1042)
    decisions.decide_pending()
    assert ledger.trial(old).user_attrs["status"] == "discard"
    assert set(decisions.pending) == {new}  # waits for the run it is compared with
    ran(reference, 1.2, 1042)
    decisions.decide_pending()
    assert ledger.trial(new).user_attrs["status"] == "discard" and not decisions.pending


def noisy_toy(tmp_path: Path) -> str:
    """The toy trainer with seed noise 0.02 (40 times its own), drawn alike by every version at a
    seed, as the override that starts a campaign from it."""
    toy = (TOY / "train.py").read_text()
    noisy = toy.replace("gauss(0, 0.0005)", "gauss(0, 0.02)")
    assert noisy != toy
    path = tmp_path / "noisy_train.py"
    path.write_text(noisy)
    return f"campaign.train_py={path}"


def test_a_change_is_screened_against_the_new_frontiers_run_at_its_seed(tmp_path: Path) -> None:
    overrides = (noisy_toy(tmp_path), "campaign.validate_seeds=3", "campaign.budget.max_experiments=30")
    first = run_scripted(tmp_path, [Candidate("better", knobs={"BETTER_BY": 0.05})], *overrides)
    kept = trial_named(first, "better")
    assert kept.user_attrs["status"] == "keep", kept.user_attrs["reason"]
    assert kept.user_attrs["seed"] == 42
    # A change 0.01 better than the frontier, proposed by the next controller on the same campaign.
    second = run_scripted(tmp_path, [Candidate("better still", knobs={"BETTER_BY": 0.06})], *overrides)
    change = trial_named(second, "better still")
    [reference] = [
        t for t in second.ledger.queued_for("validates", kept.number) if t.user_attrs.get("reference")
    ]
    assert reference.state == TrialState.COMPLETE and reference.user_attrs["tier"] == "screen"
    assert change.user_attrs["seed"] == reference.user_attrs["seed"] == 1042
    assert change.user_attrs["promoted"] is True
    assert change.user_attrs["status"] == "keep", change.user_attrs["reason"]
    # The same screening run against the frontier's runs as independent ones: a seed noise of 0.02
    # hides a gain of 0.01, and it would not have been promoted.
    table = second.ledger.table()
    frontier = measurements(table, kept.user_attrs["run_key"], "screen")
    assert len(frontier) == 4  # its 3 re-runs and its run at the screening seed
    unpaired = second.decisions.policy.screen(
        change.user_attrs["val_bpb"], frontier, tier_noise(table, "screen")
    )
    assert not unpaired.better, unpaired.reason


def test_a_change_confirmed_on_hardware_of_its_own_measures_the_screen_tiers_paired_noise(
    tmp_path: Path,
) -> None:
    campaign = run_scripted(tmp_path, [WIDER], validate_apart=True)
    wider = trial_named(campaign, "wider")
    assert wider.user_attrs["status"] == "keep"
    assert wider.user_attrs["pairs"]["tier"] == "validate"  # confirmed there
    on_screen = [
        t for t in campaign.ledger.queued_for("validates", wider.number) if t.user_attrs["tier"] == "screen"
    ]
    measured = sorted(t.user_attrs["seed"] for t in on_screen if t.state == TrialState.COMPLETE)
    assert measured == [43, 44, 1042]  # at the baseline seeds, and at its screening seed
    # The last of them records the new frontier's differences with the baseline on the screen tier,
    # at the seeds both ran.
    [recorded] = [t for t in on_screen if "pairs" in t.user_attrs]
    assert recorded.user_attrs["pairs"]["tier"] == "screen"
    assert recorded.user_attrs["pairs"]["deltas"] == pytest.approx([-0.02, -0.02], abs=2e-6)


def test_a_frontier_kept_before_screening_seeds_gets_its_run_when_the_campaign_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Intake, "new_frontier", lambda self, trial, confirm_on: None)  # as before
    wider = trial_named(run_scripted(tmp_path, [WIDER]), "wider")
    assert wider.user_attrs["status"] == "keep"
    monkeypatch.undo()

    def references() -> list[tuple[int, int]]:
        resumed = scripted_campaign(tmp_path, [])
        resumed.open()
        release(resumed)  # a controller that resumes, then ends
        runs = resumed.ledger.queued_for("validates", wider.number)
        return [(t.user_attrs["seed"], t.state) for t in runs if t.user_attrs.get("reference")]

    assert references() == [(1042, TrialState.WAITING)]
    assert references() == [(1042, TrialState.WAITING)]  # queued once, however often it resumes


def test_a_change_that_keeps_the_models_shape_is_judged_by_the_noise_of_its_kind(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """Seed luck carries over where a change keeps the parameters' shapes (a learning rate: the
    differences seed for seed spread by 0.002 here) and far less where it changes them (0.05):
    each is screened by the paired noise of changes of its kind, not by the two pooled."""
    campaign = open_campaign(tmp_path, [])
    ledger, decisions, study = campaign.ledger, campaign.decisions, campaign.study
    head = campaign.frontier.head()
    start = source_version(campaign.frontier.source_at(head))

    def ran(number: int, val_bpb: float, seed: int, params: int, version: str = start) -> None:
        collect(campaign, number, val_bpb=val_bpb, parent=head, seed=seed, num_params=params, run_key=version)

    campaign.intake.baselines("screen")
    for t, value in zip(ledger.waiting(), (1.20, 1.24, 1.28), strict=True):
        ran(t.number, value, t.user_attrs["seed"], 4096)
    decisions.decide_pending()
    # Two changes confirmed before, one of each kind, as a resumed controller reads them.
    for deltas, same_shape in (([-0.010, -0.012, -0.008], True), ([0.0, -0.05, 0.05], False)):
        pairs = {"tier": "screen", "deltas": deltas, "noise": 0.0, "dof": 2, "same_shape": same_shape}
        attrs = {"kind": "experiment", "status": "discard", "pairs": pairs}
        study.add_trial(optuna.trial.create_trial(value=1.3, user_attrs=attrs))
    at_42 = next(t for t in ledger.all() if t.user_attrs.get("seed") == 42).user_attrs["val_bpb"]
    for description, params in (("a learning rate", 4096), ("a wider model", 16384)):
        number = queue_run(campaign, kind="experiment", tier="screen", description=description)
        ran(number, at_42 - 0.01, 42, params, version=description)
    decisions.decide_pending()
    knob, shape = (trial_named(campaign, name) for name in ("a learning rate", "a wider model"))
    assert knob.user_attrs.get("promoted") is True, knob.user_attrs["reason"]
    assert (
        "on the same seed" in knob.user_attrs["reason"] and "paired noise 0.0020" in knob.user_attrs["reason"]
    )
    assert shape.user_attrs["status"] == "discard" and "paired noise 0.0020" not in shape.user_attrs["reason"]


def test_a_confirmation_records_whether_the_change_kept_the_models_shape(tmp_path: Path) -> None:
    three = "campaign.validate_seeds=3"
    campaign = run_scripted(tmp_path, [Candidate("faster", knobs={"LR": 0.02}), WIDER], three)
    faster, wider = trial_named(campaign, "faster"), trial_named(campaign, "wider")
    assert faster.user_attrs["num_params"] == 64 * 64 and wider.user_attrs["num_params"] == 128 * 128
    assert faster.user_attrs["pairs"]["same_shape"] is True, faster.user_attrs["reason"]
    assert wider.user_attrs["pairs"]["same_shape"] is False, wider.user_attrs["reason"]
