"""The usage ledger: one line per call, dollars from config prices, totals across restarts."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from anthropic.types import Usage

from autoresearch.agent import usage as usage_module
from autoresearch.agent.usage import (
    TOKEN_FIELDS,
    UsageLedger,
    dollars_for,
    dollars_spent,
    read_usage,
    unanswered_note,
    usage_path,
    usage_totals,
)
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
    first = ledger.record(model="m", call="c1", usage=usage(1000, 500, 2000, 300), wave=1, turn=0)
    ledger.record(model="m", call="c2", usage=usage(10, 5, None, None), wave=1, turn=1)  # absent cache fields
    ledger.record_error(model="m", call="c3", wave=2, turn=0, error="OverloadedError: 529")
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
    UsageLedger(tmp_path, CFG).record(model="m2", call="c4", usage=usage(100, 100), wave=3, turn=0)
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
    UsageLedger(tmp_path, CFG).record(model="m", call="c5", usage=usage(1_000_000, 0), wave=1, turn=0)
    with usage_path(tmp_path).open("a") as f:
        f.write('{"time": 1, "model": "m", "wa')
    UsageLedger(tmp_path, CFG).record(model="m", call="c6", usage=usage(1_000_000, 0), wave=2, turn=0)
    totals = usage_totals(tmp_path)
    assert totals["calls"] == 2 and totals["waves"] == 2
    assert totals["dollars"] == dollars_spent(tmp_path) == pytest.approx(4.0)


def test_a_whole_last_line_without_its_newline_is_kept_and_a_torn_one_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ledger edited by hand whose editor left no newline at its end was read as torn: its last
    call went uncounted, and the next call's line cut it off for good, its spend lost. A whole
    record is kept (ended with a newline before the next); a torn one alone is dropped, said once."""
    UsageLedger(tmp_path, CFG).record(model="m", call="c1", usage=usage(1_000_000, 0), wave=1, turn=0)
    path = usage_path(tmp_path)
    path.write_text(path.read_text().rstrip("\n"))  # (as an editor saves it)
    assert dollars_spent(tmp_path) == pytest.approx(2.0) and usage_totals(tmp_path)["calls"] == 1
    caplog.set_level(logging.WARNING, logger="autoresearch.agent")

    UsageLedger(tmp_path, CFG).record(model="m", call="c2", usage=usage(1_000_000, 0), wave=2, turn=0)
    assert [json.loads(line)["call"] for line in path.read_text().splitlines()] == ["c1", "c2"]
    assert usage_totals(tmp_path)["dollars"] == dollars_spent(tmp_path) == pytest.approx(4.0)
    assert not caplog.records

    torn = '{"time": 1, "model": "m", "call": "c3", "dollars": 9'  # (a kill mid-line)
    with path.open("a") as f:
        f.write(torn)
    ledger = UsageLedger(tmp_path, CFG)
    ledger.record(model="m", call="c4", usage=usage(1_000_000, 0), wave=3, turn=0)
    ledger.record(model="m", call="c5", usage=usage(1_000_000, 0), wave=4, turn=0)
    assert [json.loads(line)["call"] for line in path.read_text().splitlines()] == ["c1", "c2", "c4", "c5"]
    assert dollars_spent(tmp_path) == pytest.approx(8.0)
    [said] = [r.getMessage() for r in caplog.records]
    assert said.startswith(f"{path}: dropped its last {len(torn)} bytes, a line cut short")


def test_a_line_edited_into_something_else_is_skipped(tmp_path: Path) -> None:
    """Lines that are JSON but not what the ledger writes (not an object, a null price, a count
    that is not a number, a call id that is not a string, a wave or turn that is not a whole
    number: status and the report ended in a TypeError on a wave [2]) are skipped like a torn one: the budget
    and `status` add up the rest."""
    UsageLedger(tmp_path, CFG).record(model="m", call="c7", usage=usage(1_000_000, 0), wave=1, turn=0)
    with usage_path(tmp_path).open("a") as f:
        f.write('[1]\n{"model": "m", "dollars": null}\n{"model": "m", "input_tokens": "9"}\n')
        f.write('{"model": "m", "dollars": NaN}\n{"model": "m", "dollars": true}\n')
        f.write('{"model": "m", "call": ["c7"], "in_flight": true, "dollars": 1.0}\n')  # (unhashable)
        f.write('{"model": "m", "call": {"id": "c8"}, "dollars": 1.0}\n')
        f.write('{"model": "m", "wave": [2], "dollars": 1.0}\n')  # (unhashable: status counts waves)
        f.write('{"model": "m", "wave": 2, "turn": "1", "dollars": 1.0}\n')
    totals = usage_totals(tmp_path)
    assert totals["calls"] == 1 and totals["input_tokens"] == 1_000_000
    assert totals["dollars"] == dollars_spent(tmp_path) == pytest.approx(2.0)


def test_no_ledger_means_nothing_spent(tmp_path: Path) -> None:
    assert dollars_spent(tmp_path) == 0.0
    assert usage_totals(tmp_path)["calls"] == 0


# A proposer asking its first call of a wave from an API that takes the request and never answers.
ASKING_FOREVER = """
import sys, threading
from engine_helpers import CountingOffline
from autoresearch.agent.claude import ClaudeProposer
from autoresearch.agent.fakeapi import ScriptedAPI, sample_context
from autoresearch.config import AgentConfig

def take_and_hold(body):
    print("asked", flush=True)
    threading.Event().wait()

api = ScriptedAPI([take_and_hold], models=["claude-test-1"])
cfg = AgentConfig(
    kind="claude", model="claude-test-1", price_input=2.0, price_output=10.0, price_cache_write=2.5,
    max_tokens=5000,
)
ClaudeProposer(cfg, sys.argv[1], CountingOffline(), client=api.client(max_retries=0)).propose(sample_context())
"""


