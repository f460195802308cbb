"""Rendering a campaign context into a prompt whose size does not grow with the campaign.

Two stable system blocks come first and carry cache breakpoints: the standing instructions with
the harness facts (fixed for a campaign), then the frontier train.py with its lineage (fixed until
the next keep). The volatile state (results, noise, budget, rejections) follows in the user
message, after the breakpoints, so a new wave re-reads the stable part from the cache.
Every table is capped, and the caps shrink until the estimate fits `PROMPT_SHARE` of
`max_context_tokens`. train.py is shown whole: edits must quote it exactly, while the tables are
summaries. Only where the tables at their smallest still do not fit is train.py cut, and the cut
says how to read the rest (`get_train_py`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoresearch.config import AgentConfig
from autoresearch.delta_text import signed
from autoresearch.proposers.base import CampaignContext, ExperimentRecord, KeepRule
from autoresearch.workspace import MAX_EDIT_CHARS, MAX_TRAIN_PY_CHARS

CHARS_PER_TOKEN = 3.5  # a cautious average for English and Python under Claude's tokenizers
PROMPT_SHARE = 0.7  # of max_context_tokens; the rest is left for inspection and the answer
CACHE = {"type": "ephemeral"}
IN_FLIGHT = ("queued", "running", "confirming")  # confirming: promoted, its re-runs not all in
COUNTED = ("keep", "discard", "crash")
# Sources of trials no proposer chose (baselines and re-runs; the sampler filling idle slots):
# not ideas the model could repeat.
NOT_PROPOSED = ("engine", "inner-sampler")
INNER_SAMPLER = "inner sampler"  # how the inner sampler's draws begin their description
# Where train.py must be cut: however tight the budget, its head is shown (the constants, the
# model); the length shown is rounded down to a step, so the cached block it is in stays the
# same from wave to wave while the tables change; room is left for the line that says so.
MIN_TRAIN_PY_CHARS = 8_000
TRAIN_PY_STEP = 4_000
CUT_NOTE_CHARS = 200
SIGNIFICANT_DIGITS = 4  # of a float in the prompt (the engine applies the exact values)
# A decimal number standing alone (not part of a name or a version such as 1.2.3)
_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?:[eE][-+]?\d+)?(?!\w|\.\d)")

DEFAULT_PROGRAM_MD = Path(__file__).resolve().parents[2] / "trainer" / "program.md"


def default_program_md() -> str:
    """The repository's standing instructions (a campaign may point to its own file instead)."""
    if DEFAULT_PROGRAM_MD.is_file():
        return DEFAULT_PROGRAM_MD.read_text(encoding="utf-8")
    return "You propose experiments that edit train.py to lower val_bpb. Call propose_wave."


