"""Stage 1 of ``quantorch train-llm``: the compact PPO policy's decisions as tool-call transcripts.

The shipped policy (``quantorch/models/policy.pt``) decides the training period's points through
the decision core (:func:`~quantorch.orchestrator.orchestrators.decide`, the path every
orchestrator takes); each decision becomes one conversation in TRL's conversational-with-tools
shape ``{"messages": [...], "tools": "<JSON>"}``:

- the system and user messages exactly as the ``llm`` orchestrator sends them;
- per tool the policy called, in its order, an assistant turn with that one function call
  (the ticker of the decision and the slot's provider) and the ``role: tool`` result rendered by
  :func:`~quantorch.llm.prompts.tool_result_content` from the dataset's numbers;
- an assistant turn calling ``submit_decision`` with the policy's bucket and a fixed
  rationale (:data:`DISTILLED_RATIONALE`).

Call arguments are JSON strings (what an OpenAI-compatible server returns, and what the Qwen3
template renders verbatim), and ``tools`` is a JSON string (TRL's SFT trainer decodes it), so a
``datasets.Dataset`` of heterogeneous calls does not gain null-filled keys. Pure Python over
numpy: no vectorbt, no torch beyond the policy's forward pass.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from quantorch.llm.environment import EpisodeSetup
from quantorch.llm.prompts import BUCKET_NAMES, SUBMIT
from quantorch.orchestrator.env import POSITION_BUCKETS
from quantorch.orchestrator.orchestrators import DecisionBatch, Orchestrator, decide

__all__ = ["DISTILLED_RATIONALE", "distill_conversations", "policy_decisions",
           "render_conversation"]

#: The rationale of a distilled decision: the policy gives none, and one fixed sentence keeps
#: the model from learning to invent reasons (it writes its own once GRPO trains it).
DISTILLED_RATIONALE = "as the compact policy decides after these tools"


def policy_decisions(
    orchestrator: Orchestrator,
    setup: EpisodeSetup,
    rows: np.ndarray,
    profile_index: np.ndarray,
    previous_position: np.ndarray,
) -> DecisionBatch:
    """The orchestrator's decisions of the points (slots in call order, positions)."""
    return decide(orchestrator, setup.dataset, setup.profiles, setup.env_config,
                  np.asarray(rows, dtype=np.int64), np.asarray(profile_index, dtype=np.int64),
                  np.asarray(previous_position, dtype=np.float64))


def _call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def render_conversation(setup: EpisodeSetup, row: int, profile: int, previous_position: float,
                        calls: Sequence[int], bucket: int, rationale: str | None = None,
                        ) -> dict[str, Any]:
    """One decision as a conversation: prompt, the calls with their results, the decision."""
    slots = setup.dataset.slots
    budget = setup.profiles[profile].cost_budget_usd
    ticker = str(setup.dataset.tickers[row])
    messages: list[dict[str, Any]] = [
        {"role": m["role"], "content": m["content"], "tool_calls": None}
        for m in setup.prompt(row, profile, previous_position)
    ]
    spent = 0.0
    for slot in calls:
        spent += slots[slot].price_usd
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            _call(slots[slot].tool, {"ticker": ticker, "provider": slots[slot].provider})]})
        messages.append({"role": "tool", "content": setup.tool_result(row, slot, budget - spent),
                         "tool_calls": None})
    if rationale is None:
        rationale = DISTILLED_RATIONALE
    messages.append({"role": "assistant", "content": "", "tool_calls": [
        _call(SUBMIT, {"position": BUCKET_NAMES[bucket], "rationale": rationale[:300]})]})
    return {"messages": messages, "tools": json.dumps(setup.tools(profile), ensure_ascii=False)}


def distill_conversations(
    orchestrator: Orchestrator,
    setup: EpisodeSetup,
    rows: np.ndarray,
    profile_index: np.ndarray,
    previous_position: np.ndarray,
) -> list[dict[str, Any]]:
    """The orchestrator's decisions of the points as SFT conversations (one per point).

    ``orchestrator`` is normally the shipped policy
    (``PolicyOrchestrator(load_policies(config, False)[0])``); its slots must be the setup's.
    """
    batch = policy_decisions(orchestrator, setup, rows, profile_index, previous_position)
    conversations = []
    for j, row in enumerate(np.asarray(rows)):
        bucket = int(np.abs(POSITION_BUCKETS - batch.position[j]).argmin())
        conversation = render_conversation(setup, int(row), int(profile_index[j]),
                                           float(previous_position[j]), batch.call_order[j],
                                           bucket)
        conversation["reward"] = float(batch.terms["total"][j])
        conversations.append(conversation)
    return conversations
