"""The fine-tuning environment: what the model sees in training is what it is served (prompt
and tool schemas, byte for byte through the Qwen3 chat template), the serving rules, the
reward of ``quantorch train`` for the same point, and no vectorbt anywhere in its imports."""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from quantorch.llm.environment import (
    environment_classes,
    episode_rewards,
    model_cost_usd,
    serving_tools,
)
from quantorch.llm.orchestrator import LLMOrchestrator
from quantorch.llm.port import ChatReply, ToolCall, Usage
from quantorch.llm.prompts import BUCKET_NAMES, openai_tools
from quantorch.orchestrator.env import POSITION_BUCKETS
from quantorch.orchestrator.profiles import load_profile
from quantorch.orchestrator.reward import decision_reward
from tests.support.llm_training import planted_profile, planted_setup


@pytest.fixture(scope="module")
def setup():
    return planted_setup(32, profiles=[planted_profile(), load_profile("neutral")])


def episode(setup, profile="planted", row=5, previous=0.0):
    env = environment_classes(setup)[profile]()
    env.reset(row=row, previous_position=previous, prompt_tokens=100)
    return env


class _Recorder:
    """A ChatModel that records what the serving orchestrator sends and submits at once."""

    model = "recorder"

    def __init__(self) -> None:
        self.sent: list[tuple[list, list]] = []

    async def chat(self, messages, tools=None, *, tool_choice=None, max_tokens=None,
                   temperature=None):
        self.sent.append((json.loads(json.dumps(messages)), json.loads(json.dumps(tools))))
        call = ToolCall("c1", "submit_decision", json.dumps({"position": "flat",
                                                             "rationale": "r"}))
        return ChatReply("", (call,), Usage(10, 5))

    async def aclose(self) -> None:
        return None


def served_request(setup, row: int, profile: int, previous: float):
    """The messages and tools the serving ``llm`` orchestrator sends for the decision."""
    recorder = _Recorder()
    orchestrator = LLMOrchestrator(recorder, setup.settings, setup.specs)
    decision = setup.decision(row, profile, previous)
    orchestrator.plan_session([decision], setup.profiles[profile], setup.dataset.slots,
                              lambda j, slot: None)
    return recorder.sent[0]


def tokenizer():
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from tests.support.tiny_llm import _train_tokenizer, _wrap_tokenizer, qwen3_chat_template

    return _wrap_tokenizer(_train_tokenizer(["a b"], 300), qwen3_chat_template())


@pytest.mark.parametrize("profile", [0, 1])
def test_prompt_and_schemas_are_byte_identical_to_serving_through_the_chat_template(setup,
                                                                                   profile):
    trl = pytest.importorskip("trl")
    from trl.chat_template_utils import (
        get_training_chat_template,
        is_chat_template_prefix_preserving,
    )

    tok = tokenizer()
    row, previous = 7, 0.5
    messages, tools = served_request(setup, row, profile, previous)
    prompt = setup.prompt(row, profile, previous)
    assert prompt == messages
    trained_tools = serving_tools(setup, profile)
    assert trained_tools == tools
    served = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                     tokenize=False)
    # what GRPOTrainer renders: its own training template when the original is not
    # prefix-preserving (Qwen3's), with the tools the pipeline installs
    template = None if is_chat_template_prefix_preserving(tok) else get_training_chat_template(tok)
    trained = tok.apply_chat_template(prompt, tools=trained_tools, chat_template=template,
                                      add_generation_prompt=True, tokenize=False)
    assert trained.encode() == served.encode()
    assert trl.__version__  # the check ran against the installed TRL

    # Why the schemas are installed rather than left to TRL: the bound methods' schemas differ
    # (no additionalProperties/maxLength, a `return` key from the `-> str` annotation) ...
    env = environment_classes(setup)[setup.profiles[profile].name]()
    methods = [getattr(env, name) for name, _ in inspect.getmembers(type(env), inspect.isfunction)
               if not name.startswith("_") and name not in ("reset", "get_reward")]
    naive = tok.apply_chat_template(prompt, tools=methods, add_generation_prompt=True,
                                    tokenize=False)
    assert naive != served and '"return"' in naive
    # ... yet agree with the served ones on what dispatch needs: names, arguments, enums
    from transformers.utils import get_json_schema

    by_name = {t["function"]["name"]: t["function"] for t in tools}
    for method in methods:
        schema = get_json_schema(method)["function"]
        assert "return" in schema  # the key TRL's builder adds (vLLM drops it)
        served_fn = by_name[schema["name"]]
        assert list(schema["parameters"]["properties"]) == list(
            served_fn["parameters"]["properties"])
        assert schema["parameters"]["required"] == served_fn["parameters"]["required"]
        for arg, spec in served_fn["parameters"]["properties"].items():
            assert schema["parameters"]["properties"][arg].get("enum") == spec.get("enum")
    assert set(by_name) == {m.__name__ for m in methods}


