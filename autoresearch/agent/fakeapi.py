"""A scripted stand-in for the Anthropic API, for tests: no network, no key.

It plugs in under the real SDK client as an `httpx2.MockTransport`, so everything above the
HTTP layer (request building, retries, error classes, response parsing) is the SDK's own.
Each POST /v1/messages takes the next step of the script: a Messages API JSON dict, an
`httpx2.Response` (errors), or a callable that receives the request body and returns either
(so a responder can read the prompt and answer it). GET /v1/models lists `models`, or
answers with `models` itself when that is an error response.
Request bodies are recorded in `requests`; headers are not, so a recorded request holds no key.
`served(api)` puts the same script behind a local HTTP server, for a controller run as its own
process (agent.base_url=...).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import httpx2

from autoresearch.proposers.base import CampaignContext, ExperimentRecord, KnobSpec

Step = dict[str, Any] | httpx2.Response | Callable[[dict[str, Any]], "dict[str, Any] | httpx2.Response"]

_ids = itertools.count(1)


def usage_json(
    input_tokens: int = 1000, output_tokens: int = 200, cache_read: int = 0, cache_write: int = 0
) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
    }


def message_json(
    content: list[dict[str, Any]],
    *,
    stop_reason: str = "tool_use",
    model: str = "claude-test-1",
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A Messages API response body as the service sends it."""
    return {
        "id": f"msg_fake_{next(_ids):06d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or usage_json(),
    }


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(name: str, tool_input: dict[str, Any], block_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": block_id or f"toolu_fake_{next(_ids):06d}",
        "name": name,
        "input": tool_input,
    }


def tool_call(name: str, tool_input: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A whole reply that calls one tool, with a line of text before it as models often write."""
    return message_json([text_block(f"Calling {name}."), tool_use_block(name, tool_input)], **kwargs)


def error_response(status: int, error_type: str, message: str) -> httpx2.Response:
    """An API error; `retry-after-ms` keeps the SDK's back-off short in tests."""
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return httpx2.Response(status, json=body, headers={"retry-after-ms": "1"})


def overloaded() -> httpx2.Response:
    return error_response(529, "overloaded_error", "Overloaded")


def rate_limited() -> httpx2.Response:
    return error_response(429, "rate_limit_error", "Number of requests has exceeded your rate limit")


class ScriptedAPI:
    """Serves a script of replies to the real SDK client; see the module docstring."""

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        models: Iterable[str] | httpx2.Response = ("claude-test-1",),
        default: Step | None = None,
    ) -> None:
        self.script: list[Step] = list(script)
        self.models_error = models if isinstance(models, httpx2.Response) else None
        self.models = [] if self.models_error is not None else list(models)
        self.default = default
        self.requests: list[dict[str, Any]] = []

    @property
    def message_bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of every POST /v1/messages, retries included, in order."""
        return [r["body"] for r in self.requests if r["path"].endswith("/v1/messages")]

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        self.requests.append({"method": request.method, "path": path, "body": body})
        if request.method == "GET" and path.endswith("/v1/models"):
            return self.models_error or httpx2.Response(200, json=self._models_json())
        if request.method == "POST" and path.endswith("/v1/messages"):
            step = self.script.pop(0) if self.script else self.default
            if step is None:
                return error_response(500, "api_error", "the fake API's script is exhausted")
            if callable(step):
                step = step(body or {})
            if isinstance(step, httpx2.Response):
                return step
            return httpx2.Response(200, json=step)
        return error_response(404, "not_found_error", f"no fake route for {request.method} {path}")

    def _models_json(self) -> dict[str, Any]:
        data = [
            {
                "id": m,
                "type": "model",
                "display_name": m,
                "created_at": "2026-01-01T00:00:00Z",
                "lifecycle": "active",
            }
            for m in self.models
        ]
        first = data[0]["id"] if data else None
        last = data[-1]["id"] if data else None
        return {"data": data, "has_more": False, "first_id": first, "last_id": last}

    def http_client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self.handler))

    def client(self, api_key: str = "test-key", **kwargs: Any) -> anthropic.Anthropic:
        """A real SDK client whose HTTP layer is this script."""
        return anthropic.Anthropic(api_key=api_key, http_client=self.http_client(), **kwargs)


@contextlib.contextmanager
def served(api: ScriptedAPI) -> Iterator[str]:
    """`api` on an HTTP server at 127.0.0.1 (a free port) while the block runs: yields its base URL.
    Requests are answered one at a time, in order, each by `api.handler`."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            request = httpx2.Request(
                self.command,
                f"http://127.0.0.1{self.path}",
                content=self.rfile.read(length) if length else b"",
                headers=dict(self.headers.items()),
            )
            with lock:
                response = api.handler(request)
            body = response.read()
            self.send_response(response.status_code)
            for name, value in response.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "content-encoding"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # (a client killed mid-request, as tests do)
    thread = threading.Thread(target=server.serve_forever, name="fake-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


SAMPLE_TRAIN_PY = '''"""A toy train.py: enough text for search/replace edits in tests."""
DEPTH = 8
LR = 0.04
WARMUP = 0.1
ACTIVATION = "relu2"


def mlp(x):
    return relu(x) ** 2
'''


def sample_context(n_history: int = 12, **overrides: Any) -> CampaignContext:
    """A small but complete campaign context (knobs, a crash, a rejection) for tests.

    History records cycle through keep, discard and crash; trial 3 is always a crash.
    """
    history = []
    for n in range(n_history):
        status = "crash" if n % 10 == 3 else ("keep" if n % 10 == 5 else "discard")
        val = None if status == "crash" else 1.0 - 0.0001 * (n % 97)
        history.append(
            ExperimentRecord(
                number=n,
                description=f"experiment {n}: try LR={0.01 * (1 + n % 5):.2f}",
                status=status,
                val_bpb=val,
                tier="screen" if n % 4 else "validate",
                knobs={"LR": 0.01 * (1 + n % 5), "DEPTH": 8},
                reason="RuntimeError: shape mismatch" if status == "crash" else "",
                source="claude",
                delta=None if val is None else val - 1.0,
            )
        )
    fields: dict[str, Any] = {
        "frontier_source": SAMPLE_TRAIN_PY,
        "frontier_val_bpb": {"screen": 0.998, "validate": 0.991},
        "lineage": [r for r in history if r.status == "keep"],
        "history": history,
        "knobs": [
            KnobSpec("LR", "float", 1e-3, 1e-1, log=True),
            KnobSpec("DEPTH", "int", 4, 16),
            KnobSpec("ACTIVATION", "categorical", choices=("relu2", "gelu")),
        ],
        "knob_values": {"DEPTH": 8, "LR": 0.04, "WARMUP": 0.1, "ACTIVATION": "relu2"},
        "noise_std": 0.0011,
        "budget_left": {"experiments": 200, "wall_hours": 5.5, "dollars": 12.0},
        "tiers": {"screen": "h100 x13", "validate": "h200 x3"},
        "wave_size": 8,
        "max_wave": 16,
        "rejected": ["edit 1 of 'wider MLP': search text not found in train.py"],
    }
    fields.update(overrides)
    return CampaignContext(**fields)