@dataclass(frozen=True)
class Limits:
    """How much of the history one prompt shows."""

    recent: int = 25
    best: int = 12
    crashes: int = 8
    rejected: int = 8
    lineage: int = 40
    in_flight: int = 12
    tried: int = 400
    desc_chars: int = 140
    reason_chars: int = 300
    train_py_chars: int = MAX_TRAIN_PY_CHARS  # the longest train.py the engine runs: all of it

    def halved(self) -> Limits:
        """The tables' caps halved, down to their minimums (then it returns the same limits);
        train.py's is not a table's and is left alone."""
        return replace(
            self,
            recent=max(3, self.recent // 2),
            best=max(3, self.best // 2),
            crashes=max(2, self.crashes // 2),
            rejected=max(2, self.rejected // 2),
            lineage=max(5, self.lineage // 2),
            in_flight=max(3, self.in_flight // 2),
            tried=max(40, self.tried // 2),
            desc_chars=max(60, self.desc_chars * 3 // 4),
            reason_chars=max(120, self.reason_chars * 3 // 4),
        )


@dataclass
class Prompt:
    system: list[dict[str, Any]]  # text blocks, each ending a cached prefix
    user: str  # the volatile part, after the breakpoints

    def chars(self) -> int:
        return sum(len(b["text"]) for b in self.system) + len(self.user)


def estimate_tokens(chars: int) -> int:
    return int(chars / CHARS_PER_TOKEN) + 1


def render_prompt(
    context: CampaignContext, cfg: AgentConfig, program_md: str, tools_chars: int = 0
) -> Prompt:
    """The whole prompt for one wave, shrunk until it fits its share of `max_context_tokens`:
    the tables are halved first, down to their minimums, and only then is train.py cut."""
    # the most characters whose estimate_tokens is within the share, the tools' taken off
    budget_chars = math.ceil(int(cfg.max_context_tokens * PROMPT_SHARE) * CHARS_PER_TOKEN) - 1 - tools_chars
    limits = Limits()
    prompt = _render(context, cfg, program_md, limits)
    while prompt.chars() > budget_chars and limits.halved() != limits:
        limits = limits.halved()
        prompt = _render(context, cfg, program_md, limits)
    if prompt.chars() <= budget_chars:
        return prompt
    shown = min(len(context.frontier_source), limits.train_py_chars)
    room = shown - (prompt.chars() - budget_chars) - CUT_NOTE_CHARS
    limits = replace(limits, train_py_chars=max(MIN_TRAIN_PY_CHARS, room // TRAIN_PY_STEP * TRAIN_PY_STEP))
    return _render(context, cfg, program_md, limits)


def _render(context: CampaignContext, cfg: AgentConfig, program_md: str, limits: Limits) -> Prompt:
    system = [
        {
            "type": "text",
            "text": valid_text(instructions_text(context, cfg, program_md)),
            "cache_control": CACHE,
        },
        {"type": "text", "text": valid_text(frontier_text(context, limits)), "cache_control": CACHE},
    ]
    return Prompt(system=system, user=valid_text(state_text(context, limits)))


def valid_text(value: Any) -> Any:
    """`value` with every lone surrogate in its strings (keys too) made U+FFFD: JSON can carry
    one (an escape such as \\ud800), but no file, log line or request can encode it. Unchanged
    (the same object) when there is none: a thinking block's signature covers its text."""
    if isinstance(value, str):
        if not _has_surrogate(value):
            return value
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)
    if isinstance(value, list):
        items = [valid_text(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, dict):
        pairs = [(valid_text(k), valid_text(v)) for k, v in value.items()]
        changed = any(a is not k or b is not v for (a, b), (k, v) in zip(pairs, value.items(), strict=True))
        return dict(pairs) if changed else value
    return value


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def instructions_text(context: CampaignContext, cfg: AgentConfig, program_md: str) -> str:
    """Standing instructions and facts that hold for the whole campaign (cached across waves)."""
    lines = [program_md.strip(), "", "# Harness facts (fixed for this campaign)"]
    lines.append(
        "- The metric is val_bpb, bits per byte on the held-out validation shard, computed by the "
        "read-only harness (prepare.py) from the logits your model returns. Lower is better."
    )
    harness = getattr(context, "harness", None) or {}
    for key, value in harness.items():
        lines.append(f"- {key}: {value}")
    lines.append("- Hardware per tier (results are compared only within a tier):")
    for tier, hardware in context.tiers.items():
        lines.append(f"  - {tier}: {hardware}")
    lines.append(keep_rule_text(context.keep_rule))
    if context.knobs:
        lines.append(
            "- Declared knobs (UPPER_CASE constants of train.py; a value outside its range is refused, "
            "null leaves one to the sampler):"
        )
        for k in context.knobs:
            if k.kind == "categorical":
                span = "one of " + ", ".join(json.dumps(c, default=str) for c in k.choices)
            else:
                span = f"{k.kind} in [{k.low}, {k.high}]" + (" (log scale)" if k.log else "")
            lines.append(f"  - {k.name}: {span}")
    lines.append(
        f"- Per wave you may make up to {cfg.max_inspect_turns} inspection tool calls, then must call "
        f"propose_wave once. A crashed experiment may be fixed at most {cfg.max_fix_attempts} times."
    )
    lines.append(
        f"- train.py may hold at most {MAX_TRAIN_PY_CHARS:,} characters with your edits applied, and "
        f"one search or replace text at most {MAX_EDIT_CHARS:,}: propose_wave refuses more."
    )
    return "\n".join(lines) + "\n"


def keep_rule_text(rule: KeepRule) -> str:
    """The engine's keep rule with this campaign's numbers (`policy.NoiseAwarePolicy`)."""
    screen = (
        f"beats the frontier on its tier by more than min_delta {rule.min_delta:g} val_bpb and by "
        f"{rule.promote_z:g} x the standard deviation of that difference"
    )
    if not rule.confirm_tier or rule.validate_seeds <= 0:
        return f"- Keep rule: a result is kept at once, on its one run, when it {screen}."
    return (
        f"- Keep rule: a screen result is promoted when it {screen}; it is then run again with "
        f"{rule.validate_seeds} other seeds on the {rule.confirm_tier} tier and kept only when their "
        f"mean beats the frontier's by more than min_delta and {rule.keep_z:g} standard errors."
    )


def keep_margin(rule: KeepRule, noise: float) -> float:
    """About how much a change must beat the frontier by to be kept: the confirmation's margin for
    its re-runs against as many runs of the frontier, or, where nothing is confirmed, the
    screening's for one run against one (runs on the same seeds can need less)."""
    if rule.confirm_tier and rule.validate_seeds > 0:
        return max(rule.min_delta, rule.keep_z * noise * math.sqrt(2 / rule.validate_seeds))
    return max(rule.min_delta, rule.promote_z * noise * math.sqrt(2))


def frontier_text(context: CampaignContext, limits: Limits) -> str:
    """The file edits apply to, and how it got here (cached until the next keep)."""
    source = context.frontier_source
    lines = [
        f"# The current frontier train.py ({len(source):,} characters, {len(source.splitlines())} lines)",
        "Edits apply to this exact text, in order: each search string must occur exactly once in "
        "the text the edits before it left.",
        "```python",
        shown_train_py(source, limits.train_py_chars).rstrip("\n"),
        "```",
        "",
        f"# Lineage: the {len(context.lineage)} kept changes that made it, oldest first",
    ]
    shown = context.lineage[-limits.lineage :]
    if len(context.lineage) > len(shown):
        lines.append(f"({len(context.lineage) - len(shown)} earlier kept changes not shown)")
    lines += [record_line(r, limits.desc_chars) for r in shown] or ["(none yet: this is the baseline)"]
    return "\n".join(lines) + "\n"


def shown_train_py(source: str, limit: int) -> str:
    """`source` whole where it fits `limit`, else its first whole lines that do, and a last line
    naming the lines left out and the tool that reads them: the model must not edit code it
    cannot see."""
    if len(source) <= limit:
        return source
    end = source.rfind("\n", 0, limit) + 1 or limit  # a single line longer than the limit is cut in it
    total = len(source.splitlines())
    first_hidden = source[:end].count("\n") + 1
    head = source[:end] if source[:end].endswith("\n") else source[:end] + "\n"
    return head + (
        f"# ... [train.py goes on: lines {first_hidden}-{total} ({len(source) - end:,} characters) are "
        f"not shown here. Read them with get_train_py before editing them.]\n"
    )


def state_text(context: CampaignContext, limits: Limits) -> str:
    """Where the campaign stands now: the part of the prompt that changes every wave."""
    finished = [r for r in context.history if r.status not in IN_FLIGHT]
    in_flight = [r for r in context.history if r.status in IN_FLIGHT]
    out = ["# State of the campaign"]
    best = ", ".join(f"{t} {v:.6f}" for t, v in context.frontier_val_bpb.items()) or "not measured yet"
    out.append(f"Frontier val_bpb: {best}")
    rule = context.keep_rule
    if context.noise_std:
        out.append(
            f"Measured noise: seed-to-seed std of val_bpb {context.noise_std:.5f}; to be kept, a change "
            f"must beat the frontier by more than about {keep_margin(rule, context.noise_std):.5f}."
        )
    else:
        out.append(
            f"Measured noise: not known yet; until it is, a change must beat the frontier by more "
            f"than min_delta {rule.min_delta:g} to be kept."
        )
    counts = {s: sum(1 for r in finished if r.status == s) for s in COUNTED}
    out.append(
        f"Finished: {len(finished)} ({counts['keep']} kept, {counts['discard']} discarded, "
        f"{counts['crash']} crashed); in flight: {len(in_flight)}"
    )
    if context.budget_left:
        out.append("Budget left: " + ", ".join(f"{k} {_num(v)}" for k, v in context.budget_left.items()))
    out += ["", "## Knob values on the frontier", knob_values_text(context)]
    fk = context.knob_values
    best = best_records(finished, limits.best)
    by_arrival = sorted(finished, key=arrival, reverse=True)
    recent = [r for r in by_arrival if measured(r)][: limits.recent]
    crashes = [r for r in by_arrival if r.status == "crash"][: limits.crashes]
    flying = in_flight[-limits.in_flight :]
    out += _section("Best results per tier", best, limits, fk)
    out += _section("Most recent results", recent, limits, fk)
    out += _section(
        "Recent crashes (read one with get_log_tail; repair with fix_of)",
        crashes,
        limits,
        fk,
        limits.reason_chars,
    )
    out += repairs_text(crashes, context.fix_attempts)
    out += _section("In flight (do not propose these again)", flying, limits, fk)
    shown = {r.number for r in (*best, *recent, *crashes, *flying)}
    out += tried_text(context.history, shown, limits, fk)
    rejected = context.rejected[-limits.rejected :]
    if rejected:
        out += ["", "## Proposals the engine rejected recently, with its reasons"]
        out += [f"- {_one_line(reason, 2 * limits.desc_chars)}" for reason in rejected]
    out += [
        "",
        "# Your task",
        f"Propose the next wave: about {context.wave_size} experiments in all (at most "
        f"{context.max_wave}), counting every cell of every grid. Inspect first if it helps, then "
        "call propose_wave exactly once.",
    ]
    return "\n".join(out) + "\n"


def repairs_text(crashes: list[ExperimentRecord], fix_attempts: dict[int, int]) -> list[str]:
    """How often the crashes shown were repaired already: each may be only `max_fix_attempts` times."""
    repaired = [f"#{r.number} {fix_attempts[r.number]}" for r in crashes if fix_attempts.get(r.number)]
    return ["Repairs proposed so far (fix_of): " + ", ".join(repaired)] if repaired else []


def knob_values_text(context: CampaignContext, max_other: int = 40) -> str:
    declared = [k.name for k in context.knobs]
    others = [k for k in context.knob_values if k not in declared]
    items = [f"{k}={_value(context.knob_values.get(k))} (declared)" for k in declared]
    items += [f"{k}={_value(context.knob_values[k])}" for k in others[:max_other]]
    if len(others) > max_other:
        items.append(f"... {len(others) - max_other} more constants")
    return "\n".join(items) if items else "(none)"


def arrival(r: ExperimentRecord) -> tuple[float, int]:
    """When a result came in: on a fleet trials end out of order, so the number alone would call
    a long run's older neighbours recent (records without an end time sort as the oldest)."""
    return (r.ended_at if r.ended_at is not None else float("-inf"), r.number)


def measured(r: ExperimentRecord) -> bool:
    """A trial that gave a val_bpb: a skipped re-run or twin, a crash or an invalid edit gave none."""
    return r.val_bpb is not None and r.status != "crash"


def best_records(finished: list[ExperimentRecord], k: int) -> list[ExperimentRecord]:
    """The k lowest val_bpb per tier (tiers run on different hardware, so are not mixed)."""
    by_tier: dict[str, list[ExperimentRecord]] = {}
    for r in finished:
        if measured(r):
            by_tier.setdefault(r.tier, []).append(r)
    out: list[ExperimentRecord] = []
    for tier in sorted(by_tier):
        out += sorted(by_tier[tier], key=lambda r: r.val_bpb)[:k]
    return out


def tried_text(
    history: list[ExperimentRecord], shown: set[int], limits: Limits, frontier_knobs: dict[str, Any]
) -> list[str]:
    """The proposers' other ideas, finished or in flight, one short line each (with why one gave
    no result), newest first: on a fleet the tables above show a few dozen of hundreds, and an
    idea that scrolled out of them would be proposed again (a paid wave the engine then drops as
    duplicates)."""
    # An idea is its description with its settings: "tune LR" at two values is two ideas.
    ideas = {describe(r, limits.desc_chars, frontier_knobs) for r in history if r.number in shown}
    lines = []
    for r in sorted(history, key=lambda r: r.number, reverse=True):
        idea = describe(r, limits.desc_chars, frontier_knobs)
        if r.number in shown or r.source in NOT_PROPOSED or idea in ideas:
            continue
        ideas.add(idea)
        delta = f" {signed(r.delta, 5)}" if r.delta is not None else ""
        lines.append(f"#{r.number} {r.status}{delta}: {idea}" + _why_no_result(r, limits.desc_chars // 2))
    if not lines:
        return []
    out = ["", "## Other ideas already tried or in flight (newest first; do not repeat them)"]
    out += lines[: limits.tried]
    if len(lines) > limits.tried:
        out.append(f"({len(lines) - limits.tried} older ideas not shown)")
    return out


def record_line(
    r: ExperimentRecord,
    desc_chars: int,
    frontier_knobs: dict[str, Any] | None = None,
    reason_chars: int | None = None,
) -> str:
    """One table row; knob settings that differ from the frontier are added unless already named,
    and why a trial gave no result (a crash, an edit that did not apply, a twin skipped)."""
    val = f"{r.val_bpb:.6f}" if r.val_bpb is not None else "-"
    delta = signed(r.delta, 5) if r.delta is not None else ""
    desc = describe(r, desc_chars, frontier_knobs)
    line = f"#{r.number:<5} {r.status:<7} {r.tier:<8} {val:>9} {delta:>9}  {desc}"
    return line + _why_no_result(r, reason_chars or desc_chars // 2)


def describe(r: ExperimentRecord, desc_chars: int, frontier_knobs: dict[str, Any] | None = None) -> str:
    """A row's description, numbers rounded, then (given the frontier's knobs) the knob settings
    that differ from the frontier and that it does not name already. A short description leaves
    its room to those settings: an inner-sampler draw is all settings."""
    desc = _one_line(shown_description(r), desc_chars)
    if frontier_knobs is None:
        return desc
    settings = [f"{k}={_value(v)}" for k, v in r.knobs.items() if frontier_knobs.get(k) != v]
    extra = [s for s in settings if s not in desc]
    note_chars = max(desc_chars // 2, desc_chars - len(desc))
    return desc + (f"  {{{_one_line(', '.join(extra), note_chars)}}}" if extra else "")


def shown_description(r: ExperimentRecord) -> str:
    """The description with machine-printed floats cut to 4 significant digits (the engine
    applies the exact values; 17 digits only cost tokens), and an inner-sampler draw's list of
    the knobs it set left out: the knob settings that follow name them, with their values."""
    head, _, names = r.description.partition(": ")
    if head == INNER_SAMPLER and names and set(names.split(", ")) <= set(r.knobs):
        return INNER_SAMPLER
    return _DECIMAL.sub(lambda m: _rounded_text(m.group()), r.description)


def _why_no_result(r: ExperimentRecord, chars: int) -> str:
    """Why a trial gave no result (a crash, an edit that did not apply, a twin skipped): what
    decides whether the idea is worth another try."""
    return f"  [{_one_line(r.reason, chars)}]" if r.reason and not measured(r) else ""


def _section(
    title: str,
    records: list[ExperimentRecord],
    limits: Limits,
    frontier_knobs: dict[str, Any],
    reason_chars: int | None = None,
) -> list[str]:
    if not records:
        return []
    header = f"{'#':<6} {'status':<7} {'tier':<8} {'val_bpb':>9} {'delta':>9}  description {{knobs}}"
    rows = (record_line(r, limits.desc_chars, frontier_knobs, reason_chars) for r in records)
    return ["", f"## {title}", header, *rows]


def _one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _value(v: Any) -> str:
    """A knob value as the prompt shows it, a float to 4 significant digits."""
    if isinstance(v, float) and math.isfinite(v):
        return _rounded_text(json.dumps(v))
    return _one_line(json.dumps(v, default=str), 40)


def _rounded_text(number: str) -> str:
    """`number` (a decimal's text) to SIGNIFICANT_DIGITS, or as it is when that loses nothing."""
    rounded = float(f"{float(number):.{SIGNIFICANT_DIGITS}g}")
    return number if rounded == float(number) else json.dumps(rounded)


def _num(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
