"""The Claude agent driving a whole toy campaign: the real engine, the real SDK client, a scripted API.

Only the HTTP transport is fake (`autoresearch.agent.fakeapi`); everything above it is the code a
real campaign runs: Hydra composition, `make_proposer`, the local fleet, the runner, the study.
Wave 1 mixes a good change, a grid, an edit the engine must refuse and one that crashes;
wave 2 must see every refusal, reads the crash log and repairs it (once too often); then the API
is overloaded and the offline proposer fills the waves. A canary key is hunted in every file after.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from engine_helpers import REPO, compose_toy, load, make_fleet, wait_for
from optuna.trial import TrialState

from autoresearch import budget as budgets
from autoresearch.agent.client import build_client
from autoresearch.agent.fakeapi import ScriptedAPI, message_json, overloaded, tool_call, usage_json
from autoresearch.agent.usage import dollars_for, read_usage
from autoresearch.campaign import Campaign, CampaignError
from autoresearch.config import AutoresearchConfig, campaign_dir_of, deadline_seconds
from autoresearch.logs import log_to_file, setup_logging
from autoresearch.proposers.factory import make_proposer
from autoresearch.workspace import MAX_EDIT_CHARS

MODEL = "claude-test-1"
MAX_EXPERIMENTS = 15  # leaves room for a wave of the offline fallback after Claude's two
MAX_FIX_ATTEMPTS = 1  # not the default (2): the limit the tool refuses by is the config's
MAX_RETRIES = 1  # so one failed call is two HTTP requests
OVERLOADED_WAVES = 1  # waves answered with 529s by the script (later ones fall on the default)

# The toy's val_bpb = 1 + 0.05 log2(LR / 0.04)^2 + 0.02 |log2(WIDTH / 128)|: LR=0.01, WIDTH=64 at the
# start (about 1.22), the optimum at LR=0.04, WIDTH=128 (about 1.0).
ENV_PRINT = 'print("env:", dict(os.environ))\nprint("---")'  # untrusted code reading its environment
CRASH_EDIT = 'raise RuntimeError("toy divergence: loss is nan")\nnoise = random.Random(prepare.SEED)'


def knob(name: str, value: Any) -> dict[str, str]:
    return {"name": name, "value": json.dumps(value)}


def candidate(description: str, *, edits=(), knobs=(), fix_of: int | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "hypothesis": "see the rationale",
        "edits": list(edits),
        "knobs": list(knobs),
        "tier": "screen",
        "fix_of": fix_of,
    }


# Refused by the engine (not by the proposer's own checks: the frontier may move before it is
# queued), each with the words of its reason.
BAD = {
    "edit whose search text is absent": (
        {"search": "DROPOUT = 0.1", "replace": "DROPOUT = 0.0"},
        "does not occur in train.py",
    ),
}

WAVE_1 = {
    "rationale": "LR and WIDTH look far from tuned; also trying a few structural ideas.",
    "candidates": [
        candidate("LR=0.04, WIDTH=128", knobs=[knob("LR", 0.04), knob("WIDTH", 128)]),
        *(candidate(desc, edits=[edit]) for desc, (edit, _) in BAD.items()),
        candidate(
            "skip the noise term",
            edits=[{"search": "noise = random.Random(prepare.SEED)", "replace": CRASH_EDIT}],
        ),
    ],
    "grids": [
        {  # every cell is worse than the start, so none is a winner in any order the runs end in
            # (a winner that ends before trial 2 is kept gets re-run and stacked: budget wave 3 needs)
            "description": "LR x WIDTH below the start",
            "hypothesis": "both may be over-tuned",
            "factors": [
                {"name": "LR", "levels": ["0.005", "0.0025"]},
                {"name": "WIDTH", "levels": ["48", "32"]},
            ],
            "shared_edits": [{"search": 'print("---")', "replace": ENV_PRINT}],
            "tier": "screen",
        }
    ],
}


def user_text(body: dict[str, Any]) -> str:
    """The first user message of a request: the rendered campaign state."""
    return "\n".join(b.get("text", "") for b in body["messages"][0]["content"])


def crashed_trials(prompt: str) -> list[int]:
    section = prompt.split("## Recent crashes", 1)[1].split("\n## ", 1)[0]
    return [int(n) for n in re.findall(r"^#(\d+)\s+crash", section, re.MULTILINE)]


class Script:
    """The scripted server's side of waves 1 and 2; it keeps what it saw for the assertions."""

    def __init__(self) -> None:
        self.crash: int | None = None
        self.wave2_prompt = ""
        self.log_tail = ""
        self.fixes: list[dict[str, Any]] = []
        self.refusal = ""  # what propose_wave answered to one fix too many

    def inspect_crash(self, body: dict[str, Any]) -> dict[str, Any]:
        self.wave2_prompt = user_text(body)
        crashes = crashed_trials(self.wave2_prompt)
        assert len(crashes) == 1, self.wave2_prompt
        self.crash = crashes[0]
        return tool_call("get_log_tail", {"number": self.crash})

    def propose_fixes(self, body: dict[str, Any]) -> dict[str, Any]:
        result = body["messages"][-1]["content"][0]
        assert result["type"] == "tool_result" and not result.get("is_error"), result
        self.log_tail = str(result["content"])
        self.fixes = [
            candidate(f"fix of #{self.crash}: LR={lr}", knobs=[knob("LR", lr)], fix_of=self.crash)
            for lr in (0.05, 0.035, 0.045)[: MAX_FIX_ATTEMPTS + 1]  # one more than the limit
        ]
        wave = {"rationale": "the noise edit raised; keep the idea, drop the raise", "candidates": self.fixes}
        return tool_call("propose_wave", {**wave, "grids": []}, usage=usage_json(3000, 400, 2000, 500))

    def propose_fewer_fixes(self, body: dict[str, Any]) -> dict[str, Any]:
        result = body["messages"][-1]["content"][0]
        assert result["type"] == "tool_result" and result.get("is_error"), result
        self.refusal = str(result["content"])
        wave = {"rationale": "within the fix limit", "candidates": self.fixes[:MAX_FIX_ATTEMPTS]}
        return tool_call("propose_wave", {**wave, "grids": []}, usage=usage_json(3500, 300, 2500, 400))

    def steps(self) -> list[Any]:
        return [
            tool_call("propose_wave", WAVE_1, usage=usage_json(5000, 900, 0, 4000)),
            self.inspect_crash,
            self.propose_fixes,
            self.propose_fewer_fixes,
            *[overloaded() for _ in range(OVERLOADED_WAVES * (MAX_RETRIES + 1))],
        ]


