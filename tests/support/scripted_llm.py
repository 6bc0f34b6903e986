"""A scripted OpenAI-compatible server on loopback, for fast tests of the llm orchestrator.

Real HTTP (``http.server`` in a thread), so the whole client path runs: the adapter, retries,
errors, the conversation loop. What the "model" answers is a Python function of the request body
(:data:`Policy`): it sees the messages and tools exactly as sent and returns an assistant
message, or an ``(status, body)`` pair to fail the request. The slow tests use a real model
(:mod:`tests.support.tiny_llm`); these keep the many behaviours cheap to test.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ScriptedServer", "call", "scripted_server", "stock_of", "tool_results"]

#: body -> assistant message ({"content", "tool_calls"}) or (status, error body)
Policy = Callable[[dict[str, Any]], "dict[str, Any] | tuple[int, dict[str, Any]]"]


def call(name: str, arguments: dict[str, Any] | str, call_id: str | None = None) -> dict:
    """One tool call of an assistant message."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id or f"call_{name}", "type": "function",
            "function": {"name": name, "arguments": text}}


def stock_of(body: dict[str, Any]) -> str | None:
    """The ticker a request's user message is about (None: not a decision, e.g. the probe)."""
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    found = re.search(r"Stock (\S+),", user)
    return found.group(1) if found else None


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool messages of the conversation so far, parsed."""
    return [json.loads(m["content"]) for m in body["messages"] if m["role"] == "tool"]


def max_long(body: dict[str, Any]) -> dict[str, Any]:
    """Calls ``technical`` once, then answers ``long`` on everything."""
    if stock_of(body) is None:  # the client's start-up probe
        return {"content": "pong"}
    if not tool_results(body):
        return {"content": "", "tool_calls": [
            call("technical", {"ticker": stock_of(body), "provider": "basic"})]}
    return {"content": "", "tool_calls": [
        call("submit_decision", {"position": "long", "rationale": "max long"}, "call_submit")]}


@dataclass
class ScriptedServer:
    base_url: str
    model: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    policy: Policy = max_long
    tools_enabled: bool = True

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if "messages" in r]


@contextlib.contextmanager
def scripted_server(policy: Policy = max_long, model: str = "scripted-8b", *,
                    tools_enabled: bool = True) -> Iterator[ScriptedServer]:
    """Serve ``policy`` at ``http://127.0.0.1:PORT/v1`` until the block ends."""
    state = ScriptedServer("", model, policy=policy, tools_enabled=tools_enabled)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            return None

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            with lock:
                state.requests.append({"path": self.path})
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": state.model,
                                                             "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                state.requests.append(body)
            if body.get("model") != state.model:
                self._send(404, {"error": {"message": f"The model `{body.get('model')}` "
                                                      "does not exist."}})
                return
            if body.get("tools") and not state.tools_enabled:
                self._send(400, {"error": {"message": '"auto" tool choice requires '
                                 "--enable-auto-tool-choice and --tool-call-parser to be set"}})
                return
            try:
                answer = state.policy(body)
            except Exception as exc:  # a bug in a test's policy: a 500 the test will see
                self._send(500, {"error": {"message": f"policy failed: {exc!r}"}})
                return
            if isinstance(answer, tuple):
                self._send(*answer)
                return
            prompt = sum(len(str(m.get("content") or "")) for m in body["messages"]) // 4
            completion = len(json.dumps(answer)) // 4
            message = {"role": "assistant", "content": answer.get("content") or None}
            if answer.get("tool_calls"):
                message["tool_calls"] = answer["tool_calls"]
            self._send(200, {
                "id": "chatcmpl-1", "object": "chat.completion", "model": state.model,
                "choices": [{"index": 0, "message": message,
                             "finish_reason": "tool_calls" if answer.get("tool_calls")
                             else "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion},
            })

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
