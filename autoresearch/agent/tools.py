"""The tools the model sees: the strict `propose_wave` tool and five read-only inspection tools.

Strict schemas need every property required and `additionalProperties: false`, so they cannot
hold free-form maps. Knob settings and grid factors therefore travel as lists of
{name, value} pairs whose values are JSON-encoded strings ("0.02", "8", "true", "\"gelu\"",
"null" = free); `proposal_to_dict` turns them back into the maps `proposals.wave_from_dict` reads.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from autoresearch.agent.inspection import RESULT_CHARS
from autoresearch.agent.prompt import valid_text
from autoresearch.config import AgentConfig
from autoresearch.fixes import WaveRepairs
from autoresearch.knob_types import as_written, constant_types, retype_problems, value_problem
from autoresearch.knobs import KnobError, read_knobs, set_knobs, setting_problems, unset_by_edits
from autoresearch.proposals import (
    TIERS,
    Candidate,
    Edit,
    Grid,
    KnobValue,
    Wave,
    plain_line,
    wave_from_dict,
)
from autoresearch.proposers.base import CampaignContext
from autoresearch.sampler import knob_value_problem
from autoresearch.workspace import (
    MAX_EDIT_CHARS,
    MAX_TRAIN_PY_CHARS,
    OVERWRITTEN_EDITS,
    InvalidCandidate,
    apply_edits,
    code_problem,
    edit_problem,
    length_problem,
    overwritten_edits,
    result_problem,
)

PROPOSE_TOOL = "propose_wave"
# A description names its experiment in every table, log line and commit message: one short line
# (the prompt shows at most 140 characters of one). A hypothesis and a wave's rationale are only
# kept (report, W&B, proposals/waveNNNN.json): they are cut to these lengths, not refused.
MAX_DESCRIPTION = 200
MAX_HYPOTHESIS = 2000
MAX_RATIONALE = 4000


def _obj(properties: dict[str, Any]) -> dict[str, Any]:
    """An object node as strict mode wants it: closed, every property required."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _str(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _list(items: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": "array", "items": items, "description": description}