def claude_toy_config(runs_dir: Path, *overrides: str) -> AutoresearchConfig:
    """The toy campaign, proposed by Claude (through the fake API)."""
    return compose_toy(
        runs_dir,
        "agent=claude",
        "cluster.cpu_slots=2",
        "cluster.poll_seconds=0.05",
        "cluster.grace_seconds=20",
        *overrides,
    )


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_claude_drives_a_toy_campaign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    canary = f"sk-ant-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("ANTHROPIC_API_KEY", canary)
    monkeypatch.setenv("AUTORESEARCH_TEST_TOKEN", canary)  # another credential-looking variable
    monkeypatch.chdir(REPO)  # the campaign's file paths are relative to the repository
    caplog.set_level(logging.DEBUG)  # every logger: the SDK's and the HTTP layer's too
    monkeypatch.setattr(logging.getLogger("autoresearch"), "propagate", True)

    cfg = claude_toy_config(
        tmp_path,
        "campaign.synchronous=true",  # waves follow one another: the script stays in step
        f"campaign.budget.max_experiments={MAX_EXPERIMENTS}",
        "campaign.budget.max_dollars=5.0",
        f"agent.model={MODEL}",
        f"agent.max_retries={MAX_RETRIES}",
        f"agent.max_fix_attempts={MAX_FIX_ATTEMPTS}",
        "agent.max_inspect_turns=2",
    )
    assert cfg.agent.kind == "claude" and cfg.campaign.name == "toy"
    campaign_dir = campaign_dir_of(cfg)
    campaign_dir.mkdir(parents=True)
    controller_log = logging.FileHandler(campaign_dir / "controller.log")
    controller_log.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(controller_log)

    script = Script()
    api = ScriptedAPI(script.steps(), models=[MODEL], default=lambda body: overloaded())
    sent_keys: list[str] = []
    statuses: list[int] = []  # of every POST /v1/messages, retries included

    def transport(request: httpx2.Request) -> httpx2.Response:
        sent_keys.append(request.headers.get("authorization", "") + request.headers.get("x-api-key", ""))
        response = api.handler(request)
        if request.url.path.endswith("/v1/messages"):
            statuses.append(response.status_code)
        return response

    client = build_client(cfg.agent, http_client=httpx2.Client(transport=httpx2.MockTransport(transport)))
    try:
        proposer = make_proposer(cfg, campaign_dir, client=client)
        assert proposer.name == "claude"
        fleet = make_fleet(cfg.cluster, deadline_seconds(cfg), str(campaign_dir))
        campaign = Campaign(cfg, campaign_dir, fleet, proposer)
        summary = campaign.run()
    finally:
        logging.getLogger().removeHandler(controller_log)
        controller_log.close()

    study = load(campaign_dir)
    by_number = {t.number: t for t in study.trials}
    attrs = {t.number: t.user_attrs for t in study.trials}
    ends = {r.number: r.ended_at for r in campaign.context().history}
    assert ends == {n: a.get("ended_at") for n, a in attrs.items()}  # the prompt orders results by them
    assert all(ends[t.number] is not None for t in study.trials if t.state.is_finished())

    # The campaign ran to its experiment budget, never past it.
    launched = [t for t in study.trials if "exp_dir" in t.user_attrs]
    assert len(launched) == MAX_EXPERIMENTS
    assert summary.stop_reason.startswith("experiments budget reached"), summary
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]

    # Waves 1 and 2 came from Claude, a later one from the offline fallback while the API was down.
    source_of_wave = {a["wave"]: a["source"] for a in attrs.values() if a.get("kind") == "experiment"}
    assert source_of_wave[1] == "claude" and source_of_wave[2] == "claude", source_of_wave
    assert "offline-fallback" in {source_of_wave[w] for w in source_of_wave if w >= 3}, source_of_wave
    assert any(a["source"] == "offline-fallback" and "exp_dir" in a for a in attrs.values())

    # The good change was kept, and it is Claude's.
    kept = [t for t in study.trials if t.user_attrs.get("status") == "keep"]
    assert any(t.user_attrs["source"] == "claude" for t in kept), [t.user_attrs for t in kept]
    best = min(t.value for t in kept)
    baseline = min(t.value for t in study.trials if t.user_attrs.get("status") == "baseline")
    assert best < baseline - 0.1 and summary.kept >= 1

    # Each refused edit is a FAIL trial of wave 1, status invalid, with its reason; nothing ran.
    for description, (_, words) in BAD.items():
        [trial] = [t for t in study.trials if t.user_attrs.get("description") == description]
        assert trial.state == TrialState.FAIL and "exp_dir" not in trial.user_attrs
        assert trial.user_attrs["status"] == "invalid" and trial.user_attrs["wave"] == 1
        assert words in trial.user_attrs["reason"], trial.user_attrs

    # The crash ran and failed with its traceback as the reason.
    assert script.crash is not None
    crash = attrs[script.crash]
    assert crash["description"] == "skip the noise term" and crash["status"] == "crash"
    assert by_number[script.crash].state == TrialState.FAIL and "toy divergence" in crash["reason"]

    # Wave 2 was told every refusal and why, read the crash log, and repaired it max_fix_attempts
    # times: one fix more was refused by the tool in the wave, not dropped after it.
    rejected = script.wave2_prompt.split("## Proposals the engine rejected recently, with its reasons", 1)
    assert len(rejected) == 2, script.wave2_prompt
    rejected_section = rejected[1].split("\n#", 1)[0]
    for description, (_, words) in BAD.items():
        assert f"- {description}: " in rejected_section and words in rejected_section, rejected_section
    assert "toy divergence: loss is nan" in script.log_tail
    too_many = f"this wave repairs it {MAX_FIX_ATTEMPTS} time(s) before (limit {MAX_FIX_ATTEMPTS})"
    assert f"trial {script.crash} already had 0 fix attempts, and {too_many}" in script.refusal
    fixes = sorted((n for n, a in attrs.items() if a.get("fix_of") == script.crash))
    assert len(fixes) == MAX_FIX_ATTEMPTS and all("exp_dir" in attrs[n] for n in fixes)
    assert all(attrs[n]["source"] == "claude" and attrs[n]["wave"] == 2 for n in fixes)

    # The ledger: one line per API call (a call is one HTTP request, or several when the SDK retried),
    # priced from the config, and the same dollars the engine's budget counts.
    rows = read_usage(campaign_dir)
    ok_calls = statuses.count(200)
    assert ok_calls == 4  # wave 1: propose; wave 2: inspect, propose (refused), propose
    assert sum(1 for r in rows if not r.get("error")) == ok_calls
    failed = [r for r in rows if r.get("error")]
    assert len(failed) * (MAX_RETRIES + 1) == statuses.count(529) >= MAX_RETRIES + 1
    assert all("Overloaded" in r["error"] and r["dollars"] == 0 for r in failed)
    assert len(statuses) == ok_calls + len(failed) * (MAX_RETRIES + 1)
    expected = sum(
        dollars_for(usage, cfg.agent)
        for usage in (
            usage_json(5000, 900, 0, 4000),
            usage_json(),
            usage_json(3000, 400, 2000, 500),
            usage_json(3500, 300, 2500, 400),
        )
    )
    assert sum(r["dollars"] for r in rows) == pytest.approx(expected)
    spend = budgets.measure(study, budgets.pool_prices(cfg), campaign_dir, time.time())
    assert spend.llm_dollars == pytest.approx(expected)
    left_then = cfg.campaign.budget.max_dollars - dollars_for(usage_json(5000, 900, 0, 4000), cfg.agent)
    assert f"dollars {left_then:g}" in script.wave2_prompt  # the prompt's budget counted wave 1's call

    # Transcripts: Claude's waves, then the fallback recorded over the failed one.
    waves = {
        int(p.stem): json.loads(p.read_text()) for p in (campaign_dir / "agent" / "waves").glob("*.json")
    }
    assert waves[1]["outcome"] == "ok" and waves[2]["outcome"] == "ok"
    assert waves[3]["outcome"] == "fallback" and "Overloaded" in waves[3]["reason"]

    # The key was really sent (model check and every message), and is written nowhere.
    assert sent_keys and all(canary in k for k in sent_keys)
    assert (campaign_dir / "controller.log").stat().st_size > 0
    files = all_files(campaign_dir)
    names = {p.relative_to(campaign_dir).as_posix() for p in files}
    assert {"study.journal", "agent/usage.jsonl", "results.tsv", "controller.log"} <= names
    assert any(n.startswith("proposals/") for n in names)
    assert any(n.endswith("/run.log") for n in names) and any(n.endswith("/spec.json") for n in names)
    for path in files:
        assert canary.encode() not in path.read_bytes(), path
    frontier_history = subprocess.run(
        ["git", "log", "-p", "--all"], cwd=campaign_dir / "frontier", capture_output=True, check=True
    ).stdout
    assert canary.encode() not in frontier_history  # git objects are compressed: read them through git
    assert canary not in caplog.text

    # train.py printed its whole environment: the harness settings are there, no credential is.
    env_logs = [
        (campaign_dir / a["exp_dir"] / "run.log").read_text()
        for a in attrs.values()
        if "exp_dir" in a and a.get("description", "").startswith("LR x WIDTH")
    ]
    assert env_logs and all("env: {" in text and "AUTORESEARCH_SEED" in text for text in env_logs)
    for text in env_logs:
        assert "ANTHROPIC_API_KEY" not in text and "AUTORESEARCH_TEST_TOKEN" not in text
    for spec in (campaign_dir / "experiments").glob("*/spec.json"):
        assert not any("KEY" in name or "TOKEN" in name for name in json.loads(spec.read_text())["env"])


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("sk-ant-refused", "error: the API key in ANTHROPIC_API_KEY was refused (401) while listing models"),
        (
            None,
            "error: ANTHROPIC_API_KEY is not set: export it to use agent=claude, or run with agent=offline",
        ),
    ],
)
def test_a_missing_or_refused_key_stops_the_command_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    key: str | None,
    said: str,
) -> None:
    """Checked when the agent starts (a refused key by its model check): exit 2 and the reason,
    not a traceback, nor a campaign run by the offline proposer unasked; nothing was run, and
    nothing written (no campaign folder, no controller.log), as any refusal."""
    from autoresearch.__main__ import EXIT_ERROR, run
    from autoresearch.agent import claude
    from autoresearch.agent.fakeapi import error_response

    monkeypatch.chdir(REPO)
    if key is None:
        monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    else:
        monkeypatch.setenv("ANTHROPIC_API_KEY", key)
        api = ScriptedAPI(models=error_response(401, "authentication_error", "invalid x-api-key"))
        # the real client, reading the key as ever; only its HTTP transport is the script
        monkeypatch.setattr(
            claude, "build_client", lambda cfg: build_client(cfg, http_client=api.http_client())
        )
    cfg = claude_toy_config(tmp_path, f"agent.model={MODEL}")
    assert run(cfg) == EXIT_ERROR
    assert not (tmp_path / "toy").exists()
    err = capsys.readouterr().err
    assert err.splitlines() == [said] and "sk-ant-refused" not in err


