"""Budgets reached: at their limit exactly, as the ledger's sums of dollars reach it."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from anthropic.types import Usage

from autoresearch.agent.usage import UsageLedger, dollars_spent, read_usage
from autoresearch.budget import exhausted, measure, spend
from autoresearch.config import AgentConfig, BudgetConfig
from autoresearch.files import write_json_atomic
from autoresearch.heartbeat import CONTROLLER_FILE, OLDER_VERSION_STOP, Heartbeat


def test_a_dollar_budget_spent_to_the_cent_is_reached(tmp_path: Path) -> None:
    """Two calls of $0.0525 and $0.1306, in the ledger as such, add up in floats to
    0.18309999999999998: a campaign with max_dollars=0.1831 went on spending past it."""
    cfg = AgentConfig(price_input=2.0)
    ledger = UsageLedger(tmp_path, cfg)
    for n, tokens in enumerate((26_250, 65_300)):  # $0.0525 and $0.1306 at $2 per million
        ledger.record(
            model="m", usage=Usage(input_tokens=tokens, output_tokens=0), wave=1, turn=n, call=str(n)
        )
    assert [r["dollars"] for r in read_usage(tmp_path)] == [0.0525, 0.1306]
    assert dollars_spent(tmp_path) < 0.1831  # (in floats)
    spent = spend(0, {}, {}, tmp_path, 0.0)
    assert exhausted(spent, BudgetConfig(max_dollars=0.1831)) == "dollars budget reached (0.1831 of 0.1831)"
    assert exhausted(spent, BudgetConfig(max_dollars=0.1832)) is None


@pytest.mark.parametrize("carried", [False, True], ids=["its own record", "a failed start's since"])
def test_status_counts_an_older_versions_wall_time_up_to_its_last_stop_as_a_resume_does(
    tmp_path: Path, carried: bool
) -> None:
    """A campaign an older version ran 10 minutes and stopped 2 hours ago resumes with 10 minutes
    counted on its wall budget, up to that version's last stop (also where a later start failed
    before counting, carrying that stop): `status`, asked before the resume, said 2.2 hours, the
    time stopped since counted as well, and a user read a budget nearly spent that was not."""
    started = 1_000_000.0
    stop = started + 600
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.set_user_attr("started_at", started)
    record = {"state": "stopped", "started_at": started, "seen_at": stop}  # (no ran_before)
    if carried:
        record.update({OLDER_VERSION_STOP: stop, "started_at": stop + 3600, "seen_at": stop + 3600})
    write_json_atomic(tmp_path / CONTROLLER_FILE, record)
    assert measure(study, {}, tmp_path, stop + 7200).wall_hours == pytest.approx(600 / 3600)


def test_status_does_not_count_an_upgraded_campaigns_data_step_before_its_first_count(tmp_path: Path) -> None:
    """A campaign a version before controller.json ran 10 minutes, resumed by this one, which
    prepares the data before it counts: `status` took the resuming controller's own beats for the
    older version's last stop, and counted the hours stopped and the data step as running time.
    It counts up to the study's last stamp, as the resume will."""
    started = time.time() - 3 * 3600
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.set_user_attr("started_at", started)
    ran = {"exp_dir": "experiments/00000", "pool": "local", "started_at": started, "ended_at": started + 600}
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs=ran))
    beat = Heartbeat(tmp_path, every=3600)
    beat.start()  # (no controller.json before it: the data step, before `count_from`)
    try:
        assert measure(study, {}, tmp_path, time.time()).wall_hours == pytest.approx(600 / 3600)
    finally:
        beat.stop("test over")
    assert measure(study, {}, tmp_path, time.time()).wall_hours == pytest.approx(600 / 3600)
