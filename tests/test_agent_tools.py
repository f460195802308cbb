"""The strict tool schemas, proposal parsing and checks, and the read-only inspection tools."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import release, scripted_campaign

from autoresearch.agent.fakeapi import SAMPLE_TRAIN_PY, sample_context
from autoresearch.agent.inspection import RESULT_CHARS, Inspector
from autoresearch.agent.tools import (
    INSPECT_TOOLS,
    MAX_HYPOTHESIS,
    MAX_RATIONALE,
    PROPOSE_WAVE,
    ProposalError,
    decode_value,
    parse_proposal,
    tool_definitions,
)
from autoresearch.knobs import read_knobs
from autoresearch.proposals import Candidate, Edit, Wave
from autoresearch.proposers.base import CampaignContext, KnobSpec
from autoresearch.sampler import knob_value_problem
from autoresearch.workspace import MAX_EDIT_CHARS, MAX_TRAIN_PY_CHARS, InvalidCandidate, build_source


def object_nodes(node: Any):
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield node
        for value in node.values():
            yield from object_nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from object_nodes(value)


@pytest.mark.parametrize("tool", [PROPOSE_WAVE, *INSPECT_TOOLS], ids=lambda t: t["name"])
def test_schemas_satisfy_strict_mode(tool: dict[str, Any]) -> None:
    assert tool["strict"] is True
    nodes = list(object_nodes(tool["input_schema"]))
    assert nodes
    for node in nodes:
        assert node["additionalProperties"] is False
        assert sorted(node["required"]) == sorted(node["properties"])
    text = json.dumps(tool["input_schema"])
    for unsupported in ('"$ref"', '"oneOf"', '"minimum"', '"maxLength"', '"patternProperties"'):
        assert unsupported not in text


def test_no_tool_carries_a_cache_breakpoint() -> None:
    """The instructions block's breakpoint caches the tools before it; one on the tools adds nothing."""
    assert not any("cache_control" in t for t in tool_definitions())


@pytest.mark.parametrize(
    ("text", "value"),
    [("0.02", 0.02), ("8", 8), ("true", True), ('"gelu"', "gelu"), ("null", None), ("gelu", "gelu")],
)
def test_knob_values_decode_from_json_strings(text: str, value: Any) -> None:
    assert decode_value(text) == value and type(decode_value(text)) is type(value)


def test_list_values_are_refused() -> None:
    with pytest.raises(ProposalError, match="not a number"):
        decode_value("[1, 2]")


def cand(**over: Any) -> dict[str, Any]:
    base = {
        "description": "d",
        "hypothesis": "h",
        "edits": [],
        "knobs": [{"name": "LR", "value": "0.02"}],
        "tier": "screen",
        "fix_of": None,
    }
    return {**base, **over}


def wave(*cands: dict[str, Any], grids: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"rationale": "r", "candidates": list(cands), "grids": grids or []}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (wave(), "empty"),
        (wave(cand(knobs=[{"name": "NOPE", "value": "1"}])), "NOPE is not a constant"),
        (wave(cand(knobs=[{"name": "WARMUP", "value": "null"}])), "WARMUP=null"),
        (wave(cand(knobs=[{"name": "LR", "value": "1"}, {"name": "LR", "value": "2"}])), "given twice"),
        (wave(cand(fix_of=4)), "did not crash"),
        (wave(cand(fix_of=777)), "not a finished trial"),
        (wave(cand(knobs=[])), "nothing would change"),
        (wave(cand(edits=[{"search": "", "replace": "x"}])), "empty search"),
        (wave(cand(tier="huge")), "unknown tier"),
        (wave({"edits": [], "knobs": []}), "malformed"),  # no description
        (
            wave(
                grids=[
                    {
                        "description": "g",
                        "hypothesis": "",
                        "factors": [],
                        "shared_edits": [],
                        "tier": "screen",
                    }
                ]
            ),
            "factor",
        ),
        (
            wave(
                grids=[
                    {
                        "description": "g",
                        "hypothesis": "",
                        "factors": [{"name": "LR", "levels": ["0.1", "0.1"]}],
                        "shared_edits": [],
                        "tier": "screen",
                    }
                ]
            ),
            "repeats a level",
        ),
        (
            wave(
                cand(),
                grids=[
                    {
                        "description": "g",
                        "hypothesis": "",
                        "factors": [{"name": "LR", "levels": [str(i / 100) for i in range(1, 17)]}],
                        "shared_edits": [],
                        "tier": "screen",
                    }
                ],
            ),
            r"17 experiments \(1 candidate\(s\) \+ 16 grid cells\), over the cap of 16",
        ),
        (wave(cand(knobs=[{"name": "LR", "value": "[" * 100_000}])), "malformed"),
        (wave(cand(description="LR 0.01 -> 0.04\u0000")), "the description has control characters"),
        (wave(cand(description="two\nlines")), "the description has control characters"),
        (wave(cand(description="two\u2028lines")), "line breaks"),
        (wave(cand(description="x" * 201)), "201 characters, over the limit of 200"),
        (wave(cand(knobs=[{"name": "ACTIVATION", "value": '"ge\\u001blu"'}])), "value of ACTIVATION"),
        (wave(cand(knobs=[{"name": "LR", "value": "NaN"}])), "'NaN' is not a finite number"),
        (wave(cand(knobs=[{"name": "LR", "value": "-1e999"}])), "not a finite number"),
        (wave(cand(knobs=[{"name": "DEPTH", "value": "9" * 5000}])), "too long a number"),
        # Wrong types are named where they are, not turned into strings or lists of characters.
        (wave(cand(description=None)), r"candidates\[0\]\.description must be a string, not null"),
        (wave(cand(description={"x": 1})), "description must be a string, not an object"),
        (wave(cand(knobs="LR=0.02")), r"candidates\[0\]\.knobs must be an array, not a string"),
        (wave(cand(fix_of="3")), "fix_of must be an integer or null, not a string"),
        (wave(cand(fix_of=True)), "fix_of must be an integer or null, not a boolean"),
        (wave(cand(fix_of=3.0)), "fix_of must be an integer or null, not a number"),
        (wave(cand(tier=["screen"])), "tier must be a string, not an array"),
        (
            wave(cand(edits=[{"search": 5}])),
            r"edits\[0\]\.search must be a string.*edits\[0\]\.replace is missing",
        ),
        (wave(cand(knobs=[{"name": ["LR"], "value": "1"}])), r"knobs\[0\]\.name must be a string"),
        (wave(cand(knobs=[{"name": "LR"}])), r"knobs\[0\]\.value is missing"),
        (
            {"rationale": "r", "candidates": {"a": 1}, "grids": []},
            "candidates must be an array, not an object",
        ),
        ({"rationale": ["r"], "candidates": [cand()]}, "rationale must be a string"),
        (
            wave(grids=[{"description": "g", "factors": [{"name": "LR", "levels": "0.1"}]}]),
            r"grids\[0\]\.factors\[0\]\.levels must be an array, not a string",
        ),
        (
            wave(grids=[{"description": "g", "factors": [{"name": "LR", "levels": [["0.1"]]}]}]),
            r"levels\[0\] must be a JSON-encoded value in a string .*, not an array",
        ),
        (
            wave(grids=[{"description": "g", "factors": [{"name": "ACTIVATION", "levels": ['"a\\nb"']}]}]),
            "value of ACTIVATION has control characters",
        ),
        (
            # a grid of 100**3000 cells: its size is refused in words (Python will not print it)
            wave(
                grids=[
                    {
                        "description": "g",
                        "factors": [
                            {"name": f"K{i}", "levels": list(map(str, range(100)))} for i in range(3000)
                        ],
                    }
                ]
            ),
            r"the wave has more than 10\^12 experiments",
        ),
    ],
)
def test_bad_proposals_are_refused_with_a_reason(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ProposalError, match=message):
        parse_proposal(raw, sample_context())