def test_a_start_logs_what_it_said_before_it_was_accepted(tmp_path: Path) -> None:
    """The log file is opened only once the start is accepted (a refusal writes nothing); what
    was said before (the agent's warnings as it started) goes into it first."""
    root = logging.getLogger("autoresearch")  # (conftest gives it back to the other tests as it was)
    setup_logging()
    logging.getLogger("autoresearch.agent").warning("agent.price_* are the default model's")
    assert list(tmp_path.iterdir()) == []
    log_to_file(tmp_path / "controller.log")
    root.info("campaign toy")
    for handler in root.handlers:
        handler.close()
    lines = (tmp_path / "controller.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "WARNING agent.price_* are the default model's",
        "INFO campaign toy",
    ]


def test_a_controller_killed_in_a_claude_call_resumes_without_losing_or_repeating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller as a user runs it, against the fake API on a local port (agent.base_url).
    It is killed (SIGKILL) while a wave's second call is unanswered, its first (an inspection)
    in the ledger; the next run asks again under a new wave number. That run's model writes a
    description with a lone surrogate (\\ud800 in the JSON), which crashed the controller as
    results.tsv was written. Nothing runs twice, every call answered is in the ledger and priced,
    and the key is in no file."""
    import os
    import signal
    import threading

    from engine_helpers import campaign_command

    from autoresearch.agent.fakeapi import served, tool_use_block

    canary = f"sk-ant-canary-{uuid.uuid4().hex}"
    env = {**os.environ, "ANTHROPIC_API_KEY": canary, "PYTHONPATH": str(REPO)}
    asked = threading.Event()  # the call the controller is killed in has arrived
    release = threading.Event()
    counter = iter(range(1, 1000))

    def hang(body: dict[str, Any]) -> dict[str, Any]:
        asked.set()
        release.wait(60)
        return tool_call("get_results", {"numbers": [0]})  # to a controller no longer there

    def propose(body: dict[str, Any]) -> httpx2.Response:
        n = next(counter)
        lr, width = 0.01 * (1 + n % 7), 32 * (1 + n % 5)
        wave = {
            "rationale": "r",
            "candidates": [candidate(f"LR SURROGATE {n}", knobs=[knob("LR", lr), knob("WIDTH", width)])],
            "grids": [],
        }
        text = json.dumps(
            message_json([tool_use_block("propose_wave", wave)], usage=usage_json(1000, 100, 50, 20))
        )
        return httpx2.Response(
            200,
            content=text.replace("SURROGATE", "\\ud800").encode(),
            headers={"content-type": "application/json"},
        )

    inspect = tool_call("get_results", {"numbers": [0]}, usage=usage_json(700, 30))
    api = ScriptedAPI([inspect, hang], models=[MODEL], default=propose)
    overrides = (
        "agent=claude",
        f"agent.model={MODEL}",
        "agent.max_retries=0",
        "cluster.cpu_slots=2",
        "campaign.fill_idle_slots=false",  # every experiment is Claude's: the waves are needed
        "campaign.budget.max_experiments=8",
    )
    with served(api) as url:
        command = campaign_command(tmp_path, *overrides, f"agent.base_url={url}")
        first = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            assert asked.wait(120), "the controller never made its second call"
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
            release.set()
        campaign_dir = tmp_path / "toy"
        # the call it was killed in stays in the ledger, at its worst case: it may have been billed
        assert [(r["wave"], r["turn"], "in_flight" in r) for r in read_usage(campaign_dir)] == [
            (1, 0, False),
            (1, 1, True),
        ]
        assert not (campaign_dir / "agent" / "waves").exists()
        again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr

    study = load(campaign_dir)
    proposed = [t for t in study.trials if t.user_attrs.get("kind") == "experiment"]
    descriptions = [t.user_attrs["description"] for t in proposed]
    assert proposed and len(set(descriptions)) == len(descriptions)  # nothing queued twice
    assert all("\ufffd" in d for d in descriptions)
    assert "LR \ufffd 1" in (campaign_dir / "results.tsv").read_text(encoding="utf-8")
    cut_off, *rows = sorted(read_usage(campaign_dir), key=lambda r: "in_flight" not in r)
    assert cut_off["output_tokens"] == AutoresearchConfig().agent.max_tokens
    assert rows[0]["wave"] == 1 and {r["wave"] for r in rows[1:]} == set(range(2, len(rows) + 1))
    assert [int(p.stem) for p in sorted((campaign_dir / "agent" / "waves").glob("*.json"))] == list(
        range(2, len(rows) + 1)
    )
    answered = [usage_json(700, 30)] + [usage_json(1000, 100, 50, 20)] * (len(rows) - 1)
    cfg = AutoresearchConfig()
    assert sum(r["dollars"] for r in rows) == pytest.approx(sum(dollars_for(u, cfg.agent) for u in answered))
    for path in all_files(campaign_dir):
        assert canary.encode() not in path.read_bytes(), path


class JumpingClock:
    """The wall clock, `offset` seconds ahead: hours a test makes pass at once."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


