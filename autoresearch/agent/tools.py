"""The tools the model sees: the strict `propose_wave` tool and four read-only inspection tools.

Strict schemas need every property required and `additionalProperties: false`, so they cannot
hold free-form maps. Knob settings and grid factors therefore travel as lists of
{name, value} pairs whose values are JSON-encoded strings ("0.02", "8", "true", "\"gelu\"",
"null" = free); `proposal_to_dict` turns them back into the maps `proposals.wave_from_dict` reads.
"""

from __future__ import annotations

import json
from typing import Any

from autoresearch.proposals import TIERS, KnobValue, Wave, plain_line, wave_from_dict
from autoresearch.proposers.base import CampaignContext

PROPOSE_TOOL = "propose_wave"


def _obj(properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    """An object node as strict mode wants it: closed, every property required."""
    node: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if description:
        node["description"] = description
    return node


def _str(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _list(items: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": "array", "items": items, "description": description}


_EDIT = _obj(
    {
        "search": _str("Exact text of the current train.py; must occur exactly once."),
        "replace": _str("Text that replaces it."),
    }
)
_TIER = {"type": "string", "enum": list(TIERS), "description": "screen (cheap, many) or validate."}
_KNOB = _obj(
    {
        "name": _str("An UPPER_CASE constant of train.py."),
        "value": _str('JSON-encoded value: 0.02, 8, true, "gelu"; null leaves a declared knob free.'),
    }
)
_CANDIDATE = _obj(
    {
        "description": _str("One line: what changes. Shown in every results table."),
        "hypothesis": _str("Why it should lower val_bpb, and by roughly how much."),
        "edits": _list(_EDIT, "Search/replace blocks on train.py, applied in order; may be empty."),
        "knobs": _list(_KNOB, "Constant settings on top of the edits; may be empty."),
        "tier": _TIER,
        "fix_of": {
            "type": ["integer", "null"],
            "description": "Trial number of the crashed experiment this repairs, else null.",
        },
    }
)
_FACTOR = _obj(
    {
        "name": _str("An UPPER_CASE constant of train.py."),
        "levels": _list(_str("JSON-encoded level."), "The levels to cross with the other factors."),
    }
)
_GRID = _obj(
    {
        "description": _str("One line: the question the grid answers."),
        "hypothesis": _str("What outcome you expect and what it would tell you."),
        "factors": _list(_FACTOR, "Every combination of the factors' levels becomes one experiment."),
        "shared_edits": _list(_EDIT, "Edits applied to every cell of the grid; may be empty."),
        "tier": _TIER,
    }
)

PROPOSE_WAVE: dict[str, Any] = {
    "name": PROPOSE_TOOL,
    "description": (
        "Submit this wave of experiments. Call it exactly once per wave, after any inspection. "
        "Candidates are single experiments; grids are factorial designs over knobs."
    ),
    "strict": True,
    "input_schema": _obj(
        {
            "rationale": _str("What you learned from the results so far and why this wave follows."),
            "candidates": _list(_CANDIDATE, "Individual experiments."),
            "grids": _list(_GRID, "Factorial grids; may be empty."),
        }
    ),
}

_NUMBER = {"type": "integer", "description": "A trial number from the results tables."}

INSPECT_TOOLS: list[dict[str, Any]] = [
    {
        "name": "get_results",
        "description": "Full records (knobs, status, reason, delta) of the given trial numbers (at most 20).",
        "strict": True,
        "input_schema": _obj({"numbers": _list(_NUMBER, "Trial numbers.")}),
    },
    {
        "name": "get_diff",
        "description": "The diff against its parent's train.py of a trial (a kept change, a crash, ...).",
        "strict": True,
        "input_schema": _obj({"number": _NUMBER}),
    },
    {
        "name": "get_log_tail",
        "description": "The last lines of a trial's run.log: read it before proposing a fix of a crash.",
        "strict": True,
        "input_schema": _obj({"number": _NUMBER}),
    },
    {
        "name": "results_by_knob",
        "description": "Finished results grouped by the value of one knob: count, mean and min val_bpb per tier.",
        "strict": True,
        "input_schema": _obj({"knob": _str("An UPPER_CASE constant of train.py.")}),
    },
]


def tool_definitions() -> list[dict[str, Any]]:
    """All tools, the last one carrying the cache breakpoint: tool definitions never change."""
    tools = [dict(PROPOSE_WAVE), *(dict(t) for t in INSPECT_TOOLS)]
    tools[-1]["cache_control"] = {"type": "ephemeral"}
    return tools


class ProposalError(ValueError):
    """A propose_wave input the engine could not use; the message goes back to the model."""


def decode_value(text: Any) -> KnobValue:
    """A JSON-encoded knob value; bare words that are not JSON are taken as strings."""
    if not isinstance(text, str):
        value = text
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return text
    if value is None or isinstance(value, int | float | str | bool):
        return value
    raise ProposalError(f"knob value {text!r} is not a number, string, boolean or null")


def _pairs(items: Any, what: str, key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        name = str(item["name"])
        if name in out:
            raise ProposalError(f"{what} {name} is given twice")
        out[name] = item[key]
    return out


def proposal_to_dict(raw: dict[str, Any]) -> dict[str, Any]:
    """The strict tool shape -> the plain shape `proposals.wave_from_dict` reads."""
    candidates = []
    for c in raw.get("candidates") or []:
        knobs = {k: decode_value(v) for k, v in _pairs(c.get("knobs"), "knob", "value").items()}
        candidates.append({**c, "knobs": knobs})
    grids = []
    for g in raw.get("grids") or []:
        factors = _pairs(g.get("factors"), "factor", "levels")
        levels = {k: [decode_value(v) for v in vs] for k, vs in factors.items()}
        grids.append({**g, "factors": levels})
    return {"rationale": raw.get("rationale", ""), "candidates": candidates, "grids": grids}


def parse_proposal(raw: dict[str, Any], context: CampaignContext, source: str = "claude") -> Wave:
    """A checked Wave, or ProposalError saying what to change (sent back to the model)."""
    try:
        wave = wave_from_dict(proposal_to_dict(raw), source=source)
    except ProposalError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as err:
        raise ProposalError(f"malformed propose_wave input: {type(err).__name__}: {err}") from None
    problems = check_wave(wave, context)
    if problems:
        raise ProposalError("; ".join(problems[:10]))
    return wave


def check_wave(wave: Wave, context: CampaignContext) -> list[str]:
    """What the proposer can tell is wrong without touching train.py (the engine checks edits)."""
    problems: list[str] = []
    if not wave.candidates and not wave.grids:
        problems.append("the wave is empty: give at least one candidate or grid")
    if wave.size() > context.max_wave:
        grids = " + ".join(f"{g.size()} grid cells" for g in wave.grids)
        problems.append(
            f"the wave has {wave.size()} experiments ({len(wave.candidates)} candidate(s)"
            f"{' + ' + grids if grids else ''}), over the cap of {context.max_wave}: "
            "fewer candidates, factors or levels"
        )
    declared = {k.name for k in context.knobs}
    known = declared | set(context.knob_values)
    by_number = {r.number: r for r in context.history}

    def check_name(name: str, where: str) -> None:
        if known and name not in known:
            problems.append(f"{where}: {name} is not a constant of train.py nor a declared knob")

    for cand in wave.candidates:
        where = f"candidate {cand.description[:60]!r}"
        if not cand.description.strip():
            problems.append("a candidate has an empty description")
        problems += _description_problems(cand.description, where)
        if not cand.edits and not cand.knobs:
            problems.append(f"{where}: no edits and no knobs, so nothing would change")
        for edit in cand.edits:
            if not edit.search:
                problems.append(f"{where}: an edit has an empty search text")
            elif edit.search == edit.replace:
                problems.append(f"{where}: an edit replaces a text by itself")
        for name, value in cand.knobs.items():
            check_name(name, where)
            if value is None and name not in declared:
                problems.append(f"{where}: {name}=null (free) needs a declared knob; give a value")
        if cand.fix_of is not None:
            rec = by_number.get(cand.fix_of)
            if rec is None:
                problems.append(f"{where}: fix_of={cand.fix_of} is not a finished trial")
            elif rec.status != "crash":
                problems.append(f"{where}: fix_of={cand.fix_of} did not crash (status {rec.status})")
    for grid in wave.grids:
        where = f"grid {grid.description[:60]!r}"
        problems += _description_problems(grid.description, where)
        for edit in grid.shared_edits:
            if not edit.search:
                problems.append(f"{where}: a shared edit has an empty search text")
        for name, levels in grid.factors.items():
            if any(v is None for v in levels):
                problems.append(f"{where}: factor {name} has a null level; grid levels must be values")
            if len({json.dumps(v) for v in levels}) != len(levels):
                problems.append(f"{where}: factor {name} repeats a level")
            check_name(name, where)
    return problems


def _description_problems(description: str, where: str) -> list[str]:
    """A description is one line of text: it names the change in results.tsv and in the frontier's
    git commit messages, which cannot hold a NUL."""
    if plain_line(description) == description:
        return []
    return [f"{where}: the description has control characters (NUL, newline, tab, ...); give one plain line"]
