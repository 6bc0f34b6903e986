"""Warm-up conversations for the tiny test model, rendered with the llm orchestrator's own
prompts (:mod:`quantorch.llm.prompts`): the system prompt, the user message and the tool schemas
are exactly what ``--orchestrator llm`` sends, so the model learns the real format. Each
conversation calls ``technical`` (provider ``basic``) for the stock of the user message, reads
the result and submits ``half_long`` (``flat`` when the call failed).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence

from quantorch.llm.prompts import (
    DecisionContext,
    error_content,
    openai_tools,
    system_prompt,
    tool_result_content,
    user_message,
)
from quantorch.orchestrator.dataset import CONTEXT_FEATURES, ToolSlot
from quantorch.orchestrator.profiles import TraderProfile, load_profile
from quantorch.orchestrator.slots import resolve_slots
from quantorch.toolkit.registry import get_tool
from quantorch.toolkit.spec import ToolResult

__all__ = ["SLOT_NAMES", "orchestrator_examples", "sample_decision", "technical_result"]

#: The shipped policy's slots (the llm orchestrator routes between the same ones).
SLOT_NAMES = ("technical:basic", "technical:full", "risk:fast", "risk:full",
              "fundamental:factor", "sentiment:lexicon")


def sample_decision(rng: random.Random, ticker: str, profile: TraderProfile) -> DecisionContext:
    """A decision with free context shaped like the real one (sessions 2005-2022)."""
    day = dt.date(2005, 1, 3) + dt.timedelta(days=rng.randint(0, 6500))
    position = rng.choice((0.0, 0.5, 1.0))
    context = {name: rng.gauss(0, 0.03) for name in CONTEXT_FEATURES}
    context["volatility_21d"] = rng.uniform(0.005, 0.05)
    context["distance_52w_high"] = -rng.uniform(0, 0.4)
    return DecisionContext(ticker, day.isoformat(), context, position,
                           position * profile.limits.max_position, profile.cost_budget_usd)


def technical_result(rng: random.Random, decision: DecisionContext, slot: ToolSlot) -> ToolResult:
    """A ``technical:basic`` result with values and a summary shaped like the real tool's."""
    features = {f: rng.gauss(0, 0.05) for f in slot.features}
    features["bollinger_pctb"] = rng.uniform(-0.2, 1.2)
    summary = (f"technical (basic) {decision.ticker}: price {features['close_vs_sma50']:+.1%} vs "
               f"its 50-day average; RSI {rng.uniform(15, 85):.0f}; Bollinger %b "
               f"{features['bollinger_pctb']:.2f}")
    day = dt.date.fromisoformat(decision.session)
    return ToolResult(tool="technical", provider="basic", ticker=decision.ticker,
                      asof=dt.datetime.combine(day, dt.time(21)), features=features,
                      summary=summary, coverage=True, cost_usd=slot.price_usd, latency_ms=2.0)


def orchestrator_examples(tickers: Sequence[str], n: int = 192, *, seed: int = 0,
                          profile: str = "neutral") -> list[dict]:
    """``n`` conversations in TRL's conversational shape (``messages``, ``tools``)."""
    rng = random.Random(seed)
    slots = resolve_slots(list(SLOT_NAMES))
    specs = {s.tool: get_tool(s.tool).spec for s in slots}
    trader = load_profile(profile)
    system = system_prompt(trader, slots, specs, 0.05, 0.20)
    tools = openai_tools(slots, specs, trader)
    technical = slots[0]
    examples = []
    for i in range(n):
        ticker = rng.choice(list(tickers))
        decision = sample_decision(rng, ticker, trader)
        failed = rng.random() < 0.2
        if failed:
            result = error_content("technical: no price history before the decision")
        else:
            result = tool_result_content(technical_result(rng, decision, technical),
                                         technical.features,
                                         trader.cost_budget_usd - technical.price_usd)
        examples.append({
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user_message(decision)},
                {"role": "assistant", "content": "", "tool_calls": [{
                    "id": f"call_{i}_0", "type": "function",
                    "function": {"name": "technical",
                                 "arguments": {"ticker": ticker, "provider": "basic"}}}]},
                {"role": "tool", "tool_call_id": f"call_{i}_0", "name": "technical",
                 "content": result},
                {"role": "assistant", "content": "", "tool_calls": [{
                    "id": f"call_{i}_1", "type": "function",
                    "function": {"name": "submit_decision", "arguments": {
                        "position": "flat" if failed else "half_long",
                        "rationale": "the call failed" if failed else "mild uptrend"}}}]},
            ],
            "tools": tools,
        })
    return examples