def answered_once_stopped(
    cfg: AutoresearchConfig, clock: JumpingClock | None = None, as_asked: Callable[[], None] = lambda: None
) -> tuple[Campaign, ScriptedAPI]:
    """A Claude campaign whose wave's first call is answered only once the campaign has stopped
    its pump (`as_asked` is done first: a jump of the clock); every later call, a look at trial 0."""
    held: list[Campaign] = []

    def first_answer(body: dict[str, Any]) -> dict[str, Any]:
        as_asked()
        wait_for(held[0].pump.stopping, 120, "the campaign to stop its pump")  # (or its close does)
        return tool_call("get_results", {"numbers": [0]})

    api = ScriptedAPI(
        [first_answer], models=[MODEL], default=lambda body: tool_call("get_results", {"numbers": [0]})
    )
    campaign_dir = campaign_dir_of(cfg)
    proposer = make_proposer(cfg, campaign_dir, client=api.client(max_retries=0))
    fleet = make_fleet(cfg.cluster, deadline_seconds(cfg), str(campaign_dir))
    held.append(Campaign(cfg, campaign_dir, fleet, proposer, clock=clock))
    return held[0], api


def test_a_budget_reached_while_claude_inspects_ends_the_wave_before_its_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget the campaign found reached while a wave's conversation was under way (here its wall
    hours, run out as the first call is answered) did not stop the conversation: it went on paying
    for up to max_inspect_turns + 2 calls, for a wave no experiment would come of. The campaign now
    stops it at once: its answer waits for that stop, and no call comes after it."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")
    monkeypatch.chdir(REPO)
    cfg = claude_toy_config(
        tmp_path,
        f"agent.model={MODEL}",
        "agent.max_inspect_turns=6",
        "campaign.budget.max_wall_hours=1",
        "campaign.fill_idle_slots=false",
    )
    campaign_dir = campaign_dir_of(cfg)
    clock = JumpingClock()

    def wall_budget_runs_out() -> None:
        clock.offset = 2 * 3600

    campaign, api = answered_once_stopped(cfg, clock, as_asked=wall_budget_runs_out)
    summary = campaign.run()

    assert summary.stop_reason.startswith("wall hours budget reached")
    assert len(api.message_bodies) == 1
    record = json.loads((campaign_dir / "agent" / "waves" / "00001.json").read_text())
    assert record["outcome"] == "stopped" and record["reason"].startswith("wall hours budget reached")