def test_a_good_proposal_parses() -> None:
    grid = {
        "description": "g",
        "hypothesis": "",
        "factors": [
            {"name": "DEPTH", "levels": ["6", "10"]},
            {"name": "ACTIVATION", "levels": ['"gelu"', "relu2"]},
        ],
        "shared_edits": [{"search": "WARMUP = 0.1", "replace": "WARMUP = 0.2"}],
        "tier": "validate",
    }
    parsed = parse_proposal(wave(cand(fix_of=3), grids=[grid]), sample_context(), source="claude")
    assert parsed.candidates[0].fix_of == 3 and parsed.candidates[0].knobs == {"LR": 0.02}
    assert parsed.grids[0].factors == {"DEPTH": [6, 10], "ACTIVATION": ["gelu", "relu2"]}
    assert next(parsed.grids[0].expand()).knobs == {"DEPTH": 6, "ACTIVATION": "gelu"}
    assert parsed.source == "claude"


def test_a_grid_may_sweep_a_constant_its_shared_edit_adds() -> None:
    """program.md says to sweep knobs on top of one structural change; that change may add the
    constant swept, and the engine builds such a cell, so the proposal is not refused for it."""
    adds = {"search": "WARMUP = 0.1\n", "replace": "WARMUP = 0.1\nWARMDOWN = 0.5\n"}
    grid = {
        "description": "warmdown sweep",
        "factors": [{"name": "WARMDOWN", "levels": ["0.3", "0.6"]}],
        "shared_edits": [adds],
    }
    with_cand = cand(edits=[adds], knobs=[{"name": "WARMDOWN", "value": "0.2"}])
    parsed = parse_proposal(wave(with_cand, grids=[grid]), sample_context())
    cell = next(parsed.grids[0].expand())
    built = build_source(SAMPLE_TRAIN_PY, cell.edits, cell.knobs)
    assert "WARMDOWN = 0.3" in built and parsed.candidates[0].knobs == {"WARMDOWN": 0.2}
    # without the edit that adds it, the name is still refused
    with pytest.raises(ProposalError, match="WARMDOWN is not a constant"):
        parse_proposal(wave(grids=[{**grid, "shared_edits": []}]), sample_context())


@pytest.mark.parametrize(
    ("name", "value"),
    [("LR", 5), ("LR", 1e-5), ("DEPTH", 8.5), ("DEPTH", True), ("ACTIVATION", "swish")],
)
def test_a_declared_knob_out_of_its_range_is_refused_in_the_same_wave(name: str, value: Any) -> None:
    """The engine would refuse it when queueing it (an invalid trial, seen a wave later): the
    model is told at once, in the engine's own words."""
    context = sample_context()
    spec = next(k for k in context.knobs if k.name == name)
    why = knob_value_problem(spec, value)
    assert why  # the engine refuses it
    level = {"name": name, "levels": [json.dumps(value)]}
    grid = {"description": "g", "factors": [level]}
    for raw in (wave(cand(knobs=[{"name": name, "value": json.dumps(value)}])), wave(grids=[grid])):
        with pytest.raises(ProposalError, match=re.escape(f"knob {name}: {why}")):
            parse_proposal(raw, context)


