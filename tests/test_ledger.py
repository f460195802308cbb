"""The ledger's queue: which waiting trials still run once a budget stops new experiments."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import optuna
import pytest

from autoresearch.budget import PRICE_ATTR
from autoresearch.campaign import Campaign
from autoresearch.fleet.base import Finished
from autoresearch.ledger import Ledger
from autoresearch.proposals import Candidate
from autoresearch.runner import STARTED_FILE


def test_an_experiment_lost_to_the_cluster_still_runs_once_the_budget_stops_new_ones(
    tmp_path, open_campaign: Callable[..., Campaign]
) -> None:
    """Its first launch counted against max_experiments and measured nothing: left queued, the
    change it carries would never be measured."""
    campaign = open_campaign(tmp_path, [])
    ledger = campaign.ledger
    for baseline in ledger.waiting():  # running: out of the queue
        assert ledger.claim(baseline)
    campaign.intake.add(Candidate("LR up", knobs={"LR": 0.02}), {"kind": "experiment"})
    campaign.intake.add(Candidate("WIDTH up", knobs={"WIDTH": 96}), {"kind": "experiment"})
    lost, fresh = ledger.waiting()
    assert ledger.claim(lost)
    exp_dir = tmp_path / "toy" / "experiments" / f"{lost.number:05d}"
    exp_dir.mkdir(parents=True)
    (exp_dir / STARTED_FILE).write_text(json.dumps({"started_at": 1000.0}))
    ledger.set(lost.number, {"pool": "local", "exp_dir": str(exp_dir.relative_to(campaign.dir))})

    campaign._finish(Finished(lost.number, {"status": "lost", "reason": "NODE_FAIL"}))

    (retry,) = ledger.queued_for("retry_of", lost.number)
    assert [t.number for t in ledger.owed()] == [retry.number]  # not the new proposal
    assert [t.number for t in ledger.queue()] == [fresh.number, retry.number]


def test_a_run_awaiting_its_decision_counts_its_hours_once_when_it_ends(tmp_path) -> None:
    """A promoted change's run ended, its trial left running for its re-runs: its hours went to the
    GPU-hours budget only at its decision, as the report and status counted them. They count when
    the run ends now, and its decision counts them no second time."""
    study = optuna.create_study(study_name="awaiting")
    run = {"pool": "local", "exp_dir": "experiments/00000", PRICE_ATTR: 1.0, "started_at": 1000.0}
    study.enqueue_trial({}, user_attrs=run)
    number = study.ask().number
    ledger = Ledger(study, time.time, lambda: None)
    assert ledger.rated_hours == {}

    ledger.set(number, {"ended_at": 1000.0 + 1800, "promoted": True})  # (the run's result, undecided)
    assert ledger.rated_hours == {("local", 1.0): pytest.approx(0.5)}
    ledger.complete(number, 2.0, {"status": "keep"})
    assert ledger.rated_hours == {("local", 1.0): pytest.approx(0.5)}