@pytest.mark.parametrize("wall_budget_too", [False, True])
def test_a_start_that_fails_ends_the_wave_claude_is_on_before_its_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wall_budget_too: bool
) -> None:
    """Every baseline failed (nothing can be judged), so no proposal would run, yet the wave under
    way went on paying for its calls, also where a budget was reached as well (the failure's stop
    hid it). The campaign now stops the wave at once, for the failure; and where the wall budget
    runs out at the same turn of the loop, the wave's reason, told the failure alone, names both."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")
    monkeypatch.chdir(REPO)
    broken = tmp_path / "train.py"
    go = tmp_path / "go"  # (made as the wave's first call is made: the baselines fail while it is under way)
    broken.write_text(
        f"import os, time\nwhile not os.path.exists({str(go)!r}):\n    time.sleep(0.02)\n"
        "raise RuntimeError('boom: broken at the start')\nLR = 0.1\nWIDTH = 64\n"
    )
    cfg = claude_toy_config(
        tmp_path,
        f"agent.model={MODEL}",
        f"campaign.train_py={broken}",
        "campaign.fill_idle_slots=false",
        "campaign.budget.max_wall_hours=1",
    )
    campaign_dir = campaign_dir_of(cfg)
    clock = JumpingClock()
    campaign, api = answered_once_stopped(cfg, clock, as_asked=go.touch)
    broken_start = campaign._broken_start

    def found_as_the_wall_budget_runs_out() -> str:
        if (failure := broken_start()) and wall_budget_too:
            clock.offset = 2 * 3600  # (the same turn of the loop)
        return failure

    monkeypatch.setattr(campaign, "_broken_start", found_as_the_wall_budget_runs_out)
    with pytest.raises(CampaignError, match="^every baseline run of the starting train.py failed") as failed:
        campaign.run()

    assert len(api.message_bodies) == 1
    record = campaign_dir / "agent" / "waves" / "00001.json"  # (amended by the proposer's thread)
    wait_for(
        lambda: record.exists() and json.loads(record.read_text())["outcome"] == "stopped", 60, "the stop"
    )
    reason = json.loads(record.read_text())["reason"]
    if wall_budget_too:
        assert reason.startswith(f"{failed.value}; and the wall hours budget reached (2")
    else:
        assert reason == str(failed.value)


def test_a_dollar_budget_left_below_a_calls_worst_case_is_spent_by_whole_waves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller counted its own call in flight at its worst case ($0.17 here, a whole
    max_tokens answer) until answered: with less than that left, the budget went past its limit
    for each call and back under it, the wave was stopped after its first call, and the campaign,
    under its limit again, asked for waves that never came while its inner sampler ran on. Now
    the wave's calls run to the budget ($0.004 each, $0.01 left: three), and the campaign ends."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-key")
    monkeypatch.chdir(REPO)
    cfg = claude_toy_config(
        tmp_path, f"agent.model={MODEL}", "agent.max_inspect_turns=8", "campaign.budget.max_dollars=0.01"
    )
    campaign_dir = campaign_dir_of(cfg)
    api = ScriptedAPI([], models=[MODEL], default=lambda body: tool_call("get_results", {"numbers": [0]}))
    proposer = make_proposer(cfg, campaign_dir, client=api.client(max_retries=0))
    fleet = make_fleet(cfg.cluster, deadline_seconds(cfg), str(campaign_dir))
    summary = Campaign(cfg, campaign_dir, fleet, proposer).run()

    assert summary.stop_reason == "dollars budget reached (0.012 of 0.01)"
    assert len(api.message_bodies) == 3
    record = json.loads((campaign_dir / "agent" / "waves" / "00001.json").read_text())
    assert record["outcome"] == "stopped" and len(record["messages"]) == 1 + 2 * 3


RESULT_LINE = "prepare.write_result({**summary"
DROP_RESULT = candidate(
    "quieter end", edits=[{"search": RESULT_LINE, "replace": "# " + RESULT_LINE}], knobs=[knob("LR", 0.04)]
)


def refused_then_mended(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    refused: list[dict[str, Any]],
    refused_grids: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> tuple[str, list[dict[str, Any]]]:
    """A Claude campaign of one change whose first wave proposes only `refused` (and
    `refused_grids`): what the tool answered it, and the attributes of every trial launched (the
    canary key is in no file)."""
    canary = f"sk-ant-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("ANTHROPIC_API_KEY", canary)
    monkeypatch.chdir(REPO)
    refusals: list[str] = []

    def mend(body: dict[str, Any]) -> dict[str, Any]:
        refusals.append(str(body["messages"][-1]["content"][0]["content"]))
        return tool_call("propose_wave", {"rationale": "mended", "candidates": [GOOD], "grids": []})

    GOOD = candidate("LR=0.04", knobs=[knob("LR", 0.04)])
    first = {"rationale": "a few ideas", "candidates": refused, "grids": list(refused_grids)}
    api = ScriptedAPI(
        [tool_call("propose_wave", first), mend], models=[MODEL], default=lambda body: overloaded()
    )
    cfg = claude_toy_config(
        tmp_path,
        "campaign.synchronous=true",
        "campaign.fill_idle_slots=false",
        "campaign.budget.max_experiments=4",  # the three baselines and one change (and its re-runs)
        f"agent.model={MODEL}",
        "agent.max_retries=0",
    )
    campaign_dir = campaign_dir_of(cfg)
    client = build_client(cfg.agent, http_client=api.http_client())
    proposer = make_proposer(cfg, campaign_dir, client=client)
    fleet = make_fleet(cfg.cluster, deadline_seconds(cfg), str(campaign_dir))
    summary = Campaign(cfg, campaign_dir, fleet, proposer).run()

    assert len(refusals) == 1, refusals
    assert "\n" not in refusals[0].removeprefix("Rejected, nothing was run: ")
    study = load(campaign_dir)
    descriptions = [c["description"] for c in (*refused, *refused_grids)]
    assert not [
        t for t in study.trials if t.user_attrs.get("description", "").startswith(tuple(descriptions))
    ]
    launched = [t.user_attrs for t in study.trials if "exp_dir" in t.user_attrs]
    assert summary.stop_reason.startswith("experiments budget reached"), summary
    assert all(a["status"] != "crash" for a in launched), [a.get("reason") for a in launched]
    assert "LR=0.04" in {a["description"] for a in launched}
    assert not [f for f in all_files(campaign_dir) if canary.encode() in f.read_bytes()]
    return refusals[0], launched


def test_an_edit_that_removes_the_result_call_is_refused_in_the_wave_and_costs_no_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claude comments out train.py's prepare.write_result call (the summary block's end): the
    run trained for its whole budget and crashed 'the harness wrote no result', an experiment
    spent on a train.py that could never give one. It is refused in the same wave, saying which
    call, the model mends it, and the budget goes to runs that give a result. (The engine refuses
    it too, for a frontier that moved: test_proposals_and_workspace.)"""
    refusal, _ = refused_then_mended(tmp_path, monkeypatch, [DROP_RESULT])
    assert "remove train.py's call of prepare.write_result" in refusal