def test_knob_values_the_frontier_has_already_are_refused() -> None:
    """The engine would skip such a run ("no change: already part of the frontier")."""
    context = sample_context()
    with pytest.raises(ProposalError, match="frontier's already, so nothing would change"):
        parse_proposal(wave(cand(knobs=[{"name": "LR", "value": "0.04"}])), context)
    parse_proposal(wave(cand(knobs=[{"name": "LR", "value": "0.05"}])), context)


@pytest.mark.parametrize(
    ("edits", "knobs", "words"),
    [
        (
            [{"search": "LR = 0.04", "replace": "LR = 0.02"}],
            [{"name": "LR", "value": "0.04"}],
            "edits and knob values",
        ),
        (
            [
                {"search": "DEPTH = 8", "replace": "DEPTH = 9"},
                {"search": "DEPTH = 9", "replace": "DEPTH = 8"},
            ],
            [],
            "edits",
        ),
    ],
)
def test_edits_that_give_back_the_frontier_are_refused(
    edits: list[dict[str, str]], knobs: list[dict[str, str]], words: str
) -> None:
    """The launcher would skip such a run ("no change: already part of the frontier"), as it would
    knob values the frontier has already; edits that change more than a knob sets back are taken."""
    why = f"candidate 'd': its {words} leave train.py the frontier's, so nothing would change"
    with pytest.raises(ProposalError, match=re.escape(why)):
        parse_proposal(wave(cand(edits=edits, knobs=knobs)), sample_context())
    more = [*edits, {"search": "WARMUP = 0.1", "replace": "WARMUP = 0.2"}]
    parse_proposal(wave(cand(edits=more, knobs=[{"name": "LR", "value": "0.05"}])), sample_context())


@pytest.mark.parametrize(
    "edits",
    [
        [{"search": "LR = 0.04", "replace": "LR = 0.03"}],
        [{"search": "DEPTH = 8", "replace": "DEPTH = 9"}, {"search": "DEPTH = 9", "replace": "DEPTH = 8"}],
    ],
    ids=["an edit the knob writes over", "edits that undo each other"],
)
@pytest.mark.parametrize(
    ("value", "run"),
    [("null", "the sampler's draw of its free knobs"), ("0.02", "its knob values alone")],
    ids=["a free knob", "a fixed knob"],
)
def test_edits_that_change_only_what_a_candidates_knobs_set_are_refused(
    edits: list[dict[str, str]], value: str, run: str
) -> None:
    """Such a candidate passed: its run, the sampler's draw of LR or (`LR = 0.03` under LR=0.02)
    the one LR=0.02 alone gives, was judged as a change its edits never made, a slot spent on a
    run the sampler does not learn from (only a run with no edits is knob-only). An edit that
    changes more is taken, and so is one of a constant no knob of the candidate sets."""
    knobs = [{"name": "LR", "value": value}]
    why = f"its edits leave train.py the frontier's but for what its knobs set, so its run would be {run}"
    with pytest.raises(ProposalError, match=re.escape(f"candidate 'd': {why} judged as a change")):
        parse_proposal(wave(cand(edits=edits, knobs=knobs)), sample_context())
    warmup = {"search": "WARMUP = 0.1", "replace": "WARMUP = 0.2"}
    for taken in ([*edits, warmup], [warmup]):
        assert parse_proposal(wave(cand(edits=taken, knobs=knobs)), sample_context())


def test_an_edit_to_an_undeclared_knob_left_free_is_not_said_to_be_drawn_over() -> None:
    """The sampler draws no undeclared knob, so the edit stands: the wave asked for its value and,
    in the same breath, to drop the edit as one the sampler's draw writes over."""
    edit = {"search": "WARMUP = 0.1", "replace": "WARMUP = 0.2"}
    with pytest.raises(ProposalError) as refused:
        parse_proposal(
            wave(cand(edits=[edit], knobs=[{"name": "WARMUP", "value": "null"}])), sample_context()
        )
    assert str(refused.value) == "candidate 'd': WARMUP=null (free) needs a declared knob; give a value"


def test_a_grid_whose_only_cell_is_the_frontier_is_refused_and_one_with_a_frontier_cell_taken() -> None:
    """Its one cell was skipped by the launcher ("no change: already part of the frontier"), a place
    of the wave lost, where a candidate of the same values is refused. A shared edit its level undoes
    is no change either. A larger grid holding the frontier's levels is a factorial design: taken."""
    at_frontier = [{"name": "LR", "levels": ["0.04"]}, {"name": "DEPTH", "levels": ["8"]}]
    undone = {"search": "DEPTH = 8", "replace": "DEPTH = 9"}
    why = "its only cell leaves train.py the frontier's, so nothing would change"
    for grid in (
        {"description": "g", "factors": at_frontier},
        {"description": "g", "factors": at_frontier[1:], "shared_edits": [undone]},
    ):
        with pytest.raises(ProposalError, match=re.escape(f"grid 'g': {why}")):
            parse_proposal(wave(grids=[grid]), sample_context())
    around = [{"name": "LR", "levels": ["0.04", "0.08"]}, {"name": "DEPTH", "levels": ["8", "10"]}]
    for factors in (around, [{"name": "LR", "levels": ["0.08"]}, {"name": "DEPTH", "levels": ["8"]}]):
        assert parse_proposal(wave(grids=[{"description": "g", "factors": factors}]), sample_context())


