"""The ledger's queue: which waiting trials still run once a budget stops new experiments."""

from __future__ import annotations

import json
from collections.abc import Callable

from autoresearch.campaign import Campaign
from autoresearch.fleet.base import Finished
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
