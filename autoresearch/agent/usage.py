"""The token and dollar ledger: JSON lines per API call in <campaign>/agent/usage.jsonl.

The engine reads it back (`dollars_spent`, `usage_totals`) to enforce the dollar budget and to
report costs, so the ledger, not the proposer object, is the record: it survives restarts.

Each call writes two lines: one before the request (`start`, marked "in_flight", priced at the
call's worst case: its estimated input as cache writes where those cost more than plain input,
as every request's system blocks are cache breakpoints, and a whole `max_tokens` answer) and its answer after (`record`,
`record_error`), both under one "call" id. A controller killed while a call is in flight
(SIGKILL, a preemption) leaves the first alone, and readers count that call at its worst case
instead of losing what the API may have billed for it.
Ledgers written before calls had ids have answers only, each counted as it is.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from autoresearch.config import AgentConfig
from autoresearch.files import append_line, finite_number

log = logging.getLogger("autoresearch.agent")

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


# The latest waves whose turns decide whether a wave's first message is worth caching
FIRST_TURN_WAVES = 10

# Calls this process has in flight, from `UsageLedger.start` until their answer is written. Their
# in_flight lines stand, to readers of the file (status, a later controller), for calls cut off by
# a kill; the controller that makes them counts each when it is answered (`dollars_spent`): counted
# at its worst case meanwhile, its budget went past the limit for the call and back under it, and a
# wave stopped by a budget so reached was never asked for again.
_calls_in_flight: set[str] = set()


def usage_path(campaign_dir: str | Path) -> Path:
    return Path(campaign_dir) / "agent" / "usage.jsonl"


def dollars_for(tokens: dict[str, int], cfg: AgentConfig) -> float:
    """Price one call. `input_tokens` excludes cached tokens, as the API reports it."""
    per_million = (
        tokens.get("input_tokens", 0) * cfg.price_input
        + tokens.get("output_tokens", 0) * cfg.price_output
        + tokens.get("cache_read_input_tokens", 0) * cfg.price_cache_read
        + tokens.get("cache_creation_input_tokens", 0) * cfg.price_cache_write
    )
    return per_million / 1e6


def tokens_of(usage: Any) -> dict[str, int]:
    """The four billed counts of an SDK `Usage` (absent cache fields count as zero, and so does a
    count that is not a whole number, which the SDK passes on unchecked from a broken proxy)."""
    return {name: _token_count(getattr(usage, name, 0)) for name in TOKEN_FIELDS}


def _token_count(value: Any) -> int:
    return value if _whole(value) and value >= 0 else 0


class UsageLedger:
    """Appends one line per call; holds only a path and prices, never a client or a key."""

    def __init__(self, campaign_dir: str | Path, cfg: AgentConfig) -> None:
        self.path = usage_path(campaign_dir)
        self.cfg = cfg

    def start(self, *, model: str, wave: int, turn: int, input_tokens: int) -> str:
        """The call's id, its line written before the request: at `input_tokens` (an estimate)
        and a whole `max_tokens` answer, what a call cut off by a stop is counted at. Every
        request carries cache breakpoints, so its input may be billed as cache writes: the
        estimate is counted as those where they cost more than plain input."""
        call = uuid.uuid4().hex
        _calls_in_flight.add(call)  # (before its line: a reader never counts it at its worst case)
        as_writes = self.cfg.price_cache_write > self.cfg.price_input
        worst = {
            **dict.fromkeys(TOKEN_FIELDS, 0),
            "cache_creation_input_tokens" if as_writes else "input_tokens": input_tokens,
            "output_tokens": self.cfg.max_tokens,
        }
        self._append({"model": model, "wave": wave, "turn": turn, "call": call, "in_flight": True, **worst})
        return call

    def record(self, *, model: str, usage: Any, wave: int, turn: int, call: str) -> dict[str, Any]:
        tokens = tokens_of(usage)
        return self._answer(call, {"model": model, "wave": wave, "turn": turn, "call": call, **tokens})

    def record_error(self, *, model: str, wave: int, turn: int, call: str, error: str) -> dict[str, Any]:
        """A call that failed after the SDK's retries: no tokens billed, but worth counting."""
        zeros = dict.fromkeys(TOKEN_FIELDS, 0)
        return self._answer(
            call, {"model": model, "wave": wave, "turn": turn, "call": call, **zeros, "error": error}
        )

    def _answer(self, call: str, row: dict[str, Any]) -> dict[str, Any]:
        """A call's answer, written before the call leaves `_calls_in_flight`: a reader then
        finds its in_flight line answered (`read_usage`), never alone and uncounted."""
        try:
            return self._append(row)
        finally:
            _calls_in_flight.discard(call)

    def _append(self, row: dict[str, Any]) -> dict[str, Any]:
        tokens = {k: row[k] for k in TOKEN_FIELDS}
        line = {"time": time.time(), **row, "dollars": round(dollars_for(tokens, self.cfg), 8)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if dropped := append_line(self.path, json.dumps(line), whole=_parses):
            log.warning(
                "%s: dropped its last %d bytes, a line cut short (a write killed mid-line), not a "
                "whole record: what it recorded is not counted",
                self.path,
                dropped,
            )
        return line


def read_usage(campaign_dir: str | Path) -> list[dict[str, Any]]:
    """One row per call: its answer, or its "in_flight" line where it has none (a call cut off by
    a stop, or still in flight, counted at its worst case). A line cut short by a crash is skipped
    (the next record, on a line of its own, is not: `append_line`), and so is one `_append` could
    not have written (edited by hand: not an object, a count or a price that is not a number, a
    call id that is not a string). A whole last line without its newline (a hand edit) counts."""
    rows = []
    for raw in _lines(usage_path(campaign_dir)):
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if _as_written(row):
            rows.append(row)
    answered = {r.get("call") for r in rows if not r.get("in_flight")}
    return [r for r in rows if not (r.get("in_flight") and r.get("call") in answered)]


def _lines(path: Path) -> list[str]:
    """Every line of the ledger, the last one too where it lacks its newline: a torn one does not
    parse, and is skipped as such, but a whole record an editor left without a newline is spent."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []


def _parses(line: bytes) -> bool:
    """Whether a last line without its newline is a whole record: a ledger line is a JSON object,
    and no object cut short parses."""
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def second_turn_share(rows: list[dict[str, Any]], waves: int = FIRST_TURN_WAVES) -> float | None:
    """Of the latest `waves` waves with calls in the ledger, the share that took a second turn
    (inspected, or repaired a proposal); None while fewer than `waves` are known."""
    last_turn: dict[int, int] = {}
    for r in rows:
        wave, turn = r.get("wave"), r.get("turn")
        if isinstance(wave, int) and isinstance(turn, int):
            last_turn[wave] = max(turn, last_turn.get(wave, 0))
    latest = sorted(last_turn)[-waves:]
    if len(latest) < waves:
        return None
    return sum(1 for w in latest if last_turn[w] > 0) / len(latest)


def first_turn_worth_caching(cfg: AgentConfig, rows: list[dict[str, Any]]) -> bool:
    """Whether a wave's first message (the campaign's state, new every wave) should carry a cache
    breakpoint. Writing it costs (cache write - input) per token on every wave; only a wave that
    takes a second turn reads it back, saving (input - cache read) per token: worth it when more
    than (write - input) / (write - read) of the waves do (22% at the default prices). Until
    FIRST_TURN_WAVES waves are known, it is cached."""
    share = second_turn_share(rows)
    if share is None:
        return True
    premium = cfg.price_cache_write - cfg.price_input
    saving = cfg.price_input - cfg.price_cache_read
    return share * saving > (1 - share) * premium


def _as_written(row: Any) -> bool:
    """Whether a ledger line is an object whose dollars and token counts, where it has them, are
    finite numbers (what the budget and the report add up), whose call id, where it has one, is a
    string (what pairs a call's answer with its in_flight line), and whose wave and turn, where it
    has them, are whole numbers (what the report counts waves by, and the next wave is numbered
    after)."""
    if not isinstance(row, dict) or not isinstance(row.get("call", ""), str):
        return False
    if not all(_whole(row.get(name, 0)) for name in ("wave", "turn")):
        return False
    return all(finite_number(row.get(name, 0)) for name in ("dollars", *TOKEN_FIELDS))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_spent_cache: dict[Path, tuple[tuple[int, int, frozenset[str]], float]] = {}


def dollars_spent(campaign_dir: str | Path) -> float:
    """Dollars spent on the API by this campaign so far, across restarts: each call this process
    has in flight is counted once answered, each other one at its worst case (`read_usage`).

    The controller asks on every turn of its loop; the ledger is re-read only when it or
    `_calls_in_flight` changed: a call whose answer could not be written (a full disk) leaves the
    set with the file as it was, and is then counted at its worst case.
    """
    path = usage_path(campaign_dir)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return 0.0
    version = (stat.st_mtime_ns, stat.st_size, frozenset(_calls_in_flight))
    cached = _spent_cache.get(path)
    if cached is None or cached[0] != version:
        rows = [
            r
            for r in read_usage(campaign_dir)
            if not r.get("in_flight") or r.get("call") not in _calls_in_flight
        ]
        cached = (version, sum(float(r.get("dollars", 0.0)) for r in rows))
        _spent_cache[path] = cached
    return cached[1]


def usage_totals(campaign_dir: str | Path) -> dict[str, Any]:
    """Sums for the report and the budget: calls answered, failed, and unanswered (cut off by a
    stop, or in flight: counted at their worst case), waves, tokens by kind, dollars."""
    rows = read_usage(campaign_dir)
    totals: dict[str, Any] = {
        "calls": sum(1 for r in rows if not r.get("error") and not r.get("in_flight")),
        "failed_calls": sum(1 for r in rows if r.get("error")),
        "unanswered_calls": sum(1 for r in rows if r.get("in_flight")),
        "waves": len({r.get("wave") for r in rows}),
    }
    for name in TOKEN_FIELDS:
        totals[name] = sum(int(r.get(name, 0)) for r in rows)
    totals["dollars"] = sum(float(r.get("dollars", 0.0)) for r in rows)
    totals["models"] = sorted({str(r.get("model")) for r in rows})
    return totals


def unanswered_note(totals: dict[str, Any]) -> str:
    """What status and the report add after the failed calls when some call has no answer: its
    dollars are a worst case, not a bill."""
    n = totals.get("unanswered_calls", 0)
    if not n:
        return ""
    calls = "1 call" if n == 1 else f"{n} calls"
    return f", {calls} cut off by a stop (or still in flight), counted at {'its' if n == 1 else 'their'} max"