@pytest.mark.parametrize(
    "shared",
    [
        [{"search": "DEPTH = 8", "replace": "DEPTH = 9"}],
        [{"search": "DEPTH = 8\nLR = 0.04", "replace": "DEPTH = 12\nLR = 0.03"}],
    ],
    ids=["a factor's constant", "two factors' constants"],
)
def test_a_grid_whose_factors_write_over_its_shared_edits_is_refused(shared: list[dict[str, str]]) -> None:
    """A shared edit of a constant its factors set (`DEPTH = 9` under DEPTH levels 6 and 10) passed
    and every cell ran as a code change, though each train.py was its levels' alone. A shared edit
    that changes more, or a constant no factor sets, is taken."""
    factors = [{"name": "LR", "levels": ["0.02", "0.08"]}, {"name": "DEPTH", "levels": ["6", "10"]}]
    why = "grid 'g': its shared edits leave train.py the frontier's but for what its factors set"
    with pytest.raises(ProposalError, match=re.escape(why)):
        parse_proposal(
            wave(grids=[{"description": "g", "factors": factors, "shared_edits": shared}]), sample_context()
        )
    warmup = {"search": "WARMUP = 0.1", "replace": "WARMUP = 0.2"}
    for edits in ([*shared, warmup], [warmup]):
        grid = {"description": "g", "factors": factors, "shared_edits": edits}
        assert parse_proposal(wave(grids=[grid]), sample_context())


def test_edits_that_assign_a_set_constant_twice_are_refused_in_the_engines_words() -> None:
    """WARMUP is no declared knob: a shared edit (or a candidate's edit) that assigns it again,
    under a factor (or knob) that sets it, made the engine refuse each run when it queued it,
    the model told a wave late. Said in the wave now, in the engine's words."""
    twice = [{"search": "WARMUP = 0.1\n", "replace": "WARMUP = 0.1\nWARMUP = 0.2\n"}]
    engine = "knob WARMUP is assigned 2 times in train.py; cannot set it"
    with pytest.raises(InvalidCandidate, match=re.escape(engine)):
        build_source(SAMPLE_TRAIN_PY, [Edit(**twice[0])], {"WARMUP": 0.3})
    grid = {
        "description": "g",
        "factors": [{"name": "WARMUP", "levels": ["0.2", "0.3"]}],
        "shared_edits": twice,
    }
    with pytest.raises(ProposalError, match=re.escape(f"grid 'g': {engine}")):
        parse_proposal(wave(grids=[grid]), sample_context())
    with pytest.raises(ProposalError, match=re.escape(f"candidate 'd': {engine}")):
        parse_proposal(wave(cand(edits=twice, knobs=[{"name": "WARMUP", "value": "0.3"}])), sample_context())
    # an edit that adds a second assignment of a constant no knob sets is the run's to keep
    parse_proposal(wave(cand(edits=twice, knobs=[{"name": "LR", "value": "0.02"}])), sample_context())


def test_a_shared_edit_that_replaces_a_text_by_itself_is_refused_as_a_candidates_is() -> None:
    itself = [{"search": "WARMUP = 0.1", "replace": "WARMUP = 0.1"}]
    grid = {
        "description": "g",
        "factors": [{"name": "LR", "levels": ["0.02", "0.03"]}],
        "shared_edits": itself,
    }
    with pytest.raises(ProposalError, match="grid 'g': edit 1 replaces a text by itself"):
        parse_proposal(wave(grids=[grid]), sample_context())
    with pytest.raises(ProposalError, match="candidate 'd': edit 1 replaces a text by itself"):
        parse_proposal(wave(cand(edits=itself)), sample_context())


def test_a_tier_the_campaign_does_not_offer_is_refused() -> None:
    """The prompt lists only the tiers a proposal may use (no validate partition, or nothing
    to confirm on it); the engine refuses the others when queueing them."""
    context = sample_context(tiers={"screen": "h100 x13"})
    grid = {"description": "g", "factors": [{"name": "LR", "levels": ["0.02"]}], "tier": "validate"}
    for raw in (wave(cand(tier="validate")), wave(grids=[grid])):
        with pytest.raises(ProposalError, match="tier 'validate' is not open in this campaign; use screen"):
            parse_proposal(raw, context)


def test_the_edit_size_limit_is_in_the_tool_description() -> None:
    edit = PROPOSE_WAVE["input_schema"]["properties"]["candidates"]["items"]["properties"]["edits"]
    assert f"At most {MAX_EDIT_CHARS} characters" in edit["items"]["properties"]["search"]["description"]


def test_the_train_py_size_limit_is_in_the_tool_description() -> None:
    edits = PROPOSE_WAVE["input_schema"]["properties"]["candidates"]["items"]["properties"]["edits"]
    assert f"at most {MAX_TRAIN_PY_CHARS} characters" in edits["description"]


def growing_edits(count: int) -> list[dict[str, str]]:
    """`count` edits, each adding a comment of 19,000 characters after the one before."""
    edits = [{"search": "DEPTH = 8\n", "replace": "DEPTH = 8\n#m0 " + "x" * 19_000 + "\n"}]
    edits += [{"search": f"#m{i - 1} ", "replace": f"#m{i} " + "x" * 19_000} for i in range(1, count)]
    return edits


