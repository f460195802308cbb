"""The usage ledger: one line per call, dollars from config prices, totals across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest
from anthropic.types import Usage

from autoresearch.agent.usage import UsageLedger, dollars_for, dollars_spent, usage_path, usage_totals
from autoresearch.config import AgentConfig

CFG = AgentConfig(price_input=2.0, price_output=10.0, price_cache_read=0.2, price_cache_write=2.5)


def usage(i: int, o: int, read: int | None = 0, write: int | None = 0) -> Usage:
    return Usage(
        input_tokens=i, output_tokens=o, cache_read_input_tokens=read, cache_creation_input_tokens=write
    )


def test_prices_per_million_tokens() -> None:
    tokens = {
        "input_tokens": 1_000_000,
        "output_tokens": 100_000,
        "cache_read_input_tokens": 2_000_000,
        "cache_creation_input_tokens": 400_000,
    }
    assert dollars_for(tokens, CFG) == pytest.approx(2.0 + 1.0 + 0.4 + 1.0)


def test_ledger_lines_and_totals(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path, CFG)
    first = ledger.record(model="m", usage=usage(1000, 500, 2000, 300), wave=1, turn=0)
    ledger.record(model="m", usage=usage(10, 5, None, None), wave=1, turn=1)  # absent cache fields
    ledger.record_error(model="m", wave=2, turn=0, error="OverloadedError: 529")
    assert set(first) >= {
        "time",
        "model",
        "wave",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "dollars",
    }
    assert first["dollars"] == pytest.approx((1000 * 2 + 500 * 10 + 2000 * 0.2 + 300 * 2.5) / 1e6)

    # A restarted controller appends to the same ledger; a torn last line is skipped.
    UsageLedger(tmp_path, CFG).record(model="m2", usage=usage(100, 100), wave=3, turn=0)
    with usage_path(tmp_path).open("a") as f:
        f.write('{"time": 1, "dollars": 99')
    lines = usage_path(tmp_path).read_text().splitlines()
    assert len(lines) == 5

    totals = usage_totals(tmp_path)
    assert totals["calls"] == 3 and totals["failed_calls"] == 1 and totals["waves"] == 3
    assert totals["input_tokens"] == 1110 and totals["cache_read_input_tokens"] == 2000
    assert totals["models"] == ["m", "m2"]
    assert dollars_spent(tmp_path) == pytest.approx(totals["dollars"])
    assert totals["dollars"] < 1  # the torn line's 99 dollars were not counted


def test_a_call_recorded_after_a_torn_line_is_counted(tmp_path: Path) -> None:
    """A controller killed mid-append leaves a line without its newline: the next controller's
    first call must not be glued onto it (and skipped with it)."""
    UsageLedger(tmp_path, CFG).record(model="m", usage=usage(1_000_000, 0), wave=1, turn=0)
    with usage_path(tmp_path).open("a") as f:
        f.write('{"time": 1, "model": "m", "wa')
    UsageLedger(tmp_path, CFG).record(model="m", usage=usage(1_000_000, 0), wave=2, turn=0)
    totals = usage_totals(tmp_path)
    assert totals["calls"] == 2 and totals["waves"] == 2
    assert totals["dollars"] == dollars_spent(tmp_path) == pytest.approx(4.0)


def test_a_line_edited_into_something_else_is_skipped(tmp_path: Path) -> None:
    """Lines that are JSON but not what the ledger writes (not an object, a null price, a count
    that is not a number) are skipped like a torn one: the budget and `status` add up the rest."""
    UsageLedger(tmp_path, CFG).record(model="m", usage=usage(1_000_000, 0), wave=1, turn=0)
    with usage_path(tmp_path).open("a") as f:
        f.write('[1]\n{"model": "m", "dollars": null}\n{"model": "m", "input_tokens": "9"}\n')
        f.write('{"model": "m", "dollars": NaN}\n{"model": "m", "dollars": true}\n')
    totals = usage_totals(tmp_path)
    assert totals["calls"] == 1 and totals["input_tokens"] == 1_000_000
    assert totals["dollars"] == dollars_spent(tmp_path) == pytest.approx(2.0)


def test_no_ledger_means_nothing_spent(tmp_path: Path) -> None:
    assert dollars_spent(tmp_path) == 0.0
    assert usage_totals(tmp_path)["calls"] == 0
