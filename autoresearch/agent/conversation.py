"""One wave's conversation with Claude: a bounded loop of inspection turns ending in propose_wave.

The loop is bounded three ways: inspection calls (`max_inspect_turns`), total turns (inspections
plus a proposal plus one repair), and the size of the conversation (`max_context_tokens`).
A malformed proposal goes back as an error tool_result so the model can repair it in a later turn.
On the closing turn propose_wave is forced with tool_choice where the model allows it: extended
thinking forbids forcing, and some models refuse it with a 400, after which the request is sent
again unforced and forcing stays off for this proposer.
"""

from __future__ import annotations

import copy
import json
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic

from autoresearch.agent.client import describe_error, thinking_param
from autoresearch.agent.inspection import RESULT_CHARS, Inspector, clip_head
from autoresearch.agent.prompt import Prompt, estimate_tokens, valid_text
from autoresearch.agent.tools import PROPOSE_TOOL, ProposalError
from autoresearch.agent.usage import UsageLedger, tokens_of
from autoresearch.config import AgentConfig
from autoresearch.proposals import Wave

log = logging.getLogger("autoresearch.agent")

CLOSING_NOTE = "Inspection for this wave is over: call propose_wave now with your whole wave."
NO_INSPECTION = "No inspection budget is left in this wave: call propose_wave now."
NO_TOOL = "Reply by calling propose_wave with the wave; text alone is not read by the engine."
CUT_OFF = "Your reply was cut off ({stop_reason}) before it finished. Call propose_wave with a shorter wave."
CUT_OFF_CALL = (
    "This call was cut off ({stop_reason}) before its input was whole, so it was not read. Call "
    "propose_wave again with a shorter wave."
)
# Stop reasons of a reply cut off mid-block: its last block, a tool call among them, is incomplete
# (the API's input of a cut-off tool call is what was written of it, which may still parse).
CUT_SHORT = ("max_tokens", "model_context_window_exceeded")

_BLOCK_FIELDS = {
    "text": ("type", "text"),
    "tool_use": ("type", "id", "name", "input"),
    "thinking": ("type", "thinking", "signature"),
    "redacted_thinking": ("type", "data"),
}


class WaveFailed(RuntimeError):
    """The model gave no usable proposal within the wave's bounds."""


class CallsStopped(WaveFailed):
    """The campaign wants no more calls for this wave (a budget reached, the controller leaving)."""


class BadResponse(WaveFailed):
    """The API (or a proxy in front of it) answered 200 with something that is not a message."""


def block_param(block: Any) -> dict[str, Any]:
    """A response content block as the plain dict the API takes back (and a transcript stores):
    text that cannot be encoded (a lone surrogate) is mended, or the next request could not be
    sent, and a tool call's input is an object, as the API takes it back."""
    data = valid_text(block.model_dump(mode="json", exclude_none=True, warnings=False))
    fields = _BLOCK_FIELDS.get(data.get("type", ""))
    if data.get("type") == "tool_use" and not isinstance(data.get("input"), dict):
        data["input"] = {}
    return {k: data[k] for k in fields if k in data} if fields else data


def checked_response(response: Any) -> Any:
    """The SDK's message, or BadResponse: the SDK does not check a 200's body (a proxy's HTML
    page comes back as a str, a body without content or usage as a message lacking them)."""
    content = getattr(response, "content", None)
    usage = getattr(response, "usage", None)
    if (
        isinstance(content, list)
        and all(hasattr(b, "model_dump") for b in content)
        and isinstance(getattr(usage, "input_tokens", None), int)
    ):
        return response
    if isinstance(response, str):
        what = f"text, not a message: {response[:60]!r}"
    else:
        what = f"a {type(response).__name__} without the content and usage of a message"
    raise BadResponse(f"the API answered 200 with {what} (is agent.base_url the Messages API?)")


def refusal_details(response: Any) -> str:
    """What the API says of a refusal, its policy category and explanation, where it says them:
    without them the log said only that the model refused, and a refusal of every wave for one
    reason read as a fault of the API."""
    details = getattr(response, "stop_details", None)
    said = [str(v) for v in (getattr(details, "category", None), getattr(details, "explanation", None)) if v]
    return f" ({': '.join(said)})" if said else ""