def test_an_edit_that_makes_train_py_too_large_is_refused_with_the_numbers() -> None:
    """The engine refuses a train.py over MAX_TRAIN_PY_CHARS when it queues it (a wasted slot, seen
    a wave later): the tool refuses it in the wave, saying how long the file would be."""
    context = sample_context()
    edits = growing_edits(11)
    size = len(SAMPLE_TRAIN_PY) + sum(len(e["replace"]) - len(e["search"]) for e in edits)
    assert size > MAX_TRAIN_PY_CHARS
    engine_refuses = f"would be too large: {size:,} characters, over the limit of {MAX_TRAIN_PY_CHARS:,}"
    with pytest.raises(InvalidCandidate, match=engine_refuses):
        build_source(SAMPLE_TRAIN_PY, [Edit(e["search"], e["replace"]) for e in edits], {})
    why = (
        f"train.py with its edits would be too large: {size:,} characters, over the limit of "
        f"{MAX_TRAIN_PY_CHARS:,} (the frontier's has {len(SAMPLE_TRAIN_PY):,})"
    )
    grid = {"description": "g", "factors": [{"name": "LR", "levels": ["0.02"]}], "shared_edits": edits}
    for raw in (wave(cand(edits=edits, knobs=[])), wave(grids=[grid])):
        with pytest.raises(ProposalError, match=re.escape(why)):
            parse_proposal(raw, context)
    parse_proposal(wave(cand(edits=growing_edits(10), knobs=[])), context)  # 190,000 and more: runs


def test_a_repair_past_the_fix_limit_is_refused_in_the_wave() -> None:
    """The engine refuses a fix past agent.max_fix_attempts when it queues it: the tool refuses it
    while the model can still spend the slot on something else, counting the wave's own fixes in
    the order the engine queues them."""
    fix = cand(fix_of=3)
    other = cand(fix_of=3, knobs=[{"name": "LR", "value": "0.03"}])
    with pytest.raises(ProposalError, match=re.escape("trial 3 already had 2 fix attempts (limit 2)")):
        parse_proposal(wave(fix), sample_context(fix_attempts={3: 2}))
    parse_proposal(wave(fix), sample_context(fix_attempts={3: 2}), max_fix_attempts=3)
    one_left = sample_context(fix_attempts={3: 1})
    parse_proposal(wave(fix), one_left)
    earlier = "trial 3 already had 1 fix attempts, and this wave repairs it 1 time(s) before (limit 2)"
    with pytest.raises(ProposalError, match=re.escape(earlier)) as refused:
        parse_proposal(wave(fix, other), one_left)
    assert str(refused.value).startswith("candidate 'd': trial 3")  # the second, named; the first passes


def test_the_tool_counts_fix_attempts_as_the_engine_does(tmp_path: Path) -> None:
    """The context a campaign gives its proposer counts a crash's repairs as its intake does: the
    tool refuses exactly the fix the intake would, and a retry of a fix lost to the cluster stands
    for that run, not for an attempt of its own."""
    campaign = scripted_campaign(tmp_path, [])
    try:
        campaign.open()
        intake, ledger = campaign.intake, campaign.ledger
        crash = ledger.size()
        intake.add(Candidate("broken", "", knobs={"LR": 0.05}), {"kind": "experiment", "wave": 1})
        assert ledger.claim(ledger.trial(crash))
        ledger.fail(crash, {"status": "crash", "reason": "RuntimeError"})

        def fix(lr: float) -> Candidate:
            return Candidate(f"repaired, LR={lr}", "", knobs={"LR": lr}, fix_of=crash)

        def tool_refuses(lr: float) -> str:
            raw = wave(cand(description=f"repaired, LR={lr}", knobs=[{"name": "LR", "value": str(lr)}]))
            raw["candidates"][0]["fix_of"] = crash
            try:
                parse_proposal(raw, campaign.context(), max_fix_attempts=campaign.cfg.agent.max_fix_attempts)
            except ProposalError as err:
                return str(err)
            return ""

        intake.wave(Wave(rationale="fix", candidates=[fix(0.06)]))
        lost = ledger.size() - 1
        assert ledger.claim(ledger.trial(lost))
        ledger.fail(lost, {"status": "lost"})
        assert intake.retry(ledger.trial(lost)) == ""  # queued again, with its fix_of
        assert campaign.context().fix_attempts == {crash: 1}
        assert tool_refuses(0.07) == "" and intake.precheck(fix(0.07)) == ""

        intake.wave(Wave(rationale="second try", candidates=[fix(0.07)]))
        limit = campaign.cfg.agent.max_fix_attempts
        assert campaign.context().fix_attempts == {crash: limit} == {crash: 2}
        why = intake.precheck(fix(0.08))
        assert why == f"trial {crash} already had 2 fix attempts (limit 2)"
        assert why in tool_refuses(0.08)
    finally:
        release(campaign)


def test_what_is_only_kept_is_cut_to_a_plain_line_not_refused() -> None:
    """A hypothesis or a rationale is kept (report, W&B, proposals/) and logged, not used as a
    name: one too long is cut, and a control character (an escape sequence into the terminal that
    shows the log) made a space, instead of costing the wave a turn."""
    raw = wave(cand(hypothesis="why\n\x1b[2J" + "h" * 5000))
    raw["rationale"] = "because\r\n" + "r" * 10_000
    parsed = parse_proposal(raw, sample_context())
    assert parsed.rationale.startswith("because  r") and len(parsed.rationale) == MAX_RATIONALE
    hypothesis = parsed.candidates[0].hypothesis
    assert hypothesis.startswith("why  [2J") and len(hypothesis) == MAX_HYPOTHESIS


def test_optional_fields_may_be_left_out() -> None:
    """The schema asks for every field; a model that leaves out one the engine can do without is
    not refused for it (only a wrong type is)."""
    parsed = parse_proposal(
        {"candidates": [{"description": "d", "knobs": [{"name": "LR", "value": 0.02}]}]}, sample_context()
    )
    assert parsed.candidates[0].knobs == {"LR": 0.02} and parsed.candidates[0].tier == "screen"


