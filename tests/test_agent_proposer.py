"""ClaudeProposer against the real SDK client over a scripted HTTP transport (no network)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import anthropic
import httpx2
import pytest
from anthropic.types import Usage
from engine_helpers import CountingOffline, compose_config

from autoresearch.agent.claude import FALLBACK_SOURCE, RETRY_EVERY, ClaudeProposer
from autoresearch.agent.client import MODEL_CHECK_SECONDS, AgentSetupError, ModelNotFoundError, build_client
from autoresearch.agent.fakeapi import (
    ScriptedAPI,
    error_response,
    message_json,
    overloaded,
    rate_limited,
    sample_context,
    text_block,
    tool_call,
    tool_use_block,
    usage_json,
)
from autoresearch.agent.usage import (
    FIRST_TURN_WAVES,
    UsageLedger,
    dollars_for,
    dollars_spent,
    read_usage,
    usage_totals,
)
from autoresearch.budget import Spend, WaveDollars, exhausted, wave_dollars
from autoresearch.config import AgentConfig, BudgetConfig
from autoresearch.proposals import Edit, Wave
from autoresearch.pump import BackgroundPump, SyncPump

MODEL = "claude-test-1"

GOOD_WAVE = {
    "rationale": "LR looks under-tuned; the crash in #3 is a shape bug worth one fix.",
    "candidates": [
        {
            "description": "GELU instead of ReLU^2",
            "hypothesis": "smoother activation trains faster early",
            "edits": [{"search": "return relu(x) ** 2", "replace": "return gelu(x)"}],
            "knobs": [{"name": "ACTIVATION", "value": '"gelu"'}],
            "tier": "screen",
            "fix_of": None,
        },
        {
            "description": "fix of #3: transpose before the matmul",
            "hypothesis": "the idea of #3 was sound; only the shape was wrong",
            "edits": [],
            "knobs": [{"name": "DEPTH", "value": "10"}, {"name": "LR", "value": "null"}],
            "tier": "validate",
            "fix_of": 3,
        },
    ],
    "grids": [
        {
            "description": "LR x warmup",
            "hypothesis": "optimum LR depends on warmup",
            "factors": [
                {"name": "LR", "levels": ["0.02", "0.04", "0.08"]},
                {"name": "WARMUP", "levels": ["0.0", "0.1"]},
            ],
            "shared_edits": [],
            "tier": "screen",
        }
    ],
}

GOOD_WAVE_EDITS = [Edit("return relu(x) ** 2", "return gelu(x)")]


def make_proposer(tmp_path: Path, api: ScriptedAPI, max_retries: int = 2, **cfg_overrides) -> ClaudeProposer:
    fields = {"kind": "claude", "model": MODEL, "max_retries": max_retries, **cfg_overrides}
    cfg = AgentConfig(**fields)
    client = api.client(max_retries=max_retries, timeout=5.0)
    return ClaudeProposer(cfg, tmp_path, CountingOffline(), client=client, program_md="PROGRAM TEXT")


def test_inspection_then_proposal_gives_the_wave(tmp_path: Path) -> None:
    log_dir = tmp_path / "experiments" / "00003"
    log_dir.mkdir(parents=True)
    (log_dir / "run.log").write_text("step 1\nTraceback ...\nRuntimeError: shape mismatch (8x64 @ 32x64)\n")
    inspect = message_json(
        [
            text_block("Let me look at the crash first."),
            tool_use_block("get_log_tail", {"number": 3}, "toolu_a"),
            tool_use_block("results_by_knob", {"knob": "LR"}, "toolu_b"),
        ],
        usage=usage_json(input_tokens=1200, output_tokens=80, cache_write=3000),
    )
    propose = tool_call(
        "propose_wave", GOOD_WAVE, usage=usage_json(input_tokens=900, output_tokens=600, cache_read=3000)
    )
    api = ScriptedAPI([inspect, propose], models=[MODEL])
    proposer = make_proposer(tmp_path, api)

    wave = proposer.propose(sample_context())

    assert wave.source == "claude"
    assert [c.description for c in wave.candidates] == [
        "GELU instead of ReLU^2",
        "fix of #3: transpose before the matmul",
    ]
    assert wave.candidates[0].knobs == {"ACTIVATION": "gelu"}
    assert wave.candidates[0].edits[0].replace == "return gelu(x)"
    assert wave.candidates[1].knobs == {"DEPTH": 10, "LR": None}
    assert (wave.candidates[1].fix_of, wave.candidates[1].tier) == (3, "validate")
    assert wave.grids[0].factors == {"LR": [0.02, 0.04, 0.08], "WARMUP": [0.0, 0.1]}
    assert wave.grids[0].size() == 6

    bodies = api.message_bodies
    assert len(bodies) == 2
    results = bodies[1]["messages"][-1]["content"]
    by_id = {b["tool_use_id"]: b for b in results if b["type"] == "tool_result"}
    assert "shape mismatch" in by_id["toolu_a"]["content"]
    assert "mean" in by_id["toolu_b"]["content"] and not by_id["toolu_b"].get("is_error")
    assert bodies[1]["messages"][1]["role"] == "assistant"  # the model's turn went back as it was

    rows = read_usage(tmp_path)
    assert len(rows) == 2 and {r["wave"] for r in rows} == {1}
    cfg = proposer.cfg
    first = (1200 * cfg.price_input + 80 * cfg.price_output + 3000 * cfg.price_cache_write) / 1e6
    assert rows[0]["dollars"] == pytest.approx(first)
    assert rows[1]["cache_read_input_tokens"] == 3000
    assert dollars_spent(tmp_path) == pytest.approx(sum(r["dollars"] for r in rows))
    totals = usage_totals(tmp_path)
    assert totals["calls"] == 2 and totals["input_tokens"] == 2100 and totals["waves"] == 1

    transcript = json.loads((tmp_path / "agent" / "waves" / "00001.json").read_text())
    assert (
        transcript["outcome"] == "ok" and transcript["proposal"]["grids"][0]["description"] == "LR x warmup"
    )


def test_request_carries_cache_markers_strict_tools_and_config(tmp_path: Path) -> None:
    api = ScriptedAPI([tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])
    proposer = make_proposer(tmp_path, api, max_tokens=12345)
    proposer.propose(sample_context())

    body = api.message_bodies[0]
    assert body["model"] == MODEL and body["max_tokens"] == 12345
    assert "temperature" not in body and "thinking" not in body
    tools = body["tools"]
    assert tools[0]["name"] == "propose_wave" and all(t["strict"] is True for t in tools)
    assert not any("cache_control" in t for t in tools)  # cached by the first system block's breakpoint
    assert [b.get("cache_control") for b in body["system"]] == [{"type": "ephemeral"}] * 2
    assert body["system"][0]["text"].startswith("PROGRAM TEXT")  # instructions are the stable prefix
    assert "DEPTH = 8" in body["system"][1]["text"]  # the frontier train.py, cached until a keep
    user = body["messages"][0]["content"]
    assert "Frontier val_bpb" in user[0]["text"]  # volatile state after the breakpoints
    assert user[-1]["cache_control"] == {"type": "ephemeral"}  # no waves known yet: cached
    assert json.dumps(body).count('"cache_control"') == 3  # of the API's 4


def test_rate_limit_is_retried_by_the_sdk(tmp_path: Path) -> None:
    api = ScriptedAPI([rate_limited(), tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])
    proposer = make_proposer(tmp_path, api, max_retries=2)
    wave = proposer.propose(sample_context())  # (retry-after-ms: 1 keeps the SDK's back-off short)
    assert wave.source == "claude"
    assert len(api.message_bodies) == 2
    assert proposer.consecutive_failures == 0
    assert usage_totals(tmp_path)["calls"] == 1


def test_overload_falls_back_and_claude_is_retried_later(tmp_path: Path, caplog) -> None:
    api = ScriptedAPI(models=[MODEL], default=lambda body: overloaded())
    proposer = make_proposer(tmp_path, api, max_retries=1, failures_before_fallback=2)
    context = sample_context()
    caplog.set_level(logging.WARNING, logger="autoresearch.agent")

    first = proposer.propose(context)
    assert first.source == FALLBACK_SOURCE and first.candidates == proposer.fallback.waves[0].candidates
    assert len(api.message_bodies) == 2  # one try plus one SDK retry
    assert any("offline proposer" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert usage_totals(tmp_path)["failed_calls"] == 1

    proposer.propose(context)  # second failure in a row: now in fallback
    assert proposer.in_fallback
    sent = len(api.message_bodies)
    for _ in range(RETRY_EVERY - 1):
        assert proposer.propose(context).source == FALLBACK_SOURCE
    assert len(api.message_bodies) == sent  # Claude skipped while failing

    api.default = lambda body: tool_call("propose_wave", GOOD_WAVE)
    back = proposer.propose(context)  # the periodic retry finds the API healthy again
    assert back.source == "claude" and not proposer.in_fallback
    assert len(proposer.fallback.waves) == 2 + RETRY_EVERY - 1
    outcomes = [
        json.loads(p.read_text())["outcome"] for p in sorted((tmp_path / "agent" / "waves").glob("*.json"))
    ]
    assert outcomes == ["fallback"] * (2 + RETRY_EVERY - 1) + ["ok"]


def test_malformed_proposal_gets_an_error_result_then_is_corrected(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(GOOD_WAVE))
    bad["candidates"][0]["knobs"] = [{"name": "NOT_A_KNOB", "value": "3"}]
    api = ScriptedAPI([tool_call("propose_wave", bad), tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])
    proposer = make_proposer(tmp_path, api)

    wave = proposer.propose(sample_context())

    assert wave.source == "claude" and len(wave.candidates) == 2
    second = api.message_bodies[1]["messages"][-1]["content"]
    result = next(b for b in second if b["type"] == "tool_result")
    assert result["is_error"] is True and "NOT_A_KNOB" in result["content"]


def test_an_edit_that_retypes_a_knob_gets_an_error_result_then_is_corrected(tmp_path: Path) -> None:
    """The agent hears of it in the same wave, with the line and the types, and mends it there."""
    bad = json.loads(json.dumps(GOOD_WAVE))
    bad["candidates"][0]["edits"].append({"search": "DEPTH = 8", "replace": "DEPTH = 8.5"})
    api = ScriptedAPI([tool_call("propose_wave", bad), tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])
    proposer = make_proposer(tmp_path, api)

    wave = proposer.propose(sample_context())

    assert wave.source == "claude" and wave.candidates[0].edits == GOOD_WAVE_EDITS
    second = api.message_bodies[1]["messages"][-1]["content"]
    result = next(b for b in second if b["type"] == "tool_result")
    assert result["is_error"] is True
    assert "DEPTH a float (line 2: DEPTH = 8.5), where the frontier's is an int" in result["content"]


@pytest.mark.parametrize("stop_reason", ["max_tokens", "model_context_window_exceeded"])
def test_a_proposal_cut_off_mid_call_is_not_taken_and_is_asked_again(
    tmp_path: Path, stop_reason: str
) -> None:
    """A reply cut off inside its propose_wave call carries what was written of the input: here a
    first candidate, no grids, which parses. It was taken as the wave, the rest of the model's wave
    lost without a word; it is answered as cut off, and the whole wave asked for again."""
    partial = {"rationale": GOOD_WAVE["rationale"], "candidates": GOOD_WAVE["candidates"][:1]}
    cut = message_json(
        [text_block("The wave:"), tool_use_block("propose_wave", partial, "toolu_cut")],
        stop_reason=stop_reason,
    )
    api = ScriptedAPI([cut, tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])
    proposer = make_proposer(tmp_path, api)

    wave = proposer.propose(sample_context())

    assert wave.source == "claude" and len(wave.candidates) == 2 and len(wave.grids) == 1
    [result] = api.message_bodies[1]["messages"][-1]["content"]
    assert result["tool_use_id"] == "toolu_cut" and result["is_error"] is True
    assert f"cut off ({stop_reason})" in result["content"] and "not read" in result["content"]


def test_a_wave_cut_off_at_max_tokens_every_turn_names_the_setting(tmp_path: Path) -> None:
    """Every turn cut off at max_tokens, each a whole max_tokens answer paid: the wave fell back
    saying 'turn 2 ended without a tool call (max_tokens)', naming no setting to raise."""
    api = ScriptedAPI(
        models=[MODEL], default=lambda body: message_json([text_block("The plan")], stop_reason="max_tokens")
    )
    proposer = make_proposer(tmp_path, api, max_inspect_turns=0, max_tokens=4000)
    assert proposer.propose(sample_context()).source == FALLBACK_SOURCE
    record = json.loads((tmp_path / "agent" / "waves" / "00001.json").read_text())
    assert record["reason"].endswith(
        "last problem: turn 2 was cut off (max_tokens) before any tool call; agent.max_tokens=4000 is too few for it"
    )


def test_still_malformed_after_the_turn_budget_is_a_failed_wave(tmp_path: Path) -> None:
    empty = {"rationale": "nothing", "candidates": [], "grids": []}
    api = ScriptedAPI(models=[MODEL], default=lambda body: tool_call("propose_wave", empty))
    proposer = make_proposer(tmp_path, api, max_inspect_turns=1)
    wave = proposer.propose(sample_context())
    assert wave.source == FALLBACK_SOURCE
    assert len(api.message_bodies) == 1 + 2  # inspection turns + proposal + one repair
    assert proposer.consecutive_failures == 1
    failed = json.loads((tmp_path / "agent" / "waves" / "00001.json").read_text())
    assert failed["outcome"] == "fallback" and "empty" in failed["reason"]
    assert len(failed["messages"]) == 1 + 2 * 3  # the failed conversation is kept with the fallback
    assert failed["proposal"]["source"] == FALLBACK_SOURCE


def test_inspection_budget_is_enforced_and_the_last_turn_is_forced(tmp_path: Path) -> None:
    inspect = tool_call("get_results", {"numbers": [1, 2]})
    api = ScriptedAPI([inspect, inspect, tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])
    proposer = make_proposer(tmp_path, api, max_inspect_turns=1)
    assert proposer.propose(sample_context()).source == "claude"
    bodies = api.message_bodies
    assert bodies[0]["tool_choice"] == {"type": "auto"}
    assert bodies[1]["tool_choice"] == {"type": "tool", "name": "propose_wave"}
    refused = bodies[2]["messages"][-1]["content"][0]
    assert refused["is_error"] is True and "No inspection budget" in refused["content"]


def test_a_model_that_refuses_forcing_is_asked_unforced(tmp_path: Path) -> None:
    def only_auto(body):
        if body["tool_choice"]["type"] != "auto":
            return error_response(400, "invalid_request_error", "tool_choice forcing is not supported")
        return tool_call("propose_wave", GOOD_WAVE)

    api = ScriptedAPI(models=[MODEL], default=only_auto)
    proposer = make_proposer(tmp_path, api, max_inspect_turns=0)
    assert proposer.propose(sample_context()).source == "claude"
    assert [b["tool_choice"]["type"] for b in api.message_bodies] == ["tool", "auto"]
    assert proposer.can_force is False
    assert usage_totals(tmp_path)["failed_calls"] == 0  # the refused forcing was a probe, not a failure
    proposer.propose(sample_context())
    assert api.message_bodies[-1]["tool_choice"] == {"type": "auto"}  # not forced again


def test_a_model_that_refuses_falls_back_saying_why(tmp_path: Path, caplog) -> None:
    """The reason of a refusal, the category and explanation of its stop_details, was in no log,
    transcript or ledger: the wave said only that the model refused."""
    refusal = message_json([text_block("I can't help with that.")], stop_reason="refusal")
    refusal["stop_details"] = {
        "type": "refusal",
        "category": "frontier_llm",
        "explanation": "This request could assist the development of competing AI models.",
    }
    api = ScriptedAPI([refusal], models=[MODEL])
    proposer = make_proposer(tmp_path, api)
    caplog.set_level(logging.WARNING, logger="autoresearch.agent")
    assert proposer.propose(sample_context()).source == FALLBACK_SOURCE
    said = (
        "refused to propose (frontier_llm: This request could assist the development of competing AI models.)"
    )
    record = json.loads((tmp_path / "agent" / "waves" / "00001.json").read_text())
    assert record["outcome"] == "fallback" and said in record["reason"]
    assert any(said in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert usage_totals(tmp_path)["calls"] == 1  # the refusal was answered, and is billed


def test_a_refusal_that_retrying_cannot_cure_is_an_error_and_falls_back_at_once(
    tmp_path: Path, caplog
) -> None:
    api = ScriptedAPI(
        models=[MODEL], default=lambda body: error_response(404, "not_found_error", "model gone")
    )
    proposer = make_proposer(tmp_path, api, failures_before_fallback=3)
    caplog.set_level(logging.WARNING, logger="autoresearch.agent")
    wave = proposer.propose(sample_context())
    assert wave.source == FALLBACK_SOURCE and proposer.in_fallback  # not after 3 failed waves
    assert len(api.message_bodies) == 1  # the SDK does not retry a 404
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "NotFoundError" in errors[0] and "fix agent.*" in errors[0]


def test_the_waves_skipped_after_a_refusal_say_how_many_failed(tmp_path: Path, caplog) -> None:
    """A key revoked after the start: one 401, then the waves skipped till the next try said
    'Claude API failing (3 waves in a row)', the refusal counted as failures_before_fallback."""
    api = ScriptedAPI(
        models=[MODEL], default=lambda body: error_response(401, "authentication_error", "invalid x-api-key")
    )
    proposer = make_proposer(tmp_path, api, failures_before_fallback=3)
    caplog.set_level(logging.WARNING, logger="autoresearch.agent")
    for _ in range(RETRY_EVERY + 1):
        assert proposer.propose(sample_context()).source == FALLBACK_SOURCE
    assert len(api.message_bodies) == 2  # tried at wave 1 and wave RETRY_EVERY + 1 only
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert [e.split(" (")[0] for e in errors] == [
        "Claude refused wave 1",
        f"Claude refused wave {RETRY_EVERY + 1}",
    ]
    skipped = [r.getMessage() for r in caplog.records if "keeps slots busy" in r.getMessage()]
    assert len(skipped) == RETRY_EVERY - 1
    assert all("(1 failed wave in a row)" in m and f"again at wave {RETRY_EVERY + 1}" in m for m in skipped)


def test_an_unexpected_error_in_a_wave_falls_back_and_keeps_the_transcript(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    def broken(*args, **kwargs):
        raise OSError("disk full")

    api = ScriptedAPI(models=[MODEL], default=lambda body: tool_call("propose_wave", GOOD_WAVE))
    proposer = make_proposer(tmp_path, api)
    monkeypatch.setattr("autoresearch.agent.claude.Conversation.run", broken)
    caplog.set_level(logging.WARNING, logger="autoresearch.agent")
    wave = proposer.propose(sample_context())
    assert wave.source == FALLBACK_SOURCE and proposer.consecutive_failures == 1
    record = json.loads((tmp_path / "agent" / "waves" / "00001.json").read_text())
    assert record["outcome"] == "fallback" and record["reason"] == "OSError: disk full"
    assert any("Traceback" in r.getMessage() and "disk full" in r.getMessage() for r in caplog.records)


def test_thinking_budget_is_sent_and_never_forced(tmp_path: Path) -> None:
    api = ScriptedAPI([tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])
    proposer = make_proposer(tmp_path, api, thinking_budget=2048, max_inspect_turns=0)
    proposer.propose(sample_context())
    body = api.message_bodies[0]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["tool_choice"] == {"type": "auto"}


def test_model_check_names_close_models(tmp_path: Path) -> None:
    api = ScriptedAPI(models=["claude-sonnet-5-5-20260901", "claude-opus-5-5", "claude-haiku-4-5"])
    cfg = AgentConfig(kind="claude", model="claude-sonet-5-5")
    with pytest.raises(ModelNotFoundError, match="claude-sonnet-5-5-20260901") as err:
        ClaudeProposer(cfg, tmp_path, CountingOffline(), client=api.client())
    assert "\n" not in str(err.value)
    alias = AgentConfig(kind="claude", model="claude-sonnet-5-5")  # an alias of a dated snapshot is fine
    ClaudeProposer(alias, tmp_path, CountingOffline(), client=api.client())
    family = AgentConfig(kind="claude", model="claude-sonnet-5")  # another model's prefix is not an alias
    with pytest.raises(ModelNotFoundError, match="'claude-sonnet-5' is not offered"):
        ClaudeProposer(family, tmp_path, CountingOffline(), client=api.client())


def test_another_model_on_the_default_prices_is_warned_of(tmp_path: Path, caplog) -> None:
    """A dated snapshot of the default model (pinned for a campaign that must not change model) is
    that model: it was warned of as another, told its prices were wrong."""
    api = ScriptedAPI(models=["claude-opus-5-5", "claude-sonnet-5-5", "claude-sonnet-5-5-20260101"])
    caplog.set_level(logging.WARNING, logger="autoresearch.agent")
    for model in ("claude-sonnet-5-5", "claude-sonnet-5-5-20260101"):
        ClaudeProposer(
            AgentConfig(kind="claude", model=model), tmp_path, CountingOffline(), client=api.client()
        )
    assert not caplog.records
    opus = AgentConfig(kind="claude", model="claude-opus-5-5")
    ClaudeProposer(opus, tmp_path, CountingOffline(), client=api.client())
    assert any("set them for claude-opus-5-5" in r.getMessage() for r in caplog.records)
    caplog.clear()
    priced = AgentConfig(kind="claude", model="claude-opus-5-5", price_input=4.0, price_output=20.0)
    ClaudeProposer(priced, tmp_path, CountingOffline(), client=api.client())
    assert not caplog.records


def test_replies_from_another_model_than_agent_model_are_warned_of_once(tmp_path: Path, caplog) -> None:
    """A proxy (agent.base_url) that routes the calls to another model had them counted at
    agent.model's prices without a word until the report listed the models, at the end."""
    replies = [
        tool_call("propose_wave", GOOD_WAVE, model=f"{MODEL}-20260101"),  # a snapshot: the same model
        tool_call("propose_wave", GOOD_WAVE, model="claude-other-9"),
        tool_call("propose_wave", GOOD_WAVE, model="claude-other-9"),
    ]
    api = ScriptedAPI(replies, models=[MODEL])
    proposer = make_proposer(tmp_path, api)
    caplog.set_level(logging.WARNING, logger="autoresearch.agent")
    for _ in replies:
        assert proposer.propose(sample_context()).source == "claude"
    [warning] = [r.getMessage() for r in caplog.records if "answered from" in r.getMessage()]
    assert f"answered from model claude-other-9, not agent.model={MODEL}" in warning
    assert [r["model"] for r in read_usage(tmp_path)] == [
        f"{MODEL}-20260101",
        "claude-other-9",
        "claude-other-9",
    ]