def _raised_reading_json(err: BaseException) -> bool:
    """Whether `err` came out of the JSON reader: a body nested deeper than it recurses, or with
    an integer of more digits than Python converts, is the API's (or a proxy's) fault, as a body
    cut short is, and was logged with a traceback as a defect of ours."""
    return any(
        Path(frame.filename).parts[-2:] in (("json", "decoder.py"), ("json", "__init__.py"))
        for frame in traceback.extract_tb(err.__traceback__)
    )


def tool_result(tool_use_id: str, text: str, is_error: bool) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": valid_text(text)}
    if is_error:
        block["is_error"] = True
    return block


class Conversation:
    """Runs one wave; `messages` afterwards is the transcript, `can_force` what the model allowed."""

    def __init__(
        self,
        *,
        client: anthropic.Anthropic,
        cfg: AgentConfig,
        prompt: Prompt,
        tools: list[dict[str, Any]],
        inspector: Inspector,
        parse: Callable[[dict[str, Any]], Wave],
        ledger: UsageLedger,
        wave_id: int,
        can_force: bool = True,
        cache_first_turn: bool = True,
        stopping: Callable[[], str] = lambda: "",
    ) -> None:
        self.client = client
        self.cfg = cfg
        self.prompt = prompt
        self.tools = tools
        self.inspector = inspector
        self.parse = parse
        self.ledger = ledger
        self.wave_id = wave_id
        self.can_force = can_force
        self.cache_first_turn = cache_first_turn  # `usage.first_turn_worth_caching`
        self.stopping = stopping  # asked before each call: why to make it no more ("": go on)
        self.messages: list[dict[str, Any]] = []
        self.context_tokens = 0  # size of the last request plus its answer, from the API's usage
        self.calls = 0
        self.models: set[str] = set()  # the models the API says answered (a proxy may route elsewhere)

    def run(self) -> Wave:
        cfg = self.cfg
        self.messages = [{"role": "user", "content": [{"type": "text", "text": self.prompt.user}]}]
        inspections_left = cfg.max_inspect_turns
        max_turns = cfg.max_inspect_turns + 2
        closing_noted = False
        last_problem = "the model never called propose_wave"
        for turn in range(max_turns):
            closing = inspections_left <= 0 or self.over_bound() or turn == max_turns - 1
            if closing and not closing_noted:
                self.messages[-1]["content"].append({"type": "text", "text": CLOSING_NOTE})
                closing_noted = True
            response = self.call(turn, force=closing)
            content = [block_param(b) for b in response.content]
            if content:
                self.messages.append({"role": "assistant", "content": content})
            uses = [b for b in response.content if getattr(b, "type", "") == "tool_use"]
            stop_reason = getattr(response, "stop_reason", None)
            if stop_reason == "refusal":
                raise WaveFailed(f"the model refused to propose{refusal_details(response)}")
            cut_short = stop_reason in CUT_SHORT
            if not uses:
                note = CUT_OFF.format(stop_reason=stop_reason) if cut_short else NO_TOOL
                last_problem = (
                    self.cut_off(turn, stop_reason, "before any tool call")
                    if cut_short
                    else f"turn {turn + 1} ended without a tool call ({stop_reason})"
                )
                self.messages.append({"role": "user", "content": [{"type": "text", "text": note}]})
                continue
            results = []
            for use in uses:
                tool_input = valid_text(use.input)
                if cut_short and use is response.content[-1]:
                    last_problem = self.cut_off(turn, stop_reason, f"in a call of {use.name}")
                    results.append(tool_result(use.id, CUT_OFF_CALL.format(stop_reason=stop_reason), True))
                elif not isinstance(tool_input, dict):
                    last_problem = (
                        f"{use.name} was called with {type(tool_input).__name__} input, not an object"
                    )
                    results.append(tool_result(use.id, f"Rejected: {last_problem}", True))
                elif use.name == PROPOSE_TOOL:
                    try:
                        return self.parse(tool_input)
                    except ProposalError as err:
                        last_problem = clip_head(str(err), RESULT_CHARS)
                        results.append(
                            tool_result(use.id, f"Rejected, nothing was run: {last_problem}", True)
                        )
                elif inspections_left > 0 and not self.over_bound():
                    text, is_error = self.inspector.run(use.name, tool_input)
                    inspections_left -= 1
                    results.append(tool_result(use.id, text, is_error))
                else:
                    results.append(tool_result(use.id, NO_INSPECTION, True))
            self.messages.append({"role": "user", "content": results})
        raise WaveFailed(f"no valid proposal in {max_turns} turns; last problem: {last_problem}")

    def cut_off(self, turn: int, stop_reason: str, where: str) -> str:
        """A turn cut off, and at max_tokens the setting to raise: each such turn costs a whole
        max_tokens answer, every wave, and the line named no setting."""
        too_few = (
            f"; agent.max_tokens={self.cfg.max_tokens} is too few for it"
            if stop_reason == "max_tokens"
            else ""
        )
        return f"turn {turn + 1} was cut off ({stop_reason}) {where}{too_few}"

    def over_bound(self) -> bool:
        """Would one more inspection result push the conversation past max_context_tokens?"""
        return self.context_tokens + estimate_tokens(RESULT_CHARS) > self.cfg.max_context_tokens

    def call(self, turn: int, force: bool) -> Any:
        if reason := self.stopping():
            raise CallsStopped(reason)
        force = force and self.can_force and thinking_param(self.cfg) is None
        request = self.request(force)
        asked = estimate_tokens(len(json.dumps(request)))
        call = self.ledger.start(model=self.cfg.model, wave=self.wave_id, turn=turn, input_tokens=asked)
        try:
            try:
                response = self._create(request)
            except anthropic.BadRequestError:
                if not force:
                    raise
                response = self._create(self.request(False))
                self.can_force = False
                log.info(
                    "model %s refused a forced tool_choice; proposals are now asked for unforced",
                    self.cfg.model,
                )
            response = checked_response(response)
        except Exception as err:  # the call is over, answered or not (a refused forced call is asked again)
            self.ledger.record_error(
                model=self.cfg.model, wave=self.wave_id, turn=turn, call=call, error=describe_error(err)
            )
            raise
        usage = tokens_of(response.usage)
        self.context_tokens = sum(usage.values())
        model = getattr(response, "model", None) or self.cfg.model
        self.models.add(str(model))
        self.ledger.record(model=str(model), usage=response.usage, wave=self.wave_id, turn=turn, call=call)
        return response

    def _create(self, request: dict[str, Any]) -> Any:
        self.calls += 1
        try:
            return self.client.messages.create(**request)
        except json.JSONDecodeError as err:  # (the SDK parses a body that says it is JSON unchecked)
            raise BadResponse(
                f"the API answered 200 with a body that is not JSON ({err}; is agent.base_url the "
                "Messages API?)"
            ) from None
        except (RecursionError, ValueError) as err:
            if not _raised_reading_json(err):
                raise
            raise BadResponse(
                f"the API answered 200 with JSON that Python's reader cannot take ({describe_error(err)}; "
                "is agent.base_url the Messages API?)"
            ) from None

    def request(self, force: bool) -> dict[str, Any]:
        """The Messages API arguments: tools and system (cached by the system blocks' breakpoints,
        tools included), then the turns so far."""
        req: dict[str, Any] = {
            "model": self.cfg.model,
            "max_tokens": self.cfg.max_tokens,
            "system": self.prompt.system,
            "tools": self.tools,
            "messages": self._with_breakpoint(),
            "tool_choice": {"type": "tool", "name": PROPOSE_TOOL} if force else {"type": "auto"},
        }
        thinking = thinking_param(self.cfg)
        if thinking is not None:
            req["thinking"] = thinking
        return req

    def _with_breakpoint(self) -> list[dict[str, Any]]:
        """The turns with a rolling cache breakpoint on the newest block, so the next turn of
        this wave re-reads everything before it from the cache. On the first turn only where
        enough of the campaign's waves go on to a second (`cache_first_turn`): the write costs
        more than plain input, and a wave that proposes at once never reads it back."""
        messages = list(self.messages)
        if len(messages) == 1 and not self.cache_first_turn:
            return messages
        last = copy.deepcopy(messages[-1])
        last["content"][-1]["cache_control"] = {"type": "ephemeral"}
        messages[-1] = last
        return messages
