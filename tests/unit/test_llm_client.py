"""The OpenAI-compatible adapter of the LLM port, against ``httpx.MockTransport``.

The mock answers in vLLM's exact formats (a chat.completion with hermes tool calls, its error
objects, ``GET /v1/models``) and also badly: HTTP 500 and 429, timeouts, refused
connections, a wrong model name, a server without tool calling, a refused key, a page that is
not a chat.completion. Backoff sleeps are recorded instead of slept, so every test is instant.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

import httpx
import pytest

from quantorch.config import LLMConfig
from quantorch.llm import ChatReply, LLMError, LLMSettings, OpenAIChatModel, ToolCall, chat_sync
from quantorch.llm.client import RETRY_AFTER_CAP_S

BASE_URL = "http://gpu-box:8000/v1"
MODEL = "Qwen/Qwen3-8B"
KEY = f"sk-test-{uuid.uuid4().hex}"
MESSAGES = [
    {"role": "system", "content": "You decide which analysis tools to call."},
    {"role": "user", "content": "Decide AAPL at 2021-03-02 16:00 New York."},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "technical",
            "description": "Momentum and volatility of the stock",
            "parameters": {
                "type": "object",
                "properties": {"ticker": {"type": "string"}},
                "required": ["ticker"],
            },
        },
    }
]


def vllm_completion(
    content: str | None = None, tool_calls: list[dict] | None = None, **overrides
) -> dict:
    """A chat.completion as vLLM's OpenAI-compatible server sends it."""
    body = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "reasoning_content": None,
                    "content": content,
                    "tool_calls": tool_calls or [],
                },
                "logprobs": None,
                "finish_reason": "tool_calls" if tool_calls else "stop",
                "stop_reason": None,
            }
        ],
        "usage": {
            "prompt_tokens": 812,
            "total_tokens": 853,
            "completion_tokens": 41,
            "prompt_tokens_details": None,
        },
        "prompt_logprobs": None,
    }
    body.update(overrides)
    return body


def vllm_error(message: str, code: int, kind: str = "BadRequestError") -> dict:
    return {"object": "error", "message": message, "type": kind, "param": None, "code": code}


def vllm_models(*names: str) -> dict:
    return {
        "object": "list",
        "data": [
            {"id": n, "object": "model", "created": 0, "owned_by": "vllm", "root": n,
             "parent": None, "max_model_len": 40960}
            for n in names
        ],
    }  # fmt: skip