def write(tmp_path: Path, number: int, name: str, text: str) -> None:
    folder = tmp_path / "experiments" / f"{number:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_inspection_tools_read_bounded_views(tmp_path: Path) -> None:
    inspector = Inspector(sample_context(30), tmp_path)
    write(tmp_path, 5, "train.diff", "--- a/train.py\n+++ b/train.py\n-LR = 0.04\n+LR = 0.02\n")
    write(tmp_path, 3, "run.log", "".join(f"line {i}\n" for i in range(5000)) + "CUDA out of memory\n")

    diff, err = inspector.run("get_diff", {"number": 5})
    assert not err and "+LR = 0.02" in diff
    tail, err = inspector.run("get_log_tail", {"number": 3})
    assert not err and tail.endswith("CUDA out of memory\n") and len(tail) <= RESULT_CHARS + 80
    results, err = inspector.run("get_results", {"numbers": [5, 3, 999]})
    assert not err and '"number": 5' in results and "999" in results.splitlines()[-1]
    grouped, err = inspector.run("results_by_knob", {"knob": "LR"})
    assert not err and "mean" in grouped and "screen" in grouped

    assert inspector.run("get_diff", {"number": 6})[1] is True
    assert inspector.run("get_log_tail", {"number": 8})[1] is True
    assert inspector.run("results_by_knob", {"knob": "NOPE"})[1] is True
    assert inspector.run("delete_everything", {})[1] is True
    assert inspector.run("get_diff", {"numbr": 5})[1] is True
    # wrong types, and an error that quotes a huge input, come back as short errors
    assert inspector.run("get_results", {"numbers": "abc"})[1] is True
    assert inspector.run("get_diff", {"number": None})[1] is True
    assert inspector.run("results_by_knob", {"knob": ["LR"]})[1] is True
    text, err = inspector.run("results_by_knob", {"knob": "LR" * 100_000})
    assert err and len(text) < RESULT_CHARS + 100


def test_get_train_py_answers_whole_lines_within_the_answer_limit(tmp_path: Path) -> None:
    """A search text must quote train.py exactly: a line is never cut, and a range too long for
    one answer says where to ask again."""
    source = "".join(f"X_{i} = {i}  # {'a comment ' * 8}\n" for i in range(1, 501))
    inspector = Inspector(sample_context(3, frontier_source=source), tmp_path)
    lines = source.splitlines(keepends=True)

    text, err = inspector.run("get_train_py", {"first_line": 499, "last_line": 600})
    assert not err and text == "train.py lines 499-500 of 500:\n" + "".join(lines[498:])
    text, err = inspector.run("get_train_py", {"first_line": 10, "last_line": 500})
    heading, _, body = text.partition("\n")
    end = int(heading.split("-")[1].split()[0])
    assert not err and len(text) <= RESULT_CHARS and body == "".join(lines[9:end])
    assert heading.endswith(f"(the answer is full: ask again from first_line={end + 1}):")
    for first, last in ((0, 5), (7, 6), (501, 510)):
        text, err = inspector.run("get_train_py", {"first_line": first, "last_line": last})
        assert err and text.startswith("train.py has lines 1 to 500")


def test_huge_outputs_are_cut(tmp_path: Path) -> None:
    write(tmp_path, 5, "train.diff", "+" + "x" * 50_000)
    text, err = Inspector(sample_context(10), tmp_path).run("get_diff", {"number": 5})
    assert not err and len(text) < RESULT_CHARS + 100 and "more characters cut" in text


TYPED_TRAIN_PY = SAMPLE_TRAIN_PY + 'HEADS = 4\nTIED = True\nNORM = "rms"\nSCHEDULE = make_schedule()\n'


def typed_context() -> CampaignContext:
    """The sample campaign on a train.py with undeclared constants of each type, and one whose
    type the syntax cannot tell."""
    return sample_context(frontier_source=TYPED_TRAIN_PY, knob_values=read_knobs(TYPED_TRAIN_PY))


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("HEADS", '"eight"', "knob HEADS: 'eight' is a str, but train.py's HEADS is an int (line 10)"),
        ("HEADS", "2.5", "knob HEADS: 2.5 is a float, but train.py's HEADS is an int (line 10)"),
        ("TIED", "1", "knob TIED: 1 is an int, but train.py's TIED is a bool (line 11)"),
        ("WARMUP", '"0.2"', "knob WARMUP: '0.2' is a str, but train.py's WARMUP is a float (line 4)"),
        ("WARMUP", "true", "knob WARMUP: True is a bool, but train.py's WARMUP is a float (line 4)"),
        ("NORM", "3", "knob NORM: 3 is an int, but train.py's NORM is a str (line 12)"),
    ],
)
def test_an_undeclared_constant_given_a_value_of_another_type_is_refused_in_the_same_wave(
    name: str, value: str, why: str
) -> None:
    """Written over the constant, it passed every check and crashed the run, a slot later."""
    grid = {"description": "g", "factors": [{"name": name, "levels": [value]}]}
    for raw in (wave(cand(knobs=[{"name": name, "value": value}])), wave(grids=[grid])):
        with pytest.raises(ProposalError, match=re.escape(why)):
            parse_proposal(raw, typed_context())