def test_rejected_key_at_start_up_is_a_clear_error(tmp_path: Path) -> None:
    api = ScriptedAPI(models=error_response(401, "authentication_error", "invalid x-api-key"))
    with pytest.raises(AgentSetupError, match="ANTHROPIC_API_KEY was refused"):
        ClaudeProposer(
            AgentConfig(kind="claude", model=MODEL), tmp_path, CountingOffline(), client=api.client()
        )


def test_unreachable_models_endpoint_does_not_stop_the_start(tmp_path: Path, caplog) -> None:
    api = ScriptedAPI(models=overloaded())
    caplog.set_level(logging.WARNING, logger="autoresearch.agent")
    ClaudeProposer(
        AgentConfig(kind="claude", model=MODEL, max_retries=0),
        tmp_path,
        CountingOffline(),
        client=api.client(max_retries=0),
    )
    assert any("could not list models" in r.getMessage() for r in caplog.records)


def test_the_model_check_of_an_unanswering_api_holds_the_start_briefly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The start's model check asked with the campaign's own settings, 4 retries of up to 600 s
    each: where the API does not answer (a login node whose firewall drops it), the start and
    check waited up to 50 minutes, every other refusal unsaid till then, to go on regardless. It
    asks once more at most, each try bounded by MODEL_CHECK_SECONDS."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    api = ScriptedAPI(models=overloaded())
    timeouts: list[float] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        timeouts.append(request.extensions["timeout"]["read"])
        return api.handler(request)

    cfg = AgentConfig(kind="claude", model=MODEL)
    client = build_client(cfg, httpx2.Client(transport=httpx2.MockTransport(handler)))
    caplog.set_level(logging.WARNING, logger="autoresearch.agent")
    ClaudeProposer(cfg, tmp_path, CountingOffline(), client=client)
    assert any("could not list models" in r.getMessage() for r in caplog.records)
    assert len(timeouts) <= 2 and max(timeouts) <= MODEL_CHECK_SECONDS, timeouts