class Server:
    """A scripted endpoint: per (method, path), answers served in order (the last repeats)."""

    def __init__(self, routes: dict[tuple[str, str], list]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if answers is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def bodies(self, path: str = "/v1/chat/completions") -> list[dict]:
        return [json.loads(r.content) for r in self.requests if r.url.path == path]

    def count(self, path: str = "/v1/chat/completions") -> int:
        return sum(r.url.path == path for r in self.requests)


class Sleeps(list):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def model_for(server: Server, sleeps: Sleeps | None = None, seed: int = 0, **settings):
    options = {"base_url": BASE_URL, "model": MODEL, "max_retries": 3, **settings}
    return OpenAIChatModel(
        LLMSettings(**options),
        transport=httpx.MockTransport(server.handle),
        sleep=sleeps if sleeps is not None else Sleeps(),
        seed=seed,
    )


def chat(model: OpenAIChatModel, *args, **kwargs) -> ChatReply:
    async def once():
        async with model:
            return await model.chat(*args, **kwargs)

    return asyncio.run(once())


def failure(model: OpenAIChatModel, *args, **kwargs) -> LLMError:
    with pytest.raises(LLMError) as caught:
        chat(model, MESSAGES, *args, **kwargs)
    return caught.value


CHAT = ("POST", "/v1/chat/completions")
MODELS = ("GET", "/v1/models")


# ---- answers -----------------------------------------------------------------------------------


def test_tool_calls_usage_and_content_are_parsed():
    calls = [
        {"id": "chatcmpl-tool-8f2a", "type": "function",
         "function": {"name": "technical", "arguments": '{"ticker": "AAPL"}'}},
        {"type": "function",  # no id, arguments as an object (some servers)
         "function": {"name": "risk", "arguments": {"ticker": "AAPL", "window": 63}}},
    ]  # fmt: skip
    content = "<think>Momentum first, then risk.</think>"
    server = Server({CHAT: [httpx.Response(200, json=vllm_completion(content, calls))]})
    reply = chat(model_for(server), MESSAGES, TOOLS, tool_choice="auto", max_tokens=256,
                 temperature=0.0)  # fmt: skip
    assert reply.tool_calls == (
        ToolCall("chatcmpl-tool-8f2a", "technical", '{"ticker": "AAPL"}'),
        ToolCall("call_1", "risk", '{"ticker": "AAPL", "window": 63}'),
    )
    assert json.loads(reply.tool_calls[1].arguments) == {"ticker": "AAPL", "window": 63}
    assert reply.content == content  # <think> is the caller's business
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (812, 41)
    assert reply.usage.reported and reply.usage.total_tokens == 853
    assert reply.model == MODEL and reply.finish_reason == "tool_calls" and reply.latency_ms >= 0
    sent = server.bodies()[0]
    assert sent == {"model": MODEL, "messages": MESSAGES, "tools": TOOLS, "tool_choice": "auto",
                    "max_tokens": 256, "temperature": 0.0}  # fmt: skip
    assert ChatReply.from_json(json.loads(json.dumps(reply.to_json()))) == reply
    assert reply.message()["tool_calls"][1]["id"] == "call_1"


def test_options_are_sent_only_when_given_and_missing_usage_is_flagged():
    answer = vllm_completion('{"score": 0.2}')
    del answer["usage"]
    server = Server({CHAT: [httpx.Response(200, json=answer)]})
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    reply = chat(model_for(server), MESSAGES, response_format=schema)
    assert server.bodies()[0] == {"model": MODEL, "messages": MESSAGES, "response_format": schema}
    assert reply.content == '{"score": 0.2}' and reply.tool_calls == ()
    assert not reply.usage.reported and reply.usage.total_tokens == 0
    assert ChatReply.from_json(reply.to_json()).usage == reply.usage


def test_a_200_that_is_not_a_chat_completion_is_a_tool_error():
    page = httpx.Response(200, text="<html><body>Open WebUI</body></html>")
    server = Server({CHAT: [page]})
    error = failure(model_for(server))
    assert error.kind == "tool" and "chat.completion" in str(error)
    assert "llm.base_url" in str(error) and server.count() == 1  # not retried


# ---- retries -----------------------------------------------------------------------------------


def test_http_500_then_success_is_retried_with_growing_deterministic_backoff():
    oom = httpx.Response(500, json=vllm_error("CUDA out of memory", 500, "InternalServerError"))
    ok = httpx.Response(200, json=vllm_completion("fine"))
    runs = []
    for _ in range(2):
        server, sleeps = Server({CHAT: [oom, oom, ok]}), Sleeps()
        reply = chat(model_for(server, sleeps, seed=7), MESSAGES)
        assert reply.content == "fine" and server.count() == 3
        runs.append(list(sleeps))
    assert runs[0] == runs[1]  # the jitter is seeded
    first, second = runs[0]
    assert 0.25 <= first <= 0.5 and 0.5 <= second <= 1.0 and second > first


def test_http_429_honours_retry_after_capped():
    limited = httpx.Response(429, headers={"Retry-After": "2"},
                             json={"error": {"message": "rate limited", "code": 429}})
    forever = httpx.Response(429, headers={"Retry-After": "86400"}, json={"error": "slow down"})
    ok = httpx.Response(200, json=vllm_completion("fine"))
    server, sleeps = Server({CHAT: [limited, forever, ok]}), Sleeps()
    assert chat(model_for(server, sleeps), MESSAGES).content == "fine"
    assert sleeps == [2.0, RETRY_AFTER_CAP_S]


def test_a_timeout_is_retried_then_a_temporary_error():
    server, sleeps = Server({CHAT: [httpx.ReadTimeout("read timed out")]}), Sleeps()
    error = failure(model_for(server, sleeps, max_retries=2, timeout_s=5))
    assert error.kind == "temporary" and server.count() == 3 and len(sleeps) == 2
    text = str(error)
    assert "timed out after 5s" in text and "(3 attempts)" in text and "llm.timeout_s" in text
    assert f"{BASE_URL}/chat/completions" in text


def test_http_500_forever_is_temporary_after_max_retries_plus_one_attempts():
    crash = httpx.Response(500, json=vllm_error("CUDA out of memory", 500, "InternalServerError"))
    server, sleeps = Server({CHAT: [crash]}), Sleeps()
    error = failure(model_for(server, sleeps, max_retries=4))
    assert server.count() == 5 and len(sleeps) == 4
    assert error.kind == "temporary" and error.status == 500 and error.exit_code == 3
    assert "answered HTTP 500: 'CUDA out of memory' (5 attempts)" in str(error)
    assert "\n" not in str(error)


def test_an_unreachable_endpoint_names_the_server_command():
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    server, sleeps = Server({CHAT: [refused]}), Sleeps()
    error = failure(model_for(server, sleeps, max_retries=1))
    text = str(error)
    assert error.kind == "temporary" and server.count() == 2
    assert "unreachable at http://gpu-box:8000/v1" in text and "Connection refused" in text
    assert "quantorch serve llm --run" in text and "llm.base_url" in text


# ---- refusals: a setting is wrong ----------------------------------------------------------------


def test_a_wrong_model_name_lists_the_served_models():
    missing = httpx.Response(404, json=vllm_error("The model `Qwen/Qwen3-4B` does not exist.",
                                                  404, "NotFoundError"))  # fmt: skip
    served = httpx.Response(200, json=vllm_models(MODEL, "Qwen/Qwen3-8B-FP8"))
    server = Server({CHAT: [missing], MODELS: [served]})
    error = failure(model_for(server, model="Qwen/Qwen3-4B"))
    text = str(error)
    assert error.kind == "input" and error.status == 404 and server.count() == 1
    assert "'Qwen/Qwen3-4B' is not served" in text and "set llm.model" in text
    assert f"'{MODEL}'" in text and "'Qwen/Qwen3-8B-FP8'" in text
    # GET /models fails too: the message says both settings may be wrong
    server = Server({CHAT: [missing], MODELS: [httpx.Response(404)]})
    text = str(failure(model_for(server, model="Qwen/Qwen3-4B")))
    assert "HTTP 404" in text and "llm.model" in text and "llm.base_url" in text


def test_a_server_without_tool_calling_names_the_vllm_flags():
    refused = httpx.Response(400, json=vllm_error(
        '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
        400))  # fmt: skip
    server = Server({CHAT: [refused]})
    error = failure(model_for(server), TOOLS, tool_choice="auto")
    text = str(error)
    assert error.kind == "input" and server.count() == 1  # a setting: not retried
    assert "no tool calling enabled" in text
    assert "restart it with --enable-auto-tool-choice --tool-call-parser hermes" in text


def test_other_4xx_are_input_errors_with_an_excerpt():
    long = httpx.Response(400, json=vllm_error(
        "This model's maximum context length is 40960 tokens. However, you requested 50000 "
        "tokens (49000 in the messages, 1000 in the completion).", 400))  # fmt: skip
    error = failure(model_for(Server({CHAT: [long]})))
    assert error.kind == "input" and "HTTP 400" in str(error) and "lower max_tokens" in str(error)
    assert len(str(error)) < 400


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_names_the_key_variable(status, monkeypatch):
    monkeypatch.setenv("QUANTORCH_TEST_LLM_KEY", KEY)
    settings = LLMSettings.from_config(
        LLMConfig(base_url=BASE_URL, api_key_env="QUANTORCH_TEST_LLM_KEY", max_retries=2)
    )
    refused = httpx.Response(status, json={"error": {"message": "Incorrect API key provided",
                                                     "code": "invalid_api_key"}})  # fmt: skip
    server = Server({CHAT: [refused]})
    model = OpenAIChatModel(settings, transport=httpx.MockTransport(server.handle), sleep=Sleeps())
    error = failure(model)
    assert error.kind == "input" and server.count() == 1 and error.exit_code == 2
    assert f"HTTP {status}" in str(error)
    assert "environment variable QUANTORCH_TEST_LLM_KEY (llm.api_key_env)" in str(error)
    assert server.requests[0].headers["Authorization"] == f"Bearer {KEY}"


# ---- secrets -------------------------------------------------------------------------------------


def _echo(status: int):
    """A server that quotes every header it got, decoded basic auth too."""

    def answer(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization", "")
        decoded = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
        message = f"Incorrect API key provided: {auth} ({decoded}) for {request.url}"
        return httpx.Response(status, json={"error": {"message": message},
                                            "headers": dict(request.headers)})  # fmt: skip

    return answer


@pytest.mark.parametrize("in_url", [False, True])
def test_the_key_and_password_never_show_in_errors_or_reprs(in_url):
    password = f"pw-{uuid.uuid4().hex[:12]}"
    url = BASE_URL.replace("http://", f"http://quant:{password}@") if in_url else BASE_URL
    basic = base64.b64encode(f"quant:{password}".encode()).decode()
    secrets = (KEY, password, basic)
    texts = []
    for status in (400, 401, 404, 429, 500):
        server = Server({CHAT: [_echo(status)], MODELS: [_echo(status)]})
        model = model_for(server, base_url=url, api_key=KEY, max_retries=1)
        texts += [str(failure(model, TOOLS, tool_choice="auto")), repr(model)]
        sent = server.requests[0].headers["Authorization"]
        assert sent == (f"Basic {basic}" if in_url else f"Bearer {KEY}")  # it was echoed
    for broken in (httpx.ConnectError(f"refused {url}"), httpx.ReadTimeout("slow")):
        texts.append(str(failure(model_for(Server({CHAT: [broken]}), base_url=url, api_key=KEY))))
    settings = LLMSettings(base_url=url, model=MODEL, api_key=KEY)
    texts += [repr(settings), str(settings), settings.model_dump_json()]
    leaks = [(s, t) for t in texts for s in secrets if s in t]
    assert not leaks, leaks
    assert all(len(t) < 600 for t in texts)


# ---- concurrency, event loops, sync callers ------------------------------------------------------


def test_requests_in_flight_are_bounded_by_max_concurrency():
    in_flight = peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json=vllm_completion(json.loads(request.content)["messages"][0]
                                                        ["content"]))  # fmt: skip

    model = OpenAIChatModel(
        LLMSettings(base_url=BASE_URL, model=MODEL, max_concurrency=4),
        transport=httpx.MockTransport(slow),
    )

    async def many():
        async with model:
            return await asyncio.gather(*(
                model.chat([{"role": "user", "content": f"decision {i}"}]) for i in range(20)
            ))  # fmt: skip

    replies = asyncio.run(many())
    assert [r.content for r in replies] == [f"decision {i}" for i in range(20)]
    assert peak == 4  # bounded, and the bound is used


def test_one_model_serves_successive_event_loops():
    server = Server({CHAT: [httpx.Response(200, json=vllm_completion("fine"))]})
    model = model_for(server)
    assert asyncio.run(model.chat(MESSAGES)).content == "fine"
    assert asyncio.run(model.chat(MESSAGES)).content == "fine"  # a new client, a new semaphore
    assert chat(model, MESSAGES).content == "fine" and server.count() == 3


def test_complete_sync_works_outside_and_inside_a_running_loop():
    server = Server({CHAT: [httpx.Response(200, json=vllm_completion("fine"))]})
    model = model_for(server)
    assert model.complete_sync(MESSAGES, temperature=0.0).content == "fine"

    async def inside_a_loop():
        return model.complete_sync(MESSAGES), chat_sync(model, MESSAGES)

    assert [r.content for r in asyncio.run(inside_a_loop())] == ["fine", "fine"]
    assert server.count() == 3 and server.bodies()[0]["temperature"] == 0.0
    assert not model._states  # every fresh loop's client was closed


def test_chat_sync_runs_any_chat_model():
    class Fixed:
        model = "fixed"

        async def chat(self, messages, tools=None, **options):
            return ChatReply(content=f"{len(messages)} messages, {sorted(options)}")

        async def aclose(self):
            pass

    assert chat_sync(Fixed(), MESSAGES, max_tokens=5).content == "2 messages, ['max_tokens']"


# ---- list_models and check -----------------------------------------------------------------------


def test_list_models_and_check():
    ping = {"id": "chatcmpl-tool-1", "type": "function",
            "function": {"name": "ping", "arguments": "{}"}}  # fmt: skip
    ok = httpx.Response(200, json=vllm_completion(None, [ping]))
    server = Server({MODELS: [httpx.Response(200, json=vllm_models(MODEL))], CHAT: [ok]})
    model = model_for(server)
    assert asyncio.run(model.list_models()) == [MODEL]
    assert asyncio.run(model.check()) == [MODEL]
    probe = server.bodies()[0]
    assert probe["tool_choice"] == "auto" and probe["max_tokens"] == 1 and probe["tools"]
    assert asyncio.run(model.check(require_tools=False)) == [MODEL] and server.count() == 1

    wrong = model_for(Server({MODELS: [httpx.Response(200, json=vllm_models("Qwen/Qwen3-14B"))]}))
    with pytest.raises(LLMError, match=r"'Qwen/Qwen3-8B' is not served .*'Qwen/Qwen3-14B'"):
        asyncio.run(wrong.check())
    no_tools = httpx.Response(400, json=vllm_error(
        '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
        400))  # fmt: skip
    plain = model_for(Server({MODELS: [httpx.Response(200, json=vllm_models(MODEL))],
                              CHAT: [no_tools]}))  # fmt: skip
    with pytest.raises(LLMError, match="--enable-auto-tool-choice --tool-call-parser hermes"):
        asyncio.run(plain.check())
    down = model_for(Server({MODELS: [httpx.ConnectError("refused")]}), max_retries=0)
    with pytest.raises(LLMError, match="unreachable .*quantorch serve llm --run"):
        asyncio.run(down.check())


# ---- settings ------------------------------------------------------------------------------------


def test_from_config_without_a_base_url_names_the_fix():
    with pytest.raises(LLMError) as caught:
        LLMSettings.from_config(LLMConfig(model="Qwen/Qwen3-8B"))
    text = str(caught.value)
    assert caught.value.kind == "input" and "\n" not in text
    assert "set llm.base_url" in text and "http://localhost:8000/v1" in text
    assert "quantorch serve llm --run" in text
    assert ("vllm serve Qwen/Qwen3-8B --enable-auto-tool-choice --tool-call-parser hermes "
            "--enable-prefix-caching") in text  # fmt: skip


@pytest.mark.parametrize("value", [None, "", "  "])
def test_from_config_with_an_unset_key_variable_names_it(value):
    environ = {} if value is None else {"MY_LLM_KEY": value}
    cfg = LLMConfig(base_url=BASE_URL, api_key_env="MY_LLM_KEY")
    with pytest.raises(LLMError) as caught:
        LLMSettings.from_config(cfg, environ=environ)
    assert caught.value.kind == "input"
    assert str(caught.value) == (
        "environment variable MY_LLM_KEY (llm.api_key_env) is not set: export it or remove "
        "llm.api_key_env"
    )


def test_from_config_carries_every_setting():
    cfg = LLMConfig(base_url=BASE_URL, model="m", api_key_env="MY_LLM_KEY", timeout_s=12,
                    max_concurrency=3, max_retries=5, max_tokens=700)  # fmt: skip
    settings = LLMSettings.from_config(cfg, environ={"MY_LLM_KEY": KEY})
    assert settings.api_key.get_secret_value() == KEY and KEY not in repr(settings)
    carried = (settings.base_url, settings.model, settings.timeout_s, settings.max_concurrency,
               settings.max_retries, settings.max_tokens)  # fmt: skip
    assert carried == (BASE_URL, "m", 12, 3, 5, 700)
    assert settings.origin == "config" and settings.api_key_env == "MY_LLM_KEY"
    no_key = LLMSettings.from_config(LLMConfig(base_url=BASE_URL), environ={})
    assert no_key.api_key is None and "set llm.api_key_env" in no_key.key_hint()


def test_from_env_makes_one_attempt_and_names_the_variables(monkeypatch):
    monkeypatch.setenv("QUANTORCH_LLM_BASE_URL", BASE_URL)
    monkeypatch.setenv("QUANTORCH_LLM_MODEL", MODEL)
    monkeypatch.delenv("QUANTORCH_LLM_API_KEY", raising=False)
    settings = LLMSettings.from_env()
    assert settings.max_retries == 0 and settings.origin == "env"
    server, sleeps = Server({CHAT: [httpx.ReadTimeout("slow")]}), Sleeps()
    model = OpenAIChatModel(settings, transport=httpx.MockTransport(server.handle), sleep=sleeps)
    error = failure(model)
    assert server.count() == 1 and not sleeps and "QUANTORCH_LLM_TIMEOUT" in str(error)
