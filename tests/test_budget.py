"""Budgets reached: at their limit exactly, as the ledger's sums of dollars reach it."""

from __future__ import annotations

from pathlib import Path

from anthropic.types import Usage

from autoresearch.agent.usage import UsageLedger, dollars_spent, read_usage
from autoresearch.budget import exhausted, spend
from autoresearch.config import AgentConfig, BudgetConfig


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
