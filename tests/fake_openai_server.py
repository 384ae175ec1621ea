"""A real HTTP server on 127.0.0.1 that speaks the OpenAI completions API from a script.

Used by tests of anything that talks to an OpenAI-compatible server (``OpenAIBackend``, API
teachers). It is a ``ThreadingHTTPServer`` on a free port, so the official ``openai`` client goes
through real sockets, real JSON and real HTTP status codes.

Usage::

    with FakeOpenAIServer([Outcome(status=429), Outcome(text="x = 1\\n", stop_reason="</code>")]) as srv:
        client = AsyncOpenAI(base_url=srv.url, api_key="test")   # srv.url ends with /v1
        ...
        assert len(srv.requests) == 2

``GET /v1/models`` lists ``model``. Each ``POST /v1/completions`` or ``POST /v1/chat/completions`` consumes the next scripted
``Outcome`` per returned choice; instead of a list, a callable ``responder(body) -> Outcome`` may
compute the outcome from the request body. Outcomes:

- ``Outcome(text=..., finish_reason="stop", stop_reason=...)``: a completion. Like vLLM, the text is
  sent as given (scripts leave out the stop string) and ``stop_reason`` names the stop string hit.
- ``Outcome(status=429)`` / ``Outcome(status=500)``: an HTTP error with an OpenAI-style error body.
- ``Outcome(delay_s=2.0, ...)``: sleep first (to trigger client timeouts), then answer as scripted.
- ``Outcome(raw=b"...")``: 200 with exactly these bytes, for servers that answer garbage.
- ``Outcome(status=429, retry_after="2")``: the error with a ``Retry-After`` header.
- ``Outcome(text=..., drop_after_bytes=40)``: a connection dropped mid-response: the headers promise
  the whole body, the server sends its first 40 bytes and closes the socket.
- ``Outcome(text=..., trickle_s=1.0)``: a slow-loris server: headers at once, then the body one byte
  every ``trickle_s`` seconds (each read finishes well within a per-read timeout).

When the script runs out the server answers 500 with "no scripted outcome left", so a test that
makes more requests than it planned fails loudly. Every request is recorded in ``srv.requests``
(path, headers, JSON body) for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Outcome:
    """One scripted answer. ``status`` set means an HTTP error; otherwise a completion."""

    text: str = ""
    finish_reason: str = "stop"
    stop_reason: str | int | None = None
    status: int | None = None
    delay_s: float = 0.0
    completion_tokens: int | None = None  # default: number of whitespace-separated words
    raw: bytes | None = None  # answer 200 with exactly these bytes (garbage, empty, wrong shape)
    # chat only: the reasoning, in the field the server names (DeepSeek and vLLM: reasoning_content;
    # OpenRouter: reasoning)
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"
    # chat only: native tool calls, each {"name": ..., "arguments": "<JSON text, or not>"}
    tool_calls: list[dict] | None = None
    retry_after: str | None = None  # with status: the Retry-After header (seconds), as 429s carry it
    # answer 200 with a full Content-Length but only this many bytes of the body, then hang up
    drop_after_bytes: int | None = None
    trickle_s: float | None = None  # send the body one byte every trickle_s seconds


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler sleeping for a timeout test must not block shutdown

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up is expected
            super().handle_error(request, client_address)


class FakeOpenAIServer:
    """Context manager running the scripted server in a background thread."""

    def __init__(
        self,
        outcomes: list[Outcome] | Callable[[dict[str, Any]], Outcome] | None = None,
        *,
        model: str = "fake-model",
    ):
        self._script = outcomes if callable(outcomes) else list(outcomes or [])
        self._lock = threading.Lock()
        self.model = model
        self.requests: list[RecordedRequest] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> FakeOpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._port = self._httpd.server_address[1]  # kept after stop(): tests of a server that went down
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def port(self) -> int:
        assert self._port is not None, "server not started"
        return self._port

    @property
    def url(self) -> str:
        """Base URL for the openai client (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- script ----------------------------------------------------------------------------------
    def add(self, *outcomes: Outcome) -> None:
        """Append outcomes to a list script (e.g. between two phases of a test)."""
        with self._lock:
            assert isinstance(self._script, list), "add() needs a list script"
            self._script.extend(outcomes)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script) if isinstance(self._script, list) else 0

    def _next(self, body: dict[str, Any]) -> Outcome | None:
        with self._lock:
            if callable(self._script):
                return self._script(body)
            return self._script.pop(0) if self._script else None

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)