_EDIT = _obj(
    {
        "search": _str(
            "Exact text of train.py as the edits before this one left it; must occur exactly once. "
            f"At most {MAX_EDIT_CHARS} characters."
        ),
        "replace": _str(f"Text that replaces it; at most {MAX_EDIT_CHARS} characters."),
    }
)
_TIER = {
    "type": "string",
    "enum": list(TIERS),
    "description": "screen (cheap, many) or validate; only the tiers the prompt lists are open.",
}
_KNOB = _obj(
    {
        "name": _str("An UPPER_CASE constant of train.py."),
        "value": _str(
            'JSON-encoded value: 0.02, 8, true, "gelu"; a declared knob\'s must lie in its range, '
            "and null leaves it free."
        ),
    }
)
_CANDIDATE = _obj(
    {
        "description": _str(
            f"One line of at most {MAX_DESCRIPTION} characters: what changes. Shown in every results table."
        ),
        "hypothesis": _str("Why it should lower val_bpb, and by roughly how much."),
        "edits": _list(
            _EDIT,
            "Search/replace blocks on train.py, applied in order; may be empty. The edited file may "
            f"hold at most {MAX_TRAIN_PY_CHARS} characters.",
        ),
        "knobs": _list(
            _KNOB, "Constant settings on top of the edits (which may add the constant); may be empty."
        ),
        "tier": _TIER,
        "fix_of": {
            "type": ["integer", "null"],
            "description": (
                "Trial number of the crashed experiment this repairs, else null. Each crash may be "
                "repaired only as often as the prompt says."
            ),
        },
    }
)
_FACTOR = _obj(
    {
        "name": _str("An UPPER_CASE constant of train.py."),
        "levels": _list(
            _str("JSON-encoded level, not null; a declared knob's must lie in its range."),
            "The levels to cross with the other factors.",
        ),
    }
)
_GRID = _obj(
    {
        "description": _str(
            f"One line of at most {MAX_DESCRIPTION} characters: the question the grid answers."
        ),
        "hypothesis": _str("What outcome you expect and what it would tell you."),
        "factors": _list(_FACTOR, "Every combination of the factors' levels becomes one experiment."),
        "shared_edits": _list(
            _EDIT, "Edits applied to every cell of the grid (they may add the swept constant); may be empty."
        ),
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
    {
        "name": "get_train_py",
        "description": (
            f"Lines of the frontier train.py, whole lines of up to {RESULT_CHARS} characters in all: "
            "read the part the prompt says it does not show before editing it."
        ),
        "strict": True,
        "input_schema": _obj(
            {
                "first_line": {"type": "integer", "description": "The first line wanted, counted from 1."},
                "last_line": {"type": "integer", "description": "The last line wanted."},
            }
        ),
    },
]


def tool_definitions() -> list[dict[str, Any]]:
    """All tools, without a cache breakpoint: the tools come first in the cached prefix, so the
    instructions block's breakpoint caches them too, and an entry ending at the tools would be
    read only if the instructions changed without them, which they never do within a campaign."""
    return [dict(PROPOSE_WAVE), *(dict(t) for t in INSPECT_TOOLS)]


class ProposalError(ValueError):
    """A propose_wave input the engine could not use; the message goes back to the model."""


def decode_value(text: Any) -> KnobValue:
    """A JSON-encoded knob value; bare words that are not JSON are taken as strings."""
    if not isinstance(text, str):
        value = text
    else:
        try:
            value = valid_text(json.loads(text))
        except json.JSONDecodeError:
            return text
        except ValueError:  # an integer of more digits than Python converts
            raise ProposalError(f"knob value {text[:40]!r}... is too long a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ProposalError(f"knob value {text!r} is not a finite number")
    if value is None or isinstance(value, int | float | str | bool):
        return value
    raise ProposalError(f"knob value {text!r} is not a number, string, boolean or null")


# What the propose_wave input must hold where it holds it (`shape_problems`). The schema is strict,
# but a model that ignores it, or an API without strict tool use, can send anything: each field
# of a wrong type is named, instead of being turned into a string (`null` -> "None") or a list
# of its characters (levels "0.1" -> ["0", ".", "1"]). Fields not marked required may be left out;
# fields not named here are passed over. (An edit's `path`, which the schema does not offer, must be
# a string here: the engine refuses any but train.py.)
_SCALAR = (str, int, float, bool, type(None))
_EDIT_SHAPE: dict[str, tuple[Any, bool]] = {
    "search": (str, True),
    "replace": (str, True),
    "path": (str, False),
}
_KNOB_SHAPE: dict[str, tuple[Any, bool]] = {"name": (str, True), "value": (_SCALAR, True)}
_FACTOR_SHAPE: dict[str, tuple[Any, bool]] = {"name": (str, True), "levels": ([_SCALAR], True)}
_CANDIDATE_SHAPE: dict[str, tuple[Any, bool]] = {
    "description": (str, True),
    "hypothesis": (str, False),
    "edits": ([_EDIT_SHAPE], False),
    "knobs": ([_KNOB_SHAPE], False),
    "tier": (str, False),
    "fix_of": ((int, type(None)), False),
}
_GRID_SHAPE: dict[str, tuple[Any, bool]] = {
    "description": (str, True),
    "hypothesis": (str, False),
    "factors": ([_FACTOR_SHAPE], True),
    "shared_edits": ([_EDIT_SHAPE], False),
    "tier": (str, False),
}
_WAVE_SHAPE: dict[str, tuple[Any, bool]] = {
    "rationale": (str, False),
    "candidates": ([_CANDIDATE_SHAPE], False),
    "grids": ([_GRID_SHAPE], False),
}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object" if isinstance(value, dict) else "?"


def _expected(shape: Any) -> str:
    if isinstance(shape, dict):
        return "an object"
    if isinstance(shape, list):
        return "an array"
    if shape is _SCALAR:
        return 'a JSON-encoded value in a string ("0.02", "8", "true", "\\"gelu\\"", "null")'
    kinds = shape if isinstance(shape, tuple) else (shape,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", type(None): "null"}
    return " or ".join(dict.fromkeys(names[k] for k in kinds))


def shape_problems(value: Any, shape: Any = _WAVE_SHAPE, where: str = "the input") -> list[str]:
    """Where `value` departs from `shape` (see _WAVE_SHAPE), as `candidates[0].fix_of must be an
    integer or null, not a string`; [] when it fits."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{where} must be an object, not {_kind(value)}"]
        problems: list[str] = []
        for key, (field_shape, required) in shape.items():
            inner = key if where == "the input" else f"{where}.{key}"
            if key in value:
                problems += shape_problems(value[key], field_shape, inner)
            elif required:
                problems.append(f"{inner} is missing")
        return problems
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{where} must be an array, not {_kind(value)}"]
        return [p for i, item in enumerate(value) for p in shape_problems(item, shape[0], f"{where}[{i}]")]
    kinds = shape if isinstance(shape, tuple) else (shape,)
    fits = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    return [] if fits else [f"{where} must be {_expected(shape)}, not {_kind(value)}"]


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


def parse_proposal(
    raw: dict[str, Any],
    context: CampaignContext,
    source: str = "claude",
    max_fix_attempts: int = AgentConfig.max_fix_attempts,
) -> Wave:
    """A checked Wave, or ProposalError saying what to change (sent back to the model)."""
    shape = shape_problems(raw)
    if shape:
        raise ProposalError("malformed propose_wave input: " + "; ".join(shape[:10]))
    try:
        wave = wave_from_dict(proposal_to_dict(raw), source=source)
    except ProposalError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError, RecursionError) as err:
        raise ProposalError(f"malformed propose_wave input: {type(err).__name__}: {err}") from None
    problems = check_wave(wave, context, max_fix_attempts)
    if problems:
        raise ProposalError("; ".join(problems[:10]))
    wave.rationale = _clip(plain_line(wave.rationale), MAX_RATIONALE)
    for item in (*wave.candidates, *wave.grids):
        item.hypothesis = _clip(plain_line(item.hypothesis), MAX_HYPOTHESIS)
    return wave


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_wave(
    wave: Wave, context: CampaignContext, max_fix_attempts: int = AgentConfig.max_fix_attempts
) -> list[str]:
    """What the proposer can be told now, while it can still correct it in the same wave, rather
    than find refused in the next one's prompt. Edits that do not apply are left to the engine,
    which says why when it queues them (the frontier may have moved by then); an edit of another
    file or of too many characters, and edits that leave train.py unable to parse, are said here:
    no frontier makes them run. So are edits the engine would refuse on this frontier (a declared
    knob made unsettable or retyped, a constant a knob sets assigned twice, the harness's calls
    gone), in its words: the engine's check stays the last guard."""
    problems: list[str] = []
    if not wave.candidates and not wave.grids:
        problems.append("the wave is empty: give at least one candidate or grid")
    if wave.size() > context.max_wave:
        grids = " + ".join(f"{_printable_count(g.size())} grid cells" for g in wave.grids)
        problems.append(
            f"the wave has {_printable_count(wave.size())} experiments ({len(wave.candidates)} candidate(s)"
            f"{' + ' + grids if grids else ''}), over the cap of {context.max_wave}: "
            "fewer candidates, factors or levels"
        )
    declared = {k.name: k for k in context.knobs}
    frontier_types = _edited(context, []).types()
    by_number = {r.number: r for r in context.history}
    repairs = WaveRepairs(context.fix_attempts)  # counted in order, as the intake counts them

    def check_knob(name: str, values: list[Any], known: set[str] | None, edited: _Edited, where: str) -> None:
        if known and name not in known:
            problems.append(f"{where}: {name} is not a constant of train.py nor a declared knob")
        problems.extend(_value_problems(name, values, where))
        spec = declared.get(name)
        types = {} if spec else edited.types()  # (a declared knob's values are its spec's to judge)
        for value in values:
            if spec and value is not None and (why := knob_value_problem(spec, value)):
                problems.append(f"{where}: knob {name}: {why}")
            elif why := value_problem(name, value, types):
                problems.append(f"{where}: {why}")

    for cand in wave.candidates:
        where = f"candidate {cand.description[:60]!r}"
        if not cand.description.strip():
            problems.append("a candidate has an empty description")
        problems += _description_problems(cand.description, where)
        problems += _tier_problems(cand.tier, context, where)
        if not cand.edits and not cand.knobs:
            problems.append(f"{where}: no edits and no knobs, so nothing would change")
        edited = _edited(context, cand.edits)
        problems += _edits_problems(context, frontier_types, cand.edits, edited, where)
        known = _known_constants(context, edited)
        problems += _setting_problems(context, edited, known, cand.knobs, where)
        for name, value in cand.knobs.items():
            check_knob(name, [value], known, edited, where)
            if value is None and name not in declared:
                problems.append(f"{where}: {name}=null (free) needs a declared knob; give a value")
        if cand.edits or cand.knobs:
            problems += _frontier_candidate_problems(context, cand, edited, where)
        if cand.fix_of is not None:
            rec = by_number.get(cand.fix_of)
            if rec is None:
                problems.append(f"{where}: fix_of={cand.fix_of} is not a finished trial")
            elif rec.status != "crash":
                problems.append(f"{where}: fix_of={cand.fix_of} did not crash (status {rec.status})")
            else:
                if why := repairs.past_limit(cand.fix_of, max_fix_attempts):
                    problems.append(f"{where}: {why}: drop this repair, or spend the slot on another idea")
            repairs.taken(cand.fix_of)
    for grid in wave.grids:
        where = f"grid {grid.description[:60]!r}"
        problems += _description_problems(grid.description, where)
        problems += _cell_description_problems(grid, where)
        problems += _tier_problems(grid.tier, context, where)
        edited = _edited(context, grid.shared_edits)
        problems += _edits_problems(context, frontier_types, grid.shared_edits, edited, where)
        known = _known_constants(context, edited)
        problems += _setting_problems(context, edited, known, grid.factors, where)
        for name, levels in grid.factors.items():
            if any(v is None for v in levels):
                problems.append(f"{where}: factor {name} has a null level; grid levels must be values")
            problems += _repeated_levels(name, levels, edited, where)
            check_knob(name, levels, known, edited, where)
        problems += _frontier_grid_problems(context, grid, edited, where)
    return problems


def _frontier_grid_problems(context: CampaignContext, grid: Grid, edited: _Edited, where: str) -> list[str]:
    """A grid whose every cell leaves train.py the frontier's: the launcher skips each ("no change:
    already part of the frontier"), no run but a place of the wave, as it would a candidate with
    no change, which is refused here. Only a grid of one cell can be one (two levels of a factor
    make two train.py files; a level given twice is refused as a repeat). And a grid whose shared
    edits change only what its factors set: each cell is its levels alone judged as a change.

    A grid where only some cells are the frontier is taken. The model is told such a cell costs
    a place without a run (program.md): the frontier's own runs measure it, the control every
    cell is judged against. Leaving the frontier's level out of a factor instead would lose the
    cells that change one factor alone from the frontier, the main effects a factorial design is for."""
    if edited.source is None:
        return []
    if grid.size() == 1 and _leaves_frontier(context, edited.source, next(grid.expand()).knobs):
        return [f"{where}: its only cell leaves train.py the frontier's, so nothing would change"]
    if grid.shared_edits and overwritten_edits(context.frontier_source, edited.source, grid.factors):
        return [f"{where}: {_FACTORS_ONLY}"]
    return []


def _repeated_levels(name: str, levels: list[Any], edited: _Edited, where: str) -> list[str]:
    """A level the factor gives again as train.py would be written (`as_written`, then `repr` by
    `set_knobs`): 1 and 1.0 over a float constant make one train.py twice, and the engine skips
    the second cell as a twin of the first, a place of the wave lost."""
    types = edited.types()
    first: dict[str, Any] = {}  # the first level written as each text
    for level in levels:
        text = repr(as_written({name: level}, types)[name])
        if text not in first:
            first[text] = level
        elif repr(first[text]) == repr(level):
            return [f"{where}: factor {name} repeats a level"]
        else:
            both = f"{first[text]!r} and {level!r} are both written {name} = {_clip(text, 60)}"
            return [f"{where}: factor {name} repeats a level ({both}): give each level once"]
    return []


def _cell_description_problems(grid: Grid, where: str) -> list[str]:
    """A cell's description is the grid's with its settings (`Grid.cell_description`): a long
    description or string level made it longer than a candidate's may be, in every table and log
    line. Refused, not cut: a level cut short could make two cells read alike."""
    if len(grid.description) > MAX_DESCRIPTION:
        return []  # (the description's own problem is said)
    longest = grid.longest_cell_description()
    if longest <= MAX_DESCRIPTION:
        return []
    return [
        f"{where}: a cell's description, the grid's with its settings [KNOB=value, ...], would have "
        f"{longest} characters, over the limit of {MAX_DESCRIPTION}: shorten the description, or "
        "propose a long string level as a candidate of its own"
    ]


def _tier_problems(tier: str, context: CampaignContext, where: str) -> list[str]:
    """A tier the campaign has no hardware or no baselines on is refused when queued: say so now."""
    if not context.tiers or tier in context.tiers:
        return []
    return [f"{where}: tier {tier!r} is not open in this campaign; use {' or '.join(context.tiers)}"]


@dataclass(frozen=True)
class _Edited:
    """The frontier's train.py with a candidate's or a grid's edits applied, checked once for
    the length and the constants. `source` is None where they do not apply (the engine says why
    when it queues them)."""

    edits: bool  # whether there were any (without, `source` is the frontier's)
    source: str | None

    def types(self) -> dict[str, tuple[type, int]]:
        """The type of each constant of `source` ({} where the edits do not apply or it does not
        parse: the engine says why when it queues them)."""
        try:
            return constant_types(self.source) if self.source is not None else {}
        except SyntaxError:
            return {}


def _edited(context: CampaignContext, edits: list[Edit]) -> _Edited:
    if not edits:
        return _Edited(False, context.frontier_source)
    try:
        return _Edited(True, apply_edits(context.frontier_source, edits))
    except InvalidCandidate:
        return _Edited(True, None)


def _edits_problems(
    context: CampaignContext,
    frontier_types: dict[str, tuple[type, int]],
    edits: list[Edit],
    edited: _Edited,
    where: str,
) -> list[str]:
    """Everything said of a candidate's edits or a grid's shared edits, one rule for both and
    the engine: what it would refuse when it queues them, in its words."""
    problems = _edit_problems(edits, where)
    problems += _code_problems(edited, where)
    problems += _length_problems(context, edited, where)
    problems += _result_problems(context, edited, where)
    problems += _unset_problems(context, edited, where)
    problems += _retype_problems(context, frontier_types, edited, where)
    return problems


def _setting_problems(
    context: CampaignContext, edited: _Edited, known: set[str] | None, names: Iterable[str], where: str
) -> list[str]:
    """Constants of train.py that the knobs or factors `names` set and the engine cannot set, as
    the edits leave it (`WARMUP = 0.2` added after `WARMUP = 0.1`): it refuses each such run when
    it queues it (`knobs.set_knobs`), so say it now, in its words. A declared knob is
    `_unset_problems`'s to say; a name train.py lacks, `check_knob`'s."""
    if edited.source is None or known is None:
        return []
    declared = {k.name for k in context.knobs}
    unsettable = setting_problems(edited.source, [n for n in names if n in known and n not in declared])
    return [f"{where}: {why}" for why in unsettable.values()]


def _edit_problems(edits: list[Edit], where: str) -> list[str]:
    """Edits of another file than train.py, too large, with no search text or replacing a text by
    itself: the engine refuses them when it queues them, whatever its frontier (`workspace.edit_problem`), so say it now."""
    return [f"{where}: {why}" for i, edit in enumerate(edits, start=1) if (why := edit_problem(edit, i))]


def _code_problems(edited: _Edited, where: str) -> list[str]:
    """Edits that leave train.py unable to parse (or writing to the harness): the engine refuses
    them when it queues them (`workspace.code_problem`), so say it now, with the line."""
    if not edited.edits or edited.source is None:
        return []
    why = code_problem(edited.source)
    return [f"{where}: {why}: mend the edits"] if why else []


def _length_problems(context: CampaignContext, edited: _Edited, where: str) -> list[str]:
    """Edits that make train.py longer than the engine runs (`MAX_TRAIN_PY_CHARS`), with the numbers."""
    if not edited.edits or edited.source is None:
        return []
    why = length_problem(edited.source, "train.py with its edits")
    return [f"{where}: {why} (the frontier's has {len(context.frontier_source):,}): edit less"] if why else []


def _result_problems(context: CampaignContext, edited: _Edited, where: str) -> list[str]:
    """Edits that leave train.py no call that writes its result: the engine refuses them when it
    queues them (`workspace.result_problem`), so say it now, while the wave can still be mended."""
    if not edited.edits or edited.source is None:
        return []
    why = result_problem(context.frontier_source, edited.source)
    return [f"{where}: {why}"] if why else []


def _unset_problems(context: CampaignContext, edited: _Edited, where: str) -> list[str]:
    """Edits that leave a declared knob's constant unsettable (assigned twice, bound again, gone):
    the engine refuses them when it queues them (`Intake.precheck`), so say it now, in its words."""
    if not edited.edits or edited.source is None:
        return []
    try:
        broken = unset_by_edits(context.frontier_source, edited.source, [k.name for k in context.knobs])
    except SyntaxError:
        return []  # (`_code_problems` says why)
    return [f"{where}: {why}" for why in broken]


def _retype_problems(
    context: CampaignContext, frontier_types: dict[str, tuple[type, int]], edited: _Edited, where: str
) -> list[str]:
    """Edits that give a declared knob's constant another type: the engine refuses them when it
    queues them (`Intake.precheck`), so say it now, while the wave can still be mended."""
    if not edited.edits or edited.source is None:
        return []
    retyped = retype_problems(context.knobs, frontier_types, edited.types(), edited.source)
    return [f"{where}: {why}" for why in retyped]


def _known_constants(context: CampaignContext, edited: _Edited) -> set[str] | None:
    """The names knobs may set on top of the edits: the declared knobs and the constants of the
    frontier with the edits applied (an edit may add the constant a grid sweeps). None where the
    edits do not apply, so nothing can be said of names."""
    declared = {k.name for k in context.knobs}
    if not edited.edits:
        return declared | set(context.knob_values)
    if edited.source is None:
        return None
    try:
        return declared | set(read_knobs(edited.source))
    except SyntaxError:
        return None


def _frontier_candidate_problems(
    context: CampaignContext, cand: Candidate, edited: _Edited, where: str
) -> list[str]:
    """A candidate whose edits and knob values give back the frontier's train.py: knob values it
    has already, an edit that a knob sets back (`LR = 0.02` with LR=0.01), edits that undo each
    other. The launcher skips it ("no change: already part of the frontier"), a place of the wave
    lost to no run. And edits that change only what its knobs set (`overwritten_edits`, the
    engine's rule, said here in its words where every knob is given a value)."""
    if edited.source is None:
        return []
    if not _leaves_frontier(context, edited.source, cand.knobs):
        free = [name for name, value in cand.knobs.items() if value is None]
        declared = {knob.name for knob in context.knobs}
        if not cand.edits or not declared.issuperset(free):  # (the wave asks an undeclared one's value)
            return []
        if not overwritten_edits(context.frontier_source, edited.source, cand.knobs):
            return []
        return [f"{where}: {_SAMPLED_ONLY if free else OVERWRITTEN_EDITS}"]
    if not cand.edits:
        return [f"{where}: its knob values are the frontier's already, so nothing would change"]
    what = "its edits and knob values leave" if cand.knobs else "its edits leave"
    return [f"{where}: {what} train.py the frontier's, so nothing would change"]


_SAMPLED_ONLY = (
    "its edits leave train.py the frontier's but for what its knobs set, so its run would be the "
    "sampler's draw of its free knobs judged as a change: drop the edits, or make them change something"
)
_FACTORS_ONLY = (
    "its shared edits leave train.py the frontier's but for what its factors set, so each cell "
    "would be its levels alone judged as a change: drop the shared edits, or make them change something"
)


def _leaves_frontier(context: CampaignContext, source: str, knobs: dict[str, KnobValue]) -> bool:
    """Whether these settings, written over `source` (the frontier's with some edits), make the
    frontier's train.py: the launcher skips such a run, "no change: already part of the frontier"."""
    if not context.frontier_source or any(v is None for v in knobs.values()):
        return False
    try:
        return set_knobs(source, as_written(knobs, constant_types(source))) == context.frontier_source
    except (KnobError, SyntaxError):
        return False


def _printable_count(n: int) -> str:
    """A count for a message: a grid's size is a product, and Python will not print an integer
    of more than 4,300 digits."""
    return str(n) if n < 10**12 else "more than 10^12"


def _value_problems(name: str, values: list[Any], where: str) -> list[str]:
    """A string value of a knob is written into train.py and, for a grid level, into its cell's
    description: one plain line, as a description is."""
    if any(isinstance(v, str) and not _is_plain_line(v) for v in values):
        return [f"{where}: a value of {name} has control characters or line breaks; give one plain line"]
    return []


def _is_plain_line(text: str) -> bool:
    """No control character (NUL, newline, tab, escape, ...) nor line or paragraph separator
    (U+2028, U+2029, which split a line for many readers)."""
    return plain_line(text) == text and not any(unicodedata.category(ch) in ("Zl", "Zp") for ch in text)


def _description_problems(description: str, where: str) -> list[str]:
    """A description is one short line of text: it names the change in results.tsv, the log and
    the frontier's git commit messages, which cannot hold a NUL."""
    problems = []
    if not _is_plain_line(description):
        problems.append(
            f"{where}: the description has control characters or line breaks (NUL, newline, tab, U+2028, ...); give one plain line"
        )
    if len(description) > MAX_DESCRIPTION:
        problems.append(
            f"{where}: the description has {len(description)} characters, over the limit of "
            f"{MAX_DESCRIPTION}: shorten it (the hypothesis holds the details)"
        )
    return problems