def test_a_call_cut_off_by_a_kill_is_counted_at_its_max(tmp_path: Path) -> None:
    """A controller killed (SIGKILL, a preemption) while the API works on a call may still be billed
    for it: the call stays in the budget and the report, at its worst case, and says so. The
    request carries cache breakpoints, so the API may bill its input as cache writes, which cost
    more than plain input: the worst case counts the estimate at that price."""
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    asking = subprocess.Popen(
        [sys.executable, "-c", ASKING_FOREVER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert asking.stdout is not None and asking.stdout.readline() == "asked\n"
    finally:
        asking.kill()
        asking.wait()

    [row] = read_usage(tmp_path)
    assert row["in_flight"] and row["output_tokens"] == 5000 and row["wave"] == 1
    estimate = row["cache_creation_input_tokens"]
    assert estimate > 1000 and row["input_tokens"] == 0  # the system prompt alone is longer
    worst = (estimate * 2.5 + 5000 * 10.0) / 1e6
    assert dollars_spent(tmp_path) == pytest.approx(worst)
    totals = usage_totals(tmp_path)
    assert (totals["calls"], totals["failed_calls"], totals["unanswered_calls"]) == (0, 0, 1)
    assert unanswered_note(totals) == ", 1 call cut off by a stop (or still in flight), counted at its max"

    # The next controller's call, answered, counts as billed; the cut-off one stays at its max.
    ledger = UsageLedger(tmp_path, AgentConfig(price_input=2.0, price_output=10.0))
    call = ledger.start(model="m", wave=2, turn=0, input_tokens=9000)
    ledger.record(model="m", call=call, usage=usage(1000, 200), wave=2, turn=0)
    lines = [json.loads(line) for line in usage_path(tmp_path).read_text().splitlines()]
    assert [bool(line.get("in_flight")) for line in lines] == [True, True, False]
    totals = usage_totals(tmp_path)
    assert (totals["calls"], totals["unanswered_calls"], totals["waves"]) == (1, 1, 2)
    assert (
        totals["dollars"] == dollars_spent(tmp_path) == pytest.approx(worst + (1000 * 2.0 + 200 * 10.0) / 1e6)
    )


def test_a_ledger_from_before_call_ids_is_read_as_it_was(tmp_path: Path) -> None:
    """Lines without a call id (every ledger written before them) are each one answered call."""
    usage_path(tmp_path).parent.mkdir(parents=True)
    old = {"time": 1, "model": "m", "wave": 1, "turn": 0, "input_tokens": 1_000_000, "output_tokens": 0}
    usage_path(tmp_path).write_text(f"{json.dumps({**old, 'dollars': 2.0})}\n" * 2)
    totals = usage_totals(tmp_path)
    assert (totals["calls"], totals["unanswered_calls"]) == (2, 0)
    assert totals["dollars"] == dollars_spent(tmp_path) == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("price_cache_write", "counted_as", "price"),
    [
        (2.5, "cache_creation_input_tokens", 2.5),  # a cache write costs more: the worst case
        (1.5, "input_tokens", 2.0),  # (prices where plain input costs more)
    ],
)
def test_a_call_in_flight_counts_its_input_at_the_dearer_price_it_may_be_billed(
    tmp_path: Path, price_cache_write: float, counted_as: str, price: float
) -> None:
    cfg = AgentConfig(price_input=2.0, price_output=10.0, price_cache_write=price_cache_write, max_tokens=100)
    ledger = UsageLedger(tmp_path, cfg)
    ledger.start(model="m", wave=1, turn=0, input_tokens=10_000)
    [row] = read_usage(tmp_path)
    assert row[counted_as] == 10_000 and sum(row[k] for k in TOKEN_FIELDS) == 10_100
    assert row["dollars"] == pytest.approx((10_000 * price + 100 * 10.0) / 1e6)


def test_a_call_this_process_has_in_flight_is_counted_once_answered(tmp_path: Path) -> None:
    """The controller's own call in flight, counted at its worst case until answered, swung its
    budget past the limit and back for every call. Readers of the file from elsewhere (status, a
    later controller) still count it at its worst case."""
    ledger = UsageLedger(tmp_path, AgentConfig(price_input=2.0, price_output=10.0, max_tokens=16000))
    call = ledger.start(model="m", wave=1, turn=0, input_tokens=9000)
    assert dollars_spent(tmp_path) == 0.0
    assert usage_totals(tmp_path)["unanswered_calls"] == 1 and usage_totals(tmp_path)["dollars"] > 0.16
    ledger.record(model="m", call=call, usage=usage(1000, 200), wave=1, turn=0)
    assert dollars_spent(tmp_path) == pytest.approx((1000 * 2.0 + 200 * 10.0) / 1e6)


def test_a_call_whose_answer_could_not_be_written_is_counted_at_its_max(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer the full disk refused left the call's in_flight line alone in the file, as the
    file was when the spend was last summed: the cached sum, without the call, stood, also for the
    wave's check before its next call."""
    ledger = UsageLedger(tmp_path, AgentConfig(price_input=2.0, price_output=10.0, max_tokens=16000))
    call = ledger.start(model="m", wave=1, turn=0, input_tokens=9000)
    assert dollars_spent(tmp_path) == 0.0  # (its own call in flight: counted once answered)

    def disk_full(path: Path, line: str, whole: object = None) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(usage_module, "append_line", disk_full)
    with pytest.raises(OSError):
        ledger.record(model="m", call=call, usage=usage(1000, 200), wave=1, turn=0)
    assert dollars_spent(tmp_path) == usage_totals(tmp_path)["dollars"] > 0.16  # (as any reader counts it)
