"""Building the Anthropic client from config, and checking the model id before a campaign starts.

The key comes from the ANTHROPIC_API_KEY environment variable only; of what is written or sent,
only the client object holds it: nothing here writes it anywhere. Retries with back-off on 429, 529, timeouts and connection
errors are the SDK's own (`max_retries`), except that a `retry-after` is waited out for at most
`MAX_RETRY_WAIT` seconds: the SDK would sleep as long as a server asks (an hour, a day).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from typing import Any

import anthropic
import httpx2

from autoresearch.config import AgentConfig
from autoresearch.proposals import plain_line
from autoresearch.runner import credential_values

log = logging.getLogger("autoresearch.agent")

API_KEY_ENV = "ANTHROPIC_API_KEY"
# The longest wait between two tries of a call, whatever `retry-after` says (the SDK's releases
# before 2.x waited at most 60 s too). A longer wait asked for is cut short: the call is tried again
# sooner, and if it still fails the wave falls back to the offline proposer instead of the
# proposer's thread sleeping for hours with nothing in the log.
MAX_RETRY_WAIT = 60.0
# The longest a try of the start's model check waits (it tries twice): the check only warns where
# the API does not answer, so the campaign's own timeout (600 s, 4 retries) held the start and
# check, their other refusals unsaid, up to 50 minutes to go on regardless.
MODEL_CHECK_SECONDS = 20.0


class CappedRetryClient(anthropic.Anthropic):
    """The SDK's client, waiting at most MAX_RETRY_WAIT seconds before a retry."""

    def _calculate_retry_timeout(self, *args: Any, **kwargs: Any) -> float:
        return min(super()._calculate_retry_timeout(*args, **kwargs), MAX_RETRY_WAIT)


class AgentSetupError(RuntimeError):
    """The agent cannot start: no key, a rejected key, or a bad setting. Fix config, then rerun."""


class ModelNotFoundError(AgentSetupError):
    """The configured model id is not offered to this key."""


def build_client(cfg: AgentConfig, http_client: httpx2.Client | None = None) -> anthropic.Anthropic:
    """A client for `cfg`: its retries and timeout, and the SDK's base URL unless one is set.

    `http_client` replaces the HTTP layer (tests pass one over `httpx2.MockTransport`).
    """
    key = (os.environ.get(API_KEY_ENV) or "").strip()  # (a key file's newline, a CRLF .env file)
    if not key:
        raise AgentSetupError(
            f"{API_KEY_ENV} is not set: export it to use agent=claude, or run with agent=offline"
        )
    if not re.fullmatch(r"[\x21-\x7e]+", key):
        # No HTTP header can hold it: every call would fail as a connection error, and each wave
        # fall back to the offline proposer, without a word on the key.
        raise AgentSetupError(
            f"{API_KEY_ENV} holds a space, a control character or a non-ASCII character (a "
            "quote pasted with it?): set it to the key alone"
        )
    check_settings(cfg)
    return CappedRetryClient(
        api_key=key,
        base_url=cfg.base_url or None,  # None: the SDK's default, which honours ANTHROPIC_BASE_URL
        max_retries=cfg.max_retries,
        timeout=cfg.timeout_seconds,
        http_client=http_client,
    )


def check_settings(cfg: AgentConfig) -> None:
    """Catch settings the API would refuse on every call, before the first wave."""
    if cfg.max_tokens <= 0:
        raise AgentSetupError(f"agent.max_tokens must be positive, not {cfg.max_tokens}")
    if cfg.thinking_budget > 0 and not 1024 <= cfg.thinking_budget < cfg.max_tokens:
        raise AgentSetupError(
            f"agent.thinking_budget={cfg.thinking_budget} must be at least 1024 and below "
            f"agent.max_tokens={cfg.max_tokens} (or 0 to leave thinking to the model's default)"
        )


def thinking_param(cfg: AgentConfig) -> dict[str, Any] | None:
    """Manual extended thinking when a budget is set; otherwise the model's own default."""
    if cfg.thinking_budget > 0:
        return {"type": "enabled", "budget_tokens": cfg.thinking_budget}
    return None


def list_model_ids(client: anthropic.Anthropic) -> list[str]:
    return [m.id for m in client.models.list(limit=1000)]


def model_matches(wanted: str, offered: str) -> bool:
    """An exact id, or an alias of a dated snapshot (claude-x-1 names claude-x-1-20260101, but
    claude-x names neither claude-x-1 nor its snapshots: another model)."""
    return offered == wanted or re.fullmatch(re.escape(wanted) + r"-\d{8}", offered) is not None


def check_model(client: anthropic.Anthropic, model: str) -> bool:
    """Refuse to start on a model id the key cannot use, naming the closest ones offered; True
    where the key's models were read and include it.

    Only a definite answer stops the campaign: when the models endpoint itself is unreachable or
    overloaded, a warning is logged, False returned, and the waves' own error handling (fallback)
    takes over.
    """
    try:
        offered = list_model_ids(client.with_options(timeout=MODEL_CHECK_SECONDS, max_retries=1))
    except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as err:
        raise AgentSetupError(
            f"the API key in {API_KEY_ENV} was refused ({err.status_code}) while listing models"
        ) from None
    except anthropic.APIError as err:
        log.warning(
            "could not list models to check agent.model=%s (%s); going on", model, describe_error(err)
        )
        return False
    if any(model_matches(model, m) for m in offered):
        return True
    close = difflib.get_close_matches(model, offered, n=5, cutoff=0.4) or offered[:5]
    raise ModelNotFoundError(
        f"agent.model={model!r} is not offered to this API key; close names: {', '.join(close) or 'none'}"
    )


def describe_error(err: BaseException) -> str:
    """An error's class and message only: never its request (whose headers hold the key), and
    with any credential of the environment taken out (a proxy may echo a request's headers in its
    error's message), in one line: it may quote what the model wrote (a knob name with an escape
    sequence), and goes to a terminal."""
    return f"{type(err).__name__}: {plain_line(redact(str(err)))[:300]}"


REDACTED = "[redacted]"


MIN_REDACTED = 8  # a shorter value (`1`, `true`) is no credential, and taken out would garble the text


def redact(text: str) -> str:
    """`text` without the value of any credential-looking variable of the environment (the API key
    among them) of MIN_REDACTED characters or more: what the API or a proxy says goes into the log,
    the ledger and the transcripts. A value is looked for as it is used, without the spaces and
    line breaks around it (`build_client` drops them from the key: a proxy echoes the key alone);
    the longest first, so one that holds another is taken out whole. Those taken out of the
    environment while the controller submits to Slurm count too (`runner.credential_values`)."""
    secrets = {value.strip() for value in credential_values() if len(value.strip()) >= MIN_REDACTED}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
