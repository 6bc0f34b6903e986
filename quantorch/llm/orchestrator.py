"""The ``llm`` orchestrator: a chat model routes between the priced tools by function calling.

Per (ticker, session) the model gets the system prompt (trader profile, limits, the tool table
with prices and latencies, the rules) and a user message (the free context, the position held,
the budget left), with the tools as OpenAI functions plus ``submit_decision``
(:mod:`quantorch.llm.prompts`). Then, for at most ``max_rounds`` replies:

- every function call is validated on the client side: a known name, JSON arguments that match
  the schema (the ticker of this decision, a provider among the slots), each tool at most once,
  within the budget left. A valid tool call is executed through the kernel's tool executor (real
  calls through the ToolRunner) and its result goes back as a ``role: tool`` message;
- the decision is a valid ``submit_decision`` call;
- a malformed call, an unknown tool, a repeated tool, a call over budget or a reply without any
  call gets one corrective re-prompt; the next mistake, or running out of rounds, ends the
  decision with the fallback: keep the current position (counted, and said in the rationale).

The sessions' conversations all run at once (bounded by the client's ``max_concurrency``), so a
vLLM server batches them. Each request is first looked up in the transcript cache (keyed by the
model and everything sent), so a rerun of the same backtest sends nothing, pays nothing and
decides the same. The model's own tokens are priced with the ``llm:`` prices and counted in the
decision's cost beside the tools' (cached or not, so a rerun's figures are the first run's), and
that cost is debited from the equity at the decision.

The outcome of a session is one :class:`Plan` per ticker: the slots called in order, their
results, the bucket chosen (or the fallback), the rationale and the transcript. The kernel then
replays the plans through the same ``DecisionCore`` as every orchestrator (so the reward and its
cost terms are computed one way) and the RiskGuard applies after it: no model output, tool
output or news text moves a position past the guard.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import jsonschema

from quantorch.llm.port import ChatModel, ChatReply, LLMError
from quantorch.llm.prompts import (
    BUCKET_NAMES,
    SUBMIT,
    DecisionContext,
    allowed_buckets,
    bucket_label,
    error_content,
    openai_tools,
    system_prompt,
    tool_result_content,
    user_message,
)
from quantorch.orchestrator.dataset import ToolSlot
from quantorch.orchestrator.profiles import TraderProfile
from quantorch.toolkit.spec import ToolResult, ToolSpec, charged_cost

__all__ = [
    "LLMOrchestrator",
    "LLMSettingsView",
    "Plan",
    "Refused",
    "check_arguments",
    "check_tool_call",
    "hold_bucket",
    "strip_thinking",
    "transcript_cache_key",
    "validators",
]

#: ``get``/``put`` (and ``flush``) of JSON replies by key: a
#: :class:`~quantorch.llm.cache.TranscriptCache` in runs.
PromptCache = Any
#: Answers one slot's call for one ticker: ``call(slot_index) -> ToolResult``.
CallTool = Callable[[int], ToolResult]

CORRECTIVE = (
    "Your last reply had no valid function call. Reply with exactly one function call: a tool "
    f"from the list, or {SUBMIT}(position, rationale)."
)


@dataclass(frozen=True)
class LLMSettingsView:
    """The parts of the ``llm:`` config the conversation needs."""

    usd_per_1m_input_tokens: float = 0.05
    usd_per_1m_output_tokens: float = 0.20
    max_rounds: int = 6
    max_tokens: int = 512
    temperature: float = 0.0

    @classmethod
    def from_config(cls, config) -> LLMSettingsView:
        return cls(config.usd_per_1m_input_tokens, config.usd_per_1m_output_tokens,
                   config.max_rounds, config.max_tokens, config.temperature)


@dataclass
class Plan:
    """One decision's outcome: what was called, what was decided, what it cost."""

    ticker: str
    calls: list[int] = field(default_factory=list)  # slot indices, in call order
    results: list[ToolResult] = field(default_factory=list)
    bucket: int | None = None  # index into BUCKET_NAMES; None: the fallback (keep)
    rationale: str = ""
    fallback: str | None = None  # why the position was kept, when it was
    corrections: int = 0
    rounds: int = 0
    cached_rounds: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: The decision's own tokens at the configured prices: what the decision costs (debited
    #: from the equity and in the reward), the same whether or not the cache answered.
    cost_usd: float = 0.0
    #: What this run paid the endpoint: the tokens of replies not served from the cache.
    paid_usd: float = 0.0
    latency_ms: float = 0.0
    messages: list[dict[str, Any]] = field(default_factory=list)
    tool_calls_seen: int = 0  # function calls the model made (valid or not)
    #: The server error that ended the decision with the fallback (HTTP 5xx after retries).
    server_error: LLMError | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def transcript_cache_key(model: str, body: Mapping[str, Any]) -> str:
    """Key of one request in the transcript cache: the model and everything sent."""
    blob = json.dumps({"model": model, **body}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return "orchestrator:llm:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Refused(Exception):
    """A function call that fails the client-side checks (the message goes to the model)."""


class LLMOrchestrator:
    """The ``llm`` tier (see the module docstring). It is not stepped action by action like the
    other orchestrators: the kernel asks :meth:`plan_session` for the session's plans and
    replays them through ``DecisionCore`` with a ``ScriptedRouter``, which carries the
    environment settings (no slot restrictions: the client-side checks mirror the masks)."""

    name = "llm"

    def __init__(
        self,
        model: ChatModel,
        settings: LLMSettingsView,
        specs: Mapping[str, ToolSpec],
        *,
        cache: PromptCache | None = None,
        injection_check: Callable[[str], bool] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.specs = dict(specs)
        self.cache = cache
        self.injection_check = injection_check or (lambda text: False)
        self.stats = {"decisions": 0, "fallbacks": 0, "corrections": 0, "requests": 0,
                      "cached_requests": 0}

    # ---- one session --------------------------------------------------------------------------
    def plan_session(
        self,
        decisions: Sequence[DecisionContext],
        profile: TraderProfile,
        slots: Sequence[ToolSlot],
        call_tool: Callable[[int, int], ToolResult],
    ) -> list[Plan]:
        """The plans of one session's decisions, all conversations at once.

        ``call_tool(j, slot)`` answers slot ``slot`` for decision ``j`` (the kernel's executor).
        Raises :class:`LLMError` when the endpoint fails (after the client's retries) on every
        decision of the session, or is unreachable, or when no reply of the session held a
        function call at all (the server has no tool calling). A server error (HTTP 5xx) on
        some decisions only ends those with the fallback, said in their rationale.
        """
        system = system_prompt(profile, slots, self.specs, self.settings.usd_per_1m_input_tokens,
                               self.settings.usd_per_1m_output_tokens)
        tools = openai_tools(slots, self.specs, profile)

        async def run_all() -> list[Plan]:
            try:
                return await asyncio.gather(*[
                    self._converse(d, system, tools, profile, slots,
                                   lambda slot, j=j: call_tool(j, slot))
                    for j, d in enumerate(decisions)
                ])
            finally:
                await self.model.aclose()

        try:
            plans = asyncio.run(run_all())
        finally:  # what was answered is kept, even when a later request failed
            if self.cache is not None and hasattr(self.cache, "flush"):
                self.cache.flush()
        if plans and all(p.server_error is not None for p in plans):
            raise plans[0].server_error
        if plans and all(p.tool_calls_seen == 0 for p in plans):
            raise LLMError(
                f"model {self.model.model!r} made no function call in any of the "
                f"{len(plans)} decisions of {decisions[0].session}: the server has no tool "
                "calling enabled (start vLLM with --enable-auto-tool-choice --tool-call-parser "
                "hermes; `quantorch serve llm` prints the command)",
                kind="input",
            )
        for plan in plans:
            self.stats["decisions"] += 1
            self.stats["fallbacks"] += plan.fallback is not None
            self.stats["corrections"] += plan.corrections
            self.stats["requests"] += plan.rounds
            self.stats["cached_requests"] += plan.cached_rounds
        return plans

    async def _ask(self, plan: Plan, messages: list[dict], tools: list[dict]) -> ChatReply:
        settings = self.settings
        body = {"messages": messages, "tools": tools, "tool_choice": "auto",
                "max_tokens": settings.max_tokens, "temperature": settings.temperature}
        key = transcript_cache_key(self.model.model, body)
        cached = self.cache.get(key) if self.cache is not None else None
        plan.rounds += 1
        if cached is not None:
            reply = ChatReply.from_json(cached)
            plan.cached_rounds += 1
            plan.cost_usd += reply.usage.cost_usd(settings.usd_per_1m_input_tokens,
                                                  settings.usd_per_1m_output_tokens)
        else:
            started = time.perf_counter()
            reply = await self.model.chat(messages, tools, tool_choice="auto",
                                          max_tokens=settings.max_tokens,
                                          temperature=settings.temperature)
            if not reply.latency_ms:
                reply = replace(reply, latency_ms=(time.perf_counter() - started) * 1000)
            priced = reply.usage.cost_usd(settings.usd_per_1m_input_tokens,
                                          settings.usd_per_1m_output_tokens)
            plan.cost_usd += priced
            plan.paid_usd += priced
            plan.latency_ms += reply.latency_ms
            if self.cache is not None:
                self.cache.put(key, reply.to_json())
        plan.prompt_tokens += reply.usage.prompt_tokens
        plan.completion_tokens += reply.usage.completion_tokens
        return reply

    async def _converse(self, decision: DecisionContext, system: str, tools: list[dict],
                        profile: TraderProfile, slots: Sequence[ToolSlot],
                        call_tool: CallTool) -> Plan:
        plan = Plan(decision.ticker)
        messages: list[dict[str, Any]] = [{"role": "system", "content": system},
                                          {"role": "user", "content": user_message(decision)}]
        plan.messages = messages
        schemas = validators(tools)
        spent = 0.0
        mistakes = 0
        while plan.bucket is None and plan.fallback is None:
            if plan.rounds >= self.settings.max_rounds:
                plan.fallback = f"no {SUBMIT} within {self.settings.max_rounds} replies"
                break
            try:
                reply = await self._ask(plan, messages, tools)
            except LLMError as exc:
                # the server failed on this one request after the client's retries (e.g.
                # `transformers serve` answers 500 to a tool call it cannot parse): this
                # decision keeps its position; a whole session failing is an outage (raised)
                if exc.kind != "temporary" or exc.status is None or exc.status < 500:
                    raise
                plan.server_error = exc
                plan.fallback = f"the endpoint failed on this request (HTTP {exc.status})"
                break
            said = reply.message()
            said["content"] = strip_thinking(said["content"])  # Qwen3's <think> stays out
            messages.append(said)
            plan.tool_calls_seen += len(reply.tool_calls)
            if not reply.tool_calls:
                mistakes += 1
                if mistakes > 1:
                    plan.fallback = "no function call after a corrective re-prompt"
                    break
                plan.corrections += 1
                messages.append({"role": "user", "content": CORRECTIVE})
                continue
            refused = False
            for call in reply.tool_calls:
                if plan.bucket is not None:  # calls after the decision are not executed
                    messages.append(_tool_message(call.id, error_content(
                        f"ignored: the decision was already submitted by {SUBMIT}")))
                    continue
                try:
                    arguments = check_arguments(call.name, call.arguments, schemas)
                    if call.name == SUBMIT:
                        bucket = BUCKET_NAMES.index(arguments["position"])
                        if bucket not in allowed_buckets(profile):  # pragma: no cover - enum
                            raise Refused(f"position {arguments['position']} is not allowed")
                        plan.bucket = bucket
                        plan.rationale = " ".join(str(arguments["rationale"]).split())[:300]
                        messages.append(_tool_message(call.id, json.dumps({"accepted": True})))
                        continue
                    slot = check_tool_call(call.name, arguments, decision, slots, plan, spent,
                                 profile.cost_budget_usd)
                except Refused as exc:
                    refused = True
                    messages.append(_tool_message(call.id, error_content(str(exc))))
                    continue
                result = call_tool(slot)
                spent += charged_cost(slots[slot].price_usd, result.coverage)  # no data: free
                plan.calls.append(slot)
                plan.results.append(result)
                withheld = bool(result.summary) and self.injection_check(result.summary)
                messages.append(_tool_message(call.id, tool_result_content(
                    result, slots[slot].features, profile.cost_budget_usd - spent,
                    withheld=withheld)))
            if refused and plan.bucket is None:
                mistakes += 1
                if mistakes > 1:
                    plan.fallback = "a refused function call after a corrective re-prompt"
                    break
                plan.corrections += 1
        if plan.fallback is not None:
            plan.rationale = (f"fallback, position kept ({bucket_label(decision.position)}): "
                              f"{plan.fallback}")
        return plan


def _tool_message(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def check_arguments(name: str, raw: str, schemas: Mapping[str, Any]) -> dict[str, Any]:
    """The call's arguments, checked against the function's schema."""
    if name not in schemas:
        raise Refused(f"unknown function '{name}'; call one of: {', '.join(schemas)}")
    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, AttributeError) as exc:
        raise Refused(f"the arguments of {name} are not valid JSON ({exc})") from None
    if not isinstance(arguments, dict):
        raise Refused(f"the arguments of {name} must be a JSON object")
    error = jsonschema.exceptions.best_match(schemas[name].iter_errors(arguments))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "arguments"
        raise Refused(f"{name}: {where}: {error.message}")
    return arguments


def validators(tools: Sequence[dict]) -> dict[str, Any]:
    """A compiled JSON-schema validator per function (built once per tool list)."""
    key = json.dumps(tools, sort_keys=True)
    cached = _VALIDATORS.get(key)
    if cached is None:
        cached = {t["function"]["name"]: jsonschema.Draft202012Validator(
            t["function"]["parameters"]) for t in tools}
        _VALIDATORS.clear()  # one tool list per run: keep the last
        _VALIDATORS[key] = cached
    return cached


_VALIDATORS: dict[str, dict[str, Any]] = {}


def check_tool_call(name: str, arguments: dict[str, Any], decision: DecisionContext,
          slots: Sequence[ToolSlot], plan: Plan, spent: float, budget: float) -> int:
    """The slot a valid tool call asks for, or a refusal (the decision core's masks)."""
    if str(arguments["ticker"]).strip().upper() != decision.ticker.upper():
        raise Refused(f"this decision is about {decision.ticker}, not {arguments['ticker']}")
    index = next(i for i, s in enumerate(slots)
                 if s.tool == name and s.provider == arguments["provider"])
    if any(slots[k].tool == name for k in plan.calls):
        raise Refused(f"{name} was already called for this decision: its result is above")
    price = slots[index].price_usd
    if price > budget - spent + 1e-12:
        raise Refused(f"over budget: {name}:{arguments['provider']} costs ${price:.4f}, "
                       f"${max(budget - spent, 0.0):.4f} left")
    return index


def strip_thinking(text: str | None) -> str:
    """``text`` without ``<think>...</think>`` blocks (a reasoning model's scratchpad: the chat
    template drops it from history anyway, and it is not part of the decision)."""
    return _THINK.sub("", text or "").strip()


_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


def hold_bucket(position: float) -> int:
    """The bucket nearest the position held (the fallback's bucket in the reward)."""
    return BUCKET_NAMES.index(bucket_label(position))