def test_tool_order_and_names_follow_the_slots(setup):
    classes = environment_classes(setup)
    assert set(classes) == {"planted", "neutral"}
    tools = openai_tools(setup.dataset.slots, setup.specs, setup.profiles[1])
    assert [t["function"]["name"] for t in tools] == ["technical", "risk", "submit_decision"]
    long_only = serving_tools(setup, 1)[-1]["function"]["parameters"]["properties"]["position"]
    assert long_only["enum"] == ["flat", "half_long", "long"]


def test_each_tool_once_within_budget_with_the_serving_messages(setup):
    env = episode(setup)
    ticker = env.context.ticker
    first = json.loads(env.technical(ticker=ticker, provider="basic"))
    assert first["tool"] == "technical" and first["ticker"] == ticker
    expected = setup.dataset.slot_features[0][5, 0]
    assert first["values"]["close_vs_sma20"] == pytest.approx(expected, abs=1e-4)
    assert first["budget_left_usd"] == pytest.approx(0.01 - 0.0005)
    again = json.loads(env.technical(ticker=ticker, provider="basic"))
    assert again == {"error": "technical was already called for this decision: its result is "
                              "above"}
    assert env.mistakes == 1 and env.fallback is None
    assert json.loads(env.risk(ticker=ticker, provider="fast"))["tool"] == "risk"
    assert env.calls == [0, 1]
    assert json.loads(env.submit_decision(position="long", rationale="up"))["accepted"]
    assert env.bucket == BUCKET_NAMES.index("long")
    late = json.loads(env.risk(ticker=ticker, provider="fast"))
    assert "already submitted" in late["error"]


def test_refusals_then_the_fallback_keeps_the_position(setup):
    env = episode(setup, previous=0.5)
    wrong = json.loads(env.technical(ticker="ZZZZ", provider="basic"))
    assert wrong["error"].startswith(f"this decision is about {env.context.ticker}")
    bad = json.loads(env.risk(ticker=env.context.ticker, provider="premium"))
    assert "risk: provider: 'premium' is not one of" in bad["error"]
    assert env.fallback is not None and env.calls == []
    assert "fallback" in json.loads(env.submit_decision(position="long", rationale="x"))["error"]
    kept = episode(setup, previous=0.5)
    kept.submit_decision(position="half_long", rationale="keep")
    assert episode_rewards([env]) == pytest.approx(episode_rewards([kept]))


def test_over_budget_is_refused(setup):
    poor = planted_profile().model_copy(update={"cost_budget_usd": 0.0007})
    small = planted_setup(32, profiles=[poor])
    env = episode(small)
    env.technical(ticker=env.context.ticker, provider="basic")
    refused = json.loads(env.risk(ticker=env.context.ticker, provider="fast"))
    assert refused["error"].startswith("over budget: risk:fast costs $0.0010")


def test_the_reward_is_decision_reward_for_the_same_point(setup):
    row, previous = 9, -0.5
    env = episode(setup, row=row, previous=previous)
    env.technical(ticker=env.context.ticker, provider="basic")
    env.submit_decision(position="long", rationale="signal")
    ids = [list(range(40))]
    completions = [[{"role": "assistant"}, {"role": "tool"}, {"role": "assistant"}]]
    got = episode_rewards([env], completions=completions, completion_ids=ids)[0]
    profile = setup.profiles[0]
    data = setup.dataset
    tokens_usd = model_cost_usd(setup.settings, 100, 40, 2)
    expected = decision_reward(
        position=np.array([1.0]), previous_position=np.array([previous]),
        forward_return=data.forward_return[[row]], daily_volatility=data.daily_volatility[[row]],
        horizon=data.horizon, risk_aversion=np.array([profile.risk_aversion]),
        fee_bps=setup.env_config.fee_bps, slippage_bps=setup.env_config.slippage_bps,
        tool_cost_usd=np.array([0.0005 + tokens_usd]),
        cost_budget_usd=np.array([profile.cost_budget_usd]),
        budget_bps=np.array([profile.budget_bps]), called=np.array([[0, 1]]),
        preferences=np.zeros((1, 2)), turnover_aversion=np.array([profile.turnover_aversion]),
        weights={"pnl": 1.0, "risk": 1.0, "tool_cost": 1.0, "preference": 1.0, "gate": 1.0},
    )["total"][0]
    assert got == pytest.approx(expected, rel=1e-12)
    assert POSITION_BUCKETS[env.bucket] == 1.0