# Edits no frontier can run: each was refused only when queued (an invalid trial, told a wave late).
NEVER_RUNS = {
    "edit of the harness": (
        {"search": "SEED = ", "replace": "SEED = 0 and ", "path": "prepare.py"},
        "refused an edit to 'prepare.py'",
    ),
    "edit escaping the workspace": (
        {"search": "WIDTH = 64", "replace": "WIDTH = 96", "path": "../train.py"},
        "refused an edit to '../train.py'",
    ),
    "huge edit": (
        {"search": "SECONDS = 0.2", "replace": "SECONDS = 0.2\n" + "#" * (MAX_EDIT_CHARS + 1)},
        f"edit 1 is too large (over {MAX_EDIT_CHARS} characters)",
    ),
    "unclosed bracket": (
        {"search": "WIDTH = 64", "replace": "WIDTH = (64"},
        "edited train.py does not parse: line ",
    ),
}


def test_edits_no_frontier_can_run_are_refused_in_the_wave_and_cost_no_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit of prepare.py, of ../train.py, one of too many characters, and one that leaves
    train.py unable to parse were queued and refused by the engine: an invalid trial each, a place
    of the wave lost, and the model told only in the next wave's prompt. They are refused in the
    wave, each named with its reason, the model mends it, and no invalid trial is left."""
    bad = [candidate(desc, edits=[edit]) for desc, (edit, _) in NEVER_RUNS.items()]
    refusal, _ = refused_then_mended(tmp_path, monkeypatch, bad)
    for description, (_, words) in NEVER_RUNS.items():
        assert f"candidate {description!r}: " in refusal and words in refusal, refusal
    assert "call of prepare" not in refusal  # (a train.py that does not parse still has its calls)


# Changes whose edits and knob values give back the frontier's train.py (the toy's LR = 0.01).
FRONTIER_AGAIN = {
    "LR=0.02 set back": candidate(
        "LR=0.02 set back", edits=[{"search": "LR = 0.01", "replace": "LR = 0.02"}], knobs=[knob("LR", 0.01)]
    ),
    "WIDTH there and back": candidate(
        "WIDTH there and back",
        edits=[
            {"search": "WIDTH = 64", "replace": "WIDTH = 96"},
            {"search": "WIDTH = 96", "replace": "WIDTH = 64"},
        ],
    ),
}


def test_a_candidate_whose_edits_give_back_the_frontier_is_refused_in_the_wave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit a knob sets back, and edits that undo each other, were queued and skipped by the
    launcher ('no change: already part of the frontier'): no run, a place of the wave lost and the
    model told only in the next prompt. They are refused in the wave, as knob values the frontier
    has already are, and the model mends it."""
    refusal, _ = refused_then_mended(tmp_path, monkeypatch, list(FRONTIER_AGAIN.values()))
    for description, words in (
        ("LR=0.02 set back", "its edits and knob values leave train.py the frontier's"),
        ("WIDTH there and back", "its edits leave train.py the frontier's"),
    ):
        assert f"candidate {description!r}: {words}, so nothing would change" in refusal, refusal


