"""The API key never reaches a file, a log or a pickle: a canary key is hunted everywhere."""

from __future__ import annotations

import logging
import pickle
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx2
from engine_helpers import CountingOffline

from autoresearch.agent.claude import ClaudeProposer
from autoresearch.agent.client import build_client
from autoresearch.agent.fakeapi import ScriptedAPI, overloaded, sample_context, tool_call
from autoresearch.config import AgentConfig

MODEL = "claude-test-1"

WAVE = {
    "rationale": "r",
    "candidates": [
        {
            "description": "lower LR",
            "hypothesis": "h",
            "edits": [],
            "knobs": [{"name": "LR", "value": "0.02"}],
            "tier": "screen",
            "fix_of": None,
        }
    ],
    "grids": [],
}


def echoing_proxy(api: ScriptedAPI, more: str = "") -> Callable[[httpx2.Request], httpx2.Response]:
    """A proxy that refuses every message with a 400 whose message echoes the request's
    authorization header, the key, and `more`; the model list is `api`'s."""

    def echo(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/v1/models"):
            return api.handler(request)
        said = f"bad request for {request.headers['authorization']}{more}"
        return httpx2.Response(
            400, json={"type": "error", "error": {"type": "invalid_request_error", "message": said}}
        )

    return echo


def test_canary_key_is_used_but_never_stored(tmp_path: Path, monkeypatch, caplog) -> None:
    canary = f"sk-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("ANTHROPIC_API_KEY", canary)
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and the HTTP layer's included

    api = ScriptedAPI(
        [
            tool_call("get_log_tail", {"number": 3}),
            tool_call("propose_wave", {"rationale": "r", "candidates": [], "grids": []}),  # rejected
            tool_call("propose_wave", WAVE),
            overloaded(),
            overloaded(),
        ],
        models=[MODEL],
    )
    sent_keys: list[str] = []

    def spying(request: httpx2.Request) -> httpx2.Response:
        sent_keys.append(request.headers.get("authorization", "") + request.headers.get("x-api-key", ""))
        return api.handler(request)

    cfg = AgentConfig(kind="claude", model=MODEL, max_retries=1)
    client = build_client(cfg, http_client=httpx2.Client(transport=httpx2.MockTransport(spying)))
    proposer = ClaudeProposer(cfg, tmp_path, CountingOffline(), client=client, program_md="instructions")

    assert proposer.propose(sample_context()).source == "claude"
    assert proposer.propose(sample_context()).source == "offline-fallback"  # 529s: errors recorded
    assert all(canary in k for k in sent_keys) and len(sent_keys) >= 5  # the key was really used

    blob = pickle.dumps(proposer)
    assert canary.encode() not in blob
    restored = pickle.loads(blob)
    assert restored._client is None and restored.cfg == cfg  # rebuilt from the environment on use

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "usage.jsonl" for p in files) and any(p.suffix == ".json" for p in files)
    for path in files:
        assert canary.encode() not in path.read_bytes(), path
    assert canary not in caplog.text
    assert canary not in repr(proposer)


def test_a_key_echoed_in_an_error_is_written_nowhere(tmp_path: Path, monkeypatch, caplog) -> None:
    """A proxy in front of the API may echo a request's headers in its error: the message goes
    into the log, the ledger and the wave's transcript, with every credential of the environment
    (the key, another token) taken out; the key as it was sent, without the newline its variable
    held."""
    canary = f"sk-canary-{uuid.uuid4().hex}"
    other = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("ANTHROPIC_API_KEY", canary + "\n")  # (as a key file holds it: sent without it)
    monkeypatch.setenv("GATEWAY_TOKEN", other)
    caplog.set_level(logging.DEBUG)

    api = ScriptedAPI(models=[MODEL])
    cfg = AgentConfig(kind="claude", model=MODEL, max_retries=0)
    client = build_client(
        cfg, http_client=httpx2.Client(transport=httpx2.MockTransport(echoing_proxy(api, f" with {other}")))
    )
    proposer = ClaudeProposer(cfg, tmp_path, CountingOffline(), client=client, program_md="instructions")
    assert proposer.propose(sample_context()).source == "offline-fallback"

    assert "[redacted]" in caplog.text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(b"[redacted]" in p.read_bytes() for p in files)
    for path in files:
        assert canary.encode() not in path.read_bytes() and other.encode() not in path.read_bytes(), path
    assert canary not in caplog.text and other not in caplog.text


def test_a_traceback_logged_for_a_defect_holds_no_key_of_the_error_it_interrupted(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """An error of ours (a transcript that cannot be written: a full disk) while the wave handled
    an API error is logged with its traceback, and a traceback shows the error it interrupted,
    message and all: a proxy's 400 that echoed the key went into the log whole."""
    canary = f"sk-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("ANTHROPIC_API_KEY", canary)
    caplog.set_level(logging.DEBUG)

    def full_disk(*args, **kwargs) -> None:
        raise OSError(28, "No space left on device")

    api = ScriptedAPI(models=[MODEL])
    cfg = AgentConfig(kind="claude", model=MODEL, max_retries=0)
    client = build_client(cfg, http_client=httpx2.Client(transport=httpx2.MockTransport(echoing_proxy(api))))
    proposer = ClaudeProposer(cfg, tmp_path, CountingOffline(), client=client, program_md="instructions")
    monkeypatch.setattr(proposer, "_save", full_disk)
    assert proposer.propose(sample_context()).source == "offline-fallback"

    logged = "\n".join(handler.format(r) for r in caplog.records for handler in [caplog.handler])
    assert "No space left on device" in logged and "Traceback" in logged  # the defect is shown
    assert "BadRequestError" in logged and "[redacted]" in logged  # and what it interrupted
    assert canary not in logged
