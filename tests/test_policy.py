"""The noise-aware keep rule: its arithmetic, and the campaign confirming promoted changes."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import (
    collect,
    confirming,
    killed_and_resumed,
    launched_within_budget,
    queue_run,
    run_scripted,
    trial_named,
)
from optuna.trial import FrozenTrial, TrialState

from autoresearch.campaign import Campaign
from autoresearch.fleet.base import Finished
from autoresearch.intake import Intake
from autoresearch.policy import NoiseAwarePolicy, Pairs, pooled_noise, t_quantile
from autoresearch.proposals import Candidate
from autoresearch.results import frontier_runs, frontier_value, measurements, tier_noise


def test_pooled_noise_weighs_each_group_by_its_degrees_of_freedom() -> None:
    assert pooled_noise([[1.0], [2.0]]) is None  # no version measured twice: no estimate
    # Variances 1 (1 dof) and 4/3 (3 dof): pooled (1 + 4) / 4.
    assert pooled_noise([[0.0, 1.4142135623730951], [1.0, 3.0, 1.0, 3.0], [9.0]]) == pytest.approx(5**0.5 / 2)


def test_one_lucky_run_is_promoted_but_only_a_mean_beyond_the_noise_is_kept() -> None:
    policy = NoiseAwarePolicy(min_delta=0.001, promote_z=1.0, keep_z=2.0)
    frontier = [1.000, 1.002]
    # Without a noise estimate, min_delta decides.
    assert policy.screen(0.9999, frontier, None).better  # -0.0011
    assert not policy.screen(1.0001, frontier, None).better  # -0.0009
    # With noise 0.002: one run must beat the mean by 0.002 * sqrt(1 + 1/2) = 0.00245.
    assert policy.screen(1.001 - 0.0025, frontier, 0.002).better
    assert not policy.screen(1.001 - 0.0024, frontier, 0.002).better
    # Confirmation: two runs against two, 2 standard errors of 0.002 * sqrt(1/2 + 1/2) = 0.004.
    verdict = policy.confirm([0.9965, 0.9975], frontier, 0.002)
    assert not verdict.better and "needed < -0.0040 (2 x noise 0.0020)" in verdict.reason
    assert policy.confirm([0.996, 0.9959], frontier, 0.002).better
    # More runs, smaller error: the same mean that failed with two passes with eight.
    assert policy.confirm([0.9965, 0.9975] * 4, [1.000, 1.002] * 4, 0.002).better


def test_a_verdict_shows_the_decimals_that_decide_it() -> None:
    policy = NoiseAwarePolicy(min_delta=0.01)
    close = policy.screen(1.98996, [2.0], None)  # -0.01004: a promotion, by 0.00004
    assert (
        close.better and "-0.01004 vs frontier 2.0000 (1 runs); needed < -0.01000 (min_delta)" in close.reason
    )
    assert "-0.0200 vs" in policy.screen(1.98, [2.0], None).reason  # 4 decimals where they suffice


def test_runs_paired_by_seed_are_judged_by_the_noise_of_their_differences() -> None:
    policy = NoiseAwarePolicy(min_delta=0.0001, keep_z=2.0)
    runs, frontier = [0.9990, 1.0010, 0.9980, 1.0000], [1.0000, 1.0020, 0.9990, 1.0010]  # -0.001 at each seed

    def pairs(noise: float, dof: int) -> Pairs:
        return Pairs(noise, dof, frontier=tuple(frontier))

    # Independent runs with seed noise 0.001: 2 x 0.001 x sqrt(1/4 + 1/4) = 0.0014, not met.
    assert not policy.confirm(runs, frontier, 0.001).better
    # The same seeds, their difference's noise 0.0004 measured over 20 dof: 2 becomes t = 2.13, and
    # 2.13 x 0.0004 / sqrt(4) = 0.00043 is met.
    paired = policy.confirm(runs, frontier, 0.001, pairs(0.0004, dof=20))
    assert paired.better
    assert paired.reason == (
        "-0.0010 (mean 0.9995 over 4 runs) vs frontier 1.0005 on the same seeds; "
        "needed < -0.0004 (2 x paired noise 0.0004; t at 20 dof: 2.13)"
    )
    # Over 2 dof the same estimate asks for t = 4.37 standard errors: 0.00087, still met; over one,
    # too few to trust, the runs are judged as independent ones: no easier than without pairs.
    assert "t at 2 dof: 4.37" in policy.confirm(runs, frontier, 0.001, pairs(0.0004, dof=2)).reason
    unmeasured = policy.confirm(runs, frontier, 0.001, pairs(0.0004, dof=1))
    assert not unmeasured.better and unmeasured.reason.endswith(
        "(4 runs); needed < -0.0014 (2 x noise 0.0010)"
    )
    # Versions that share little of a seed's luck differ by more seed for seed (0.003 here) than
    # independent runs do: 2.13 x 0.003 / 2 = 0.0032 would ask for more than 0.0014, so the runs
    # are judged as independent ones.
    unshared = policy.confirm(runs, frontier, 0.001, pairs(0.003, dof=20))
    assert unshared.reason.endswith("(4 runs); needed < -0.0014 (2 x noise 0.0010)")
    # Nor where the pairs would ask for only a little less, 2.13 x 0.0012 / 2 = 0.00128: more than
    # three quarters of 0.0014 (PAIRED_EDGE), too close to trust either estimate to tell.
    assert "(4 runs)" in policy.confirm(runs, frontier, 0.001, pairs(0.0012, dof=20)).reason


def test_t_quantiles_match_the_table_from_two_degrees_of_freedom() -> None:
    z975 = 1.959964  # the normal quantile at 0.975
    for dof, exact in ((2, 4.303), (3, 3.182), (5, 2.571), (10, 2.228), (30, 2.042)):
        assert t_quantile(z975, dof) == pytest.approx(exact, rel=0.04)
    assert t_quantile(z975, 1000) == pytest.approx(1.9623, abs=1e-4)  # many dof: near the normal quantile


def test_a_small_real_gain_is_kept_on_the_seeds_its_frontier_ran(tmp_path: Path) -> None:
    # The toy's seed noise is the same for every version at a seed: compared seed for seed, a gain
    # of 0.0007 stands out. Against the frontier's runs as independent ones (seed noise 0.00053
    # from the four baselines) it would need 2 x 0.00053 x sqrt(1/3 + 1/4) = 0.00081.
    campaign = run_scripted(
        tmp_path, [Candidate("slightly better", knobs={"BETTER_BY": 0.0007})], "campaign.validate_seeds=3"
    )
    trial = trial_named(campaign, "slightly better")
    reruns = confirming(campaign.study.trials, trial.number)
    baselines = [t for t in campaign.study.trials if t.user_attrs.get("kind") == "baseline"]
    assert sorted(t.user_attrs["seed"] for t in reruns) == [43, 44, 45]
    # 3 baselines, for 3 re-runs, and one at the screening seed
    assert sorted(t.user_attrs["seed"] for t in baselines) == [42, 43, 44, 45]
    assert trial.user_attrs["status"] == "keep", trial.user_attrs["reason"]
    assert "on the same seeds; needed < -0.0005 (min_delta)" in trial.user_attrs["reason"]
    assert trial.user_attrs["pairs"]["tier"] == "screen"
    assert trial.user_attrs["pairs"]["deltas"] == pytest.approx(
        [-0.0007] * 3, abs=2e-6
    )  # printed to 6 places
    noise = campaign.decisions.judged()["screen"][1]
    unpaired = campaign.decisions.policy.confirm(
        [float(t.value) for t in reruns], [float(t.value) for t in baselines], noise
    )
    assert not unpaired.better, unpaired.reason


def test_the_paired_noise_pools_the_changes_confirmed_before_a_restart(tmp_path: Path) -> None:
    three = "campaign.validate_seeds=3"
    first = run_scripted(tmp_path, [Candidate("better", knobs={"BETTER_BY": 0.0009})], three)
    second = run_scripted(tmp_path, [Candidate("better still", knobs={"BETTER_BY": 0.0018})], three)
    before, after = trial_named(first, "better"), trial_named(second, "better still")
    assert before.user_attrs["status"] == after.user_attrs["status"] == "keep"
    assert before.user_attrs["pairs"]["dof"] == 2  # its own three differences
    assert after.user_attrs["pairs"]["dof"] == 4  # and those of the change the first controller kept
    assert after.user_attrs["parent"] == before.user_attrs["commit"]  # compared with its re-runs


def row(version: str, status: str, val_bpb: float, tier: str = "screen") -> dict:
    return {"version": version, "status": status, "val_bpb": val_bpb, "tier": tier, "trial": 0}


def test_the_frontier_is_the_mean_of_its_unselected_runs_on_each_tier() -> None:
    table = [
        row("a", "baseline", 1.00),
        row("a", "baseline", 1.02),
        row("a", "baseline", 1.10, tier="validate"),
        row("a", "baseline", 1.12, tier="validate"),
        row("b", "discard", 0.99),
        row("c", "keep", 0.95),  # picked for being low: stands in only until it is re-run
    ]
    assert frontier_runs(table, "screen") == [0.95]
    assert frontier_runs(table, "validate") == [1.10, 1.12]  # c not measured there yet
    table += [row("c", "rerun", 0.97, "validate"), row("c", "rerun", 0.99, "validate")]
    assert frontier_runs(table, "validate") == [0.97, 0.99]
    table += [row("c", "rerun", 0.96), row("c", "rerun", 0.98)]
    assert measurements(table, "c", "screen") == [0.96, 0.98]
    assert frontier_value(table, "screen") == pytest.approx((1.01, 0.97))
    # Noise pools the repeats of a and c on a tier; the selected and single runs say nothing of it.
    assert tier_noise(table, "screen") == pytest.approx(pooled_noise([[1.00, 1.02], [0.96, 0.98]]))
    assert tier_noise(table, "validate") == pytest.approx(pooled_noise([[1.10, 1.12], [0.97, 0.99]]))


def test_a_change_that_only_its_screening_seed_likes_is_not_kept(tmp_path: Path) -> None:
    lucky = Candidate("lucky", knobs={"LUCKY": True})
    wider = Candidate("wider", knobs={"WIDTH": 128})
    campaign = run_scripted(tmp_path, [lucky, wider], "campaign.budget.max_experiments=50")
    done = {t.user_attrs["description"]: t for t in campaign.study.trials if t.state == TrialState.COMPLETE}
    for name in ("lucky", "wider"):
        t = done[name]
        assert t.user_attrs["promoted"] is True  # both beat the frontier on their one run
        reruns = confirming(campaign.study.trials, t.number)
        assert [r.user_attrs["status"] for r in reruns] == ["rerun", "rerun"]
        assert all(r.user_attrs["run_key"] == t.user_attrs["run_key"] for r in reruns)  # the same train.py
        assert sorted(r.user_attrs["seed"] for r in reruns) == [43, 44]  # not the screening seed
    assert done["lucky"].user_attrs["status"] == "discard"
    assert done["lucky"].user_attrs["reason"].startswith("not confirmed: ")
    assert done["wider"].user_attrs["status"] == "keep"
    assert done["wider"].user_attrs["reason"].startswith("confirmed: ")
    log = subprocess.run(
        ["git", "log", "--format=%s"],
        cwd=campaign.dir / "frontier",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert log == [f"trial {done['wider'].number}: wider", "baseline"]


def test_re_runs_go_ahead_of_queued_proposals_and_still_run_when_the_budget_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three slots: the 3 baselines, then the change and two of the other proposals. The change is
    # held until the baselines are in (so it is judged when it ends), the two others until the
    # change's re-runs are queued (so they still hold their slots then, and the re-runs queue
    # ahead of the third).
    baselines_in, change_held, others_held = [], tmp_path / "wider.hold", tmp_path / "others.hold"
    change_held.touch()
    others_held.touch()
    finish, queue = Campaign._finish, Intake.add

    def finish_then_release(self: Campaign, done: Finished) -> None:
        if self.ledger.trial(done.trial).user_attrs.get("kind") == "baseline":
            baselines_in.append(done.trial)
        finish(self, done)
        if len(baselines_in) == 3:
            change_held.unlink(missing_ok=True)

    def queue_then_release(self: Intake, cand: Candidate, attrs: dict) -> None:
        queue(self, cand, attrs)
        if attrs.get("kind") == "validation":
            others_held.unlink(missing_ok=True)

    monkeypatch.setattr(Campaign, "_finish", finish_then_release)
    monkeypatch.setattr(Intake, "add", queue_then_release)
    wider = Candidate("wider", knobs={"WIDTH": 128, "HOLD": str(change_held)})
    slow = [Candidate(f"lr {lr}", knobs={"LR": lr, "HOLD": str(others_held)}) for lr in (0.002, 0.003, 0.004)]
    campaign = run_scripted(
        tmp_path, [wider, *slow], "campaign.budget.max_experiments=7", "cluster.cpu_slots=3"
    )
    trials = campaign.study.trials
    promoted = next(t for t in trials if t.user_attrs.get("description") == "wider")
    runs = [t for t in trials if t.user_attrs.get("validates") == promoted.number]
    reruns = confirming(trials, promoted.number)
    assert all(
        r.number > t.number for r in reruns for t in trials if t.user_attrs.get("kind") == "experiment"
    )
    # The first re-run went before "lr 0.004", queued earlier, and the second one ran after the
    # budget of 7 had ended the queue ("lr 0.004" never ran).
    launched = launched_within_budget(campaign.study, 7)
    rerun = f"re-run trial {promoted.number}: wider"
    assert [t.user_attrs["description"] for t in launched] == ["baseline"] * 3 + [
        "wider",
        "lr 0.002",
        "lr 0.003",
    ] + [rerun] * 2
    assert all(t.state == TrialState.COMPLETE for t in reruns) and len(reruns) == 2
    assert promoted.user_attrs["status"] == "keep"
    # The new frontier's run at its screening seed is queued, and left: no change is left to screen.
    assert [(t.user_attrs["seed"], t.state) for t in runs if t.user_attrs.get("reference")] == [
        (1042, TrialState.WAITING)
    ]
    assert not [t for t in trials if t.state == TrialState.RUNNING]


WIDER = Candidate("wider", knobs={"WIDTH": 128})


def queues_a_re_run(cand: Candidate, attrs: dict) -> bool:
    return attrs.get("kind") == "validation"


def wider_killed_and_resumed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dies_at: Callable[[Candidate, dict], bool],
    **options: Any,
) -> tuple[FrozenTrial, list[FrozenTrial]]:
    """`killed_and_resumed` on the one change "wider": its trial, and the re-runs queued for it."""
    campaign = killed_and_resumed(tmp_path, monkeypatch, [WIDER], dies_at, **options)
    wider = trial_named(campaign, "wider")
    return wider, campaign.ledger.queued_for("validates", wider.number)


def test_a_controller_killed_while_queueing_re_runs_queues_the_rest_when_it_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wider, reruns = wider_killed_and_resumed(tmp_path, monkeypatch, queues_a_re_run)
    # one queued before, one after; and, once it is kept, the new frontier's run for screening
    assert sorted(r.user_attrs["seed"] for r in reruns) == [43, 44, 1042]
    assert all(r.state == TrialState.COMPLETE for r in reruns)
    assert wider.user_attrs["status"] == "keep"


def test_a_controller_killed_at_a_keep_still_measures_the_new_frontier_on_the_screen_tier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Validated on hardware of its own: a keep is then measured again on the screen tier.
    wider, reruns = wider_killed_and_resumed(
        tmp_path,
        monkeypatch,
        lambda cand, attrs: queues_a_re_run(cand, attrs) and cand.tier == "screen",
        validate_apart=True,
    )
    assert wider.user_attrs["status"] == "keep"
    assert sorted((r.user_attrs["tier"], r.user_attrs["seed"]) for r in reruns) == [
        ("screen", 43),
        ("screen", 44),
        ("screen", 1042),
        ("validate", 43),
        ("validate", 44),
    ]
    assert all(r.state == TrialState.COMPLETE for r in reruns)


def test_a_change_promoted_before_a_resume_that_confirms_nothing_is_decided_on_its_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wider, reruns = wider_killed_and_resumed(
        tmp_path, monkeypatch, queues_a_re_run, before=True, resumed_with=("campaign.validate_seeds=0",)
    )
    assert wider.user_attrs["promoted"] is True
    assert wider.user_attrs["status"] == "keep" and wider.user_attrs["reason"].startswith("promoted: ")
    # No confirming re-runs: only those that measure the new frontier, as after any keep on one run.
    assert reruns and all(t.user_attrs["description"].endswith(": the new frontier") for t in reruns)


def test_a_result_is_decided_once_every_baseline_of_its_tier_is_in_a_retried_one_too(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    campaign = open_campaign(tmp_path, [], validate_apart=True)
    ledger, decisions = campaign.ledger, campaign.decisions
    campaign.intake.baselines("validate")
    baselines = {
        tier: [t.number for t in ledger.waiting() if t.user_attrs["tier"] == tier]
        for tier in ("screen", "validate")
    }
    assert [len(b) for b in baselines.values()] == [3, 2]  # the screen tier's at the screening seed too

    def queued(tier: str) -> int:
        return queue_run(campaign, kind="experiment", tier=tier, description=tier)

    def ran(number: int, val_bpb: float) -> None:
        collect(campaign, number, val_bpb=val_bpb)

    def status(number: int) -> str | None:
        return ledger.trial(number).user_attrs.get("status")

    on_screen, on_validate = queued("screen"), queued("validate")
    ran(on_screen, 1.5)
    ran(on_validate, 1.5)
    decisions.decide_pending()
    assert set(decisions.pending) == {on_screen, on_validate}  # no baseline is in

    for number in baselines["screen"]:
        ran(number, 1.2)
    decisions.decide_pending()
    assert status(on_screen) == "discard" and set(decisions.pending) == {on_validate}

    first, lost = baselines["validate"]
    ran(first, 1.1)
    assert ledger.claim(ledger.trial(lost))
    ledger.fail(lost, {"status": "lost"})
    campaign.intake.retry(ledger.trial(lost))  # queued after the first passes
    [retry] = ledger.queued_for("retry_of", lost)
    decisions.decide_pending()
    assert status(on_validate) is None and set(decisions.pending) == {on_validate}  # awaits the retry

    ran(retry.number, 1.1)
    decisions.decide_pending()
    assert status(on_validate) == "discard" and not decisions.pending


def test_a_promoted_change_waits_for_the_baselines_of_the_tier_it_is_confirmed_on(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """Its re-runs on the validate tier can land before any baseline there (one preempted and its
    retry queued behind them): it is held until they are in, and discarded if none succeeded."""
    campaign = open_campaign(tmp_path, [], validate_apart=True)
    ledger, decisions = campaign.ledger, campaign.decisions

    def ran(number: int, val_bpb: float) -> None:
        collect(campaign, number, val_bpb=val_bpb, seed=ledger.trial(number).user_attrs.get("seed", 42))

    on_validate = [t.number for t in ledger.waiting() if t.user_attrs["tier"] == "validate"]
    for t, value in zip(ledger.waiting()[:3], (1.20, 1.21, 1.22), strict=True):
        assert t.user_attrs["tier"] == "screen"
        ran(t.number, value)
    decisions.decide_pending()
    change = queue_run(campaign, kind="experiment", tier="screen", description="x")
    ran(change, 1.0)
    decisions.decide_pending()
    assert ledger.trial(change).user_attrs["promoted"] is True
    reruns = [t.number for t in ledger.queued_for("validates", change)]
    assert {ledger.trial(n).user_attrs["tier"] for n in reruns} == {"validate"}
    for number in reruns:
        ran(number, 0.99)
    decisions.decide_pending()
    assert change in decisions.pending  # held: the validate tier's baselines are still to run
    for number in on_validate:  # lost for good: nothing on that tier to compare the re-runs with
        assert ledger.claim(ledger.trial(number))
        ledger.fail(number, {"status": "lost"})
    decisions.decide_pending()
    attrs = ledger.trial(change).user_attrs
    assert attrs["status"] == "discard"
    assert attrs["reason"] == "not confirmed: no baseline on the validate tier"


def test_a_baseline_that_lands_is_logged_with_its_result(
    tmp_path: Path, open_campaign: Callable[..., Campaign], caplog: pytest.LogCaptureFixture
) -> None:
    """Baselines get no verdict: without a line of their own, a campaign's first minutes said nothing."""
    campaign = open_campaign(tmp_path, [])
    campaign.intake.baselines("screen")
    first = campaign.ledger.waiting()[0]
    collect(campaign, first.number, val_bpb=1.2)
    caplog.set_level("INFO", logger="autoresearch")
    campaign.decisions.decide_pending()
    seed = first.user_attrs["seed"]
    assert f"trial {first.number}: baseline 1.200000 (screen tier, seed {seed})" in caplog.messages
