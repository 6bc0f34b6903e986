"""The OpenAI-compatible adapter of the LLM port: ``POST {base_url}/chat/completions``.

:class:`OpenAIChatModel` speaks to ``vllm serve``, ``transformers serve`` or a hosted API over
``httpx.AsyncClient`` (one per event loop, created on first use; tests pass an
``httpx.MockTransport``). At most ``settings.max_concurrency`` requests are in flight per
event loop (vLLM batches them). Timeouts, transport errors, HTTP 429 and 5xx are retried up to
``settings.max_retries`` times with exponential backoff and jitter from a seeded generator
(a server's ``Retry-After`` is honoured, capped at :data:`RETRY_AFTER_CAP_S`); then an
:class:`~quantorch.llm.port.LLMError` of kind ``temporary`` names the URL and the fix. Refusals
are ``input`` errors that name the setting to change (the URL, the model name, the key, the
server's tool-calling flags); an HTTP 200 that is not a chat.completion is a ``tool`` error.

Every message goes through :func:`quantorch.redact.redact`: the URL never shows credentials,
and of a refused answer's body only a short redacted excerpt is kept (a server may echo the
request's headers). ``httpx`` is imported on first use, so importing the port stays cheap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from quantorch._http import retry_after_seconds
from quantorch.llm.port import ChatModel, ChatReply, LLMError, LLMErrorKind, ToolCall, Usage
from quantorch.llm.settings import LLMSettings
from quantorch.redact import redact, redact_url

if TYPE_CHECKING:
    import httpx

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "ERROR_EXCERPT_CHARS",
    "RETRY_AFTER_CAP_S",
    "OpenAIChatModel",
    "chat_sync",
]

#: First retry's delay (seconds); each further retry doubles it, times a jitter in [0.5, 1).
BACKOFF_BASE_S = 0.5
#: The longest backoff between two attempts (seconds).
BACKOFF_CAP_S = 20.0
#: The longest wait a server's ``Retry-After`` can ask for (seconds).
RETRY_AFTER_CAP_S = 60.0
#: Characters of a refused answer's body kept in the error (after redaction).
ERROR_EXCERPT_CHARS = 120

_TOOL_FLAGS = "--enable-auto-tool-choice --tool-call-parser hermes"
_SERVE_RUN = "quantorch serve llm --run"
_TOOL_CALLING_OFF = re.compile(
    r"tool[ _-]?choice|enable-auto-tool-choice|tool-call-parser", re.IGNORECASE
)
_MODEL_MISSING = re.compile(
    r"\bmodel\b.{0,200}?\b(does not exist|not found|not exist|unknown)\b", re.IGNORECASE
)
_CONTEXT_TOO_LONG = re.compile(r"context length|maximum context|too many tokens", re.IGNORECASE)

_T = TypeVar("_T")


@dataclass
class _LoopState:
    """What belongs to one event loop: its connection pool and its request slots."""

    client: httpx.AsyncClient
    slots: asyncio.Semaphore


@dataclass
class _Failure:
    """An attempt that may be retried: what went wrong, its fix and the server's wait."""

    text: str
    fix: str
    status: int | None = None
    retry_after: float | None = None
    cause: BaseException | None = None


