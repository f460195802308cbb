"""ClaudeProposer: one Claude conversation per wave, with the offline proposer as a safety net.

When a wave fails (API errors after the SDK's retries, no usable proposal, or any other error on
the way), that wave comes from the fallback proposer instead, marked source="offline-fallback", so GPU slots never wait on
the API. After `failures_before_fallback` failures in a row Claude is only tried every
`RETRY_EVERY` waves until it answers again.

The object keeps no campaign state beyond those counters; what it did is on disk under
<campaign>/agent/: usage.jsonl (tokens and dollars) and waves/NNNNN.json (transcripts). The API key
lives only inside the SDK client, which is dropped when the proposer is pickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anthropic

from autoresearch.agent.client import build_client, check_model, describe_error, model_matches, redact
from autoresearch.agent.conversation import CallsStopped, Conversation, WaveFailed
from autoresearch.agent.inspection import Inspector
from autoresearch.agent.prompt import default_program_md, render_prompt
from autoresearch.agent.tools import parse_proposal, tool_definitions
from autoresearch.agent.usage import UsageLedger, first_turn_worth_caching, read_usage
from autoresearch.config import AgentConfig
from autoresearch.files import write_atomic, write_json_atomic
from autoresearch.proposals import Wave
from autoresearch.proposers.base import CampaignContext, Proposer

log = logging.getLogger("autoresearch.agent")

SOURCE = "claude"
FALLBACK_SOURCE = "offline-fallback"
RETRY_EVERY = 3  # while in fallback, try Claude again on every RETRY_EVERY-th wave
# Answers that the same request will get again, whatever the wait: the config or the key is wrong.
REFUSALS = (
    anthropic.BadRequestError,
    anthropic.AuthenticationError,
    anthropic.PermissionDeniedError,
    anthropic.NotFoundError,
)


def warn_of_default_prices(cfg: AgentConfig) -> None:
    """The default prices are the default model's: another model's calls would be counted at them
    against `max_dollars`, too low or too high, unless its own prices are set. A dated snapshot of
    the default model is that model, at its prices."""
    default = AgentConfig()
    prices = ("price_input", "price_output", "price_cache_read", "price_cache_write")
    if not model_matches(default.model, cfg.model) and all(
        getattr(cfg, p) == getattr(default, p) for p in prices
    ):
        log.warning(
            "agent.price_* are %s's prices: set them for %s (dollars per million tokens), or its "
            "spend (report, status, campaign.budget.max_dollars) is counted at those",
            default.model,
            cfg.model,
        )


class ClaudeProposer:
    """Proposes each wave through Claude; see the module docstring for failure handling."""

    name = "claude"
    # whether a failure since Claude last answered was a refusal that retrying cannot cure (a class
    # default: a proposer pickled before it was kept reads as not refused)
    refused = False

    def __init__(
        self,
        cfg: AgentConfig,
        campaign_dir: str | Path,
        fallback: Proposer,
        client: anthropic.Anthropic | None = None,
        program_md: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.campaign_dir = Path(campaign_dir)
        self.fallback = fallback
        self.program_md = program_md if program_md and program_md.strip() else default_program_md()
        self.ledger = UsageLedger(self.campaign_dir, cfg)
        self.tools = tool_definitions()
        self.consecutive_failures = 0
        self.waves_since_try = 0
        self.can_force = True
        self.other_models: set[str] = set()  # answered from, not agent.model: warned of once each
        self._client = client
        # whether the key's list of models was read and offers the model (a dry run says which)
        self.model_checked = bool(self.client.api_key) and check_model(self.client, cfg.model)
        warn_of_default_prices(cfg)

    @property
    def client(self) -> anthropic.Anthropic:
        if self._client is None:
            self._client = build_client(self.cfg)
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without the client: the key never leaves this process inside a pickle."""
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    def __repr__(self) -> str:
        return f"ClaudeProposer(model={self.cfg.model!r}, campaign_dir={str(self.campaign_dir)!r})"

    @property
    def in_fallback(self) -> bool:
        return self.refused or self.consecutive_failures >= max(1, self.cfg.failures_before_fallback)

    def propose(self, context: CampaignContext) -> Wave:
        wave_id = self._next_wave_id()
        if self.in_fallback and self.waves_since_try + 1 < RETRY_EVERY:
            self.waves_since_try += 1
            log.warning(
                "Claude API failing (%s in a row): the offline proposer keeps slots busy "
                "(wave %d); Claude is tried again at wave %d",
                failed_waves(self.consecutive_failures),
                wave_id,
                wave_id + RETRY_EVERY - self.waves_since_try,
            )
            return self._fallback(context, wave_id, "Claude skipped while the API is failing")
        self.waves_since_try = 0
        try:
            wave = self._ask_claude(context, wave_id)
        except CallsStopped as err:  # not the API failing: the campaign wants no wave, nor its cost
            return self._stopped(wave_id, str(err))
        except Exception as err:  # whatever went wrong, this wave comes from the fallback
            self._failed(wave_id, err)
            return self._fallback(context, wave_id, describe_error(err))
        if self.in_fallback:
            log.warning("Claude answers again after %s", failed_waves(self.consecutive_failures))
        self.consecutive_failures = 0
        self.refused = False
        return wave

    def _failed(self, wave_id: int, err: Exception) -> None:
        """Count a failed wave and say why. A refusal that retrying cannot cure (a bad request,
        a revoked key, a model gone) is an error to fix, and goes straight to the every-third-wave
        schedule instead of costing more waves first."""
        self.consecutive_failures += 1
        reason = describe_error(err)
        if isinstance(err, REFUSALS):
            self.refused = True  # until Claude answers again
            log.error(
                "Claude refused wave %d (%s), and will again: fix agent.* or the key, then run the "
                "command again (the campaign resumes). Until then the offline proposer fills the "
                "waves, and Claude is tried every %d",
                wave_id,
                reason,
                RETRY_EVERY,
            )
            return
        if not isinstance(err, anthropic.APIError | WaveFailed):  # a defect, not the API: show where
            # Redacted as the reason is: the traceback shows the error it interrupted, too (an API
            # error whose message echoed the key).
            trace = redact("".join(traceback.format_exception(err))).rstrip()
            log.warning("Claude wave %d raised %s\n%s", wave_id, reason, trace)
        log.warning(
            "Claude wave %d failed (%s); %d failed in a row. The offline proposer fills this wave "
            "so slots keep busy%s",
            wave_id,
            reason,
            self.consecutive_failures,
            f"; Claude is now tried every {RETRY_EVERY} waves" if self.in_fallback else "",
        )

    def _ask_claude(self, context: CampaignContext, wave_id: int) -> Wave:
        tools_chars = len(json.dumps(self.tools))
        prompt = render_prompt(context, self.cfg, self.program_md, tools_chars=tools_chars)
        conv = Conversation(
            client=self.client,
            cfg=self.cfg,
            prompt=prompt,
            tools=self.tools,
            inspector=Inspector(context, self.campaign_dir),
            parse=lambda raw: parse_proposal(
                raw, context, source=SOURCE, max_fix_attempts=self.cfg.max_fix_attempts
            ),
            ledger=self.ledger,
            wave_id=wave_id,
            can_force=self.can_force,
            stopping=context.stopping,  # (its pump's: a stop is that campaign's alone)
            cache_first_turn=first_turn_worth_caching(self.cfg, read_usage(self.campaign_dir)),
        )
        started = time.time()
        try:
            wave = conv.run()
        except Exception as err:  # the transcript is kept whatever ended the wave
            self._save(wave_id, started, conv, prompt.system, outcome="failed", error=describe_error(err))
            raise
        finally:
            self.can_force = conv.can_force
            self._warn_of_other_models(conv.models)
        self._save(wave_id, started, conv, prompt.system, outcome="ok", wave=wave)
        return wave

    def _warn_of_other_models(self, models: set[str]) -> None:
        """Once per model: calls answered by a model other than agent.model (a proxy at
        agent.base_url routing them elsewhere) are counted at agent.model's prices, against
        max_dollars, and the user heard of it only from the report's list of models at the end."""
        for model in sorted(models - self.other_models):
            if not (model_matches(self.cfg.model, model) or model_matches(model, self.cfg.model)):
                self.other_models.add(model)
                log.warning(
                    "the API answered from model %s, not agent.model=%s: its calls are counted at "
                    "agent.price_*, set for %s (report, status, campaign.budget.max_dollars)",
                    model,
                    self.cfg.model,
                    self.cfg.model,
                )

    def _fallback(self, context: CampaignContext, wave_id: int, reason: str) -> Wave:
        """The offline proposer's wave, recorded over the failed transcript (which is kept)."""
        wave = self.fallback.propose(context)
        wave.source = FALLBACK_SOURCE
        self._amend_wave_file(wave_id, outcome="fallback", reason=reason, proposal=asdict(wave))
        return wave

    def _stopped(self, wave_id: int, reason: str) -> Wave:
        """No wave, and no fallback's either: the campaign stopped asking for experiments (a budget
        reached) or is leaving, and a wave's calls past that are money it did not mean to spend."""
        log.warning("Claude wave %d ends without a proposal, before its next call: %s", wave_id, reason)
        self._amend_wave_file(wave_id, outcome="stopped", reason=reason)
        return Wave(rationale=f"no proposal: {reason}", source=SOURCE)

    def _amend_wave_file(self, wave_id: int, **fields: Any) -> None:
        """The wave's transcript (kept) with `fields` over it."""
        path = self._waves_dir() / f"{wave_id:05d}.json"
        record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"wave": wave_id}
        record.update(fields)
        self._write_wave_file(wave_id, record)

    # Transcripts: agent/waves/NNNNN.json per wave; each distinct system prompt once, by hash.

    def _waves_dir(self) -> Path:
        return self.campaign_dir / "agent" / "waves"

    def _next_wave_id(self) -> int:
        """Counted from the files on disk, so numbering carries over a controller restart: the
        transcripts, and the ledger, which has the calls of a wave whose controller was killed
        before its transcript was written (its wave is asked again under a new number)."""
        numbers = [int(p.stem) for p in self._waves_dir().glob("*.json") if p.stem.isdigit()]
        numbers += [r["wave"] for r in read_usage(self.campaign_dir) if isinstance(r.get("wave"), int)]
        return max(numbers, default=0) + 1

    def _save(
        self,
        wave_id: int,
        started: float,
        conv: Conversation,
        system: list[dict[str, Any]],
        *,
        outcome: str,
        error: str = "",
        wave: Wave | None = None,
    ) -> None:
        system_text = "\n\n".join(b["text"] for b in system)
        digest = hashlib.sha256(system_text.encode()).hexdigest()[:16]
        prompt_file = self.campaign_dir / "agent" / "prompts" / f"{digest}.md"
        prompt_file.parent.mkdir(parents=True, exist_ok=True)
        # Whole, or not at all: a controller killed while writing it left a file cut short, which
        # every later wave with this prompt took for written, and no transcript ever named it whole.
        if not _holds(prompt_file, system_text):
            write_atomic(prompt_file, system_text)
        record = {
            "wave": wave_id,
            "outcome": outcome,
            "error": error,
            "model": self.cfg.model,
            "started": started,
            "seconds": round(time.time() - started, 3),
            "calls": conv.calls,
            "system_prompt": f"prompts/{prompt_file.name}",
            "messages": conv.messages,
            "proposal": asdict(wave) if wave is not None else None,
        }
        self._write_wave_file(wave_id, record)

    def _write_wave_file(self, wave_id: int, record: dict[str, Any]) -> None:
        folder = self._waves_dir()
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / f"{wave_id:05d}.json", record)


def failed_waves(n: int) -> str:
    return f"{n} failed wave{'' if n == 1 else 's'}"


def _holds(path: Path, text: str) -> bool:
    """Whether the file at `path` holds `text` exactly."""
    try:
        return path.read_bytes() == text.encode()
    except OSError:
        return False