@pytest.mark.parametrize(
    ("name", "value"),
    [("WARMUP", "1"), ("HEADS", "6"), ("TIED", "false"), ("NORM", '"layer"'), ("SCHEDULE", '"cosine"')],
)
def test_a_value_of_the_constants_type_or_of_one_the_syntax_cannot_tell_is_taken(
    name: str, value: str
) -> None:
    """An int serves for a float; a constant set by a call is not judged."""
    parsed = parse_proposal(wave(cand(knobs=[{"name": name, "value": value}])), typed_context())
    assert parsed.candidates[0].knobs == {name: json.loads(value)}


def test_a_value_is_judged_by_the_type_the_edits_give_the_constant() -> None:
    retype = {"search": "NORM = ", "replace": "NORM = 0.5 or "}  # a type the syntax cannot tell
    more = {"search": "HEADS = 4", "replace": "HEADS = 2"}  # (an edit the knob wrote over alone is refused)
    edited = wave(cand(edits=[retype, more], knobs=[{"name": "NORM", "value": "3"}]))
    assert parse_proposal(edited, typed_context()).candidates[0].knobs == {"NORM": 3}
    to_int = {"search": 'NORM = "rms"', "replace": "NORM = 2"}
    with pytest.raises(ProposalError, match=re.escape("'layer' is a str, but train.py's NORM is an int")):
        parse_proposal(
            wave(cand(edits=[to_int], knobs=[{"name": "NORM", "value": '"layer"'}])), typed_context()
        )


def test_an_int_over_a_float_constant_is_written_as_a_float_so_the_constant_stays_one() -> None:
    """Written as `WARMUP = 1`, a kept change made WARMUP an int, and every later fraction for it
    was refused as the wrong type."""
    kept = build_source(SAMPLE_TRAIN_PY, [], {"WARMUP": 1})
    assert "WARMUP = 1.0\n" in kept
    after = sample_context(frontier_source=kept, knob_values=read_knobs(kept))
    assert parse_proposal(wave(cand(knobs=[{"name": "WARMUP", "value": "0.2"}])), after).candidates
    with pytest.raises(ProposalError, match="frontier's already"):
        parse_proposal(wave(cand(knobs=[{"name": "WARMUP", "value": "1"}])), after)


@pytest.mark.parametrize("value", ["1.0", "true"])
def test_a_declared_choice_is_matched_by_its_type_not_only_by_equality(value: str) -> None:
    """True == 1 == 1.0 in Python: `DEPTH = 1.0` or `DEPTH = True` passed for the choice 1, and
    the run crashed where train.py counts with it."""
    context = sample_context(knobs=[KnobSpec("DEPTH", "categorical", choices=(1, 8))])
    why = f"knob DEPTH: {json.loads(value)!r} is not one of its choices [1, 8]"
    with pytest.raises(ProposalError, match=re.escape(why)):
        parse_proposal(wave(cand(knobs=[{"name": "DEPTH", "value": value}])), context)
    assert parse_proposal(wave(cand(knobs=[{"name": "DEPTH", "value": "1"}])), context).candidates


@pytest.mark.parametrize(
    ("search", "replace", "why"),
    [
        (
            "DEPTH = 8",
            'DEPTH = "8"',
            "knob DEPTH: the edits make train.py's DEPTH a str (line 2: DEPTH = \"8\"), where the frontier's "
            "is an int; it is a declared int knob: keep it an int",
        ),
        (
            "DEPTH = 8",
            "DEPTH = 8.5",
            "knob DEPTH: the edits make train.py's DEPTH a float (line 2: DEPTH = 8.5)",
        ),
        ("LR = 0.04", "LR = 1", "knob LR: the edits make train.py's LR an int (line 3: LR = 1), where the"),
        (
            'ACTIVATION = "relu2"',
            "ACTIVATION = 2",
            "an int (line 5: ACTIVATION = 2), where the frontier's is a str; it is a declared knob of choices "
            "['relu2', 'gelu']: keep it a str",
        ),
    ],
)
def test_an_edit_that_retypes_a_declared_knobs_constant_is_refused_in_the_same_wave(
    search: str, replace: str, why: str
) -> None:
    """Every draw of the knob is written over the constant as its type: after `DEPTH = 8.5` as a
    float, after `DEPTH = "8"` not at all where a candidate left DEPTH as the edit had it. An edit
    that keeps the type, or gives one the syntax cannot tell, is taken."""
    edit = {"search": search, "replace": replace}
    grid = {"description": "g", "factors": [{"name": "WARMUP", "levels": ["0.2"]}], "shared_edits": [edit]}
    for raw in (wave(cand(edits=[edit])), wave(grids=[grid])):
        with pytest.raises(ProposalError, match=re.escape(why)):
            parse_proposal(raw, sample_context())
    for kept in ("DEPTH = 10", "DEPTH = 2 * 5", "DEPTH = int(depth_from_env())"):
        assert parse_proposal(wave(cand(edits=[{"search": "DEPTH = 8", "replace": kept}])), sample_context())


SETTABLE = "a knob must be one module-level assignment, NAME = value, for the engine to set it"


@pytest.mark.parametrize(
    ("replace", "why"),
    [
        ("LR = 0.04\nLR = LR * 4\n", f"knob LR is assigned 2 times in train.py: {SETTABLE}"),
        ("LR = 0.04\nLR *= 4\n", f"knob LR is bound again after its assignment in train.py: {SETTABLE}"),
        (
            "LR, SPARE = 0.04, 1\n",
            f"knob LR is not a module-level constant (NAME = value) of train.py: {SETTABLE}",
        ),
    ],
)
def test_an_edit_that_leaves_a_declared_knob_unsettable_is_refused_in_the_same_wave(
    replace: str, why: str
) -> None:
    """The engine refused `LR = LR * 4` when it queued it (an invalid trial, a place of the wave
    lost, the model told a wave later); it is said in the wave now, in the engine's words. An edit
    of the value alone is taken."""
    edit = {"search": "LR = 0.04\n", "replace": replace}
    grid = {"description": "g", "factors": [{"name": "WARMUP", "levels": ["0.2"]}], "shared_edits": [edit]}
    for raw in (wave(cand(edits=[edit], knobs=[])), wave(grids=[grid])):
        with pytest.raises(ProposalError, match=re.escape(why)):
            parse_proposal(raw, sample_context())
    assert parse_proposal(
        wave(cand(edits=[{"search": "LR = 0.04\n", "replace": "LR = 0.04 * 4\n"}], knobs=[])),
        sample_context(),
    )