class OpenAIChatModel:
    """A :class:`~quantorch.llm.port.ChatModel` over an OpenAI-compatible HTTP API.

    Parameters
    ----------
    settings
        Where the server is, the key, the timeout, ``max_concurrency`` and ``max_retries``.
    transport
        An ``httpx.AsyncBaseTransport`` to route requests elsewhere (``httpx.MockTransport``
        in tests); the default is the network.
    sleep
        Awaited with the backoff seconds between attempts (tests pass a recorder).
    seed
        Seed of the backoff jitter (the delays are the same on every run).

    The object can be used from several event loops (successive ``asyncio.run`` calls, or
    threads): each loop gets its own ``httpx.AsyncClient`` and semaphore. Call
    :meth:`aclose` before a loop ends to close its connections; :meth:`complete_sync` does.
    """

    def __init__(
        self,
        settings: LLMSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        seed: int = 0,
    ) -> None:
        self.settings = settings
        self.model: str = settings.model
        self._transport = transport
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._secrets = settings.secrets()

    def __repr__(self) -> str:
        shown = self._shown(self.settings.base_url)
        return f"OpenAIChatModel(base_url={shown!r}, model={self.model!r})"

    async def __aenter__(self) -> OpenAIChatModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---- the port ----------------------------------------------------------------------------

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
        """One chat completion; the options are sent only when given.

        ``latency_ms`` is the time the caller waited, retries included. Raises
        :class:`~quantorch.llm.port.LLMError`.
        """
        started = time.perf_counter()
        body: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        options = {
            "tools": list(tools) if tools is not None else None,
            "tool_choice": tool_choice,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "response_format": response_format,
        }
        body.update({name: value for name, value in options.items() if value is not None})
        response = await self._send("POST", "/chat/completions", body)
        return self._reply(response, (time.perf_counter() - started) * 1000)

    async def aclose(self) -> None:
        """Close this event loop's connections (idempotent; a later call reopens them)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._states.pop(loop, None)
            self._forget_closed_loops()
        if state is not None:
            await state.client.aclose()

    # ---- beyond the port ---------------------------------------------------------------------

    async def list_models(self) -> list[str]:
        """The model names the server offers (``GET {base_url}/models``)."""
        response = await self._send("GET", "/models")
        served = _model_ids(response)
        if served is None:
            raise self._error(
                f"LLM endpoint {self._shown(self._url('/models'))} did not answer GET /models "
                f"in the OpenAI format; is {self.settings.setting_name('base_url')} the "
                "server's /v1 address (e.g. http://localhost:8000/v1)?",
                "tool",
            )
        return served

    async def check(self, require_tools: bool = True) -> list[str]:
        """Is the server up, does it serve ``settings.model`` (and call tools)?

        With ``require_tools`` a one-token request with a tool and ``tool_choice="auto"``
        checks that the server was started with ``--enable-auto-tool-choice``. Returns the
        served model names; raises :class:`~quantorch.llm.port.LLMError` naming the fix.
        """
        served = await self.list_models()
        if self.model not in served:
            raise self._error(self._wrong_model(served), "input")
        if require_tools:
            probe = {
                "type": "function",
                "function": {
                    "name": "ping",
                    "description": "Answers pong.",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
            try:
                await self.chat(
                    [{"role": "user", "content": "ping"}],
                    [probe],
                    tool_choice="auto",
                    max_tokens=1,
                    temperature=0.0,
                )
            except LLMError as exc:
                # a server without tool calling refuses the request (vLLM: HTTP 400); one that
                # fails to *parse* a one-token answer as a tool call (transformers serve: 500)
                # has tool calling on, and the run's own requests will show any real outage
                if exc.kind == "input" or exc.status is None or exc.status < 500:
                    raise
        return served

    def complete_sync(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None = None,
        **options: Any,
    ) -> ChatReply:
        """:meth:`chat` for synchronous callers: one request in a fresh event loop (in a worker
        thread when a loop is already running in this one, which it then blocks), whose
        connections are closed before it returns."""

        async def once() -> ChatReply:
            try:
                return await self.chat(messages, tools, **options)
            finally:
                await self.aclose()

        return _run_sync(once)

    # ---- HTTP --------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.settings.base_url.rstrip("/") + path

    def _shown(self, text: str) -> str:
        return redact(redact_url(text), self._secrets)

    def _error(self, message: str, kind: LLMErrorKind, status: int | None = None) -> LLMError:
        return LLMError(redact(message, self._secrets), kind=kind, status=status)

    def _forget_closed_loops(self) -> None:
        # a finished asyncio.run() took its loop with it: its client cannot be closed any more
        for loop in [loop for loop in self._states if loop.is_closed()]:
            del self._states[loop]

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._lock:
            self._forget_closed_loops()
            state = self._states.get(loop)
            if state is None:
                slots = asyncio.Semaphore(self.settings.max_concurrency)
                state = _LoopState(self._new_client(), slots)
                self._states[loop] = state
            return state

    def _new_client(self) -> httpx.AsyncClient:
        import httpx

        settings = self.settings
        headers = {}
        if settings.api_key is not None and settings.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        auth = None
        if settings.basic_auth is not None:
            # credentials written in the URL: basic auth, as httpx sends them from a URL
            # (they win over the key's Bearer header)
            user, _, password = settings.basic_auth.get_secret_value().partition(":")
            auth = httpx.BasicAuth(unquote(user), unquote(password))
        return httpx.AsyncClient(
            transport=self._transport,
            timeout=httpx.Timeout(settings.timeout_s),
            headers=headers,
            auth=auth,
            limits=httpx.Limits(
                max_connections=settings.max_concurrency + 2,
                max_keepalive_connections=settings.max_concurrency,
            ),
        )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP_S)
        with self._lock:
            jitter = self._rng.random()
        return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) * (0.5 + 0.5 * jitter)

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        """The 200 answer to one request, after the retries; every other outcome raises."""
        import httpx

        url = self._url(path)
        shown = self._shown(url)
        content = None
        if body is not None:
            try:
                content = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise self._error(
                    f"the chat request cannot be sent as JSON ({exc}); pass plain "
                    "str/number/list/dict messages and tools, without NaN",
                    "input",
                ) from exc
        headers = {"Content-Type": "application/json"} if content is not None else None
        state = self._state()
        attempts = self.settings.max_retries + 1
        for attempt in range(attempts):
            try:
                async with state.slots:
                    response = await state.client.request(
                        method, url, content=content, headers=headers
                    )
            except httpx.TimeoutException as exc:
                failure = _Failure(
                    f"LLM endpoint {shown} timed out after {self.settings.timeout_s:g}s",
                    f"raise {self.settings.setting_name('timeout_s')} or check the server",
                    cause=exc,
                )
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise self._error(
                    f"{self.settings.setting_name('base_url')} is not a usable http(s) URL: "
                    f"{shown} ({exc}); e.g. http://localhost:8000/v1",
                    "input",
                ) from exc
            except httpx.ConnectError as exc:
                failure = _Failure(
                    f"LLM endpoint unreachable at {self._shown(self.settings.base_url)} "
                    f"({type(exc).__name__}: {exc})",
                    f"start the server ({_SERVE_RUN}) or set "
                    f"{self.settings.setting_name('base_url')}",
                    cause=exc,
                )
            except httpx.TransportError as exc:
                failure = _Failure(
                    f"the connection to LLM endpoint {shown} failed ({type(exc).__name__}: {exc})",
                    "retry later or check the server's log",
                    cause=exc,
                )
            except httpx.HTTPError as exc:  # a body that cannot be decoded, a redirect loop
                raise self._error(
                    f"LLM endpoint {shown} sent an unusable answer ({type(exc).__name__}: {exc}); "
                    f"is {self.settings.setting_name('base_url')} the server's /v1 address?",
                    "tool",
                ) from exc
            else:
                status = response.status_code
                if status == 200:
                    return response
                if status != 429 and status < 500:
                    raise await self._refusal(response, path)
                excerpt = _error_excerpt(response.text, self._secrets)
                failure = _Failure(
                    f"LLM endpoint {shown} answered HTTP {status}"
                    + (f": {excerpt!r}" if excerpt else ""),
                    "the server is rate limiting: send fewer requests at once "
                    "(llm.max_concurrency) or retry later"
                    if status == 429
                    else "retry later or check the server's log",
                    status=status,
                    retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                )
            if attempt + 1 < attempts:
                await self._sleep(self._backoff(attempt, failure.retry_after))
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        raise self._error(
            f"{failure.text}{tries}; {failure.fix}", "temporary", failure.status
        ) from failure.cause

    async def _refusal(self, response: httpx.Response, path: str) -> LLMError:
        """The error for a 4xx other than 429: a setting is wrong; the message says which."""
        status = response.status_code
        message = _error_text(response.text)
        excerpt = _error_excerpt(response.text, self._secrets)
        head = f"LLM endpoint {self._shown(self._url(path))} answered HTTP {status}" + (
            f": {excerpt!r}" if excerpt else ""
        )
        base_url = self.settings.setting_name("base_url")
        if status in (401, 403):
            return self._error(f"{head}; {self.settings.key_hint()}", "input", status)
        if path == "/chat/completions" and status == 400 and _TOOL_CALLING_OFF.search(message):
            return self._error(
                f"LLM endpoint {self._shown(self.settings.base_url)} has no tool calling "
                f"enabled (HTTP 400: {excerpt!r}): restart it with {_TOOL_FLAGS} "
                f"(`{_SERVE_RUN}` does)",
                "input",
                status,
            )
        if path == "/chat/completions" and (status == 404 or _MODEL_MISSING.search(message)):
            served = await self._served_models()
            if served is not None and self.model not in served:
                return self._error(self._wrong_model(served), "input", status)
            if served is None:
                return self._error(
                    f"{head}; the model name ({self.settings.setting_name('model')} = "
                    f"{self.model!r}) is wrong or {base_url} is not the server's /v1 address "
                    "(GET /models failed too; e.g. http://localhost:8000/v1)",
                    "input",
                    status,
                )
        if status == 404:
            return self._error(
                f"{head}; is {base_url} the server's /v1 address (e.g. http://localhost:8000/v1)?",
                "input",
                status,
            )
        if _CONTEXT_TOO_LONG.search(message):
            return self._error(
                f"{head}; the prompt and max_tokens exceed the model's context: lower "
                "max_tokens, shorten the prompt or serve the model with a longer --max-model-len",
                "input",
                status,
            )
        return self._error(f"{head}; the server refused the request", "input", status)

    def _wrong_model(self, served: list[str]) -> str:
        offers = ", ".join(repr(name) for name in served) if served else "no model"
        return (
            f"model {self.model!r} is not served at {self._shown(self.settings.base_url)} "
            f"(it offers {offers}): set {self.settings.setting_name('model')} to one of them"
        )

    async def _served_models(self) -> list[str] | None:
        """``GET /models`` once, for an error message: None when that fails too."""
        import httpx

        state = self._state()
        try:
            async with state.slots:
                response = await state.client.get(self._url("/models"))
        except (httpx.HTTPError, httpx.InvalidURL):
            return None
        return _model_ids(response) if response.status_code == 200 else None

    def _reply(self, response: httpx.Response, latency_ms: float) -> ChatReply:
        not_chat = (
            f"LLM endpoint {self._shown(self._url('/chat/completions'))} answered HTTP 200 but "
            "not in the OpenAI chat.completion format"
        )
        try:
            envelope = response.json()
            choice = envelope["choices"][0]
            message = choice.get("message") or {}
            if not isinstance(message, dict):
                raise TypeError("message is not an object")
            tool_calls = _tool_calls(message.get("tool_calls"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            excerpt = _error_excerpt(response.text, self._secrets)
            raise self._error(
                not_chat + (f" ({type(exc).__name__}: {excerpt!r})" if excerpt else "")
                + f"; is {self.settings.setting_name('base_url')} the server's /v1 address?",
                "tool",
                200,
            ) from exc
        usage = envelope.get("usage") if isinstance(envelope.get("usage"), dict) else {}
        prompt_tokens = _int_or_none(usage.get("prompt_tokens"))
        completion_tokens = _int_or_none(usage.get("completion_tokens"))
        model = envelope.get("model")
        finish_reason = choice.get("finish_reason")
        return ChatReply(
            content=_content(message.get("content")),
            tool_calls=tool_calls,
            usage=Usage(
                prompt_tokens or 0,
                completion_tokens or 0,
                reported=prompt_tokens is not None and completion_tokens is not None,
            ),
            model=model if isinstance(model, str) else None,
            finish_reason=finish_reason if isinstance(finish_reason, str) else None,
            latency_ms=latency_ms,
        )


def chat_sync(
    model: ChatModel,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
    **options: Any,
) -> ChatReply:
    """One :meth:`ChatModel.chat` from synchronous code, for any chat model (an
    :class:`OpenAIChatModel` uses its :meth:`~OpenAIChatModel.complete_sync`)."""
    complete_sync = getattr(model, "complete_sync", None)
    if callable(complete_sync):
        return complete_sync(messages, tools, **options)
    return _run_sync(lambda: model.chat(messages, tools, **options))


def _run_sync(factory: Callable[[], Awaitable[_T]]) -> _T:
    """Run the coroutine ``factory()`` makes to completion in a fresh event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    # a loop runs in this thread: asyncio.run cannot nest, so a worker thread gets its own
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="quantorch-llm") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()  # type: ignore[arg-type]


