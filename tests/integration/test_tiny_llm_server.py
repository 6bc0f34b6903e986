"""A real ``transformers serve`` of the tiny Qwen3 model answers OpenAI chat completions with
parsed ``tool_calls``: one analysis call for the ticker the user named, then, after the tool's
result, ``submit_decision`` (the loop quantorch's LLM orchestrator runs per ticker and session).
The model is the one the orchestrator tests use (warmed up on conversations rendered with the
orchestrator's own prompts, tests/support/llm_examples.py), so one build serves both."""

from __future__ import annotations

import json
import random
import threading

import httpx
import pytest

from quantorch.config import load_config
from quantorch.llm.prompts import (
    BUCKET_NAMES,
    error_content,
    openai_tools,
    system_prompt,
    tool_result_content,
    user_message,
)
from quantorch.orchestrator.profiles import load_profile
from quantorch.orchestrator.slots import resolve_slots
from quantorch.toolkit.registry import get_tool
from tests.support.llm_examples import (
    SLOT_NAMES,
    orchestrator_examples,
    sample_decision,
    technical_result,
)
from tests.support.tiny_llm import missing_requirements, serve, submit_decision_tool, tiny_model_dir

pytestmark = pytest.mark.slow
PROFILE = load_profile("neutral")
SLOTS = resolve_slots(list(SLOT_NAMES))
SPECS = {s.tool: get_tool(s.tool).spec for s in SLOTS}
TOOLS = openai_tools(SLOTS, SPECS, PROFILE)


@pytest.fixture(scope="module")
def tiny_llm_server():
    missing = missing_requirements()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install -e '.[dev]')")
    with serve(tiny_model_dir(orchestrator_examples(load_config().universe))) as server:
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


def _conversation(ticker: str, seed: int = 0) -> list[dict]:
    decision = sample_decision(random.Random(seed), ticker, PROFILE)
    return [{"role": "system", "content": system_prompt(PROFILE, SLOTS, SPECS, 0.05, 0.20)},
            {"role": "user", "content": user_message(decision)}]


def _tool_result(call: dict, ticker: str, failed: bool) -> dict:
    if failed:
        content = error_content("technical: no price history before the decision")
    else:
        decision = sample_decision(random.Random(1), ticker, PROFILE)
        result = technical_result(random.Random(2), decision, SLOTS[0])
        content = tool_result_content(result, SLOTS[0].features,
                                      PROFILE.cost_budget_usd - SLOTS[0].price_usd)
    return {"role": "tool", "tool_call_id": call["id"], "content": content}


def _assistant(call: dict) -> dict:
    """The assistant turn as an OpenAI client appends it (arguments as a JSON string)."""
    return {"role": "assistant", "content": "", "tool_calls": [call]}


@pytest.mark.parametrize("failed", [False, True], ids=["tool-ok", "tool-error"])
def test_tool_call_then_decision(tiny_llm_server, failed):
    tools = TOOLS
    messages = _conversation("MSFT")

    call, arguments = _one_call(_post(tiny_llm_server, messages, tools), tools)
    assert call["function"]["name"] == "technical"
    assert arguments == {"ticker": "MSFT", "provider": "basic"}

    messages += [_assistant(call), _tool_result(call, "MSFT", failed)]
    answer = _post(tiny_llm_server, messages, tools)
    assert answer["model"] == tiny_llm_server.model
    decision, arguments = _one_call(answer, tools)
    assert decision["function"]["name"] == "submit_decision"
    assert arguments["position"] in BUCKET_NAMES
    assert arguments["position"] == ("flat" if failed else "half_long")
    assert isinstance(arguments["rationale"], str) and arguments["rationale"]


def test_behind_quantorch_tool_table(tiny_llm_server):
    """The registry's own tool schemas (every provider, long descriptions the model never saw)
    change nothing: the model only attends to the last few hundred tokens. ``tool_choice`` is
    accepted (ignored by transformers serve)."""
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
    tools = TOOLS
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
