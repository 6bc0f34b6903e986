"""A real ``transformers serve`` of the tiny Qwen3 model answers OpenAI chat completions with
parsed ``tool_calls``: one analysis call for the ticker the user named, then, after the tool's
result, ``submit_decision`` (the loop quantorch's LLM orchestrator runs per ticker and session)."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.support.tiny_llm import POSITIONS, default_examples, shared_server, submit_decision_tool

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_llm_server():
    with shared_server() as server:
        yield server


def _post(server, messages, tools, **extra) -> dict:
    body = {"model": server.model, "messages": messages, "tools": tools, "temperature": 0,
            "max_tokens": 160, **extra}
    answer = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120)
    assert answer.status_code == 200, (answer.text, server.log_tail())
    return answer.json()


def _one_call(reply: dict, tools: list[dict]) -> tuple[dict, dict]:
    """The reply's single tool call, checked for the OpenAI shape; and its parsed arguments."""
    assert reply["object"] == "chat.completion"
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls", reply
    message = choice["message"]
    assert message["role"] == "assistant"
    calls = message.get("tool_calls") or []
    assert len(calls) == 1, reply
    call = calls[0]
    assert call["type"] == "function" and call["id"]
    names = {tool["function"]["name"] for tool in tools}
    assert call["function"]["name"] in names, reply
    arguments = json.loads(call["function"]["arguments"])
    assert isinstance(arguments, dict)
    usage = reply["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    return call, arguments


def _conversation(ticker: str) -> list[dict]:
    system = {"role": "system", "content": "You are quantorch's trading orchestrator. Call "
                                           "analysis tools, then submit_decision exactly once."}
    user = {"role": "user", "content": f"Ticker: {ticker}\nSession: 2021-03-04\n"
                                       f"Current position: flat\nBudget: $0.05"}
    return [system, user]


def _tool_result(call: dict, ticker: str, failed: bool) -> dict:
    payload = {"tool": call["function"]["name"], "provider": "basic", "ticker": ticker,
               "asof": "2021-03-04"}
    if failed:
        payload |= {"error": "provider timed out", "error_kind": "temporary"}
    else:
        payload["features"] = {"close_vs_sma20": 0.031, "rsi14": 0.12}
    return {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(payload)}


def _assistant(call: dict) -> dict:
    """The assistant turn as an OpenAI client appends it (arguments as a JSON string)."""
    return {"role": "assistant", "content": "", "tool_calls": [call]}


@pytest.mark.parametrize("failed", [False, True], ids=["tool-ok", "tool-error"])
def test_tool_call_then_decision(tiny_llm_server, failed):
    tools = default_examples(1, seed=4242)[0]["tools"]
    messages = _conversation("MSFT")

    call, arguments = _one_call(_post(tiny_llm_server, messages, tools), tools)
    assert call["function"]["name"] == "technical"
    assert arguments == {"ticker": "MSFT", "provider": "basic"}

    messages += [_assistant(call), _tool_result(call, "MSFT", failed)]
    answer = _post(tiny_llm_server, messages, tools)
    assert answer["model"] == tiny_llm_server.model
    decision, arguments = _one_call(answer, tools)
    assert decision["function"]["name"] == "submit_decision"
    assert arguments["position"] in POSITIONS
    assert arguments["position"] == ("flat" if failed else "half_long")
    assert isinstance(arguments["rationale"], str) and arguments["rationale"]


def test_behind_quantorch_tool_table(tiny_llm_server):
    """The real registry's tool schemas (long descriptions the model never saw) change nothing:
    the model only attends to the last few hundred tokens. ``tool_choice`` is accepted (ignored
    by transformers serve)."""
    from quantorch.toolkit.registry import all_tools

    tools = [tool.spec.openai_tool() for tool in all_tools()] + [submit_decision_tool()]
    messages = _conversation("JPM")
    call, arguments = _one_call(
        _post(tiny_llm_server, messages, tools, tool_choice="auto"), tools)
    assert call["function"]["name"] == "technical"
    assert arguments["ticker"] == "JPM"
    messages += [_assistant(call), _tool_result(call, "JPM", failed=False)]
    decision, _ = _one_call(_post(tiny_llm_server, messages, tools), tools)
    assert decision["function"]["name"] == "submit_decision"


def test_two_concurrent_requests(tiny_llm_server):
    """The server takes two requests at once (it generates them one after the other)."""
    tools = default_examples(1, seed=4243)[0]["tools"]
    replies: dict[str, dict] = {}
    errors: list[Exception] = []

    def ask(ticker: str) -> None:
        try:
            replies[ticker] = _post(tiny_llm_server, _conversation(ticker), tools)
        except Exception as exc:  # noqa: BLE001  (surfaced below, in the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(t,)) for t in ("AAPL", "KO")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors, errors
    for ticker in ("AAPL", "KO"):
        call, arguments = _one_call(replies[ticker], tools)
        assert call["function"]["name"] == "technical"
        assert arguments["ticker"] == ticker