# ---- parsing -------------------------------------------------------------------------------


def _tool_calls(raw: object) -> tuple[ToolCall, ...]:
    """The message's tool calls; ``arguments`` as a JSON string (some servers send a dict),
    a missing id replaced by ``call_{index}``."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise TypeError("tool_calls is not a list")
    calls = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("function"), dict):
            raise TypeError(f"tool call {index} has no function object")
        function = item["function"]
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise TypeError(f"tool call {index} has no function name")
        arguments = function.get("arguments")
        if arguments is None:
            arguments = "{}"
        elif not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        call_id = item.get("id")
        calls.append(
            ToolCall(
                id=call_id if isinstance(call_id, str) and call_id else f"call_{index}",
                name=name,
                arguments=arguments,
            )
        )
    return tuple(calls)


def _content(raw: object) -> str | None:
    """The text as sent (``<think>`` blocks included); content parts are joined."""
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(
            part.get("text") or "" for part in raw if isinstance(part, dict)
        )
    return json.dumps(raw, ensure_ascii=False)


def _model_ids(response: httpx.Response) -> list[str] | None:
    try:
        data = response.json()["data"]
        return [str(entry["id"]) for entry in data]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _int_or_none(value: object) -> int | None:
    try:
        return int(value) if value is not None else None  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _error_text(text: str) -> str:
    """An error body's ``message`` when it is an OpenAI or vLLM error object, else the text."""
    message = text or ""
    try:
        payload = json.loads(message)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        inner = payload.get("error", payload)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            message = inner["message"]
        elif isinstance(inner, str):
            message = inner
    return message


def _error_excerpt(text: str, secrets: tuple[str, ...] = ()) -> str:
    """A short, redacted excerpt of an error body: its ``message`` when it is an OpenAI or
    vLLM error object, else the start of the text. Never the body verbatim: a server may echo
    the request's Authorization header or URL."""
    # redact the whole text first (a cut could split a secret and hide it from the masks)
    message = " ".join(redact(_error_text(text), secrets).split())
    if len(message) > ERROR_EXCERPT_CHARS:
        message = message[: ERROR_EXCERPT_CHARS - 3] + "..."
    return redact(message, secrets)
