"""The agent sees train.py whole, however long the history: the real SDK client over a scripted
HTTP transport (no network). Where train.py alone is too long for the budget, the prompt shows
its head and the model reads the rest with get_train_py."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from engine_helpers import CountingOffline

from autoresearch.agent.claude import ClaudeProposer
from autoresearch.agent.fakeapi import (
    SAMPLE_TRAIN_PY,
    ScriptedAPI,
    message_json,
    sample_context,
    tool_call,
    tool_use_block,
)
from autoresearch.agent.prompt import PROMPT_SHARE, default_program_md, estimate_tokens
from autoresearch.config import AgentConfig
from autoresearch.proposers.base import CampaignContext

MODEL = "claude-test-1"
WAVE = {
    "rationale": "one knob",
    "candidates": [
        {
            "description": "lower LR",
            "hypothesis": "the loss is noisy",
            "edits": [],
            "knobs": [{"name": "LR", "value": "0.02"}],
            "tier": "screen",
            "fix_of": None,
        }
    ],
    "grids": [],
}


def grown_train_py(helpers: int) -> str:
    """The sample train.py after kept changes added `helpers` functions, each at the end."""
    added = (
        f"\n\ndef helper_{i}(x):\n    return x * {i} + {i} ** 2  # added by a kept change\n"
        for i in range(helpers)
    )
    return SAMPLE_TRAIN_PY + "".join(added)


def long_campaign(train_py: str) -> CampaignContext:
    """400 finished experiments, described at the length a model writes them."""
    context = sample_context(400, frontier_source=train_py)
    detail = "swap the MLP for a gated unit, scale the residual branch by 1/sqrt(depth), warm up"
    context.history = [
        dataclasses.replace(r, description=f"{r.description}: {detail} {r.number % 7} steps")
        for r in context.history
    ]
    return context


def propose(tmp_path: Path, api: ScriptedAPI, context: CampaignContext, **cfg: Any) -> None:
    config = AgentConfig(kind="claude", model=MODEL, **cfg)
    proposer = ClaudeProposer(
        config, tmp_path, CountingOffline(), client=api.client(), program_md=default_program_md()
    )
    proposer.propose(context)


def table_rows(user: str, title: str) -> int:
    return len(user.split(f"## {title}\n", 1)[1].split("\n\n", 1)[0].splitlines()) - 1


def test_a_long_history_no_longer_cuts_train_py(tmp_path: Path) -> None:
    """Over the budget, every cap was halved together, train.py's too (120,000 -> 60,000
    characters): the end of a grown train.py left the prompt, and the model proposed edits on
    code it could not see. Now the tables shrink and train.py stays whole."""
    train_py = grown_train_py(1000)
    assert 60_000 < len(train_py) < 120_000
    api = ScriptedAPI([tool_call("propose_wave", WAVE)], models=[MODEL])
    propose(tmp_path, api, long_campaign(train_py))

    body = api.message_bodies[0]
    frontier, user = body["system"][1]["text"], body["messages"][0]["content"][0]["text"]
    assert table_rows(user, "Most recent results") < 25  # the budget made the tables shrink
    assert "    return x * 999 + 999 ** 2  # added by a kept change\n```" in frontier
    assert train_py.rstrip("\n") in frontier and "get_train_py" not in frontier


def test_a_train_py_too_long_for_the_budget_is_cut_and_read_with_get_train_py(tmp_path: Path) -> None:
    """Where the tables at their smallest leave too little room, train.py is cut at a line, the
    cut says which lines are left out and how to read them, and get_train_py answers with them."""
    train_py = grown_train_py(1000)
    lines = train_py.splitlines()
    cut_notes: list[str] = []

    def read_what_is_not_shown(body: dict[str, Any]) -> dict[str, Any]:
        """The model: reads the first and the last lines the prompt says it does not show."""
        frontier = body["system"][1]["text"]
        cut_notes.extend(line for line in frontier.splitlines() if line.startswith("# ... ["))
        found = re.search(r"lines (\d+)-(\d+) \([\d,]+ characters\) are not shown", frontier)
        first, last = (int(found[1]), int(found[2])) if found else (1, 1)
        return message_json(
            [
                tool_use_block("get_train_py", {"first_line": first, "last_line": first + 3}),
                tool_use_block("get_train_py", {"first_line": last - 2, "last_line": last}),
            ]
        )

    api = ScriptedAPI([read_what_is_not_shown, tool_call("propose_wave", WAVE)], models=[MODEL])
    propose(tmp_path, api, long_campaign(train_py), max_context_tokens=20_000)

    first_request, second_request = api.message_bodies
    frontier = first_request["system"][1]["text"]
    shown = frontier.split("```python\n", 1)[1].split("\n# ... [", 1)[0]
    first = shown.count("\n") + 2  # the line after the last one shown
    hidden = len(train_py) - len(shown) - 1
    assert cut_notes == [
        f"# ... [train.py goes on: lines {first}-{len(lines)} ({hidden:,} characters) are not shown "
        "here. Read them with get_train_py before editing them.]"
    ]
    assert train_py.startswith(shown + "\n") and lines[-1] not in frontier  # cut at a whole line
    user = first_request["messages"][0]["content"][0]["text"]
    assert table_rows(user, "Most recent results") == 3  # the tables were at their smallest first
    chars = sum(len(b["text"]) for b in first_request["system"]) + len(user)
    assert estimate_tokens(chars + len(json.dumps(first_request["tools"]))) <= 20_000 * PROMPT_SHARE

    head, tail = (r for r in second_request["messages"][-1]["content"] if r["type"] == "tool_result")
    assert not head.get("is_error") and not tail.get("is_error")
    assert head["content"] == f"train.py lines {first}-{first + 3} of {len(lines)}:\n" + "".join(
        line + "\n" for line in lines[first - 1 : first + 3]
    )
    assert tail["content"].endswith("\n".join(lines[-3:]) + "\n")