def test_a_knob_the_frontier_could_not_set_already_is_not_the_edits_doing() -> None:
    """A frontier kept before the engine's check may assign a knob twice: other edits are taken."""
    source = SAMPLE_TRAIN_PY.replace("LR = 0.04\n", "LR = 0.04\nLR = LR * 4\n")
    context = sample_context(frontier_source=source)
    wider = {"search": "DEPTH = 8\n", "replace": "DEPTH = 10\n"}
    assert parse_proposal(wave(cand(edits=[wider], knobs=[])), context)
    twice = {"search": "DEPTH = 8\n", "replace": "DEPTH = 8\nDEPTH = 10\n"}
    with pytest.raises(
        ProposalError, match=re.escape(f"knob DEPTH is assigned 2 times in train.py: {SETTABLE}")
    ):
        parse_proposal(wave(cand(edits=[twice], knobs=[])), context)


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        ({"search": "DEPTH", "replace": "D", "path": "prepare.py"}, "refused an edit to 'prepare.py'"),
        ({"search": "DEPTH = 8", "replace": "DEPTH = 9", "path": "../x"}, "refused an edit to '../x'"),
        ({"search": "DEPTH = 8", "replace": "DEPTH = 9", "path": "/tmp/train.py"}, "edit to '/tmp/train.py'"),
        (
            {"search": "DEPTH = 8", "replace": "DEPTH = 8\n" + "#" * MAX_EDIT_CHARS},
            f"edit 1 is too large (over {MAX_EDIT_CHARS} characters)",
        ),
        ({"search": "DEPTH = 8", "replace": "DEPTH = (8"}, "edited train.py does not parse: line 2: "),
        ({"search": "DEPTH = 8", "replace": "DEPTH = 8\nprepare.SEED = 1"}, "may not modify the harness"),
    ],
)
def test_an_edit_no_frontier_can_run_is_refused_in_the_wave(edit: dict[str, str], why: str) -> None:
    """Another file, too many characters, a train.py that does not parse: the engine refused it
    when it queued it (an invalid trial, a place of the wave lost, told a wave later). The frontier
    moving changes none of it, so the model is told in the wave, in the engine's words."""
    with pytest.raises(InvalidCandidate, match=re.escape(why)):
        build_source(SAMPLE_TRAIN_PY, [Edit(**edit)], {})
    grid = {"description": "g", "factors": [{"name": "LR", "levels": ["0.02"]}], "shared_edits": [edit]}
    for raw in (wave(cand(edits=[edit], knobs=[])), wave(grids=[grid])):
        with pytest.raises(ProposalError, match=re.escape(why)):
            parse_proposal(raw, sample_context())


def test_grid_levels_train_py_would_be_given_as_one_are_refused_as_repeats() -> None:
    """Levels 1 and 1.0 of a float constant are one train.py (an int is written as a float there):
    compared as JSON they passed, and the engine skipped the second cell as a twin of the first. Over
    a constant whose type the syntax cannot tell, they are written as given: two train.py files."""
    one, one_point_zero = (build_source(TYPED_TRAIN_PY, [], {"WARMUP": v}) for v in (1, 1.0))
    assert one == one_point_zero
    grid = {"description": "g", "factors": [{"name": "WARMUP", "levels": ["0.5", "1", "1.0"]}]}
    why = "factor WARMUP repeats a level (1 and 1.0 are both written WARMUP = 1.0): give each level once"
    with pytest.raises(ProposalError, match=re.escape(why)):
        parse_proposal(wave(grids=[grid]), typed_context())
    untyped = {"description": "g", "factors": [{"name": "SCHEDULE", "levels": ["1", "1.0"]}]}
    assert parse_proposal(wave(grids=[untyped]), typed_context()).grids[0].size() == 2


@pytest.mark.parametrize(
    ("description", "factor"),
    [
        ("g", {"name": "NORM", "levels": ['"rms"', '"' + "x" * 192 + '"']}),
        ("lr sweep " + "x" * 182, {"name": "LR", "levels": ["0.02", "0.03"]}),
    ],
)
def test_a_grid_whose_cells_descriptions_would_pass_the_limit_is_refused(
    description: str, factor: dict[str, Any]
) -> None:
    """A cell is described `description [KNOB=value, ...]`: a long string level, or a description
    near the limit, made one longer than any candidate's may be, in every table and log line."""
    grid = {"description": description, "factors": [factor]}
    with pytest.raises(ProposalError, match=r"would have 2\d\d characters, over the limit of 200"):
        parse_proposal(wave(grids=[grid]), typed_context())
    ok = {"description": "g", "factors": [{"name": "NORM", "levels": ['"rms"', '"' + "x" * 191 + '"']}]}
    cells = list(parse_proposal(wave(grids=[ok]), typed_context()).grids[0].expand())
    assert max(len(c.description) for c in cells) == 200