def grid(
    description: str, factors: dict[str, list[Any]], shared_edits: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "description": description,
        "hypothesis": "see the rationale",
        "factors": [{"name": n, "levels": [json.dumps(v) for v in vs]} for n, vs in factors.items()],
        "shared_edits": shared_edits,
        "tier": "screen",
    }


def test_edits_that_leave_a_swept_constant_unsettable_or_change_nothing_are_refused_in_the_wave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared edit that assigns the swept constant SECONDS (no declared knob) a second time passed
    propose_wave, and the engine refused every cell when it queued it, an invalid trial each and
    the model told a wave late; a candidate's edit that does the same too. A shared edit that
    replaces a text by itself, refused in a candidate, passed in a grid. Each is refused in the
    wave, the engine's refusal in its own words, and the model mends it."""
    twice = {"search": "SECONDS = 0.2\n", "replace": "SECONDS = 0.2\nSECONDS = 0.1\n"}
    grids = [
        grid("SECONDS sweep, set twice", {"SECONDS": [0.15, 0.25]}, [twice]),
        grid(
            "WIDTH sweep, edit of nothing",
            {"WIDTH": [96, 128]},
            [{"search": "LR = 0.01", "replace": "LR = 0.01"}],
        ),
    ]
    set_twice = candidate("SECONDS set twice", edits=[twice], knobs=[knob("SECONDS", 0.3)])
    refusal, _ = refused_then_mended(tmp_path, monkeypatch, [set_twice], grids)
    engine = "knob SECONDS is assigned 2 times in train.py; cannot set it"
    assert f"candidate 'SECONDS set twice': {engine}" in refusal, refusal
    assert f"grid 'SECONDS sweep, set twice': {engine}" in refusal, refusal
    assert "grid 'WIDTH sweep, edit of nothing': edit 1 replaces a text by itself" in refusal, refusal


def test_an_edit_that_leaves_the_result_call_in_an_uncalled_function_is_refused_in_the_wave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claude moves train.py's prepare.write_result call into a function nothing calls (as deleting
    `if __name__ == "__main__": main()` does to the shipped train.py): the call is still in the
    file, so the edit was queued, and its run ended with no result, a crash charged to the
    change. It is refused in the wave, naming the function, and the model mends it. (The engine
    refuses it too, and passes calls it cannot follow: test_proposals_and_workspace.)"""
    uncalled = candidate(
        "report at the end",
        edits=[{"search": RESULT_LINE, "replace": "def report():\n    " + RESULT_LINE}],
        knobs=[knob("LR", 0.04)],
    )
    refusal, _ = refused_then_mended(tmp_path, monkeypatch, [uncalled])
    assert "call of prepare.write_result in report(), which nothing run at module level calls" in refusal