class _Handler(BaseHTTPRequestHandler):
    server_owner: FakeOpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output clean
        pass

    def do_GET(self) -> None:
        owner = self.server_owner
        owner._record(RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, {}))
        if self.path != "/v1/models":
            return self._send(404, _error(f"no route {self.path}", "not_found"))
        self._send(
            200, {"object": "list", "data": [{"id": owner.model, "object": "model", "owned_by": "fake"}]}
        )

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return self._send(400, _error("request body is not JSON", "invalid_request_error"))
        owner = self.server_owner
        owner._record(RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            return self._send(404, _error(f"no route {self.path}", "not_found"))
        chat = self.path.endswith("/chat/completions")
        choices = []
        for index in range(int(body.get("n") or 1)):
            outcome = owner._next(body)
            if outcome is None:
                return self._send(500, _error("fake server: no scripted outcome left", "server_error"))
            if outcome.delay_s:
                time.sleep(outcome.delay_s)
            if outcome.status is not None:
                headers = {"Retry-After": outcome.retry_after} if outcome.retry_after else {}
                error = _error(f"scripted status {outcome.status}", "scripted")
                return self._send(outcome.status, error, headers)
            if outcome.raw is not None:
                return self._send_bytes(200, outcome.raw)
            choices.append(_choice(outcome, index, chat))
        n_out = sum(c.pop("_tokens") for c in choices)
        prompt = body.get("prompt", "") if not chat else json.dumps(body.get("messages", []))
        payload = {
            "id": f"cmpl-fake-{len(owner.requests)}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.get("model", owner.model),
            "choices": choices,
            "usage": {
                "prompt_tokens": len(str(prompt).split()),
                "completion_tokens": n_out,
                "total_tokens": len(str(prompt).split()) + n_out,
            },
        }
        self._send(200, payload, drop_after=outcome.drop_after_bytes, trickle_s=outcome.trickle_s)

    def _send(
        self, status: int, payload: dict, headers: dict | None = None, drop_after: int | None = None,
        trickle_s: float | None = None,
    ) -> None:  # fmt: skip
        self._send_bytes(status, json.dumps(payload).encode(), headers, drop_after, trickle_s)

    def _send_bytes(
        self, status: int, data: bytes, headers: dict | None = None, drop_after: int | None = None,
        trickle_s: float | None = None,
    ) -> None:  # fmt: skip
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if trickle_s is not None:  # a slow loris: every byte arrives, just never all of them soon
                for i in range(len(data)):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(trickle_s)
                return
            if drop_after is not None:  # promise the whole body, send a part, hang up
                self.wfile.write(data[:drop_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test); nothing to answer


def _choice(outcome: Outcome, index: int, chat: bool) -> dict[str, Any]:
    tokens = outcome.completion_tokens
    if tokens is None:
        tokens = len(outcome.text.split())
    choice: dict[str, Any] = {"index": index, "finish_reason": outcome.finish_reason, "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": outcome.text}
        if outcome.reasoning is not None:
            choice["message"][outcome.reasoning_field] = outcome.reasoning
        if outcome.tool_calls:
            choice["message"]["tool_calls"] = [
                {"id": f"call_{index}_{i}", "type": "function", "function": dict(c)}
                for i, c in enumerate(outcome.tool_calls)
            ]
            choice["message"]["content"] = outcome.text or None
            choice["finish_reason"] = "tool_calls"
    else:
        choice["text"] = outcome.text
    choice["stop_reason"] = outcome.stop_reason
    choice["_tokens"] = tokens
    return choice


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