def test_a_group_shares_one_state_and_no_submit_is_the_keep_reward(setup):
    group = [episode(setup, row=11, previous=0.5) for _ in range(4)]
    assert len({json.dumps(g.context.__dict__, default=str) for g in group}) == 1
    ticker = group[0].context.ticker
    group[0].submit_decision(position="long", rationale="a")
    group[1].submit_decision(position="half_long", rationale="b")  # = the position held
    group[2].technical(ticker=ticker, provider="basic")  # then no submit: the fallback
    rewards = episode_rewards(group)
    assert rewards[3] == pytest.approx(rewards[1])  # nothing at all: keep
    assert rewards[2] < rewards[1]  # kept, and paid for the call
    assert rewards[0] != rewards[1]


def test_the_prompt_tokens_count_as_tool_cost(setup):
    a, b = episode(setup), episode(setup)
    for env in (a, b):
        env.submit_decision(position="flat", rationale="x")
    cheap = episode_rewards([a], completion_ids=[[0] * 10])[0]
    dear = episode_rewards([b], completion_ids=[[0] * 100_000])[0]
    assert dear < cheap


def test_the_environment_imports_no_vectorbt(tmp_path):
    script = textwrap.dedent("""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "vectorbt" or name.startswith("vectorbt."):
                    raise ImportError("vectorbt is blocked in this test")
                return None

        sys.meta_path.insert(0, Block())
        import quantorch.llm.environment as environment
        from tests.support.llm_training import planted_setup
        env = environment.environment_classes(planted_setup(8))["planted"]()
        env.reset(row=1)
        env.submit_decision(position="flat", rationale="x")
        print(environment.episode_rewards([env])[0])
        assert not any(m.startswith("vectorbt") for m in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    float(done.stdout.strip())


def test_asyncio_free_at_import():  # the environment runs inside TRL's loop: no event loop needed
    assert not asyncio.iscoroutinefunction(environment_classes(planted_setup(8))["planted"].reset)


def test_distilled_conversations_are_the_served_format(setup):
    from quantorch.llm.distill import DISTILLED_RATIONALE, distill_conversations
    from tests.support.llm_training import SignalTeacher

    rows = np.arange(6)
    profiles = np.zeros(6, dtype=np.int64)
    previous = np.zeros(6)
    conversations = distill_conversations(SignalTeacher(), setup, rows, profiles, previous)
    for row, conversation in zip(rows, conversations, strict=True):
        messages = conversation["messages"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool",
                                                 "assistant"]
        assert [{"role": m["role"], "content": m["content"]} for m in messages[:2]] == \
            setup.prompt(int(row), 0, 0.0)
        call = messages[2]["tool_calls"][0]["function"]
        assert call["name"] == "risk"
        assert json.loads(call["arguments"]) == {"ticker": str(setup.dataset.tickers[row]),
                                                 "provider": "fast"}
        assert messages[3]["content"] == setup.tool_result(int(row), 1, 0.01 - 0.001)
        submit = json.loads(messages[4]["tool_calls"][0]["function"]["arguments"])
        sign = np.sign(setup.dataset.forward_return[row])
        assert submit == {"position": "long" if sign > 0 else "short",
                          "rationale": DISTILLED_RATIONALE}
        assert json.loads(conversation["tools"]) == serving_tools(setup, 0)
    # the Qwen3 template renders the string arguments as it renders the served dicts
    tok = tokenizer()
    as_dicts = json.loads(json.dumps(conversations[0]["messages"]))
    for m in as_dicts:
        for c in m.get("tool_calls") or []:
            c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    tools = json.loads(conversations[0]["tools"])
    assert tok.apply_chat_template(conversations[0]["messages"], tools=tools, tokenize=False) \
        == tok.apply_chat_template(as_dicts, tools=tools, tokenize=False)


def test_train_llm_without_the_extra_says_how_to_install_it(monkeypatch):
    from typer.testing import CliRunner

    import quantorch.training.llm as pipeline
    from quantorch.cli.main import app

    monkeypatch.setattr(pipeline, "missing_requirements", lambda: ["trl", "peft"])
    result = CliRunner().invoke(app, ["train-llm", "--base", "x", "--out", "y"])
    assert result.exit_code == 2
    assert "pip install 'quantorch[llm-train]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
