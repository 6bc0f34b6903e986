"""The LLM port: what quantorch needs from a chat model, whoever serves it.

A :class:`ChatModel` takes OpenAI-style messages (and, optionally, tools) and returns a
:class:`ChatReply`: the text content, the tool calls with their ids (arguments as the raw JSON
string the model wrote, validated by the caller), the token usage and the latency. The
OpenAI-compatible adapter (:mod:`quantorch.llm.client`) speaks to ``vllm serve``,
``transformers serve`` or any hosted API; tests may pass any object with the same method.

Every failure is an :class:`LLMError` (in the ``QuantorchError`` root) whose ``kind`` tells the
caller what to do: ``temporary`` (timeout, 429, 5xx, unreachable: retried, then reported),
``input`` (a setting is wrong: the URL, the model name, the key, the server's flags; stop and
fix it) or ``tool`` (the server answered but not in the chat.completion format).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from quantorch.errors import QuantorchError

__all__ = ["ChatModel", "ChatReply", "LLMError", "ToolCall", "Usage"]

#: What a failed call asks of the operator (as ``ToolResult.error_kind``).
LLMErrorKind = Literal["temporary", "input", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """One function call the model made: ``arguments`` is the JSON text as written."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Usage:
    """Tokens of one request as the server counted them (0 when it did not say).

    ``reported`` is False when the answer carried no complete ``usage`` (both counts): a
    caller that bills by token may then estimate the count that is missing.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reported: bool = True

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def cost_usd(self, usd_per_1m_input: float, usd_per_1m_output: float) -> float:
        return (self.prompt_tokens * usd_per_1m_input
                + self.completion_tokens * usd_per_1m_output) / 1e6


@dataclass(frozen=True)
class ChatReply:
    """One chat.completion answer."""

    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    model: str | None = None
    finish_reason: str | None = None
    latency_ms: float = 0.0

    def message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation (OpenAI shape)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or ""}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (the transcript cache stores replies this way)."""
        return {
            "content": self.content,
            "tool_calls": [[c.id, c.name, c.arguments] for c in self.tool_calls],
            "usage": [self.usage.prompt_tokens, self.usage.completion_tokens]
            + ([] if self.usage.reported else [False]),
            "model": self.model,
            "finish_reason": self.finish_reason,
            "latency_ms": self.latency_ms,
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> ChatReply:
        return cls(
            content=payload.get("content"),
            tool_calls=tuple(ToolCall(*c) for c in payload.get("tool_calls") or ()),
            usage=Usage(*payload.get("usage") or (0, 0)),
            model=payload.get("model"),
            finish_reason=payload.get("finish_reason"),
            latency_ms=float(payload.get("latency_ms") or 0.0),
        )


class LLMError(QuantorchError):
    """A chat request that produced no answer; ``kind`` says what to do about it.

    The message is redacted (no key, no password, no echoed header) and names the fix.
    ``usage`` holds the tokens the failed request used, when the server said.
    """

    def __init__(self, message: str, kind: LLMErrorKind = "tool", usage: Usage | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.usage = usage or Usage()
        self.status = status

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return {"temporary": 3, "input": 2}.get(self.kind, 1)


class ChatModel(Protocol):
    """A chat model behind an OpenAI-compatible API (or anything that answers like one)."""

    #: The model name requests carry (part of every transcript-cache key).
    model: str

    async def chat(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None = None,
        *,
        tool_choice: str | dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> ChatReply:
        """One request; raises :class:`LLMError`."""
        ...

    async def aclose(self) -> None:
        """Release connections (idempotent)."""
        ...