def test_build_client_reads_the_key_from_the_environment_only(monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(AgentSetupError, match="ANTHROPIC_API_KEY is not set"):
        build_client(AgentConfig(kind="claude"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://gateway.invalid:8080")
    client = build_client(AgentConfig(kind="claude", max_retries=7, timeout_seconds=42.0))
    assert str(client.base_url).startswith("http://gateway.invalid:8080")
    assert client.max_retries == 7 and client.timeout == 42.0
    explicit = build_client(AgentConfig(kind="claude", base_url="http://other.invalid"))
    assert str(explicit.base_url).startswith("http://other.invalid")
    with pytest.raises(AgentSetupError, match="thinking_budget"):
        build_client(AgentConfig(kind="claude", thinking_budget=500))


def test_the_claude_config_waits_for_a_whole_reply() -> None:
    """The SDK expects a reply of max_tokens to take up to an hour per 128,000 tokens (450 s at the
    default 16,000); a timeout of 300 s cut such replies off, and retried them from the start."""
    agent = compose_config("+campaign=demo", "agent=claude").agent
    assert agent.timeout_seconds >= 3600 * agent.max_tokens / 128_000


def test_works_with_the_hydra_config_object_and_the_default_program(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(AgentConfig(kind="claude", model=MODEL))
    api = ScriptedAPI([tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])
    proposer = ClaudeProposer(cfg, tmp_path, CountingOffline(), client=api.client(), program_md="")
    assert proposer.propose(sample_context()).source == "claude"
    assert "Standing instructions" in api.message_bodies[0]["system"][0]["text"]  # trainer/program.md


def test_a_tool_input_that_is_not_an_object_is_an_error_result(tmp_path: Path) -> None:
    """The SDK takes whatever JSON a tool call's input holds: a list or a string goes back to the
    model as an error, and its turn goes back with an object as input, as the API takes it back."""
    listed = message_json([{"type": "tool_use", "id": "toolu_l", "name": "propose_wave", "input": [1, 2]}])
    api = ScriptedAPI([listed, tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])
    proposer = make_proposer(tmp_path, api)
    assert proposer.propose(sample_context()).source == "claude"
    second = api.message_bodies[1]["messages"]
    assert second[1]["content"][0]["input"] == {}
    result = second[2]["content"][0]
    assert result["is_error"] is True and "list input, not an object" in result["content"]


def raw_message(text: str) -> httpx2.Response:
    """A 200 whose body is `text` as it is: JSON escapes json.dumps would not write (\\ud800)."""
    return httpx2.Response(200, content=text.encode(), headers={"content-type": "application/json"})


def test_a_lone_surrogate_in_the_model_output_is_mended_not_a_crash(tmp_path: Path) -> None:
    """JSON can carry a lone surrogate (\\ud800), which no file, log line or request can encode: in
    a description it crashed the controller as results.tsv was written, and in the conversation it
    failed every later request of the wave. It is made U+FFFD as it arrives."""
    bad = json.loads(json.dumps(GOOD_WAVE))
    bad["candidates"][0]["knobs"] = [{"name": "NOT_A_KNOB", "value": "3"}]  # refused: a second turn
    body = json.dumps(message_json([text_block("SURROGATE"), tool_use_block("propose_wave", bad)]))
    good = json.loads(json.dumps(GOOD_WAVE))
    good["candidates"][0]["description"] = "GELU SURROGATE"
    # (an undeclared string constant: a declared one's value must be one of its choices)
    good["candidates"][0]["knobs"] = [{"name": "ACTIVATION", "value": '"ge SURROGATE lu"'}]
    second = json.dumps(tool_call("propose_wave", good))
    api = ScriptedAPI(
        [
            raw_message(body.replace("SURROGATE", "\\ud800")),
            raw_message(second.replace("SURROGATE", "\\udfff")),
        ],
        models=[MODEL],
    )
    proposer = make_proposer(tmp_path, api)
    wave = proposer.propose(
        sample_context(knobs=[k for k in sample_context().knobs if k.name != "ACTIVATION"])
    )
    assert wave.source == "claude" and len(api.message_bodies) == 2  # the second request was sent
    assert wave.candidates[0].description == "GELU \ufffd"
    assert wave.candidates[0].knobs == {"ACTIVATION": "ge \ufffd lu"}  # (a JSON escape inside the value)
    assert api.message_bodies[1]["messages"][1]["content"][0]["text"] == "\ufffd"
    record = (tmp_path / "agent" / "waves" / "00001.json").read_text(encoding="utf-8")
    assert json.loads(record)["outcome"] == "ok"


@pytest.mark.parametrize(
    ("response", "said"),
    [
        (
            httpx2.Response(200, content=b"<html>bad gateway</html>", headers={"content-type": "text/html"}),
            "text",
        ),
        (httpx2.Response(200, json={"type": "message", "content": None}), "without the content and usage"),
        (
            httpx2.Response(
                200, content=b'{"type": "message", "content": [', headers={"content-type": "application/json"}
            ),
            "a body that is not JSON",
        ),
        (raw_message('{"content": ' + "[" * 5000 + "]" * 5000 + "}"), "RecursionError"),
        (raw_message('{"content": [], "usage": {"input_tokens": ' + "9" * 5000 + "}}"), "digits"),
    ],
    ids=["html", "no-content", "cut-json", "deep-json", "long-number"],
)
def test_a_200_that_is_not_a_message_is_a_failed_wave_in_one_line(
    tmp_path: Path, caplog, response: httpx2.Response, said: str
) -> None:
    """The SDK hands back a proxy's HTML page as a str, and a body without content as a message
    lacking it: the wave failed with a traceback logged as a defect of ours. A body that says it is
    JSON and is not (cut short by a proxy) raised the parser's error out of the SDK, whose call was
    left in the ledger as in flight: counted at its worst case, as if cut off by a stop. JSON the
    reader cannot take (nested past its recursion, an integer of 5,000 digits) was a defect of ours
    with its 40-line traceback too."""
    api = ScriptedAPI([response], models=[MODEL])
    proposer = make_proposer(tmp_path, api)
    caplog.set_level(logging.WARNING, logger="autoresearch.agent")
    assert proposer.propose(sample_context()).source == FALLBACK_SOURCE
    assert not any("Traceback" in r.getMessage() for r in caplog.records)
    [warning] = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert "BadResponse" in warning and said in warning and "agent.base_url" in warning
    [row] = read_usage(tmp_path)
    assert "BadResponse" in row["error"] and row["dollars"] == 0
    assert usage_totals(tmp_path)["unanswered_calls"] == 0
    assert not [f for f in tmp_path.rglob("*") if f.is_file() and b"test-key" in f.read_bytes()]


def test_a_call_ended_by_an_error_not_of_the_api_is_not_left_in_flight(tmp_path: Path) -> None:
    """A 200 nested too deep for the SDK's parser raises RecursionError: the call, over, was left
    in the ledger as in flight, counted at its worst case and reported as cut off by a stop."""
    deep = b'{"content": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    api = ScriptedAPI([httpx2.Response(200, content=deep, headers={"content-type": "application/json"})])
    proposer = make_proposer(tmp_path, api)
    assert proposer.propose(sample_context()).source == FALLBACK_SOURCE
    [row] = read_usage(tmp_path)
    assert "RecursionError" in row["error"] and row["dollars"] == 0 and not row.get("in_flight")
    assert usage_totals(tmp_path)["unanswered_calls"] == 0


def test_a_wave_dropped_by_a_stopping_controller_makes_no_more_calls(tmp_path: Path) -> None:
    """A controller stopped (Ctrl-C, SIGTERM) while a wave's conversation was under way dropped the
    wave, but its thread went on calling the API, each call paid, until the controller had exited.
    Nor is the offline proposer asked for a wave nobody takes."""
    pump: BackgroundPump | None = None
    future_taken = threading.Event()  # (close drops the pump's future: the test takes it first)

    def answered_as_the_controller_stops(body: dict) -> dict:
        assert pump is not None and future_taken.wait(timeout=60)
        pump.close()  # the controller's close, while this call is answered
        return tool_call("get_results", {"numbers": [1]})

    api = ScriptedAPI(
        [answered_as_the_controller_stops],
        models=[MODEL],
        default=lambda body: tool_call("propose_wave", GOOD_WAVE),
    )
    proposer = make_proposer(tmp_path, api)
    pump = BackgroundPump(proposer)
    pump.request(sample_context())
    future = pump._future
    future_taken.set()
    assert future is not None
    wave = future.result(timeout=60)

    assert len(api.message_bodies) == 1 and wave.size() == 0 and wave.source == "claude"
    assert proposer.fallback.waves == []
    totals = usage_totals(tmp_path)
    assert (totals["calls"], totals["failed_calls"], totals["unanswered_calls"]) == (1, 0, 0)
    record = json.loads((tmp_path / "agent" / "waves" / "00001.json").read_text())
    assert record["outcome"] == "stopped" and "the controller is stopping" in record["reason"]
    assert proposer.consecutive_failures == 0  # not a failure of the API


def dollars_checked(campaign_dir: Path, limit: float, gpu_dollars: float = 0.0) -> WaveDollars | None:
    """The dollar check a campaign gives a wave it asks for now (`Campaign.context`)."""
    spend = Spend(0, 0.0, 0.0, gpu_dollars, dollars_spent(campaign_dir))
    return wave_dollars(spend, BudgetConfig(max_dollars=limit), campaign_dir)


def inspecting_for_ever(body: dict) -> dict:
    """An inspection call at every turn: a wave that would use all its turns (usage_json's price)."""
    return tool_call("get_results", {"numbers": [1]})


def test_a_dollar_budget_reached_mid_wave_ends_the_wave_before_its_next_call(tmp_path: Path, caplog) -> None:
    """The dollar budget, reached by a wave's own calls, did not stop its conversation: it went on
    paying for up to max_inspect_turns + 2 calls past the cap. Here an earlier wave spent $1 and
    $0.01 was left: each call costs $0.004, so the third reaches it and no fourth is sent. The
    wave cut short is not handed to the campaign, which would count it as a wave with nothing new
    (three in a row end a campaign, with that reason rather than the budget)."""
    cfg = AgentConfig(kind="claude", model=MODEL)
    call = dollars_for(usage_json(), cfg)
    assert call == pytest.approx(0.004)
    earlier = Usage(input_tokens=500_000, output_tokens=0)  # $1 at $2 per million
    UsageLedger(tmp_path, cfg).record(model=MODEL, usage=earlier, wave=1, turn=0, call="earlier")
    assert dollars_spent(tmp_path) == pytest.approx(1.0)
    api = ScriptedAPI([], models=[MODEL], default=inspecting_for_ever)
    proposer = make_proposer(tmp_path, api, max_inspect_turns=8)
    caplog.set_level(logging.WARNING, logger="autoresearch.agent")
    pump = SyncPump(proposer)

    pump.request(sample_context(dollar_budget=dollars_checked(tmp_path, 1.01), campaign_dir=str(tmp_path)))

    assert len(api.message_bodies) == 3  # the one that reached it, none after
    assert pump.collect() is None and proposer.fallback.waves == []
    assert pump.stopping().startswith("dollars budget reached: this wave's calls cost $0.012")
    [line] = [r.getMessage() for r in caplog.records if "without a proposal" in r.getMessage()]
    assert "Claude wave 2" in line and "campaign.budget.max_dollars" in line
    record = json.loads((tmp_path / "agent" / "waves" / "00002.json").read_text())
    assert record["outcome"] == "stopped" and len(record["messages"]) == 1 + 2 * 3
    assert proposer.consecutive_failures == 0  # the API did not fail


@pytest.mark.parametrize(
    ("input_tokens", "left"),
    [
        ((1000, 1000), 0.004),  # $0.002 each: two reach it, a third would be past it
        ((26_250, 65_300), 0.1831),  # $0.0525 + $0.1306: 0.18309999999999998 in floats
    ],
)
def test_a_dollar_budget_reached_exactly_stops_as_the_campaign_does(
    tmp_path: Path, input_tokens: tuple[int, int], left: float
) -> None:
    """A budget is reached at its limit (`budget.reached`), a sum of the ledger's dollars equal
    to it on paper included."""
    replies = [tool_call("get_results", {"numbers": [1]}, usage=usage_json(n, 0)) for n in input_tokens]
    api = ScriptedAPI(replies, models=[MODEL], default=inspecting_for_ever)
    pump = SyncPump(make_proposer(tmp_path, api, max_inspect_turns=8))
    pump.request(sample_context(dollar_budget=dollars_checked(tmp_path, left), campaign_dir=str(tmp_path)))
    assert len(api.message_bodies) == 2 and pump.collect() is None


def test_a_wave_stops_where_the_campaign_finds_the_dollar_budget_reached(tmp_path: Path) -> None:
    """The wave checked its calls against the dollars left, a rule beside the campaign's: after
    $1000 of GPU time the campaign took $1000.01 for its limit of $1000.0100005 reached
    (`budget.reached`'s tolerance is relative to the figures compared), while the wave took its
    $0.01 for less than the $0.0100005 left, and made a fourth call. Both now ask one rule."""
    replies = [tool_call("get_results", {"numbers": [1]}, usage=usage_json(n, 0)) for n in (2000, 2000, 1000)]
    api = ScriptedAPI(replies, models=[MODEL], default=inspecting_for_ever)
    pump = SyncPump(make_proposer(tmp_path, api, max_inspect_turns=8))
    dollars = dollars_checked(tmp_path, 1000.0100005, gpu_dollars=1000.0)
    pump.request(sample_context(dollar_budget=dollars, campaign_dir=str(tmp_path)))

    assert dollars_spent(tmp_path) == pytest.approx(0.01)
    spent = Spend(0, 0.0, 0.0, 1000.0, dollars_spent(tmp_path))
    assert exhausted(spent, BudgetConfig(max_dollars=1000.0100005)) == "dollars budget reached (1000 of 1000)"
    assert len(api.message_bodies) == 3 and pump.collect() is None


def test_a_wave_within_the_dollar_budget_is_handed_over(tmp_path: Path) -> None:
    """(The stop above is the budget's: a wave that ends within it comes to the campaign.)"""
    api = ScriptedAPI([tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])
    pump = SyncPump(make_proposer(tmp_path, api))
    pump.request(sample_context(dollar_budget=dollars_checked(tmp_path, 0.0041), campaign_dir=str(tmp_path)))
    wave = pump.collect()
    assert wave is not None and wave.source == "claude" and wave.size() > 0 and not pump.stopping()


def test_a_budget_the_campaign_finds_reached_stops_the_wave_on_its_way(tmp_path: Path) -> None:
    """GPU dollars (or another budget) reached while a wave's conversation was under way: the
    campaign stops its pump, and the wave makes no call after the one in flight."""
    pump: BackgroundPump | None = None

    def answered_as_the_budget_binds(body: dict) -> dict:
        assert pump is not None
        pump.stop("dollars budget reached (5 of 5)")  # the campaign's loop, as this call is answered
        return tool_call("get_results", {"numbers": [1]})

    api = ScriptedAPI([answered_as_the_budget_binds], models=[MODEL], default=inspecting_for_ever)
    proposer = make_proposer(tmp_path, api)
    pump = BackgroundPump(proposer)
    pump.request(sample_context())
    wave = wait_for_wave(pump)
    assert len(api.message_bodies) == 1 and wave.size() == 0
    assert wave.rationale == "no proposal: dollars budget reached (5 of 5)"
    pump.close()  # (the first reason stays the one said)
    assert pump.stopping() == "dollars budget reached (5 of 5)"


def wait_for_wave(pump: BackgroundPump) -> Wave:
    future = pump._future
    assert future is not None
    return future.result(timeout=60)


def test_a_proposer_whose_campaign_closed_still_proposes_for_the_next(tmp_path: Path) -> None:
    """A proposer stopped by one campaign's close stayed stopped in that process: a second campaign
    given the same proposer (a notebook, a test) had every wave from the offline fallback."""
    api = ScriptedAPI([], models=[MODEL], default=lambda body: tool_call("propose_wave", GOOD_WAVE))
    proposer = make_proposer(tmp_path, api)
    first = BackgroundPump(proposer)
    first.request(sample_context())
    assert wait_for_wave(first).source == "claude"
    first.close()

    second = BackgroundPump(proposer)
    second.request(sample_context())
    wave = wait_for_wave(second)
    assert wave.source == "claude" and wave.size() > 0 and len(api.message_bodies) == 2


def test_a_retry_after_of_an_hour_is_not_slept_through(tmp_path: Path, monkeypatch) -> None:
    """The SDK sleeps as long as `retry-after` says (3600 s): the proposer's thread slept for
    hours with nothing in the log. The wait is cut to MAX_RETRY_WAIT."""
    import time

    from autoresearch.agent import client as client_module

    # (the cap overrides an SDK method: one renamed by an SDK release fails here, not after an hour)
    assert callable(getattr(anthropic.Anthropic, "_calculate_retry_timeout", None))
    monkeypatch.setattr(client_module, "MAX_RETRY_WAIT", 0.05)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")
    hour = httpx2.Response(
        429,
        json={"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
        headers={"retry-after": "3600"},
    )
    api = ScriptedAPI([hour, tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])
    cfg = AgentConfig(kind="claude", model=MODEL, max_retries=2)
    client = build_client(cfg, http_client=api.http_client())
    proposer = ClaudeProposer(cfg, tmp_path, CountingOffline(), client=client, program_md="P")
    started = time.monotonic()
    assert proposer.propose(sample_context()).source == "claude"
    assert time.monotonic() - started < 30 and len(api.message_bodies) == 2


def test_a_wave_cut_short_by_a_killed_controller_is_numbered_after_it(tmp_path: Path) -> None:
    """A controller killed during a wave leaves its calls in the ledger and no transcript: the
    wave asked again takes the next number, so the ledger's waves are not merged."""
    ledger = tmp_path / "agent" / "usage.jsonl"
    ledger.parent.mkdir(parents=True)
    row = {"model": MODEL, "wave": 1, "turn": 0, "input_tokens": 10, "output_tokens": 1, "dollars": 0.1}
    ledger.write_text(json.dumps(row) + "\n")
    api = ScriptedAPI([tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])
    make_proposer(tmp_path, api).propose(sample_context())
    assert [r["wave"] for r in read_usage(tmp_path)] == [1, 2]
    assert (tmp_path / "agent" / "waves" / "00002.json").exists()
    assert usage_totals(tmp_path)["waves"] == 2


def test_a_key_with_a_newline_is_used_without_it_and_one_with_a_space_is_refused(monkeypatch) -> None:
    """A key read from a file keeps its newline (a CRLF .env file its \\r): no HTTP header can hold
    it, so every call failed as a connection error, and each wave fell back without a word on the
    key. Around the key it is dropped; inside it is refused before anything runs."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-key\r\n")
    assert build_client(AgentConfig(kind="claude")).api_key == "sk-ant-key"
    for bad in ("sk-ant key", "sk-ant-\u201dkey", "sk-ant\x1bkey"):
        monkeypatch.setenv("ANTHROPIC_API_KEY", bad)
        with pytest.raises(AgentSetupError, match="the key alone"):
            build_client(AgentConfig(kind="claude"))


def _breakpoints(body: dict) -> list[str]:
    """Where a request's cache breakpoints sit: "tools", "system N", "message N"."""
    where = ["tools" for t in body["tools"] if "cache_control" in t]
    where += [f"system {i}" for i, b in enumerate(body["system"]) if "cache_control" in b]
    for i, message in enumerate(body["messages"]):
        where += [f"message {i}" for b in message["content"] if "cache_control" in b]
    return where


@pytest.mark.parametrize("inspected", [False, True])
def test_a_waves_first_message_is_cached_only_where_waves_go_on_to_read_it(
    tmp_path: Path, inspected: bool
) -> None:
    """The first message is written to the cache at 1.25x the input price, and read back only by
    a second turn: once 10 waves are known, it is cached only if enough of them took one."""
    inspect = [tool_call("get_results", {"numbers": [1]})] if inspected else []
    steps = [*inspect, tool_call("propose_wave", GOOD_WAVE)] * (FIRST_TURN_WAVES + 1)
    api = ScriptedAPI(steps, models=[MODEL])
    proposer = make_proposer(tmp_path, api)
    for _ in range(FIRST_TURN_WAVES + 1):
        assert proposer.propose(sample_context()).source == "claude"

    calls_per_wave = len(inspect) + 1
    first_wave, last_wave = api.message_bodies[:calls_per_wave], api.message_bodies[-calls_per_wave:]
    assert _breakpoints(first_wave[0]) == ["system 0", "system 1", "message 0"]  # nothing known yet
    if inspected:  # every wave read its first message back on its second turn
        assert [_breakpoints(b) for b in last_wave] == [
            ["system 0", "system 1", "message 0"],
            ["system 0", "system 1", "message 2"],
        ]
    else:  # no wave ever read it back: written at 1.25x for nothing
        assert [_breakpoints(b) for b in last_wave] == [["system 0", "system 1"]]


def test_a_system_prompt_file_cut_short_by_a_kill_is_written_whole_again(tmp_path: Path) -> None:
    """Each distinct system prompt is stored once, under agent/prompts/<hash>.md. A controller
    killed while writing it left the file cut short, and every later wave took it for written."""
    api = ScriptedAPI(models=[MODEL], default=lambda body: tool_call("propose_wave", GOOD_WAVE))
    make_proposer(tmp_path, api).propose(sample_context())
    record = json.loads((tmp_path / "agent" / "waves" / "00001.json").read_text())
    prompt_file = tmp_path / "agent" / record["system_prompt"]
    whole = prompt_file.read_text(encoding="utf-8")
    prompt_file.write_text(whole[: len(whole) // 2], encoding="utf-8")  # as a kill mid-write leaves it
    make_proposer(tmp_path, api).propose(sample_context())
    assert prompt_file.read_text(encoding="utf-8") == whole
    assert [p.name for p in prompt_file.parent.iterdir()] == [prompt_file.name]  # no temporary left


def test_a_value_of_another_type_than_its_constants_is_an_error_result_then_is_corrected(
    tmp_path: Path,
) -> None:
    """WARMUP is no declared knob: only train.py's `WARMUP = 0.1` says a string would crash the run."""
    bad = json.loads(json.dumps(GOOD_WAVE))
    bad["grids"][0]["factors"][1]["levels"] = ['"0.0"', "0.1"]
    api = ScriptedAPI([tool_call("propose_wave", bad), tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])

    wave = make_proposer(tmp_path, api).propose(sample_context())

    assert wave.grids[0].factors["WARMUP"] == [0.0, 0.1]
    second = api.message_bodies[1]["messages"][-1]["content"]
    result = next(b for b in second if b["type"] == "tool_result")
    assert result["is_error"] is True
    assert "knob WARMUP: '0.0' is a str, but train.py's WARMUP is a float (line 4)" in result["content"]


def test_a_wave_asked_for_after_a_budget_stop_is_not_stopped_by_it(tmp_path: Path) -> None:
    """A budget stop is the wave's on its way: one that stuck to the pump, on a figure back under
    its limit, left the campaign asking for waves that never came."""
    api = ScriptedAPI([tool_call("propose_wave", GOOD_WAVE)], models=[MODEL])
    pump = BackgroundPump(make_proposer(tmp_path, api))
    pump.stop("dollars budget reached (0.17 of 0.01)")
    pump.request(sample_context())
    wave = wait_for_wave(pump)
    assert wave.source == "claude" and not pump.stopping()
    assert pump.collect() is not None
